"""Official label maps: the same images loaded from another source (a Hub dataset, parquet files, an imagefolder copy)
carry the archive's raw label names (folder names, wnids, ...) in the source's own label order. `official_label_map`
applies the rule the official reader applies to those raw names and re-indexes the labels to the official order;
`read_wnid_names` reads ImageNet's classnames.txt that names the wnids.

Official reference: KaiyangZhou/CoOp `datasets/*.py` (the `read_data` of each dataset, cited per rule).
"""

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from transformers.utils import logging

from cocoop_hf_training.benchmark_catalogue import get_benchmark
from cocoop_hf_training.benchmark_layout import DATASETS_MD, Benchmark, _read_wnid_names
from cocoop_hf_training.benchmark_splitters import _CAMEL_WORD, CALTECH101_IGNORED, CALTECH101_RENAMES, EUROSAT_RENAMES
from cocoop_hf_training.split_checks import short


logger = logging.get_logger(__name__)

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

    ImageNet and ImageNet-Sketch also take a source of exactly the classnames.txt classes whose labels are in wnid
    order under other names (a Hub copy's ClassLabel): label i is then the i-th wnid. StanfordCars, OxfordFlowers and
    FGVCAircraft keep the source's label order (their official order comes from metadata, not from the names).
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
