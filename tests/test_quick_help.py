"""The quick `--help`: the project's options first, grouped, every one of them; Trainer's most used ones named in a
paragraph that cannot drift from TrainingArguments; `--help-all` for the rest; and no torch or model package on the
help path (checked in fresh processes: the import list is the hard test, the time a figure)."""

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import TrainingArguments

from cocoop_hf_training import commands, quick_help
from cocoop_hf_training.data_arguments import DataArguments
from cocoop_hf_training.model_arguments import ModelArguments
from cocoop_hf_training.run_options import RECIPE_DEFAULTS, RunArguments
from cocoop_hf_training.transfer_arguments import TransferArguments


REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "cocoop_hf")  # top-level packages the help path must not import
GROUPS = {
    "model options": ModelArguments,
    "data options": DataArguments,
    "run options": RunArguments,
}


def help_text(capsys, *argv) -> str:
    assert commands.main(list(argv)) == 0
    return capsys.readouterr().out


def options_named(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--([a-z][a-z0-9_-]*[a-z0-9])", text))


def test_train_help_lists_every_project_option_under_its_group(capsys):
    text = help_text(capsys, "train", "--help")
    headings = [text.index(f"\n{title}") for title in GROUPS]
    assert headings == sorted(headings)  # model, data, run: in that order
    bounds = [*headings, text.index("\nTrainer options:")]
    for (title, arguments), start, end in zip(GROUPS.items(), bounds[:-1], bounds[1:], strict=True):
        section = options_named(text[start:end])
        assert {item.name for item in dataclasses.fields(arguments)} <= section, title
    words = " ".join(text.split())  # the help is wrapped to the terminal's width
    assert "(default: openai/clip-vit-base-patch16)" in words and "(default: base_to_new)" in words


def test_trainer_options_named_by_the_quick_help_exist(capsys):
    text = help_text(capsys, "train", "--help")
    paragraph = " ".join(text[text.index("\nTrainer options:") :].split())
    trainer_fields = {item.name for item in dataclasses.fields(TrainingArguments)}
    named = options_named(paragraph) - {"help-all"}
    assert named == set(quick_help.TRAINER_OPTIONS)
    assert named <= trainer_fields
    for option, default in RECIPE_DEFAULTS.items():  # the recipe defaults shown are the ones the command starts from
        if option in named:
            assert f"--{option} ({default})" in paragraph
    # Nothing else of Trainer's is in the quick help: the project's options are not drowned.
    project = {
        name.lstrip("-")
        for arguments in GROUPS.values()
        for item in dataclasses.fields(arguments)
        for name in [item.name, *item.metadata.get("aliases", [])]
    }
    assert options_named(text) - project - trainer_fields <= {"help", "help-all", "option"}  # usage: [--option VALUE]
    assert len(options_named(text) & (trainer_fields - project)) == len(quick_help.TRAINER_OPTIONS)


def test_help_all_is_the_complete_parser(capsys):
    program_name = sys.argv[0]
    with pytest.raises(SystemExit) as exit_info:
        commands.main(["train", "--help-all"])
    assert exit_info.value.code == 0 and sys.argv[0] == program_name  # the caller's name given back
    full = capsys.readouterr().out
    assert full.startswith("usage: cocoop-hf train ")  # the command's name, not the program's alone
    assert "--lr_scheduler_type" in full and "--gradient_accumulation_steps" in full and "--sgd_momentum" in full
    quick = help_text(capsys, "train", "--help")
    assert len(quick.splitlines()) < len(full.splitlines()) / 2


def test_evaluate_help_lists_its_options(capsys):
    text = help_text(capsys, "evaluate", "--help")
    fields = {item.name for cls in (ModelArguments, TransferArguments) for item in dataclasses.fields(cls)}
    assert fields <= options_named(text)


def installed_command() -> list[str]:
    """The installed `cocoop-hf` (`pip install -e . --no-deps` puts it beside the interpreter), else the module."""
    script = shutil.which("cocoop-hf", path=str(Path(sys.executable).parent)) or shutil.which("cocoop-hf")
    return [script] if script else [sys.executable, "-m", "cocoop_hf_training.commands"]


def imported_packages(stderr: str) -> set[str]:
    """Top-level packages in the `-X importtime` report (PYTHONPROFILEIMPORTTIME=1) of a process."""
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", stderr, flags=re.MULTILINE)
    assert names, "no import report: PYTHONPROFILEIMPORTTIME was not honoured"
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([*installed_command(), "train", "--help"], id="cocoop-hf train --help"),
        pytest.param([sys.executable, str(REPO / "training" / "run_cocoop.py"), "--help"], id="run_cocoop.py --help"),
        pytest.param(
            [
                sys.executable,
                "-c",
                "from cocoop_hf_training.commands import main\n"
                "for name in ('evaluate', 'benchmark', 'transfer-benchmark', 'generate-split', 'recipes'):\n"
                "    assert main([name, '--help']) == 0\n"
                "assert main(['--help']) == 0",
            ],
            id="every other command --help",
        ),
    ],
)
def test_help_imports_neither_torch_nor_the_model_package(argv, tmp_path, request):
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    start = time.perf_counter()
    process = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start
    assert process.returncode == 0, process.stderr[-2000:]
    assert "usage:" in process.stdout
    assert not set(HEAVY) & imported_packages(process.stderr)
    # A figure for the log (under 2 s on an idle machine), not a bound: the time depends on the machine and its load;
    # the imports checked above are what keeps help quick.
    print(f"{request.node.callspec.id}: {seconds:.2f} s")
