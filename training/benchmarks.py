"""The 15 benchmark datasets of CoOp/CoCoOp, read from the folders laid out as the official `DATASETS.md` describes.

One catalogue entry per dataset: its folder under the data root, how its train/val/test items are read, and its
zero-shot CLIP template. `load_benchmark(name, data_root)` returns

    {"train": [...], "val": [...], "test": [...], "class_names": [...]}

where every item is a `BenchmarkItem(path, label, class_name)` (a tuple) and `class_names[label]` is the official name.

Official reference: KaiyangZhou/CoOp `datasets/*.py` (one file per dataset, cited per rule below), Dassl
`dassl/data/datasets/base_dataset.py` (`DatasetBase.get_lab2cname`: class names are read off the training items,
labels sorted) and CoOp `trainers/zsclip.py` (`CUSTOM_TEMPLATES`).

Reading never writes: where the official code generates a missing `split_zhou_<Name>.json` on its first run and saves
it next to the data, `load_benchmark` refuses and names the file; `generate_split_file` is that generation as an
explicit step (the published split files remain the only way to reproduce the paper's splits exactly).
"""

import json
import os
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from transformers.utils import logging

from training.split_checks import read_json, read_text, read_wnid_lines, short, split_entries, text_lines


logger = logging.get_logger(__name__)

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


# --------------------------------------------------------------------------------------------------------------------
# Readers


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
            # generation is the explicit step `generate_split_file`.
            hint = (
                "or generate it once as the official code does on a first run: "
                "training.benchmarks.generate_split_file(name, data_root, seed)"
                if can_generate
                else "generating it from the original annotations is not supported here"
            )
            raise BenchmarkLayoutError(
                f"{name}: {split_file} missing at {split_path}; {DATASETS_MD} gives its download link ({hint})."
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


# --------------------------------------------------------------------------------------------------------------------
# Split generation, for datasets whose split file is missing. The official code draws from Python's global `random`
# right after Dassl's `set_random_seed(seed)` (`random.seed(seed)`); `random.Random(seed)` gives the same stream.
# Generated splits use Python's `round` (halves to even) on the same float products as the official code.

# datasets/caltech101.py
CALTECH101_IGNORED = ("BACKGROUND_Google", "Faces_easy")
CALTECH101_RENAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
# datasets/eurosat.py NEW_CNAMES (data)
EUROSAT_RENAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


def folder_splitter(
    dataset: str, image_subdir: str, ignored: tuple[str, ...] = (), renames: dict | None = None
) -> Callable[[Path, random.Random], dict]:
    """One folder per class, split per class into 50% train, 20% val, the rest test, train filled first
    (datasets/dtd.py `read_and_split_data`, also used by caltech101.py, eurosat.py and food101.py).

    Labels enumerate the class folders sorted case-sensitively after dropping `ignored`; `renames` apply to the
    names only, after sorting (so Caltech101 labels face, leopard, motorbike, accordion, airplane, ...). Images are
    shuffled in `os.listdir` order, as officially: the result depends on the file system's listing order.
    """
    renames = renames or {}

    def generate(dataset_dir: Path, rng: random.Random) -> dict:
        image_dir = _require(dataset_dir / image_subdir, f"image folder {image_subdir}/", dataset)
        splits = {"train": [], "val": [], "test": []}
        for label, folder in enumerate(_class_folders(image_dir, dataset, ignored=ignored)):
            images = [str(image_dir / folder / n) for n in os.listdir(image_dir / folder) if not n.startswith(".")]
            rng.shuffle(images)
            n_total = len(images)
            n_train, n_val = round(n_total * 0.5), round(n_total * 0.2)
            if n_train <= 0 or n_val <= 0 or n_total - n_train - n_val <= 0:
                raise BenchmarkLayoutError(
                    f"{dataset}: class folder {image_dir / folder} has {n_total} image(s); the official 50/20/30 "
                    "split needs at least one image in each of train, val and test (4 images or more)."
                )
            name = renames.get(folder, folder)
            bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n_total)}
            for split, (start, stop) in bounds.items():
                splits[split].extend(BenchmarkItem(p, label, name) for p in images[start:stop])
        return splits

    return generate


def _split_trainval(trainval: list[BenchmarkItem], rng: random.Random, dataset: str) -> tuple[list, list]:
    """20% of each class to val, val filled first, classes in order of first appearance
    (datasets/oxford_pets.py `OxfordPets.split_trainval`, also used by stanford_cars.py, sun397.py, ucf101.py)."""
    by_label: dict[int, list[int]] = {}
    for index, item in enumerate(trainval):
        by_label.setdefault(item.label, []).append(index)
    train, val = [], []
    for label, indices in by_label.items():
        n_val = round(len(indices) * 0.2)
        if n_val <= 0:
            raise BenchmarkLayoutError(
                f"{dataset}: class {label} has {len(indices)} train+val image(s); the official 80/20 split needs "
                "3 or more to give it a validation image."
            )
        rng.shuffle(indices)
        val.extend(trainval[i] for i in indices[:n_val])
        train.extend(trainval[i] for i in indices[n_val:])
    return train, val


def generate_oxford_pets(dataset_dir: Path, rng: random.Random) -> dict:
    """annotations/{trainval,test}.txt: "<image> <CLASS-ID> <SPECIES> <BREED-ID>"; label = CLASS-ID - 1, name =
    the image name without its trailing _<number>, lowercased (datasets/oxford_pets.py `read_data`)."""
    image_dir = _require(dataset_dir / "images", "images/", "OxfordPets")

    def read(list_name: str) -> list[BenchmarkItem]:
        list_path = _require(dataset_dir / "annotations" / list_name, f"annotations/{list_name}", "OxfordPets")
        items = []
        for line in _read_lines(list_path):
            fields = line.split(" ")
            if len(fields) != 4 or not fields[1].isdecimal():
                raise BenchmarkLayoutError(
                    f"{list_path}: line {short(line)} should read '<image> <id> <species> <breed>'."
                )
            image, class_id = fields[0], int(fields[1])
            name = "_".join(image.split("_")[:-1]).lower()
            items.append(BenchmarkItem(str(image_dir / f"{image}.jpg"), class_id - 1, name))
        return items

    train, val = _split_trainval(read("trainval.txt"), rng, "OxfordPets")
    return {"train": train, "val": val, "test": read("test.txt")}


def generate_sun397(dataset_dir: Path, rng: random.Random) -> dict:
    """ClassName.txt ("/a/abbey") gives the labels in file order; Training_01.txt / Testing_01.txt list
    "/a/abbey/sun_x.jpg"; the name drops the first letter folder and reverses the remaining parts, so
    "/o/office/indoor" reads "indoor office" (datasets/sun397.py `read_data`)."""
    dataset = "SUN397"
    image_dir = _require(dataset_dir / "SUN397", "SUN397/", dataset)
    classes = [line[1:] for line in _read_lines(_require(dataset_dir / "ClassName.txt", "ClassName.txt", dataset))]
    label_of = {c: i for i, c in enumerate(classes)}

    def read(list_name: str) -> list[BenchmarkItem]:
        list_path = _require(dataset_dir / list_name, list_name, dataset)
        items = []
        for line in _read_lines(list_path):
            rel = line[1:]
            folder = os.path.dirname(rel)
            if folder not in label_of:
                raise BenchmarkLayoutError(
                    f"{list_path}: class {short(folder)} of {short(line)} is not in ClassName.txt."
                )
            name = " ".join(reversed(folder.split("/")[1:]))
            items.append(BenchmarkItem(str(image_dir / rel), label_of[folder], name))
        return items

    train, val = _split_trainval(read("Training_01.txt"), rng, dataset)
    return {"train": train, "val": val, "test": read("Testing_01.txt")}


_CAMEL_WORD = re.compile(r"[A-Z][^A-Z]*")


def generate_ucf101(dataset_dir: Path, rng: random.Random) -> dict:
    """ucfTrainTestlist/classInd.txt ("1 ApplyEyeMakeup") gives label = number - 1; trainlist01.txt /
    testlist01.txt list "ApplyEyeMakeup/v_..._c01.avi [label]" (CRLF endings); the action is split at capitals and
    joined by "_" for both the name and the mid-frame folder: UCF-101-midframes/Apply_Eye_Makeup/v_..._c01.jpg
    (datasets/ucf101.py `read_data`)."""
    dataset = "UCF101"
    image_dir = _require(dataset_dir / "UCF-101-midframes", "UCF-101-midframes/", dataset)
    lists = dataset_dir / "ucfTrainTestlist"
    label_of = {}
    for line in _read_lines(_require(lists / "classInd.txt", "ucfTrainTestlist/classInd.txt", dataset)):
        number, _, action = line.partition(" ")
        if not number.isdecimal() or not action or " " in action:
            raise BenchmarkLayoutError(
                f"{lists / 'classInd.txt'}: line {short(line)} should read '<number> <Action>'."
            )
        label_of[action] = int(number) - 1

    def read(list_name: str) -> list[BenchmarkItem]:
        list_path = _require(lists / list_name, f"ucfTrainTestlist/{list_name}", dataset)
        items = []
        for line in _read_lines(list_path):
            action, _, video = line.split(" ")[0].partition("/")
            if action not in label_of:
                raise BenchmarkLayoutError(
                    f"{list_path}: action {short(action)} of {short(line)} is not in classInd.txt."
                )
            name = "_".join(_CAMEL_WORD.findall(action))
            path = image_dir / name / video.replace(".avi", ".jpg")
            items.append(BenchmarkItem(str(path), label_of[action], name))
        return items

    train, val = _split_trainval(read("trainlist01.txt"), rng, dataset)
    return {"train": train, "val": val, "test": read("testlist01.txt")}


# --------------------------------------------------------------------------------------------------------------------
# The catalogue. Folder names, image folders and split-file names: each dataset's file in CoOp datasets/;
# templates: trainers/zsclip.py CUSTOM_TEMPLATES.


def _with_split_file(
    name: str, folder: str, template: str, image_subdir: str, generator=None, split_name: str | None = None
) -> Benchmark:
    split_file = f"split_zhou_{split_name or name}.json"
    return Benchmark(
        name,
        folder,
        template,
        split_file_reader(name, image_subdir, split_file, can_generate=generator is not None),
        split_file=split_file,
        image_subdir=image_subdir,
        generator=generator,
    )


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("ImageNet", "imagenet", "a photo of a {}.", read_imagenet),  # datasets/imagenet.py
        # datasets/caltech101.py: paths relative to 101_ObjectCategories/
        _with_split_file(
            "Caltech101",
            "caltech-101",
            "a photo of a {}.",
            "101_ObjectCategories",
            folder_splitter("Caltech101", "101_ObjectCategories", CALTECH101_IGNORED, CALTECH101_RENAMES),
        ),
        # datasets/oxford_pets.py: paths relative to images/
        _with_split_file(
            "OxfordPets", "oxford_pets", "a photo of a {}, a type of pet.", "images", generate_oxford_pets
        ),
        # datasets/stanford_cars.py: read_split(split_path, self.dataset_dir), paths relative to the dataset folder;
        # generating needs the devkit .mat files (not read here)
        _with_split_file("StanfordCars", "stanford_cars", "a photo of a {}.", ""),
        # datasets/oxford_flowers.py: paths relative to jpg/; generating needs imagelabels.mat (not read here)
        _with_split_file("OxfordFlowers", "oxford_flowers", "a photo of a {}, a type of flower.", "jpg"),
        # datasets/food101.py: paths relative to images/; the release's own meta/ lists are not used
        _with_split_file(
            "Food101", "food-101", "a photo of {}, a type of food.", "images", folder_splitter("Food101", "images")
        ),
        Benchmark("FGVCAircraft", "fgvc_aircraft", "a photo of a {}, a type of aircraft.", read_fgvc_aircraft),
        # datasets/sun397.py: paths relative to SUN397/
        _with_split_file("SUN397", "sun397", "a photo of a {}.", "SUN397", generate_sun397),
        # datasets/dtd.py: paths relative to images/
        _with_split_file(
            "DescribableTextures", "dtd", "{} texture.", "images", folder_splitter("DescribableTextures", "images")
        ),
        # datasets/eurosat.py: paths relative to 2750/
        _with_split_file(
            "EuroSAT",
            "eurosat",
            "a centered satellite photo of {}.",
            "2750",
            folder_splitter("EuroSAT", "2750", renames=EUROSAT_RENAMES),
        ),
        # datasets/ucf101.py: paths relative to UCF-101-midframes/
        _with_split_file("UCF101", "ucf101", "a photo of a person doing {}.", "UCF-101-midframes", generate_ucf101),
        Benchmark("ImageNetV2", "imagenetv2", "a photo of a {}.", read_imagenet_v2, test_only=True),
        Benchmark(
            "ImageNetSketch",
            "imagenet-sketch",
            "a photo of a {}.",
            wnid_folder_reader("ImageNetSketch", "images"),
            test_only=True,
        ),
        Benchmark(
            "ImageNetA",
            "imagenet-adversarial",
            "a photo of a {}.",
            wnid_folder_reader("ImageNetA", "imagenet-a", ignored=("README.txt",)),
            test_only=True,
        ),
        Benchmark(
            "ImageNetR",
            "imagenet-rendition",
            "a photo of a {}.",
            wnid_folder_reader("ImageNetR", "imagenet-r", ignored=("README.txt",)),
            test_only=True,
        ),
    )
}

# Names used in the paper's tables and elsewhere for the same datasets.
ALIASES = {
    "flowers102": "OxfordFlowers",
    "dtd": "DescribableTextures",
    "fgvc_aircraft": "FGVCAircraft",
    "aircraft": "FGVCAircraft",
    "food-101": "Food101",
    "imagenet-v2": "ImageNetV2",
    "imagenet-sketch": "ImageNetSketch",
    "imagenet-a": "ImageNetA",
    "imagenet-r": "ImageNetR",
}


def get_benchmark(name: str) -> Benchmark:
    """The catalogue entry for an official name ("OxfordFlowers"), a folder name ("oxford_flowers") or an alias
    ("Flowers102", "DTD"), case-insensitively."""
    key = name.lower()
    for bench in BENCHMARKS.values():
        if key in (bench.name.lower(), bench.folder.lower()):
            return bench
    if key in ALIASES:
        return BENCHMARKS[ALIASES[key]]
    raise ValueError(f"Unknown benchmark {name!r}; choose one of {sorted(BENCHMARKS)}.")


def load_benchmark(name: str, data_root, check_files: bool = True) -> dict:
    """Items and class names of one benchmark under `data_root` (the `$DATA` folder of the official DATASETS.md).

    Returns {"train", "val", "test": [BenchmarkItem], "class_names": [str]}; class_names[label] is the official name
    (underscores kept, as in the official class lists; `zero_shot_prompts` turns them into prompts). Test-only sets
    (ImageNet-V2/-Sketch/-A/-R) have empty train and val. `check_files` verifies that every image file exists, as
    the official loader does.
    """
    bench = get_benchmark(name)
    dataset_dir = _require(Path(data_root) / bench.folder, f"dataset folder {bench.folder}/", bench.name)
    splits = bench.reader(dataset_dir)
    source = "test" if bench.test_only else "train"
    class_names = _class_names(splits, bench.name, source)
    if check_files:
        for split in ("train", "val", "test"):
            _check_files_exist(splits[split], bench.name, split)
    logger.info(
        "%s: %d classes, %d train / %d val / %d test images from %s",
        bench.name,
        len(class_names),
        len(splits["train"]),
        len(splits["val"]),
        len(splits["test"]),
        dataset_dir,
    )
    return {**splits, "class_names": class_names}


def zero_shot_prompts(name: str, class_names: list[str]) -> list[str]:
    """The official zero-shot CLIP prompts: the dataset's template with underscores in the names read as spaces
    (trainers/zsclip.py `ZeroshotCLIP.build_model`: `temp.format(c.replace("_", " "))`)."""
    template = get_benchmark(name).template
    return [template.format(c.replace("_", " ")) for c in class_names]


def generate_split_file(name: str, data_root, seed: int) -> Path:
    """Write `split_zhou_<Name>.json` for a dataset whose published split file is missing, as the official code does
    on its first run with `seed` (it then reuses that file for every seed). Refuses to overwrite an existing file.

    Supported: Caltech101, DescribableTextures, EuroSAT, Food101 (datasets/dtd.py splitter), OxfordPets, SUN397,
    UCF101 (their own readers + datasets/oxford_pets.py `split_trainval`). Only the published files reproduce the
    paper's splits exactly: folder-based generation shuffles images in the file system's listing order.
    """
    bench = get_benchmark(name)
    if bench.generator is None:
        reason = (
            f"its official split is {bench.split_file}, to be downloaded as {DATASETS_MD} says"
            if bench.split_file
            else "it has no split file: its official reader defines the splits"
        )
        raise ValueError(f"Generating a split for {bench.name} is not supported: {reason}.")
    dataset_dir = _require(Path(data_root) / bench.folder, f"dataset folder {bench.folder}/", bench.name)
    split_path = dataset_dir / bench.split_file
    if split_path.exists():
        raise FileExistsError(f"{split_path} exists; refusing to overwrite it (delete it to generate a new split).")
    splits = bench.generator(dataset_dir, random.Random(seed))
    _class_names(splits, bench.name, "train")
    for split in ("train", "val", "test"):
        _check_files_exist(splits[split], bench.name, split)
    image_dir = dataset_dir / bench.image_subdir
    # datasets/oxford_pets.py `save_split`: [path relative to the image folder, label, name]; Dassl write_json layout
    content = {
        split: [[os.path.relpath(item.path, image_dir), item.label, item.class_name] for item in items]
        for split, items in splits.items()
    }
    partial = split_path.with_name(split_path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=4, separators=(",", ": "))
    os.replace(partial, split_path)
    logger.info("%s: wrote %s (seed %d)", bench.name, split_path, seed)
    return split_path


# --------------------------------------------------------------------------------------------------------------------
# Label maps: the same images loaded from another source (a Hub dataset, parquet files, an imagefolder copy) carry the
# archive's raw label names (folder names, wnids, ...) in the source's own label order. `official_label_map` applies
# the rule the official reader applies to those raw names and re-indexes the labels to the official order.

_WNID = re.compile(r"n\d{8}")
# The datasets whose official label order is not a function of the class names (the devkit's / imagelabels.mat's /
# variants.txt's order): a source must carry it as its own label order; only the names are mapped.
SOURCE_ORDER_DATASETS = ("StanfordCars", "OxfordFlowers", "FGVCAircraft")
# The datasets whose labels are ImageNet wnids (or ImageNet-V2's class numbers), named through classnames.txt.
WNID_BENCHMARKS = ("ImageNet", "ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR")


@dataclass(frozen=True)
class LabelMap:
    """Official class names (label order) of the classes a source holds, and source label -> official label."""

    class_names: list[str]
    labels: dict[int, int]  # source labels missing here belong to classes the official reader ignores (rows dropped)
    dropped: list[str]  # raw names of those ignored classes


class LabelMapError(ValueError):
    """Raw label names of a source that match no official class of the named benchmark."""


class _NeedsClassnames(LabelMapError):
    pass


# Classes of each full dataset (the official class lists): a source with another count gets other labels and other
# base/new halves than the paper.
OFFICIAL_CLASS_COUNTS = {
    "ImageNet": 1000,
    "Caltech101": 100,
    "OxfordPets": 37,
    "StanfordCars": 196,
    "OxfordFlowers": 102,
    "Food101": 101,
    "FGVCAircraft": 100,
    "SUN397": 397,
    "DescribableTextures": 47,
    "EuroSAT": 10,
    "UCF101": 101,
    "ImageNetV2": 1000,
    "ImageNetSketch": 1000,
    "ImageNetA": 200,
    "ImageNetR": 200,
}


def _map_wnids(raw: str, names: dict[str, str] | None, dataset: str) -> tuple[str, str]:
    if names is None:
        raise _NeedsClassnames(
            f"--benchmark {dataset}: labels such as {short(raw)} are named through ImageNet's classnames.txt ('<wnid> "
            f"<class name>' per line, from {DATASETS_MD}): pass it with --imagenet_classnames."
        )
    if raw not in names:
        raise LabelMapError(f"{dataset}: {short(raw)} is not a wnid of classnames.txt.")
    return raw, names[raw]


def _lowercase_key(name: str, raw: str, pattern: str, expected: str) -> str:
    """`raw` lowercased with "_" for spaces, which must then match `pattern`; else the error names `expected`."""
    key = raw.strip().replace(" ", "_").lower()
    if not re.fullmatch(pattern, key):
        raise LabelMapError(f"{name}: label {short(raw)} is no {expected}.")
    return key


def _official_key_and_name(bench: Benchmark, raw: str, wnid_names: dict[str, str] | None):
    """(sort key of the official label order, official name) of one raw label name; None: a class the official
    reader ignores. Raises LabelMapError (naming the expected form) for a name that fits no official class."""
    name = bench.name
    if name in ("ImageNet", "ImageNetSketch", "ImageNetA", "ImageNetR"):
        # datasets/imagenet.py, imagenet_sketch.py, imagenet_a.py, imagenet_r.py: sorted wnid folders, names from
        # classnames.txt
        if not _WNID.fullmatch(raw):
            raise LabelMapError(
                f"{name}: label {short(raw)} is not a wnid; expected ImageNet wnids such as 'n01440764'."
            )
        return _map_wnids(raw, wnid_names, name)
    if name == "ImageNetV2":
        # datasets/imagenetv2.py: folder "i" is label i, named by the i-th line of classnames.txt
        if not raw.isdecimal():
            raise LabelMapError(
                f"{name}: label {short(raw)} is not a class number; expected the folder names '0'..'999'."
            )
        if wnid_names is None:
            _map_wnids(raw, None, name)
        ordered = list(wnid_names.values())
        if int(raw) >= len(ordered):
            raise LabelMapError(f"{name}: class number {raw} is beyond the {len(ordered)} lines of classnames.txt.")
        return int(raw), ordered[int(raw)]
    if name == "Caltech101":
        # datasets/caltech101.py: IGNORED_CATEGORIES dropped, NEW_CNAMES renames, sorted folder names
        if raw in CALTECH101_IGNORED:
            return None
        folder = {new: old for old, new in CALTECH101_RENAMES.items()}.get(raw, raw)
        return folder, CALTECH101_RENAMES.get(folder, folder)
    if name == "EuroSAT":
        # datasets/eurosat.py NEW_CNAMES over the sorted 2750/ folders
        folder = {new: old for old, new in EUROSAT_RENAMES.items()}.get(raw, raw)
        if folder not in EUROSAT_RENAMES:
            raise LabelMapError(
                f"EuroSAT: label {short(raw)} is no EuroSAT class; expected the 2750/ folder names "
                f"{list(EUROSAT_RENAMES)} (or their official names)."
            )
        return folder, EUROSAT_RENAMES[folder]
    if name == "OxfordPets":
        # datasets/oxford_pets.py read_data: the breed of the image name, lowercased; labels are the annotations'
        # CLASS-ID order, which numbers the breeds alphabetically ignoring case
        breed = _lowercase_key(
            name, raw, r"[a-z]+(_[a-z]+)*", "breed name; expected e.g. 'Abyssinian' or 'american_bulldog'"
        )
        return breed, breed
    if name == "SUN397":
        # datasets/sun397.py read_data: "/a/apartment_building/outdoor" -> "outdoor apartment_building"; labels in
        # ClassName.txt order, the sorted class paths
        parts = [part for part in raw.strip().split("/") if part]
        if parts and len(parts[0]) == 1 and len(parts) > 1:
            parts = parts[1:]  # the letter folder
        if not parts or any(" " in part for part in parts):
            raise LabelMapError(
                f"SUN397: label {short(raw)} is no SUN397 class path; expected the paths of ClassName.txt such as "
                "'/a/abbey' or 'a/apartment_building/outdoor'."
            )
        return "/".join(parts), " ".join(reversed(parts))
    if name == "UCF101":
        # datasets/ucf101.py read_data: the action split at capitals, joined by "_"; labels follow classInd.txt,
        # which lists the actions alphabetically ignoring case
        action = raw.strip().replace("_", "")
        if not re.fullmatch(r"[A-Z][A-Za-z]*", action):
            raise LabelMapError(
                f"UCF101: label {short(raw)} is no UCF101 action; expected CamelCase such as 'ApplyEyeMakeup' (or "
                "'Apply_Eye_Makeup')."
            )
        return action.lower(), "_".join(_CAMEL_WORD.findall(action))
    if name in ("DescribableTextures", "Food101"):
        # datasets/dtd.py (also food101.py): the sorted image folder names are the class names
        folder = _lowercase_key(
            name, raw, r"[a-z0-9]+(_[a-z0-9]+)*", "class folder name; expected e.g. 'apple_pie' / 'banded'"
        )
        return folder, folder
    if name == "StanfordCars":
        # datasets/stanford_cars.py read_data: the devkit name with its year moved to the front
        words = raw.split()
        if len(words) > 1 and re.fullmatch(r"\d{4}", words[0]):
            return None, raw
        if len(words) < 2 or not re.fullmatch(r"\d{4}", words[-1]):
            raise LabelMapError(
                f"StanfordCars: label {short(raw)} is no devkit class name; expected '<make> <model> <year>' such as "
                "'AM General Hummer SUV 2000'."
            )
        return None, " ".join([words[-1], *words[:-1]])
    if name in ("OxfordFlowers", "FGVCAircraft"):
        # oxford_flowers.py (cat_to_name.json), fgvc_aircraft.py (variants.txt): names as written
        if raw.strip().isdigit():
            raise LabelMapError(
                f"{name}: label {short(raw)} is a class number, not a name; give the class names in the official "
                "order (--class_names_file)."
            )
        return None, raw.strip()
    raise LabelMapError(f"{name}: no label map.")


def official_label_map(name: str, raw_names: list[str], wnid_names: dict[str, str] | None = None) -> LabelMap:
    """The official class names and labels for a source whose label `i` is named `raw_names[i]` (the archive's raw
    names: folder names, wnids, ...). `wnid_names` is ImageNet's classnames.txt ({wnid: name}, file order), needed by
    ImageNet and its variants. Labels are re-indexed to the official order; classes the official reader ignores
    (Caltech101's BACKGROUND_Google, Faces_easy) map nowhere.

    ImageNet and ImageNet-Sketch also take a source of exactly the classnames.txt classes whose labels are in wnid order under other
    names (a Hub copy's ClassLabel): label i is then the i-th wnid. StanfordCars, OxfordFlowers and FGVCAircraft keep
    the source's label order (their official order comes from metadata, not from the names).
    """
    bench = get_benchmark(name)
    raw_names = [str(raw) for raw in raw_names]
    if (
        bench.name in ("ImageNet", "ImageNetSketch")
        and wnid_names is not None
        and not any(_WNID.fullmatch(raw) for raw in raw_names)
        and len(raw_names) == len(wnid_names)
    ):
        logger.warning(
            "%s: the %d source labels are no wnids; reading them as the classnames.txt classes in wnid order "
            "(label 0 %r -> %r).",
            bench.name,
            len(raw_names),
            raw_names[0],
            wnid_names[min(wnid_names)],
        )
        raw_names = sorted(wnid_names)
    mapped, dropped, problems, needs_classnames = {}, [], [], None
    for label, raw in enumerate(raw_names):
        try:
            result = _official_key_and_name(bench, raw, wnid_names)
        except _NeedsClassnames as error:
            needs_classnames = needs_classnames or error
            continue
        except LabelMapError as error:
            problems.append(str(error))
            continue
        if result is None:
            dropped.append(raw)
        else:
            mapped[label] = result
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
        raise LabelMapError(f"--benchmark {bench.name}: label names that match no official class: {shown}")
    if needs_classnames is not None:
        raise needs_classnames
    counts = Counter(name for _, name in mapped.values())  # not list.count per name: quadratic in the class count
    twice = sorted(name for name, count in counts.items() if count > 1)
    if twice:
        raise LabelMapError(
            f"--benchmark {bench.name}: several source labels give the official class name(s) {twice[:5]}: one "
            "class must be one label."
        )
    if bench.name in SOURCE_ORDER_DATASETS:
        order = list(mapped)
    else:
        order = sorted(mapped, key=lambda label: mapped[label][0])
    if dropped:
        logger.info("%s: dropping the classes the official reader ignores: %s", bench.name, dropped)
    if len(mapped) != OFFICIAL_CLASS_COUNTS[bench.name]:
        logger.warning(
            "%s: the source has %d classes, the official dataset %d: labels and base/new halves are those of the "
            "classes present, not the paper's.",
            bench.name,
            len(mapped),
            OFFICIAL_CLASS_COUNTS[bench.name],
        )
    return LabelMap(
        class_names=[mapped[label][1] for label in order],
        labels={label: official for official, label in enumerate(order)},
        dropped=dropped,
    )


def read_wnid_names(path) -> dict[str, str]:
    """ImageNet's classnames.txt as {wnid: class name} in file order (datasets/imagenet.py `read_classnames`)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist; it is ImageNet's classnames.txt of {DATASETS_MD}.")
    return _read_wnid_names(path)
