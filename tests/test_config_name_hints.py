"""A misspelt name in a config file is refused with the closest argument's name, as a misspelt flag is."""

import pytest

from cocoop_hf_training import run_cocoop
from cocoop_hf_training.close_names import did_you_mean


def test_a_misspelt_config_name_names_the_argument_meant(tmp_path):
    config = tmp_path / "wrongkey.yaml"
    config.write_text("num_shot: 4\n")
    with pytest.raises(ValueError) as refusal:
        run_cocoop.parse_args([str(config)])
    assert str(refusal.value) == (
        f"config file {config} has unknown arguments ['num_shot'] (did you mean num_shots?); see --help for the names."
    )


def test_several_misspelt_names_each_get_their_hint_and_a_stranger_none(tmp_path):
    config = tmp_path / "wrongkeys.yaml"
    config.write_text("num_shot: 4\nlearning_rat: 0.1\nzzzzqqq: 1\n")
    with pytest.raises(ValueError, match=r"\(did you mean learning_rate for learning_rat, num_shots for num_shot\?\)"):
        run_cocoop.parse_args([str(config)])
    config.write_text("zzzzqqq: 1\n")
    with pytest.raises(ValueError) as refusal:
        run_cocoop.parse_args([str(config)])
    assert "did you mean" not in str(refusal.value)


def test_the_hint_is_bounded_work_for_a_huge_file():
    names = [f"name_{index}" for index in range(100_000)] + ["x" * 1_000_000]
    assert did_you_mean(names, ["num_shots", "seed"]) == ""
    assert did_you_mean(["--num_shot"], ["--num_shots", "--seed"]) == " (did you mean --num_shots?)"
