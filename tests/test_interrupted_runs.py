"""The user's files survive every interrupted-run sequence: a run killed (SIGKILL, in a subprocess) at several points,
then the user adds a file and edits one of theirs, then the run is resumed and run again with --overwrite_output_dir.
Nothing outside the output folder changes either."""

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cocoop_hf_training.run_cocoop import main

from .test_training import REPO, argv


# Kill points: `after`: the named function returns, then the process is killed; CoCoOpTrainer._save_rng_state at
# step 4: inside the second checkpoint's writing (weights and optimizer written, RNG and marker not).
KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from cocoop_hf.modeling_cocoop import CoCoOpModel
from cocoop_hf_training import checkpoints, run_cocoop, run_output_dir

point = os.environ["KILL_AT"]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def kill_after(owner, name):
    real = getattr(owner, name)
    def wrapped(*args, **kwargs):
        real(*args, **kwargs)
        die()
    setattr(owner, name, wrapped)

if point == "output_dir_checked":
    kill_after(run_output_dir, "prepare_output_dir")
elif point == "first_checkpoint":
    kill_after(checkpoints, "commit_checkpoint")
elif point == "writing_a_checkpoint":
    real_save_rng_state = run_cocoop.CoCoOpTrainer._save_rng_state
    def save_rng_state(self, output_dir):
        if self.state.global_step == 4:
            die()
        real_save_rng_state(self, output_dir)
    run_cocoop.CoCoOpTrainer._save_rng_state = save_rng_state
elif point == "model_saved":
    kill_after(CoCoOpModel, "save_pretrained")
elif point == "results_written":
    kill_after(run_cocoop, "write_report")
run_cocoop.main(sys.argv[1:])
"""
CHECKPOINTS = ("--save_strategy", "steps", "--save_steps", "2")  # 1 epoch of 5 steps: checkpoints 2 and 4 (and 5)


def digests(folder: Path) -> dict[str, str]:
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def killed_run(point: str, run_argv, tmp_path) -> None:
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN.format(repo=str(REPO)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "KILL_AT": point}
    process = subprocess.run([sys.executable, str(script), *run_argv], env=env, capture_output=True, text=True)
    assert process.returncode == -signal.SIGKILL, process.stdout[-2000:] + process.stderr[-3000:]


@pytest.mark.parametrize(
    "point", ["output_dir_checked", "first_checkpoint", "writing_a_checkpoint", "model_saved", "results_written"]
)
def test_the_users_files_survive_a_killed_run_its_resume_and_its_overwrite(point, tmp_path):
    workspace = tmp_path / "workspace"
    (workspace / "elsewhere").mkdir(parents=True)
    (workspace / "elsewhere" / "data.csv").write_text("the user's data outside the output folder")
    output_dir = workspace / "out"
    output_dir.mkdir()
    (output_dir / "keep.txt").write_text("there before the run")
    (output_dir / "sub").mkdir()
    (output_dir / "sub" / "draft.md").write_text("the user's folder")

    killed_run(point, argv(output_dir, "--overwrite_output_dir", "true", *CHECKPOINTS, evaluate=False), tmp_path)
    # After the crash the user adds a file and edits one of theirs.
    (output_dir / "notes.txt").write_text("written after the crash")
    (output_dir / "keep.txt").write_text("there before the run, edited after the crash")
    users = {name: digests(output_dir).get(name) for name in ("notes.txt", "keep.txt", "sub/draft.md")}
    outside = digests(workspace / "elsewhere")

    def assert_users_files_intact():
        now = digests(output_dir)
        assert {name: now.get(name) for name in users} == users
        assert digests(workspace / "elsewhere") == outside
        assert sorted(p.name for p in workspace.iterdir()) == ["elsewhere", "out"]

    resume = ("--resume_from_checkpoint", "latest", "--overwrite_output_dir", "true", *CHECKPOINTS)
    if point == "output_dir_checked":  # no checkpoint yet: refused, nothing written
        with pytest.raises(ValueError, match="no complete checkpoint"):
            main(argv(output_dir, *resume, evaluate=False))
    else:
        main(argv(output_dir, *resume, evaluate=False))
        assert (output_dir / "README.md").is_file()
    assert_users_files_intact()

    main(argv(output_dir, "--overwrite_output_dir", "true", *CHECKPOINTS, evaluate=False))
    assert_users_files_intact()
    assert not [p.name for p in output_dir.iterdir() if p.name.startswith("tmp-")]
