"""The options of `cocoop_hf_training/run_cocoop.py`: the Dassl recipe's defaults, the script's own `RunArguments`, and the
parsing of flags (or a JSON/YAML file with flags overriding it) with the checks that need several of them."""

import argparse
from dataclasses import dataclass, field

from transformers import HfArgumentParser, TrainingArguments
from transformers.utils import logging

from cocoop_hf_training.class_split import warn_if_training_split_is_evaluated
from cocoop_hf_training.cli import ModelArguments, parse_config_and_flags
from cocoop_hf_training.data_arguments import DataArguments


logger = logging.get_logger(__name__)

# Official CoCoOp recipe (configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml + Dassl defaults): the script's
# defaults, so a run without a config file follows the paper. A config file or flags override them.
RECIPE_DEFAULTS = {
    "learning_rate": 0.002,
    "weight_decay": 5e-4,
    "num_train_epochs": 10,
    "per_device_train_batch_size": 1,
    "per_device_eval_batch_size": 32,
    "save_strategy": "epoch",
    "logging_steps": 20,
    "remove_unused_columns": False,
    "seed": 1,
    "report_to": "none",
}


@dataclass
class RunArguments:
    """Script options that TrainingArguments lacks."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Allow an --output_dir that is not empty: the outputs of a previous run there (checkpoints "
            "included), as its output_manifest.json records them and unchanged, are deleted first; other files are "
            "kept, and one of the same name as an output is refused, never replaced."
        },
    )
    save_adapter_only: bool = field(
        default=False,
        metadata={
            "help": "Save the final model adapter-only (config + prompt learner, ~240 KB at ViT-B/16; loading takes "
            "CLIP from --clip_model_name_or_path) instead of complete with its CLIP. Checkpoints are always lean."
        },
    )
    sgd_momentum: float = field(default=0.9, metadata={"help": "SGD momentum (official: 0.9)."})
    lr_schedule: str = field(
        default="dassl_cosine",
        metadata={
            "help": "'dassl_cosine': constant warmup epoch(s) then cosine, stepped per epoch as Dassl; 'hf': "
            "TrainingArguments.lr_scheduler_type, stepped per optimizer step."
        },
    )
    warmup_epochs: int = field(default=1, metadata={"help": "Constant-lr warmup epochs (official: 1)."})
    warmup_lr: float = field(default=1e-5, metadata={"help": "Learning rate of the warmup epochs (official: 1e-5)."})
    seeds_note: str | None = field(default=None, metadata={"help": "Free text recorded in results.json."})
    prompt_template: str | None = field(
        default=None,
        metadata={
            "help": "The hand-crafted prompt, '{}' standing for the class name (e.g. 'a photo of a {}.'): with "
            "--method zeroshot, the plain backbone is scored with it; with the KgCoOp regulariser (--method kgcoop, "
            "--kgcoop_weight), its zero-shot features are the target. Default with --benchmark: the dataset's "
            "official template (zero-shot CLIP: CoOp trainers/zsclip.py; KgCoOp: its trainers/kgcoop.py; SigLIP "
            "and SigLIP 2 zero-shot: their own 'This is a photo of {}.'); else 'a photo of a {}.' for KgCoOp."
        },
    )
    eval_each_epoch: bool = field(
        default=False,
        metadata={
            "help": "Also evaluate base and new accuracy (and H) after every epoch, logged through Trainer's logging "
            "(--report_to) and kept in results.json under 'per_epoch'. Image features are computed once."
        },
    )


def parse_args(argv=None, description: str | None = None):
    """(model, data, training, run) arguments from flags, or from a JSON/YAML file first and flags overriding it;
    `description`: the script's help text."""
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, TrainingArguments, RunArguments),
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(**RECIPE_DEFAULTS)
    model_args, data_args, training_args, run_args = parse_config_and_flags(parser, argv)
    if data_args.fewshot_file is not None and not training_args.do_train:
        raise ValueError(
            f"--fewshot_file {data_args.fewshot_file} lists training images: pass --do_train, or drop it."
        )
    if model_args.method == "zeroshot" and training_args.do_train:
        raise ValueError(
            "--method zeroshot has nothing to train: drop --do_train (the plain backbone is evaluated zero-shot only)."
        )
    if run_args.lr_schedule not in ("dassl_cosine", "hf"):
        raise ValueError(f"--lr_schedule must be 'dassl_cosine' or 'hf', got {run_args.lr_schedule!r}.")
    if run_args.lr_schedule == "dassl_cosine" and training_args.max_steps > 0:
        raise ValueError("--max_steps does not fit the per-epoch Dassl schedule: use --num_train_epochs.")
    check_unused_trainer_options(training_args, run_args)
    if training_args.do_train and training_args.max_steps <= 0 and not training_args.num_train_epochs > 0:
        raise ValueError(
            f"--num_train_epochs {training_args.num_train_epochs} trains nothing: give a positive number of epochs, "
            "or drop --do_train to evaluate the model as it starts."
        )
    if model_args.class_specific_context:
        check_class_sets(data_args, training_args, "--class_specific_context")
    if training_args.do_train and training_args.do_eval:
        warn_if_training_split_is_evaluated(data_args)
    return model_args, data_args, training_args, run_args


def check_unused_trainer_options(training_args, run_args) -> None:
    """
    Trainer options this script would ignore, refused: it always trains with Dassl's SGD (official optim config), and
    with `--lr_schedule dassl_cosine` (the default) with Dassl's warm-up + cosine schedule. A warm-up as long as the
    training is allowed (Dassl does the same) but said: every step then runs at the warm-up rate.
    """
    from transformers import TrainingArguments

    defaults = TrainingArguments.__dataclass_fields__
    unused = []
    if str(getattr(training_args.optim, "value", training_args.optim)) != defaults["optim"].default:
        unused.append(("--optim", "the optimizer is always SGD (--learning_rate, --sgd_momentum, --weight_decay)"))
    if run_args.lr_schedule == "dassl_cosine":
        scheduler = str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type))
        if scheduler != defaults["lr_scheduler_type"].default:
            unused.append(("--lr_scheduler_type", "pass --lr_schedule hf to use Trainer's schedulers"))
        if training_args.warmup_steps:
            unused.append(("--warmup_steps", "the Dassl warm-up is --warmup_epochs / --warmup_lr"))
    if unused:
        raise ValueError(
            "; ".join(f"{flag} is not used by this script: {why}" for flag, why in unused)
            + ". Drop it (nothing is silently ignored)."
        )
    epochs = training_args.num_train_epochs
    if training_args.do_train and run_args.lr_schedule == "dassl_cosine" and 0 < epochs <= run_args.warmup_epochs:
        logger.warning(
            "--num_train_epochs %s <= --warmup_epochs %s: every step trains at the warm-up rate %g, never at "
            "--learning_rate %g (as Dassl would).",
            epochs,
            run_args.warmup_epochs,
            run_args.warmup_lr,
            training_args.learning_rate,
        )


def check_class_sets(data_args, training_args, what: str) -> None:
    """A class-specific context scores only its training classes: base-to-new evaluation would fail on the new ones."""
    if data_args.protocol == "base_to_new" and training_args.do_eval:
        raise ValueError(
            f"{what} learns one context per training class, so the model cannot score the new classes of "
            "--protocol base_to_new: pass --protocol all (the official CSC runs, scripts/coop/main.sh)."
        )
