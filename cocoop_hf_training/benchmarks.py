"""The 15 benchmark datasets of CoOp/CoCoOp, read from the folders laid out as the official `DATASETS.md` describes.

One catalogue entry per dataset: its folder under the data root, how its train/val/test items are read, and its
zero-shot CLIP template. `load_benchmark(name, data_root)` returns

    {"train": [...], "val": [...], "test": [...], "class_names": [...]}

where every item is a `BenchmarkItem(path, label, class_name)` (a tuple) and `class_names[label]` is the official name.

Official reference: KaiyangZhou/CoOp `datasets/*.py` (one file per dataset, cited per rule in the modules below), Dassl
`dassl/data/datasets/base_dataset.py` (`DatasetBase.get_lab2cname`: class names are read off the training items,
labels sorted) and CoOp `trainers/zsclip.py` (`CUSTOM_TEMPLATES`).

Reading never writes: where the official code generates a missing `split_zhou_<Name>.json` on its first run and saves
it next to the data, `load_benchmark` refuses and names the file; `generate_split_file` is that generation as an
explicit step (the published split files remain the only way to reproduce the paper's splits exactly).

The work is split by job, each re-exported here: `benchmark_layout` (item and entry types, the layout error, the
shared checks), `benchmark_readers` (split files and the datasets' own folders), `benchmark_splitters` (the official
split generation), `benchmark_catalogue` (`BENCHMARKS`, `ALIASES`, `get_benchmark`) and `label_maps`
(`official_label_map` for sources that carry the archive's raw label names). This module loads a benchmark, writes a
missing split file and builds the zero-shot prompts.
"""

import json
import os
import random
from pathlib import Path

from transformers.utils import logging

from cocoop_hf_training.benchmark_catalogue import ALIASES, BENCHMARKS, get_benchmark
from cocoop_hf_training.benchmark_layout import (
    DATASETS_MD,
    Benchmark,
    BenchmarkItem,
    BenchmarkLayoutError,
    _check_files_exist,
    _class_names,
    _require,
)
from cocoop_hf_training.benchmark_readers import (
    read_fgvc_aircraft,
    read_imagenet,
    read_imagenet_v2,
    split_file_reader,
    wnid_folder_reader,
)
from cocoop_hf_training.benchmark_splitters import (
    CALTECH101_IGNORED,
    CALTECH101_RENAMES,
    EUROSAT_RENAMES,
    folder_splitter,
    generate_oxford_pets,
    generate_sun397,
    generate_ucf101,
)
from cocoop_hf_training.label_maps import (
    OFFICIAL_CLASS_COUNTS,
    SOURCE_ORDER_DATASETS,
    WNID_BENCHMARKS,
    LabelMap,
    LabelMapError,
    official_label_map,
    read_wnid_names,
)


__all__ = [
    "ALIASES",
    "BENCHMARKS",
    "CALTECH101_IGNORED",
    "CALTECH101_RENAMES",
    "DATASETS_MD",
    "EUROSAT_RENAMES",
    "OFFICIAL_CLASS_COUNTS",
    "SOURCE_ORDER_DATASETS",
    "WNID_BENCHMARKS",
    "Benchmark",
    "BenchmarkItem",
    "BenchmarkLayoutError",
    "LabelMap",
    "LabelMapError",
    "folder_splitter",
    "generate_oxford_pets",
    "generate_split_file",
    "generate_sun397",
    "generate_ucf101",
    "get_benchmark",
    "load_benchmark",
    "official_label_map",
    "read_fgvc_aircraft",
    "read_imagenet",
    "read_imagenet_v2",
    "read_wnid_names",
    "split_file_reader",
    "wnid_folder_reader",
    "zero_shot_prompts",
]

logger = logging.get_logger(__name__)


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
