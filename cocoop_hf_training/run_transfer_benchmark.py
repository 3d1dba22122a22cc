#!/usr/bin/env python
r"""
Cross-dataset transfer and domain generalisation (the CoCoOp paper's Tables 2 and 3) with one command.

    cocoop-hf transfer-benchmark --data_root DATA --output_dir out/transfer
    cocoop-hf transfer-benchmark --data_root DATA --output_dir out/transfer --method cocoop \
        --targets eurosat imagenet-a --seeds 1 -- --per_device_eval_batch_size 50

As the official scripts/cocoop/xd_train.sh and xd_test.sh: CoOp and CoCoOp are trained on ImageNet (all 1,000
classes, 16 shots, seeds 1 2 3; CoCoOp vit_b16_c4_ep10_batch1_ctxv1, CoOp the ImageNet recipe of
`cocoop-hf benchmark`, vit_b16_ep50_ctxv1), then each trained model is evaluated with the same seed and precision on
all classes of the 10 other datasets (Table 2) and of ImageNet-V2/-Sketch/-A/-R (Table 3). Zero-shot CLIP (official
template per dataset) is scored once on ImageNet and every target.

Cells, each in its own folder under --output_dir:
- `ImageNet/<method>/seed<S>`: `cocoop-hf train` on ImageNet with --protocol all (its test accuracy is the source
  column);
- `<Target>/<method>/seed<S>`: `cocoop-hf evaluate` of that model on the target's test split;
- `<Dataset>/zeroshot/seed<S>`: `cocoop-hf train --method zeroshot` on the dataset (first seed only: nothing random).
Flags after `--` go to every training run; those `cocoop-hf evaluate` knows (batch size, workers, CPU, precision, CLIP
weights dtype) to the evaluations as well, and the source's evaluation data options (--max_eval_samples, --image_size,
--verify_images, --skip_corrupt_images) to every target. Every cell's flags are checked before anything is written;
--class_specific_context (such a model scores only the source's classes) and --model_name_or_path (the grid trains
its own models) are refused. A finished cell is skipped, an interrupted training resumes from its newest checkpoint,
an interrupted evaluation runs again. Writes `transfer.md`, `transfer.json` and `transfer.png` into --output_dir: ours
(mean ± std over seeds) beside the paper's values. `--launcher local|slurm` runs each cell as a job of its own (an
evaluation once its model's training job has ended well: SLURM `afterok`), `--status` and `--tables_only` as in
`cocoop-hf benchmark`.
"""

import argparse
import dataclasses
import json
import logging as std_logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar


if __package__ in (None, ""):  # run as a script: make `training` and `cocoop_hf` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers.utils import logging

from cocoop_hf_training import cli
from cocoop_hf_training.benchmarks import get_benchmark
from cocoop_hf_training.grid import (
    check_layouts,
    check_run_cocoop_flags,
    check_same_cell,
    expected_shots,
    parse_grid_args,
    read_json,
    recipe_for,
    resume_flags,
    run_cells,
    run_cocoop_argv,
    run_identity,
)
from cocoop_hf_training.grid_arguments import TRANSFER_METHODS, build_transfer_parser, cell_flags
from cocoop_hf_training.grid_cell_states import counted
from cocoop_hf_training.grid_launchers import (
    GridPlan,
    launch_cells,
    launch_options,
    results_for_tables,
    run_script_main,
)
from cocoop_hf_training.outputs import MANIFEST_NAME, load_manifest, owns, write_output
from cocoop_hf_training.report import (
    RESULTS_NAME,
    TABLE_NAME,
    check_run_metrics,
)
from cocoop_hf_training.transfer_tables import (  # noqa: F401  (the tables, and the names tests read from here)
    CROSS_DATASET_TARGETS,
    DG_TARGETS,
    PAPER_CROSS_DATASET,
    PAPER_DG,
    SOURCE,
    TABLE_STEM,
    partial_tables,
    transfer_markdown,
    transfer_tables,
    write_tables,
)


logger = logging.get_logger(__name__)

METHODS = TRANSFER_METHODS
# run_cocoop flags that evaluate_transfer takes too (the same meaning); --fp16/--bf16 become its --mixed_precision,
# and the source's CLIP weights dtype (--clip_dtype, from the recipe or after `--`) is passed on as such.
EVAL_FLAGS = ("--per_device_eval_batch_size", "--dataloader_num_workers", "--use_cpu", "--cache_dir")
# Data options of the source run that every target gets too (in its targets.json entry), where not the default.
TARGET_OPTIONS = ("max_eval_samples", "image_size", "verify_images", "skip_corrupt_images")
TARGETS_FILE = "targets.json"


@dataclass(frozen=True)
class TransferCell:
    kind: str  # "train" (run_cocoop on the source), "evaluate" (evaluate_transfer), "zeroshot" (run_cocoop)
    method: str
    seed: int
    dataset: str  # the dataset scored: the source for a training cell
    output_dir: Path
    transfer: ClassVar[bool] = True  # grid.recipe_for: the source trains with the method's cross-dataset recipe

    def __str__(self):
        return f"{self.kind} {self.method} seed {self.seed} on {self.dataset}"


# ---------------------------------------------------------------------------------------------- arguments


def parse_args(argv=None):
    parser = build_transfer_parser(description=__doc__)
    args = parse_grid_args(parser, argv)
    args.extra = cell_flags(args)
    args.targets = resolve_targets(args.targets)
    args.launch = launch_options(args)
    return args


def resolve_targets(names: list[str]) -> list[str]:
    resolved = []
    for name in names:
        key = name.lower()
        if key in ("all", "cross_dataset", "dg"):
            resolved += ([] if key == "dg" else list(CROSS_DATASET_TARGETS)) + (
                [] if key == "cross_dataset" else list(DG_TARGETS)
            )
            continue
        bench = get_benchmark(name)
        if bench.name not in CROSS_DATASET_TARGETS + DG_TARGETS:
            raise ValueError(
                f"{bench.name} is the source dataset, not a target: the source column is always in the tables."
            )
        resolved.append(bench.name)
    return list(dict.fromkeys(resolved))


def build_grid(args) -> list[TransferCell]:
    root = Path(args.output_dir)
    cells = []
    for method in args.method:
        if method == "zeroshot":
            seed = args.seeds[0]
            for dataset in (SOURCE, *args.targets):
                cells.append(TransferCell("zeroshot", method, seed, dataset, root / dataset / method / f"seed{seed}"))
            continue
        for seed in args.seeds:
            cells.append(TransferCell("train", method, seed, SOURCE, root / SOURCE / method / f"seed{seed}"))
            for dataset in args.targets:
                cells.append(TransferCell("evaluate", method, seed, dataset, root / dataset / method / f"seed{seed}"))
    return cells


def training_cell(cell: TransferCell, output_dir) -> TransferCell:
    return TransferCell(
        "train", cell.method, cell.seed, SOURCE, Path(output_dir) / SOURCE / cell.method / f"seed{cell.seed}"
    )


# ---------------------------------------------------------------------------------------------- cell commands


# xd_train.sh / xd_test.sh: all classes (DATASET.SUBSAMPLE_CLASSES all)
ALL_CLASSES = ("--protocol", "all")


def _flag_values(extra: list[str], names) -> dict[str, str]:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name in names:
        parser.add_argument(name)
    known = vars(parser.parse_known_args(extra)[0])
    return {f"--{key}": value for key, value in known.items() if value is not None}


def evaluate_argv(cell: TransferCell, args) -> list[str]:
    """
    evaluate_transfer flags of an evaluation cell. The precision (--fp16/--bf16) and the CLIP weights dtype
    (--clip_dtype) are the training's, from the recipe or after `--`, as the official xd_test.sh evaluates with the
    training config; `args.sources` holds each method's run_cocoop arguments (see `run_grid`).
    """
    model_args, _, training_args, _ = args.sources[cell.method]
    model_dir = training_cell(cell, args.output_dir).output_dir.resolve()
    mixed = "fp16" if training_args.fp16 else "bf16" if training_args.bf16 else "no"
    argv = [
        "--model_name_or_path",
        str(model_dir),
        "--targets",
        str(cell.output_dir / TARGETS_FILE),
        "--output_dir",
        str(cell.output_dir),
        "--seed",
        str(cell.seed),
        "--mixed_precision",
        mixed,
    ]
    if model_args.clip_dtype not in (None, "fp32"):  # None: fp32 (the default)
        argv += ["--clip_dtype", model_args.clip_dtype]
    for name, value in _flag_values(args.extra, EVAL_FLAGS).items():
        argv += [name, value]
    return argv


def target_options(cell: TransferCell, args) -> dict:
    """The source run's data options (`TARGET_OPTIONS`) that differ from their defaults: each target gets them too."""
    _, data_args, _, _ = args.sources[cell.method]
    defaults = {field.name: field.default for field in dataclasses.fields(data_args)}
    return {name: getattr(data_args, name) for name in TARGET_OPTIONS if getattr(data_args, name) != defaults[name]}


def target_entry(cell: TransferCell, args) -> dict:
    """The one target of an evaluation cell's targets.json: the dataset's test split, all classes."""
    entry = {"benchmark": cell.dataset, "data_root": str(Path(args.data_root).resolve()), "eval_split": "test"}
    return {**entry, **target_options(cell, args)}


def cell_command(cell: TransferCell, args) -> list[str]:
    """What defines a cell's run (recorded in grid_cells.json; resume flags aside)."""
    if cell.kind == "evaluate":
        options = target_options(cell, args)
        shown = ["target options:", json.dumps(options, sort_keys=True)] if options else []
        return ["evaluate_transfer", *evaluate_argv(cell, args), *shown]
    return ["run_cocoop", *run_cocoop_argv(cell, args.extra, args.data_root, ALL_CLASSES)]


# ---------------------------------------------------------------------------------------------- cell states


def finished_cell(cell: TransferCell, args) -> dict | None:
    """The results.json content of a finished cell, checked to be this cell's; None when not finished."""
    results_path = cell.output_dir / RESULTS_NAME
    # Finished: the cell's script marked its output folder complete after its last write (cocoop_hf_training/outputs.py).
    manifest = read_json(cell.output_dir / MANIFEST_NAME)
    if not (isinstance(manifest, dict) and manifest.get("complete")):
        return None
    if cell.kind == "evaluate" and not ((cell.output_dir / TABLE_NAME).is_file() and results_path.is_file()):
        return None  # an output deleted since: evaluated again (its own recorded outputs are replaced)
    content = read_json(results_path)
    runs = content.get("runs") if isinstance(content, dict) else None
    if not runs or len(runs) != 1 or "all" not in (runs[0].get("metrics") or {}):
        raise ValueError(
            f"{results_path} is not the single all-classes evaluation a {cell.kind} cell writes: move "
            f"{cell.output_dir} away, or choose another --output_dir."
        )
    run = runs[0]
    found = run_identity(run)
    wanted = {"dataset": cell.dataset, "method": cell.method, "seed": cell.seed}
    if cell.kind == "train":
        found["shots"] = run.get("num_shots")
        wanted["shots"] = expected_shots(recipe_for(cell.method, SOURCE, transfer=True), args.extra, cell.method)
    if cell.kind == "evaluate":
        found["model"] = content.get("model")
        wanted["model"] = str(training_cell(cell, args.output_dir).output_dir.resolve())
    check_same_cell(results_path, found, wanted)
    check_run_metrics(run, results_path)  # before the cell is skipped and its accuracy enters Table 2 / 3
    return content


def evaluation_flags(cell: TransferCell) -> tuple[str, list[str]]:
    """An interrupted evaluation writes nothing that can be resumed: run it again over its own partial outputs."""
    from cocoop_hf_training.evaluate_transfer import OUTPUT_FILES

    started = (cell.output_dir / MANIFEST_NAME).exists()  # evaluate_transfer deletes only what it recorded there
    if started or any((cell.output_dir / name).exists() for name in OUTPUT_FILES):
        return "restart", ["--overwrite_output_dir", "true"]
    return "run", []


def write_targets(cell: TransferCell, args) -> None:
    """
    The cell's targets.json, which its evaluate_transfer run reads. One already there with the very bytes this grid
    writes is left as it is; one with other bytes that the cell's output folder does not record as written there by
    this grid is someone's file: refused, naming it, never replaced.
    """
    path = cell.output_dir / TARGETS_FILE
    data = (json.dumps({"targets": [target_entry(cell, args)]}, indent=2) + "\n").encode("utf-8")
    if path.is_file() and not path.is_symlink():
        if path.read_bytes() == data:
            return
        if load_manifest(cell.output_dir) is None or not owns(cell.output_dir, TARGETS_FILE):
            raise ValueError(
                f"{path} is not the targets file this grid writes for {cell}, and no record says it wrote it: "
                "refusing to replace it. Move it away, or choose another --output_dir."
            )
    write_output(path, data, "targets")  # refuses a symlink; in a folder with a manifest, recorded there


def prepare_cell(cell: TransferCell, args) -> None:
    """What a cell's run reads that the grid writes: an evaluation's targets.json."""
    if cell.kind == "evaluate":
        cell.output_dir.mkdir(parents=True, exist_ok=True)
        write_targets(cell, args)


def cell_job(cell: TransferCell, args, flags: list[str]) -> tuple[str, list[str]]:
    """The script and arguments of a cell's run (`flags`: resume flags), whichever launcher runs it."""
    if cell.kind == "evaluate":
        return "evaluate_transfer", [*evaluate_argv(cell, args), *flags]
    return "run_cocoop", [*run_cocoop_argv(cell, [], args.data_root, ALL_CLASSES), *flags, *args.extra]


def run_one(cell: TransferCell, args, flags: list[str]) -> None:
    prepare_cell(cell, args)
    script, argv = cell_job(cell, args, flags)
    logger.info("%s %s", script, " ".join(argv))
    run_script_main(script, argv)


def check_cells(cells: list[TransferCell], args) -> None:
    """
    Every cell's flags, parsed and checked as its script will, before anything is written (a typo after `--` would
    otherwise stop the grid at its first cell, or hours in); sets `args.sources`, each method's run_cocoop arguments
    of its training on the source, which the evaluations follow.
    """
    from cocoop_hf_training import evaluate_transfer

    args.sources = {}
    for cell in cells:
        if cell.kind == "evaluate":
            continue
        parsed = check_run_cocoop_flags(cell, run_cocoop_argv(cell, args.extra, args.data_root, ALL_CLASSES))
        if cell.kind == "train" and parsed[0].class_specific_context:
            raise ValueError(
                "--class_specific_context: a model with one context per class scores only the classes it was "
                f"trained on ({SOURCE}'s), not the targets' classes that Tables 2 and 3 evaluate it on. Drop it (the "
                "transfer runs share one context across classes)."
            )
        args.sources.setdefault(cell.method, parsed)
    for cell in cells:
        if cell.kind == "evaluate":
            try:
                evaluate_transfer.parse_args(evaluate_argv(cell, args))
            except ValueError as error:
                raise ValueError(f"{cell}: evaluate_transfer refuses its flags: {error}") from None


def grid_plan(args, cells: list[TransferCell]) -> GridPlan:
    """
    The cells and how each runs, for a launcher, --status and --tables_only. An evaluation needs its model: the
    training cell of its method and seed (SLURM holds its job with `afterok` on that training's job).
    """
    return GridPlan(
        cells=cells,
        output_dir=Path(args.output_dir),
        command=lambda cell: cell_command(cell, args),
        finished_run=lambda cell: finished_cell(cell, args),
        next_step=lambda cell: evaluation_flags(cell) if cell.kind == "evaluate" else resume_flags(cell),
        job_of=lambda cell, flags: cell_job(cell, args, flags),
        prepare=lambda cell: prepare_cell(cell, args),
        depends_on=lambda cell: training_cell(cell, args.output_dir) if cell.kind == "evaluate" else None,
        flags_name="flags",
    )


def run_grid(args) -> dict[TransferCell, dict] | None:
    """
    Run (or skip, or resume) every cell; returns each cell's results.json content (None: the cells were handed to
    SLURM).
    """
    # zero-shot: one recipe for every dataset
    recipes = {recipe_for(method, SOURCE, transfer=True) for method in args.method}
    missing = sorted(str(recipe) for recipe in recipes if not recipe.is_file())
    if missing:
        raise ValueError(f"recipe file(s) missing: {missing}.")
    cells = build_grid(args)
    check_cells(cells, args)
    check_layouts([SOURCE, *args.targets], args.data_root)
    title = (
        f"Transfer grid of {counted(len(cells), 'cell')} (methods {args.method}, seeds {args.seeds}, "
        f"{counted(len(args.targets), 'target')})"
    )
    if args.launch.launcher != "inline":
        return launch_cells(grid_plan(args, cells), args.launch, title)
    return run_cells(
        cells,
        args.output_dir,
        title=title,
        desc="transfer grid",
        command=lambda cell: cell_command(cell, args),
        finished_run=lambda cell: finished_cell(cell, args),
        next_step=lambda cell: evaluation_flags(cell) if cell.kind == "evaluate" else resume_flags(cell),
        run=lambda cell, flags: run_one(cell, args, flags),
        flags_name="flags",
    )


# ---------------------------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    """Run the grid and write the tables; returns the content of transfer.json."""
    args = parse_args(argv)
    cli.setup_logging(logger.name, std_logging.INFO)
    results, missing, answer = results_for_tables(args, lambda: grid_plan(args, build_grid(args)), run_grid)
    if results is None:
        return answer
    tables = partial_tables(transfer_tables(results, args.method, args.targets), missing)
    write_tables(args.output_dir, tables)
    print(transfer_markdown(tables), flush=True)
    folder = Path(args.output_dir).resolve()
    table = folder / f"{TABLE_STEM}.md"
    logger.info("Done: the tables are %s (also .json, .png); each cell's run is in a folder under %s.", table, folder)
    return tables


if __name__ == "__main__":
    cli.run_script(main)
