"""`cocoop-hf train` and `cocoop-hf evaluate` take each option under its exact names: `--num_shot 4` is not read as
`--num_shots 4` (argparse's abbreviations), as the same typo in a config file is refused; an unknown flag is one
`error: unrecognized arguments: [...]` line with exit status 2 naming the closest option, not a traceback."""

import pytest

from cocoop_hf_training import commands
from cocoop_hf_training.run_arguments import parse_args
from cocoop_hf_training.transfer_arguments import build_evaluate_parser


def data_argv(tmp_path) -> list[str]:
    """Flags that parse without reading anything (the benchmark's folders are looked at later)."""
    return ["--benchmark", "eurosat", "--data_root", str(tmp_path), "--output_dir", str(tmp_path / "out")]


@pytest.mark.parametrize("typo", [["--num_shot", "4"], ["--num_shot=4"], ["--num_sho", "4"]])
def test_train_refuses_an_abbreviation(tmp_path, typo):
    with pytest.raises(ValueError, match=r"^unrecognized arguments: \['--num_sho.*\(did you mean --num_shots\?\)"):
        parse_args([*data_argv(tmp_path), *typo])


def test_train_takes_the_exact_names(tmp_path):
    for spelling in ("--num_shots", "--num-shots"):  # HfArgumentParser's dashed spelling is a name, not a prefix
        _, data_args, _, _ = parse_args([*data_argv(tmp_path), spelling, "4"])
        assert data_args.num_shots == 4


def test_each_unknown_flag_gets_its_closest_option(tmp_path):
    expected = (
        r"^unrecognized arguments: \['--num_shot', '4', '--learnig_rate', '0\.1', 'stray'\] \(did you mean "
        r"--num_shots for --num_shot, --learning_rate for --learnig_rate\?\)"
    )
    with pytest.raises(ValueError, match=expected):
        parse_args([*data_argv(tmp_path), "--num_shot", "4", "--learnig_rate", "0.1", "stray"])


def test_evaluate_refuses_an_abbreviation():
    parser = build_evaluate_parser()
    with pytest.raises(
        ValueError, match=r"^unrecognized arguments: \['--target', 't\.yaml'\] \(did you mean --targets\?"
    ):
        parser.parse_args_into_dataclasses(["--target", "t.yaml", "--output_dir", "out"])
    _, transfer_args = parser.parse_args_into_dataclasses(["--targets", "t.yaml", "--output_dir", "out"])
    assert transfer_args.targets == "t.yaml"


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_the_command_says_it_in_one_line(command, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("COCOOP_HF_TRACEBACK", raising=False)
    valid = data_argv(tmp_path) if command == "train" else ["--targets", "t.yaml", "--output_dir", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        commands.main([command, *valid, "--num_shot", "4"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unrecognized arguments: ['--num_shot', '4']") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
    assert f"`cocoop-hf {command} --help` lists the options" in err
