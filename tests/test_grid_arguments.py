"""The grids' own backbone flags (--backbone, --random_init_clip) reach every cell as the flags after `--` do, local
paths are recorded absolute in grid_cells.json, and the names the light parsers list match the catalogue."""

import json

import pytest

from cocoop_hf_training import grid_arguments, run_benchmark, run_transfer_benchmark
from cocoop_hf_training.benchmarks import BENCHMARKS
from cocoop_hf_training.grid import CELL_RECORDS_NAME, RECIPES

from .test_run_benchmark import fake  # noqa: F401  (`fake` is a fixture: a run_cocoop that writes finished runs)


def grid_command(data_root, output_dir, *own, extra=()):
    argv = ["--benchmark", "eurosat", "--data_root", str(data_root), "--output_dir", str(output_dir)]
    argv += ["--method", "cocoop", "--seeds", "1", *own]
    return argv + (["--", *extra] if extra else [])


def test_light_parsers_list_the_catalogue_names():
    assert grid_arguments.TABLE1_DATASETS == run_benchmark.BASE_TO_NEW
    assert grid_arguments.TABLE1_DATASETS == tuple(name for name, bench in BENCHMARKS.items() if not bench.test_only)
    assert list(grid_arguments.BENCHMARK_METHODS) == list(RECIPES)
    assert set(grid_arguments.TRANSFER_METHODS) <= set(RECIPES)


def test_backbone_flags_reach_every_cell_as_the_flags_after_the_separator(fake, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-clip").mkdir()
    run_benchmark.main(grid_command("data", "by_flags", "--backbone", "tiny-clip", "--random_init_clip"))
    by_flags = fake.calls[-1]
    extra = ["--clip_model_name_or_path", str(tmp_path / "tiny-clip"), "--random_init_clip", "true"]
    run_benchmark.main(grid_command("data", "by_extras", extra=extra))
    by_extras = fake.calls[-1]

    assert by_flags["--clip_model_name_or_path"] == str(tmp_path / "tiny-clip")  # absolute, though given relative
    assert by_flags["--random_init_clip"] == "true"
    assert {k: v for k, v in by_flags.items() if k != "--output_dir"} == {
        k: v for k, v in by_extras.items() if k != "--output_dir"
    }
    records = json.loads((tmp_path / "by_flags" / CELL_RECORDS_NAME).read_text())
    (command,) = records.values()
    assert command[command.index("--clip_model_name_or_path") + 1] == str(tmp_path / "tiny-clip")


def test_relative_paths_after_the_separator_are_recorded_absolute(fake, tmp_path, monkeypatch):  # noqa: F811
    """The same grid started again from another folder, naming the same CLIP, is recognised (cells skipped)."""
    (tmp_path / "first").mkdir()
    (tmp_path / "first" / "clip").mkdir()
    monkeypatch.chdir(tmp_path / "first")
    grid = tmp_path / "grid"
    run_benchmark.main(grid_command(tmp_path / "data", grid, extra=["--clip_model_name_or_path=clip"]))
    records = json.loads((grid / CELL_RECORDS_NAME).read_text())
    (command,) = records.values()
    assert f"--clip_model_name_or_path={tmp_path / 'first' / 'clip'}" in command
    calls = len(fake.calls)

    monkeypatch.chdir(tmp_path)
    run_benchmark.main(grid_command(tmp_path / "data", grid, extra=["--clip_model_name_or_path=first/clip"]))
    assert len(fake.calls) == calls  # the finished cell was recognised as this grid's and skipped


def test_hub_ids_are_kept_as_given():
    extra = ["--clip_model_name_or_path", "openai/clip-vit-base-patch16", "--num_shots", "2", "--train_file", "x"]
    assert grid_arguments.absolute_path_flags(extra) == extra


@pytest.mark.parametrize(
    "own, extra, message",
    [
        (["--backbone", "a"], ["--clip_model_name_or_path", "b"], "--backbone a and --clip_model_name_or_path after"),
        (["--backbone", "a"], ["--backbone=b"], "--backbone a and --backbone after '--' name the same option"),
        (["--random_init_clip"], ["--random_init_clip", "false"], "--random_init_clip is given twice"),
    ],
)
def test_a_backbone_given_both_ways_is_refused(tmp_path, own, extra, message):
    with pytest.raises(ValueError, match=message):
        run_benchmark.parse_args(grid_command(tmp_path, tmp_path / "grid", *own, extra=extra))


def test_transfer_grid_takes_the_backbone_flags(tmp_path):
    (tmp_path / "clip").mkdir()
    argv = ["--data_root", "d", "--output_dir", "o", "--backbone", str(tmp_path / "clip" / ".." / "clip")]
    args = run_transfer_benchmark.parse_args([*argv, "--random_init_clip", "--", "--num_train_epochs", "1"])
    assert args.extra == [
        "--clip_model_name_or_path", str(tmp_path / "clip"), "--random_init_clip", "true", "--num_train_epochs", "1",
    ]  # fmt: skip


def test_grid_help_lists_the_backbone_flags(capsys):
    from cocoop_hf_training import commands

    for name in ("benchmark", "transfer-benchmark"):
        assert commands.main([name, "--help"]) == 0
        text = capsys.readouterr().out
        assert "--backbone PATH_OR_ID" in text and "--random_init_clip" in text and "-- RUN_COCOOP_FLAGS" in text
