"""cocoop_hf_training/run_benchmark.py: the datasets x methods x seeds grid, skipping and resuming cells, and Table 1."""

import json
import statistics

import pytest

from cocoop_hf_training import grid as training_grid
from cocoop_hf_training import run_benchmark, run_cocoop
from cocoop_hf_training.checkpoints import COMPLETE_MARKER_NAME
from cocoop_hf_training.evaluation import harmonic_mean
from cocoop_hf_training.outputs import finish_output_dir, prepare_output_dir, record, write_output
from cocoop_hf_training.report import RANDOM_WEIGHTS_NOTE


DATASETS = ["EuroSAT", "DescribableTextures"]
METHOD_INDEX = {"zeroshot": 0, "coop": 1, "cocoop": 2, "kgcoop": 3}


def accuracies(dataset, method, seed):
    """
    Distinct, known accuracies per cell; base and new vary with the seed so that mean-of-H != H-of-means. Both stay
    percentages (seeds 1 to 3, any dataset and method): a cell's metrics outside [0, 100] are refused.
    """
    d = run_benchmark.BASE_TO_NEW.index(dataset)
    m = METHOD_INDEX[method]
    return 30.0 + 2 * d + 5 * m + 10 * seed, 80.0 - d - 3 * m - 20 * seed


class FakeRunCocoop:
    """
    Stands in for run_cocoop.main: follows its output-folder rules (cocoop_hf_training/outputs.py), optionally dies on
    chosen cells (after writing a complete checkpoint when asked), and writes the results.json of a finished run.
    """

    def __init__(self):
        self.calls = []
        self.fail = {}  # (dataset, method, seed) -> write a checkpoint before failing?

    def __call__(self, argv):
        recipe, flags = argv[0], argv[1:]
        options, i = {}, 0
        while i < len(flags):
            if i + 1 < len(flags) and not flags[i + 1].startswith("--"):
                options[flags[i]] = flags[i + 1]
                i += 2
            else:
                options[flags[i]] = True
                i += 1
        self.calls.append({"recipe": recipe, **options})
        dataset, seed, output_dir = options["--benchmark"], int(options["--seed"]), options["--output_dir"]
        method = run_benchmark.cli.read_structured_file(recipe)["method"]
        resume = options.get("--resume_from_checkpoint") == "latest"
        prepare_output_dir(output_dir, bool(options.get("--overwrite_output_dir")), resume)
        key = (dataset, method, seed)
        if key in self.fail:
            if self.fail.pop(key):
                checkpoint = run_benchmark.Path(output_dir) / "checkpoint-3"
                checkpoint.mkdir()
                (checkpoint / COMPLETE_MARKER_NAME).write_text(json.dumps({"files": {}}))
                record(output_dir, checkpoint.name)  # as LeanCheckpointTrainer records a committed checkpoint
            raise KeyboardInterrupt(f"interrupted {key}")
        base, new = accuracies(dataset, method, seed)
        shots = None if method == "zeroshot" else int(options.get("--num_shots", 16))
        run = {
            "dataset": dataset,
            "method": method,
            "seed": seed,
            "num_shots": shots,
            "metrics": {"base": {"accuracy": base}, "new": {"accuracy": new}},
            "H": harmonic_mean(base, new),
        }
        if method != "zeroshot":  # as run_cocoop records them (cocoop_hf_training/report.py method_options)
            weight = options.get("--kgcoop_weight", 8.0 if method == "kgcoop" else 0.0)
            run["method_options"] = {
                "conditional": method == "cocoop",
                "n_ctx": 4,
                "class_token_position": options.get("--class_token_position", "end"),
                "class_specific_context": False,
                "kgcoop_weight": float(weight),
            }
        note = RANDOM_WEIGHTS_NOTE if options.get("--random_init_clip") == "true" else None
        content = {"note": note, "runs": [run], "aggregate": []}
        write_output(run_benchmark.Path(output_dir) / "results.json", json.dumps(content))
        finish_output_dir(output_dir)
        return content


@pytest.fixture
def fake(monkeypatch, tmp_path):
    fake = FakeRunCocoop()
    monkeypatch.setattr(run_cocoop, "main", fake)
    # Recipes with the published shot count, independent of which recipe files the repo holds.
    recipes = {}
    for method in METHOD_INDEX:
        path = tmp_path / "recipes" / f"{method}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"method: {method}\n" + ("" if method == "zeroshot" else "num_shots: 16\n"))
        recipes[method] = path
    monkeypatch.setattr(training_grid, "RECIPES", recipes)
    monkeypatch.setattr(training_grid, "RECIPE_OVERRIDES", {})
    monkeypatch.setattr(run_benchmark, "check_layouts", lambda datasets, data_root: None)  # the fake reads no data
    return fake


def grid_argv(tmp_path, methods=("coop", "cocoop"), seeds=("1", "2"), datasets=("eurosat", "dtd"), extra=()):
    argv = ["--benchmark", *datasets, "--data_root", str(tmp_path / "data"), "--output_dir", str(tmp_path / "grid")]
    argv += ["--method", *methods, "--seeds", *seeds]
    return argv + (["--", *extra] if extra else [])


def test_grid_runs_every_cell_and_writes_table_with_paper_h(fake, tmp_path):
    table = run_benchmark.main(grid_argv(tmp_path, extra=["--random_init_clip", "true", "--num_shots", "2"]))

    assert len(fake.calls) == 8
    cells = {(c["--benchmark"], c["recipe"].rsplit("/", 1)[-1], c["--seed"]) for c in fake.calls}
    assert len(cells) == 8  # every (dataset, method, seed) once
    for call in fake.calls:
        assert call["--data_root"] == str(tmp_path / "data")
        assert call["--random_init_clip"] == "true" and call["--num_shots"] == "2"  # flags after `--` passed on
        method = call["recipe"].rsplit("/", 1)[-1].removesuffix(".yaml")
        assert call["--output_dir"] == str(tmp_path / "grid" / call["--benchmark"] / method / f"seed{call['--seed']}")
        assert "--resume_from_checkpoint" not in call and "--overwrite_output_dir" not in call

    assert [(r["dataset"], r["method"]) for r in table["rows"]] == [
        (d, m) for d in DATASETS for m in ("coop", "cocoop")
    ]
    for row in table["rows"]:
        per_seed = [accuracies(row["dataset"], row["method"], seed) for seed in (1, 2)]
        base = statistics.fmean(b for b, _ in per_seed)
        new = statistics.fmean(n for _, n in per_seed)
        assert row["base"]["mean"] == pytest.approx(base, abs=1e-9)
        assert row["new"]["mean"] == pytest.approx(new, abs=1e-9)
        assert row["base"]["std"] == pytest.approx(statistics.stdev(b for b, _ in per_seed), abs=1e-9)
        # the paper's convention: H of the mean accuracies, which here differs from the mean of the per-seed H
        assert row["H"] == pytest.approx(2 * base * new / (base + new), abs=1e-9)
        mean_of_h = statistics.fmean(2 * b * n / (b + n) for b, n in per_seed)
        assert abs(row["H"] - mean_of_h) > 0.1
        assert row["H_mean_over_seeds"] == pytest.approx(mean_of_h, abs=1e-9)
    for method in ("coop", "cocoop"):
        average = table["average"][method]
        rows = [r for r in table["rows"] if r["method"] == method]
        base = statistics.fmean(r["base"]["mean"] for r in rows)
        new = statistics.fmean(r["new"]["mean"] for r in rows)
        assert (average["n"], average["paper_datasets"]) == (2, False)
        assert average["base"] == pytest.approx(base, abs=1e-9) and average["new"] == pytest.approx(new, abs=1e-9)
        assert average["H"] == pytest.approx(harmonic_mean(base, new), abs=1e-9)

    grid = tmp_path / "grid"
    assert json.loads((grid / "table1.json").read_text()) == json.loads(json.dumps(table))
    assert (grid / "table1.png").stat().st_size > 0
    markdown = (grid / "table1.md").read_text()
    assert RANDOM_WEIGHTS_NOTE in markdown
    assert "Average over 2 dataset(s) (not the paper's 11)" in markdown
    assert "| CoCoOp | 2 | " in markdown and "| 80.47 | 71.69 | 75.83 |" in markdown
    assert "| 82.69 | 63.22 | 71.66 |" in markdown
    cocoop_euro = next(r for r in table["rows"] if r["dataset"] == "EuroSAT" and r["method"] == "cocoop")
    assert f"| EuroSAT | CoCoOp | 1, 2 | {cocoop_euro['base']['mean']:.2f} ± " in markdown
    assert f"| {cocoop_euro['H']:.2f} |" in markdown


def test_rerun_after_interrupts_redoes_only_unfinished_cells(fake, tmp_path):
    argv = grid_argv(tmp_path)
    # Order: EuroSAT coop 1, 2, cocoop 1, 2, DTD coop 1, 2, cocoop 1, 2. Dies on the 3rd cell before a checkpoint.
    fake.fail[("EuroSAT", "cocoop", 1)] = False
    with pytest.raises(KeyboardInterrupt):
        run_benchmark.main(argv)
    assert len(fake.calls) == 3
    assert not (tmp_path / "grid" / "table1.md").exists()

    # Second try: the 2 finished cells are skipped; the 3rd starts again (its own outputs replaced); dies on the 6th
    # cell after a checkpoint.
    fake.calls.clear()
    fake.fail[("DescribableTextures", "coop", 2)] = True
    with pytest.raises(KeyboardInterrupt):
        run_benchmark.main(argv)
    assert [(c["--benchmark"], c["--seed"]) for c in fake.calls] == [
        ("EuroSAT", "1"),
        ("EuroSAT", "2"),
        ("DescribableTextures", "1"),
        ("DescribableTextures", "2"),
    ]
    assert fake.calls[0]["--overwrite_output_dir"] is True and "--resume_from_checkpoint" not in fake.calls[0]
    assert all("--overwrite_output_dir" not in c for c in fake.calls[1:])

    # Third try: resumes the 6th cell from its checkpoint, runs the last two, writes the table.
    fake.calls.clear()
    table = run_benchmark.main(argv)
    assert [(c["--benchmark"], c["recipe"].rsplit("/", 1)[-1], c["--seed"]) for c in fake.calls] == [
        ("DescribableTextures", "coop.yaml", "2"),
        ("DescribableTextures", "cocoop.yaml", "1"),
        ("DescribableTextures", "cocoop.yaml", "2"),
    ]
    assert fake.calls[0]["--resume_from_checkpoint"] == "latest" and "--overwrite_output_dir" not in fake.calls[0]
    assert len(table["rows"]) == 4 and (tmp_path / "grid" / "table1.md").is_file()

    # Everything finished: nothing runs, the same table again.
    fake.calls.clear()
    assert run_benchmark.main(argv) == table
    assert fake.calls == []


@pytest.mark.parametrize(
    "source, target, message",
    [
        ("EuroSAT/cocoop/seed1", "EuroSAT/cocoop/seed2", "seed 1 (cell: 2)"),
        ("EuroSAT/coop/seed1", "EuroSAT/cocoop/seed1", "method 'coop' (cell: 'cocoop')"),
        ("DescribableTextures/cocoop/seed1", "EuroSAT/cocoop/seed1", "dataset 'DescribableTextures' (cell: 'Eur"),
    ],
)
def test_finished_run_of_another_cell_is_an_error_not_a_skip(fake, tmp_path, source, target, message):
    run_benchmark.main(grid_argv(tmp_path, seeds=("1",)))
    grid = tmp_path / "grid"
    (grid / target).mkdir(parents=True, exist_ok=True)
    for file in (grid / source).iterdir():
        (grid / target / file.name).write_bytes(file.read_bytes())
    fake.calls.clear()
    with pytest.raises(ValueError, match="finished run of another cell") as error:
        run_benchmark.main(grid_argv(tmp_path, seeds=("1", "2")))
    assert message in str(error.value) and str(grid / target) in str(error.value)
    assert fake.calls == []  # checked before any cell runs


def test_finished_run_with_other_shots_is_an_error(fake, tmp_path):
    run_benchmark.main(grid_argv(tmp_path, methods=("cocoop",), seeds=("1",), datasets=("eurosat",)))
    other_shots = grid_argv(
        tmp_path, methods=("cocoop",), seeds=("1",), datasets=("eurosat",), extra=["--num_shots", "4"]
    )
    with pytest.raises(ValueError, match=r"other run_cocoop flags(.|\n)*--num_shots 4"):
        run_benchmark.main(other_shots)
    # A finished folder this grid has no record of (e.g. copied in) is still checked against the cell.
    (tmp_path / "grid" / training_grid.CELL_RECORDS_NAME).unlink()
    with pytest.raises(ValueError, match=r"shots 16 \(cell: 4\)"):
        run_benchmark.main(other_shots)


def test_zero_shot_runs_once_per_dataset(fake, tmp_path):
    table = run_benchmark.main(grid_argv(tmp_path, methods=("zeroshot", "cocoop"), seeds=("3", "1")))
    zero_shot = [c for c in fake.calls if c["recipe"].endswith("zeroshot.yaml")]
    assert [(c["--benchmark"], c["--seed"]) for c in zero_shot] == [("EuroSAT", "3"), ("DescribableTextures", "3")]
    assert len(fake.calls) == 6
    row = next(r for r in table["rows"] if r["method"] == "zeroshot")
    assert row["seeds"] == [3] and row["base"]["n"] == 1


def test_all_eleven_datasets_average_is_labelled_as_the_papers(fake, tmp_path):
    table = run_benchmark.main(grid_argv(tmp_path, methods=("cocoop",), seeds=("1",), datasets=("all",)))
    assert len(fake.calls) == 11
    average = table["average"]["cocoop"]
    assert average["paper_datasets"] and average["n"] == 11
    base = statistics.fmean(accuracies(d, "cocoop", 1)[0] for d in run_benchmark.BASE_TO_NEW)
    new = statistics.fmean(accuracies(d, "cocoop", 1)[1] for d in run_benchmark.BASE_TO_NEW)
    assert average["H"] == pytest.approx(harmonic_mean(base, new), abs=1e-9)
    markdown = (tmp_path / "grid" / "table1.md").read_text()
    assert "## Average over 11 datasets" in markdown and "not the paper's 11" not in markdown
    assert RANDOM_WEIGHTS_NOTE not in markdown


def test_benchmark_names():
    def parse(*names, extra=()):
        argv = ["--benchmark", *names, "--data_root", "d", "--output_dir", "o"]
        return run_benchmark.parse_args(argv + (["--", *extra] if extra else []))

    assert parse("all").benchmark == [
        "ImageNet",
        "Caltech101",
        "OxfordPets",
        "StanfordCars",
        "OxfordFlowers",
        "Food101",
        "FGVCAircraft",
        "SUN397",
        "DescribableTextures",
        "EuroSAT",
        "UCF101",
    ]
    assert parse("DTD", "flowers102", "dtd").benchmark == ["DescribableTextures", "OxfordFlowers"]
    with pytest.raises(ValueError, match="Unknown benchmark 'eurosatt'"):
        parse("eurosatt")
    with pytest.raises(ValueError, match="ImageNetV2 is evaluation-only"):
        parse("imagenet-v2")
    with pytest.raises(ValueError, match="--seed after '--' is set by the grid"):
        parse("eurosat", extra=["--seed", "4"])
    with pytest.raises(ValueError, match="--output_dir after '--'"):
        parse("eurosat", extra=["--output_dir=x"])
    with pytest.raises(ValueError, match="--output_d after '--'"):
        parse("eurosat", extra=["--output_d", "x"])
    assert parse("eurosat", extra=["--num_shots", "1", "--data_seed", "3"]).extra == [
        "--num_shots",
        "1",
        "--data_seed",
        "3",
    ]


def test_published_recipes_per_method():
    assert run_benchmark.recipe_for("cocoop", "EuroSAT").name == "cocoop_vit_b16_c4_ep10_batch1_ctxv1.yaml"
    assert run_benchmark.recipe_for("coop", "EuroSAT").name == "coop_vit_b16_ctxv1.yaml"
    assert run_benchmark.recipe_for("coop", "ImageNet").name == "coop_vit_b16_ep50_ctxv1.yaml"
    assert run_benchmark.recipe_for("zeroshot", "ImageNet").name == "zeroshot_clip_vit_b16.yaml"
    for (method, _), path in training_grid.RECIPE_OVERRIDES.items():
        assert run_benchmark.cli.read_structured_file(path)["method"] == method


def test_real_grid_on_a_miniature_layout_then_skips_it_all(tmp_path, monkeypatch):
    """run_cocoop itself (tiny random CLIP, one epoch, one shot) on a miniature official EuroSAT layout."""
    from .conftest import TINY_CLIP
    from .test_benchmark_runs import make_eurosat

    make_eurosat(tmp_path / "data")
    real_main, calls = run_cocoop.main, []

    def counted(argv):
        calls.append(argv)
        return real_main(argv)

    monkeypatch.setattr(run_cocoop, "main", counted)
    extra = [
        "--clip_model_name_or_path", str(TINY_CLIP), "--random_init_clip", "true",
        "--num_train_epochs", "1", "--num_shots", "1", "--per_device_eval_batch_size", "4",
        "--use_cpu", "true", "--fp16", "false", "--dataloader_num_workers", "0", "--disable_tqdm", "true",
    ]  # fmt: skip
    argv = grid_argv(
        tmp_path, methods=("zeroshot", "coop", "cocoop"), seeds=("1",), datasets=("eurosat",), extra=extra
    )
    table = run_benchmark.main(argv)

    assert len(calls) == 3
    assert [(r["dataset"], r["method"], r["seeds"]) for r in table["rows"]] == [
        ("EuroSAT", method, [1]) for method in ("zeroshot", "coop", "cocoop")
    ]
    for row in table["rows"]:
        results = json.loads((tmp_path / "grid" / "EuroSAT" / row["method"] / "seed1" / "results.json").read_text())
        run = results["runs"][0]
        assert row["base"]["mean"] == run["metrics"]["base"]["accuracy"]
        assert row["new"]["mean"] == run["metrics"]["new"]["accuracy"]
        assert row["H"] == pytest.approx(run["H"], abs=1e-9)  # one seed: H of the means is the run's H
    assert (
        table["note"] == RANDOM_WEIGHTS_NOTE and RANDOM_WEIGHTS_NOTE in (tmp_path / "grid" / "table1.md").read_text()
    )

    calls.clear()
    assert run_benchmark.main(argv) == table
    assert calls == []


def test_real_cell_killed_after_a_checkpoint_resumes_from_it(tmp_path, monkeypatch):
    from .conftest import TINY_CLIP
    from .test_benchmark_runs import make_eurosat

    make_eurosat(tmp_path / "data")
    real_main, real_save, calls = run_cocoop.main, run_cocoop.CoCoOpTrainer._save_checkpoint, []

    def counted(argv):
        calls.append(argv)
        return real_main(argv)

    def save_then_die(self, *args, **kwargs):
        real_save(self, *args, **kwargs)
        raise KeyboardInterrupt("killed after the first checkpoint")

    monkeypatch.setattr(run_cocoop, "main", counted)
    monkeypatch.setattr(run_cocoop.CoCoOpTrainer, "_save_checkpoint", save_then_die)
    extra = [
        "--clip_model_name_or_path", str(TINY_CLIP), "--random_init_clip", "true",
        "--num_train_epochs", "2", "--num_shots", "1", "--per_device_eval_batch_size", "4",
        "--use_cpu", "true", "--fp16", "false", "--dataloader_num_workers", "0", "--disable_tqdm", "true",
    ]  # fmt: skip
    argv = grid_argv(tmp_path, methods=("cocoop",), seeds=("1",), datasets=("eurosat",), extra=extra)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark.main(argv)
    cell = tmp_path / "grid" / "EuroSAT" / "cocoop" / "seed1"
    assert (cell / "checkpoint-2").is_dir() and not (cell / "results.json").exists()  # 2 images, batch 1

    monkeypatch.setattr(run_cocoop.CoCoOpTrainer, "_save_checkpoint", real_save)
    calls.clear()
    table = run_benchmark.main(argv)
    assert len(calls) == 1 and calls[0][-len(extra) - 2 : -len(extra)] == ["--resume_from_checkpoint", "latest"]
    state = json.loads((cell / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and [row["method"] for row in table["rows"]] == ["cocoop"]


def test_a_cell_run_with_other_flags_is_refused(fake, tmp_path):
    """Another CLIP, epochs or learning rate after '--' must not skip or resume cells run with the old flags."""
    run_benchmark.main(grid_argv(tmp_path, methods=("cocoop",), seeds=("1",), datasets=("eurosat",)))
    calls = len(fake.calls)
    argv = grid_argv(
        tmp_path, methods=("cocoop",), seeds=("1",), datasets=("eurosat",), extra=("--learning_rate", "0.1")
    )
    with pytest.raises(
        ValueError, match=r"was run by this grid with other run_cocoop flags:(.|\n)*--learning_rate 0.1"
    ):
        run_benchmark.main(argv)
    assert len(fake.calls) == calls
    run_benchmark.main(grid_argv(tmp_path, methods=("cocoop",), seeds=("1",), datasets=("eurosat",)))  # same: skipped
    assert len(fake.calls) == calls


def test_every_dataset_layout_is_checked_before_the_first_cell(tmp_path, monkeypatch):
    """A missing dataset was found only when its cell came up, hours into a real grid."""
    ran = []
    monkeypatch.setattr(run_cocoop, "main", lambda argv: ran.append(argv))
    root = tmp_path / "data"
    from .test_benchmark_runs import make_eurosat

    make_eurosat(root)
    argv = ["--benchmark", "eurosat", "caltech101", "--data_root", str(root), "--output_dir", str(tmp_path / "g")]
    with pytest.raises(FileNotFoundError, match="caltech-101"):
        run_benchmark.main(argv)
    assert ran == []


@pytest.mark.parametrize(
    "method, extra, title",
    [
        ("kgcoop", ["--kgcoop_weight", "4"], "KgCoOp (w=4)"),
        ("coop", ["--class_token_position", "middle"], "CoOp (class token middle)"),
        ("cocoop", ["--kgcoop_weight", "2"], "CoCoOp (+KgCoOp w=2)"),
    ],
)
def test_a_variant_row_is_labelled_by_its_options_without_the_papers_figures(fake, tmp_path, method, extra, title):
    argv = grid_argv(tmp_path, methods=(method,), seeds=("1",), datasets=("eurosat",), extra=extra)
    table = run_benchmark.main(argv)
    (row,) = table["rows"]
    assert (row["method"], row["title"], row["published"]) == (method, title, False)
    assert table["paper_average"] == {} and list(table["average"].values())[0]["title"] == title
    markdown = (tmp_path / "grid" / "table1.md").read_text()
    assert f"| EuroSAT | {title} | 1 |" in markdown
    assert f"| {title} | 1 | " in markdown and " | - | - | - |" in markdown
    assert f"| {training_grid.METHOD_TITLES[method]} |" not in markdown
    paper = run_benchmark.PAPER_AVERAGES[method]
    assert f"{paper['base']:.2f}" not in markdown and "not the method as published" in markdown


def test_the_published_form_keeps_the_papers_figures(fake, tmp_path):
    table = run_benchmark.main(grid_argv(tmp_path, methods=("kgcoop", "coop"), seeds=("1",), datasets=("eurosat",)))
    assert [(row["title"], row["published"]) for row in table["rows"]] == [("KgCoOp", True), ("CoOp", True)]
    assert table["paper_average"] == {m: run_benchmark.PAPER_AVERAGES[m] for m in ("kgcoop", "coop")}
    markdown = (tmp_path / "grid" / "table1.md").read_text()
    assert "| 80.73 | 73.60 | 77.00 |" in markdown and "not the method as published" not in markdown


@pytest.mark.parametrize(
    "methods, extra, message",
    [
        ([], ["--bogus_flag", "1"], r"EuroSAT / zeroshot / seed 1: .*\['--bogus_flag', '1'\]"),
        ([], ["--num_train_epochs", "abc"], "invalid float value: 'abc'"),
        (["coop"], ["--class_specific_context", "true"], "EuroSAT / coop / seed 1: .*cannot score the new classes"),
        (["coop"], ["--model_name_or_path", "some/model"], "the grid trains its own models"),
        ([], ["--kgcoop_weight", "4"], "--method zeroshot scores the plain backbone"),  # the zero-shot cell refuses it
        (["cocoop", "coop"], ["--kgcoop_weight", "4"], "EuroSAT / coop / seed 1: .*pass --method kgcoop"),
    ],
)
def test_flags_run_cocoop_refuses_stop_the_grid_before_anything_is_written(
    tmp_path, monkeypatch, methods, extra, message
):
    """With the published recipes: a typo after '--' used to surface when the first cell started, the folder made."""
    ran = []
    monkeypatch.setattr(run_cocoop, "main", lambda argv: ran.append(argv))
    monkeypatch.setattr(run_benchmark, "check_layouts", lambda datasets, data_root: None)
    argv = ["--benchmark", "eurosat", "--data_root", str(tmp_path / "data"), "--output_dir", str(tmp_path / "g")]
    argv += ["--method", *methods] if methods else []
    with pytest.raises(ValueError, match=message):
        run_benchmark.main([*argv, "--", *extra])
    assert ran == [] and not (tmp_path / "g").exists()
