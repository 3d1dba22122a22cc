"""Nothing silent in grid records and cell results (issue 16): a damaged `grid_cells.json` refuses the run naming the
file, and a cell's metrics enter no table unless they are finite percentages (naming the file and the field)."""

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import pytest

from cocoop_hf_training import grid as training_grid
from cocoop_hf_training import report, run_benchmark, run_transfer_benchmark
from cocoop_hf_training.checkpoints import finish_output_dir, prepare_output_dir

from .test_run_benchmark import fake, grid_argv  # noqa: F401  (`fake` is a fixture)


# ------------------------------------------------------------------------------------------- grid_cells.json


class Cell(NamedTuple):  # what run_cells needs of a cell: hashable, with an output_dir
    output_dir: Path
    name: str


def run_two_cells(tmp_path, records: bytes | None):
    """`run_cells` over two fake cells with `records` as grid_cells.json; returns the cells that ran."""
    output_dir = tmp_path / "grid"
    output_dir.mkdir(parents=True)
    if records is not None:
        (output_dir / training_grid.CELL_RECORDS_NAME).write_bytes(records)
    cells = [Cell(output_dir / f"cell{i}", f"cell{i}") for i in (1, 2)]
    ran, done = [], {}

    def run(cell, flags):
        ran.append(cell.name)
        done[cell.name] = {"runs": []}

    training_grid.run_cells(
        cells,
        output_dir,
        title="test grid",
        desc="test grid",
        command=lambda cell: ["recipe.yaml", "--seed", "1", "--output_dir", str(cell.output_dir)],
        finished_run=lambda cell: done.get(cell.name),
        next_step=lambda cell: ("run", []),
        run=run,
        flags_name="flags",
    )
    return ran


def test_cells_run_and_are_recorded_without_a_records_file(tmp_path):
    assert run_two_cells(tmp_path, None) == ["cell1", "cell2"]
    records = json.loads((tmp_path / "grid" / training_grid.CELL_RECORDS_NAME).read_text())
    assert sorted(records) == [str(tmp_path / "grid" / "cell1"), str(tmp_path / "grid" / "cell2")]


@pytest.mark.parametrize(
    "text, message",
    [
        (b'{"a": ["x"', r"cannot be read as JSON \(JSONDecodeError"),  # cut short: was read as empty, cells re-run
        (b"", r"cannot be read as JSON \(JSONDecodeError"),
        (b"\xff\xfe{}", r"cannot be read as JSON \(UnicodeDecodeError"),
        (b'["recipe.yaml"]', r"must hold a JSON object \(cell folder -> its command\), got list"),  # AttributeError
        (b"[]", r"must hold a JSON object \(cell folder -> its command\), got list"),  # was read as empty
        (b"5", r"must hold a JSON object \(cell folder -> its command\), got int"),
        (
            b'{"x/cell9": "recipe.yaml --seed 1"}',
            r"the record of 'x/cell9' must be a list of strings.*got 'recipe.yaml --seed 1' \(str\)",
        ),
        (b'{"x/cell9": [1, 2]}', r"the record of 'x/cell9' must be a list of strings.*got \[1, 2\] \(list\)"),
    ],
)
def test_damaged_records_file_refuses_the_run_naming_it(tmp_path, text, message):
    path = tmp_path / "grid" / training_grid.CELL_RECORDS_NAME
    with pytest.raises(ValueError, match=message) as error:
        run_two_cells(tmp_path, text)
    assert str(error.value).startswith(str(path)) and "choose another --output_dir" in str(error.value)
    assert path.read_bytes() == text  # not replaced by this command's records


def test_record_of_a_cell_with_the_wrong_shape_is_one_clear_line(tmp_path):
    """The cell's own record a string: was a garbled 'other flags' error listing its characters (or a TypeError)."""
    for index, value in enumerate(("recipe.yaml --seed 1", 7, None)):
        base = tmp_path / str(index)
        cell = base / "grid" / "cell1"
        with pytest.raises(ValueError, match=rf"the record of '{cell}' must be a list of strings"):
            run_two_cells(base, json.dumps({str(cell): value}).encode())


def test_run_benchmark_refuses_a_corrupt_records_file_before_any_cell_runs(fake, tmp_path):  # noqa: F811
    """The grid script end to end: a rerun with other flags is not compared against an empty record."""
    run_benchmark.main(grid_argv(tmp_path, methods=("cocoop",), seeds=("1",), datasets=("eurosat",)))
    records = tmp_path / "grid" / training_grid.CELL_RECORDS_NAME
    records.write_text(records.read_text()[:-10])  # damaged
    fake.calls.clear()
    other = grid_argv(
        tmp_path, methods=("cocoop",), seeds=("1", "2"), datasets=("eurosat",), extra=["--learning_rate", "0.01"]
    )
    with pytest.raises(ValueError, match=rf"^{records} cannot be read as JSON"):
        run_benchmark.main(other)
    assert fake.calls == []


# ------------------------------------------------------------------------------------------- cell metrics


BAD_VALUES = [1e6, float("nan"), float("inf"), -5.0, "90", True, None]


def shown(value) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else repr(value)


@pytest.mark.parametrize("value", BAD_VALUES, ids=shown)
def test_benchmark_cell_with_bad_accuracy_is_refused_naming_file_and_field(fake, tmp_path, value):  # noqa: F811
    argv = grid_argv(tmp_path, methods=("cocoop",), seeds=("1",), datasets=("eurosat",))
    run_benchmark.main(argv)
    results = tmp_path / "grid" / "EuroSAT" / "cocoop" / "seed1" / "results.json"
    content = json.loads(results.read_text())
    content["runs"][0]["metrics"]["new"]["accuracy"] = value
    results.write_text(json.dumps(content))  # NaN / Infinity as Python's json writes and reads them
    with pytest.raises(ValueError, match=r"must be a number in \[0, 100\] \(percent\)") as error:
        run_benchmark.main(argv)
    assert str(error.value).startswith(f"{results}: `metrics.new.accuracy` must be")


def test_benchmark_cell_with_bad_h_is_refused(fake, tmp_path):  # noqa: F811
    argv = grid_argv(tmp_path, methods=("cocoop",), seeds=("1",), datasets=("eurosat",))
    run_benchmark.main(argv)
    results = tmp_path / "grid" / "EuroSAT" / "cocoop" / "seed1" / "results.json"
    content = json.loads(results.read_text())
    content["runs"][0]["H"] = 250.0
    results.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"`H` must be a number in \[0, 100\] \(percent\), got 250\.0"):
        run_benchmark.main(argv)


def write_finished_cell(folder: Path, run: dict) -> Path:
    prepare_output_dir(folder, False, False)
    results = folder / report.RESULTS_NAME
    results.write_text(json.dumps({"runs": [run]}))
    finish_output_dir(folder)
    return results


@pytest.mark.parametrize("value", [1e6, float("nan"), -0.5, "75.0"], ids=shown)
def test_transfer_cell_with_bad_accuracy_is_refused(tmp_path, value):
    cell = run_transfer_benchmark.TransferCell(
        "train", "coop", 1, "ImageNet", tmp_path / "ImageNet" / "coop" / "seed1"
    )
    run = {"dataset": "ImageNet", "method": "coop", "seed": 1, "num_shots": 16, "metrics": {"all": {"accuracy": 50.0}}}
    args = SimpleNamespace(extra=[], output_dir=str(tmp_path))
    results = write_finished_cell(cell.output_dir, run)
    assert run_transfer_benchmark.finished_cell(cell, args)["runs"][0] == run  # the good cell is taken
    run["metrics"]["all"]["accuracy"] = value
    results.write_text(json.dumps({"runs": [run]}))
    with pytest.raises(ValueError, match=rf"^{results}: `metrics\.all\.accuracy` must be a number in \[0, 100\]"):
        run_transfer_benchmark.finished_cell(cell, args)


def test_report_refuses_a_run_with_bad_metrics_naming_the_file(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder, accuracy, f1 in ((good, 60.0, 55.0), (bad, 70.0, 1e6)):
        folder.mkdir()
        run = {"dataset": "d", "method": "coop", "seed": 1, "metrics": {"all": {"accuracy": accuracy, "macro_f1": f1}}}
        (folder / report.RESULTS_NAME).write_text(json.dumps({"runs": [run]}))
    summary = tmp_path / "summary"
    with pytest.raises(ValueError, match=rf"^{bad / report.RESULTS_NAME}: `metrics\.all\.macro_f1` must be a number"):
        report.main([str(good), str(bad), "--output_dir", str(summary)])
    assert not (summary / report.RESULTS_NAME).exists()


@pytest.mark.parametrize(
    "metrics, message",
    [
        ({"base": {"accuracy": float("nan")}}, r"`metrics\.base\.accuracy` must be a number in \[0, 100\]"),
        ({"base": {"macro_f1": 50.0}}, r"`metrics\.base` must be an object with an `accuracy`"),
        ({"base": 50.0}, r"`metrics\.base` must be an object with an `accuracy`"),
        ([50.0], r"a run's `metrics` must be an object of evaluated sets, got \[50\.0\] \(list\)"),
    ],
)
def test_aggregate_never_averages_bad_metrics(metrics, message):
    """The check sits in run_scores too: no caller can put such a run into a table or a seed mean."""
    with pytest.raises(ValueError, match=message):
        report.aggregate([{"dataset": "d", "method": "coop", "seed": 1, "metrics": metrics}])


def test_edges_of_the_percent_range_are_accepted():
    runs = [
        {"dataset": "d", "method": "coop", "seed": s, "metrics": {"all": {"accuracy": a, "macro_f1": a}}}
        for s, a in ((1, 0), (2, 100.0))
    ]
    (row,) = report.aggregate(runs)
    assert row["scores"]["all"]["mean"] == pytest.approx(50.0, abs=1e-12)
