"""Ctrl-C: the `interrupted:` line says plainly what to add, and it is the last line (no progress bar drawn after)."""

import sys

import pytest
from tqdm import tqdm

from cocoop_hf_training.interruptions import training_rerun_note
from cocoop_hf_training.script_runner import run_script


def test_the_resume_advice_says_what_to_add_or_replace(monkeypatch, tmp_path):
    checkpoint = str(tmp_path / "checkpoint-2")
    monkeypatch.setattr("cocoop_hf_training.checkpoints.latest_checkpoint", lambda output_dir: checkpoint)
    assert training_rerun_note(tmp_path, None, "steps") == (
        f"{checkpoint} is saved; run the same command with --resume_from_checkpoint latest added to resume from "
        f"{checkpoint}"
    )
    older = str(tmp_path / "checkpoint-1")
    assert training_rerun_note(tmp_path, older, "steps") == (
        f"{checkpoint} is saved; run the same command with --resume_from_checkpoint latest instead of "
        f"--resume_from_checkpoint {older} to resume from {checkpoint}"
    )


def test_an_open_progress_bar_is_closed_before_the_interrupted_line(capsys):
    bars = []

    def training():
        bars.append(tqdm(total=10, file=sys.stderr, desc="training"))
        bars[0].update(3)
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        run_script(training)
    assert exit_info.value.code == 130
    assert bars[0] not in tqdm._instances
    bars[0].close()  # what the interpreter's exit (or the bar's refresh) would do: draws nothing after the line
    err = capsys.readouterr().err
    assert "training:  30%" in err
    assert err.rstrip("\n").splitlines()[-1] == "interrupted: stopped (Ctrl-C) before it finished"
