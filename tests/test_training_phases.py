"""cocoop_hf_training/: no import circle among its modules, and run_cocoop's phases (start, data, checks, images, model, train,
save, evaluate, report) callable on their own."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from cocoop_hf_training import run_cocoop

from .conftest import DEMO, tiny_run_argv


REPO = Path(__file__).resolve().parent.parent
CIFAR_DATA_ARGS = [
    "--train_file", str(DEMO / "cifar10_demo" / "train.parquet"),
    "--eval_file", str(DEMO / "cifar10_demo" / "test.parquet"),
    "--image_column", "img",
    "--dataset_display_name", "cifar10-demo",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------- import graph


def training_imports(folder: Path) -> dict[str, set[str]]:
    """Module -> the `training` modules it imports anywhere in its text (top level, inside functions, under
    TYPE_CHECKING): a lazy import still makes a circle, only a later one."""
    modules = {path.stem for path in folder.glob("*.py")}
    graph = {}
    for path in folder.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module == "cocoop_hf_training":
                found |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cocoop_hf_training."):
                found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("cocoop_hf_training.")}
        graph[path.stem] = found - {path.stem}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle of `graph`, as the path that closes it (depth-first search from each module)."""
    found = []

    def visit(module, path):
        for target in sorted(graph.get(module, ())):
            if target in path:
                found.append(path[path.index(target) :] + [target])
            elif target not in done:
                visit(target, path + [target])
        done.add(module)

    done = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    return found


def test_the_circle_finder_finds_a_planted_circle(tmp_path):
    # The check below can fail: the data <-> fewshot circle as it was (data imported fewshot's API at the top,
    # fewshot imported data inside a function), and a longer one.
    (tmp_path / "data.py").write_text("from cocoop_hf_training.fewshot import select_few_shot\n")
    (tmp_path / "fewshot.py").write_text("def f():\n    from cocoop_hf_training.data import SOURCE_ROW_COLUMN\n")
    (tmp_path / "a.py").write_text("from cocoop_hf_training import b\n")
    (tmp_path / "b.py").write_text("import cocoop_hf_training.c\n")
    (tmp_path / "c.py").write_text("from cocoop_hf_training.a import x\n")
    (tmp_path / "d.py").write_text("from cocoop_hf_training import a\n")  # reaches a circle, is in none
    found = circles(training_imports(tmp_path))
    assert sorted(tuple(sorted(set(circle))) for circle in found) == [("a", "b", "c"), ("data", "fewshot")]


def test_no_import_circle_among_the_training_modules():
    graph = training_imports(REPO / "cocoop_hf_training")
    assert {"data", "fewshot", "data_loading", "run_cocoop", "checkpoints", "run_settings"} <= set(graph)
    assert circles(graph) == []
    # The pieces both sides need live in modules below them, not in data.py (which only gathers the data API).
    assert "data" not in graph["fewshot"] and "data" not in graph["run_cocoop"]
    assert "checkpoints" not in graph["run_settings"]


def test_fewshot_then_data_imports_in_a_fresh_interpreter():
    """Imported first, each side of the old circle loads (a circle fails on a partly initialised module)."""
    code = (
        "import cocoop_hf_training.fewshot, cocoop_hf_training.data, cocoop_hf_training.run_settings, cocoop_hf_training.checkpoints\n"
        "assert cocoop_hf_training.data.few_shot_indices is cocoop_hf_training.fewshot.few_shot_indices\n"
        "print('imported')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "imported", done.stderr[-2000:]


# ---------------------------------------------------------------------------------------------- phases


def test_start_and_data_phases_read_and_write_nothing(tmp_path):
    """The start phase resolves the method options once; the data phase loads and splits, writing nothing."""
    output_dir = tmp_path / "out"
    run = run_cocoop.start_run(tiny_run_argv(output_dir, CIFAR_DATA_ARGS, "--method", "kgcoop"))
    assert run.method.kgcoop_template == "a photo of a {}." and run.method.zero_shot_template is None
    assert run.method.config.kgcoop_weight == 8.0 and not run.method.class_specific
    data = run_cocoop.load_data(run)
    assert data.train_task == "base" and len(data.names["base"]) == 5 and len(data.names["new"]) == 5
    assert data.train_dataset is None and data.eval_sets == {}
    assert not output_dir.exists()


def test_phases_one_by_one_give_what_main_gives(tmp_path):
    """The phases called in main's order by hand: a trained, saved, evaluated and reported run."""
    output_dir = tmp_path / "out"
    run = run_cocoop.start_run(tiny_run_argv(output_dir, CIFAR_DATA_ARGS, "--method", "coop", "--ctx_init", "a photo"))
    data = run_cocoop.load_data(run)
    run_cocoop.check_before_writing(run, data)
    assert run.settings is not None and output_dir.is_dir()
    run_cocoop.select_images(run, data)
    assert len(data.train_dataset) == 2 * 5 and set(data.eval_sets) == {"base", "new"}
    assert (output_dir / "fewshot_indices.json").is_file()
    model = run_cocoop.build_run_model(run, data)
    assert model.config.n_ctx == 2 and not model.config.conditional
    trainer, epoch_evaluation = run_cocoop.train(run, data, model, None)
    assert epoch_evaluation is None and trainer.state.global_step == 5
    model = run_cocoop.save_model(run, data, trainer)
    assert (output_dir / "model.safetensors").is_file()
    evaluation = run_cocoop.evaluate(run, data, trainer, model, epoch_evaluation)
    assert set(evaluation) == {"base", "new"} and evaluation["base"]["num_samples"] > 0
    content = run_cocoop.report(run, data, model, evaluation, epoch_evaluation, [])
    assert content["runs"][0]["method"] == "coop" and content["recipe"]["method"] == "coop"
    assert (output_dir / "README.md").is_file() and (output_dir / "results.json").is_file()


def test_a_refused_zero_shot_template_stops_in_the_start_phase(tmp_path):
    argv = tiny_run_argv(tmp_path / "out", CIFAR_DATA_ARGS, "--method", "coop", "--prompt_template", "a {}.")
    with pytest.raises(ValueError, match="--prompt_template is the hand-crafted prompt of a zero-shot backbone"):
        run_cocoop.start_run(argv)
    assert not (tmp_path / "out").exists()
