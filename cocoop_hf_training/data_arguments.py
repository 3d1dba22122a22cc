"""`DataArguments`: where a run's images come from and how the protocol splits them (checked when parsed)."""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from transformers.utils import logging


logger = logging.get_logger(__name__)

# Name of the files CoOp's datasets write (datasets/oxford_pets.py etc.: `f"shot_{num_shots}-seed_{seed}.pkl"` in
# `<dataset_dir>/split_fewshot`).
_FEWSHOT_FILE_NAME = re.compile(r"shot_(\d+)-seed_(\d+)\.pkl")

BENCHMARK_SPLITS = ("train", "val", "test")


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
        label names are mapped to the official ones (`cocoop_hf_training.benchmarks.official_label_map`).
        """
        from cocoop_hf_training.benchmarks import WNID_BENCHMARKS, get_benchmark

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
                if source == self.split_file:
                    return Path(source).stem.removeprefix("split_zhou_")
                if source in (self.train_file, self.eval_file):
                    return data_file_dataset_name(source)
                return Path(source.rstrip("/")).stem
        return "dataset"


# File and folder names that name a split or a shard, not a dataset: `train.parquet`, `test-00000-of-00001.parquet`,
# a Hub layout's `data/` folder.
_SPLIT_LIKE_NAME = re.compile(r"(train|test|val|valid|validation|eval|evaluation|dev|data|dataset)([-_.].*)?", re.I)


def data_file_dataset_name(path) -> str:
    """The name a local data file gives its dataset in tables: its stem (`eurosat.parquet` -> eurosat), or, for a
    split's file (`cifar10_demo/train.parquet`), the nearest folder above it whose name is not a split's either."""
    path = Path(path)
    if not _SPLIT_LIKE_NAME.fullmatch(path.stem):
        return path.stem
    for folder in list(Path(os.path.abspath(path)).parents)[:4]:
        if folder.name and not _SPLIT_LIKE_NAME.fullmatch(folder.name):
            return folder.name
    return path.stem


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


def fewshot_file_name(path) -> tuple[int | None, int | None]:
    """(K, seed) from an official few-shot file name `shot_K-seed_S.pkl`; (None, None) for any other name."""
    match = _FEWSHOT_FILE_NAME.fullmatch(Path(path).name)
    return (int(match[1]), int(match[2])) if match else (None, None)
