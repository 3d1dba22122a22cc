"""
What a newcomer's failures end with (cocoop_hf_training/script_runner.run_script): a config-only backbone refused in
one line before --output_dir is written; our refusals in one line while a library's ValueError keeps its traceback; a
missing submodule not taken for a missing extra (and the extra's module list checked against pyproject.toml); Ctrl-C
after --output_dir was written naming what a rerun must pass, and that rerun working; the converter's `python -m` run
through the same runner.
"""

import importlib.metadata
import json
import re
import runpy
import sys
import tomllib
import warnings
from pathlib import Path

import pytest

from cocoop_hf.backbone_loading_cocoop import random_backbone
from cocoop_hf_training import command_errors, run_cocoop
from cocoop_hf_training.script_runner import run_script

from .conftest import TINY_CLIP
from .test_training import argv


ROOT = Path(__file__).resolve().parents[1]
DEMO_RECIPE = ROOT / "cocoop_hf_training" / "configs" / "demo_tiny_cifar10.yaml"


def last_stderr_line(capsys, call, status) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_script(call, "cocoop-hf train")
    assert exit_info.value.code == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


# ---------------------------------------------------------------------------------------------- a config-only backbone


def test_the_demo_without_random_weights_is_one_line_and_leaves_the_output_folder_untouched(tmp_path, capsys):
    output_dir = tmp_path / "demo"
    run_argv = [str(DEMO_RECIPE), "--random_init_clip", "false", "--output_dir", str(output_dir)]
    line = last_stderr_line(capsys, lambda: run_cocoop.main(run_argv), status=2)
    assert line.startswith(f"error: {TINY_CLIP} holds a backbone config but no weights")
    assert "--random_init_clip" in line and "random_init=True" in line
    # Nothing written: the corrected command (with --random_init_clip) is not refused as "holds a previous run".
    assert not output_dir.exists() or not any(output_dir.iterdir())


# ---------------------------------------------------------------------------------------------- which errors are ours


def test_a_library_value_error_keeps_its_traceback_and_our_refusal_stays_one_line(capsys):
    with pytest.raises(json.JSONDecodeError):  # raised inside the json module: a bug to find, not a refusal
        run_script(lambda: json.loads("{"))

    def unpack():
        first, second = [1, 2, 3]  # noqa: F841 - a bug of a caller outside the project's packages

    with pytest.raises(ValueError, match="too many values to unpack"):
        run_script(unpack)
    capsys.readouterr()
    line = last_stderr_line(capsys, lambda: random_backbone(TINY_CLIP, seed="3"), status=2)
    assert line == "error: random_init_seed must be an integer, got '3' (str)."


def test_an_invalid_hub_id_refused_by_huggingface_hub_stays_one_line(capsys):
    from huggingface_hub.utils import validate_repo_id

    line = last_stderr_line(capsys, lambda: validate_repo_id("one/two/three"), status=2)
    assert line.startswith("error: ") and "'one/two/three'" in line


def test_a_missing_submodule_of_an_installed_package_is_not_a_missing_extra():
    broken = ModuleNotFoundError("No module named 'datasets.nonexistent_part'", name="datasets.nonexistent_part")
    assert command_errors.missing_extra_message(broken, "cocoop-hf train") is None
    missing = ModuleNotFoundError("No module named 'datasets'", name="datasets")
    assert command_errors.missing_extra_message(missing, "cocoop-hf train").endswith("(missing: datasets)")


def test_the_extra_module_list_is_the_train_extra_of_pyproject():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    distributions = {re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower() for requirement in extra}
    assert set(command_errors.TRAIN_EXTRA_MODULES.values()) == distributions
    # The import name each distribution really installs (pyyaml -> yaml), as the installed metadata says.
    provided = importlib.metadata.packages_distributions()
    for module, distribution in command_errors.TRAIN_EXTRA_MODULES.items():
        assert distribution in {name.lower() for name in provided.get(module, [])}, (module, distribution)


# ---------------------------------------------------------------------------------------------- Ctrl-C after writing


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_while_evaluating_names_the_saved_model_and_that_rerun_works(tmp_path, capsys, monkeypatch):
    output_dir, evaluated_dir = tmp_path / "out", tmp_path / "evaluated"
    run_argv = argv(output_dir)
    monkeypatch.setattr(run_cocoop, "evaluate_sets", interrupt)
    line = last_stderr_line(capsys, lambda: run_cocoop.main(run_argv), status=130)
    assert line == (
        f"interrupted: stopped while evaluating; the trained model is saved in {output_dir}: to evaluate it without "
        f"training again, run the same command with --model_name_or_path {output_dir} --do_train false --output_dir "
        "<a new folder>; or run the same command with --overwrite_output_dir to start again"
    )
    monkeypatch.undo()
    with pytest.raises(ValueError, match="holds a previous run"):  # why the line names other flags
        run_cocoop.main(run_argv)
    evaluate_only = ["--model_name_or_path", str(output_dir), "--do_train", "false"]
    evaluate_only += ["--output_dir", str(evaluated_dir)]
    results = run_cocoop.main([*run_argv, *evaluate_only])
    assert set(results["runs"][0]["metrics"]) == {"base", "new"}
    assert (evaluated_dir / "results.json").is_file()


def test_ctrl_c_while_selecting_the_images_says_whether_anything_was_written(tmp_path, capsys, monkeypatch):
    output_dir = tmp_path / "out"
    monkeypatch.setattr(run_cocoop, "few_shot_indices", interrupt)  # before the draw is written
    line = last_stderr_line(capsys, lambda: run_cocoop.main(argv(output_dir)), status=130)
    assert line == (
        f"interrupted: stopped while selecting the images, before writing anything into {output_dir}; run the same "
        "command again"
    )
    monkeypatch.undo()
    monkeypatch.setattr(run_cocoop, "drop_or_raise_corrupt", interrupt)  # after it: fewshot_indices.json is there
    run_argv = argv(output_dir, "--verify_images", "all")
    line = last_stderr_line(capsys, lambda: run_cocoop.main(run_argv), status=130)
    assert line == (
        f"interrupted: stopped while selecting the images; {output_dir} holds this run's first files "
        "(fewshot_indices.json): run the same command with --overwrite_output_dir to start again"
    )


# ---------------------------------------------------------------------------------------------- the converter


def test_the_converter_module_run_as_a_script_says_ctrl_c_in_one_line(tmp_path, capsys, monkeypatch):
    import cocoop_hf.official_pickle

    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    (tmp_path / "model.pth.tar-10").write_bytes(b"")
    monkeypatch.setattr(cocoop_hf.official_pickle, "load_official_state_dict", interrupt)
    argv_ = ["--checkpoint", str(tmp_path / "model.pth.tar-10"), "--clip", str(TINY_CLIP)]
    argv_ += ["--class_names_file", str(names), "--output_dir", str(tmp_path / "converted")]
    monkeypatch.setattr(sys, "argv", ["convert_official.py", *argv_])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module is already imported
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_module("cocoop_hf.convert_official", run_name="__main__")
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted: stopped (Ctrl-C) before it finished"
