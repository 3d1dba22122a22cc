"""
`cocoop-hf`, the command installed with the package: one subcommand per job (train, evaluate, the two grids, the
converter, split generation, the recipe list), usable from any folder.

Help answers at once: this module imports nothing but the standard library, and each subcommand's `--help` is built
from parsers in light modules (quick_help, grid_arguments, transfer_arguments, generate_split, recipes), never from
the job's own module, which imports torch and the model package (the converter's parser, which belongs to the model
package, is read from its standalone file without importing the package). A job's module is imported only to run it, inside
`run_script`, so that every expected failure (a missing extra's ImportError included) ends as one `error: ...` line.
"""

import ast
import importlib
import importlib.util
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path


PROG = "cocoop-hf"
HELP_FLAGS = ("-h", "--help")
HELP_ALL = "--help-all"


@dataclass(frozen=True)
class Command:
    module: str  # the job's module, whose main(argv) runs it; imported only to run
    summary: str  # one line in `cocoop-hf --help`
    help_parser: str  # "module:function(prog)": the parser of its --help, light where the job's module is heavy
    takes_config: bool = False  # its first argument may be a config file or a shipped recipe's name
    has_help_all: bool = False  # its quick help leaves options out: --help-all shows the job's full help
    may_use_the_hub: bool = True  # names models or datasets that may be Hub ids (offline at once without the Hub)


COMMANDS = {
    "train": Command(
        "cocoop_hf_training.run_cocoop",
        "Train and evaluate one run (CoCoOp, CoOp, KgCoOp, zero-shot) from a recipe or config file.",
        "cocoop_hf_training.quick_help:train_help_parser",
        takes_config=True,
        has_help_all=True,
    ),
    "evaluate": Command(
        "cocoop_hf_training.evaluate_transfer",
        "Evaluate a trained model, or a backbone zero-shot, on other datasets' classes.",
        "cocoop_hf_training.quick_help:evaluate_help_parser",
    ),
    "benchmark": Command(
        "cocoop_hf_training.run_benchmark",
        "The base-to-new grid (datasets x methods x seeds) and the CoCoOp paper's Table 1.",
        "cocoop_hf_training.commands:benchmark_help_parser",
    ),
    "transfer-benchmark": Command(
        "cocoop_hf_training.run_transfer_benchmark",
        "The cross-dataset / domain-generalisation grid and the paper's Tables 2 and 3.",
        "cocoop_hf_training.commands:transfer_help_parser",
    ),
    "convert": Command(
        "cocoop_hf.convert_official",
        "Convert an official CoOp/CoCoOp (Dassl) checkpoint into a model folder.",
        "cocoop_hf_training.commands:convert_help_parser",
    ),
    "generate-split": Command(
        "cocoop_hf_training.generate_split",
        "Write the official split file (split_zhou_<Name>.json) of a dataset lacking one.",
        "cocoop_hf_training.generate_split:build_parser",
        may_use_the_hub=False,
    ),
    "recipes": Command(
        "cocoop_hf_training.recipes",
        "List the shipped recipes (the published settings, an offline demo).",
        "cocoop_hf_training.recipes:build_parser",
        may_use_the_hub=False,
    ),
}


def module_docstring(module_name: str) -> str:
    """A module's docstring read from its source, without importing (running) the module and what it imports."""
    origin = importlib.util.find_spec(module_name).origin
    return ast.get_docstring(ast.parse(Path(origin).read_text(encoding="utf-8"))) or ""


def benchmark_help_parser(prog: str | None = None):
    from cocoop_hf_training.grid_arguments import build_benchmark_parser

    return build_benchmark_parser(module_docstring(COMMANDS["benchmark"].module), prog=prog)


def transfer_help_parser(prog: str | None = None):
    from cocoop_hf_training.grid_arguments import build_transfer_parser

    return build_transfer_parser(module_docstring(COMMANDS["transfer-benchmark"].module), prog=prog)


def convert_help_parser(prog: str | None = None):
    """The converter's parser, from cocoop_hf/convert_arguments.py loaded by its path: importing it as
    `cocoop_hf.convert_arguments` would first import the model package (torch, transformers: seconds)."""
    package = importlib.util.find_spec("cocoop_hf")  # finds the package without importing it
    path = Path(package.submodule_search_locations[0]) / "convert_arguments.py"
    spec = importlib.util.spec_from_file_location("_cocoop_hf_convert_arguments", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser(prog=prog)


def overview(prog: str = PROG) -> str:
    width = max(map(len, COMMANDS))
    lines = [
        f"usage: {prog} COMMAND [options]",
        "",
        "CoCoOp / CoOp / KgCoOp prompt learning for CLIP-like models on Hugging Face transformers.",
        "",
        "commands:",
        *(f"  {name.ljust(width)}  {command.summary}" for name, command in COMMANDS.items()),
        "",
        textwrap.fill(
            f"`{prog} COMMAND --help` shows a command's options. Try it offline in about 10 s (a tiny CLIP with "
            f"random weights): `{prog} train demo_tiny_cifar10`.",
            100,
        ),
    ]
    return "\n".join(lines)


def _build_help_parser(command: Command, prog: str):
    module_name, function = command.help_parser.split(":")
    return getattr(importlib.import_module(module_name), function)(prog=prog)


def _own_arguments(args: list[str]) -> list[str]:
    """The arguments before `--` (after it, the grids' flags for every cell)."""
    return args[: args.index("--")] if "--" in args else args


# The grids' read-only views: they read the cells' folders and records only, never a model (no Hub id to resolve).
READ_ONLY_FLAGS = ("--status", "--tables_only")


def looks_for_the_hub(command: Command, own_args: list[str], imported) -> bool:
    """Whether this run first checks that the Hub can be reached (hub_reachability): a job that may name Hub ids, not
    a help nor a grid's read-only view, and only before huggingface_hub is imported (`imported`: sys.modules), as it
    reads HF_HUB_OFFLINE then."""
    return (
        command.may_use_the_hub
        and HELP_ALL not in own_args
        and not any(flag in own_args for flag in READ_ONLY_FLAGS)
        and "huggingface_hub" not in imported
    )


def run_command(name: str, args: list[str], prog: str = PROG) -> int:
    """Run subcommand `name` with `args`; `prog` names it in the help (`cocoop-hf train`, or a script's name)."""
    command = COMMANDS.get(name)
    if command is None:
        from cocoop_hf_training.close_names import did_you_mean

        hint = did_you_mean([name], COMMANDS)
        print(
            f"error: unknown command {name!r}{hint}: pick one of {', '.join(COMMANDS)}; `{PROG} --help` says what "
            "each does.",
            file=sys.stderr,
        )
        return 2
    own = _own_arguments(args)
    if command.has_help_all and HELP_ALL in own:
        args = ["--help"]  # the job's own, complete parser (slower: it imports Trainer and torch)
    elif any(flag in own for flag in HELP_FLAGS):
        _build_help_parser(command, prog).print_help()
        return 0
    if looks_for_the_hub(command, own, sys.modules):
        from cocoop_hf_training.hub_reachability import work_offline_if_hub_unreachable

        note = work_offline_if_hub_unreachable()
        if note:
            print(note, file=sys.stderr)
    from cocoop_hf_training.script_runner import run_script

    def job():
        job_args = list(args)
        if command.takes_config and job_args and not job_args[0].startswith("-"):
            from cocoop_hf_training.recipes import resolve_config

            job_args[0] = resolve_config(job_args[0])
        importlib.import_module(command.module).main(job_args)

    # The job's full parser (--help-all) names itself after sys.argv[0], argparse's default prog: "cocoop-hf train"
    # rather than "cocoop-hf" while it runs; given back after, as the caller may be a longer-lived process (tests).
    program_name = sys.argv[0]
    sys.argv[0] = prog
    try:
        run_script(job, prog)  # `prog` names the command in its error lines (a missing extra)
    finally:
        sys.argv[0] = program_name
    return 0


def main(argv=None) -> int:
    """`cocoop-hf COMMAND [options]`; returns the exit status (errors exit through `run_script`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == HELP_ALL:
        print(f"error: --help-all belongs to a command: `{PROG} train --help-all` (every Trainer option too).", file=sys.stderr)
        return 2
    if not argv or argv[0] in HELP_FLAGS:
        print(overview())
        return 0 if argv else 2
    return run_command(argv[0], argv[1:], prog=f"{PROG} {argv[0]}")


if __name__ == "__main__":
    sys.exit(main())
