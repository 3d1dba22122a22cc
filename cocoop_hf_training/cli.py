"""What the training scripts share on the command line: a JSON/YAML file of options with flags overriding it, the
model options (which CLIP, which method, which prompt) and the logging setup."""

import dataclasses
import logging as std_logging
import math
import os
import sys
from dataclasses import dataclass, field

from transformers.utils import logging

from cocoop_hf.limits_cocoop import describe_value
from cocoop_hf_training.config_files import read_structured_file


CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
METHODS = ("cocoop", "coop", "kgcoop", "zeroshot")
CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
CLIP_DTYPES = ("fp32", "bf16", "fp16")
# KgCoOp's weight w in the official base-to-new runs (htyao89/KgCoOp scripts/base2new_train.sh: WEIGHT=8.0).
KGCOOP_DEFAULT_WEIGHT = 8.0


@dataclass
class ModelArguments:
    """Which CLIP, which method, which prompt."""

    clip_model_name_or_path: str = field(
        default="openai/clip-vit-base-patch16",
        metadata={
            "aliases": ["--backbone"],
            "help": "Hub id or local folder of the frozen backbone (also --backbone, or `backbone:` in a config "
            "file): a CLIPModel (every size, MetaCLIP 1, OpenCLIP conversions), MetaClip2Model, SiglipModel or "
            "Siglip2Model checkpoint, told apart by its config.json `model_type`.",
        },
    )
    clip_revision: str | None = field(default=None, metadata={"help": "Revision (commit) of the CLIP."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A trained CoCoOp/CoOp folder or repo to start from (e.g. evaluation only)."}
    )
    method: str | None = field(
        default=None,
        metadata={
            "help": "'cocoop' (meta-net), 'coop' (conditional=False), 'kgcoop' (CoOp + the KgCoOp regulariser, Yao et "
            "al., CVPR 2023) or 'zeroshot' (CLIP, no training). Default: 'cocoop'; with --model_name_or_path, the "
            "saved model's (another one is refused)."
        },
    )
    kgcoop_weight: float | None = field(
        default=None,
        metadata={
            "help": "Weight w of the KgCoOp regulariser: loss = cross-entropy + w * (1 - mean cosine between each "
            "class's learned text feature and its zero-shot CLIP text feature of the hand-crafted prompt). Default "
            f"{KGCOOP_DEFAULT_WEIGHT} with --method kgcoop (official scripts/base2new_train.sh), off otherwise. Also "
            "accepted with --method cocoop (mean over images and classes): that combination is ours, not the paper's."
        },
    )
    class_specific_context: bool = field(
        default=False,
        metadata={
            "help": "CoOp's class-specific context (official TRAINER.COOP.CSC): one context per class. --method coop "
            "or kgcoop only; such a model cannot score other classes (no base-to-new: use --protocol all)."
        },
    )
    class_token_position: str | None = field(
        default=None,
        metadata={
            "help": "Where the class name goes in the prompt (official TRAINER.COOP.CLASS_TOKEN_POSITION): 'end' "
            "(default), 'middle' (after the first n_ctx // 2 context tokens; needs n_ctx >= 2) or 'front'."
        },
    )
    n_ctx: int | None = field(default=None, metadata={"help": "Context tokens (default: word count of ctx_init)."})
    ctx_init: str | None = field(
        default="a photo of a", metadata={"help": "Words the context starts from; 'none' for a random context."}
    )
    meta_net_reduction: int = field(default=16, metadata={"help": "Meta-net hidden width = projection_dim // this."})
    random_init_clip: bool = field(
        default=False,
        metadata={
            "help": "Build the backbone (any supported one) from its config.json with RANDOM weights (demo/CI "
            "without weights): every accuracy is then meaningless, and the outputs say so."
        },
    )
    random_init_seed: int = field(default=0, metadata={"help": "Seed of the random CLIP weights."})
    clip_dtype: str | None = field(
        default=None,
        metadata={
            "help": "Dtype of the frozen CLIP's weights: 'fp32', 'bf16' or 'fp16' (for a GPU; the official code runs "
            "its CLIP in fp16 weights). The prompt learner, its gradients and the optimizer stay fp32; combine with "
            "--bf16/--fp16 (autocast). Default: fp32, or what a --model_name_or_path model was saved with (the saved "
            "model records it and loads in it again)."
        },
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Cache folder for Hub downloads."})

    def __post_init__(self):
        # Whether --method was given: a saved model (--model_name_or_path) brings its own, and another is refused.
        self.method_given = self.method is not None
        if self.method is None:
            self.method = "cocoop"
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {METHODS}, got {describe_value(self.method, typed=False)}.")
        if self.clip_dtype is not None and self.clip_dtype not in CLIP_DTYPES:
            raise ValueError(
                f"--clip_dtype must be one of {CLIP_DTYPES}, got {describe_value(self.clip_dtype, typed=False)}."
            )
        if isinstance(self.ctx_init, str) and self.ctx_init.strip().lower() in ("", "none", "null"):
            self.ctx_init = None
        self._check_method_options()

    def _check_method_options(self) -> None:
        """The CoOp-family options that do not fit the method, refused in terms of the flags, before anything runs."""
        if self.class_token_position is not None and self.class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ValueError(
                f"--class_token_position must be one of {CLASS_TOKEN_POSITIONS}, got "
                f"{describe_value(self.class_token_position, typed=False)}."
            )
        weight = self.kgcoop_weight
        if weight is not None and (not math.isfinite(weight) or weight < 0):
            raise ValueError(
                f"--kgcoop_weight must be a finite number >= 0 (the KgCoOp weight w; official: "
                f"{KGCOOP_DEFAULT_WEIGHT}), got {weight}."
            )
        if self.model_name_or_path and not self.method_given:
            return  # the saved model's method and options: flags are checked against them (check_saved_options)
        if self.method == "zeroshot":
            given = [
                flag
                for flag, value in (
                    ("--kgcoop_weight", weight),
                    ("--class_specific_context", self.class_specific_context or None),
                    ("--class_token_position", self.class_token_position),
                )
                if value is not None
            ]
            if given:
                raise ValueError(
                    f"{', '.join(given)}: options of a learned prompt; --method zeroshot scores the plain "
                    "backbone with a fixed prompt (drop them, or pick --method coop / kgcoop / cocoop)."
                )
            return
        if self.method == "coop" and weight:
            raise ValueError(
                f"--kgcoop_weight {weight} with --method coop is KgCoOp: pass --method kgcoop (results are then "
                "labelled as such)."
            )
        if self.method == "kgcoop" and weight == 0:
            raise ValueError("--method kgcoop with --kgcoop_weight 0 is plain CoOp: pass --method coop instead.")
        if self.class_specific_context and self.method == "cocoop":
            raise ValueError(
                "--class_specific_context is a CoOp option (official TRAINER.COOP.CSC): a context per class cannot "
                "follow new classes, which is what CoCoOp's conditional context is for. Use --method coop or kgcoop."
            )
        n_ctx = self.n_ctx if self.n_ctx is not None else (len(self.ctx_init.split()) if self.ctx_init else None)
        if self.class_token_position == "middle" and n_ctx is not None and n_ctx < 2:
            raise ValueError(
                f"--class_token_position middle needs at least 2 context tokens, got {n_ctx} (--n_ctx / --ctx_init): "
                "the name goes after the first n_ctx // 2 tokens, none here; that is --class_token_position front."
            )

    def method_config(self) -> dict:
        """The CoCoOpConfig fields of the method and its options (the KgCoOp template aside)."""
        weight = self.kgcoop_weight
        if weight is None:
            weight = KGCOOP_DEFAULT_WEIGHT if self.method == "kgcoop" else 0.0
        return {
            "conditional": self.method == "cocoop",
            "class_token_position": self.class_token_position or "end",
            "class_specific_context": bool(self.class_specific_context),
            "kgcoop_weight": float(weight),
        }

    def given_method_options(self) -> dict:
        """The options passed on the command line or in the config file (left at their defaults: not given)."""
        return {
            name: value
            for name, value in (
                ("kgcoop_weight", self.kgcoop_weight),
                # argparse cannot tell "--class_specific_context false" from no flag: only True counts as given.
                ("class_specific_context", self.class_specific_context or None),
                ("class_token_position", self.class_token_position),
            )
            if value is not None
        }


def parse_config_and_flags(parser, argv=None) -> tuple:
    """
    Parse `argv` (default: `sys.argv[1:]`) into the dataclasses of `parser` (an `HfArgumentParser`). A JSON/YAML file
    may stand first: its mapping of argument names to values replaces the defaults, and flags after it override it.
    Unknown names in the file are an error, not silently ignored.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    _check_one_spelling(parser, argv)
    config_path, values = None, {}
    if argv and not argv[0].startswith("-") and argv[0].endswith(CONFIG_SUFFIXES):
        config_path = argv.pop(0)
        values = read_structured_file(config_path)
        if not isinstance(values, dict):
            raise ValueError(
                f"config file {config_path} must hold a mapping of argument names to values, got "
                f"{type(values).__name__}."
            )
        values = _file_names_as_dests(parser, values, config_path)
        _check_file_names(parser, values, config_path)
        _check_file_value_types(parser, values, config_path)
        parser.set_defaults(**values)
    parsed = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    check_finite_numbers(parsed, config_path, values, argv)
    return parsed


def check_finite_numbers(parsed, config_path=None, file_values=None, argv=None) -> None:
    """
    Every float option of the parsed dataclasses is a finite number: argparse's `float` and YAML (`.nan`, `.inf`)
    both accept NaN and infinity, and `--learning_rate nan` would train NaN prompts and write results and a card
    without a word. Checked once, after parsing, before anything is written; names the flag (or the config file).
    """
    for arguments in parsed:
        for item in dataclasses.fields(arguments):
            value = getattr(arguments, item.name, None)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            where = f"--{item.name}"
            if item.name in (file_values or {}) and f"--{item.name}" not in _given_flags(argv):
                where = f"config file {config_path}: `{item.name}`"
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{where} must be a finite number, got {value}.")
            # torch refuses these with "Invalid learning rate: -1", naming no flag; a negative warm-up lr or weight
            # decay would be taken silently (the warm-up steps against the gradient, the decay grows the weights).
            if item.name in NON_NEGATIVE_RATES and value < 0:
                raise ValueError(f"{where} must be zero or more, got {value}: {NON_NEGATIVE_RATES[item.name]}.")


# Rates that are refused when negative (check_finite_numbers), with what a right value looks like.
NON_NEGATIVE_RATES = {
    "learning_rate": "a learning rate is a step size (CoOp/CoCoOp: 0.002)",
    "weight_decay": "weight decay shrinks weights toward zero (official: 5e-4)",
    "warmup_lr": "the warm-up learning rate is a step size (official: 1e-5)",
}


def _spellings(parser) -> dict[str, list[str]]:
    """An option's destination -> its names (`--backbone` is another name of `--clip_model_name_or_path`)."""
    return {
        action.dest: [option.lstrip("-") for option in action.option_strings]
        for action in parser._actions
        if len(action.option_strings) > 1
    }


def _check_one_spelling(parser, argv) -> None:
    """An option given under two of its names (argparse would keep the last one silently) is refused."""
    given = _given_flags(argv)
    for dest, names in _spellings(parser).items():
        used = [f"--{name}" for name in names if f"--{name}" in given]
        if len(used) > 1:
            raise ValueError(f"{' and '.join(used)} name the same option ({dest}): give one of them.")


def _file_names_as_dests(parser, values: dict, config_path) -> dict:
    """A config file's keys under an option's other name (`backbone`) read as its destination; both refused."""
    values = dict(values)
    for dest, names in _spellings(parser).items():
        used = [name for name in names if name != dest and name in values]
        if used and dest in values or len(used) > 1:
            raise ValueError(
                f"config file {config_path}: {', '.join(f'`{n}`' for n in [*used, dest] if n in values)} name the "
                f"same option ({dest}): give one of them."
            )
        if used:
            values[dest] = values.pop(used[0])
    return values


def _given_flags(argv) -> set:
    """The option names given on the command line (`--name` and `--name=value`)."""
    return {arg.split("=", 1)[0] for arg in argv or () if isinstance(arg, str) and arg.startswith("--")}


def _check_file_names(parser, values: dict, config_path) -> None:
    """Every name in a config file is an argument's (unknown ones are an error, not ignored), shown bounded."""
    not_text = [name for name in values if not isinstance(name, str)]
    if not_text:
        raise ValueError(
            f"config file {config_path}: argument names must be text, got {describe_value(not_text[0], 60)}."
        )
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(values) - known)
    if unknown:
        shown = ", ".join(describe_value(name, 40, typed=False) for name in unknown[:5])
        more = f" and {len(unknown) - 5:,} more" if len(unknown) > 5 else ""
        raise ValueError(f"config file {config_path} has unknown arguments [{shown}]{more}; see --help for the names.")


def _check_file_value_types(parser, values: dict, config_path) -> None:
    """
    A config file's values become defaults as they are (argparse converts only command-line strings). Text is
    converted as the same text on the command line would be (YAML reads `1e-3` as a string); values of the wrong
    kind are refused, e.g. `kgcoop_weight: true` (would train with w = 1). Changes `values` in place.
    """
    actions = {action.dest: action for action in parser._actions}
    for name, value in values.items():
        action = actions[name]
        kind = getattr(action.type, "__name__", "")
        if value is None or action.nargs in ("+", "*") or kind not in ("string_to_bool", "int", "float", "str"):
            continue
        if isinstance(value, str) and kind != "str":
            try:
                values[name] = action.type(value)
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"config file {config_path}: `{name}`: {describe_value(value, typed=False)} is not a valid {kind}."
                ) from error
            continue
        wrong = {
            "string_to_bool": not isinstance(value, bool),
            "int": isinstance(value, bool) or not isinstance(value, int),
            "float": isinstance(value, bool) or not isinstance(value, (int, float)),
            # A list of text too: Trainer's `report_to` is "str or list of str" and argparse types it as str.
            "str": not (
                isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
            ),
        }[kind]
        if wrong:
            expected = {"string_to_bool": "true or false", "int": "an integer", "float": "a number", "str": "text"}
            raise ValueError(
                f"config file {config_path}: `{name}` must be {expected[kind]}, got {describe_value(value)}."
            )


class _CurrentStdoutHandler(std_logging.StreamHandler):
    """Writes to whatever `sys.stdout` is at the time of the record (test runners and notebooks swap it)."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ and setStream assign it; the current stdout wins
        pass


def setup_logging(script_logger_name: str, level: int, transformers_level: int | None = None) -> None:
    """
    As transformers' example scripts: the script's own logger and those of the `cocoop_hf_training` modules print at `level`
    (INFO on the main process) to stdout; transformers logs at `transformers_level` (default: unchanged).

    A script run as `python training/x.py` logs under `__main__`, not `training.x`, so its logger is named here
    explicitly; the modules it imports (`cocoop_hf_training.data`, `cocoop_hf_training.evaluation`, ...) log under `cocoop_hf_training`.
    """
    names = ["cocoop_hf_training"]
    if script_logger_name != "cocoop_hf_training" and not script_logger_name.startswith("cocoop_hf_training."):
        names.append(script_logger_name)
    for name in names:
        target = std_logging.getLogger(name)
        if not any(isinstance(handler, _CurrentStdoutHandler) for handler in target.handlers):
            handler = _CurrentStdoutHandler()
            handler.setFormatter(
                std_logging.Formatter("%(asctime)s - %(levelname)s - %(name)s - %(message)s", "%H:%M:%S")
            )
            target.addHandler(handler)
        target.setLevel(level)
    if transformers_level is not None:
        logging.set_verbosity(transformers_level)
    logging.enable_explicit_format()


def run_script(main) -> None:
    """
    Run a script's `main()`. Bad input is refused with ValueError / FileNotFoundError carrying a message that names the
    culprit: show that message and exit with status 2, as argparse does, instead of a traceback; so are a full disk and
    a read-only or forbidden output path (OSError ENOSPC / EROFS / EACCES ...). Set COCOOP_HF_TRACEBACK=1 to see the
    traceback too; any other exception keeps its traceback.
    """
    from cocoop_hf_training.write_errors import write_error_message

    try:
        main()
    except (ValueError, FileNotFoundError) as error:
        if os.environ.get("COCOOP_HF_TRACEBACK"):
            raise
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as error:
        # A full disk, a read-only or forbidden output folder: one line naming the path, not a traceback.
        message = write_error_message(error)
        if message is None or os.environ.get("COCOOP_HF_TRACEBACK"):
            raise
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
