#!/usr/bin/env python
r"""
Cross-dataset transfer and domain generalisation (the CoCoOp paper's Tables 2 and 3) with one command.

    python training/run_transfer_benchmark.py --data_root DATA --output_dir out/transfer
    python training/run_transfer_benchmark.py --data_root DATA --output_dir out/transfer --method cocoop \
        --targets eurosat imagenet-a --seeds 1 -- --per_device_eval_batch_size 50

As the official scripts/cocoop/xd_train.sh and xd_test.sh: CoOp and CoCoOp are trained on ImageNet (all 1,000
classes, 16 shots, seeds 1 2 3; CoCoOp vit_b16_c4_ep10_batch1_ctxv1, CoOp the ImageNet recipe of
training/run_benchmark.py, vit_b16_ep50_ctxv1), then each trained model is evaluated with the same seed and precision
on all classes of the 10 other datasets (Table 2) and of ImageNet-V2/-Sketch/-A/-R (Table 3). Zero-shot CLIP (official template per
dataset) is scored once on ImageNet and every target.

Cells, each in its own folder under --output_dir:
- `ImageNet/<method>/seed<S>`: training/run_cocoop.py on ImageNet with --protocol all (its test accuracy is the
  source column);
- `<Target>/<method>/seed<S>`: training/evaluate_transfer.py of that model on the target's test split;
- `<Dataset>/zeroshot/seed<S>`: training/run_cocoop.py --method zeroshot on the dataset (first seed only: nothing
  random).
Flags after `--` go to every run_cocoop run; those evaluate_transfer knows (batch size, workers, CPU, precision) to
the evaluations as well. A finished cell is skipped, an interrupted training resumes from its newest checkpoint, an
interrupted evaluation runs again. Writes `transfer.md`, `transfer.json` and `transfer.png` into --output_dir: ours
(mean ± std over seeds) beside the paper's values.
"""

import argparse
import json
import logging as std_logging
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path


if __package__ in (None, ""):  # run as a script: make `training` and `cocoop_hf` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers.utils import logging

from training import cli
from training.benchmarks import get_benchmark
from training.checkpoints import MANIFEST_NAME
from training.grid import (
    METHOD_TITLES,
    check_layouts,
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
from training.report import RESULTS_NAME, TABLE_NAME, bar_chart


logger = logging.get_logger(__name__)

SOURCE = "ImageNet"
CROSS_DATASET_TARGETS = (
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
DG_TARGETS = ("ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR")
METHODS = ("zeroshot", "coop", "cocoop")
# CoCoOp paper (Zhou et al., CVPR 2022), Table 2: cross-dataset transfer, source ImageNet; "average" is the mean of
# the 10 targets (the source excluded).
PAPER_CROSS_DATASET = {
    "coop": dict(
        zip(
            (SOURCE, *CROSS_DATASET_TARGETS, "average"),
            (71.51, 93.70, 89.14, 64.51, 68.71, 85.30, 18.47, 64.15, 41.92, 46.39, 66.55, 63.88),
            strict=True,
        )
    ),
    "cocoop": dict(
        zip(
            (SOURCE, *CROSS_DATASET_TARGETS, "average"),
            (71.02, 94.43, 90.14, 65.32, 71.88, 86.06, 22.94, 67.36, 45.73, 45.37, 68.21, 65.74),
            strict=True,
        )
    ),
}
# Table 3: domain generalisation, source ImageNet, targets ImageNet-V2 / -Sketch / -A / -R.
PAPER_DG = {
    method: dict(zip((SOURCE, *DG_TARGETS), values, strict=True))
    for method, values in {
        "zeroshot": (66.73, 60.83, 46.15, 47.77, 73.96),
        "coop": (71.51, 64.20, 47.99, 49.71, 75.21),
        "cocoop": (71.02, 64.07, 48.75, 50.63, 76.18),
    }.items()
}
TABLE_STEM = "transfer"
# run_cocoop flags that evaluate_transfer takes too (the same meaning); --fp16/--bf16 become its --mixed_precision.
EVAL_FLAGS = ("--per_device_eval_batch_size", "--dataloader_num_workers", "--use_cpu", "--cache_dir")
TARGETS_FILE = "targets.json"


@dataclass(frozen=True)
class TransferCell:
    kind: str  # "train" (run_cocoop on the source), "evaluate" (evaluate_transfer), "zeroshot" (run_cocoop)
    method: str
    seed: int
    dataset: str  # the dataset scored: the source for a training cell
    output_dir: Path

    def __str__(self):
        return f"{self.kind} {self.method} seed {self.seed} on {self.dataset}"


# ---------------------------------------------------------------------------------------------- arguments


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
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
    parser.add_argument("--method", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="Seeds (default: 1 2 3).")
    args = parse_grid_args(parser, argv)
    args.targets = resolve_targets(args.targets)
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


def _true(value) -> bool:
    return str(value).lower() in ("true", "1", "yes")


def evaluate_argv(cell: TransferCell, extra: list[str], output_root) -> list[str]:
    """evaluate_transfer flags of an evaluation cell; the precision is the training's (the recipe's --fp16/--bf16,
    or those after `--`), as the official xd_test.sh evaluates with the training config."""
    model_dir = training_cell(cell, output_root).output_dir.resolve()
    forwarded = _flag_values(extra, EVAL_FLAGS)
    recipe = cli.read_structured_file(recipe_for(cell.method, SOURCE), "recipe")
    precision = {**{f"--{k}": recipe.get(k) for k in ("fp16", "bf16")}, **_flag_values(extra, ("--fp16", "--bf16"))}
    mixed = "fp16" if _true(precision.get("--fp16")) else "bf16" if _true(precision.get("--bf16")) else "no"
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
    for name, value in forwarded.items():
        argv += [name, value]
    return argv


def cell_command(cell: TransferCell, args) -> list[str]:
    """What defines a cell's run (recorded in grid_cells.json; resume flags aside)."""
    if cell.kind == "evaluate":
        return ["evaluate_transfer", *evaluate_argv(cell, args.extra, args.output_dir)]
    return ["run_cocoop", *run_cocoop_argv(cell, args.extra, args.data_root, ALL_CLASSES)]


# ---------------------------------------------------------------------------------------------- cell states


def finished_cell(cell: TransferCell, args) -> dict | None:
    """The results.json content of a finished cell, checked to be this cell's; None when not finished."""
    results_path = cell.output_dir / RESULTS_NAME
    if cell.kind == "evaluate":
        if not ((cell.output_dir / TABLE_NAME).is_file() and results_path.is_file()):
            return None
    else:
        manifest = read_json(cell.output_dir / MANIFEST_NAME)
        if not (isinstance(manifest, dict) and manifest.get("complete")):
            return None
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
        wanted["shots"] = expected_shots(recipe_for(cell.method, SOURCE), args.extra, cell.method)
    if cell.kind == "evaluate":
        found["model"] = content.get("model")
        wanted["model"] = str(training_cell(cell, args.output_dir).output_dir.resolve())
    check_same_cell(results_path, found, wanted)
    return content


def evaluation_flags(cell: TransferCell) -> tuple[str, list[str]]:
    """An interrupted evaluation writes nothing that can be resumed: run it again over its own partial outputs."""
    from training.evaluate_transfer import OUTPUT_FILES

    if any((cell.output_dir / name).exists() for name in OUTPUT_FILES):
        return "restart", ["--overwrite_output_dir", "true"]
    return "run", []


def run_one(cell: TransferCell, args, flags: list[str]) -> None:
    if cell.kind == "evaluate":
        from training import evaluate_transfer

        cell.output_dir.mkdir(parents=True, exist_ok=True)
        target = {"benchmark": cell.dataset, "data_root": str(Path(args.data_root).resolve()), "eval_split": "test"}
        (cell.output_dir / TARGETS_FILE).write_text(json.dumps({"targets": [target]}, indent=2) + "\n")
        argv = [*evaluate_argv(cell, args.extra, args.output_dir), *flags]
        logger.info("evaluate_transfer %s", " ".join(argv))
        evaluate_transfer.main(argv)
        return
    from training import run_cocoop

    argv = [*run_cocoop_argv(cell, [], args.data_root, ALL_CLASSES), *flags, *args.extra]
    logger.info("run_cocoop %s", " ".join(argv))
    run_cocoop.main(argv)


def run_grid(args) -> dict[TransferCell, dict]:
    """Run (or skip, or resume) every cell in order; returns each cell's results.json content."""
    recipes = {recipe_for(method, SOURCE) for method in args.method}  # zero-shot: one recipe for every dataset
    missing = sorted(str(recipe) for recipe in recipes if not recipe.is_file())
    if missing:
        raise ValueError(f"recipe file(s) missing: {missing}.")
    cells = build_grid(args)
    check_layouts([SOURCE, *args.targets], args.data_root)
    return run_cells(
        cells,
        args.output_dir,
        title=f"Transfer grid of {len(cells)} cells (methods {args.method}, seeds {args.seeds}, "
        f"{len(args.targets)} targets)",
        desc="transfer grid",
        command=lambda cell: cell_command(cell, args),
        finished_run=lambda cell: finished_cell(cell, args),
        next_step=lambda cell: evaluation_flags(cell) if cell.kind == "evaluate" else resume_flags(cell),
        run=lambda cell, flags: run_one(cell, args, flags),
        flags_name="flags",
    )


# ---------------------------------------------------------------------------------------------- tables


def _stats(values: list[float], seeds: list[int]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
        "seeds": seeds,
    }


def transfer_tables(results: dict[TransferCell, dict], methods: list[str], targets: list[str]) -> dict:
    """Accuracy per method and dataset (mean ± sample std over seeds), Table 2 and Table 3, the paper's beside."""
    scores: dict[str, dict[str, dict[int, float]]] = {}
    for cell, content in results.items():
        accuracy = content["runs"][0]["metrics"]["all"]["accuracy"]
        scores.setdefault(cell.method, {}).setdefault(cell.dataset, {})[cell.seed] = accuracy
    per_method = {
        method: {
            dataset: _stats([by_seed[s] for s in sorted(by_seed)], sorted(by_seed))
            for dataset, by_seed in scores.get(method, {}).items()
        }
        for method in methods
    }
    tables = {}
    for key, all_targets, paper in (
        ("cross_dataset", CROSS_DATASET_TARGETS, PAPER_CROSS_DATASET),
        ("domain_generalisation", DG_TARGETS, PAPER_DG),
    ):
        columns = [t for t in all_targets if t in targets]
        if not columns:
            continue
        rows = {}
        for method in methods:
            row = {d: per_method[method][d] for d in (SOURCE, *columns) if d in per_method[method]}
            if key == "cross_dataset" and all(t in row for t in columns):
                means = [row[t]["mean"] for t in columns]
                row["average"] = {"mean": statistics.fmean(means), "n_targets": len(columns)}
            rows[method] = row
        tables[key] = {
            "columns": [SOURCE, *columns] + (["average"] if key == "cross_dataset" else []),
            "rows": rows,
            "paper": {m: paper[m] for m in methods if m in paper},
            "average_is_papers": key == "cross_dataset" and set(columns) == set(CROSS_DATASET_TARGETS),
        }
    notes = sorted({content["note"] for content in results.values() if content.get("note")})
    return {"note": " ".join(notes) or None, "methods": methods, "targets": targets, "tables": tables}


TABLE_TITLES = {
    "cross_dataset": "Cross-dataset transfer (CoCoOp paper, Table 2): trained on ImageNet, all classes, 16 shots",
    "domain_generalisation": "Domain generalisation (CoCoOp paper, Table 3): trained on ImageNet",
}
COLUMN_NAMES = {
    "ImageNet": "ImageNet (source)",
    "ImageNetV2": "ImageNet-V2",
    "ImageNetSketch": "ImageNet-Sketch",
    "ImageNetA": "ImageNet-A",
    "ImageNetR": "ImageNet-R",
    "OxfordFlowers": "Flowers102",
    "DescribableTextures": "DTD",
    "average": "Average",
}


def transfer_markdown(tables: dict) -> str:
    lines = []
    if tables["note"]:
        lines += [f"> **{tables['note']}**", ""]
    for key, table in tables["tables"].items():
        columns = table["columns"]
        lines += [f"## {TABLE_TITLES[key]}", ""]
        lines.append("| Method | " + " | ".join(COLUMN_NAMES.get(c, c) for c in columns) + " |")
        lines.append("|---|" + "---|" * len(columns))
        for method, row in table["rows"].items():
            cells = []
            for column in columns:
                stat = row.get(column)
                if stat is None:
                    cells.append("-")
                elif stat.get("n", 1) > 1:
                    cells.append(f"{stat['mean']:.2f} ± {stat['std']:.2f}")
                else:
                    cells.append(f"{stat['mean']:.2f}")
            lines.append(f"| {METHOD_TITLES[method]} | " + " | ".join(cells) + " |")
            paper = table["paper"].get(method)
            if paper is not None:
                shown = [f"{paper[c]:.2f}" if c in paper else "-" for c in columns]
                lines.append(f"| {METHOD_TITLES[method]} (paper) | " + " | ".join(shown) + " |")
        lines.append("")
        if key == "cross_dataset" and not table["average_is_papers"]:
            lines += ["The paper's average is over all 10 targets: this one covers fewer, so they do not compare.", ""]
    lines.append(
        "Top-1 accuracy (%) on each dataset's test split, all its classes; mean ± sample std over seeds where several. "
        "Rows marked (paper): the CoCoOp paper (Zhou et al., CVPR 2022)."
    )
    return "\n".join(lines) + "\n"


def write_tables(output_dir, tables: dict) -> None:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / f"{TABLE_STEM}.json").write_text(json.dumps(tables, indent=2))
    (output_dir / f"{TABLE_STEM}.md").write_text(transfer_markdown(tables))
    rows, seen = [], set()
    for table in tables["tables"].values():
        for method, row in table["rows"].items():
            for dataset, stat in row.items():
                if dataset == "average" or (method, dataset) in seen:
                    continue
                seen.add((method, dataset))
                label = COLUMN_NAMES.get(dataset, dataset)
                rows.append(_chart_row(label, METHOD_TITLES[method], stat["mean"], stat["std"]))
                paper = table["paper"].get(method, {}).get(dataset)
                if paper is not None:
                    rows.append(_chart_row(label, f"{METHOD_TITLES[method]} (paper)", paper, 0.0))
    bar_chart(rows, output_dir / f"{TABLE_STEM}.png", tables["note"])


def _chart_row(dataset: str, method: str, mean: float, std: float) -> dict:
    return {"dataset": dataset, "method": method, "seeds": [], "scores": {"all": {"mean": mean, "std": std, "n": 1}}}


# ---------------------------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    """Run the grid and write the tables; returns the content of transfer.json."""
    args = parse_args(argv)
    cli.setup_logging(logger.name, std_logging.INFO)
    results = run_grid(args)
    tables = transfer_tables(results, args.method, args.targets)
    write_tables(args.output_dir, tables)
    print(transfer_markdown(tables), flush=True)
    return tables


if __name__ == "__main__":
    cli.run_script(main)
