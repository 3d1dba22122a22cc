"""cocoop_hf_training/outputs.py: a run owns what it recorded (size + SHA-256), never a user's file; outputs are new files renamed
into place, never written through a symlink; the output folder is not where a model is read from; report.py never
writes over a run; a full disk or a forbidden path is one error line."""

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from cocoop_hf_training import grid, run_cocoop
from cocoop_hf_training.report import main as report_main
from cocoop_hf_training.report import write_report
from cocoop_hf_training.run_cocoop import main

from .test_training import DEMO, REPO, argv


MANIFEST = "output_manifest.json"


def digest_tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` (links as their target) -> SHA-256: what must not change."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(folder))] = "link:" + os.readlink(path)
        elif path.is_file():
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def interrupted(monkeypatch, run_argv) -> None:
    """Run `main(run_argv)` until the model is saved and evaluated, then stop it as a kill would (before results)."""

    def die(*args, **kwargs):
        raise KeyboardInterrupt("killed after the model was saved")

    with monkeypatch.context() as patch:
        patch.setattr(run_cocoop, "write_report", die)
        with pytest.raises(KeyboardInterrupt):
            main(run_argv)


# ------------------------------------------------------------------------------------------- the user's files


def test_rerun_of_an_interrupted_run_keeps_the_users_new_and_edited_files(tmp_path, monkeypatch):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "keep.txt").write_text("mine")
    interrupted(monkeypatch, argv(output_dir, "--overwrite_output_dir", "true"))
    assert (output_dir / "model.safetensors").is_file() and not (output_dir / "results.json").exists()
    (output_dir / "notes.txt").write_text("written after the crash")
    (output_dir / "keep.txt").write_text("mine, edited after the crash")
    main(argv(output_dir, "--overwrite_output_dir", "true", evaluate=False))
    assert (output_dir / "notes.txt").read_text() == "written after the crash"
    assert (output_dir / "keep.txt").read_text() == "mine, edited after the crash"
    manifest = json.loads((output_dir / MANIFEST).read_text())
    assert manifest["complete"] and {"notes.txt", "keep.txt"}.isdisjoint(manifest["entries"])
    assert {"model.safetensors", "README.md", "fewshot_indices.json"} <= set(manifest["entries"])


def test_grid_restart_of_an_interrupted_cell_keeps_the_users_file(tmp_path, monkeypatch):
    cell = SimpleNamespace(output_dir=tmp_path / "grid" / "EuroSAT" / "cocoop" / "seed1")
    interrupted(monkeypatch, argv(cell.output_dir, evaluate=False))
    (cell.output_dir / "notes.txt").write_text("the user's")
    action, flags = grid.resume_flags(cell)
    assert (action, flags) == ("restart", ["--overwrite_output_dir"])
    main(argv(cell.output_dir, *flags, evaluate=False))
    assert (cell.output_dir / "notes.txt").read_text() == "the user's"
    assert (cell.output_dir / "README.md").is_file()


def test_a_users_file_named_as_an_output_is_refused_never_replaced(tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "README.md").write_text("my notes")
    (output_dir / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"README\.md, of the same name as this script's outputs.*never replaced"):
        main(argv(output_dir, "--overwrite_output_dir", "true", evaluate=False))
    assert (output_dir / "README.md").read_text() == "my notes"
    assert sorted(p.name for p in output_dir.iterdir()) == ["README.md", "keep.txt"]  # nothing written


def test_an_output_the_user_changed_after_the_run_is_refused_not_deleted(finished_run, tmp_path):
    output_dir = tmp_path / "out"
    shutil.copytree(finished_run, output_dir, symlinks=True)
    (output_dir / "results.md").write_text("my corrected table")
    before = digest_tree(output_dir)
    with pytest.raises(ValueError, match=r"holds results\.md, of the same name.*never replaced"):
        main(argv(output_dir, "--overwrite_output_dir", "true", evaluate=False))
    assert digest_tree(output_dir) == before
    # A file added inside a recorded checkpoint makes it the user's too.
    (output_dir / "results.md").unlink()
    (output_dir / "checkpoint-5" / "my_eval.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds checkpoint-5, of the same name"):
        main(argv(output_dir, "--overwrite_output_dir", "true", evaluate=False))
    assert (output_dir / "checkpoint-5" / "my_eval.txt").read_text() == "mine"


def test_overwrite_deletes_the_previous_runs_unchanged_outputs(finished_run, tmp_path):
    output_dir = tmp_path / "out"
    shutil.copytree(finished_run, output_dir, symlinks=True)
    main(argv(output_dir, "--save_strategy", "no", "--overwrite_output_dir", "true", evaluate=False))
    names = {path.name for path in output_dir.iterdir()}
    assert not {"results.md", "results.png", "checkpoint-5"} & names, names


# ------------------------------------------------------------------------------------------- where models are read


@pytest.mark.parametrize("where", ["same", "inside", "contains"])
def test_output_dir_may_not_overlap_the_model_folder(finished_run, tmp_path, where):
    model_dir = tmp_path / "model"
    shutil.copytree(finished_run, model_dir, symlinks=True)
    output_dir = {"same": model_dir, "inside": model_dir / "eval", "contains": tmp_path}[where]
    before = digest_tree(tmp_path)
    flags = ["--model_name_or_path", str(model_dir), "--overwrite_output_dir", "true"]
    with pytest.raises(ValueError, match=r"--output_dir .* the folder --model_name_or_path .*model is read from"):
        main(argv(output_dir, *flags, train=False))
    assert digest_tree(tmp_path) == before


def test_output_dir_may_not_hold_the_checkpoint_resumed_from_deeper_inside(finished_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(finished_run, other / "run", symlinks=True)
    before = digest_tree(tmp_path)
    flags = ["--resume_from_checkpoint", str(other / "run" / "checkpoint-5"), "--overwrite_output_dir", "true"]
    with pytest.raises(ValueError, match=r"--output_dir .* contains the folder --resume_from_checkpoint"):
        main(argv(other, *flags, evaluate=False))
    assert digest_tree(tmp_path) == before


def test_evaluate_transfer_may_not_write_into_the_model_folder(finished_run, tmp_path):
    from cocoop_hf_training.evaluate_transfer import main as transfer_main

    model_dir = tmp_path / "model"
    shutil.copytree(finished_run, model_dir, symlinks=True)
    targets = tmp_path / "targets.json"
    test_file = str(DEMO / "cifar10_demo" / "test.parquet")
    target = {"dataset_display_name": "cifar10", "eval_file": test_file, "image_column": "img", "max_eval_samples": 8}
    targets.write_text(json.dumps({"targets": [target]}))
    before = digest_tree(model_dir)
    flags = ["--model_name_or_path", str(model_dir), "--targets", str(targets), "--use_cpu", "true"]
    with pytest.raises(ValueError, match=r"--output_dir .*model is the folder --model_name_or_path .*model is read"):
        transfer_main([*flags, "--output_dir", str(model_dir), "--overwrite_output_dir", "true"])
    assert digest_tree(model_dir) == before


def test_a_users_copy_of_a_checkpoint_in_the_output_dir_is_resumed_from_and_kept(finished_run, tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    shutil.copytree(finished_run / "checkpoint-5", output_dir / "checkpoint-5")
    before = digest_tree(output_dir)
    flags = ["--resume_from_checkpoint", str(output_dir / "checkpoint-5"), "--overwrite_output_dir", "true"]
    main(argv(output_dir, *flags, "--save_strategy", "epoch", evaluate=False))
    assert {name: digest_tree(output_dir)[name] for name in before} == before
    assert (output_dir / "README.md").is_file()


# ------------------------------------------------------------------------------------------- symlinks


def test_a_symlink_where_an_output_goes_is_refused_and_its_target_unchanged(tmp_path, monkeypatch):
    outside = tmp_path / "elsewhere.md"
    outside.write_text("a file outside the output folder")
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "results.md").symlink_to(outside)
    with pytest.raises(ValueError, match=r"results\.md, of the same name"):
        main(argv(output_dir, "--overwrite_output_dir", "true", evaluate=False))
    (output_dir / "results.md").unlink()
    # A link made while the run is running: refused where the output is written, the target untouched.
    real_write_report = run_cocoop.write_report

    def link_then_write(folder, *args, **kwargs):
        (Path(folder) / "README.md").symlink_to(outside)
        return real_write_report(folder, *args, **kwargs)

    monkeypatch.setattr(run_cocoop, "write_report", link_then_write)
    with pytest.raises(ValueError, match=r"README\.md is a symbolic link where this script writes its model card"):
        main(argv(output_dir, "--overwrite_output_dir", "true", evaluate=False))
    assert outside.read_text() == "a file outside the output folder"
    assert (output_dir / "README.md").is_symlink()


def test_write_report_refuses_symlinks_to_files_outside(tmp_path):
    runs = [{"dataset": "d", "method": "coop", "seed": 1, "metrics": {"all": {"accuracy": 50.0}}}]
    for name in ("results.json", "results.md", "results.png"):
        folder = tmp_path / name
        folder.mkdir()
        outside = tmp_path / f"outside-{name}"
        outside.write_text("not yours")
        (folder / name).symlink_to(outside)
        with pytest.raises(ValueError, match=rf"{name.replace('.', '[.]')} is a symbolic link"):
            write_report(folder, runs)
        assert outside.read_text() == "not yours" and (folder / name).is_symlink()
        assert not [p.name for p in folder.iterdir() if p.name.startswith("tmp-")]


def test_a_saved_model_file_that_is_a_symlink_is_refused_before_anything_is_written(tmp_path):
    outside = tmp_path / "config-elsewhere.json"
    outside.write_text("{}")
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "config.json").symlink_to(outside)
    with pytest.raises(ValueError, match=r"config\.json, of the same name"):
        main(argv(output_dir, "--overwrite_output_dir", "true", evaluate=False))
    assert sorted(p.name for p in output_dir.iterdir()) == ["config.json"] and outside.read_text() == "{}"


# ------------------------------------------------------------------------------------------- report.py


def test_report_refuses_an_output_dir_holding_a_run(finished_run, tmp_path):
    run1 = tmp_path / "run1"
    shutil.copytree(finished_run, run1, symlinks=True)
    before = digest_tree(run1)
    with pytest.raises(ValueError, match=r"--output_dir .*run1 holds the outputs of a training run"):
        report_main([str(run1), "--output_dir", str(run1)])
    assert digest_tree(run1) == before
    # A run folder without a manifest (an older version), and a grid folder, are refused too.
    (run1 / MANIFEST).unlink()
    with pytest.raises(ValueError, match=r"holds a run's or a grid's outputs \(checkpoint-5, fewshot_indices\.json"):
        report_main([str(run1), "--output_dir", str(run1)])
    grid_dir = tmp_path / "grid"
    grid_dir.mkdir()
    (grid_dir / "grid_cells.json").write_text("{}")
    with pytest.raises(ValueError, match=r"grid_cells\.json"):
        report_main([str(run1), "--output_dir", str(grid_dir)])


def test_report_rewrites_its_own_aggregate_only_with_the_flag(finished_run, tmp_path):
    summary = tmp_path / "summary"
    report_main([str(finished_run), "--output_dir", str(summary)])
    with pytest.raises(ValueError, match="holds a previous run"):
        report_main([str(finished_run), "--output_dir", str(summary)])
    (summary / "notes.txt").write_text("mine")
    content = report_main([str(finished_run), "--output_dir", str(summary), "--overwrite_output_dir"])
    assert json.loads((summary / "results.json").read_text())["sources"] == content["sources"]
    assert (summary / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------- disk full, read-only


def test_a_file_too_large_for_the_disk_is_one_error_line_and_leaves_no_partial_file(finished_run, tmp_path):
    # RLIMIT_FSIZE makes a write fail as a full disk does (EFBIG instead of ENOSPC), without filling a disk.
    summary = tmp_path / "summary"
    limit = (
        "import resource, runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000)); sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    script = REPO / "cocoop_hf_training" / "report.py"
    process = subprocess.run(
        [sys.executable, "-c", limit, str(script), str(finished_run), "--output_dir", str(summary)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert process.returncode == 2, process.stderr[-3000:]
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in process.stderr, process.stderr[-3000:]
    assert lines[0].startswith(f"error: cannot write {summary}") and "too large" in lines[0], lines[0]
    assert not [p.name for p in summary.iterdir() if p.name.startswith("tmp-")]
    for path in summary.iterdir():  # whatever is there is whole: JSON that parses
        if path.suffix == ".json":
            json.loads(path.read_text())


def test_a_full_disk_while_checkpointing_names_the_folder_in_one_line(tmp_path, monkeypatch, capsys):
    from cocoop_hf_training import checkpoints
    from cocoop_hf_training.cli import run_script

    def save_on_a_full_disk(model, folder):
        raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")  # as safetensors

    real_statvfs = os.statvfs

    def full(path):
        stat = real_statvfs(path)
        if not str(path).startswith(str(tmp_path)):  # only the run's folder is full, not datasets' own cache
            return stat
        return os.statvfs_result((*stat[:4], 0, *stat[5:]))  # f_bavail = 0: no free block left

    monkeypatch.setattr(checkpoints, "save_prompt_learner", save_on_a_full_disk)
    monkeypatch.setattr(os, "statvfs", full)
    output_dir = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        run_script(lambda: main(argv(output_dir, "--save_strategy", "epoch", evaluate=False)))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"error: cannot write {output_dir}: the disk is full. Free space, or choose another --output_dir."
    ]


@pytest.mark.parametrize(
    "code, words",
    [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"), (errno.EACCES, "permission denied")],
)
def test_disk_full_and_read_only_folders_are_one_line_naming_the_path(code, words, capsys):
    from cocoop_hf_training.cli import run_script

    def main_that_cannot_write():
        raise OSError(code, os.strerror(code), "/data/out/results.json")

    with pytest.raises(SystemExit) as exit_info:
        run_script(main_that_cannot_write)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot ") and "/data/out/results.json" in lines[0]
    assert words in lines[0]


# ------------------------------------------------------------------------------------------- killed mid-write


KILLED_WRITE = """
import os, shutil, signal, sys
sys.path.insert(0, {repo!r})
from cocoop_hf_training import outputs

folder = sys.argv[1]
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[2] == "writing":
    outputs.prepare_output_dir(folder, overwrite=True, resume=False)
    real_replace = os.replace
    def replace(source, destination):  # the new results.md is written, not yet renamed into place
        if str(destination).endswith("results.md"):
            die()
        real_replace(source, destination)
    os.replace = replace
    outputs.write_output(os.path.join(folder, "results.md"), "half")
else:
    shutil.rmtree = die  # the previous run's checkpoint is renamed for deletion, not yet deleted
    outputs.prepare_output_dir(folder, overwrite=True, resume=False)
"""


@pytest.mark.parametrize("moment", ["writing", "deleting"])
def test_what_a_run_killed_mid_write_or_mid_delete_leaves_is_its_own(tmp_path, moment):
    from cocoop_hf_training.outputs import make_staging_folder, prepare_output_dir, record

    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    if moment == "deleting":
        prepare_output_dir(folder, overwrite=True, resume=False)
        make_staging_folder(folder, "tmp-checkpoint-2")
        (folder / "tmp-checkpoint-2" / "optimizer.pt").write_bytes(b"state")
        (folder / "tmp-checkpoint-2").rename(folder / "checkpoint-2")
        record(folder, "checkpoint-2", staged_as="tmp-checkpoint-2")
    script = tmp_path / "killed.py"
    script.write_text(KILLED_WRITE.format(repo=str(REPO)))
    process = subprocess.run([sys.executable, str(script), str(folder), moment], capture_output=True, text=True)
    assert process.returncode == -9, process.stderr[-3000:]
    leftover = {"writing": "tmp-write-results.md", "deleting": "tmp-deleting-checkpoint-2"}[moment]
    assert (folder / leftover).exists()
    prepare_output_dir(folder, overwrite=True, resume=False)  # recorded: deleted, not refused as the user's
    assert sorted(p.name for p in folder.iterdir()) == sorted([MANIFEST, "notes.txt"])
    assert (folder / "notes.txt").read_text() == "mine"
    # The same name not made by a run is the user's: refused, kept (an empty one holds nothing: removed by rmdir).
    (folder / leftover).mkdir()
    (folder / leftover / "notes.txt").write_text("mine too")
    with pytest.raises(ValueError, match=rf"holds {leftover}, of the same name"):
        prepare_output_dir(folder, overwrite=True, resume=False)
    assert (folder / leftover / "notes.txt").read_text() == "mine too"
