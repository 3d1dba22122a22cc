"""What the help texts tell a user of the installed package: commands they can type (`cocoop-hf benchmark`), not paths
of a source checkout; evaluate's help laid out as train's; how a config file's paths are read."""

import dataclasses
import re

import pytest

from cocoop_hf_training import commands
from cocoop_hf_training.model_arguments import ModelArguments
from cocoop_hf_training.transfer_arguments import TransferArguments


# A source checkout's script paths: a wheel installs no `cocoop_hf_training/x.py` to type nor a `training/` folder.
CHECKOUT_PATHS = re.compile(r"cocoop_hf_training/\w+\.py|(?<![\w/])training/\w+\.py|python\s+\S+\.py")


def help_text(capsys, *argv) -> str:
    assert commands.main(list(argv)) == 0
    return capsys.readouterr().out


def words(text: str) -> str:
    return " ".join(text.split())  # the help is wrapped to the terminal's width


@pytest.mark.parametrize("argv", [[name, "--help"] for name in commands.COMMANDS] + [["--help"]])
def test_help_names_commands_not_checkout_paths(capsys, argv):
    text = help_text(capsys, *argv)
    assert not CHECKOUT_PATHS.findall(text), argv


def test_full_train_help_names_commands_not_checkout_paths(capsys):
    with pytest.raises(SystemExit):
        commands.main(["train", commands.HELP_ALL])
    text = capsys.readouterr().out
    assert "cocoop-hf train" in text and not CHECKOUT_PATHS.findall(text)


@pytest.mark.parametrize("name", ["train", "evaluate"])
def test_quick_helps_share_a_short_usage_line(capsys, name):
    lines = help_text(capsys, name, "--help").splitlines()
    assert lines[0] == f"usage: cocoop-hf {name} [CONFIG] [--option VALUE ...]"
    assert lines[1] == ""  # one line, not argparse's block of every option


def test_evaluate_help_groups_model_and_evaluation_options(capsys):
    text = help_text(capsys, "evaluate", "--help")
    model, evaluation = text.index("\nmodel options"), text.index("\nevaluation options")
    config = text.index("\nCONFIG:")
    assert model < evaluation < config
    named = {
        section: set(re.findall(r"^  --(\w+)", text[start:end], flags=re.MULTILINE))
        for section, start, end in (("model", model, evaluation), ("evaluation", evaluation, config))
    }
    assert named["model"] == {item.name for item in dataclasses.fields(ModelArguments)}
    assert named["evaluation"] == {item.name for item in dataclasses.fields(TransferArguments)}


@pytest.mark.parametrize("name", ["train", "evaluate"])
def test_config_paragraph_says_how_paths_resolve(capsys, name):
    text = words(help_text(capsys, name, "--help"))
    assert "relative input paths inside the file are read from the file's folder" in text.lower()
    assert "output_dir is relative to the folder you run from" in text
    assert "flags are relative to the current folder" in text


def test_train_footer_says_parentheses_as_it_shows(capsys):
    text = words(help_text(capsys, "train", "--help"))
    assert "--learning_rate (0.002)" in text and "in parentheses the recipe default" in text
    assert "in brackets" not in text
