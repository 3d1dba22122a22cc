"""The pieces every benchmark reader shares: the item and catalogue-entry types, the layout error, and the checks of
the official folder layout (`DATASETS.md`) that readers and split generators apply alike.

Official reference: Dassl `dassl/data/datasets/base_dataset.py` (`Datum`: every image path is a file;
`DatasetBase.get_lab2cname`: class names are read off the training items, labels sorted) and `listdir_nohidden`.
"""

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from cocoop_hf_training.split_checks import read_text, read_wnid_lines, short, text_lines


DATASETS_MD = "the official CoOp DATASETS.md (https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md)"


class BenchmarkItem(NamedTuple):
    path: str
    label: int
    class_name: str


class BenchmarkLayoutError(FileNotFoundError, ValueError):
    """A folder or file of the official layout is missing, or its content does not fit the official format."""


@dataclass(frozen=True)
class Benchmark:
    """One dataset of the paper: where it lives under the data root and how to read it."""

    name: str  # the official `DATASET.NAME` (Dassl registry name)
    folder: str  # `dataset_dir` of the official class, relative to the data root
    template: str  # official zero-shot prompt, `CUSTOM_TEMPLATES[name]` in trainers/zsclip.py
    reader: Callable[[Path], dict]  # dataset folder -> {"train", "val", "test"} lists of BenchmarkItem
    test_only: bool = False  # ImageNet-V2/-Sketch/-A/-R: evaluation only, no train or val
    split_file: str | None = None  # split_zhou_<Name>.json, for the datasets read from a split file
    image_subdir: str | None = None  # folder the split file's paths are relative to
    generator: Callable[[Path, random.Random], dict] | None = None  # the official split generation, if supported


# --------------------------------------------------------------------------------------------------------------------
# Helpers


def _require(path: Path, what: str, dataset: str) -> Path:
    if not path.exists():
        raise BenchmarkLayoutError(
            f"{dataset}: {what} missing at {path}; {DATASETS_MD} describes where it goes and where to download it."
        )
    return path


def _read_lines(path: Path) -> list[str]:
    # universal newlines: the UCF101 lists ship with CRLF endings; blank lines carry no entry
    try:
        return [line for _, line in text_lines(read_text(path, "list file"))]
    except ValueError as error:  # not UTF-8: named by read_text
        raise BenchmarkLayoutError(str(error)) from None


def _check_files_exist(items: list[BenchmarkItem], dataset: str, split: str) -> None:
    # Dassl's Datum asserts that every image path is a file (dassl/data/datasets/base_dataset.py Datum.__init__)
    missing = [item.path for item in items if not os.path.isfile(item.path)]
    if missing:
        shown = ", ".join(missing[:3])
        raise BenchmarkLayoutError(
            f"{dataset}: {len(missing)} image(s) of the {split} split are missing, e.g. {shown}; "
            f"check the image folder against {DATASETS_MD}."
        )


def _class_names(splits: dict, dataset: str, source: str) -> list[str]:
    """Names in label order, read off the items as Dassl does (`DatasetBase.get_lab2cname` on train_x).

    Stricter than Dassl: every label 0..n-1 must have items in `source`, each label one name, and the other splits
    only labels and names that `source` has; otherwise the class list would silently differ from the official one.
    """
    names: dict[int, str] = {}
    for split in ("train", "val", "test"):
        for item in splits[split]:
            known = names.get(item.label)
            if known is None:
                if split != source:
                    raise BenchmarkLayoutError(
                        f"{dataset}: label {item.label} ({short(item.class_name)}) occurs in {split} but has no "
                        f"{source} images; the official class list is read from the {source} split."
                    )
                names[item.label] = item.class_name
            elif known != item.class_name:
                raise BenchmarkLayoutError(
                    f"{dataset}: label {item.label} is named both {short(known)} and {short(item.class_name)} "
                    f"({split} split, {item.path}); one label must have one class name."
                )
    if not names:
        raise BenchmarkLayoutError(f"{dataset}: the {source} split has no images.")
    # At most len(names) labels are present, so the first ten absent ones lie below len(names) + 10: bounded however
    # large a label of the file (a reader that took it from a list file's digits) may be.
    absent = [label for label in range(min(max(names) + 1, len(names) + 10)) if label not in names]
    if absent or min(names) < 0:
        raise BenchmarkLayoutError(
            f"{dataset}: labels must run 0..{max(names)} with images for each class; "
            f"labels without {source} images: {absent[:10]}{' ...' if len(absent) > 10 else ''}"
            + (f"; negative label {min(names)}" if min(names) < 0 else "")
        )
    return [names[label] for label in range(len(names))]


def _class_folders(image_dir: Path, dataset: str, ignored: tuple[str, ...] = ()) -> list[str]:
    """Class folders, sorted case-sensitively as Python sorts str (official `listdir_nohidden(..., sort=True)`).

    Hidden entries are skipped like Dassl's `listdir_nohidden`; a stray file among the class folders is an error
    (the official code would take it for a class and fail later).
    """
    entries = sorted(e for e in os.listdir(image_dir) if not e.startswith(".") and e not in ignored)
    stray = [e for e in entries if not (image_dir / e).is_dir()]
    if stray:
        raise BenchmarkLayoutError(
            f"{dataset}: {image_dir} should hold only class folders, found file(s) {stray[:5]}; remove them."
        )
    return entries


def _folder_images(class_dir: Path) -> list[str]:
    # The official code keeps `os.listdir` order here (file-system dependent, so no run elsewhere can reproduce it);
    # sorted names give the same set of images in a reproducible order.
    return sorted(str(class_dir / name) for name in os.listdir(class_dir) if not name.startswith("."))


def _read_wnid_names(path: Path) -> dict[str, str]:
    """`classnames.txt`: "<wnid> <class name with spaces>" per line, in file order (datasets/imagenet.py
    `ImageNet.read_classnames`); a repeated wnid is refused (`split_checks.read_wnid_names`)."""
    try:
        return read_wnid_lines(path)
    except ValueError as error:
        raise BenchmarkLayoutError(str(error)) from None
