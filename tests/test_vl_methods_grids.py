"""
IVLP, MaPLe and PromptSRC through the grids on the miniature layouts (issue 19): `cocoop-hf benchmark --method ivlp
maple promptsrc` (Table 1, inline and as two parallel local jobs) and `cocoop-hf transfer-benchmark --method maple
promptsrc` (Tables 2 and 3, their cross-dataset recipes) run each method's shipped recipe unchanged apart from the
short-run flags after `--`, on a tiny random CLIP deep enough for the recipes' depth 9; a source model trained with
its cross-dataset recipe counts as the method as published in the transfer tables, and a trained folder runs through
the zero-shot pipeline with new class names. The CLIP weights are RANDOM: every accuracy here is meaningless.
"""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cocoop_hf_training import commands, grid, run_benchmark, run_transfer_benchmark, transfer_tables
from cocoop_hf_training.prompt_aggregation import gpa_weights
from cocoop_hf_training.report import (
    BASE_TO_NEW_FORMS,
    CROSS_DATASET_FORMS,
    RANDOM_WEIGHTS_NOTE,
    is_published_form,
    method_label,
)
from cocoop_hf_training.run_arguments import parse_args as run_cocoop_parse_args

from .conftest import save_tiny_clip
from .test_benchmark_runs import make_eurosat
from .test_run_transfer_benchmark import make_imagenet


METHODS = ("ivlp", "maple", "promptsrc")
TITLES = {"ivlp": "IVLP", "maple": "MaPLe", "promptsrc": "PromptSRC"}
# The recipes' depths (9 base-to-new, 3 cross-dataset) must fit the backbone: 9 layers per tower, width 32.
LAYERS = 9
# Class names EuroSAT's miniature layout never trained on (tests/test_benchmark_runs.py EUROSAT).
NEW_NAMES = ["Highway or Road", "Industrial Buildings", "Pasture Land"]


@pytest.fixture(scope="module")
def deep_clip(tmp_path_factory):
    """A tiny random CLIP with 9 layers per tower (the demo's tiny CLIP has 2: the recipes' depth 9 is refused)."""
    return save_tiny_clip(tmp_path_factory.mktemp("clip-9-layers"), layers=LAYERS, hidden=32)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("vl-grid-data")
    make_eurosat(root)
    make_imagenet(root)
    return root


def short_run(clip: Path) -> list[str]:
    """The usual short-run overrides after `--`: the deep random CLIP, 2 shots, 1 epoch, CPU, no checkpoints."""
    return [
        "--clip_model_name_or_path", str(clip), "--random_init_clip", "true",
        "--num_train_epochs", "1", "--num_shots", "2", "--per_device_train_batch_size", "2",
        "--per_device_eval_batch_size", "8", "--use_cpu", "true", "--fp16", "false",
        "--dataloader_num_workers", "0", "--disable_tqdm", "true", "--save_strategy", "no",
    ]  # fmt: skip


def table1_argv(data_root, output_dir, clip, methods=METHODS, *options) -> list[str]:
    argv = ["--benchmark", "eurosat", "--data_root", str(data_root), "--output_dir", str(output_dir)]
    return [*argv, "--method", *methods, "--seeds", "1", *options, "--", *short_run(clip)]


def cell_results(grid_dir: Path, dataset: str, method: str) -> dict:
    return json.loads((grid_dir / dataset / method / "seed1" / "results.json").read_text())


def recorded_command(grid_dir: Path, dataset: str, method: str) -> list[str]:
    """A cell's command as the grid recorded it (grid_cells.json), the run_cocoop arguments from the recipe on."""
    records = json.loads((grid_dir / grid.CELL_RECORDS_NAME).read_text())
    command = records[str(grid_dir / dataset / method / "seed1")]
    return command[1:] if command[0] == "run_cocoop" else command  # the transfer grid names the script first


def check_cells(grid_dir: Path, clip: Path, methods) -> None:
    """Each cell ran its shipped base-to-new recipe, only the short-run flags added, and its results name it."""
    for method in methods:
        command = recorded_command(grid_dir, "EuroSAT", method)
        assert command[0] == str(grid.RECIPES[method]) and command[-len(short_run(clip)) :] == short_run(clip)
        content = cell_results(grid_dir, "EuroSAT", method)
        (run,) = content["runs"]
        assert run["method"] == method and content["recipe"]["method"] == method
        options = run["method_options"]
        assert {name: options[name] for name in BASE_TO_NEW_FORMS[method]} == BASE_TO_NEW_FORMS[method]
        assert options["prompt_depth_text"] == LAYERS  # depth 9, as published: the deep CLIP took it
        assert ("prompt_aggregation" in content) == (method == "promptsrc")
        if method == "promptsrc":
            record = content["prompt_aggregation"]
            assert (record["mean"], record["std"], record["epochs"], record["applied"]) == (15.0, 1.0, 1, True)
            assert record["weights"] == pytest.approx(gpa_weights(15.0, 1.0, 1))


def check_table1(grid_dir: Path, table: dict, methods) -> None:
    """A row per method, titled as published, the paper's averages beside, in table1.json and table1.md."""
    assert [row["method"] for row in table["rows"]] == list(methods)
    assert [row["title"] for row in table["rows"]] == [TITLES[m] for m in methods]
    assert all(row["published"] and row["dataset"] == "EuroSAT" for row in table["rows"])
    assert table["paper_average"] == {method: run_benchmark.PAPER_AVERAGES[method] for method in methods}
    assert table["note"] == RANDOM_WEIGHTS_NOTE  # random weights: said above the table
    markdown = (grid_dir / "table1.md").read_text()
    for method in methods:
        average, paper = table["average"][method], run_benchmark.PAPER_AVERAGES[method]
        ours = f"{average['base']:.2f} | {average['new']:.2f} | {average['H']:.2f}"
        theirs = f"{paper['base']:.2f} | {paper['new']:.2f} | {paper['H']:.2f}"
        assert f"| {TITLES[method]} | 1 | {ours} | {theirs} |" in markdown
    assert "not the method as published" not in markdown
    assert json.loads((grid_dir / "table1.json").read_text()) == json.loads(json.dumps(table))


# ---------------------------------------------------------------------------------------------- Table 1


def test_table1_of_the_three_methods_inline(data_root, deep_clip, tmp_path):
    grid_dir = tmp_path / "table1"
    table = run_benchmark.main(table1_argv(data_root, grid_dir, deep_clip))
    check_table1(grid_dir, table, METHODS)
    check_cells(grid_dir, deep_clip, METHODS)


def test_table1_as_two_local_jobs_at_once(data_root, deep_clip, tmp_path):
    """`--launcher local --max_parallel 2`: MaPLe and PromptSRC, each cell a process of its own, both at once."""
    grid_dir, methods = tmp_path / "local", ("maple", "promptsrc")
    table = run_benchmark.main(
        table1_argv(data_root, grid_dir, deep_clip, methods, "--launcher", "local", "--max_parallel", "2")
    )
    check_table1(grid_dir, table, methods)
    check_cells(grid_dir, deep_clip, methods)
    runs = [json.loads((grid_dir / "grid_jobs" / f"EuroSAT__{m}__seed1.job.json").read_text()) for m in methods]
    assert [run["state"] for run in runs] == ["exited", "exited"] and runs[0]["pid"] != runs[1]["pid"]
    assert max(run["started_at"] for run in runs) < min(run["ended_at"] for run in runs)  # both at once


# ---------------------------------------------------------------------------------------------- pipeline


def test_a_folder_trained_by_cocoop_hf_train_runs_through_the_zero_shot_pipeline(data_root, deep_clip, tmp_path):
    """
    `cocoop-hf train`'s PromptSRC folder (text and vision prompts at depth 9, aggregated by GPA), loaded by the pipeline
    with its trained prompts, scores class names it never saw as the loaded model's own logits do. (A MaPLe folder
    built with `from_clip`: tests/test_deep_prompt_model.py.)
    """
    from transformers import AutoProcessor, pipeline

    from cocoop_hf import CoCoOpModel

    method = "promptsrc"
    folder = tmp_path / method
    recipe = grid.RECIPES[method].stem
    flags = [*short_run(deep_clip), "--benchmark", "eurosat", "--data_root", str(data_root)]
    assert commands.main(["train", recipe, *flags, "--output_dir", str(folder)]) == 0

    pipe = pipeline("zero-shot-image-classification", model=str(folder), trust_remote_code=True)
    assert pipe.model.config.method_name == method and pipe.model.config.prompt_depth_text == LAYERS
    saved = load_file(folder / "model.safetensors")
    learned = pipe.model.prompt_learner.state_dict()
    assert learned and all(torch.equal(t, saved[f"prompt_learner.{name}"]) for name, t in learned.items())

    image = Image.fromarray((torch.rand(40, 40, 3, generator=torch.Generator().manual_seed(5)) * 255).byte().numpy())
    scores = {row["label"]: row["score"] for row in pipe(image, candidate_labels=NEW_NAMES)}
    model = CoCoOpModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    with torch.no_grad():
        pixels = processor(images=image, return_tensors="pt")["pixel_values"]
        probabilities = model(pixel_values=pixels, **model.class_prompts(NEW_NAMES)).logits.softmax(-1)[0].tolist()
    assert sorted(scores) == sorted(NEW_NAMES)
    for name, probability in zip(NEW_NAMES, probabilities, strict=True):
        assert scores[name] == pytest.approx(probability, abs=1e-5)


# ---------------------------------------------------------------------------------------------- Tables 2 and 3


def test_transfer_grid_trains_the_cross_dataset_recipes_and_counts_them_as_published(data_root, deep_clip, tmp_path):
    output_dir = tmp_path / "transfer"
    argv = ["--data_root", str(data_root), "--output_dir", str(output_dir), "--targets", "eurosat"]
    tables = run_transfer_benchmark.main(
        [*argv, "--method", "maple", "promptsrc", "--seeds", "1", "--", *short_run(deep_clip)]
    )

    for method in ("maple", "promptsrc"):
        assert recorded_command(output_dir, "ImageNet", method)[0] == str(grid.TRANSFER_RECIPES[method])
        source = cell_results(output_dir, "ImageNet", method)
        options = source["runs"][0]["method_options"]
        assert source["runs"][0]["method"] == method and sorted(source["runs"][0]["metrics"]) == ["all"]
        assert (options["prompt_depth_text"], options["prompt_depth_vision"]) == (3, 3)  # the cross-dataset depth
        evaluation = cell_results(output_dir, "EuroSAT", method)
        assert evaluation["runs"][0]["method"] == method
        assert evaluation["model"] == str((output_dir / "ImageNet" / method / "seed1").resolve())
    record = cell_results(output_dir, "ImageNet", "promptsrc")["prompt_aggregation"]
    assert (record["mean"], record["std"], record["applied"]) == (6.0, 10.0, True)  # cross-dataset GPA

    labels = tables["labels"]
    assert list(labels) == ["maple", "promptsrc"]  # not "maple (depth 3)": the recipe this grid trains with
    assert [labels[m]["title"] for m in labels] == ["MaPLe", "PromptSRC"]
    assert all(variant["published"] for variant in labels.values())
    cross = tables["tables"]["cross_dataset"]
    assert cross["columns"] == ["ImageNet", "EuroSAT", "average"]
    for method in ("maple", "promptsrc"):
        accuracy = cell_results(output_dir, "EuroSAT", method)["runs"][0]["metrics"]["all"]["accuracy"]
        assert cross["rows"][method]["EuroSAT"]["mean"] == accuracy
    markdown = (output_dir / "transfer.md").read_text()
    assert "| MaPLe | " in markdown and "| PromptSRC | " in markdown
    assert "depth 3" not in markdown and "not the method as published" not in markdown
    assert RANDOM_WEIGHTS_NOTE in markdown


# ---------------------------------------------------------------------------------------------- labels


def deep_run(method: str, depth: int, dataset="ImageNet", accuracy=50.0, metrics=("all",)) -> dict:
    options = {"conditional": False, "n_ctx": 2 if method == "maple" else 4, "class_token_position": "end",
               "class_specific_context": False, "kgcoop_weight": 0.0, "n_ctx_vision": None if method == "maple" else 4,
               "prompt_depth_text": depth, "prompt_depth_vision": depth, "vision_prompts_from_text": method == "maple"}  # fmt: skip
    if method == "promptsrc":
        options.update(promptsrc_text_weight=25.0, promptsrc_image_weight=10.0, promptsrc_logits_weight=1.0)
    return {"dataset": dataset, "method": method, "seed": 1, "num_shots": 16, "method_options": options,
            "metrics": {name: {"accuracy": accuracy} for name in metrics}}  # fmt: skip


def test_the_published_forms_are_those_of_the_recipes_each_grid_trains_with(tmp_path):
    """BASE_TO_NEW_FORMS: grid.RECIPES (Table 1); CROSS_DATASET_FORMS: grid.TRANSFER_RECIPES (Tables 2/3), IVLP's own."""
    where = ["--benchmark", "eurosat", "--data_root", str(tmp_path), "--output_dir", str(tmp_path / "o")]
    for forms, recipe_of in (
        (BASE_TO_NEW_FORMS, grid.RECIPES),
        (CROSS_DATASET_FORMS, {**grid.RECIPES, **grid.TRANSFER_RECIPES}),
    ):
        for method in METHODS:
            model_args, *_, run_args = run_cocoop_parse_args([str(recipe_of[method]), *where])
            config = {"n_ctx": model_args.n_ctx, **model_args.method_config()}
            config.update(gpa_mean=run_args.gpa_mean, gpa_std=run_args.gpa_std)
            assert {name: config[name] for name in forms[method]} == forms[method], (method, recipe_of[method])
    assert set(grid.TRANSFER_RECIPES) == {"maple", "promptsrc"}  # the methods whose form differs between the tables


def test_a_deep_prompt_run_is_labelled_against_the_recipe_of_its_table():
    maple3, promptsrc3, maple9 = deep_run("maple", 3), deep_run("promptsrc", 3), deep_run("maple", 9)
    # Tables 2/3 compare with the cross-dataset recipes
    assert method_label(maple3, forms=CROSS_DATASET_FORMS) == "maple"
    assert is_published_form(maple3, CROSS_DATASET_FORMS)
    assert method_label(promptsrc3, grid.METHOD_TITLES, CROSS_DATASET_FORMS) == "PromptSRC"
    assert method_label(maple9, forms=CROSS_DATASET_FORMS) == "maple (depth 9)"
    assert not is_published_form(maple9, CROSS_DATASET_FORMS)
    # Table 1 (and the default) with the base-to-new ones
    assert method_label(maple3) == "maple (depth 3)" and not is_published_form(maple3)
    assert method_label(promptsrc3) == "promptsrc (depth 3/3)" and is_published_form(maple9)
    assert is_published_form(deep_run("ivlp", 9), CROSS_DATASET_FORMS)  # no cross-dataset recipe: base-to-new's


def test_each_tables_variant_note_names_the_published_forms_it_compares_with(tmp_path):
    cell = run_transfer_benchmark.TransferCell
    results = {
        cell("train", "maple", 1, "ImageNet", tmp_path / "a"): {"note": None, "runs": [deep_run("maple", 9)]},
        cell("evaluate", "maple", 1, "EuroSAT", tmp_path / "b"): {
            "note": None,
            "runs": [deep_run("maple", 9, "EuroSAT")],
        },
        cell("train", "promptsrc", 1, "ImageNet", tmp_path / "c"): {"note": None, "runs": [deep_run("promptsrc", 3)]},
    }
    tables = transfer_tables.transfer_tables(results, ["maple", "promptsrc"], ["EuroSAT"])
    assert {label: v["published"] for label, v in tables["labels"].items()} == {
        "maple (depth 9)": False,
        "promptsrc": True,
    }
    markdown = transfer_tables.transfer_markdown(tables)
    assert "MaPLe (depth 9): not the method as published (" in markdown
    note = transfer_tables.VARIANT_NOTE
    assert "MaPLe, its cross-dataset recipe: 2 tokens, depth 3;" in note
    assert "PromptSRC, its cross-dataset recipe: 4+4 tokens, depth 3/3, weights 25/10/1, GPA mean 6, std 10)" in note

    base_to_new = {
        run_benchmark.Cell("EuroSAT", method, 1, tmp_path / method, 16): {
            "note": None, "runs": [{**deep_run(method, depth, "EuroSAT", metrics=("base", "new")), "H": 50.0}]
        }
        for method, depth in (("maple", 3), ("promptsrc", 9))
    }  # fmt: skip
    table = run_benchmark.table1(base_to_new, ["EuroSAT"], ["maple", "promptsrc"])
    assert [row["label"] for row in table["rows"]] == ["maple (depth 3)", "promptsrc"]
    assert list(table["paper_average"]) == ["promptsrc"]
    markdown = run_benchmark.table1_markdown(table)
    assert "MaPLe (depth 3): not the method as published (" in markdown
    for form in ("IVLP: 4+4 tokens, depth 9/9;", "MaPLe: 2 tokens, depth 9;",
                 "PromptSRC: 4+4 tokens, depth 9/9, weights 25/10/1, GPA mean 15, std 1)"):  # fmt: skip
        assert form in run_benchmark.VARIANT_NOTE


def test_a_promptsrc_run_with_other_gpa_is_a_variant():
    run = deep_run("promptsrc", 9)
    run["method_options"].update(gpa_mean=15.0, gpa_std=1.0)
    assert method_label(run) == "promptsrc" and is_published_form(run)
    run["method_options"].update(gpa_mean=6.0, gpa_std=10.0)
    assert method_label(run) == "promptsrc (GPA 6/10)" and not is_published_form(run)


def test_a_text_only_ivlp_run_says_it_has_no_vision_prompts():
    from cocoop_hf_training.report import options_text

    run = deep_run("ivlp", 9)
    run["method_options"].update(prompt_depth_vision=0, n_ctx_vision=None)
    assert method_label(run) == "ivlp (depth 9/0)"
    assert "no vision prompts (text prompts only)" in options_text(run["method_options"])
