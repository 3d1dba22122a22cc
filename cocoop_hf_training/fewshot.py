"""Few-shot subsets as the official code draws them, the official few-shot files read as data, and the record of what a
run trained on (`fewshot_indices.json`).

Official reference: Dassl `dassl/data/datasets/base_dataset.py` (`DatasetBase.generate_fewshot_dataset`,
`split_dataset_by_label`) and CoOp `datasets/*.py` (the `split_fewshot/shot_K-seed_S.pkl` files and `min(K, 4)`
validation shots).
"""

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

from transformers.utils import logging

from cocoop_hf_training.data_arguments import DataArguments, fewshot_file_name
from cocoop_hf_training.data_loading import SOURCE_ROW_COLUMN
from cocoop_hf_training.split_checks import short


logger = logging.get_logger(__name__)

FEWSHOT_INDICES_NAME = "fewshot_indices.json"


# Name and version of the few-shot sampling rule, recorded in fewshot_indices.json: indices drawn by another rule
# (e.g. per sorted label from a private stream, as before v1) are refused rather than reused.
FEWSHOT_RULE = "dassl-generate_fewshot_dataset/v1"
# Official CoOp datasets draw the validation list with min(K, 4) images per class (datasets/oxford_pets.py etc.).
MAX_VAL_SHOTS = 4


def _dassl_draw(rng: random.Random, labels, num_shots: int, split: str) -> list[int]:
    """
    One `generate_fewshot_dataset` pass over one list (Dassl `dassl/data/datasets/base_dataset.py`):
    `split_dataset_by_label` groups items in a defaultdict, so classes come in order of first appearance (not
    sorted); a class with at least K items gets `random.sample(items, K)` (consuming random numbers even for K of K);
    a smaller class keeps all its items in order and consumes nothing (`repeat=False`, the default of Dassl's
    current generate_fewshot_dataset, which the CoOp datasets call without `repeat`). `random.sample` picks
    positions from the list length alone, so sampling row indices picks the same items as sampling Datum objects.
    """
    by_label = {}
    for index, label in enumerate(labels):
        by_label.setdefault(int(label), []).append(index)
    chosen = []
    for label, items in by_label.items():
        if len(items) >= num_shots:
            chosen.extend(rng.sample(items, num_shots))
        else:
            logger.warning(
                "class %d has only %d images in %s (< %d shots): keeping all of them.",
                label,
                len(items),
                split,
                num_shots,
            )
            chosen.extend(items)
    return chosen


def _check_shots(num_shots) -> None:
    if isinstance(num_shots, bool) or not isinstance(num_shots, int) or num_shots <= 0:
        raise ValueError(f"num_shots must be a positive integer (images per class), got {num_shots!r}.")


def dassl_few_shot(train_labels, num_shots: int, seed: int, val_labels=None) -> tuple[list[int], list[int] | None]:
    """
    Few-shot (train, val) row indices exactly as the official code draws them: CoOp's `train.py` calls Dassl's
    `set_random_seed(cfg.SEED)` (`random.seed` first, then numpy and torch; nothing draws from `random` before the
    dataset is built), then e.g. `OxfordPets.__init__` runs `generate_fewshot_dataset(train, num_shots=K)` and
    `generate_fewshot_dataset(val, num_shots=min(K, 4))` on the same stream (ImageNet: train only, `val_labels=None`).
    The stream is a private `random.Random(seed)`, which yields the same numbers as a seeded `random` module without
    reading or changing the caller's global state. Assumes the split already exists: the official code generating a
    split (no split file) consumes the stream before this draw.
    """
    _check_shots(num_shots)
    rng = random.Random(seed)
    train = _dassl_draw(rng, train_labels, num_shots, "the training split")
    val = None if val_labels is None else _dassl_draw(rng, val_labels, min(num_shots, MAX_VAL_SHOTS), "validation")
    return train, val


def select_few_shot(labels, num_shots: int, seed: int) -> list[int]:
    """
    Row indices of the few-shot training list as the official run with seed `seed` draws it (see `dassl_few_shot`):
    classes in order of first appearance, each as `random.sample` returned it; a class with fewer than K images keeps
    all of them, with a warning. Depends only on `labels`, K and the seed, never on workers or global state.
    """
    return dassl_few_shot(labels, num_shots, seed)[0]


# Image folder of the two benchmarks whose catalogue entry has none (no split file): the official `image_dir` joined
# with the train folder for ImageNet (datasets/imagenet.py `read_data(classnames, "train")`) and FGVCAircraft's flat
# `images` folder (datasets/fgvc_aircraft.py).
_TRAIN_IMAGE_FOLDERS = {"ImageNet": "images/train", "FGVCAircraft": "images"}


@dataclass
class OfficialFewShot:
    """The rows of the train split an official few-shot file names, in its order, and where they come from."""

    indices: list[int]
    source: dict  # {"path": absolute path of the file, "sha256": of its bytes}
    val: list | None  # its "val" list as [impath, label, class name] (ImageNet's files have none)


def _path_parts(path: str) -> tuple[str, ...]:
    # The file holds the paths of the machine that wrote it, which may have used either separator.
    return tuple(part for part in re.split(r"[\\/]+", path) if part)


def official_fewshot_rows(args: DataArguments, train_dataset, class_names: list[str], seed: int) -> OfficialFewShot:
    """
    The rows of `train_dataset` (the benchmark's train split as `load_benchmark_splits` returns it) that the official
    few-shot file `args.fewshot_file` lists in its "train" list, in that order. The file stores absolute paths of the
    machine that wrote it (`<root>/<dataset folder>/<image folder>/<rest>`); `<rest>` must name exactly one image of
    the train split under --data_root, with the file's label and class name. The file is read as data only
    (`cocoop_hf.official_pickle.load_official_fewshot_split`); K and the seed in its name must be the run's.
    """
    from datasets import Image

    from cocoop_hf.official_pickle import load_official_fewshot_split
    from cocoop_hf_training.benchmarks import get_benchmark

    path = args.fewshot_file
    bench = get_benchmark(args.benchmark)
    shots, file_seed = fewshot_file_name(path)
    if file_seed is not None and file_seed != seed:
        raise ValueError(
            f"--fewshot_file {path} was drawn with seed {file_seed} (seed_{file_seed}), but this run's few-shot seed "
            f"(--data_seed, else --seed) is {seed}: pass --seed {file_seed}, or the file shot_K-seed_{seed}.pkl."
        )
    content = Path(path).read_bytes()
    try:
        split = load_official_fewshot_split(path)
    except OSError as error:
        raise ValueError(f"--fewshot_file: {error}") from None
    train = split["train"]
    if not train:
        raise ValueError(f"--fewshot_file {path} lists no training images.")
    folder = (bench.folder, *_path_parts(bench.image_subdir or _TRAIN_IMAGE_FOLDERS.get(bench.name, "")))
    image_dir = Path(args.data_root).joinpath(*folder)
    rows = {}  # path relative to the image folder -> rows of the train split
    for row, image in enumerate(train_dataset.cast_column("image", Image(decode=False))["image"]):
        try:
            rel = Path(image["path"]).relative_to(image_dir).parts
        except ValueError:
            continue
        rows.setdefault(rel, []).append(row)
    labels = train_dataset["label"]
    where = f"the {bench.name} train split under {image_dir}"
    indices = []
    item_of_row = {}  # row -> the index of the item of the file that named it
    for i, item in enumerate(train):
        parts, impath = _path_parts(item["impath"]), item["impath"]
        tails = [parts[j:] for j in range(len(folder), len(parts)) if parts[j - len(folder) : j] == folder]
        if not tails:
            raise ValueError(
                f"--fewshot_file {path}: train[{i}] {short(impath)} is not inside a folder {'/'.join(folder)}, the "
                f"{bench.name} image folder of the official layout: is this a file of another dataset?"
            )
        found = sorted({row for tail in tails for row in rows.get(tail, [])})
        if not found:
            tried = " or ".join(repr("/".join(tail)) for tail in tails)
            raise ValueError(
                f"--fewshot_file {path}: train[{i}] {short(impath)} is not in {where}: looked for {tried} there. Is "
                "--data_root the right folder, with the same split file as the official run?"
            )
        if len(found) > 1:
            raise ValueError(
                f"--fewshot_file {path}: train[{i}] {short(impath)} matches {len(found)} images of {where} (rows "
                f"{found[:5]}): it must name exactly one."
            )
        row = found[0]
        if row in item_of_row:
            # Dassl's draw (`random.sample` per class) never takes one image twice; a repeat would train on it twice.
            j = item_of_row[row]
            same = "lists it again" if train[j]["impath"] == impath else f"names the image of train[{j}] again"
            raise ValueError(
                f"--fewshot_file {path}: train[{i}] {short(impath)} {same} (train[{j}] {short(train[j]['impath'])}): "
                "an official few-shot list holds each image once. Remove the repeat, or use the file the official run "
                "wrote."
            )
        item_of_row[row] = i
        label = int(labels[row])
        if item["label"] != label or item["classname"] != class_names[label]:
            raise ValueError(
                f"--fewshot_file {path}: train[{i}] {short(impath)} has label {item['label']} "
                f"({short(item['classname'])}) there, but label {label} ({short(class_names[label])}) in {where}: the "
                "file was written for other labels (another split file or dataset version)."
            )
        indices.append(row)
    counts = {}
    for item in train:
        counts[item["label"]] = counts.get(item["label"], 0) + 1
    most = max(counts.values())
    if shots is None:
        shots = most  # a renamed file: K is the largest class (smaller classes keep all their images)
        logger.warning(
            "--fewshot_file %s is not named shot_K-seed_S.pkl: K is taken as %d (its largest class); its seed is "
            "not checked against --seed.",
            path,
            shots,
        )
    # Checked after the items, so that a wrong label is named as such rather than as a class with too many images.
    if most > shots or shots != args.num_shots:
        label = max(counts, key=counts.get)
        raise ValueError(
            f"--fewshot_file {path} holds {most} images of label {label} (at most K per class, and K = {shots}), "
            f"but --num_shots is {args.num_shots}: the file must be a {args.num_shots}-shot list."
        )

    _check_covers_the_classes(path, labels, indices, class_names, where)
    val = split.get("val")
    first = {}
    for i, item in enumerate(val or []):
        j = first.setdefault(item["impath"], i)
        if j != i:  # recorded with the run as the official validation list: it must hold each image once too
            raise ValueError(
                f"--fewshot_file {path}: val[{i}] {short(item['impath'])} lists the image of val[{j}] again: an "
                "official few-shot list holds each image once. Remove the repeat, or use the file the official run "
                "wrote."
            )
    return OfficialFewShot(
        indices=indices,
        source={"path": str(Path(path).resolve()), "sha256": hashlib.sha256(content).hexdigest()},
        val=None if val is None else [[item["impath"], item["label"], item["classname"]] for item in val],
    )


def _check_covers_the_classes(path, labels, indices, class_names: list[str], where: str) -> None:
    """
    An official few-shot file lists every class of the train split it was drawn from: Dassl's
    `generate_fewshot_dataset` keeps each class (all its images when it has fewer than K). The official run then takes
    its class list, and the base/new halves, from the labels of that list (CoOp datasets/oxford_pets.py
    `subsample_classes` reads the few-shot train list; Dassl `DatasetBase.get_num_classes(train_x)`). A file lacking
    a class of this split is no draw from it: trained classes would get no image, and the halves would differ from
    the official run's. Refused, naming the missing classes.
    """
    listed = {int(labels[row]) for row in indices}
    present = sorted(set(int(label) for label in labels))
    missing = [label for label in present if label not in listed]
    if missing:
        shown = ", ".join(f"{label} {short(class_names[label])}" for label in missing[:10])
        raise ValueError(
            f"--fewshot_file {path} lists no image of {len(missing)} of the {len(present)} classes of {where}: "
            f"{shown}{' ...' if len(missing) > 10 else ''}. An official few-shot file holds K images of every class "
            "of the split it was drawn from (fewer where a class has fewer), and the official run takes its classes "
            "and base/new halves from it: use the file written for this split."
        )


def label_fingerprint(labels) -> str:
    """sha256 of the label sequence: tells apart datasets of the same size whose rows differ (e.g. reshuffled)."""
    return hashlib.sha256(json.dumps([int(label) for label in labels]).encode()).hexdigest()


def dataset_identity(args: DataArguments) -> dict:
    """What the training rows come from: Hub id / local folder, config, data_dir, or the local files (absolute)."""

    def local(path):
        return str(Path(path).resolve()) if path else None

    name = args.dataset_name
    identity = {
        "dataset_name": local(name) if name and os.path.isdir(name) else name,
        "dataset_config_name": args.dataset_config_name,
        "data_dir": args.data_dir,
        "train_file": local(args.train_file),
        "split_file": local(args.split_file),
        "benchmark": args.benchmark,
        "data_root": local(args.data_root),
        "imagenet_classnames": local(args.imagenet_classnames),
    }
    return {key: value for key, value in identity.items() if value is not None}


def few_shot_indices(
    labels,
    num_shots: int,
    seed: int,
    output_dir,
    split: str,
    overwrite: bool,
    dataset: dict | None = None,
    official: OfficialFewShot | None = None,
) -> list[int]:
    """
    Few-shot indices (`select_few_shot`), saved as `output_dir/fewshot_indices.json` with the sampling rule and what
    they were drawn from (the dataset's identity, split, K, seed, row count and a sha256 of the label sequence), and
    the drawn items as [row, label] in the official order. Reused only when all of it matches (re-run, resume). A
    file drawn from anything else, or by another sampling rule, raises, naming what differs; with `overwrite` the
    indices are drawn again (with a warning). Indices of another dataset of the same size would give some classes
    more than K images and others fewer: never reused silently. With `official` (`official_fewshot_rows`), its rows
    are the indices, recorded with the official file and its sha256 in place of the sampling rule.
    """
    path = Path(output_dir) / FEWSHOT_INDICES_NAME if output_dir else None
    origin = {"sampling": FEWSHOT_RULE} if official is None else {"fewshot_file": official.source}
    meta = {
        **origin,
        "dataset": dataset,
        "split": split,
        "num_shots": num_shots,
        "seed": seed,
        "num_rows": len(labels),
        "labels_sha256": label_fingerprint(labels),
    }
    if path is not None and path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            saved = None
        if not isinstance(saved, dict):
            differences = [f"{path} is not a JSON object"]
        else:
            differences = [
                f"{key} {saved.get(key)!r} there, {value!r} here"
                for key, value in meta.items()
                if key not in ("sampling", "fewshot_file") and saved.get(key) != value
            ]
            if official is not None:
                if saved.get("fewshot_file") != official.source:
                    differences.insert(
                        0,
                        f"its images came from {saved.get('fewshot_file') or saved.get('sampling')!r}, this run "
                        f"trains on those of --fewshot_file {official.source}",
                    )
                elif saved.get("indices") != official.indices:
                    differences.insert(0, "its indices are not the rows the official file names here")
            elif "fewshot_file" in saved:
                differences.insert(
                    0,
                    f"its images are those of the official few-shot file {saved['fewshot_file']!r}, this run draws "
                    f"its own by {FEWSHOT_RULE!r} (pass --fewshot_file to train on that file's images again)",
                )
            elif saved.get("sampling") != FEWSHOT_RULE:
                drawn_by = saved.get("sampling") or "an older rule (per sorted label, not recorded)"
                differences.insert(
                    0,
                    f"it was drawn by the sampling rule {drawn_by!r}, this version draws by {FEWSHOT_RULE!r} "
                    "(Dassl's: classes in order of first appearance, random.sample seeded with the run's seed)",
                )
            indices = saved.get("indices")
            if not differences and not (
                isinstance(indices, list) and all(isinstance(i, int) and 0 <= i < len(labels) for i in indices)
            ):
                differences = [f"its indices are not row numbers below {len(labels)}"]
        if not differences:
            logger.info("Reusing the few-shot indices saved in %s.", path)
            return indices
        if not overwrite:
            raise ValueError(
                f"{path} does not fit this run: {'; '.join(differences)}. Use another --output_dir, or pass "
                "--overwrite_output_dir to draw the few-shot images again."
            )
        logger.warning("--overwrite_output_dir: drawing the few-shot images again (%s).", "; ".join(differences))
    indices = select_few_shot(labels, num_shots, seed) if official is None else official.indices
    if path is not None:
        items = [[index, int(labels[index])] for index in indices]
        extra = {} if official is None else {"fewshot_file_val": official.val}
        _write_json_atomic(path, {**meta, "indices": indices, "items": items, **extra})
    return indices


def _write_json_atomic(path: Path, content) -> None:
    # A new file renamed into place (a crash never leaves a half-written file that a resume would read), never
    # through a symlink, recorded in the --output_dir manifest as the run's (cocoop_hf_training/outputs.py).
    from cocoop_hf_training.outputs import write_output

    write_output(path, json.dumps(content), "few-shot indices")


def record_training_items(output_dir, train_dataset, task: str, relabel: dict, class_names: dict) -> None:
    """
    Add to `output_dir/fewshot_indices.json` what the run trained on, in training-list order: the task, the class
    names of every task, and per image [row in the split, label, label trained with (after the base/new
    relabelling), image path or None] after class selection and any dropped corrupt image.
    """
    from datasets import Image

    path = Path(output_dir) / FEWSHOT_INDICES_NAME
    saved = json.loads(path.read_text(encoding="utf-8"))
    raw = train_dataset.cast_column("image", Image(decode=False))
    images = raw["image"]
    items = [
        [int(row), int(label), relabel[int(label)], image.get("path") if isinstance(image, dict) else None]
        for row, label, image in zip(raw[SOURCE_ROW_COLUMN], raw["label"], images, strict=True)
    ]
    saved["trained"] = {"task": task, "classes": class_names, "items": items}
    _write_json_atomic(path, saved)
