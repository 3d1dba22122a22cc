"""A training script's command line: a JSON/YAML file of options first (optional), flags after it overriding it; the
checks of the file's names, types and numbers before anything runs."""

import argparse
import dataclasses
import math
import sys

from cocoop_hf_training.close_names import did_you_mean
from cocoop_hf_training.config_files import read_structured_file
from cocoop_hf_training.input_paths import make_input_paths_absolute, resolve_file_paths
from cocoop_hf_training.model_arguments import describe_value
from cocoop_hf_training.recipes import CONFIG_SUFFIXES


def parse_config_and_flags(parser, argv=None) -> tuple:
    """
    Parse `argv` (default: `sys.argv[1:]`) into the dataclasses of `parser` (an `HfArgumentParser`). A JSON/YAML file
    may stand first: its mapping of argument names to values replaces the defaults, and flags after it override it.
    Unknown names in the file are an error, not silently ignored.

    Relative input paths in the file (data files, backbone folder, ...) are relative to the file's folder, so that a
    recipe runs from any folder; flags are relative to the current folder; outputs (`output_dir`) stay relative to
    the current folder in the file too (cocoop_hf_training/input_paths.py). Input paths that name an existing local
    file or folder come back absolute, as the run records them.
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
        # Before the names are unified, so that an error names the key as the file writes it (`backbone`).
        known = {option.lstrip("-") for action in parser._actions for option in action.option_strings}
        values = resolve_file_paths(values, config_path, f"config file {config_path}", known)
        values = _file_names_as_dests(parser, values, config_path)
        _check_file_names(parser, values, config_path)
        _check_file_value_types(parser, values, config_path)
        parser.set_defaults(**values)
    parsed = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    make_input_paths_absolute(parsed, from_file=set(values) - _dests_given(parser, argv) if values else ())
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


def _dests_given(parser, argv) -> set:
    """
    The destinations the command line sets, under any spelling the parser takes (`--backbone`, `--train-file`):
    parsed again into a namespace that already holds a marker for each, which argparse leaves where no flag replaces
    it (it fills in only the defaults a namespace lacks).
    """
    unset = object()
    namespace = argparse.Namespace(**{action.dest: unset for action in parser._actions})
    given, _ = parser.parse_known_args(argv, namespace=namespace)
    return {dest for dest, value in vars(given).items() if value is not unset}


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
        # The names a file may use (an option's dest; argparse's own --help is not one), as the command line hints.
        hint = did_you_mean(unknown, sorted(name for name in known if name != "help"))
        raise ValueError(
            f"config file {config_path} has unknown arguments [{shown}]{more}{hint}; see --help for the names."
        )


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
