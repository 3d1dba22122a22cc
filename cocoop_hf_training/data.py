"""The data API of the training scripts in one import: a run's data arguments, loading, the protocol's class split,
images and transforms, and few-shot draws. Each job lives in its own module, which imports none of the others'
users (no circle: `cocoop_hf_training/fewshot.py` and the modules below import the arguments and loading, never this file):

- `cocoop_hf_training/data_arguments.py`: `DataArguments` (where the images come from; checked when parsed);
- `cocoop_hf_training/data_loading.py`: the splits loaded, their columns and class names checked;
- `cocoop_hf_training/class_split.py`: base / new halves, class names per task, class coverage, relabelling;
- `cocoop_hf_training/image_transforms.py`: corrupt images, the official train / eval transforms;
- `cocoop_hf_training/fewshot.py`: few-shot draws as Dassl makes them, the official few-shot files, the record of a run's draw.
"""

from cocoop_hf_training.class_split import (
    class_coverage,
    class_names_per_task,
    protocol_relabels,
    select_labels,
    subsample_classes,
    warn_if_training_split_is_evaluated,
)
from cocoop_hf_training.data_arguments import BENCHMARK_SPLITS, DataArguments, check_image_size, fewshot_file_name
from cocoop_hf_training.data_loading import (
    SOURCE_ROW_COLUMN,
    apply_official_label_map,
    load_benchmark_splits,
    load_splits,
)
from cocoop_hf_training.fewshot import (
    FEWSHOT_INDICES_NAME,
    FEWSHOT_RULE,
    MAX_VAL_SHOTS,
    OfficialFewShot,
    dassl_few_shot,
    dataset_identity,
    few_shot_indices,
    label_fingerprint,
    official_fewshot_rows,
    record_training_items,
    select_few_shot,
)
from cocoop_hf_training.image_transforms import (
    ImageTransform,
    build_transforms,
    drop_or_raise_corrupt,
    find_corrupt_images,
)


__all__ = [
    "BENCHMARK_SPLITS",
    "FEWSHOT_INDICES_NAME",
    "FEWSHOT_RULE",
    "MAX_VAL_SHOTS",
    "SOURCE_ROW_COLUMN",
    "DataArguments",
    "ImageTransform",
    "OfficialFewShot",
    "apply_official_label_map",
    "build_transforms",
    "check_image_size",
    "class_coverage",
    "class_names_per_task",
    "dassl_few_shot",
    "dataset_identity",
    "drop_or_raise_corrupt",
    "few_shot_indices",
    "fewshot_file_name",
    "find_corrupt_images",
    "label_fingerprint",
    "protocol_relabels",
    "load_benchmark_splits",
    "load_splits",
    "official_fewshot_rows",
    "record_training_items",
    "select_few_shot",
    "select_labels",
    "subsample_classes",
    "warn_if_training_split_is_evaluated",
]
