"""
The command lines of the two grids (`cocoop-hf benchmark`, `cocoop-hf transfer-benchmark`): their parsers, built here
without torch or the model package so that `--help` answers at once, and the grid's backbone flags (`--backbone`,
`--random_init_clip`) turned into the run_cocoop flags every cell gets, with local paths made absolute.

The grids themselves (cocoop_hf_training/run_benchmark.py, run_transfer_benchmark.py) parse with these parsers; the
names the help lists without the dataset catalogue (the 11 datasets of Table 1, the methods) are checked against it by
tests/test_grid_arguments.py.
"""

import argparse
import textwrap

from cocoop_hf_training.input_paths import LOCAL_INPUTS, LOCAL_OR_HUB_INPUTS, local_path_absolute


# The datasets of Table 1 in catalogue order (run_benchmark.BASE_TO_NEW, computed from the catalogue, must equal this).
TABLE1_DATASETS = (
    "ImageNet",
    "Caltech101",
    "OxfordPets",
    "StanfordCars",
    "OxfordFlowers",
    "Food101",
    "FGVCAircraft",
    "SUN397",
    "DescribableTextures",
    "EuroSAT",
    "UCF101",
)
# The methods of each grid, in the order their cells run (grid.RECIPES has a recipe for each Table 1 method).
BENCHMARK_METHODS = ("zeroshot", "coop", "cocoop", "kgcoop", "ivlp", "maple", "promptsrc")
TRANSFER_METHODS = ("zeroshot", "coop", "cocoop", "maple", "promptsrc")
# The CoCoOp paper's Tables 2 and 3 (the default); MaPLe and PromptSRC on request, with their cross-dataset recipes.
TRANSFER_DEFAULT_METHODS = ("zeroshot", "coop", "cocoop")


def _spellings(*names: str) -> tuple[str, ...]:
    """The flags run_cocoop's parser takes for `names`: `--name`, and HfArgumentParser's dashed `--name-with-dashes`."""
    return tuple(dict.fromkeys(f"--{spelling}" for name in names for spelling in (name, name.replace("_", "-"))))


# run_cocoop flags whose value may be a local path (input_paths' one list of them, under every spelling): recorded
# absolute in the cells' commands (grid_cells.json), so the same grid started from another folder finds the same files
# and is recognised as the same grid.
PATH_FLAGS = _spellings(*LOCAL_INPUTS, *LOCAL_OR_HUB_INPUTS)
# The run_cocoop names of the option the grid's --backbone stands for (one refused after '--' when it is given).
BACKBONE_FLAGS = _spellings("clip_model_name_or_path", "backbone")

RUN_COCOOP_FLAGS_NOTE = textwrap.fill(
    "Flags after `--` go to every cell's run (`cocoop-hf train --help` lists them); local paths among them are "
    "recorded absolute.",
    100,
)


def add_backbone_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backbone",
        default=None,
        metavar="PATH_OR_ID",
        help="Hub id or local folder of the frozen backbone of every cell (run_cocoop's --clip_model_name_or_path; "
        "default: the recipes' openai/clip-vit-base-patch16). A local folder is recorded as an absolute path.",
    )
    parser.add_argument(
        "--random_init_clip",
        action="store_true",
        help="Build every cell's backbone from its config.json with RANDOM weights (a trial run without weights: "
        "every accuracy is then meaningless, and the tables say so).",
    )


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the cells run (cocoop_hf_training/grid_launchers.py), and the two read-only views of a grid."""
    group = parser.add_argument_group("launchers (where the cells run)")
    group.add_argument(
        "--launcher",
        choices=["inline", "local", "slurm"],
        default="inline",
        help="inline (default): one cell after another in this process. local: each cell a process of this machine "
        "(submitit), --max_parallel at a time, each with a GPU of its own. slurm: each cell a SLURM job (submitit job "
        "arrays; needs --slurm_time); the command returns once they are submitted. Logs: <output_dir>/grid_jobs/.",
    )
    group.add_argument(
        "--max_parallel", type=int, default=None, help="--launcher local: cells at once (default 1; at most the GPUs)."
    )
    group.add_argument(
        "--slurm_config",
        default=None,
        metavar="YAML",
        help="--launcher slurm: a YAML file with a `slurm:` block of the options below (without `slurm_`) and "
        "`setup:` (shell lines run before each job); the flags win over it.",
    )
    group.add_argument("--slurm_partition", default=None, help="--launcher slurm: the partition (sbatch --partition).")
    group.add_argument(
        "--slurm_gpus_per_job", type=int, default=None, help="--launcher slurm: GPUs per cell (default 1)."
    )
    group.add_argument(
        "--slurm_time", type=int, default=None, metavar="MINUTES", help="--launcher slurm: each job's time limit."
    )
    group.add_argument("--slurm_mem_gb", type=float, default=None, help="--launcher slurm: memory per job (GB).")
    group.add_argument("--slurm_cpus_per_task", type=int, default=None, help="--launcher slurm: CPUs per job.")
    group.add_argument(
        "--slurm_array_parallelism", type=int, default=None, help="--launcher slurm: array jobs running at once."
    )
    group.add_argument("--slurm_account", default=None, help="--launcher slurm: the account (sbatch --account).")
    group.add_argument("--slurm_qos", default=None, help="--launcher slurm: the quality of service (sbatch --qos).")
    views = parser.add_mutually_exclusive_group()
    views.add_argument(
        "--status",
        action="store_true",
        help="Print each cell's state (finished, running, failed, not started) and the failed cells' logs; runs "
        "nothing.",
    )
    views.add_argument(
        "--tables_only",
        action="store_true",
        help="Write the tables from the cells finished so far (the others shown as missing); runs nothing.",
    )


def build_benchmark_parser(description: str | None = None, prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of the base-to-new grid (Table 1); `description`: run_benchmark's docstring."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=RUN_COCOOP_FLAGS_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s --benchmark NAME [NAME ...] --data_root DIR --output_dir DIR [options] [-- RUN_COCOOP_FLAGS]",
    )
    parser.add_argument(
        "--benchmark",
        nargs="+",
        required=True,
        help=f"Datasets (official names, folder names or aliases), or 'all' for the 11 of Table 1: {TABLE1_DATASETS}.",
    )
    parser.add_argument("--data_root", required=True, help="The $DATA folder of the official DATASETS.md layout.")
    parser.add_argument(
        "--output_dir",
        required=True,
        help="Grid folder: one sub-folder per cell, grid_cells.json (each cell's flags) and table1.md/.json/.png, "
        "which show the cells of this command only (re-run the full grid command for the full table: finished "
        "cells are skipped).",
    )
    parser.add_argument(
        "--method",
        nargs="+",
        default=list(BENCHMARK_METHODS),
        choices=list(BENCHMARK_METHODS),
        help="Methods (default: all seven).",
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[1, 2, 3], help="Seeds (default: 1 2 3, as the paper)."
    )
    add_backbone_arguments(parser)
    add_launcher_arguments(parser)
    return parser


def build_transfer_parser(description: str | None = None, prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of the transfer grid (Tables 2 and 3); `description`: run_transfer_benchmark's docstring."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=RUN_COCOOP_FLAGS_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s --data_root DIR --output_dir DIR [options] [-- RUN_COCOOP_FLAGS]",
    )
    parser.add_argument("--data_root", required=True, help="The $DATA folder of the official DATASETS.md layout.")
    parser.add_argument(
        "--output_dir", required=True, help="Grid folder: one sub-folder per cell, grid_cells.json, transfer.*."
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        default=["all"],
        help="Target datasets (names, folder names or aliases); 'cross_dataset' = the 10 of Table 2, 'dg' = the 4 of "
        "Table 3, 'all' (default) = both.",
    )
    parser.add_argument(
        "--method",
        nargs="+",
        default=list(TRANSFER_DEFAULT_METHODS),
        choices=list(TRANSFER_METHODS),
        help="Methods (default: the CoCoOp paper's zeroshot coop cocoop; also maple, promptsrc with their official "
        "cross-dataset recipes).",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="Seeds (default: 1 2 3).")
    add_backbone_arguments(parser)
    add_launcher_arguments(parser)
    return parser


def _flag_name(argument: str) -> str:
    return argument.split("=", 1)[0]


def _given(extra: list[str], flags: tuple[str, ...]) -> list[str]:
    """Which of `flags` the run_cocoop flags name, also under a prefix (run_cocoop refuses abbreviations, but the clash
    with the grid's own flag is the clearer refusal)."""
    names = [_flag_name(arg) for arg in extra if arg.startswith("--") and len(_flag_name(arg)) > 2]
    return [name for name in names if any(flag.startswith(name) for flag in flags)]


def absolute_path_flags(extra: list[str]) -> list[str]:
    """`extra` with the value of each PATH_FLAGS flag (`--flag VALUE` or `--flag=VALUE`; run_cocoop takes no
    abbreviation) recorded as input_paths records a flag's value: `~` expanded, absolute where it names an existing
    local path; Hub ids and other values are kept as given."""
    result = list(extra)
    for index, argument in enumerate(result):
        name = _flag_name(argument)
        if name not in PATH_FLAGS:
            continue
        if "=" in argument:
            result[index] = f"{name}={local_path_absolute(argument.split('=', 1)[1])}"
        elif index + 1 < len(result) and not result[index + 1].startswith("--"):
            result[index + 1] = local_path_absolute(result[index + 1])
    return result


def cell_flags(args: argparse.Namespace) -> list[str]:
    """
    The run_cocoop flags every cell gets: the grid's --backbone and --random_init_clip as the run_cocoop flags they
    stand for, then the flags after `--`; local paths absolute. The same backbone given both ways is refused (argparse
    would keep one of them silently).
    """
    own = []
    if args.backbone is not None:
        clash = _given(args.extra, BACKBONE_FLAGS)
        if clash:
            raise ValueError(
                f"--backbone {args.backbone} and {clash[0]} after '--' name the same option (the cells' backbone): "
                "give one of them."
            )
        own += ["--clip_model_name_or_path", local_path_absolute(args.backbone)]
    if args.random_init_clip:
        if _given(args.extra, ("--random_init_clip",)):
            raise ValueError("--random_init_clip is given twice, before and after '--': give it once.")
        own += ["--random_init_clip", "true"]
    return [*own, *absolute_path_flags(args.extra)]
