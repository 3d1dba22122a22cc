"""Data for the CoCoOp protocols: loading, class names (and the benchmarks' label maps), base/new split, transforms;
few-shot sampling is in training/fewshot.py.

Official reference: CoOp `datasets/oxford_pets.py` `OxfordPets.subsample_classes` / `read_split`; CoCoOp configs
`vit_b16_c4_ep10_batch1_ctxv1.yaml` (INPUT section).
"""

import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from transformers.utils import logging

# The few-shot part lives in training/fewshot.py; its API stays importable from here.
from training.fewshot import FEWSHOT_INDICES_NAME as FEWSHOT_INDICES_NAME
from training.fewshot import FEWSHOT_RULE as FEWSHOT_RULE
from training.fewshot import MAX_VAL_SHOTS as MAX_VAL_SHOTS
from training.fewshot import OfficialFewShot as OfficialFewShot
from training.fewshot import dassl_few_shot as dassl_few_shot
from training.fewshot import dataset_identity as dataset_identity
from training.fewshot import few_shot_indices as few_shot_indices
from training.fewshot import fewshot_file_name as fewshot_file_name
from training.fewshot import label_fingerprint as label_fingerprint
from training.fewshot import official_fewshot_rows as official_fewshot_rows
from training.fewshot import record_training_items as record_training_items
from training.fewshot import select_few_shot as select_few_shot
from training.split_checks import read_class_names_file, read_json, repeated_names, short, split_entries


logger = logging.get_logger(__name__)

BENCHMARK_SPLITS = ("train", "val", "test")
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
    benchmark: str | None = field(
        default=None,
        metadata={
            "help": "One of the paper's 15 datasets by name (e.g. EuroSAT, OxfordPets, ImageNet, ImageNetV2). With "
            "--data_root: read from its official CoOp folder layout (official names, splits). Without: the images "
            "of --dataset_name / --train_file / --eval_file, whose raw label names (the archive's folder names, "
            "wnids, ...) are mapped to the official class names and label order."
        },
    )
    imagenet_classnames: str | None = field(
        default=None,
        metadata={
            "help": "--benchmark ImageNet/-V2/-Sketch/-A/-R without --data_root: ImageNet's classnames.txt of the "
            "official CoOp DATASETS.md ('<wnid> <class name>' per line), which names the wnid labels."
        },
    )
    data_root: str | None = field(
        default=None,
        metadata={"help": "Folder holding the --benchmark datasets (the $DATA of the official CoOp DATASETS.md)."},
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
    fewshot_file: str | None = field(
        default=None,
        metadata={
            "help": "--benchmark only: train on the very images of an official run, the few-shot file the official "
            "code wrote (<dataset>/split_fewshot/shot_K-seed_S.pkl), instead of drawing them; read as data only."
        },
    )

    def __post_init__(self):
        if self.num_shots is not None and (not isinstance(self.num_shots, int) or self.num_shots <= 0):
            raise ValueError(
                f"--num_shots must be a positive number of images per class (K), got {self.num_shots!r}; "
                "omit it (None) to train on the whole split."
            )
        if self.max_eval_samples is not None and (
            isinstance(self.max_eval_samples, bool)
            or not isinstance(self.max_eval_samples, int)
            or self.max_eval_samples <= 0
        ):
            raise ValueError(
                f"--max_eval_samples must be a positive number of images, got {self.max_eval_samples!r}; "
                "omit it (None) to evaluate on the whole split."
            )
        check_image_size(self.image_size)
        if self.protocol not in ("base_to_new", "all"):
            raise ValueError(f"--protocol must be 'base_to_new' or 'all', got {self.protocol!r}.")
        if self.verify_images not in ("train", "all", "none"):
            raise ValueError(f"--verify_images must be 'train', 'all' or 'none', got {self.verify_images!r}.")
        if self.benchmark is not None or self.data_root is not None or self.imagenet_classnames is not None:
            self._check_benchmark()
        if (
            self.benchmark is None
            and self.dataset_name is None
            and self.split_file is None
            and self.train_file is None
            and self.eval_file is None
        ):
            raise ValueError(
                "no data: pass --dataset_name, --train_file/--eval_file, --split_file with --image_root, or "
                "--benchmark with --data_root."
            )
        if self.split_file is not None and self.image_root is None:
            raise ValueError("--split_file lists relative image paths: pass --image_root, the folder they live in.")
        if self.fewshot_file is not None:
            self._check_fewshot_file()

    def _check_fewshot_file(self) -> None:
        """An official few-shot file names images of a benchmark's train split, drawn with K shots per class."""
        if self.benchmark is None or self.data_root is None:
            raise ValueError(
                f"--fewshot_file {self.fewshot_file} lists images of an official run on one of the paper's "
                "datasets: pass --benchmark (the dataset) and --data_root (where its images are on this machine)."
            )
        if not os.path.isfile(self.fewshot_file):
            raise ValueError(f"--fewshot_file {self.fewshot_file} does not exist.")
        if self.train_split != "train":
            raise ValueError(
                f"--fewshot_file lists images of the benchmark's 'train' split, not of --train_split "
                f"{self.train_split!r}: drop --train_split."
            )
        shots, _ = fewshot_file_name(self.fewshot_file)
        if self.num_shots is None:
            raise ValueError(
                f"--fewshot_file {self.fewshot_file} is a few-shot list: pass --num_shots "
                f"{shots if shots is not None else 'K'} (its images per class) instead of training on the whole split."
            )
        if shots is not None and shots != self.num_shots:
            raise ValueError(
                f"--fewshot_file {self.fewshot_file} holds {shots} images per class (shot_{shots}), but --num_shots "
                f"is {self.num_shots}: pass --num_shots {shots}, or the file shot_{self.num_shots}-seed_S.pkl."
            )

    def _check_benchmark(self) -> None:
        """
        --benchmark with --data_root names the data completely (the official layout) and excludes every other data
        source; without --data_root it names the dataset of a column source (Hub dataset, data files), whose raw
        label names are mapped to the official ones (`training.benchmarks.official_label_map`).
        """
        from training.benchmarks import WNID_BENCHMARKS, get_benchmark

        if self.benchmark is None:
            flag = "--data_root" if self.data_root is not None else "--imagenet_classnames"
            value = self.data_root if self.data_root is not None else self.imagenet_classnames
            raise ValueError(f"{flag} {value} is only read with --benchmark: name the dataset too.")
        bench = get_benchmark(self.benchmark)
        self.benchmark = bench.name  # official spelling; unknown names raise, listing all
        if bench.test_only and self.protocol != "all":
            # Domain generalisation (CoCoOp paper, Table 3): ImageNet-V2/-Sketch/-A/-R are scored on all their classes.
            raise ValueError(
                f"--benchmark {bench.name} is a test-only target of domain generalisation, evaluated on all its "
                f"classes: pass --protocol all (got --protocol {self.protocol})."
            )
        if self.data_root is None:
            if self.dataset_name is None and self.train_file is None and self.eval_file is None:
                raise ValueError(
                    f"--benchmark {self.benchmark} needs --data_root, the folder holding the datasets in the layout "
                    "of the official CoOp DATASETS.md, or a source of its images with their raw label names "
                    "(--dataset_name, --train_file/--eval_file)."
                )
            if self.split_file is not None:
                raise ValueError(
                    f"--split_file {self.split_file} already names the official classes: drop --benchmark, or read "
                    "the official layout with --data_root."
                )
            if self.imagenet_classnames is not None and bench.name not in WNID_BENCHMARKS:
                raise ValueError(
                    f"--imagenet_classnames names the wnid labels of {list(WNID_BENCHMARKS)}, not of {bench.name}: "
                    "drop it."
                )
            return
        if self.imagenet_classnames is not None:
            raise ValueError(
                "--imagenet_classnames is for a column source; with --data_root the dataset folder's own "
                "classnames.txt is read: drop --imagenet_classnames."
            )
        conflicting = {
            "--dataset_name": self.dataset_name,
            "--dataset_config_name": self.dataset_config_name,
            "--data_dir": self.data_dir,
            "--train_file": self.train_file,
            "--eval_file": self.eval_file,
            "--split_file": self.split_file,
            "--image_root": self.image_root,
            "--class_names_file": self.class_names_file,
            "--image_column": None if self.image_column == "image" else self.image_column,
            "--label_column": None if self.label_column == "label" else self.label_column,
        }
        given = [flag for flag, value in conflicting.items() if value is not None]
        if given:
            raise ValueError(
                f"--benchmark {self.benchmark} reads the images, labels and class names from --data_root; drop "
                f"{', '.join(given)} (they name another data source)."
            )
        for flag, split in (("--train_split", self.train_split), ("--eval_split", self.eval_split)):
            if split not in BENCHMARK_SPLITS:
                raise ValueError(
                    f"{flag} {split!r}: a benchmark has the splits {list(BENCHMARK_SPLITS)} (the paper evaluates on "
                    "'test')."
                )

    @property
    def display_name(self) -> str:
        if self.dataset_display_name:
            return self.dataset_display_name
        if self.benchmark:
            return self.benchmark
        for source in (self.dataset_name, self.split_file, self.train_file, self.eval_file):
            if source:
                stem = Path(source.rstrip("/")).stem
                return stem.removeprefix("split_zhou_") if source == self.split_file else stem
        return "dataset"


# ---------------------------------------------------------------------------------------------- loading


def _load_split_file(args: DataArguments, splits):
    """
    Official CoOp `read_split`: lists of [relative path, label, class name]; checks every entry
    (`training.split_checks.split_entries`), that one label has one name and the labels run 0..n-1, that no two
    labels share a name (their prompts would be identical), and that every file exists.
    """
    from datasets import Dataset, Image

    if not os.path.isfile(args.split_file):
        raise ValueError(f"--split_file {args.split_file} does not exist.")
    content = read_json(args.split_file, "--split_file")
    entries = split_entries(args.split_file, content, splits, "--split_file")
    datasets_, names = {}, {}
    for split in splits:
        paths, labels = [], []
        for index, (path, label, name) in enumerate(entries[split]):
            paths.append(os.path.join(args.image_root, path))
            labels.append(label)
            if names.setdefault(label, name) != name:
                raise ValueError(
                    f"--split_file {args.split_file}: {split}[{index}] names label {label} {short(name)}, but an "
                    f"earlier entry names it {short(names[label])}: one label must have one class name."
                )
        # Shown as the file gives them (relative): the --image_root prefix would fill the shortened names.
        missing = [entry[0] for entry, full in zip(entries[split], paths, strict=True) if not os.path.isfile(full)]
        if missing:
            raise ValueError(
                f"{len(missing)} of {len(paths)} images of split {split!r} in {args.split_file} do not exist under "
                f"--image_root {args.image_root}, e.g. {', '.join(short(path) for path in missing[:3])}: check "
                "--image_root."
            )
        datasets_[split] = Dataset.from_dict({"image": paths, "label": labels}, split=split).cast_column(
            "image", Image()
        )
    # Labels are below the entry count (split_entries), so this list is as small as the file.
    absent = [label for label in range(max(names, default=-1) + 1) if label not in names]
    if absent:
        raise ValueError(
            f"--split_file {args.split_file}: labels must run 0..n-1 with entries for each class; no entry of "
            f"{list(splits)} has the label(s) {absent[:10]}{' ...' if len(absent) > 10 else ''}."
        )
    class_names = [names[label] for label in range(len(names))]
    twice = repeated_names(class_names, word="labels")
    if twice:
        raise ValueError(
            f"--split_file {args.split_file}: the class name {twice}: two classes "
            "with one name get the same prompt and cannot be told apart; give each class its own name."
        )
    return datasets_, class_names


def load_benchmark_splits(args: DataArguments, splits):
    """
    The requested splits of `--benchmark` under `--data_root` (training/benchmarks.py reads the official layout), as
    `load_splits` returns them: `image` (decoded from the item's path), `label`, `source_row`; the official class
    names in label order. Test-only datasets (ImageNet-V2/-Sketch/-A/-R) have no training or validation images.
    """
    from datasets import Dataset, Image

    from training.benchmarks import get_benchmark, load_benchmark

    splits = list(dict.fromkeys(splits))
    bench = get_benchmark(args.benchmark)
    if bench.test_only:
        if args.train_split in splits:
            raise ValueError(
                f"--benchmark {bench.name} is a test-only dataset (evaluation only, no training images): drop "
                "--do_train and evaluate a trained model (--model_name_or_path) or zero-shot CLIP (--method zeroshot)."
            )
        other = [split for split in splits if split != "test"]
        if other:
            raise ValueError(
                f"--benchmark {bench.name} is a test-only dataset: it has only the split 'test', not {other}; pass "
                "--eval_split test."
            )
    loaded = load_benchmark(bench.name, args.data_root)
    result = {}
    for split in splits:
        items = loaded[split]
        if not items:
            raise ValueError(f"--benchmark {bench.name}: the {split!r} split under {args.data_root} holds no images.")
        ds = Dataset.from_dict(
            {"image": [item.path for item in items], "label": [item.label for item in items]}, split=split
        ).cast_column("image", Image())
        result[split] = ds.add_column(SOURCE_ROW_COLUMN, list(range(len(ds))))
    return result, list(loaded["class_names"])


def load_splits(args: DataArguments, splits, cache_dir=None):
    """
    The requested splits as `datasets.Dataset`s with columns `image` (decoded to PIL), `label` (int class index) and
    `source_row` (the row in the split as loaded, for messages about single images), plus the class names in label
    order. Raises before any training on missing columns, bad labels or class names that do not fit the labels.
    """
    from datasets import ClassLabel, DatasetDict, load_dataset

    if args.benchmark is not None and args.data_root is not None:
        return load_benchmark_splits(args, splits)
    splits = list(dict.fromkeys(splits))
    sources = {}  # split -> the file it was read from, for messages
    if args.split_file is not None:
        loaded, split_names = _load_split_file(args, splits)
        image_column, label_column = "image", "label"
        features_names = split_names
        names_source = f"--split_file {args.split_file}"
    else:
        if args.train_file or args.eval_file:
            data_files = {}
            if args.train_file:
                data_files[args.train_split] = args.train_file
            if args.eval_file:
                if args.train_file and args.eval_split == args.train_split and args.eval_file != args.train_file:
                    raise ValueError(
                        f"--train_file {args.train_file} and --eval_file {args.eval_file} are both split "
                        f"{args.train_split!r}: give --train_split and --eval_split different names."
                    )
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
            missing = [split for split in splits if split not in data_files]
            if missing:
                raise ValueError(f"split(s) {missing} not found; the dataset has splits {sorted(data_files)}.")
            # One file at a time: files whose columns differ would otherwise fail inside `datasets` with a CastError.
            loaded = {
                split: load_dataset(builder, data_files={split: data_files[split]}, cache_dir=cache_dir)[split]
                for split in splits
            }
            sources = {split: data_files[split] for split in splits}
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
        _check_columns(loaded, sources, image_column, label_column)
        features_names, names_source = None, None
        for split, ds in loaded.items():
            label_feature = ds.features[label_column]
            if not isinstance(label_feature, ClassLabel):
                continue
            if features_names is None:
                features_names, names_source = list(label_feature.names), f"the ClassLabel of split {split!r}"
            elif list(label_feature.names) != features_names:
                raise ValueError(
                    f"the label columns of the splits name different classes: {names_source} has "
                    f"{len(features_names)} ({features_names[:5]}...), that of split {split!r} has "
                    f"{len(label_feature.names)} ({list(label_feature.names)[:5]}...). Use one class list for all "
                    "splits, or pass --class_names_file."
                )

    file_names = read_class_names_file(args.class_names_file) if args.class_names_file else None
    if file_names is not None and features_names is not None and len(file_names) != len(features_names):
        raise ValueError(
            f"--class_names_file {args.class_names_file} has {len(file_names)} class names, but the data has "
            f"{len(features_names)} classes ({names_source}): give exactly one name per class, in label order."
        )
    class_names = file_names if file_names is not None else features_names
    string_labels = {
        split: _is_string(ds.features[label_column]) for split, ds in loaded.items() if label_column in ds.features
    }
    if class_names is None and args.benchmark is not None and any(string_labels.values()):
        # The raw label names themselves (e.g. a parquet copy with folder names as labels): the label map orders them.
        class_names = sorted(
            {str(y) for split, ds in loaded.items() if string_labels.get(split) for y in ds[label_column]}
        )
    result = {}
    for split, ds in loaded.items():
        ds = _normalise_columns(ds, split, image_column, label_column, class_names, args.image_root)
        result[split] = ds.add_column(SOURCE_ROW_COLUMN, list(range(len(ds))))
    if class_names is None:
        raise ValueError(
            f"the label column {label_column!r} holds class indices but no class names were found (no ClassLabel "
            "feature): pass --class_names_file with one name per line, in label order."
        )
    if file_names is not None and features_names is None:
        _check_names_fit_labels(args.class_names_file, file_names, result, string_labels)
    if args.benchmark is not None:
        return apply_official_label_map(args, result, class_names)
    return result, class_names


def apply_official_label_map(args: DataArguments, data: dict, raw_names: list[str]):
    """
    `--benchmark NAME` on a column source: the raw label names (`raw_names[label]`) become the official class names
    and labels are re-indexed to the official order; rows of classes the official reader ignores are dropped
    (`source_row` keeps naming the row as loaded).
    """
    from datasets import Value

    from training.benchmarks import official_label_map, read_wnid_names

    wnid_names = read_wnid_names(args.imagenet_classnames) if args.imagenet_classnames else None
    label_map = official_label_map(args.benchmark, raw_names, wnid_names)
    result = {}
    for split, ds in data.items():
        labels = ds["label"]
        kept = [row for row, label in enumerate(labels) if label in label_map.labels]
        if len(kept) != len(labels):
            ds = ds.select(kept)
            logger.info(
                "%s: dropped %d %s image(s) of %s", args.benchmark, len(labels) - len(kept), split, label_map.dropped
            )
        official = [label_map.labels[labels[row]] for row in kept]
        ds = ds.remove_columns("label").add_column("label", official).cast_column("label", Value("int64"))
        result[split] = ds
    logger.info(
        "%s: %d source classes mapped to the official names and label order (%s ...).",
        args.benchmark,
        len(label_map.class_names),
        label_map.class_names[:3],
    )
    return result, label_map.class_names


SOURCE_ROW_COLUMN = "source_row"


def _is_string(feature) -> bool:
    from datasets import Value

    return isinstance(feature, Value) and feature.dtype in ("string", "large_string")


def _check_columns(loaded: dict, sources: dict, image_column: str, label_column: str) -> None:
    """Every split has the image and label columns; if only some files have one, name the columns of each file."""
    for kind, column in (("image", image_column), ("label", label_column)):
        lacking = [split for split, ds in loaded.items() if column not in ds.column_names]
        if not lacking:
            continue
        split = lacking[0]
        where = f" (file {sources[split]})" if split in sources else ""
        message = f"{kind} column {column!r} is not in split {split!r}; its columns are {loaded[split].column_names}"
        having = [name for name in loaded if name not in lacking]
        if not having:
            raise ValueError(f"{message}{where}: pass --{kind}_column.")
        per_split = "; ".join(
            f"{name}" + (f" ({sources[name]})" if name in sources else "") + f": {ds.column_names}"
            for name, ds in loaded.items()
        )
        raise ValueError(
            f"{message}{where}, while split(s) {having} have it. The splits must use the same column names, since "
            f"--image_column and --label_column apply to all of them; their columns are {per_split}. Rename the "
            "columns of one file to match the other."
        )


def _check_names_fit_labels(path, names: list[str], data: dict, string_labels: dict) -> None:
    """A names file for integer (or string) labels names exactly the classes of the data: no more, no fewer."""
    used = set()
    for ds in data.values():
        used.update(ds["label"])
    if any(string_labels.values()):
        # String labels were looked up in the names file; names no label uses are classes the data does not have.
        count, what = len(used), "distinct labels"
    else:
        count, what = max(used) + 1 if used else 0, "classes (integer labels 0 .. max)"
    if count != len(names):
        unused = [name for index, name in enumerate(names) if index not in used][:5]
        raise ValueError(
            f"--class_names_file {path} has {len(names)} class names, but the data has {count} {what}; names no "
            f"label uses include {unused}. Give exactly one name per class of the data, in label order."
        )


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
    if _is_string(label_feature):
        if class_names is None:
            raise ValueError(
                f"labels in column {label_column!r} of split {split!r} are strings (e.g. {short(ds[0][label_column])}), "
                "not class indices, and no class names were given: pass --class_names_file (one name per line, "
                "in label order) or store the labels as a ClassLabel feature."
            )
        index = {name: i for i, name in enumerate(class_names)}
        unknown = sorted({y for y in ds[label_column] if y not in index})
        if unknown:
            raise ValueError(
                f"labels {', '.join(short(label) for label in unknown[:5])} of split {split!r} are not among the "
                f"class names {short(class_names)}."
            )
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
                f"{len(class_names)} class names, but the data has at least {max(bad) + 1} classes: check "
                "--class_names_file / --label_column."
            )
    if image_column != "image":
        ds = ds.rename_column(image_column, "image")
    if label_column != "label":
        ds = ds.rename_column(label_column, "label")
    return ds


# ---------------------------------------------------------------------------------------------- base / new


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
        from training.benchmarks import OFFICIAL_CLASS_COUNTS

        record["official_num_classes"] = OFFICIAL_CLASS_COUNTS[args.benchmark]
    return record


def select_labels(ds, relabel: dict[int, int], indices=None):
    """Rows of `ds` (optionally within `indices`) whose label is in `relabel`, as (dataset, kept row indices)."""
    labels = ds["label"]
    candidates = range(len(labels)) if indices is None else indices
    kept = [i for i in candidates if labels[i] in relabel]
    return ds.select(kept), kept


# ---------------------------------------------------------------------------------------------- images


def _describe(image_value, row, split) -> str:
    """Where a bad image is: its file name (when the dataset stored one) and its row in the split as loaded."""
    path = image_value.get("path") if isinstance(image_value, dict) else None
    where = f"row {row}" + (f" of split '{split}'" if split else "")
    return f"{path} ({where})" if path else where


def find_corrupt_images(ds, desc="Checking images", disable_progress=False) -> list[tuple[int, str]]:
    """
    Fully decode every image of `ds` (column `image`); return [(position in `ds`, description)] of those that fail.
    The description names the row in the split as loaded (`source_row`, kept through few-shot and class selection),
    not the position in this subset, which the user cannot look up.
    """
    from datasets import Image
    from PIL import Image as PILImage
    from tqdm.auto import tqdm

    raw = ds.cast_column("image", Image(decode=False))
    rows = raw[SOURCE_ROW_COLUMN] if SOURCE_ROW_COLUMN in raw.column_names else range(len(raw))
    bad = []
    for index in tqdm(range(len(raw)), desc=desc, disable=disable_progress):
        value = raw[index]["image"]
        try:
            source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
            with PILImage.open(source) as image:
                image.load()
        except Exception as error:  # any decoder failure means the file is unusable
            bad.append((index, f"{_describe(value, rows[index], ds.split)}: {type(error).__name__}: {error}"))
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


def check_image_size(image_size) -> None:
    """--image_size, when given, is a resolution a CLIP takes (0 read as "not given" and blamed the processor)."""
    from cocoop_hf.limits_cocoop import BACKBONE_LIMITS

    limit = BACKBONE_LIMITS["image_size"]
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or not 1 <= image_size <= limit
    ):
        raise ValueError(
            f"--image_size must be the model's input resolution in pixels, 1 to {limit} (e.g. 224), got "
            f"{image_size!r}; omit it to use the image processor's crop size."
        )


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
