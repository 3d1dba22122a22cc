"""Nothing silent in numbers and on resume (issue 16): float options are finite, a resume continues only the run that
wrote the checkpoint (every recorded setting compared), and non-finite checkpoint weights are refused.

Runs are the seconds-long tiny-CLIP runs of tests/test_training.py (1 epoch of 5 steps, a checkpoint at its end).
"""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from cocoop_hf_training.checkpoints import CHECKPOINT_WEIGHTS_NAME, COMPLETE_MARKER_NAME, MANIFEST_NAME
from cocoop_hf_training.run_cocoop import CoCoOpTrainer, main
from cocoop_hf_training.run_settings import RUN_SETTINGS_KEY, check_resume_settings

from .test_training import argv


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(CoCoOpTrainer, "train", lambda *a, **kw: pytest.fail("training started before the error"))


@pytest.fixture(scope="module")
def checkpointed_run(tmp_path_factory):
    """A 1-epoch run (seed 1, 2 shots, CoCoOp, lr 0.002) with its checkpoint-5; tests work on copies."""
    output_dir = tmp_path_factory.mktemp("checkpointed") / "run"
    main(argv(output_dir, "--save_strategy", "epoch", evaluate=False))
    assert (output_dir / "checkpoint-5" / COMPLETE_MARKER_NAME).is_file()
    return output_dir


def folder_state(folder) -> dict:
    """Every file under `folder` with its bytes: what a refused run must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------- finite numbers


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--learning_rate", "nan"),
        ("--learning_rate", "inf"),
        ("--weight_decay", "nan"),
        ("--warmup_lr", "nan"),
        ("--sgd_momentum", "inf"),
        ("--max_grad_norm", "nan"),
    ],
)
def test_non_finite_float_flag_is_refused_before_anything_is_written(tmp_path, no_training, flag, value):
    output_dir = tmp_path / "out"
    with pytest.raises(ValueError, match=rf"^{flag} must be a finite number, got {value}\.$"):
        main(argv(output_dir, flag, value))
    assert not output_dir.exists()


def test_nan_learning_rate_in_a_yaml_config_file_is_refused_naming_the_file(tmp_path, no_training):
    config = tmp_path / "recipe.yaml"
    config.write_text("learning_rate: .nan\nnum_train_epochs: 1\n")
    output_dir = tmp_path / "out"
    with pytest.raises(
        ValueError, match=r"config file .*recipe\.yaml: `learning_rate` must be a finite number, got nan"
    ):
        main([str(config), *argv(output_dir)])
    assert not output_dir.exists()


def test_nan_learning_rate_via_script_is_one_error_line(tmp_path, capsys, monkeypatch, no_training):
    """The script's own exit (cocoop_hf_training/cli.run_script): `error: <message>` and status 2, no traceback."""
    from cocoop_hf_training.cli import run_script

    monkeypatch.delenv("COCOOP_HF_TRACEBACK", raising=False)
    output_dir = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        run_script(lambda: main(argv(output_dir, "--learning_rate", "nan")))
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1] == "error: --learning_rate must be a finite number, got nan."
    )
    assert not output_dir.exists()


# ------------------------------------------------------------------------------------------- resume settings


def test_checkpoint_marker_records_the_run_settings(checkpointed_run):
    marker = json.loads((checkpointed_run / "checkpoint-5" / COMPLETE_MARKER_NAME).read_text())
    settings = marker[RUN_SETTINGS_KEY]
    assert settings["--seed"] == 1 and settings["--num_shots"] == 2 and settings["--method"] == "cocoop"
    assert settings["--learning_rate"] == 0.002 and settings["--num_train_epochs"] == 1.0
    assert settings["--n_ctx"] is None and settings["--ctx_init"] == "a photo of a"
    assert settings["--kgcoop_weight"] == 0.0 and settings["--class_token_position"] == "end"
    assert settings["--per_device_train_batch_size"] == 2 and settings["number of processes (world size)"] == 1
    assert settings["dataset"]["train_file"].endswith("train.parquet")
    # Not recorded: what may change on a resume without changing the training.
    for name in ("--output_dir", "--per_device_eval_batch_size", "--logging_steps", "--save_strategy"):
        assert name not in settings


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--seed", "2", "--seed: the checkpoint was trained with 1, this run asks for 2"),
        ("--num_shots", "1", "--num_shots: the checkpoint was trained with 2, this run asks for 1"),
        ("--method", "coop", "--method: the checkpoint was trained with 'cocoop', this run asks for 'coop'"),
        ("--learning_rate", "0.01", "--learning_rate: the checkpoint was trained with 0.002, this run asks for 0.01"),
        ("--ctx_init", "a photo of", "--ctx_init: the checkpoint was trained with 'a photo of a', this run asks for"),
        ("--num_train_epochs", "2", "--num_train_epochs: the checkpoint was trained with 1.0, this run asks for 2.0"),
    ],
)
def test_resuming_another_runs_checkpoint_with_other_settings_is_refused(
    checkpointed_run, tmp_path, no_training, flag, value, message
):
    """Before: training went on from the other run's checkpoint and the results carried this run's settings."""
    output_dir = tmp_path / "other"
    checkpoint = checkpointed_run / "checkpoint-5"
    with pytest.raises(
        ValueError, match="cannot resume from .*checkpoint-5: it belongs to a run with other settings"
    ) as error:
        main(argv(output_dir, flag, value, "--resume_from_checkpoint", str(checkpoint)))
    assert message in str(error.value) and "Resume with the checkpoint's settings" in str(error.value)
    assert not output_dir.exists()  # refused before anything was written


def test_every_differing_setting_is_named(checkpointed_run, tmp_path, no_training):
    checkpoint = checkpointed_run / "checkpoint-5"
    with pytest.raises(ValueError) as error:
        main(
            argv(tmp_path / "o", "--seed", "3", "--learning_rate", "0.1", "--resume_from_checkpoint", str(checkpoint))
        )
    assert "--seed: the checkpoint was trained with 1, this run asks for 3" in str(error.value)
    assert "--learning_rate: the checkpoint was trained with 0.002, this run asks for 0.1" in str(error.value)


def test_resume_latest_with_another_learning_rate_is_refused_and_the_folder_kept(checkpointed_run, tmp_path):
    """In the run's own folder: nothing of it (manifest, few-shot record, checkpoint) is touched by the refusal."""
    run = tmp_path / "run"
    shutil.copytree(checkpointed_run, run)
    before = folder_state(run)
    with pytest.raises(
        ValueError, match="--learning_rate: the checkpoint was trained with 0.002, this run asks for 0.5"
    ):
        main(argv(run, "--learning_rate", "0.5", "--resume_from_checkpoint", "latest", evaluate=False))
    assert folder_state(run) == before
    assert (run / MANIFEST_NAME).is_file()


def test_resume_with_the_same_settings_but_other_logging_and_eval_batch_goes_on(checkpointed_run, tmp_path):
    """What legitimately differs on a resume (eval batch size, logging, evaluation) is not compared."""
    run = tmp_path / "run"
    shutil.copytree(checkpointed_run, run)
    content = main(
        argv(run, "--resume_from_checkpoint", "latest", "--logging_steps", "7")
        + ["--per_device_eval_batch_size", "20"]
    )
    assert content["runs"][0]["seed"] == 1 and content["runs"][0]["num_shots"] == 2


def test_checkpoint_without_a_settings_record_is_refused_saying_how_to_proceed(
    checkpointed_run, tmp_path, no_training
):
    """A checkpoint of the previous format: whether it is this run's cannot be checked."""
    checkpoint = tmp_path / "saved" / "checkpoint-5"
    shutil.copytree(checkpointed_run / "checkpoint-5", checkpoint)
    marker_path = checkpoint / COMPLETE_MARKER_NAME
    marker = json.loads(marker_path.read_text())
    del marker[RUN_SETTINGS_KEY]
    marker_path.write_text(json.dumps(marker))
    with pytest.raises(ValueError, match=r"records no `run_settings`.*--overwrite_output_dir without --resume_from"):
        main(argv(tmp_path / "run", "--resume_from_checkpoint", str(checkpoint), evaluate=False))
    assert not (tmp_path / "run").exists()


def test_trainer_load_from_checkpoint_compares_the_settings(checkpointed_run, tmp_path):
    """The Trainer's own resume path checks too (a script that sets `run_settings` and calls train() itself)."""
    from transformers import TrainingArguments

    from cocoop_hf import CoCoOpModel

    marker = json.loads((checkpointed_run / "checkpoint-5" / COMPLETE_MARKER_NAME).read_text())
    args = TrainingArguments(output_dir=str(tmp_path / "run"), use_cpu=True, report_to="none")
    trainer = CoCoOpTrainer(model=CoCoOpModel.from_pretrained(checkpointed_run), args=args)
    trainer.run_settings = {**marker[RUN_SETTINGS_KEY], "--seed": 5}
    with pytest.raises(ValueError, match="--seed: the checkpoint was trained with 1, this run asks for 5"):
        trainer._load_from_checkpoint(str(checkpointed_run / "checkpoint-5"))
    trainer.run_settings = marker[RUN_SETTINGS_KEY]
    trainer._load_from_checkpoint(str(checkpointed_run / "checkpoint-5"))  # the same settings: loads


def test_a_setting_only_one_side_records_counts_as_a_difference():
    recorded = {"format": 1, "--seed": 1, "--future_option": "x"}
    with pytest.raises(
        ValueError, match="--future_option: the checkpoint was trained with 'x', this run asks for null"
    ):
        check_resume_settings("ckpt", {RUN_SETTINGS_KEY: recorded}, {"format": 1, "--seed": 1})
    check_resume_settings("ckpt", {RUN_SETTINGS_KEY: recorded}, dict(recorded))


# ------------------------------------------------------------------------------------------- non-finite weights


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_resume_refuses_non_finite_checkpoint_weights_naming_file_and_tensor(checkpointed_run, tmp_path, bad):
    checkpoint = tmp_path / "saved" / "checkpoint-5"  # a copy of the run's checkpoint, its weights damaged
    shutil.copytree(checkpointed_run / "checkpoint-5", checkpoint)
    weights = checkpoint / CHECKPOINT_WEIGHTS_NAME
    tensors = load_file(weights)
    tensors["ctx"][1, 3] = bad  # same size: the marker's file sizes still match
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"prompt_learner\.safetensors: tensor 'ctx' holds 1 non-finite value") as e:
        main(argv(tmp_path / "run", "--resume_from_checkpoint", str(checkpoint), evaluate=False))
    assert str(weights) in str(e.value)


def test_load_prompt_learner_state_refuses_non_finite_tensors(checkpointed_run):
    """The library's shared entry (checkpoints, adapters, converted official checkpoints); the model is unchanged."""
    from cocoop_hf import CoCoOpModel

    model = CoCoOpModel.from_pretrained(checkpointed_run)
    before = {name: t.clone() for name, t in model.prompt_learner.state_dict().items()}
    state = {name: t.clone() for name, t in before.items()}
    state["meta_net.linear2.bias"][0] = float("-inf")
    state["meta_net.linear2.bias"][1] = float("nan")
    with pytest.raises(
        ValueError, match=r"^adapter\.safetensors: tensor 'meta_net\.linear2\.bias' holds 2 non-finite"
    ):
        model.load_prompt_learner_state(state, source="adapter.safetensors")
    for name, tensor in model.prompt_learner.state_dict().items():
        assert torch.equal(tensor, before[name]), name
