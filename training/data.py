"""Data for the CoCoOp protocols: loading, class names, few-shot sampling, base/new split, transforms.

Official reference: Dassl `DatasetBase.generate_fewshot_dataset` and CoOp `datasets/oxford_pets.py`
`OxfordPets.subsample_classes` / `read_split`; CoCoOp configs `vit_b16_c4_ep10_batch1_ctxv1.yaml` (INPUT section).
"""

import io
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from transformers.utils import logging


logger = logging.get_logger(__name__)

FEWSHOT_INDICES_NAME = "fewshot_indices.json"
_DATA_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}


@dataclass
class DataArguments:
    """Where the images come from and how the protocol splits them."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub dataset id, or a local folder (parquet files or an imagefolder tree)."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    dataset_display_name: str | None = field(
        default=None, metadata={"help": "Name used in results, tables and the model card (default: derived)."}
    )
    train_file: str | None = field(default=None, metadata={"help": "Local train file (parquet/arrow/csv/json)."})
    eval_file: str | None = field(default=None, metadata={"help": "Local evaluation file (parquet/arrow/csv/json)."})
    data_dir: str | None = field(default=None, metadata={"help": "`data_dir` passed to `load_dataset`."})
    train_split: str = field(default="train", metadata={"help": "Split trained on (few-shot sampled)."})
    eval_split: str = field(default="test", metadata={"help": "Split evaluated on (the official protocol: test)."})
    image_column: str = field(default="image", metadata={"help": "Column with the images (or image paths)."})
    label_column: str = field(default="label", metadata={"help": "Column with the labels."})
    class_names_file: str | None = field(
        default=None, metadata={"help": "Text file, one class name per line, in label order (overrides ClassLabel)."}
    )
    split_file: str | None = field(
        default=None,
        metadata={
            "help": "Official CoOp split file split_zhou_<Dataset>.json: {train,val,test: [[path, label, name]]}."
        },
    )
    image_root: str | None = field(
        default=None, metadata={"help": "Folder the paths of --split_file (or a path column) are relative to."}
    )
    num_shots: int | None = field(
        default=16, metadata={"help": "Images per class for training (K); None trains on the whole split."}
    )
    protocol: str = field(
        default="base_to_new",
        metadata={"help": "'base_to_new' (train on the first half of the classes, evaluate base and new) or 'all'."},
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Input resolution; default: the CLIP image processor's crop size."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on at most this many images per evaluated set (seeded subset)."}
    )
    verify_images: str = field(
        default="train",
        metadata={"help": "Decode images before training to find corrupt ones: 'train', 'all' or 'none'."},
    )
    skip_corrupt_images: bool = field(
        default=False, metadata={"help": "Drop corrupt images (count reported) instead of raising."}
    )

    def __post_init__(self):
        if self.num_shots is not None and (not isinstance(self.num_shots, int) or self.num_shots <= 0):
            raise ValueError(
                f"--num_shots must be a positive number of images per class (K), got {self.num_shots!r}; "
                "omit it (None) to train on the whole split."
            )
        if self.protocol not in ("base_to_new", "all"):
            raise ValueError(f"--protocol must be 'base_to_new' or 'all', got {self.protocol!r}.")
        if self.verify_images not in ("train", "all", "none"):
            raise ValueError(f"--verify_images must be 'train', 'all' or 'none', got {self.verify_images!r}.")
        if (
            self.dataset_name is None
            and self.split_file is None
            and self.train_file is None
            and self.eval_file is None
        ):
            raise ValueError(
                "no data: pass --dataset_name, --train_file/--eval_file, or --split_file with --image_root."
            )
        if self.split_file is not None and self.image_root is None:
            raise ValueError("--split_file lists relative image paths: pass --image_root, the folder they live in.")

    @property
    def display_name(self) -> str:
        if self.dataset_display_name:
            return self.dataset_display_name
        for source in (self.dataset_name, self.split_file, self.train_file, self.eval_file):
            if source:
                stem = Path(source.rstrip("/")).stem
                return stem.removeprefix("split_zhou_") if source == self.split_file else stem
        return "dataset"


# ---------------------------------------------------------------------------------------------- loading


def _read_class_names_file(path) -> list[str]:
    if not os.path.isfile(path):
        raise ValueError(f"--class_names_file {path} does not exist.")
    with open(path, encoding="utf-8") as handle:
        names = [line.strip() for line in handle if line.strip()]
    if not names:
        raise ValueError(f"--class_names_file {path} holds no class names (one per line expected).")
    return names


def _load_split_file(args: DataArguments, splits):
    """Official CoOp `read_split`: lists of [relative path, label, class name]; checks every file exists."""
    from datasets import Dataset, Image

    if not os.path.isfile(args.split_file):
        raise ValueError(f"--split_file {args.split_file} does not exist.")
    with open(args.split_file, encoding="utf-8") as handle:
        content = json.load(handle)
    datasets_, names = {}, {}
    for split in splits:
        if split not in content:
            raise ValueError(f"split {split!r} is not in {args.split_file}; it has {sorted(content)}.")
        paths, labels = [], []
        for entry in content[split]:
            if not isinstance(entry, list | tuple) or len(entry) != 3:
                raise ValueError(
                    f"{args.split_file}[{split!r}] entries must be [path, label, class name], got {entry!r}."
                )
            path, label, name = entry
            paths.append(os.path.join(args.image_root, path))
            labels.append(int(label))
            if names.setdefault(int(label), name) != name:
                raise ValueError(f"{args.split_file}: label {label} is named both {names[int(label)]!r} and {name!r}.")
        missing = [path for path in paths if not os.path.isfile(path)]
        if missing:
            raise ValueError(
                f"{len(missing)} of {len(paths)} images of split {split!r} in {args.split_file} do not exist under "
                f"--image_root {args.image_root}, e.g. {missing[:3]}: check --image_root."
            )
        datasets_[split] = Dataset.from_dict({"image": paths, "label": labels}).cast_column("image", Image())
    class_names = [names[i] for i in sorted(names)] if sorted(names) == list(range(len(names))) else None
    if class_names is None:
        raise ValueError(f"{args.split_file}: labels must be 0..n-1, got {sorted(names)[:10]}...")
    return datasets_, class_names


def load_splits(args: DataArguments, splits, cache_dir=None):
    """
    The requested splits as `datasets.Dataset`s with columns `image` (decoded to PIL) and `label` (int class
    index), plus the class names in label order. Raises before any training on missing columns or bad labels.
    """
    from datasets import ClassLabel, DatasetDict, load_dataset

    splits = list(dict.fromkeys(splits))
    if args.split_file is not None:
        loaded, split_names = _load_split_file(args, splits)
        image_column, label_column = "image", "label"
        features_names = split_names
    else:
        if args.train_file or args.eval_file:
            data_files = {}
            if args.train_file:
                data_files[args.train_split] = args.train_file
            if args.eval_file:
                data_files[args.eval_split] = args.eval_file
            for path in data_files.values():
                if not os.path.isfile(path):
                    raise ValueError(f"data file {path} does not exist.")
            suffixes = {Path(path).suffix for path in data_files.values()}
            if len(suffixes) != 1 or next(iter(suffixes)) not in _DATA_FILE_BUILDERS:
                raise ValueError(
                    f"--train_file/--eval_file must share one format among {sorted(_DATA_FILE_BUILDERS)}, "
                    f"got {sorted(data_files.values())}."
                )
            builder = _DATA_FILE_BUILDERS[next(iter(suffixes))]
            dataset = load_dataset(builder, data_files=data_files, cache_dir=cache_dir)
        else:
            dataset = load_dataset(
                args.dataset_name, args.dataset_config_name, data_dir=args.data_dir, cache_dir=cache_dir
            )
        if not isinstance(dataset, DatasetDict):
            raise ValueError(f"expected a dataset with splits, got {type(dataset).__name__}.")
        missing = [split for split in splits if split not in dataset]
        if missing:
            raise ValueError(f"split(s) {missing} not found; the dataset has splits {sorted(dataset)}.")
        loaded = {split: dataset[split] for split in splits}
        image_column, label_column = args.image_column, args.label_column
        features_names = None
        for split, ds in loaded.items():
            for kind, column in (("image", image_column), ("label", label_column)):
                if column not in ds.column_names:
                    raise ValueError(
                        f"{kind} column {column!r} is not in split {split!r}; its columns are {ds.column_names}: "
                        f"pass --{kind}_column."
                    )
        label_feature = loaded[splits[0]].features[label_column]
        if isinstance(label_feature, ClassLabel):
            features_names = list(label_feature.names)

    class_names = _read_class_names_file(args.class_names_file) if args.class_names_file else features_names
    result = {}
    for split, ds in loaded.items():
        result[split] = _normalise_columns(ds, split, image_column, label_column, class_names, args.image_root)
    if class_names is None:
        raise ValueError(
            f"the label column {label_column!r} holds class indices but no class names were found (no ClassLabel "
            "feature): pass --class_names_file with one name per line, in label order."
        )
    return result, class_names


def _normalise_columns(ds, split, image_column, label_column, class_names, image_root):
    """Rename to `image`/`label`, decode paths as images, map string labels through the class names, check range."""
    from datasets import ClassLabel, Image, Value

    keep = [image_column, label_column]
    ds = ds.remove_columns([c for c in ds.column_names if c not in keep])
    image_feature = ds.features[image_column]
    if isinstance(image_feature, Value) and image_feature.dtype in ("string", "large_string"):
        if image_root is not None:
            ds = ds.map(lambda row: {image_column: os.path.join(image_root, row[image_column])})
        ds = ds.cast_column(image_column, Image())
    elif not isinstance(image_feature, Image):
        raise ValueError(
            f"column {image_column!r} of split {split!r} is {image_feature}, not images or image paths: "
            "pass the right --image_column."
        )
    label_feature = ds.features[label_column]
    if isinstance(label_feature, Value) and label_feature.dtype in ("string", "large_string"):
        if class_names is None:
            raise ValueError(
                f"labels in column {label_column!r} of split {split!r} are strings (e.g. {ds[0][label_column]!r}), "
                "not class indices, and no class names were given: pass --class_names_file (one name per line, "
                "in label order) or store the labels as a ClassLabel feature."
            )
        index = {name: i for i, name in enumerate(class_names)}
        unknown = sorted({y for y in ds[label_column] if y not in index})
        if unknown:
            raise ValueError(f"labels {unknown[:5]} of split {split!r} are not among the class names {class_names}.")
        ds = ds.map(lambda row: {label_column: index[row[label_column]]})
        ds = ds.cast_column(label_column, Value("int64"))
    elif not (
        isinstance(label_feature, ClassLabel) or (isinstance(label_feature, Value) and "int" in label_feature.dtype)
    ):
        raise ValueError(
            f"labels in column {label_column!r} of split {split!r} are {label_feature}: expected class indices "
            "(integers or a ClassLabel) or class-name strings with --class_names_file."
        )
    if class_names is not None:
        labels = ds[label_column]
        bad = sorted({y for y in labels if not 0 <= y < len(class_names)})
        if bad:
            raise ValueError(
                f"labels {bad[:5]} of split {split!r} are not class indices in [0, {len(class_names)}) for the "
                f"{len(class_names)} class names: check --class_names_file / --label_column."
            )
    if image_column != "image":
        ds = ds.rename_column(image_column, "image")
    if label_column != "label":
        ds = ds.rename_column(label_column, "label")
    return ds


# ---------------------------------------------------------------------------------------------- few-shot


def select_few_shot(labels, num_shots: int, seed: int) -> list[int]:
    """
    Indices of `num_shots` images per class, as Dassl's `generate_fewshot_dataset`: per label (sorted), a random
    sample of K items; a class with fewer than K keeps all, with a warning. Depends only on `labels`, K and the
    seed (a private RNG), never on workers or global state. Sorted by class, then by sample order.
    """
    if not isinstance(num_shots, int) or num_shots <= 0:
        raise ValueError(f"num_shots must be a positive integer (images per class), got {num_shots!r}.")
    by_label = {}
    for index, label in enumerate(labels):
        by_label.setdefault(int(label), []).append(index)
    rng = random.Random(seed)
    chosen = []
    for label in sorted(by_label):
        items = by_label[label]
        if len(items) >= num_shots:
            chosen.extend(rng.sample(items, num_shots))
        else:
            logger.warning(
                "class %d has only %d images (< %d shots): keeping all of them.", label, len(items), num_shots
            )
            chosen.extend(items)
    return chosen


def few_shot_indices(labels, num_shots: int, seed: int, output_dir, split: str, overwrite: bool) -> list[int]:
    """
    Few-shot indices, saved as `output_dir/fewshot_indices.json` and reused when that file matches (re-run, resume):
    a file made with another K, seed, split or dataset size raises unless `overwrite`.
    """
    path = Path(output_dir) / FEWSHOT_INDICES_NAME if output_dir else None
    meta = {"num_shots": num_shots, "seed": seed, "split": split, "num_rows": len(labels)}
    if path is not None and path.is_file():
        saved = json.loads(path.read_text())
        if {key: saved.get(key) for key in meta} == meta:
            indices = saved["indices"]
            if all(isinstance(i, int) and 0 <= i < len(labels) for i in indices):
                logger.info("Reusing the few-shot indices saved in %s.", path)
                return indices
        if not overwrite:
            raise ValueError(
                f"{path} holds few-shot indices for { ({key: saved.get(key) for key in meta}) }, not {meta}: use "
                "another --output_dir or pass --overwrite_output_dir to draw them again."
            )
    indices = select_few_shot(labels, num_shots, seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**meta, "indices": indices}))
    return indices


# ---------------------------------------------------------------------------------------------- base / new


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


def harmonic_mean(base: float, new: float) -> float:
    """H = 2BN / (B + N), the base-to-new summary of the CoCoOp paper."""
    return 0.0 if base + new == 0 else 2 * base * new / (base + new)


def select_labels(ds, relabel: dict[int, int], indices=None):
    """Rows of `ds` (optionally within `indices`) whose label is in `relabel`, as (dataset, kept row indices)."""
    labels = ds["label"]
    candidates = range(len(labels)) if indices is None else indices
    kept = [i for i in candidates if labels[i] in relabel]
    return ds.select(kept), kept


# ---------------------------------------------------------------------------------------------- images


def _describe(image_value, index) -> str:
    path = image_value.get("path") if isinstance(image_value, dict) else None
    return f"{path} (row {index})" if path else f"row {index}"


def find_corrupt_images(ds, desc="Checking images", disable_progress=False) -> list[tuple[int, str]]:
    """Fully decode every image of `ds` (column `image`); return [(row, file name)] of those that fail."""
    from datasets import Image
    from PIL import Image as PILImage
    from tqdm.auto import tqdm

    raw = ds.cast_column("image", Image(decode=False))
    bad = []
    for index in tqdm(range(len(raw)), desc=desc, disable=disable_progress):
        value = raw[index]["image"]
        try:
            source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
            with PILImage.open(source) as image:
                image.load()
        except Exception as error:  # any decoder failure means the file is unusable
            bad.append((index, f"{_describe(value, index)}: {type(error).__name__}: {error}"))
    return bad


def drop_or_raise_corrupt(ds, split: str, skip: bool, disable_progress=False):
    """Raise on corrupt images (naming them) or, with `skip`, drop them and report the count."""
    bad = find_corrupt_images(ds, desc=f"Checking {split} images", disable_progress=disable_progress)
    if not bad:
        return ds, 0
    if not skip:
        shown = "; ".join(name for _, name in bad[:5])
        raise ValueError(
            f"{len(bad)} corrupt image(s) in {split}: {shown}. Fix or remove them, or pass --skip_corrupt_images."
        )
    logger.warning("Skipping %d corrupt image(s) in %s: %s", len(bad), split, "; ".join(n for _, n in bad[:5]))
    drop = {index for index, _ in bad}
    return ds.select([i for i in range(len(ds)) if i not in drop]), len(bad)


def build_transforms(image_processor, image_size: int | None = None):
    """
    Official CoCoOp INPUT config: train = RandomResizedCrop(size, scale=(0.08, 1), bicubic) + horizontal flip;
    eval = Resize(size, bicubic) + CenterCrop(size); both normalised with the CLIP processor's mean/std.
    """
    from torchvision import transforms as T

    if image_size is None:
        crop = getattr(image_processor, "crop_size", None) or {}
        image_size = crop.get("height") or (getattr(image_processor, "size", None) or {}).get("shortest_edge")
    if not image_size:
        raise ValueError("cannot tell the input size from the image processor: pass --image_size.")
    normalize = T.Normalize(mean=image_processor.image_mean, std=image_processor.image_std)
    bicubic = T.InterpolationMode.BICUBIC
    train = T.Compose(
        [
            T.RandomResizedCrop(image_size, scale=(0.08, 1.0), interpolation=bicubic),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            normalize,
        ]
    )
    evaluation = T.Compose(
        [T.Resize(image_size, interpolation=bicubic), T.CenterCrop(image_size), T.ToTensor(), normalize]
    )
    return train, evaluation


class ImageTransform:
    """`with_transform` callable: PIL images -> `pixel_values`, labels -> relabelled `labels`; runs in workers."""

    def __init__(self, transform, relabel: dict[int, int] | None = None):
        self.transform = transform
        self.relabel = relabel

    def __call__(self, batch):
        pixel_values = [self.transform(image.convert("RGB")) for image in batch["image"]]
        labels = batch["label"] if self.relabel is None else [self.relabel[y] for y in batch["label"]]
        return {"pixel_values": pixel_values, "labels": labels}
