"""The official split generation, for datasets whose published split file is missing, and the official class renames
that go with it (Caltech101, EuroSAT). A generator takes the dataset folder and a `random.Random(seed)` and returns
{"train", "val", "test"} lists of `BenchmarkItem`; `cocoop_hf_training.benchmarks.generate_split_file` writes the result.

Official reference: KaiyangZhou/CoOp `datasets/dtd.py` (`read_and_split_data`), `datasets/oxford_pets.py`
(`split_trainval`) and the readers of oxford_pets.py, sun397.py and ucf101.py.
"""

import os
import random
import re
from collections.abc import Callable
from pathlib import Path

from cocoop_hf_training.benchmark_layout import (
    BenchmarkItem,
    BenchmarkLayoutError,
    _class_folders,
    _read_lines,
    _require,
)
from cocoop_hf_training.split_checks import short


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
