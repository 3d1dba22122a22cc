"""
Issue 16, review of the output records as a hostile user: a hand-edited manifest never makes a user's file the
run's (only names its producer writes are ever deleted); a user's `tmp-write-...` file is never deleted; a pipe is
never opened (no hang); a run killed right after creating a staging entry leaves it recorded (the rerun is not
refused); a manifest that is a folder or a link is refused with one clear line, before anything is deleted.
"""

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cocoop_hf import output_folder, output_records
from cocoop_hf_training import outputs


ROOT = Path(__file__).resolve().parents[1]
NOTES = b"the user's notes, never to be deleted\n"


def started_run(folder: Path) -> Path:
    """A run_cocoop output folder with its manifest and one recorded output (README.md)."""
    outputs.prepare_output_dir(folder, overwrite=False, resume=False)
    outputs.write_output(folder / "README.md", "# a card\n", "model card")
    assert outputs.owns(folder, "README.md")
    return folder


def edit_manifest(folder: Path, key: str, name: str, value) -> None:
    manifest = output_records.read_json(folder / outputs.MANIFEST_NAME)
    manifest[key][name] = value
    (folder / outputs.MANIFEST_NAME).write_text(output_records.json.dumps(manifest))


def file_entry(path: Path) -> dict:
    return {"kind": "file", "record": output_records._bytes_record(path.read_bytes())}


# ---------------------------------------------------------------------------------------------- 1. names not ours


@pytest.mark.parametrize("key", ["entries", "pending", "staging", "growing"])
def test_a_hand_edited_manifest_never_makes_a_users_file_deletable(tmp_path, key):
    folder = started_run(tmp_path / "run")
    notes = folder / "notes.txt"
    notes.write_bytes(NOTES)
    by_inode = key in ("staging", "growing")
    edit_manifest(folder, key, notes.name, notes.lstat().st_ino if by_inode else file_entry(notes))

    assert not outputs.owns(folder, notes.name)
    outputs.prepare_output_dir(folder, overwrite=True, resume=False)
    assert notes.read_bytes() == NOTES
    outputs.prepare_output_dir(folder, overwrite=True, resume=True)
    assert notes.read_bytes() == NOTES
    assert not (folder / "README.md").exists()  # the run's own output is still deleted by --overwrite_output_dir


def test_a_staging_record_must_have_a_staging_name(tmp_path):
    folder = started_run(tmp_path / "run")
    card = folder / "README.md"  # a name the run writes, but never as a staging entry
    card.write_text("the user's card\n")
    edit_manifest(folder, "staging", card.name, card.lstat().st_ino)
    with pytest.raises(ValueError, match=r"holds README\.md, of the same name as this script's outputs"):
        outputs.prepare_output_dir(folder, overwrite=True, resume=True)
    assert card.read_text() == "the user's card\n"


@pytest.mark.parametrize(
    "producer, pattern",
    [
        ("run_cocoop", "cocoop_hf_training.outputs:RUN_OUTPUTS"),
        ("grid", "cocoop_hf_training.outputs:GRID_OUTPUTS"),
        ("report", "cocoop_hf_training.report:REPORT_OUTPUTS"),
        ("evaluate_transfer", "cocoop_hf_training.evaluate_transfer:TRANSFER_OUTPUTS"),
        ("convert_official", "cocoop_hf.convert_official:_OUTPUTS"),
    ],
)
def test_every_producer_deletes_only_names_it_writes(tmp_path, producer, pattern):
    module, attribute = pattern.split(":")
    outputs_pattern = getattr(__import__(module, fromlist=[attribute]), attribute)
    folder = tmp_path / producer
    output_folder.prepare_output_dir(folder, False, False, outputs_pattern, producer)
    notes = folder / "notes.txt"
    notes.write_bytes(NOTES)
    edit_manifest(folder, "entries", notes.name, file_entry(notes))
    output_folder.prepare_output_dir(folder, True, False, outputs_pattern, producer)
    assert notes.read_bytes() == NOTES


def test_a_producer_nobody_declared_owns_nothing(tmp_path):
    folder = started_run(tmp_path / "run")
    edit_manifest(folder, "entries", "README.md", file_entry(folder / "README.md"))
    manifest = output_records.read_json(folder / outputs.MANIFEST_NAME)
    manifest["producer"] = "someone_else"
    (folder / outputs.MANIFEST_NAME).write_text(output_records.json.dumps(manifest))
    assert not outputs.owns(folder, "README.md")


# ---------------------------------------------------------------------------------------------- 2. tmp-write-*


@pytest.mark.parametrize("as_link", [False, True])
def test_a_users_tmp_write_manifest_file_is_never_deleted(tmp_path, as_link):
    folder = started_run(tmp_path / "run")
    users = folder / f"tmp-write-{outputs.MANIFEST_NAME}"
    target = tmp_path / "elsewhere.txt"
    target.write_bytes(NOTES)
    if as_link:
        users.symlink_to(target)
    else:
        users.write_bytes(NOTES)
    outputs.write_output(folder / "results.md", "| a table |\n", "results table")  # rewrites the manifest
    assert users.is_symlink() == as_link and users.read_bytes() == NOTES
    assert target.read_bytes() == NOTES
    # ... and it is not hidden from the check of what the folder holds
    with pytest.raises(ValueError, match=re.escape(users.name)):
        outputs.survey_output_dir(folder, False, True, outputs.RUN_OUTPUTS, "run_cocoop")


# ---------------------------------------------------------------------------------------------- 3. pipes


def watch_fifo(fifo: Path, done: threading.Event, opened: list) -> None:
    """Notice a reader opening `fifo` (a write end then opens), and let it go on (EOF), so that no test hangs."""
    while not done.is_set():
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader
            time.sleep(0.01)
            continue
        opened.append(True)
        os.close(fd)
        time.sleep(0.05)


def run_watching(fifo: Path, call):
    done, opened = threading.Event(), []
    watcher = threading.Thread(target=watch_fifo, args=(fifo, done, opened), daemon=True)
    watcher.start()
    try:
        return call()
    finally:
        done.set()
        watcher.join(timeout=5)
        assert not opened, f"{fifo} was opened: a pipe with no writer would hang the run forever"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_in_a_recorded_checkpoint_is_never_opened(tmp_path):
    folder = started_run(tmp_path / "run")
    checkpoint = folder / "checkpoint-5"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text("{}")
    outputs.record(folder, checkpoint.name)
    os.mkfifo(checkpoint / "pipe")

    def prepare():  # changed since recorded: the user's, refused, never replaced
        with pytest.raises(ValueError, match=r"holds checkpoint-5, of the same name"):
            outputs.prepare_output_dir(folder, overwrite=True, resume=False)

    run_watching(checkpoint / "pipe", prepare)
    assert (checkpoint / "pipe").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_with_a_recorded_name_is_refused_unopened(tmp_path):
    folder = started_run(tmp_path / "run")
    (folder / "README.md").unlink()
    os.mkfifo(folder / "README.md")

    def prepare():
        with pytest.raises(ValueError, match=r"holds README\.md, of the same name"):
            outputs.prepare_output_dir(folder, overwrite=True, resume=False)

    run_watching(folder / "README.md", prepare)
    assert output_records.describe(folder / "README.md") is None


# ---------------------------------------------------------------------------------------------- 4. killed runs


class Killed(BaseException):
    """A kill: no cleanup of the code under test runs after it."""


def test_a_run_killed_right_after_making_a_staging_folder_is_not_refused(tmp_path, monkeypatch):
    folder = started_run(tmp_path / "run")
    real_mkdir = Path.mkdir

    def mkdir_then_die(self, *args, **kwargs):
        real_mkdir(self, *args, **kwargs)
        raise Killed

    monkeypatch.setattr(Path, "mkdir", mkdir_then_die)
    with pytest.raises(Killed):
        outputs.make_staging_folder(folder, "tmp-model")
    monkeypatch.undo()
    assert (folder / "tmp-model").is_dir()
    outputs.prepare_output_dir(folder, overwrite=False, resume=True)  # the rerun resumes
    assert not (folder / "tmp-model").exists()


def test_an_unrecorded_empty_staging_folder_is_removed_and_a_full_one_kept(tmp_path):
    folder = started_run(tmp_path / "run")
    (folder / "tmp-model").mkdir()  # a kill between mkdir and recording it (as an earlier version did)
    outputs.prepare_output_dir(folder, overwrite=False, resume=True)
    assert not (folder / "tmp-model").exists()
    (folder / "tmp-model").mkdir()
    (folder / "tmp-model" / "notes.txt").write_bytes(NOTES)
    with pytest.raises(ValueError, match=r"holds tmp-model, of the same name"):
        outputs.prepare_output_dir(folder, overwrite=True, resume=True)
    assert (folder / "tmp-model" / "notes.txt").read_bytes() == NOTES


KILLED_WRITE = """
import os, sys
from pathlib import Path
from cocoop_hf import output_records
import cocoop_hf_training.outputs  # declares run_cocoop's output names
folder = Path(sys.argv[1])
output_records.expect = lambda *args, **kwargs: os._exit(9)  # killed once the staging file exists, before a byte
output_records.write_output(folder / "README.md", "a new card")
"""


def test_a_run_killed_right_after_creating_a_staging_file_is_not_refused(tmp_path):
    folder = started_run(tmp_path / "run")
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(folder)], cwd=ROOT, timeout=120)
    assert killed.returncode == 9
    assert (folder / "tmp-write-README.md").is_file()
    outputs.prepare_output_dir(folder, overwrite=False, resume=True)
    assert not (folder / "tmp-write-README.md").exists()


def test_a_copied_killed_run_keeps_its_empty_staging_folder_recognised(tmp_path):
    folder = started_run(tmp_path / "run")
    outputs.make_staging_folder(folder, "tmp-checkpoint-26")  # a kill leaves it recorded by its inode
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)  # new inodes, as `cp -a`
    outputs.prepare_output_dir(copy, overwrite=False, resume=True)
    assert not (copy / "tmp-checkpoint-26").exists()


def test_a_copied_killed_run_with_a_full_staging_folder_says_what_it_is(tmp_path):
    folder = started_run(tmp_path / "run")
    staging = outputs.make_staging_folder(folder, "tmp-checkpoint-26")
    (staging / "optimizer.pt").write_bytes(b"half")
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    with pytest.raises(ValueError, match=r"tmp-checkpoint-26: left by an interrupted run, in a folder copied since"):
        outputs.prepare_output_dir(copy, overwrite=False, resume=True)
    assert (copy / "tmp-checkpoint-26" / "optimizer.pt").read_bytes() == b"half"


# ---------------------------------------------------------------------------------------------- 5. the manifest


def test_a_manifest_that_is_a_folder_is_one_clear_error(tmp_path):
    folder = tmp_path / "run"
    (folder / outputs.MANIFEST_NAME).mkdir(parents=True)
    with pytest.raises(ValueError, match=rf"{outputs.MANIFEST_NAME} is not a file"):
        outputs.prepare_output_dir(folder, overwrite=True, resume=False)
    assert (folder / outputs.MANIFEST_NAME).is_dir()


def test_a_manifest_that_is_a_link_is_never_read_through(tmp_path):
    real = started_run(tmp_path / "real")
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(real / "README.md", folder / "README.md")  # the user's card, the same bytes as the real run's
    (folder / outputs.MANIFEST_NAME).symlink_to(real / outputs.MANIFEST_NAME)
    assert not outputs.owns(folder, "README.md")
    with pytest.raises(ValueError, match=rf"{outputs.MANIFEST_NAME} is a symbolic link"):
        outputs.prepare_output_dir(folder, overwrite=True, resume=False)
    assert (folder / "README.md").exists()
    assert (folder / outputs.MANIFEST_NAME).is_symlink()


@pytest.mark.parametrize("text", ["not json at all", "[1, 2]", '{"notes": "mine"}'])
def test_a_manifest_that_is_not_a_record_is_refused_and_kept(tmp_path, text):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / outputs.MANIFEST_NAME).write_text(text)
    with pytest.raises(ValueError, match=rf"{outputs.MANIFEST_NAME} is not a record of this script"):
        outputs.prepare_output_dir(folder, overwrite=True, resume=False)
    assert (folder / outputs.MANIFEST_NAME).read_text() == text
