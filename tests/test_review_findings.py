"""Review findings on issue 16 (hostile-user review of numbers, limits and messages): each case fails on the code
before the fix and passes after."""

import json
import struct

import pytest

from cocoop_hf.limits_cocoop import check_backbone_config, check_clip_checkpoint, check_weights_cover_config
from cocoop_hf_training.run_cocoop import CoCoOpTrainer, main

from .test_training import argv


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(CoCoOpTrainer, "train", lambda *a, **kw: pytest.fail("training started before the error"))


def _huge_clip_dict() -> dict:
    """Every field within its own limit, the whole a ~10^11-parameter CLIP."""
    tower = {"num_hidden_layers": 64, "hidden_size": 8192, "intermediate_size": 32768, "num_attention_heads": 128}
    return {"text_config": dict(tower), "vision_config": dict(tower), "projection_dim": 8192}


def test_total_parameter_cap_refuses_huge_random_clip(tmp_path):
    with pytest.raises(ValueError, match=r"describes a CLIP of [\d,]+ parameters, more than the 5,000,000,000"):
        check_backbone_config(_huge_clip_dict())
    # The --random_init_clip path: the folder's config is checked with weights=False (no weight file to compare).
    (tmp_path / "config.json").write_text(json.dumps(_huge_clip_dict()))
    with pytest.raises(ValueError, match=r"config\.json: .*more than the 5,000,000,000"):
        check_clip_checkpoint(tmp_path, weights=False)


def test_total_parameter_cap_allows_vit_bigg():
    """ViT-bigG/14 (~2.5 B parameters), the largest public CLIP, stays within the cap."""
    check_backbone_config(
        {
            "text_config": {"num_hidden_layers": 32, "hidden_size": 1280, "intermediate_size": 5120,
                            "num_attention_heads": 20},
            "vision_config": {"num_hidden_layers": 48, "hidden_size": 1664, "intermediate_size": 8192,
                              "num_attention_heads": 16, "patch_size": 14},
            "projection_dim": 1280,
        }
    )  # fmt: skip


def test_safetensors_header_declaring_more_bytes_than_the_file_is_refused(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [10**11], "data_offsets": [0, 4 * 10**11]}}).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(OSError, match=r"model\.safetensors: its header declares 400,000,000,000 bytes .* only 0 "):
        check_weights_cover_config(tmp_path, {}, "config.json")


def test_id2label_count_is_said_as_classes():
    config = {"id2label": {str(i): "x" for i in range(100_001)}}
    with pytest.raises(ValueError, match=r"id2label` must hold at most 100,000 classes .*it holds 100,001 classes"):
        check_backbone_config(config)


def test_deeply_nested_model_config_is_one_line(tmp_path):
    from cocoop_hf import CoCoOpConfig

    (tmp_path / "config.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ValueError, match=r"config\.json nests its JSON too deeply"):
        CoCoOpConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"config\.json nests its JSON too deeply"):
        check_clip_checkpoint(tmp_path, weights=False)


# ------------------------------------------------------------------------------------------- class names as CLIP reads them


def test_class_names_file_with_names_clip_reads_alike_is_refused(tmp_path):
    from cocoop_hf_training.split_checks import read_class_names_file

    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nCat\n")
    with pytest.raises(
        ValueError, match=r"names\.txt: the class name 'Cat' \(line 3\) reads as the same words as 'cat' \(line 1\)"
    ):
        read_class_names_file(names)
    names.write_text('["cat", "dog", "big_cat", "Big Cat"]')  # '_' is a space, as in the official code
    with pytest.raises(
        ValueError, match=r"'Big Cat' \(position 3\) reads as the same words as 'big_cat' \(position 2"
    ):
        read_class_names_file(names)


def test_split_file_labels_named_alike_for_clip_are_refused(tmp_path):
    from cocoop_hf_training.data import DataArguments, load_splits

    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (images / name).write_bytes(b"")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [["a.jpg", 0, "cat"], ["b.jpg", 1, "CAT "]]}))
    args = DataArguments(split_file=str(split), image_root=str(images))
    with pytest.raises(ValueError, match=r"split\.json: the class name 'CAT ' \(label 1\) reads as the same words"):
        load_splits(args, ["train"])


def test_split_file_with_a_huge_class_name_shows_a_short_prefix(tmp_path):
    from cocoop_hf_training.data import DataArguments, load_splits

    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (images / name).write_bytes(b"")
    split = tmp_path / "split.json"
    huge = "x" * 3_000_000
    split.write_text(json.dumps({"train": [["a.jpg", 0, "cat"], ["b.jpg", 0, huge], ["c.jpg", 1, "dog"]]}))
    args = DataArguments(split_file=str(split), image_root=str(images))
    with pytest.raises(ValueError) as error:
        load_splits(args, ["train"])
    assert "one label must have one class name" in str(error.value) and len(str(error.value)) < 500


# ------------------------------------------------------------------------------------------- report.py inputs


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{bad json", r"results file .*bad\.json is not valid JSON \(Expecting property name"),
        ('{"runs": 5}', r"bad\.json: `runs` must be a list of run objects, got 5"),
        ('{"runs": [5]}', r"bad\.json: `runs` must be a list of run objects"),
        ('"a string with runs in it"', r"bad\.json is not a results file of cocoop_hf_training/run_cocoop\.py: it holds"),
        ("[" * 100_000 + "]" * 100_000, r"bad\.json nests its JSON too deeply"),
    ],
)
def test_report_reads_results_files_with_one_checked_reader(tmp_path, content, message):
    from cocoop_hf_training.report import main as report_main

    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(ValueError, match=message):
        report_main([str(bad), "--output_dir", str(tmp_path / "summary")])
    assert not (tmp_path / "summary").exists()


# ------------------------------------------------------------------------------------------- negative rates


@pytest.mark.parametrize("flag", ["--learning_rate", "--weight_decay", "--warmup_lr"])
def test_negative_rates_are_refused_by_name(tmp_path, flag, no_training):
    output_dir = tmp_path / "out"
    with pytest.raises(ValueError, match=rf"^{flag} must be zero or more, got -1\.0: "):
        main(argv(output_dir, flag, "-1"))
    config = tmp_path / "recipe.yaml"
    config.write_text(f"{flag[2:]}: -1.0\n")
    with pytest.raises(ValueError, match=rf"^config file .*recipe\.yaml: `{flag[2:]}` must be zero or more"):
        main([str(config), *argv(output_dir)])
    assert not output_dir.exists()


# ------------------------------------------------------------------------------------------- diverged training


@pytest.fixture(scope="module")
def checkpointed_run(tmp_path_factory):
    """A 1-epoch tiny run with its checkpoint-5 and saved full model; tests work on copies."""
    output_dir = tmp_path_factory.mktemp("checkpointed") / "run"
    main(argv(output_dir, "--save_strategy", "epoch", evaluate=False))
    return output_dir


def test_training_that_diverges_is_refused_and_nothing_saved(tmp_path):
    output_dir = tmp_path / "run"
    with pytest.raises(ValueError, match=r"^training diverged: the trained prompt learner: tensor '.*' holds [\d,]+ "
                       r"non-finite value\(s\).*lower --learning_rate"):  # fmt: skip
        main(argv(output_dir, "--learning_rate", "1e30", "--num_train_epochs", "2"))
    assert not (output_dir / "model.safetensors").exists() and not (output_dir / "results.json").exists()


def test_resume_from_a_checkpoint_with_non_finite_optimizer_state_is_refused(checkpointed_run, tmp_path):
    import shutil

    import torch

    checkpoint = tmp_path / "saved" / "checkpoint-5"
    shutil.copytree(checkpointed_run / "checkpoint-5", checkpoint)
    optimizer = checkpoint / "optimizer.pt"
    state = torch.load(optimizer, weights_only=True)
    buffers = [entry["momentum_buffer"] for entry in state["state"].values() if "momentum_buffer" in entry]
    assert buffers, "SGD with momentum keeps a buffer per tensor"
    buffers[0].view(-1)[0] = float("nan")
    torch.save(state, optimizer)
    with pytest.raises(
        ValueError, match=r"cannot resume: the optimizer state .*optimizer\.pt holds non-finite values"
    ):
        main(argv(tmp_path / "run", "--resume_from_checkpoint", str(checkpoint), evaluate=False))


def test_full_model_with_non_finite_prompt_learner_weights_is_refused_at_load(checkpointed_run, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from cocoop_hf import CoCoOpModel

    folder = tmp_path / "model"
    shutil.copytree(checkpointed_run, folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    tensors["prompt_learner.ctx"].view(-1)[2] = float("inf")
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"model\b.*: tensor 'prompt_learner\.ctx' holds 1 non-finite value"):
        CoCoOpModel.from_pretrained(folder)
