"""A second newcomer's findings: no pinned-memory warnings on CPU, a typo in a --targets entry or a recipe name gets
"did you mean", a missing config file is said to be missing, --help-all does not look for the Hub."""

import types

import pytest

from cocoop_hf_training import commands, device_settings
from cocoop_hf_training.evaluate_transfer import read_targets
from cocoop_hf_training.recipes import resolve_config


def training_arguments(device_type: str, pin: bool = True):
    return types.SimpleNamespace(
        device=types.SimpleNamespace(type=device_type),
        dataloader_num_workers=0,
        dataloader_pin_memory=pin,
        fp16=False,
        mixed_precision="no",
    )


def test_pinned_memory_is_off_on_cpu_and_left_alone_on_an_accelerator():
    on_cpu, on_gpu = training_arguments("cpu"), training_arguments("cuda")
    device_settings.fit_training_arguments(on_cpu)
    device_settings.fit_training_arguments(on_gpu)
    assert on_cpu.dataloader_pin_memory is False and on_gpu.dataloader_pin_memory is True


def test_a_typo_in_a_targets_entry_names_the_option_it_meant(tmp_path):
    targets = tmp_path / "t.yaml"
    targets.write_text("targets:\n  - {eval_fle: x.parquet, dataset_display_name: a}\n")
    with pytest.raises(ValueError) as caught:
        read_targets(targets)
    message = str(caught.value)
    assert "unknown data option 'eval_fle' (did you mean eval_file?)" in message, message
    assert "__init__" not in message and "DataArguments" not in message


def test_a_misspelt_recipe_name_gets_the_closest_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"neither a file nor a shipped recipe \(did you mean demo_tiny_cifar10\?\)"):
        resolve_config("demo_tiny_cifar1O")


def test_a_missing_config_file_is_said_to_be_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"config file nope\.yaml does not exist \(looked for .*nope\.yaml\)"):
        resolve_config("nope.yaml")


def test_help_all_does_not_look_for_the_hub():
    train = commands.COMMANDS["train"]
    assert commands.looks_for_the_hub(train, ["demo_tiny_cifar10"], imported={})
    assert not commands.looks_for_the_hub(train, ["--help-all"], imported={})
    assert not commands.looks_for_the_hub(train, ["demo_tiny_cifar10"], imported={"huggingface_hub": object()})
    assert not commands.looks_for_the_hub(commands.COMMANDS["recipes"], [], imported={})
