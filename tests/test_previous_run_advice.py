"""The refusal of an --output_dir holding a previous run advises only what then works: a finished run is replaced or
left (never "resumed"), an interrupted one is continued only from a complete checkpoint; it names the run's key entries
(results.json, config.json, the newest checkpoint), not its thirty code files. A missing --train_file names the flag
and the place looked in."""

import os
import shutil
from pathlib import Path

import pytest

from cocoop_hf.output_folder import prepare_output_dir
from cocoop_hf_training import run_cocoop
from cocoop_hf_training.checkpoints import latest_checkpoint
from cocoop_hf_training.data_arguments import DataArguments
from cocoop_hf_training.data_loading import load_splits
from cocoop_hf_training.outputs import RUN_OUTPUTS
from cocoop_hf_training.report import main as report_main
from cocoop_hf_training.run_cocoop import main

from .test_training import argv


def interrupted_run(output_dir: Path, monkeypatch, *extra) -> None:
    """A run killed after training, the model saved and evaluated, before its results were written."""

    def die(*args, **kwargs):
        raise KeyboardInterrupt("killed before the results were written")

    with monkeypatch.context() as patch:
        patch.setattr(run_cocoop, "write_report", die)
        with pytest.raises(KeyboardInterrupt):
            main(argv(output_dir, *extra))


def refusal(output_dir: Path) -> str:
    """The refusal run_cocoop's folder check gives a plain rerun, told how the script finds what it would resume."""
    with pytest.raises(ValueError) as caught:
        prepare_output_dir(output_dir, False, False, RUN_OUTPUTS, "run_cocoop", resumable=latest_checkpoint)
    return str(caught.value)


def test_a_finished_run_is_named_by_its_key_entries_and_never_offered_a_resume(finished_run, tmp_path):
    output_dir = tmp_path / "out"
    shutil.copytree(finished_run, output_dir)
    for message in (refusal(output_dir), _main_refusal(output_dir)):
        assert "holds a previous run, finished (results.json, config.json, checkpoint-5 and " in message, message
        assert "--resume_from_checkpoint" not in message and ".py" not in message, message
        assert message.endswith("pass --overwrite_output_dir to replace it, or choose another --output_dir."), message


def _main_refusal(output_dir: Path) -> str:
    with pytest.raises(ValueError) as caught:
        main(argv(output_dir, evaluate=False))
    return str(caught.value)


def test_an_interrupted_run_with_a_checkpoint_is_offered_the_resume_that_then_works(tmp_path, monkeypatch):
    output_dir = tmp_path / "out"
    interrupted_run(output_dir, monkeypatch, "--save_strategy", "epoch")
    for message in (refusal(output_dir), _main_refusal(output_dir)):  # run_cocoop's own refusal offers it too
        assert "holds a previous run, not finished" in message and "checkpoint-5" in message, message
        assert "--resume_from_checkpoint latest to continue it (from checkpoint-5)" in message, message
    main(argv(output_dir, "--resume_from_checkpoint", "latest"))  # what it advised: it works
    assert (output_dir / "results.json").is_file()


def test_an_interrupted_run_without_a_checkpoint_is_not_offered_a_resume(tmp_path, monkeypatch):
    output_dir = tmp_path / "out"
    interrupted_run(output_dir, monkeypatch)  # --save_strategy no
    message = refusal(output_dir)
    assert "not finished (interrupted, or still running), with no complete checkpoint to continue from" in message
    assert "--resume_from_checkpoint" not in message, message
    assert "config.json" in message and ".py" not in message, message
    # What it does not advise would fail: there is nothing to resume from.
    with pytest.raises(ValueError, match="no complete checkpoint"):
        main(argv(output_dir, "--resume_from_checkpoint", "latest", evaluate=False))


def test_a_script_that_cannot_resume_never_advises_it(finished_run, tmp_path):
    summary = tmp_path / "summary"
    report_main([str(finished_run), "--output_dir", str(summary)])
    with pytest.raises(ValueError, match="holds a previous run, finished") as caught:
        report_main([str(finished_run), "--output_dir", str(summary)])
    assert "--resume_from_checkpoint" not in str(caught.value)


# ------------------------------------------------------------------------------------------- a missing data file


def test_a_missing_train_file_names_the_flag_and_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as caught:
        load_splits(DataArguments(train_file="nothere.parquet"), ["train"])
    looked = os.path.join(str(tmp_path), "nothere.parquet")
    assert str(caught.value).startswith(
        f"--train_file nothere.parquet does not exist (looked for {looked}, relative to the current folder"
    ), caught.value


def test_a_missing_eval_file_given_absolute_is_named_by_its_flag(tmp_path, monkeypatch):
    train = Path(__file__).resolve().parents[1] / "cocoop_hf_training" / "demo" / "cifar10_demo" / "test.parquet"
    missing = tmp_path / "configs" / "val.parquet"  # as a config file's relative `eval_file: val.parquet` arrives
    args = DataArguments(train_file=str(train), eval_file=str(missing))
    with pytest.raises(ValueError, match=rf"^--eval_file {missing} does not exist: .*relative to the config file"):
        load_splits(args, ["train", "test"])
    (tmp_path / "folder.parquet").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"^--train_file folder\.parquet is a folder, not a data file"):
        load_splits(DataArguments(train_file="folder.parquet"), ["train"])
