"""`cocoop-hf generate-split`: writes the official split file of a dataset lacking one, prints its path, refuses to
overwrite one in a single error line, and lists in its help exactly the datasets that can be split so."""

import json

import pytest

from cocoop_hf_training import commands, generate_split
from cocoop_hf_training.benchmarks import BENCHMARKS, generate_split_file

from .test_benchmarks import make_caltech


def test_writes_the_split_file_and_prints_its_path(tmp_path, capsys):
    make_caltech(tmp_path / "data")
    assert commands.main(["generate-split", "--benchmark", "caltech101", "--data_root", str(tmp_path / "data")]) == 0
    written = tmp_path / "data" / "caltech-101" / "split_zhou_Caltech101.json"
    # The path is the last line (an earlier test in this process may have set the package's logging up: its log line).
    assert capsys.readouterr().out.splitlines()[-1] == str(written)
    # The same file the library function writes with the default seed 1 (the official first run's).
    content = json.loads(written.read_text())
    written.rename(tmp_path / "first.json")
    generate_split_file("Caltech101", tmp_path / "data", seed=1)
    assert json.loads(written.read_text()) == content


def test_an_existing_split_file_is_refused_in_one_line(tmp_path, capsys):
    make_caltech(tmp_path)
    written = tmp_path / "caltech-101" / "split_zhou_Caltech101.json"
    written.write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        commands.main(["generate-split", "--benchmark", "Caltech101", "--data_root", str(tmp_path), "--seed", "2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: {written} exists; refusing to overwrite it (delete it to generate a new split).\n"
    assert written.read_text() == "mine"


def test_help_names_the_datasets_that_can_be_generated(capsys):
    generated = {name for name, bench in BENCHMARKS.items() if bench.generator is not None}
    assert set(generate_split.GENERATED_SPLITS) == generated
    assert commands.main(["generate-split", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in generated) and "--data_root" in text
