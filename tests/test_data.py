"""training/data.py: few-shot sampling, the official base/new split, transforms, loading and its errors."""

import io
import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from training.data import (
    DataArguments,
    ImageTransform,
    build_transforms,
    drop_or_raise_corrupt,
    few_shot_indices,
    harmonic_mean,
    load_splits,
    select_few_shot,
    subsample_classes,
)


REPO = Path(__file__).resolve().parent.parent
DEMO_DATA = REPO / "training" / "demo" / "cifar10_demo"
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def demo_args(**kwargs):
    values = dict(train_file=str(DEMO_DATA / "train.parquet"), eval_file=str(DEMO_DATA / "test.parquet"))
    values.update(image_column="img")
    values.update(kwargs)
    return DataArguments(**values)


# ------------------------------------------------------------------------------------------- few-shot


def test_few_shot_is_seeded_per_class_and_keeps_small_classes(caplog):
    labels = [0] * 10 + [1] * 3 + [2] * 8
    first = select_few_shot(labels, 4, seed=1)
    assert first == select_few_shot(labels, 4, seed=1)
    assert first != select_few_shot(labels, 4, seed=2)
    chosen = [labels[i] for i in first]
    assert chosen.count(0) == 4 and chosen.count(2) == 4
    assert sorted(i for i in first if labels[i] == 1) == [10, 11, 12]  # fewer than K: all kept
    assert len(set(first)) == len(first)
    with caplog.at_level(logging.WARNING, logger="training.data"):
        select_few_shot(labels, 4, seed=1)
    assert "class 1 has only 3 images" in caplog.text


def test_few_shot_does_not_depend_on_global_rng():
    import random

    labels = [i % 5 for i in range(100)]
    random.seed(123)
    torch.manual_seed(123)
    first = select_few_shot(labels, 3, seed=7)
    random.seed(999)
    torch.manual_seed(999)
    assert select_few_shot(labels, 3, seed=7) == first


@pytest.mark.parametrize("shots", [0, -1])
def test_few_shot_rejects_non_positive_k(shots):
    with pytest.raises(ValueError, match="num_shots"):
        select_few_shot([0, 1], shots, seed=1)
    with pytest.raises(ValueError, match="--num_shots must be a positive number"):
        demo_args(num_shots=shots)


def test_few_shot_indices_are_saved_and_reused(tmp_path):
    labels = [i % 4 for i in range(40)]
    indices = few_shot_indices(labels, 2, 1, tmp_path, "train", overwrite=False)
    saved = json.loads((tmp_path / "fewshot_indices.json").read_text())
    assert saved["indices"] == indices and saved["num_shots"] == 2 and saved["seed"] == 1
    # A re-run reads the file back, even if the sampler would now draw differently.
    saved["indices"] = list(reversed(indices))
    (tmp_path / "fewshot_indices.json").write_text(json.dumps(saved))
    assert few_shot_indices(labels, 2, 1, tmp_path, "train", overwrite=False) == list(reversed(indices))
    with pytest.raises(ValueError, match="overwrite_output_dir"):
        few_shot_indices(labels, 3, 1, tmp_path, "train", overwrite=False)
    assert few_shot_indices(labels, 3, 1, tmp_path, "train", overwrite=True) == select_few_shot(labels, 3, 1)


# ------------------------------------------------------------------------------------------- base / new


def test_subsample_classes_is_the_official_rule():
    assert subsample_classes(range(10), "base") == {0: 0, 1: 1, 2: 2, 3: 3, 4: 4}
    assert subsample_classes(range(10), "new") == {5: 0, 6: 1, 7: 2, 8: 3, 9: 4}
    # Odd count: base = ceil(n / 2).
    assert list(subsample_classes(range(7), "base")) == [0, 1, 2, 3]
    assert subsample_classes(range(7), "new") == {4: 0, 5: 1, 6: 2}
    # Labels are sorted first and relabelled from 0; duplicates and order in the input do not matter.
    assert subsample_classes([9, 2, 5, 2, 9], "base") == {2: 0, 5: 1}
    assert subsample_classes([9, 2, 5, 2, 9], "new") == {9: 0}
    assert subsample_classes([3, 1], "all") == {1: 0, 3: 1}
    with pytest.raises(ValueError, match="subsample"):
        subsample_classes([0, 1], "half")


def test_harmonic_mean():
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(0.0, 0.0) == 0.0


# ------------------------------------------------------------------------------------------- transforms


def test_transforms_follow_the_official_config():
    from torchvision import transforms as T
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=[0.1, 0.2, 0.3]
    )
    train, evaluation = build_transforms(processor)
    crop = train.transforms[0]
    assert isinstance(crop, T.RandomResizedCrop) and crop.scale == (0.08, 1.0) and crop.size == (32, 32)
    assert crop.interpolation == T.InterpolationMode.BICUBIC
    assert isinstance(train.transforms[1], T.RandomHorizontalFlip)
    resize, center = evaluation.transforms[:2]
    assert isinstance(resize, T.Resize) and resize.interpolation == T.InterpolationMode.BICUBIC
    assert isinstance(center, T.CenterCrop) and center.size == (32, 32)
    assert list(evaluation.transforms[-1].mean) == [0.1, 0.2, 0.3]
    image = Image.new("RGB", (64, 48), (255, 0, 0))
    out = ImageTransform(evaluation, {3: 0})({"image": [image], "label": [3]})
    assert out["labels"] == [0] and out["pixel_values"][0].shape == (3, 32, 32)
    # Red, normalised with the processor's mean/std.
    assert out["pixel_values"][0][0, 0, 0].item() == pytest.approx((1.0 - 0.1) / processor.image_std[0], rel=1e-5)


def test_eval_pipeline_is_identical_with_workers():
    from torch.utils.data import DataLoader
    from transformers import CLIPImageProcessor, default_data_collator

    data, _ = load_splits(demo_args(), ["test"])
    _, evaluation = build_transforms(
        CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    )
    dataset = data["test"].select(range(12)).with_transform(ImageTransform(evaluation))
    batches = []
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_size=4, num_workers=workers, collate_fn=default_data_collator)
        batches.append(torch.cat([batch["pixel_values"] for batch in loader]))
    assert torch.equal(batches[0], batches[1])


# ------------------------------------------------------------------------------------------- loading


def test_load_splits_reads_classlabel_names():
    data, names = load_splits(demo_args(), ["train", "test"])
    assert names == CIFAR10
    assert data["train"].column_names == ["image", "label"] and len(data["train"]) == 200
    assert isinstance(data["train"][0]["image"], Image.Image)


def test_missing_columns_list_the_existing_ones():
    with pytest.raises(ValueError, match=r"image column 'picture'.*\['img', 'label'\]"):
        load_splits(demo_args(image_column="picture"), ["train"])
    with pytest.raises(ValueError, match=r"label column 'y'.*\['img', 'label'\]"):
        load_splits(demo_args(label_column="y"), ["train"])
    with pytest.raises(ValueError, match="split.*'validation'.*not found"):
        load_splits(demo_args(), ["validation"])


def _write_parquet(path, rows, label_feature):
    from datasets import Dataset, Features
    from datasets import Image as ImageFeature

    features = Features({"img": ImageFeature(), "label": label_feature})
    Dataset.from_list(rows, features=features).to_parquet(str(path))
    return str(path)


def _png(color=(0, 128, 255)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_string_labels_need_class_names(tmp_path):
    from datasets import Value

    rows = [{"img": {"bytes": _png(), "path": f"{i}.png"}, "label": name} for i, name in enumerate(["cat", "dog"])]
    path = _write_parquet(tmp_path / "strings.parquet", rows, Value("string"))
    with pytest.raises(ValueError, match="not class indices, and no class names were given"):
        load_splits(DataArguments(train_file=path, image_column="img"), ["train"])
    names_file = tmp_path / "names.txt"
    names_file.write_text("dog\ncat\n")
    data, names = load_splits(
        DataArguments(train_file=path, image_column="img", class_names_file=str(names_file)), ["train"]
    )
    assert names == ["dog", "cat"] and data["train"]["label"] == [1, 0]


def test_integer_labels_without_names_or_out_of_range(tmp_path):
    from datasets import Value

    rows = [{"img": {"bytes": _png(), "path": f"{i}.png"}, "label": i} for i in range(3)]
    path = _write_parquet(tmp_path / "ints.parquet", rows, Value("int64"))
    with pytest.raises(ValueError, match="no class names were found.*--class_names_file"):
        load_splits(DataArguments(train_file=path, image_column="img"), ["train"])
    names_file = tmp_path / "names.txt"
    names_file.write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"labels \[2\].*not class indices in \[0, 2\)"):
        load_splits(DataArguments(train_file=path, image_column="img", class_names_file=str(names_file)), ["train"])


def test_split_file_loads_and_missing_files_are_counted(tmp_path):
    root = tmp_path / "images"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    for name in ("cat/1.png", "cat/2.png", "dog/1.png"):
        (root / name).write_bytes(_png())
    split = {
        "train": [["cat/1.png", 0, "cat"], ["dog/1.png", 1, "dog"]],
        "val": [],
        "test": [["cat/2.png", 0, "cat"], ["dog/1.png", 1, "dog"]],
    }
    split_file = tmp_path / "split_zhou_Pets.json"
    split_file.write_text(json.dumps(split))
    args = DataArguments(split_file=str(split_file), image_root=str(root))
    data, names = load_splits(args, ["train", "test"])
    assert names == ["cat", "dog"] and data["test"]["label"] == [0, 1] and args.display_name == "Pets"
    split["test"] += [["dog/missing1.png", 1, "dog"], ["dog/missing2.png", 1, "dog"]]
    split_file.write_text(json.dumps(split))
    with pytest.raises(ValueError, match=r"2 of 4 images of split 'test'.*do not exist.*missing1\.png"):
        load_splits(args, ["train", "test"])
    with pytest.raises(ValueError, match="--image_root"):
        DataArguments(split_file=str(split_file))


def test_corrupt_images_are_named_or_skipped(tmp_path):
    from datasets import ClassLabel

    rows = [{"img": {"bytes": _png(), "path": f"ok{i}.png"}, "label": i % 2} for i in range(3)]
    rows.append({"img": {"bytes": _png()[:40], "path": "truncated.png"}, "label": 1})
    path = _write_parquet(tmp_path / "corrupt.parquet", rows, ClassLabel(names=["a", "b"]))
    data, _ = load_splits(DataArguments(train_file=path, image_column="img"), ["train"])
    with pytest.raises(ValueError, match=r"1 corrupt image\(s\) in train: truncated\.png \(row 3\)"):
        drop_or_raise_corrupt(data["train"], "train", skip=False, disable_progress=True)
    kept, skipped = drop_or_raise_corrupt(data["train"], "train", skip=True, disable_progress=True)
    assert skipped == 1 and len(kept) == 3
