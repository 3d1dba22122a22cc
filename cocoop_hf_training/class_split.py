"""The classes of a protocol: base / new halves (CoOp `datasets/oxford_pets.py` `OxfordPets.subsample_classes`),
the class names of each task, which classes have images, and the rows of a task relabelled."""

import math
import os

from transformers.utils import logging

from cocoop_hf_training.data_arguments import DataArguments


logger = logging.get_logger(__name__)


def warn_if_training_split_is_evaluated(args: DataArguments) -> None:
    """Training and evaluating on the same images is allowed (e.g. a smoke test) but must not pass unnoticed."""
    two_files = args.split_file is None and args.train_file and args.eval_file
    same_file = two_files and os.path.realpath(args.train_file) == os.path.realpath(args.eval_file)
    if args.train_split == args.eval_split and (same_file or not two_files):
        logger.warning(
            "--train_split and --eval_split are both %r: the evaluation includes the training images, so its "
            "accuracy is optimistic.",
            args.train_split,
        )
    elif same_file:
        logger.warning(
            "--train_file and --eval_file are the same file %s (splits %r and %r): the evaluation includes the "
            "training images, so its accuracy is optimistic.",
            args.train_file,
            args.train_split,
            args.eval_split,
        )


def subsample_classes(labels, subsample: str) -> dict[int, int]:
    """
    Official `OxfordPets.subsample_classes`: sorted labels, base = first ceil(n/2), new = the rest; returns the
    relabelling {old label: new label from 0} of the chosen half ('all' keeps every label).
    """
    if subsample not in ("all", "base", "new"):
        raise ValueError(f"subsample must be 'all', 'base' or 'new', got {subsample!r}.")
    labels = sorted(set(int(y) for y in labels))
    if subsample == "all":
        selected = labels
    else:
        m = math.ceil(len(labels) / 2)
        selected = labels[:m] if subsample == "base" else labels[m:]
    return {old: new for new, old in enumerate(selected)}


def class_names_per_task(class_names: list[str], relabels: dict) -> dict[str, list[str]]:
    """
    Names of the classes of each task (`base`/`new` or `all`) from the relabelling of `subsample_classes`. A name in
    both base and new is an error: the "new" class would have been trained on.
    """
    names = {task: [class_names[old] for old in relabel] for task, relabel in relabels.items()}
    if "base" in names and "new" in names:
        shared = sorted(set(names["base"]) & set(names["new"]))
        if shared:
            olds = [*relabels["base"], *relabels["new"]]
            labels = {name: [old for old in olds if class_names[old] == name] for name in shared[:5]}
            raise ValueError(
                f"class name(s) {shared[:5]} are in both the base and the new classes (labels {labels}), so the new "
                "classes are not all new: give every class a distinct name (--class_names_file or the ClassLabel)."
            )
    return names


def protocol_relabels(num_classes: int, protocol: str) -> dict[str, dict[int, int]]:
    """
    The relabelling of each task of `protocol` (`base` and `new`, or `all`) over the whole class list, labels
    0..num_classes-1, whichever splits hold their images. The official code halves the labels of the train split
    (CoOp datasets/oxford_pets.py `subsample_classes(train, val, test)` reads `args[0]`, the few-shot train list),
    which there holds every class; taking the class list instead keeps a new class that has no training images (new
    classes need none) in the new half, with its test images, and gives the same halves to a run that loads only
    the train or only the test split. A trained class without training images is refused by `class_coverage`.
    """
    tasks = ("base", "new") if protocol == "base_to_new" else ("all",)
    return {task: subsample_classes(range(num_classes), task) for task in tasks}


def class_coverage(
    args: DataArguments, data: dict, class_names: list[str], trained: dict[int, int] | None = None
) -> dict:
    """
    Which classes of the class list have no images in a loaded split (warned, and recorded in results.json with the
    class count and, under --benchmark, the official one that a partial archive falls short of).

    `trained` (the relabelling of the task trained on, when the train split is loaded for training): each of its
    classes must have training images, else ValueError naming them. The official code never trains for such a
    class: Dassl builds the class list from the train split's labels (dassl/data/datasets/base_dataset.py
    `DatasetBase.__init__`: `get_num_classes(train_x)`, `get_lab2cname(train_x)`), so a class without training
    images is no class there, and a prompt trained without one example of its class would pass for a base result.
    """
    without = {}
    for split, ds in data.items():
        present = set(ds["label"])
        without[split] = [class_names[label] for label in range(len(class_names)) if label not in present]
    if trained is not None:
        present = set(data[args.train_split]["label"])
        untrained = [class_names[label] for label in trained if label not in present]
        if untrained:
            task = "base" if args.protocol == "base_to_new" else "trained"
            raise ValueError(
                f"{len(untrained)} of the {len(trained)} {task} classes have no images in the training split "
                f"{args.train_split!r}: {untrained[:10]}{' ...' if len(untrained) > 10 else ''}. The model would be "
                "trained for them without one example; the official code never does (Dassl DatasetBase takes the "
                "class list from the train split's labels). Add training images of them, or remove them from every "
                "split of the dataset."
            )
    for split, names in without.items():
        if names:
            logger.warning(
                "%s: %d of the %d classes have no images in split %r: %s%s. They stay in the class list (scored as "
                "candidates%s).",
                args.display_name,
                len(names),
                len(class_names),
                split,
                names[:10],
                " ..." if len(names) > 10 else "",
                ", untrained: new classes need no training images" if trained and split == args.train_split else "",
            )
    record = {"num_classes": len(class_names), "without_images": {s: names for s, names in without.items() if names}}
    if args.benchmark is not None:
        from cocoop_hf_training.benchmarks import OFFICIAL_CLASS_COUNTS

        record["official_num_classes"] = OFFICIAL_CLASS_COUNTS[args.benchmark]
    return record


def select_labels(ds, relabel: dict[int, int], indices=None):
    """Rows of `ds` (optionally within `indices`) whose label is in `relabel`, as (dataset, kept row indices)."""
    labels = ds["label"]
    candidates = range(len(labels)) if indices is None else indices
    kept = [i for i in candidates if labels[i] in relabel]
    return ds.select(kept), kept
