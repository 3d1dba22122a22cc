"""A config argument is a file to read when it is an existing file named .yaml/.yml/.json; otherwise a recipe name, also
where a folder or another file of that name is in the current folder (said at INFO); neither is one line saying which."""

import logging

import pytest

from cocoop_hf_training.recipes import CONFIGS, resolve_config


RECIPE = str(CONFIGS / "demo_tiny_cifar10.yaml")


@pytest.fixture
def info(caplog):
    caplog.set_level(logging.INFO, logger="cocoop_hf_training.recipes")
    return lambda: [record.getMessage() for record in caplog.records if record.name == "cocoop_hf_training.recipes"]


# (An existing file `demo_tiny_cifar10.yaml` is a config file: the next test.)
@pytest.mark.parametrize(
    "argument, in_the_way",
    [("demo_tiny_cifar10", "folder"), ("demo_tiny_cifar10", "file"), ("demo_tiny_cifar10.yaml", "folder")],
)
def test_a_folder_or_non_config_file_of_a_recipes_name_does_not_shadow_it(
    tmp_path, monkeypatch, info, argument, in_the_way
):
    monkeypatch.chdir(tmp_path)
    if in_the_way == "folder":
        (tmp_path / argument).mkdir()
    else:
        (tmp_path / argument).write_text("notes\n")
    assert resolve_config(argument) == RECIPE
    (said,) = info()
    assert str(tmp_path / argument) in said and RECIPE in said and "running the recipe" in said


def test_a_config_file_of_a_recipes_name_wins(tmp_path, monkeypatch, info):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo_tiny_cifar10.yaml").write_text("num_shots: 1\n")
    assert resolve_config("demo_tiny_cifar10.yaml") == "demo_tiny_cifar10.yaml"
    assert resolve_config("demo_tiny_cifar10") == RECIPE  # the file is named with its suffix
    assert info() == []


@pytest.mark.parametrize(
    "make, argument, message",
    [
        (lambda here: (here / "runs").mkdir(), "runs", "config runs is a folder, not a config file: give the path"),
        (
            lambda here: (here / "notes.txt").write_text("x"),
            "notes.txt",
            r"config notes.txt is not a config file \(a config file's name ends with .yaml/.yml/.json\)",
        ),
        (lambda here: None, "nothing", "config nothing is neither a file nor a shipped recipe: .*demo_tiny_cifar10"),
    ],
)
def test_a_name_that_is_neither_a_config_file_nor_a_recipe_is_one_line_saying_what_it_is(
    tmp_path, monkeypatch, make, argument, message
):
    monkeypatch.chdir(tmp_path)
    make(tmp_path)
    with pytest.raises(ValueError, match=f"^{message}") as caught:
        resolve_config(argument)
    assert "\n" not in str(caught.value)
