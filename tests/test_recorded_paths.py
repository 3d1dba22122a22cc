"""What a run records of an input path: links kept (a Hugging Face cache file is a link to an extension-less blob), `~`
expanded, a Hub id from a config file never rebound to a folder of the current one, and the grids' cells recording
every input option input_paths lists, under every spelling run_cocoop takes."""

import shutil
from pathlib import Path

import pytest

from cocoop_hf_training import grid_arguments, run_cocoop
from cocoop_hf_training.data_loading import load_splits
from cocoop_hf_training.input_paths import LOCAL_INPUTS, LOCAL_OR_HUB_INPUTS


DEMO = Path(run_cocoop.__file__).resolve().parent / "demo" / "cifar10_demo"


def _hub_cache_snapshot(root: Path) -> Path:
    """root/snapshots/<sha>/{train,test}.parquet: links into root/blobs/<hash> (no extension), as the Hub cache is."""
    snapshot = root / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir()
    for index, name in enumerate(("train.parquet", "test.parquet")):
        blob = root / "blobs" / f"9f8e7d6c{index}"
        shutil.copyfile(DEMO / name, blob)
        (snapshot / name).symlink_to(blob)
    return snapshot


def test_a_hub_cache_file_is_recorded_by_its_link_and_loads(tmp_path, monkeypatch):
    snapshot = _hub_cache_snapshot(tmp_path / "hub")
    monkeypatch.chdir(tmp_path)
    relative = snapshot.relative_to(tmp_path)
    flags = ["--train_file", f"{relative}/train.parquet", "--eval_file", f"{relative}/test.parquet"]
    _, data_args, _, _ = run_cocoop.parse_args([*flags, "--image_column", "img", "--output_dir", "out"])
    assert data_args.train_file == str(snapshot / "train.parquet")
    assert data_args.eval_file == str(snapshot / "test.parquet")
    loaded, class_names = load_splits(data_args, ["train", "test"], cache_dir=str(tmp_path / "cache"))
    assert len(loaded["train"]) > 0 and len(class_names) == 10

    # From a config file beside the links: the same, and a grid cell records the link too.
    (snapshot.parent / "run.yaml").write_text("train_file: 0123abcd/train.parquet\nimage_column: img\n")
    assert run_cocoop.parse_args([str(snapshot.parent / "run.yaml")])[1].train_file == str(snapshot / "train.parquet")
    assert grid_arguments.absolute_path_flags([f"--train_file={relative}/train.parquet"]) == [
        f"--train_file={snapshot / 'train.parquet'}"
    ]


def test_a_home_folder_path_is_expanded_in_a_config_file_a_flag_and_a_grid(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "clip").mkdir(parents=True)
    (home / "train.parquet").write_bytes(b"")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text("backbone: ~/clip\ntrain_file: ~/train.parquet\n")
    model_args, data_args, _, _ = run_cocoop.parse_args(["run.yaml"])
    assert model_args.clip_model_name_or_path == str(home / "clip")
    assert data_args.train_file == str(home / "train.parquet")

    model_args, _, _, _ = run_cocoop.parse_args(["run.yaml", "--clip_model_name_or_path=~/clip"])
    assert model_args.clip_model_name_or_path == str(home / "clip")

    assert grid_arguments.absolute_path_flags(["--clip_model_name_or_path=~/clip", "--class_names_file", "~/n"]) == [
        f"--clip_model_name_or_path={home / 'clip'}",
        "--class_names_file",
        str(home / "n"),  # expanded though missing: its reader then names the very place looked in
    ]
    args = grid_arguments.build_benchmark_parser().parse_args(
        ["--benchmark", "eurosat", "--data_root", "d", "--output_dir", "o", "--backbone", "~/clip"]
    )
    args.extra = []
    assert grid_arguments.cell_flags(args) == ["--clip_model_name_or_path", str(home / "clip")]


def test_a_hub_id_from_a_config_file_is_not_rebound_to_a_folder_of_the_current_one(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "run.yaml"
    config.write_text("dataset_name: cifar10\nbackbone: openai/clip-vit-base-patch16\n")
    work = tmp_path / "work"
    (work / "cifar10").mkdir(parents=True)  # e.g. an earlier run's --output_dir cifar10
    (work / "openai" / "clip-vit-base-patch16").mkdir(parents=True)
    monkeypatch.chdir(work)
    model_args, data_args, _, _ = run_cocoop.parse_args([str(config)])
    assert data_args.dataset_name == "cifar10"
    assert model_args.clip_model_name_or_path == "openai/clip-vit-base-patch16"
    # A flag is relative to the current folder, overriding the file's value, under either spelling.
    for flag in ("--dataset_name", "--dataset-name"):
        assert run_cocoop.parse_args([str(config), flag, "cifar10"])[1].dataset_name == str(work / "cifar10"), flag
    model_args = run_cocoop.parse_args([str(config), "--backbone", "openai/clip-vit-base-patch16"])[0]
    assert model_args.clip_model_name_or_path == str(work / "openai" / "clip-vit-base-patch16")


def test_the_grids_record_every_input_option_absolute_under_each_spelling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "names.txt").write_text("a\n")
    (tmp_path / "cifar10").mkdir()
    names = str(tmp_path / "names.txt")
    cases = {
        ("--class_names_file", "names.txt"): ("--class_names_file", names),
        ("--class-names-file", "names.txt"): ("--class-names-file", names),
        ("--imagenet_classnames=names.txt",): (f"--imagenet_classnames={names}",),
        ("--dataset_name", "cifar10"): ("--dataset_name", str(tmp_path / "cifar10")),
        ("--dataset_name", "cifar100"): ("--dataset_name", "cifar100"),  # a Hub id: no such local folder
        ("--num_shots", "names.txt"): ("--num_shots", "names.txt"),  # not a path option
    }
    for given, recorded in cases.items():
        assert grid_arguments.absolute_path_flags(list(given)) == list(recorded), given
    # The class names reach run_cocoop recorded as they would be given there directly.
    _, data_args, _, _ = run_cocoop.parse_args(["--class-names-file", "names.txt", "--dataset_name", "x"])
    assert data_args.class_names_file == names


def test_the_grids_path_flags_are_run_cocoops_input_options_under_each_spelling():
    from transformers import HfArgumentParser, TrainingArguments

    from cocoop_hf_training.data_arguments import DataArguments
    from cocoop_hf_training.model_arguments import ModelArguments
    from cocoop_hf_training.run_options import RunArguments

    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments, RunArguments))
    options = {option: action.dest for action in parser._actions for option in action.option_strings}
    inputs = {*LOCAL_INPUTS, *LOCAL_OR_HUB_INPUTS, "clip_model_name_or_path"}
    for flag in grid_arguments.PATH_FLAGS:
        if flag.lstrip("-").replace("-", "_") == "targets":  # evaluate_transfer's, not run_cocoop's
            continue
        assert flag in options and options[flag] in inputs, flag
    # And each spelling of each input option run_cocoop has is one of them.
    missing = [flag for flag, dest in options.items() if dest in inputs and flag not in grid_arguments.PATH_FLAGS]
    assert missing == []
    assert {"--class_names_file", "--class-names-file", "--imagenet_classnames", "--dataset_name"} <= set(options)


def test_the_grids_backbone_clash_check_knows_the_dashed_spelling():
    args = grid_arguments.build_benchmark_parser().parse_args(
        ["--benchmark", "eurosat", "--data_root", "d", "--output_dir", "o", "--backbone", "a"]
    )
    args.extra = ["--clip-model-name-or-path", "b"]
    with pytest.raises(ValueError, match="name the same option"):
        grid_arguments.cell_flags(args)
