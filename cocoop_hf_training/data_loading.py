"""Loading the splits of a run: a Hub dataset, local files, an official CoOp split file or a benchmark folder; their
columns normalised to (image, label, source_row) and their class names (and the benchmarks' label maps) checked.

Official reference: CoOp `datasets/oxford_pets.py` `OxfordPets.read_split`.
"""

import os
from pathlib import Path

from transformers.utils import logging

from cocoop_hf_training.data_arguments import DataArguments
from cocoop_hf_training.split_checks import read_class_names_file, read_json, repeated_names, short, split_entries


logger = logging.get_logger(__name__)

_DATA_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}


def _check_data_file(flag: str, path: str) -> None:
    """
    Refuse a --train_file/--eval_file that is not a file, naming the flag and the very place looked in: a relative
    path is relative to the current folder (one in a config file arrives made absolute against the file's folder).
    """
    if os.path.isfile(path):
        return
    looked = os.path.abspath(path)
    where = "" if os.path.isabs(path) else f" (looked for {looked}, relative to the current folder {os.getcwd()})"
    what = "is a folder, not a data file" if os.path.isdir(path) else "does not exist"
    raise ValueError(
        f"{flag} {path} {what}{where}: give the path of a {' / '.join(sorted(_DATA_FILE_BUILDERS))} file (in a "
        f"config file `{flag[2:]}:`, relative to the config file's folder)."
    )


def _load_split_file(args: DataArguments, splits, backbone: str = "clip"):
    """
    Official CoOp `read_split`: lists of [relative path, label, class name]; checks every entry
    (`cocoop_hf_training.split_checks.split_entries`), that one label has one name and the labels run 0..n-1, that no two
    labels share a name (their prompts would be identical: `split_checks.name_key` for `backbone`), and that every file
    exists.
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
    twice = repeated_names(class_names, word="labels", backbone=backbone)
    if twice:
        raise ValueError(
            f"--split_file {args.split_file}: the class name {twice}: two classes "
            "with one name get the same prompt and cannot be told apart; give each class its own name."
        )
    return datasets_, class_names


def load_benchmark_splits(args: DataArguments, splits):
    """
    The requested splits of `--benchmark` under `--data_root` (cocoop_hf_training/benchmarks.py reads the official layout), as
    `load_splits` returns them: `image` (decoded from the item's path), `label`, `source_row`; the official class
    names in label order. Test-only datasets (ImageNet-V2/-Sketch/-A/-R) have no training or validation images.
    """
    from datasets import Dataset, Image

    from cocoop_hf_training.benchmarks import get_benchmark, load_benchmark

    splits = list(dict.fromkeys(splits))
    bench = get_benchmark(args.benchmark)
    if bench.test_only:
        if args.train_split in splits:
            raise ValueError(
                f"--benchmark {bench.name} is a test-only dataset (evaluation only, no training images): drop "
                "--do_train and evaluate a trained model (--model_name_or_path) or the plain backbone zero-shot (--method zeroshot)."
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


def load_splits(args: DataArguments, splits, cache_dir=None, backbone: str = "clip"):
    """
    The requested splits as `datasets.Dataset`s with columns `image` (decoded to PIL), `label` (int class index) and
    `source_row` (the row in the split as loaded, for messages about single images), plus the class names in label
    order. Raises before any training on missing columns, bad labels or class names that do not fit the labels.
    `backbone` (the run's `model_type`): what makes two class names one prompt (`split_checks.name_key`).
    """
    from datasets import ClassLabel, DatasetDict, load_dataset

    if args.benchmark is not None and args.data_root is not None:
        return load_benchmark_splits(args, splits)
    splits = list(dict.fromkeys(splits))
    sources = {}  # split -> the file it was read from, for messages
    if args.split_file is not None:
        loaded, split_names = _load_split_file(args, splits, backbone)
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
            for flag, path in (("--train_file", args.train_file), ("--eval_file", args.eval_file)):
                if path:
                    _check_data_file(flag, path)
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

    file_names = read_class_names_file(args.class_names_file, backbone) if args.class_names_file else None
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

    from cocoop_hf_training.benchmarks import official_label_map, read_wnid_names

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
