"""
The recipes shipped with the package (`cocoop_hf_training/configs/*.yaml`): `cocoop-hf recipes` lists them, and a
config argument that is not a file but names one (`cocoop-hf train demo_tiny_cifar10`, with or without `.yaml`) means
that file. A real file of that name in the current folder wins; a name that is neither is refused, naming the recipes.
"""

import argparse
import os
from pathlib import Path


CONFIGS = Path(__file__).resolve().parent / "configs"
RECIPE_SUFFIX = ".yaml"


def shipped_recipes() -> dict[str, Path]:
    """Recipe name -> its file, sorted by name."""
    return {path.stem: path for path in sorted(CONFIGS.glob(f"*{RECIPE_SUFFIX}"))}


def resolve_config(argument: str) -> str:
    """
    The config file a command's first argument means: the argument itself when it names an existing path (a user's
    file wins over a recipe of the same name), else the shipped recipe it names. Neither: ValueError naming both.
    """
    if os.path.exists(argument):
        return argument
    recipes = shipped_recipes()
    name = argument[: -len(RECIPE_SUFFIX)] if argument.endswith(RECIPE_SUFFIX) else argument
    if name in recipes:
        return str(recipes[name])
    raise ValueError(
        f"config {argument} is neither a file nor a shipped recipe: give the path of a JSON/YAML config file, or one "
        f"of the shipped recipes ({', '.join(recipes)}); `cocoop-hf recipes` says what each is."
    )


def summary_line(path: Path) -> str:
    """The first comment line of a recipe (its opening says what it is), or '' when it opens with none."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                return line.strip().lstrip("#").strip() if line.lstrip().startswith("#") else ""
    return ""


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=prog,
        description="List the recipes shipped with cocoop-hf (the published CoOp / CoCoOp / KgCoOp / zero-shot "
        "settings and an offline demo), each with the first line of its comment. Run one with "
        "`cocoop-hf train NAME [--option VALUE ...]`; flags after the name override the recipe.",
    )


def main(argv=None) -> dict[str, Path]:
    build_parser().parse_args(argv)
    recipes = shipped_recipes()
    width = max(map(len, recipes), default=0)
    print(f"Recipes shipped in {CONFIGS} (run one with `cocoop-hf train NAME`):")
    for name, path in recipes.items():
        print(f"  {name.ljust(width)}  {summary_line(path)}")
    return recipes


if __name__ == "__main__":
    main()
