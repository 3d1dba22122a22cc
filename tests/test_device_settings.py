"""
What the machine can run (cocoop_hf_training/device_settings.py): the official recipes' 8 data-loader workers capped to
the usable cores, fp16 turned off on CPU (accelerate would run fp32 under an fp16 label), each said in one warning,
and what ran recorded (results.json recipe and arguments, the run settings of a checkpoint). A resume on a machine with
another core count is the same run.
"""

import json
import logging

import pytest
from transformers import TrainingArguments
from transformers.utils import logging as hf_logging

from cocoop_hf_training import device_settings, evaluate_transfer
from cocoop_hf_training.checkpoints import COMPLETE_MARKER_NAME
from cocoop_hf_training.run_cocoop import main
from cocoop_hf_training.run_settings import RUN_SETTINGS_KEY

from .conftest import DEMO, TINY_CLIP, tiny_run_argv


pytestmark = pytest.mark.usefixtures("single_thread")

WORKERS_SAID = "data-loader workers are used"
FP16_SAID = "fp16 mixed precision does not run on CPU"
# No --dataset_display_name: tables name the dataset after the folder of its files.
DEMO_DATA_ARGS = [
    "--train_file", str(DEMO / "cifar10_demo" / "train.parquet"),
    "--eval_file", str(DEMO / "cifar10_demo" / "test.parquet"),
    "--image_column", "img",
]  # fmt: skip


@pytest.fixture
def said(caplog):
    """The warnings of the project's loggers, counted per phrase; transformers' once-per-process cache emptied first
    (another test may have said the same sentence already)."""
    hf_logging.warning_once.cache_clear()
    caplog.set_level(logging.WARNING)

    def count(phrase: str) -> int:
        return sum(phrase in record.getMessage() for record in caplog.records)

    return count


@pytest.fixture
def cores(monkeypatch):
    """Pretend the machine has `n` usable cores."""

    def set_cores(n: int):
        monkeypatch.setattr(device_settings, "usable_cores", lambda: n)

    return set_cores


def test_usable_cores_follow_the_cpu_affinity(monkeypatch):
    monkeypatch.setattr(device_settings.os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert device_settings.usable_cores() == 3
    monkeypatch.delattr(device_settings.os, "sched_getaffinity")
    monkeypatch.setattr(device_settings.os, "cpu_count", lambda: 6)
    assert device_settings.usable_cores() == 6


def test_workers_capped_to_the_cores_said_once_naming_both_numbers(said, cores):
    cores(2)
    assert [device_settings.capped_workers(8) for _ in range(4)] == [2, 2, 2, 2]  # a grid re-parses every cell
    assert said(WORKERS_SAID) == 1 and said("--dataloader_num_workers 8: this machine has 2 usable cores") == 1
    assert device_settings.capped_workers(2) == 2 and device_settings.capped_workers(0) == 0
    assert said(WORKERS_SAID) == 1


def test_fp16_turned_off_on_cpu_bf16_kept(said, tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, fp16=True, report_to="none")
    assert args.mixed_precision == "fp16"  # what accelerate would get: no scaler, no autocast on CPU
    device_settings.fit_training_arguments(args)
    assert (args.fp16, args.mixed_precision) == (False, "no") and said(FP16_SAID) == 1
    bf16 = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, bf16=True, report_to="none")
    device_settings.fit_training_arguments(bf16)
    assert (bf16.bf16, bf16.mixed_precision) == (True, "bf16") and said(FP16_SAID) == 1


def test_fp16_of_accelerate_launch_turned_off_on_cpu(said, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # what `accelerate launch --mixed_precision fp16` sets
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    assert (args.fp16, args.mixed_precision) == (False, "fp16")
    device_settings.fit_training_arguments(args)
    assert args.mixed_precision == "no" and said("ACCELERATE_MIXED_PRECISION=fp16: " + FP16_SAID) == 1


def test_mixed_precision_of_evaluate_transfer_on_cpu(said):
    assert device_settings.fit_mixed_precision("fp16", use_cpu=True) == "no" and said("--mixed_precision fp16") == 1
    assert device_settings.fit_mixed_precision("bf16", use_cpu=True) == "bf16"
    assert device_settings.fit_mixed_precision("no", use_cpu=True) == "no"


def test_run_records_what_ran_and_resumes_on_a_machine_with_other_cores(tmp_path, said, cores):
    output_dir = tmp_path / "run"
    asked = ["--fp16", "true", "--dataloader_num_workers", "8", "--save_strategy", "epoch"]
    cores(1)
    content = main(tiny_run_argv(output_dir, DEMO_DATA_ARGS, *asked, evaluate=False))
    assert content["recipe"]["precision"] == "fp32" and content["recipe"]["data-loader workers"] == 1
    assert content["runs"] == [] and said(WORKERS_SAID) == 1 and said(FP16_SAID) == 1
    assert said("--dataloader_num_workers 8: this machine has 1 usable cores") == 1
    assert said("draws, and its trained weights, differ from a run with 8 workers under the same seed") == 1
    marker = json.loads((output_dir / "checkpoint-5" / COMPLETE_MARKER_NAME).read_text())
    assert marker[RUN_SETTINGS_KEY]["--fp16"] is False  # what ran; workers are no run setting
    assert "--dataloader_num_workers" not in marker[RUN_SETTINGS_KEY]

    cores(2)  # the same command resumed on another machine
    resumed = main(tiny_run_argv(output_dir, DEMO_DATA_ARGS, *asked, "--resume_from_checkpoint", "latest"))
    assert resumed["recipe"]["data-loader workers"] == 2 and resumed["recipe"]["precision"] == "fp32"
    assert resumed["runs"][0]["dataset"] == "cifar10_demo"  # the folder of train.parquet, not "train"
    assert "| cifar10\\_demo | cocoop |" in (output_dir / "results.md").read_text()  # markdown-escaped
    assert said(WORKERS_SAID) == 2 and said(FP16_SAID) == 1  # the same sentence is not said twice in a process


def test_evaluate_transfer_records_what_ran(tmp_path, said, cores):
    targets = tmp_path / "targets.json"
    target = {"eval_file": str(DEMO / "cifar10_demo" / "test.parquet"), "image_column": "img", "protocol": "all"}
    targets.write_text(json.dumps({"targets": [{**target, "max_eval_samples": 20}]}))
    cores(1)
    content = evaluate_transfer.main(
        ["--clip_model_name_or_path", str(TINY_CLIP), "--random_init_clip", "true", "--method", "zeroshot",
         "--targets", str(targets), "--output_dir", str(tmp_path / "out"), "--use_cpu", "true",
         "--mixed_precision", "fp16", "--dataloader_num_workers", "8"]
    )  # fmt: skip
    recorded = content["arguments"]["transfer"]
    assert (recorded["mixed_precision"], recorded["dataloader_num_workers"]) == ("no", 1)
    assert said(WORKERS_SAID) == 1 and said("--mixed_precision fp16") == 1
    assert content["runs"][0]["dataset"] == "cifar10_demo"  # the folder of test.parquet, not "test"
