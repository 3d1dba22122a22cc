"""`cocoop-hf`: the subcommands and what each runs, the overview, the shipped recipes (listed, and named in place of
a config file), the scripts kept under training/, and the installed entry point."""

import importlib
import runpy
import sys
from pathlib import Path

import pytest

from cocoop_hf_training import commands
from cocoop_hf_training.recipes import CONFIGS, resolve_config, shipped_recipes


REPO = Path(__file__).resolve().parent.parent
SHIMS = {
    "run_cocoop": "train",
    "evaluate_transfer": "evaluate",
    "run_benchmark": "benchmark",
    "run_transfer_benchmark": "transfer-benchmark",
}


def test_overview_lists_every_command_on_one_line(capsys):
    assert commands.main(["--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name, command in commands.COMMANDS.items():
        assert any(line.split()[:1] == [name] and command.summary in line for line in lines), name
    assert set(commands.COMMANDS) == {
        "train", "evaluate", "benchmark", "transfer-benchmark", "convert", "generate-split", "recipes",
    }  # fmt: skip


def test_no_command_shows_the_overview_and_fails(capsys):
    assert commands.main([]) == 2
    assert "commands:" in capsys.readouterr().out


def test_unknown_command_is_one_line_naming_the_closest(capsys):
    assert commands.main(["trian", "x.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command 'trian' (did you mean train?)" in err


@pytest.mark.parametrize("name", list(commands.COMMANDS))
def test_each_command_runs_its_module_main_with_the_rest_of_the_line(name, monkeypatch):
    module = importlib.import_module(commands.COMMANDS[name].module)
    received = []
    monkeypatch.setattr(module, "main", received.append)
    argv = ["--output_dir", "out", "--seed", "3"]
    assert commands.main([name, *argv]) == 0
    assert received == [argv]


def test_a_shipped_recipe_is_named_in_place_of_a_config_file(monkeypatch, tmp_path):
    from cocoop_hf_training import run_cocoop

    received = []
    monkeypatch.setattr(run_cocoop, "main", received.append)
    monkeypatch.chdir(tmp_path)
    commands.main(["train", "demo_tiny_cifar10", "--seed", "3"])
    commands.main(["train", "demo_tiny_cifar10.yaml"])
    demo = str(CONFIGS / "demo_tiny_cifar10.yaml")
    assert received == [[demo, "--seed", "3"], [demo]]

    # A real file of that name in the current folder wins over the recipe.
    (tmp_path / "demo_tiny_cifar10.yaml").write_text("seed: 2\n")
    commands.main(["train", "demo_tiny_cifar10.yaml"])
    assert received[-1] == ["demo_tiny_cifar10.yaml"]


def test_a_name_that_is_neither_file_nor_recipe_is_one_error_line(monkeypatch, tmp_path, capsys):
    from cocoop_hf_training import run_cocoop

    monkeypatch.setattr(run_cocoop, "main", lambda argv: pytest.fail("must not run"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        commands.main(["train", "demo_tiny", "--seed", "3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config demo_tiny is neither a file nor a shipped recipe") and err.count("\n") == 1
    assert all(name in err for name in shipped_recipes())


def test_recipes_lists_each_shipped_recipe(capsys):
    # Each under its name, with the first sentence of its comment (tests/test_recipe_summaries.py).
    assert commands.main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    found = sorted(CONFIGS.glob("*.yaml"))
    assert len(found) >= 9 and list(shipped_recipes().values()) == found
    for path in found:
        assert f"  {path.stem}" in lines, path.name


def test_resolve_config_keeps_a_config_file_and_names_a_recipe(tmp_path):
    config = tmp_path / "my.json"
    config.write_text("{}")
    assert resolve_config(str(config)) == str(config)
    assert resolve_config("cocoop_vit_b16_c4_ep10_batch1_ctxv1") == str(
        CONFIGS / "cocoop_vit_b16_c4_ep10_batch1_ctxv1.yaml"
    )


@pytest.mark.parametrize("script, command", list(SHIMS.items()))
def test_training_scripts_run_the_command_of_the_same_job(script, command, monkeypatch):
    received = []
    monkeypatch.setattr(commands, "run_command", lambda *args, **kwargs: received.append((args, kwargs)) or 0)
    monkeypatch.setattr(sys, "argv", [f"training/{script}.py", "--seed", "3"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "training" / f"{script}.py"), run_name="__main__")
    assert exit_info.value.code == 0
    assert received == [((command, ["--seed", "3"]), {"prog": f"{script}.py"})]


def test_train_help_from_a_script_names_the_script(capsys):
    assert commands.run_command("train", ["--help"], prog="run_cocoop.py") == 0
    assert capsys.readouterr().out.startswith("usage: run_cocoop.py [CONFIG]")


def test_installed_entry_point_is_this_main():
    text = (REPO / "pyproject.toml").read_text()
    assert 'cocoop-hf = "cocoop_hf_training.commands:main"' in text


def test_convert_help_names_the_command(capsys):
    assert commands.main(["convert", "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: cocoop-hf convert") and "--adapter_only" in text
