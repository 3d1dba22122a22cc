"""Relative paths in a config file (or a --targets file) are relative to that file; flags to the current folder;
outputs stay relative to the current folder; input paths that exist come back (and are recorded) absolute."""

import os
from pathlib import Path

import pytest

from cocoop_hf_training import evaluate_transfer, run_cocoop
from cocoop_hf_training.run_settings import check_resume_settings, run_settings


PACKAGE = Path(run_cocoop.__file__).resolve().parent
DEMO_CONFIG = PACKAGE / "configs" / "demo_tiny_cifar10.yaml"
TINY_CLIP = PACKAGE / "demo" / "tiny-clip"


def _folder_with_config(tmp_path, text: str) -> Path:
    """tmp/project/configs/run.yaml holding `text`, beside tmp/project/data/train.parquet and tmp/project/clip/."""
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    (project / "data").mkdir()
    (project / "data" / "train.parquet").write_bytes(b"")
    (project / "clip").mkdir()
    config = project / "configs" / "run.yaml"
    config.write_text(text)
    return config


def _elsewhere(tmp_path, monkeypatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_the_shipped_demo_config_reads_its_inputs_beside_it_from_any_folder(tmp_path, monkeypatch):
    work = _elsewhere(tmp_path, monkeypatch)
    model_args, data_args, training_args, _ = run_cocoop.parse_args([str(DEMO_CONFIG)])
    assert model_args.clip_model_name_or_path == str(TINY_CLIP)
    assert data_args.train_file == str(PACKAGE / "demo" / "cifar10_demo" / "train.parquet")
    assert data_args.eval_file == str(PACKAGE / "demo" / "cifar10_demo" / "test.parquet")
    # Outputs stay where the command runs: a shipped recipe never writes into the installed package.
    assert not os.path.isabs(training_args.output_dir)
    assert (work / training_args.output_dir).resolve() == work.resolve() / "outputs" / "demo_tiny_cifar10"


def test_relative_paths_in_a_config_file_are_relative_to_its_folder(tmp_path, monkeypatch):
    config = _folder_with_config(
        tmp_path,
        "backbone: ../clip\ntrain_file: ../data/train.parquet\neval_file: ../data/missing.parquet\n"
        "class_names_file: names.txt\noutput_dir: out\ncache_dir: cache\n",
    )
    work = _elsewhere(tmp_path, monkeypatch)
    project = config.parent.parent.resolve()
    model_args, data_args, training_args, _ = run_cocoop.parse_args([str(config)])
    assert model_args.clip_model_name_or_path == str(project / "clip")
    assert data_args.train_file == str(project / "data" / "train.parquet")
    # A missing input is made absolute beside the file too: the check that reads it names the place looked in.
    assert data_args.eval_file == str(project / "data" / "missing.parquet")
    assert data_args.class_names_file == str(project / "configs" / "names.txt")
    # Outputs and caches stay relative to the current folder.
    assert training_args.output_dir == "out" and model_args.cache_dir == "cache"
    # A config given by a relative path reads the same.
    monkeypatch.chdir(project)
    assert run_cocoop.parse_args(["configs/run.yaml"])[1].train_file == str(project / "data" / "train.parquet")
    assert work.is_dir()


def test_flags_stay_relative_to_the_current_folder_and_come_back_absolute(tmp_path, monkeypatch):
    config = _folder_with_config(tmp_path, "train_file: ../data/train.parquet\noutput_dir: out\n")
    work = _elsewhere(tmp_path, monkeypatch)
    (work / "mine.parquet").write_bytes(b"")
    (work / "my-clip").mkdir()
    model_args, data_args, _, _ = run_cocoop.parse_args(
        [str(config), "--train_file", "mine.parquet", "--backbone", "./my-clip"]
    )
    assert data_args.train_file == str(work.resolve() / "mine.parquet")
    assert model_args.clip_model_name_or_path == str(work.resolve() / "my-clip")
    # What does not exist locally is left as given: a Hub id, or a path its reader refuses in its own words.
    model_args, data_args, _, _ = run_cocoop.parse_args(
        ["--train_file", "nothing.parquet", "--backbone", "openai/clip-vit-base-patch16", "--output_dir", "o"]
    )
    assert data_args.train_file == "nothing.parquet"
    assert model_args.clip_model_name_or_path == "openai/clip-vit-base-patch16"


def test_a_hub_id_in_a_config_file_stays_a_hub_id_unless_that_folder_is_beside_it(tmp_path, monkeypatch):
    config = _folder_with_config(tmp_path, "backbone: openai/clip-vit-base-patch16\ntrain_file: x.parquet\n")
    _elsewhere(tmp_path, monkeypatch)
    assert run_cocoop.parse_args([str(config)])[0].clip_model_name_or_path == "openai/clip-vit-base-patch16"
    beside = config.parent / "openai" / "clip-vit-base-patch16"
    beside.mkdir(parents=True)
    assert run_cocoop.parse_args([str(config)])[0].clip_model_name_or_path == str(beside.resolve())


@pytest.mark.parametrize("value", ["./missing-clip", "../models/missing-clip", "a/b/c"])
def test_a_backbone_path_found_nowhere_is_one_line_naming_the_file_the_key_and_both_places(
    tmp_path, monkeypatch, value
):
    config = _folder_with_config(tmp_path, f"backbone: {value}\ntrain_file: ../data/train.parquet\n")
    work = _elsewhere(tmp_path, monkeypatch)
    beside = os.path.normpath(config.parent.resolve() / value)
    here = os.path.normpath(work / value)
    with pytest.raises(ValueError) as caught:
        run_cocoop.parse_args([str(config)])
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"config file {config}: `backbone: {value}`")
    assert "is not a Hub repo id" in message and beside in message and here in message


def test_a_path_written_relative_to_the_current_folder_is_refused_not_guessed(tmp_path, monkeypatch):
    # A config written before paths became relative to it (the demo config held `cocoop_hf_training/demo/...`).
    config = _folder_with_config(tmp_path, "train_file: data/train.parquet\n")
    monkeypatch.chdir(config.parent.parent)  # data/train.parquet exists here, not beside the config
    with pytest.raises(ValueError, match=r"^config file .*run\.yaml: `train_file: data/train\.parquet` names a path "
                       r"relative to the current folder .*write it relative to that folder, or absolute\.$"):  # fmt: skip
        run_cocoop.parse_args([str(config)])
    config.write_text("backbone: ./project/clip\ntrain_file: ../data/train.parquet\n")  # path-like, from here only
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"`backbone: \./project/clip` names a path relative to the current folder"):
        run_cocoop.parse_args([str(config)])


def test_a_run_started_with_a_relative_backbone_resumes_with_its_absolute_path(tmp_path, monkeypatch):
    folder_a = tmp_path / "a"
    (folder_a / "x").mkdir(parents=True)
    (folder_a / "train.parquet").write_bytes(b"")
    flags = ["--train_file", "train.parquet", "--output_dir", str(tmp_path / "out"), "--do_train"]
    monkeypatch.chdir(folder_a)
    started = run_cocoop.parse_args(["--backbone", "./x", *flags])
    assert started[0].clip_model_name_or_path == str(folder_a.resolve() / "x")
    monkeypatch.chdir(tmp_path)
    absolute_flags = [str(folder_a / "train.parquet") if flag == "train.parquet" else flag for flag in flags]
    resumed = run_cocoop.parse_args(["--backbone", str(folder_a / "x"), *absolute_flags])
    marker = {"run_settings": run_settings(*started)}
    check_resume_settings("checkpoint-1", marker, run_settings(*resumed))  # raises on any difference


def test_targets_file_entries_are_relative_to_the_targets_file(tmp_path, monkeypatch):
    data = tmp_path / "targets" / "dtd"
    (data / "images").mkdir(parents=True)
    (data / "split_zhou_DescribableTextures.json").write_text("{}")
    targets = tmp_path / "targets" / "targets.yaml"
    targets.write_text(
        "targets:\n  - {dataset_display_name: dtd, split_file: dtd/split_zhou_DescribableTextures.json, "
        "image_root: dtd/images}\n"
    )
    _elsewhere(tmp_path, monkeypatch)
    [target] = evaluate_transfer.read_targets(str(targets))
    assert target.split_file == str(data.resolve() / "split_zhou_DescribableTextures.json")
    assert target.image_root == str(data.resolve() / "images")
    targets.write_text("targets:\n  - {dataset_name: ./gone, eval_split: test}\n")
    with pytest.raises(ValueError, match=r"^--targets file .*targets\.yaml: target 0: `dataset_name: \./gone` is not"):
        evaluate_transfer.read_targets(str(targets))


def test_an_evaluation_config_reads_its_targets_file_beside_it(tmp_path, monkeypatch):
    config = _folder_with_config(tmp_path, "method: zeroshot\ntargets: targets.yaml\noutput_dir: out\n")
    (config.parent / "targets.yaml").write_text("targets: []\n")
    _elsewhere(tmp_path, monkeypatch)
    _, transfer_args = evaluate_transfer.parse_args([str(config)])
    assert transfer_args.targets == str(config.parent.resolve() / "targets.yaml")
    assert transfer_args.output_dir == "out"
