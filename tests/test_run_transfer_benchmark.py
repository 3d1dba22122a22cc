"""cocoop_hf_training/run_transfer_benchmark.py: the CoCoOp paper's Tables 2 and 3 (train on ImageNet, evaluate on other
datasets and ImageNet variants) with one command, skipping finished cells and resuming after an interrupt."""

import json
import statistics
from pathlib import Path

import pytest

from cocoop_hf_training import evaluate_transfer, run_cocoop, run_transfer_benchmark
from cocoop_hf_training.benchmarks import load_benchmark
from cocoop_hf_training.report import RANDOM_WEIGHTS_NOTE

from .conftest import TINY_CLIP
from .test_benchmark_runs import make_eurosat, make_imagenet_v2, write_image
from .test_benchmarks import make_split_dataset


IMAGENET_WNIDS = ["n01440764", "n01443537", "n01484850"]


def make_imagenet(root: Path) -> None:
    dataset_dir = root / "imagenet"
    dataset_dir.mkdir(parents=True)
    names = ["tench", "goldfish", "great white shark"]
    (dataset_dir / "classnames.txt").write_text(
        "".join(f"{w} {n}\n" for w, n in zip(IMAGENET_WNIDS, names, strict=True))
    )
    for split in ("train", "val"):
        for label, wnid in enumerate(IMAGENET_WNIDS):
            for index in range(2):
                write_image(dataset_dir / "images" / split / wnid / f"{wnid}_{index}.JPEG", label, index)


def make_dtd(root: Path) -> None:
    make_split_dataset(root, "DescribableTextures", counts=(2, 1, 2), make_images=False)
    loaded = load_benchmark("DTD", root, check_files=False)
    for split in ("train", "val", "test"):
        for index, item in enumerate(loaded[split]):
            write_image(Path(item.path), item.label, index)


TINY = [
    "--clip_model_name_or_path", str(TINY_CLIP), "--random_init_clip", "true",
    "--num_train_epochs", "1", "--num_shots", "1", "--per_device_eval_batch_size", "4",
    "--use_cpu", "true", "--fp16", "false", "--dataloader_num_workers", "0", "--disable_tqdm", "true",
]  # fmt: skip


def test_whole_transfer_grid_writes_tables_and_resumes_after_an_interrupt(tmp_path, monkeypatch):
    root = tmp_path / "data"
    make_imagenet(root)
    make_eurosat(root)
    make_dtd(root)
    make_imagenet_v2(root)
    real_train, real_evaluate = run_cocoop.main, evaluate_transfer.main
    trained, evaluated, interrupt = [], [], {"EuroSAT/cocoop/seed2"}

    def train(argv):
        trained.append(argv)
        return real_train(argv)

    def evaluate(argv):
        evaluated.append(argv)
        output_dir = Path(argv[argv.index("--output_dir") + 1])
        content = real_evaluate(argv)
        key = "/".join(output_dir.parts[-3:])
        if key in interrupt:  # killed after results.json, before results.md: the cell is not finished
            interrupt.discard(key)
            (output_dir / "results.md").unlink()
            raise KeyboardInterrupt(key)
        return content

    monkeypatch.setattr(run_cocoop, "main", train)
    monkeypatch.setattr(evaluate_transfer, "main", evaluate)
    grid = tmp_path / "grid"
    argv = ["--data_root", str(root), "--output_dir", str(grid), "--targets", "eurosat", "dtd", "imagenet-v2"]
    argv += ["--method", "coop", "cocoop", "--seeds", "1", "2", "--", *TINY]

    with pytest.raises(KeyboardInterrupt):
        run_transfer_benchmark.main(argv)
    assert len(trained) == 4 and len(evaluated) == 10  # 2 methods x 2 seeds; 3 targets each, the last one killed
    for call in trained:
        assert call[call.index("--benchmark") + 1] == "ImageNet" and call[call.index("--protocol") + 1] == "all"
    assert not (grid / "transfer.json").exists()

    trained.clear(), evaluated.clear()
    tables = run_transfer_benchmark.main(argv)
    assert trained == []  # every model was trained already
    redone = [Path(a[a.index("--output_dir") + 1]).relative_to(grid).as_posix() for a in evaluated]
    assert redone == ["EuroSAT/cocoop/seed2", "DescribableTextures/cocoop/seed2", "ImageNetV2/cocoop/seed2"]
    assert "--overwrite_output_dir" in evaluated[0] and "--overwrite_output_dir" not in evaluated[1]

    # every number of the tables is the mean over seeds of the cells' own results
    for method in ("coop", "cocoop"):
        for dataset in ("ImageNet", "EuroSAT", "DescribableTextures", "ImageNetV2"):
            runs = [
                json.loads((grid / dataset / method / f"seed{s}" / "results.json").read_text())["runs"][0]
                for s in (1, 2)
            ]
            assert {run["dataset"] for run in runs} == {dataset} and [run["seed"] for run in runs] == [1, 2]
            values = [run["metrics"]["all"]["accuracy"] for run in runs]
            key = "domain_generalisation" if dataset == "ImageNetV2" else "cross_dataset"
            stat = tables["tables"][key]["rows"][method][dataset]
            assert stat["mean"] == pytest.approx(statistics.fmean(values), abs=1e-9)
            assert stat["std"] == pytest.approx(statistics.stdev(values), abs=1e-9) and stat["seeds"] == [1, 2]
        source = json.loads((grid / "ImageNet" / method / "seed1" / "results.json").read_text())["runs"][0]
        assert source["metrics"]["all"]["num_samples"] == 6  # all 3 classes x 2 val images
        evaluation = json.loads((grid / "EuroSAT" / method / "seed1" / "results.json").read_text())
        assert evaluation["model"] == str((grid / "ImageNet" / method / "seed1").resolve())
        assert evaluation["runs"][0]["metrics"]["all"]["num_samples"] == 8  # 4 EuroSAT classes x 2 test images
        # the evaluation records the model's own CLIP and source dataset, read from its folder
        assert evaluation["source_dataset"] == "ImageNet"
        assert evaluation["clip"] == {"name_or_path": str(TINY_CLIP), "revision": None, "random_weights": True}
        cross = tables["tables"]["cross_dataset"]["rows"][method]
        mean = statistics.fmean([cross["EuroSAT"]["mean"], cross["DescribableTextures"]["mean"]])
        assert cross["average"]["mean"] == pytest.approx(mean, abs=1e-9)

    assert tables["tables"]["cross_dataset"]["columns"] == [
        "ImageNet",
        "DescribableTextures",  # the paper's column order, not the command's
        "EuroSAT",
        "average",
    ]
    assert tables["tables"]["domain_generalisation"]["columns"] == ["ImageNet", "ImageNetV2"]
    markdown = (grid / "transfer.md").read_text()
    assert RANDOM_WEIGHTS_NOTE in markdown and tables["note"] == RANDOM_WEIGHTS_NOTE
    assert "| CoCoOp (paper) | 71.02 | 45.73 | 45.37 | 65.74 |" in markdown
    assert "| CoOp (paper) | 71.51 | 64.20 |" in markdown
    assert "they do not compare" in markdown
    assert json.loads((grid / "transfer.json").read_text()) == json.loads(json.dumps(tables))
    assert (grid / "transfer.png").stat().st_size > 0

    trained.clear(), evaluated.clear()
    assert run_transfer_benchmark.main(argv) == tables
    assert trained == [] and evaluated == []

    with pytest.raises(ValueError, match=r"was run by this grid with other flags"):
        run_transfer_benchmark.main([*argv, "--learning_rate", "0.1"])


def test_paper_values_and_target_names():
    for method, row in run_transfer_benchmark.PAPER_CROSS_DATASET.items():
        targets = [row[t] for t in run_transfer_benchmark.CROSS_DATASET_TARGETS]
        # the paper's average is that of its 10 targets, to its rounding
        assert statistics.fmean(targets) == pytest.approx(row["average"], abs=0.005), method
        assert row["ImageNet"] == run_transfer_benchmark.PAPER_DG[method]["ImageNet"]
    resolve = run_transfer_benchmark.resolve_targets
    assert resolve(["dg"]) == list(run_transfer_benchmark.DG_TARGETS)
    assert resolve(["all"]) == [*run_transfer_benchmark.CROSS_DATASET_TARGETS, *run_transfer_benchmark.DG_TARGETS]
    assert resolve(["flowers102", "imagenet-a", "DTD"]) == ["OxfordFlowers", "ImageNetA", "DescribableTextures"]
    with pytest.raises(ValueError, match="ImageNet is the source dataset, not a target"):
        resolve(["imagenet"])
    with pytest.raises(ValueError, match="--output_dir after '--' is set by the grid"):
        run_transfer_benchmark.parse_args(["--data_root", "d", "--output_dir", "o", "--", "--output_dir", "x"])


def test_zero_shot_cells_run_once_on_source_and_targets(tmp_path):
    args = run_transfer_benchmark.parse_args(
        ["--data_root", "d", "--output_dir", str(tmp_path), "--targets", "dg", "--seeds", "2", "3"]
    )
    cells = run_transfer_benchmark.build_grid(args)
    zero_shot = [(c.kind, c.dataset, c.seed) for c in cells if c.method == "zeroshot"]
    assert zero_shot == [("zeroshot", d, 2) for d in ("ImageNet", *run_transfer_benchmark.DG_TARGETS)]
    trained = [(c.kind, c.method, c.seed) for c in cells if c.kind == "train"]
    assert trained == [("train", m, s) for m in ("coop", "cocoop") for s in (2, 3)]
    assert len(cells) == 5 + 2 * 2 * (1 + 4)


def test_source_dataset_is_read_from_the_model_folder(tmp_path):
    from cocoop_hf_training.evaluate_transfer import trained_source_dataset

    (tmp_path / "results.json").write_text(json.dumps({"runs": [{"dataset": "ImageNet", "seed": 1}]}))
    assert trained_source_dataset(str(tmp_path), None) == "ImageNet"
    assert trained_source_dataset(str(tmp_path), "ImageNet") == "ImageNet"
    with pytest.raises(ValueError, match=r"--source_dataset 'EuroSAT', but .*results.json says .* 'ImageNet'"):
        trained_source_dataset(str(tmp_path), "EuroSAT")
    assert trained_source_dataset(str(tmp_path / "elsewhere"), "EuroSAT") == "EuroSAT"  # nothing to read: as given
    assert trained_source_dataset(None, None) is None


def test_recipes_and_every_layout_are_checked_before_the_first_cell(tmp_path, monkeypatch):
    from cocoop_hf_training import grid

    ran = []
    monkeypatch.setattr(run_cocoop, "main", lambda argv: ran.append(argv))
    monkeypatch.setattr(evaluate_transfer, "main", lambda argv: ran.append(argv))
    root = tmp_path / "data"
    make_imagenet(root)
    make_eurosat(root)
    argv = ["--data_root", str(root), "--output_dir", str(tmp_path / "g"), "--targets", "eurosat", "imagenet-a"]
    with pytest.raises(FileNotFoundError, match="imagenet-adversarial"):
        run_transfer_benchmark.main(argv)
    monkeypatch.setitem(grid.RECIPES, "cocoop", tmp_path / "nowhere.yaml")
    with pytest.raises(ValueError, match=r"recipe file\(s\) missing: .*nowhere.yaml"):
        run_transfer_benchmark.main([*argv[:-1]])
    assert ran == [] and not (tmp_path / "g").exists()


@pytest.mark.parametrize(
    "methods, extra, message",
    [
        (["coop"], ["--class_specific_context", "true"], "one context per class scores only the classes it was"),
        (["cocoop"], ["--model_name_or_path", "some/model"], "the grid trains its own models"),
        ([], ["--bogus_flag", "1"], r"zeroshot seed 1 on ImageNet: run_cocoop refuses .*\['--bogus_flag', '1'\]"),
        (["coop"], ["--clip_dtype", "fp64"], "--clip_dtype must be one of"),
    ],
)
def test_flags_are_checked_before_anything_is_written(tmp_path, monkeypatch, methods, extra, message):
    """These surfaced after the source had trained (CSC), as 'a finished run of another cell' (a trained model), or
    once the grid folder was made and the first cell started (a typo)."""
    ran = []
    monkeypatch.setattr(run_cocoop, "main", lambda argv: ran.append(argv))
    monkeypatch.setattr(evaluate_transfer, "main", lambda argv: ran.append(argv))
    root = tmp_path / "data"
    make_imagenet(root)
    make_eurosat(root)
    argv = ["--data_root", str(root), "--output_dir", str(tmp_path / "g"), "--targets", "eurosat", "--seeds", "1"]
    argv += ["--method", *methods] if methods else []
    with pytest.raises(ValueError, match=message):
        run_transfer_benchmark.main([*argv, "--", *extra])
    assert ran == [] and not (tmp_path / "g").exists()


def test_source_data_options_and_clip_dtype_reach_the_evaluations(tmp_path, monkeypatch):
    """--max_eval_samples (and the other data options of the source run) apply to every target; --clip_dtype bf16
    evaluates the targets with the CLIP weights the source was trained and scored with."""
    grid_dir = tmp_path / "g"
    base = ["--data_root", str(tmp_path / "data"), "--output_dir", str(grid_dir), "--targets", "eurosat"]
    base += ["--method", "cocoop", "--seeds", "1"]
    args = run_transfer_benchmark.parse_args(
        [*base, "--", "--max_eval_samples", "3", "--clip_dtype", "bf16", "--image_size", "32"]
    )
    cells = run_transfer_benchmark.build_grid(args)
    run_transfer_benchmark.check_cells(cells, args)
    evaluation = next(cell for cell in cells if cell.kind == "evaluate")
    argv = run_transfer_benchmark.evaluate_argv(evaluation, args)
    assert argv[argv.index("--clip_dtype") + 1] == "bf16"
    command = run_transfer_benchmark.cell_command(evaluation, args)
    assert command[-2:] == ["target options:", json.dumps({"image_size": 32, "max_eval_samples": 3})]

    seen = []
    monkeypatch.setattr(evaluate_transfer, "main", lambda argv: seen.append((argv, (grid_dir / "EuroSAT" / "cocoop" /
                        "seed1" / "targets.json").read_text())))  # fmt: skip
    run_transfer_benchmark.run_one(evaluation, args, [])
    (target,) = json.loads(seen[0][1])["targets"]
    assert (target["benchmark"], target["max_eval_samples"], target["image_size"]) == ("EuroSAT", 3, 32)
    assert "--clip_dtype" in seen[0][0]

    # without them, the cell's command is what earlier grids recorded: their cells are still skipped, not refused
    args = run_transfer_benchmark.parse_args(base)
    run_transfer_benchmark.check_cells(run_transfer_benchmark.build_grid(args), args)
    argv = run_transfer_benchmark.evaluate_argv(evaluation, args)
    assert "--clip_dtype" not in argv
    assert run_transfer_benchmark.cell_command(evaluation, args) == ["evaluate_transfer", *argv]
    assert run_transfer_benchmark.target_entry(evaluation, args) == {
        "benchmark": "EuroSAT",
        "data_root": str((tmp_path / "data").resolve()),
        "eval_split": "test",
    }


def test_tables_label_rows_by_the_models_options_and_show_the_shots_used(tmp_path):
    """A CoOp model with the class token in the middle is its own row, without the paper's CoOp row beside it; an
    evaluation is labelled by the model it scores (its training cell's results), even one that records no options."""
    cell = run_transfer_benchmark.TransferCell

    def content(dataset, method, accuracy, options=None, shots=None):
        run = {"dataset": dataset, "method": method, "seed": 1, "num_shots": shots,
               "metrics": {"all": {"accuracy": accuracy}}}  # fmt: skip
        if options is not None:
            run["method_options"] = {"conditional": method == "cocoop", "n_ctx": 4, "class_specific_context": False,
                                     "kgcoop_weight": 0.0, **options}  # fmt: skip
        return {"note": None, "runs": [run]}

    middle, end = {"class_token_position": "middle"}, {"class_token_position": "end"}
    results = {
        cell("zeroshot", "zeroshot", 1, "ImageNet", tmp_path / "a"): content("ImageNet", "zeroshot", 60.0),
        cell("zeroshot", "zeroshot", 1, "EuroSAT", tmp_path / "b"): content("EuroSAT", "zeroshot", 40.0),
        cell("train", "coop", 1, "ImageNet", tmp_path / "c"): content("ImageNet", "coop", 70.0, middle, shots=1),
        cell("evaluate", "coop", 1, "EuroSAT", tmp_path / "d"): content("EuroSAT", "coop", 30.0),
        cell("train", "cocoop", 1, "ImageNet", tmp_path / "e"): content("ImageNet", "cocoop", 71.0, end, shots=1),
        cell("evaluate", "cocoop", 1, "EuroSAT", tmp_path / "f"): content("EuroSAT", "cocoop", 45.0, end),
    }
    tables = run_transfer_benchmark.transfer_tables(results, ["zeroshot", "coop", "cocoop"], ["EuroSAT"])
    cross = tables["tables"]["cross_dataset"]
    assert list(cross["rows"]) == ["zeroshot", "coop (class token middle)", "cocoop"]
    assert cross["rows"]["coop (class token middle)"]["EuroSAT"]["mean"] == 30.0
    assert list(cross["paper"]) == ["cocoop"]
    assert tables["shots"] == [1]
    markdown = run_transfer_benchmark.transfer_markdown(tables)
    assert "| CoOp (class token middle) | 70.00 | 30.00 | 30.00 |" in markdown
    assert "| CoOp (paper) |" not in markdown and "| CoCoOp (paper) | 71.02 | 45.37 | 65.74 |" in markdown
    assert "trained on ImageNet, all classes, 1 shot\n" in markdown and "16 shots" not in markdown
    assert "CoOp (class token middle): not the method as published" in markdown
    run_transfer_benchmark.write_tables(tmp_path / "out", tables)
    assert (tmp_path / "out" / "transfer.png").stat().st_size > 0
