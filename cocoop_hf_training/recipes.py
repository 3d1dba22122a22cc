"""
The recipes shipped with the package (`cocoop_hf_training/configs/*.yaml`): `cocoop-hf recipes` lists them, and a
config argument that is not a config file but names one (`cocoop-hf train demo_tiny_cifar10`, with or without `.yaml`)
means that file. A config file (an existing file named .yaml/.yml/.json) of that name in the current folder wins; a
folder or other file of a recipe's name does not (the recipe is run, said at INFO); a name that is neither a config file
nor a recipe is refused, naming the recipes.
"""

import argparse
import itertools
import os
import re
import shutil
import textwrap
from pathlib import Path

from transformers.utils import logging

from cocoop_hf_training.close_names import did_you_mean


logger = logging.get_logger(__name__)

CONFIGS = Path(__file__).resolve().parent / "configs"
RECIPE_SUFFIX = ".yaml"
# The names a config file may have (JSON or YAML); here, not in config_flags, so that `cocoop-hf recipes` need not load
# the model package config_flags imports.
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def shipped_recipes() -> dict[str, Path]:
    """Recipe name -> its file, sorted by name."""
    return {path.stem: path for path in sorted(CONFIGS.glob(f"*{RECIPE_SUFFIX}"))}


def resolve_config(argument: str) -> str:
    """
    The config file a command's first argument means: the argument itself when it is a config file (an existing file
    whose name ends with .yaml/.yml/.json: a user's file wins over a recipe of the same name), else the shipped recipe
    it names, also where a folder or another file of that name is in the current folder (an output folder named after
    the recipe is common; said at INFO). Neither: ValueError naming what it is and the recipes.
    """
    if argument.endswith(CONFIG_SUFFIXES) and os.path.isfile(argument):
        return argument
    recipes = shipped_recipes()
    name = argument[: -len(RECIPE_SUFFIX)] if argument.endswith(RECIPE_SUFFIX) else argument
    if name in recipes:
        if os.path.exists(argument):
            logger.info(
                f"{argument} names both {os.path.abspath(argument)}, which is not a config file (a folder, or a file "
                f"not named {'/'.join(CONFIG_SUFFIXES)}), and the shipped recipe {recipes[name]}: running the recipe."
            )
        return str(recipes[name])
    if argument.endswith(CONFIG_SUFFIXES) and not os.path.exists(argument):
        raise FileNotFoundError(
            f"config file {argument} does not exist (looked for {os.path.abspath(argument)}); `cocoop-hf recipes` "
            "lists the shipped recipes, which need no path."
        )
    if os.path.isdir(argument):
        what = "a folder, not a config file"
    elif os.path.exists(argument):
        what = f"not a config file (a config file's name ends with {'/'.join(CONFIG_SUFFIXES)})"
    else:
        what = "neither a file nor a shipped recipe" + did_you_mean([name], recipes)
    raise ValueError(
        f"config {argument} is {what}: give the path of a JSON/YAML config file, or one of the shipped recipes "
        f"({', '.join(recipes)}); `cocoop-hf recipes` says what each is."
    )


# A sentence ends at . ! or ? followed by a space, except after an abbreviation ("e.g. --flag", "i.e. x", "et al. 2023");
# "COOP.md:", "lr 0.002" and a quoted prompt's "{}." go on. Else at the paragraph's end.
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\bal)(?<!\betc)(?<!\bvs)[.!?](?=\s)")
_MAX_COMMENT_LINES = 20  # a recipe's opening paragraph is a few lines: bounded reading of any file put there


def opening_paragraph(path: Path) -> str:
    """
    The recipe's opening comment paragraph, its lines joined: up to a blank comment line, an indented one (a command
    shown as an example) or the first setting; '' when the file opens with no comment.
    """
    lines = []
    with open(path, encoding="utf-8") as handle:
        for line in itertools.islice(handle, _MAX_COMMENT_LINES):
            stripped = line.strip()
            if not stripped and not lines:
                continue
            if not stripped.startswith("#"):
                break
            text = stripped[1:]
            if not text.strip() or text.startswith("  "):  # a blank comment line, or an example indented under it
                break
            lines.append(text.strip())
    return " ".join(lines)


def summary_line(path: Path) -> str:
    """What a recipe is: the first sentence of its opening comment paragraph, whole (never cut mid-sentence)."""
    paragraph = opening_paragraph(path)
    end = _SENTENCE_END.search(paragraph)
    return paragraph[: end.end()] if end else paragraph


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=prog,
        description="List the recipes shipped with cocoop-hf (the published CoOp / CoCoOp / KgCoOp / zero-shot "
        "settings and an offline demo), each with the first sentence of its comment. Run one with "
        "`cocoop-hf train NAME [--option VALUE ...]`; flags after the name override the recipe.",
    )


def main(argv=None) -> dict[str, Path]:
    build_parser().parse_args(argv)
    recipes = shipped_recipes()
    # The names are long (an official recipe's file name): each on its line, its summary wrapped under it.
    width = max(shutil.get_terminal_size().columns, 60)
    print(f"Recipes shipped in {CONFIGS} (run one with `cocoop-hf train NAME`):")
    for name, path in recipes.items():
        print(f"  {name}")
        summary = summary_line(path)
        if summary:
            print(
                textwrap.fill(
                    summary, width, initial_indent=" " * 6, subsequent_indent=" " * 6, break_on_hyphens=False
                )
            )
    return recipes


if __name__ == "__main__":
    main()
