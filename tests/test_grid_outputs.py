"""Output folders beyond run_cocoop's (issue 16, second pass): a grid folder's own files, evaluate_transfer's results,
Trainer's TensorBoard logs and the checkpoint converter's model files are recorded when written (output_manifest.json,
cocoop_hf_training/outputs.py and cocoop_hf/output_records.py), so a user's file of the same name is refused, never replaced."""

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import TrainerCallback

from cocoop_hf_training import evaluate_transfer, run_benchmark, run_cocoop, run_transfer_benchmark
from cocoop_hf_training.data import DataArguments

from .conftest import DEMO, TINY_CLIP
from .test_run_benchmark import fake, grid_argv  # noqa: F401  (`fake` is a fixture)
from .test_training import argv


MANIFEST = "output_manifest.json"
ONE_CELL = {"methods": ("cocoop",), "seeds": ("1",), "datasets": ("eurosat",)}


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


# ------------------------------------------------------------------------------------------- grid folders


def test_a_users_table_in_a_grid_folder_is_refused_before_any_cell_runs(fake, tmp_path):  # noqa: F811
    grid = tmp_path / "grid"
    grid.mkdir()
    (grid / "table1.md").write_text("my own table")
    with pytest.raises(ValueError, match=r"grid.* holds table1\.md but no output_manifest\.json.*never replaces"):
        run_benchmark.main(grid_argv(tmp_path, **ONE_CELL))
    assert fake.calls == [] and (grid / "table1.md").read_text() == "my own table"
    assert sorted(p.name for p in grid.iterdir()) == ["table1.md"]  # nothing written


def test_grid_files_changed_since_the_grid_wrote_them_are_refused_never_replaced(fake, tmp_path):  # noqa: F811
    run_benchmark.main(grid_argv(tmp_path, **ONE_CELL))
    grid = tmp_path / "grid"
    (grid / "notes.txt").write_text("mine")  # the user's other files are no obstacle
    for name, edit in (("table1.md", "my corrected table"), ("grid_cells.json", "{}")):
        original = (grid / name).read_text()
        (grid / name).write_text(edit)
        fake.calls.clear()
        with pytest.raises(ValueError, match=rf"holds {name.replace('.', '[.]')}, of the same name.*changed since"):
            run_benchmark.main(grid_argv(tmp_path, **{**ONE_CELL, "seeds": ("1", "2")}))
        assert fake.calls == [] and (grid / name).read_text() == edit
        (grid / name).write_text(original)
    run_benchmark.main(grid_argv(tmp_path, **ONE_CELL))  # the grid's own files, unchanged: rewritten
    assert (grid / "notes.txt").read_text() == "mine"


def test_the_grid_records_its_own_files_only_not_its_cells(fake, tmp_path):  # noqa: F811
    run_benchmark.main(grid_argv(tmp_path, **ONE_CELL))
    grid = tmp_path / "grid"
    manifest = manifest_of(grid)
    assert manifest["producer"] == "grid"
    assert sorted(manifest["entries"]) == ["grid_cells.json", "table1.json", "table1.md", "table1.png"]
    cell = grid / "EuroSAT" / "cocoop" / "seed1"
    assert manifest_of(cell)["producer"] == "run_cocoop" and "results.json" in manifest_of(cell)["entries"]


def test_a_grid_folder_from_before_the_record_gets_a_clear_message_and_a_way_on(fake, tmp_path):  # noqa: F811
    run_benchmark.main(grid_argv(tmp_path, **ONE_CELL))
    grid = tmp_path / "grid"
    (grid / MANIFEST).unlink()  # as a grid folder written before the grid recorded its files
    fake.calls.clear()
    with pytest.raises(ValueError) as error:
        run_benchmark.main(grid_argv(tmp_path, **ONE_CELL))
    message = str(error.value)
    assert "grid_cells.json, table1.json, table1.md, table1.png but no output_manifest.json" in message
    assert "move them out of" in message and "re-run the same command" in message and fake.calls == []
    # Doing what it says: the finished cell is skipped, the grid's files are written (and recorded) again.
    for name in ("grid_cells.json", "table1.json", "table1.md", "table1.png"):
        (grid / name).rename(tmp_path / name)
    run_benchmark.main(grid_argv(tmp_path, **ONE_CELL))
    assert fake.calls == [] and "table1.md" in manifest_of(grid)["entries"]


def test_a_cell_folder_reached_through_a_symlink_is_refused(fake, tmp_path):  # noqa: F811
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "grid").mkdir()
    (tmp_path / "grid" / "EuroSAT").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError, match=r"grid/EuroSAT is a symbolic link: the cell EuroSAT / cocoop / seed 1"):
        run_benchmark.main(grid_argv(tmp_path, **ONE_CELL))
    assert fake.calls == [] and list(elsewhere.iterdir()) == []


def test_a_users_transfer_table_is_refused_before_any_cell_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(run_transfer_benchmark, "check_layouts", lambda datasets, data_root: None)
    monkeypatch.setattr(run_transfer_benchmark, "run_one", lambda *a: pytest.fail("a cell ran before the refusal"))
    grid = tmp_path / "grid"
    grid.mkdir()
    (grid / "transfer.md").write_text("my own table")
    flags = ["--data_root", str(tmp_path / "data"), "--output_dir", str(grid), "--targets", "eurosat"]
    flags += ["--method", "cocoop", "--seeds", "1", "--", "--clip_model_name_or_path", str(TINY_CLIP)]
    with pytest.raises(ValueError, match=r"holds transfer\.md but no output_manifest\.json"):
        run_transfer_benchmark.main(flags)
    assert (grid / "transfer.md").read_text() == "my own table"


def transfer_cell_args(tmp_path):
    cell = run_transfer_benchmark.TransferCell("evaluate", "cocoop", 1, "EuroSAT", tmp_path / "EuroSAT" / "c" / "s1")
    model = SimpleNamespace(clip_dtype=None)
    training = SimpleNamespace(fp16=False, bf16=False)
    args = SimpleNamespace(
        data_root=str(tmp_path / "data"),
        output_dir=str(tmp_path),
        extra=[],
        sources={"cocoop": (model, DataArguments(benchmark="ImageNet", data_root=str(tmp_path)), training, None)},
    )
    return cell, args


def test_a_users_targets_file_in_a_transfer_cell_is_never_replaced(tmp_path, monkeypatch):
    evaluated = []
    monkeypatch.setattr(evaluate_transfer, "main", lambda argv: evaluated.append(argv))
    cell, args = transfer_cell_args(tmp_path)
    cell.output_dir.mkdir(parents=True)
    (cell.output_dir / "targets.json").write_text('{"targets": [{"benchmark": "mine"}]}')
    with pytest.raises(ValueError, match=r"targets\.json is not the targets file this grid writes.*refusing"):
        run_transfer_benchmark.run_one(cell, args, [])
    assert (cell.output_dir / "targets.json").read_text() == '{"targets": [{"benchmark": "mine"}]}'
    assert evaluated == []
    # The grid's own file (the very bytes it writes) is left as it is, and the cell runs.
    (cell.output_dir / "targets.json").unlink()
    run_transfer_benchmark.run_one(cell, args, [])
    written = (cell.output_dir / "targets.json").stat()
    run_transfer_benchmark.run_one(cell, args, [])
    assert len(evaluated) == 2 and (cell.output_dir / "targets.json").stat().st_ino == written.st_ino


# ------------------------------------------------------------------------------------------- evaluate_transfer


def transfer_flags(tmp_path, output_dir, *extra):
    test_file = str(DEMO / "cifar10_demo" / "test.parquet")
    target = {"dataset_display_name": "cifar10", "eval_file": test_file, "image_column": "img", "max_eval_samples": 4}
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps({"targets": [target]}))
    model = ["--method", "zeroshot", "--clip_model_name_or_path", str(TINY_CLIP), "--random_init_clip", "true"]
    return [*model, "--targets", str(targets), "--use_cpu", "true", "--output_dir", str(output_dir), *extra]


def test_evaluate_transfer_never_replaces_a_users_results_file(tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "results.md").write_text("my own table")
    with pytest.raises(ValueError, match=r"holds results\.md, of the same name as this script's outputs"):
        evaluate_transfer.main(transfer_flags(tmp_path, output_dir, "--overwrite_output_dir", "true"))
    assert sorted(p.name for p in output_dir.iterdir()) == ["results.md"]
    assert (output_dir / "results.md").read_text() == "my own table"


def test_evaluate_transfer_replaces_only_its_own_recorded_results(tmp_path):
    output_dir = tmp_path / "out"
    evaluate_transfer.main(transfer_flags(tmp_path, output_dir))
    manifest = manifest_of(output_dir)
    assert manifest["producer"] == "evaluate_transfer" and manifest["complete"]
    assert {"results.json", "results.md", "results.png"} <= set(manifest["entries"])
    with pytest.raises(ValueError, match=r"holds previous results \['results.json', 'results.md', 'results.png'\]"):
        evaluate_transfer.main(transfer_flags(tmp_path, output_dir))
    (output_dir / "notes.txt").write_text("mine")
    evaluate_transfer.main(transfer_flags(tmp_path, output_dir, "--overwrite_output_dir", "true"))
    assert (output_dir / "notes.txt").read_text() == "mine" and "notes.txt" not in manifest_of(output_dir)["entries"]


# ------------------------------------------------------------------------------------------- TensorBoard logs


class TensorBoardStandIn(TrainerCallback):
    """
    Writes `runs/<time>_<host>/events...` on train begin as Trainer's TensorBoardCallback does (SummaryWriter makes
    the folders): tensorboard is not installed here, so --report_to tensorboard cannot run. `die`: then interrupt.
    """

    def __init__(self, when: str, die: bool):
        self.when, self.die = when, die

    def on_train_begin(self, args, state, control, **kwargs):
        logs = Path(args.output_dir) / "runs" / f"{self.when}_host"
        os.makedirs(logs, exist_ok=True)
        (logs / "events.out.tfevents.1.host").write_bytes(b"event records")
        if self.die:
            raise KeyboardInterrupt("killed while logging")


def test_an_interrupted_runs_tensorboard_logs_are_its_own(tmp_path, monkeypatch):
    from cocoop_hf_training import run_output_dir

    # The folder's preparation (run_output_dir) and the report (run_cocoop) each ask which entries Trainer logs into.
    for module in (run_cocoop, run_output_dir):
        monkeypatch.setattr(module, "trainer_log_entries", lambda training_args: ["runs"])
    output_dir = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_cocoop.main(argv(output_dir, evaluate=False), callbacks=[TensorBoardStandIn("Dec06_02-00-00", die=True)])
    assert (output_dir / "runs" / "Dec06_02-00-00_host").is_dir()
    # Its rerun deletes the interrupted run's logs as the run's own (they were refused as the user's).
    rerun = argv(output_dir, "--overwrite_output_dir", "true", evaluate=False)
    run_cocoop.main(rerun, callbacks=[TensorBoardStandIn("Dec06_03-00-00", die=False)])
    manifest = manifest_of(output_dir)
    assert manifest["complete"] and manifest["growing"] == {}
    logs = manifest["entries"]["runs"]["files"]  # recorded with its files once the run finished
    assert list(logs) == ["Dec06_03-00-00_host/events.out.tfevents.1.host"] and logs[list(logs)[0]][0] == 13
    assert sorted(p.name for p in (output_dir / "runs").iterdir()) == ["Dec06_03-00-00_host"]


# ------------------------------------------------------------------------------------------- the converter


@pytest.mark.parametrize("users", ["file", "symlink", "older_conversion"])
def test_the_converter_never_replaces_a_users_model_file(cocoop_checkpoint, tiny_clip_dir, tmp_path, users):
    from cocoop_hf.convert_official import main as convert

    from .test_convert_official import converter_argv

    path, _ = cocoop_checkpoint
    names = tmp_path / "classnames.txt"
    names.write_text("cat\ndog\n")
    output_dir = tmp_path / "out"
    outside = tmp_path / "outside.json"
    outside.write_text('{"mine": true}')
    if users == "older_conversion":  # converted before the converter recorded its files: not provably its own
        convert(converter_argv(path, tiny_clip_dir, names, output_dir, "--adapter_only"))
        (output_dir / MANIFEST).unlink(missing_ok=True)
    else:
        output_dir.mkdir()
        if users == "file":
            (output_dir / "config.json").write_text('{"mine": true}')
        else:
            (output_dir / "config.json").symlink_to(outside)
    before = {p.name: (p.is_symlink(), p.read_bytes()) for p in output_dir.iterdir()}
    with pytest.raises(ValueError, match=r"holds .*config\.json.*of the same name.*never replaced"):
        convert(converter_argv(path, tiny_clip_dir, names, output_dir, "--overwrite_output_dir"))
    assert {p.name: (p.is_symlink(), p.read_bytes()) for p in output_dir.iterdir()} == before
    assert outside.read_text() == '{"mine": true}'
