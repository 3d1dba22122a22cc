"""
What capping the data-loader workers changes, said honestly (cocoop_hf_training/device_settings.py): in training each
worker draws the augmentation from its own RNG stream, so a capped run's crops and flips, and trained weights, differ
from a run with the recipe's count under the same seed; the warning names both counts, and the args hold the count
that runs (what results.json records). Evaluation draws nothing at random: there only the speed changes.
"""

import logging

import pytest
from transformers import TrainingArguments
from transformers.utils import logging as hf_logging

from cocoop_hf_training import device_settings


@pytest.fixture
def warnings_said(caplog, monkeypatch):
    """The warnings said on a machine with 2 usable cores; transformers' once-per-process cache emptied first (another
    test may have said the same sentence already)."""
    hf_logging.warning_once.cache_clear()
    monkeypatch.setattr(device_settings, "usable_cores", lambda: 2)
    caplog.set_level(logging.WARNING)
    return lambda: [record.getMessage() for record in caplog.records]


def test_a_capped_training_run_is_told_its_augmentation_draws_differ(warnings_said, tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, dataloader_num_workers=8, report_to="none")
    device_settings.fit_training_arguments(args)
    assert args.dataloader_num_workers == 2  # what runs, and what run_cocoop records in results.json
    [message] = warnings_said()
    assert "--dataloader_num_workers 8: this machine has 2 usable cores, so 2 data-loader workers" in message
    assert "recorded in results.json" in message
    assert "augmentation" in message and "differ from a run with 8 workers under the same seed" in message
    assert "idle" not in message and "only the speed" not in message


def test_a_capped_evaluation_is_told_only_the_speed_changes(warnings_said):
    assert device_settings.capped_workers(6) == 2  # evaluate_transfer's call: no random draws in evaluation
    [message] = warnings_said()
    assert "--dataloader_num_workers 6: this machine has 2 usable cores, so 2 data-loader workers" in message
    assert "only the speed differs from 6 workers" in message and "augmentation" not in message


def test_workers_within_the_cores_are_kept_silently(warnings_said, tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, dataloader_num_workers=2, report_to="none")
    device_settings.fit_training_arguments(args)
    assert args.dataloader_num_workers == 2 and device_settings.capped_workers(0) == 0 and not warnings_said()
