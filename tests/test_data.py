"""cocoop_hf_training/data.py: few-shot sampling, the official base/new split, transforms, loading and its errors."""

import io
import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from cocoop_hf_training.data import (
    DataArguments,
    ImageTransform,
    build_transforms,
    class_coverage,
    class_names_per_task,
    drop_or_raise_corrupt,
    few_shot_indices,
    load_splits,
    protocol_relabels,
    select_few_shot,
    subsample_classes,
)


REPO = Path(__file__).resolve().parent.parent
DEMO_DATA = REPO / "cocoop_hf_training" / "demo" / "cifar10_demo"
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
    with caplog.at_level(logging.WARNING, logger="cocoop_hf_training.fewshot"):
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


@pytest.mark.parametrize("count", [0, -3])
def test_max_eval_samples_must_be_positive(count):
    """0 ended in 'torch.cat(): expected a non-empty list of Tensors' after training."""
    with pytest.raises(ValueError, match="--max_eval_samples must be a positive number"):
        demo_args(max_eval_samples=count)


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


def test_halves_are_taken_over_the_whole_class_list():
    # 10 classes: the halves are 0-4 and 5-9 whichever labels the loaded splits happen to hold.
    assert protocol_relabels(10, "base_to_new") == {
        "base": {0: 0, 1: 1, 2: 2, 3: 3, 4: 4},
        "new": {5: 0, 6: 1, 7: 2, 8: 3, 9: 4},
    }
    assert protocol_relabels(3, "all") == {"all": {0: 0, 1: 1, 2: 2}}


def _labels(*labels):
    from datasets import Dataset

    return Dataset.from_dict({"label": list(labels)})


def test_class_coverage_keeps_new_classes_without_training_images(caplog):
    names = ["a", "b", "c", "d"]
    args = DataArguments(dataset_name="x", dataset_display_name="toy")
    data = {"train": _labels(0, 1, 2, 0), "test": _labels(0, 1, 2, 3, 3)}
    base = protocol_relabels(4, "base_to_new")["base"]
    with caplog.at_level(logging.WARNING, logger="cocoop_hf_training.data"):
        record = class_coverage(args, data, names, base)
    # 'd' is a new class: it needs no training images, and stays in the list (and its test images in the new set).
    assert record == {"num_classes": 4, "without_images": {"train": ["d"]}}
    assert "toy: 1 of the 4 classes have no images in split 'train': ['d']" in caplog.text
    # A trained (base) class without training images is refused, naming it.
    data["train"] = _labels(0, 2, 3)
    with pytest.raises(
        ValueError, match=r"1 of the 2 base classes have no images in the training split 'train': \['b'\]"
    ):
        class_coverage(args, data, names, base)
    # --protocol all trains on every class.
    args = DataArguments(dataset_name="x", protocol="all")
    with pytest.raises(ValueError, match=r"1 of the 4 trained classes .*\['b'\].*Dassl"):
        class_coverage(args, data, names, protocol_relabels(4, "all")["all"])
    # Evaluation only (no training split): nothing to refuse; the class missing from the test split is recorded.
    assert class_coverage(args, {"test": _labels(0, 1, 3)}, names) == {
        "num_classes": 4,
        "without_images": {"test": ["c"]},
    }


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
    assert data["train"].column_names == ["image", "label", "source_row"] and len(data["train"]) == 200
    assert data["train"]["source_row"] == list(range(200))
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
    with pytest.raises(ValueError, match=r"1 corrupt image\(s\) in train: truncated\.png \(row 3 of split 'train'\)"):
        drop_or_raise_corrupt(data["train"], "train", skip=False, disable_progress=True)
    kept, skipped = drop_or_raise_corrupt(data["train"], "train", skip=True, disable_progress=True)
    assert skipped == 1 and len(kept) == 3


# ------------------------------------------------------------------------------------------- class-name files


def _int_label_file(tmp_path, num_classes=3, per_class=2):
    from datasets import Value

    rows = [
        {"img": {"bytes": _png(), "path": f"{i}.png"}, "label": i % num_classes}
        for i in range(num_classes * per_class)
    ]
    return _write_parquet(tmp_path / "ints.parquet", rows, Value("int64"))


def test_class_names_file_may_be_a_json_list(tmp_path):
    path = _int_label_file(tmp_path)
    for name, text in (("names.json", '["tench", "goldfish", "great white shark"]'),
                       ("names.txt", '[\n  "tench",\n  "goldfish",\n  "great white shark"\n]\n')):  # fmt: skip
        names_file = tmp_path / name
        names_file.write_text(text)
        _, names = load_splits(
            DataArguments(train_file=path, image_column="img", class_names_file=str(names_file)), ["train"]
        )
        assert names == ["tench", "goldfish", "great white shark"]
    for text, message in (('["tench", "goldfish",', "looks like JSON but does not parse"),
                          ('{"0": "tench"}', "must hold a list of non-empty strings"),
                          ('["tench", 3, "x"]', "must hold a list of non-empty strings")):  # fmt: skip
        names_file = tmp_path / "bad.json"
        names_file.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_splits(
                DataArguments(train_file=path, image_column="img", class_names_file=str(names_file)), ["train"]
            )


def test_class_names_file_must_fit_the_labels(tmp_path):
    from datasets import ClassLabel, Value

    names_file = tmp_path / "names.txt"
    # Integer labels 0..2: four names are one too many, two too few.
    path = _int_label_file(tmp_path)
    names_file.write_text("a\nb\nc\nd\n")
    with pytest.raises(ValueError, match=r"has 4 class names, but the data has 3 classes.*\['d'\]"):
        load_splits(DataArguments(train_file=path, image_column="img", class_names_file=str(names_file)), ["train"])
    names_file.write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"2 class names, but the data has at least 3 classes"):
        load_splits(DataArguments(train_file=path, image_column="img", class_names_file=str(names_file)), ["train"])
    # A ClassLabel of 2 classes and a names file of 3.
    rows = [{"img": {"bytes": _png(), "path": f"{i}.png"}, "label": i % 2} for i in range(4)]
    classlabel = _write_parquet(tmp_path / "cl.parquet", rows, ClassLabel(names=["x", "y"]))
    names_file.write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match=r"has 3 class names, but the data has 2 classes \(the ClassLabel"):
        load_splits(
            DataArguments(train_file=classlabel, image_column="img", class_names_file=str(names_file)), ["train"]
        )
    names_file.write_text("a\nb\n")
    assert load_splits(
        DataArguments(train_file=classlabel, image_column="img", class_names_file=str(names_file)), ["train"]
    )[1] == ["a", "b"]
    # String labels: a name no label uses is a class the data does not have.
    rows = [{"img": {"bytes": _png(), "path": f"{i}.png"}, "label": name} for i, name in enumerate(["cat", "dog"])]
    strings = _write_parquet(tmp_path / "strings.parquet", rows, Value("string"))
    names_file.write_text("dog\ncat\nbird\n")
    with pytest.raises(ValueError, match=r"has 3 class names, but the data has 2 distinct labels.*\['bird'\]"):
        load_splits(DataArguments(train_file=strings, image_column="img", class_names_file=str(names_file)), ["train"])


def test_a_name_in_both_base_and_new_is_an_error():
    names = ["cat", "dog", "crane", "bird", "crane", "fish"]
    relabels = {task: subsample_classes(range(6), task) for task in ("base", "new")}
    with pytest.raises(
        ValueError, match=r"\['crane'\] are in both the base and the new classes.*\{'crane': \[2, 4\]\}"
    ):
        class_names_per_task(names, relabels)
    names[4] = "crane (machine)"
    assert class_names_per_task(names, relabels) == {
        "base": ["cat", "dog", "crane"],
        "new": ["bird", "crane (machine)", "fish"],
    }
    assert class_names_per_task(["a", "a"], {"all": {0: 0, 1: 1}}) == {"all": ["a", "a"]}


# ------------------------------------------------------------------------------------------- files and rows


def test_train_and_eval_files_with_different_columns_are_named(tmp_path):
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    rows = [{"img": {"bytes": _png(), "path": f"{i}.png"}, "label": i % 2} for i in range(4)]
    train = _write_parquet(tmp_path / "train.parquet", rows, ClassLabel(names=["a", "b"]))
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b"])})
    renamed = [{"image": row["img"], "label": row["label"]} for row in rows]
    Dataset.from_list(renamed, features=features).to_parquet(str(tmp_path / "test.parquet"))
    args = DataArguments(train_file=train, eval_file=str(tmp_path / "test.parquet"), image_column="img")
    with pytest.raises(ValueError) as error:
        load_splits(args, ["train", "test"])
    message = str(error.value)
    assert "image column 'img' is not in split 'test'" in message and "test.parquet" in message
    assert "train.parquet): ['img', 'label']" in message and "test.parquet): ['image', 'label']" in message
    assert "--image_column" in message
    # Each file alone loads; with the same columns both load together.
    assert len(load_splits(args, ["train"])[0]["train"]) == 4


def test_train_and_eval_files_need_two_split_names(tmp_path):
    args = demo_args(eval_split="train")
    with pytest.raises(
        ValueError, match="are both split 'train': give --train_split and --eval_split different names"
    ):
        load_splits(args, ["train"])


def test_corrupt_image_is_reported_by_its_row_in_the_file(tmp_path):
    from datasets import ClassLabel

    rows = [{"img": {"bytes": _png(), "path": f"ok{i}.png"}, "label": i % 2} for i in range(10)]
    rows[7] = {"img": {"bytes": _png()[:40], "path": "truncated.png"}, "label": 1}
    path = _write_parquet(tmp_path / "corrupt.parquet", rows, ClassLabel(names=["a", "b"]))
    data, _ = load_splits(DataArguments(train_file=path, image_column="img"), ["train"])
    subset = data["train"].select([9, 7, 1]).shuffle(seed=0)  # a few-shot subset: the bad image is not at index 7
    with pytest.raises(ValueError, match=r"truncated\.png \(row 7 of split 'train'\)"):
        drop_or_raise_corrupt(subset, "train", skip=False, disable_progress=True)
    kept, skipped = drop_or_raise_corrupt(subset, "train", skip=True, disable_progress=True)
    assert skipped == 1 and sorted(kept["source_row"]) == [1, 9]
    # Without file names (bytes only), the row still tells which image.
    rows[7] = {"img": {"bytes": _png()[:40], "path": None}, "label": 1}
    path = _write_parquet(tmp_path / "nameless.parquet", rows, ClassLabel(names=["a", "b"]))
    data, _ = load_splits(DataArguments(train_file=path, image_column="img"), ["train"])
    with pytest.raises(ValueError, match=r"in train: row 7 of split 'train':"):
        drop_or_raise_corrupt(data["train"].select([7]), "train", skip=False, disable_progress=True)
