"""The command line of `cocoop-hf train` (run_cocoop): the parsing of flags (or a JSON/YAML file with flags overriding
it; each option under its exact names, no abbreviation) with the checks that need several of them. The script's own
options and the recipe's defaults live in run_options (light, for the quick `--help`) and are re-exported here."""

import argparse

from transformers import TrainingArguments
from transformers.utils import logging

from cocoop_hf_training.class_split import warn_if_training_split_is_evaluated
from cocoop_hf_training.cli import ModelArguments, parse_config_and_flags
from cocoop_hf_training.data_arguments import DataArguments
from cocoop_hf_training.exact_option_parser import ExactOptionParser
from cocoop_hf_training.run_options import RECIPE_DEFAULTS as RECIPE_DEFAULTS
from cocoop_hf_training.run_options import RunArguments as RunArguments


logger = logging.get_logger(__name__)


def parse_args(argv=None, description: str | None = None):
    """(model, data, training, run) arguments from flags, or from a JSON/YAML file first and flags overriding it;
    `description`: the script's help text."""
    parser = ExactOptionParser(
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
        # Once per process: a grid parses each cell's flags (check_run_cocoop_flags), then each cell runs them.
        logger.warning_once(
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
