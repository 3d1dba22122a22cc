"""
The quick `--help` of `cocoop-hf train` and `cocoop-hf evaluate`, one layout for both: a short usage line, the
project's own options grouped (train: model, data, run; evaluate: model, evaluation) with their help and defaults, then
how a config file is read and, for train, one paragraph on the most used Trainer options. Built from the option
dataclasses in light modules (no torch, no model package), so it answers in about a second; `--help-all` is the full
parser of run_cocoop with every Trainer option.
"""

import argparse
import textwrap

from transformers.hf_argparser import HfArgumentParser

from cocoop_hf_training.commands import HELP_ALL, module_docstring
from cocoop_hf_training.data_arguments import DataArguments
from cocoop_hf_training.model_arguments import ModelArguments
from cocoop_hf_training.run_options import RECIPE_DEFAULTS, RunArguments
from cocoop_hf_training.transfer_arguments import TransferArguments


# The Trainer options (transformers.TrainingArguments) a run most often sets, named in the quick help; the others are
# behind --help-all. tests/test_quick_help.py checks that each exists in TrainingArguments.
TRAINER_OPTIONS = (
    "output_dir",
    "num_train_epochs",
    "learning_rate",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "seed",
    "do_train",
    "do_eval",
    "fp16",
    "bf16",
    "report_to",
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """
    Short entries: each option under its own names only (not HfArgumentParser's dashed spellings, which are accepted
    all the same), a switch without its optional `true/false` value, and the default after the help where there is
    one to say (not None, not off, not already in the help text). Description and epilog as written.
    """

    def _format_action_invocation(self, action):
        if not action.option_strings:
            return super()._format_action_invocation(action)
        names = [name for name in action.option_strings if "-" not in name.lstrip("-")] or action.option_strings
        if action.nargs == 0 or (action.nargs == "?" and action.const is True):  # a switch
            return ", ".join(names)
        return f"{', '.join(names)} {self._format_args(action, self._get_default_metavar_for_optional(action))}"

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if default in (None, False, argparse.SUPPRESS) or "default" in text.lower():
            return text
        return f"{text} (default: {default})"


def _group(arguments: type, title: str) -> type:
    # HfArgumentParser puts a dataclass's options under its own heading when the class has `_argument_group_name`; a
    # subclass carries it, so the option dataclasses the scripts parse into stay as they are.
    return type(arguments.__name__, (arguments,), {"_argument_group_name": title, "__doc__": arguments.__doc__})


# How a config file's paths resolve (cocoop_hf_training/config_flags.py), said wherever a command takes one.
CONFIG_PATHS = (
    "Relative input paths inside the file are read from the file's folder; output_dir is relative to the folder you "
    "run from; flags are relative to the current folder."
)
USAGE = "%(prog)s [CONFIG] [--option VALUE ...]"


def _quick_parser(groups, prog: str | None, description: str, epilog: str) -> HfArgumentParser:
    """
    The layout of every quick help: the short usage line, the description, the options under one heading per
    (dataclass, title) of `groups`, the epilog. Only its help is used: the command parses with its own parser.
    """
    return HfArgumentParser(
        tuple(_group(arguments, title) for arguments, title in groups),
        prog=prog,
        usage=USAGE,
        description=description,
        epilog=epilog,
        formatter_class=HelpFormatter,
    )


def _trainer_paragraph(width: int = 100) -> str:
    def named(option: str) -> str:
        default = RECIPE_DEFAULTS.get(option)
        return f"--{option}" if default is None else f"--{option} ({default})"

    listed = [named(option) for option in TRAINER_OPTIONS if option not in ("fp16", "bf16", "report_to")]
    text = (
        "Trainer options: every option of transformers' TrainingArguments is accepted as well (in a config file "
        f"too). The most used: {', '.join(listed)}, --fp16 / --bf16 and {named('report_to')}; in parentheses the "
        f"recipe default this command starts from. `{HELP_ALL}` lists every option, Trainer's included (slower: it "
        "loads torch)."
    )
    config = (
        "CONFIG: a JSON/YAML file of these options (flags after it override it), or the name of a shipped recipe: "
        "`cocoop-hf recipes` lists them (e.g. `cocoop-hf train demo_tiny_cifar10`, a 10-second offline demo). "
        + CONFIG_PATHS
        + " A run does what --do_train and --do_eval ask (Trainer's switches, off by default; every shipped recipe "
        "sets both): a file of your own sets them too."
    )
    return "\n\n".join(textwrap.fill(paragraph, width) for paragraph in (config, text))


def train_help_parser(prog: str | None = None) -> HfArgumentParser:
    """A parser whose help is the quick help of `cocoop-hf train` (it is never used to parse a run: run_arguments is)."""
    parser = _quick_parser(
        (
            (ModelArguments, "model options (which backbone, which method, which prompt)"),
            (DataArguments, "data options (which images, which protocol)"),
            (RunArguments, "run options (the script's own, besides Trainer's)"),
        ),
        prog,
        description=textwrap.fill(
            "Train and evaluate CoCoOp / CoOp / KgCoOp / IVLP / MaPLe / PromptSRC, or score a backbone zero-shot, "
            "with the paper's protocol "
            "(base-to-new by default) on Hugging Face Trainer; writes results.json, results.md, results.png and a "
            "model card into --output_dir.",
            100,
        ),
        epilog=_trainer_paragraph(),
    )
    parser.add_argument(HELP_ALL, action="store_true", help="Show every option, Trainer's included, and exit.")
    return parser


def evaluate_help_parser(prog: str | None = None) -> HfArgumentParser:
    """The quick help of `cocoop-hf evaluate`, laid out as train's (its options are all here: it has no Trainer's)."""
    return _quick_parser(
        (
            (ModelArguments, "model options (which trained model, or which backbone zero-shot)"),
            (TransferArguments, "evaluation options (which targets, where the results go, which device)"),
        ),
        prog,
        description=module_docstring("cocoop_hf_training.evaluate_transfer"),
        epilog=textwrap.fill(
            "CONFIG: a JSON/YAML file of these options (flags after it override it). " + CONFIG_PATHS, 100
        ),
    )
