"""Readers of the benchmarks whose splits come from files: a published split file `split_zhou_<Name>.json`, or the
dataset's own folders and lists (ImageNet and its variants, FGVCAircraft). Each returns {"train", "val", "test"} lists
of `BenchmarkItem`; reading never writes.

Official reference: KaiyangZhou/CoOp `datasets/*.py` (one file per dataset, cited per reader).
"""

import os
import shlex
from collections.abc import Callable
from pathlib import Path

from cocoop_hf_training.benchmark_layout import (
    DATASETS_MD,
    BenchmarkItem,
    BenchmarkLayoutError,
    _class_folders,
    _folder_images,
    _read_lines,
    _read_wnid_names,
    _require,
)
from cocoop_hf_training.split_checks import read_json, short, split_entries


def split_file_reader(name: str, image_subdir: str, split_file: str, can_generate: bool) -> Callable[[Path], dict]:
    """Datasets with a published split file `split_zhou_<Name>.json`: {"train"|"val"|"test": [[path, label, name]]}.

    Paths are relative to `image_subdir` of the dataset folder ("" for StanfordCars, whose paths start with
    cars_train/ or cars_test/): datasets/oxford_pets.py `OxfordPets.read_split(split_path, path_prefix)` and the
    `path_prefix` each dataset passes to it. Labels are `int(label)`, names are the entries' names as written.
    """

    def read(dataset_dir: Path) -> dict:
        split_path = dataset_dir / split_file
        if not split_path.is_file():
            # The official code generates and saves the split here on a first run; reading never writes, so
            # generation is the explicit command `cocoop-hf generate-split` (benchmarks.generate_split_file). Every
            # dataset folder is one name under the data root (benchmark_catalogue), so the root is its parent.
            command = f"cocoop-hf generate-split --benchmark {name} --data_root {shlex.quote(str(dataset_dir.parent))}"
            hint = (
                f"or generate it once, as the official code does on a first run: {command} (only the published file "
                "reproduces the paper's split exactly)"
                if can_generate
                else "generating it from the original annotations is not supported here"
            )
            raise BenchmarkLayoutError(
                f"{name}: {split_file} missing at {split_path}; download it ({DATASETS_MD} gives the link), {hint}."
            )
        image_dir = _require(dataset_dir / image_subdir, f"image folder {image_subdir or '.'}/", name)
        try:
            raw = read_json(split_path, "split file")
            if not isinstance(raw, dict) or not {"train", "val", "test"} <= set(raw):
                raise ValueError(f"split file {split_path} must be a JSON object with keys train, val and test.")
            # Every entry checked (labels bounded by the entry count, no image twice in a split) before use.
            entries = split_entries(split_path, raw, ("train", "val", "test"), "split file")
        except ValueError as error:
            raise BenchmarkLayoutError(str(error)) from None
        return {
            split: [BenchmarkItem(str(image_dir / rel), label, name) for rel, label, name in items]
            for split, items in entries.items()
        }

    return read


def read_imagenet(dataset_dir: Path) -> dict:
    """ImageNet: sorted wnid folders of images/train and images/val, names from classnames.txt; the val set is the
    test set and also the validation set (datasets/imagenet.py: `super().__init__(train_x=train, val=test,
    test=test)`). The official `preprocessed.pkl` cache is not read: pickles are not loaded here."""
    names = _read_wnid_names(_require(dataset_dir / "classnames.txt", "classnames.txt", "ImageNet"))
    splits = {}
    for split, folder in (("train", "train"), ("test", "val")):
        image_dir = _require(dataset_dir / "images" / folder, f"images/{folder}/", "ImageNet")
        # datasets/imagenet.py read_data: only directories, sorted, enumerated -> labels
        wnids = sorted(e.name for e in os.scandir(image_dir) if e.is_dir())
        splits[split] = _wnid_items(image_dir, wnids, names, "ImageNet")
    splits["val"] = list(splits["test"])
    return splits


def _wnid_items(image_dir: Path, wnids: list[str], names: dict[str, str], dataset: str) -> list[BenchmarkItem]:
    unknown = [w for w in wnids if w not in names]
    if unknown:
        raise BenchmarkLayoutError(
            f"{dataset}: folder(s) {unknown[:5]} in {image_dir} are not in classnames.txt; use the classnames.txt "
            f"of {DATASETS_MD} (1,000 ImageNet wnids)."
        )
    items = []
    for label, wnid in enumerate(wnids):
        items.extend(BenchmarkItem(p, label, names[wnid]) for p in _folder_images(image_dir / wnid))
    return items


def wnid_folder_reader(dataset: str, image_subdir: str, ignored: tuple[str, ...] = ()) -> Callable[[Path], dict]:
    """ImageNet-Sketch/-A/-R: test only. Labels enumerate the sorted class folders present (200 for -A/-R, so
    label 0 is the first of *their* wnids, not ImageNet's), names come from the dataset's own copy of ImageNet's
    classnames.txt; -A/-R skip their README.txt (datasets/imagenet_sketch.py, imagenet_a.py, imagenet_r.py
    `read_data`, `TO_BE_IGNORED`)."""

    def read(dataset_dir: Path) -> dict:
        names = _read_wnid_names(_require(dataset_dir / "classnames.txt", "classnames.txt", dataset))
        image_dir = _require(dataset_dir / image_subdir, f"{image_subdir}/", dataset)
        wnids = _class_folders(image_dir, dataset, ignored=ignored)
        return {"train": [], "val": [], "test": _wnid_items(image_dir, wnids, names, dataset)}

    return read


def read_imagenet_v2(dataset_dir: Path) -> dict:
    """ImageNet-V2 (matched frequency): folders are named by label number "0".."999"; label i is folder str(i) and
    takes the i-th line of classnames.txt, i.e. numeric order, not the text order of the folder names
    (datasets/imagenetv2.py `read_data`: `for label in range(1000)`)."""
    dataset = "ImageNetV2"
    names = list(_read_wnid_names(_require(dataset_dir / "classnames.txt", "classnames.txt", dataset)).values())
    subdir = "imagenetv2-matched-frequency-format-val"
    image_dir = _require(dataset_dir / subdir, f"{subdir}/", dataset)
    folders = set(_class_folders(image_dir, dataset))
    expected = {str(label) for label in range(len(names))}
    if folders != expected:
        raise BenchmarkLayoutError(
            f"{dataset}: {image_dir} must hold exactly the folders 0..{len(names) - 1} (one per line of "
            f"classnames.txt); missing {sorted(expected - folders, key=int)[:5]}, unexpected "
            f"{sorted(folders - expected)[:5]}."
        )
    items = []
    for label, name in enumerate(names):
        items.extend(BenchmarkItem(p, label, name) for p in _folder_images(image_dir / str(label)))
    return {"train": [], "val": [], "test": items}


def read_fgvc_aircraft(dataset_dir: Path) -> dict:
    """FGVCAircraft: classes are the lines of variants.txt in file order; images_variant_{train,val,test}.txt hold
    "<image id> <variant with spaces>", the image is images/<id>.jpg (datasets/fgvc_aircraft.py)."""
    dataset = "FGVCAircraft"
    variants = _read_lines(_require(dataset_dir / "variants.txt", "variants.txt", dataset))
    label_of = {name: label for label, name in enumerate(variants)}
    image_dir = _require(dataset_dir / "images", "images/", dataset)
    splits = {}
    for split in ("train", "val", "test"):
        list_path = _require(dataset_dir / f"images_variant_{split}.txt", f"images_variant_{split}.txt", dataset)
        items = []
        for line in _read_lines(list_path):
            image_id, _, variant = line.partition(" ")
            if variant not in label_of:
                raise BenchmarkLayoutError(
                    f"{list_path}: variant {short(variant)} (line {short(line)}) is not in variants.txt."
                )
            items.append(BenchmarkItem(str(image_dir / f"{image_id}.jpg"), label_of[variant], variant))
        splits[split] = items
    return splits
