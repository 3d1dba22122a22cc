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
Flags after `--` go to every run_cocoop run; those evaluate_transfer knows (batch size, workers, CPU, precision, CLIP
weights dtype) to the evaluations as well, and the source's evaluation data options (--max_eval_samples, --image_size,
--verify_images, --skip_corrupt_images) to every target. Every cell's flags are checked before anything is written;
--class_specific_context (such a model scores only the source's classes) and --model_name_or_path (the grid trains
its own models) are refused. A finished cell is skipped, an interrupted training resumes from its newest checkpoint,
an interrupted evaluation runs again. Writes `transfer.md`, `transfer.json` and `transfer.png` into --output_dir: ours
(mean ± std over seeds) beside the paper's values.
"""

import argparse
import dataclasses
import json
import logging as std_logging
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path


if __package__ in (None, ""):  # run as a script: make `training` and `cocoop_hf` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers.utils import logging

from cocoop_hf.markdown_cocoop import markdown_cell
from training import cli
from training.benchmarks import get_benchmark
from training.grid import (
    METHOD_TITLES,
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
from training.outputs import MANIFEST_NAME, write_output
from training.report import (
    RESULTS_NAME,
    TABLE_NAME,
    bar_chart,
    check_run_metrics,
    is_published_form,
    method_label,
)


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
    check_run_metrics(run, results_path)  # before the cell is skipped and its accuracy enters Table 2 / 3
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
        target = target_entry(cell, args)
        write_output(cell.output_dir / TARGETS_FILE, json.dumps({"targets": [target]}, indent=2) + "\n", "targets")
        argv = [*evaluate_argv(cell, args), *flags]
        logger.info("evaluate_transfer %s", " ".join(argv))
        evaluate_transfer.main(argv)
        return
    from training import run_cocoop

    argv = [*run_cocoop_argv(cell, [], args.data_root, ALL_CLASSES), *flags, *args.extra]
    logger.info("run_cocoop %s", " ".join(argv))
    run_cocoop.main(argv)


def check_cells(cells: list[TransferCell], args) -> None:
    """
    Every cell's flags, parsed and checked as its script will, before anything is written (a typo after `--` would
    otherwise stop the grid at its first cell, or hours in); sets `args.sources`, each method's run_cocoop arguments
    of its training on the source, which the evaluations follow.
    """
    from training import evaluate_transfer

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


def run_grid(args) -> dict[TransferCell, dict]:
    """Run (or skip, or resume) every cell in order; returns each cell's results.json content."""
    recipes = {recipe_for(method, SOURCE) for method in args.method}  # zero-shot: one recipe for every dataset
    missing = sorted(str(recipe) for recipe in recipes if not recipe.is_file())
    if missing:
        raise ValueError(f"recipe file(s) missing: {missing}.")
    cells = build_grid(args)
    check_cells(cells, args)
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
    """
    Accuracy per method variant and dataset (mean ± sample std over seeds), Table 2 and Table 3, the paper's beside.

    A row is labelled by what its model's results.json records (`method_options`, see
    `training.report.method_label`): an evaluation by the options of the model it scores, its training cell's run.
    The paper's values stand only beside rows that are the method as published.
    """
    trained = {
        (cell.method, cell.seed): content["runs"][0] for cell, content in results.items() if cell.kind == "train"
    }
    scores: dict[str, dict[str, dict[int, float]]] = {}
    variants = {}
    for cell, content in results.items():
        run = content["runs"][0]
        model_run = trained.get((cell.method, cell.seed), run) if cell.kind == "evaluate" else run
        label = method_label(model_run)
        variants.setdefault(
            label,
            {
                "method": cell.method,
                "title": method_label(model_run, METHOD_TITLES),
                "published": is_published_form(model_run),
            },
        )
        scores.setdefault(label, {}).setdefault(cell.dataset, {})[cell.seed] = run["metrics"]["all"]["accuracy"]
    labels = [label for method in methods for label, variant in variants.items() if variant["method"] == method]
    per_label = {
        label: {
            dataset: _stats([by_seed[s] for s in sorted(by_seed)], sorted(by_seed))
            for dataset, by_seed in scores[label].items()
        }
        for label in labels
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
        for label in labels:
            row = {d: per_label[label][d] for d in (SOURCE, *columns) if d in per_label[label]}
            if key == "cross_dataset" and all(t in row for t in columns):
                means = [row[t]["mean"] for t in columns]
                row["average"] = {"mean": statistics.fmean(means), "n_targets": len(columns)}
            rows[label] = row
        tables[key] = {
            "columns": [SOURCE, *columns] + (["average"] if key == "cross_dataset" else []),
            "rows": rows,
            "paper": {
                label: paper[variants[label]["method"]]
                for label in labels
                if variants[label]["published"] and variants[label]["method"] in paper
            },
            "average_is_papers": key == "cross_dataset" and set(columns) == set(CROSS_DATASET_TARGETS),
        }
    notes = sorted({content["note"] for content in results.values() if content.get("note")})
    shots = sorted({run.get("num_shots") for run in trained.values() if run.get("num_shots") is not None})
    return {
        "note": " ".join(notes) or None,
        "methods": methods,
        "labels": {label: variants[label] for label in labels},
        "targets": targets,
        "shots": shots,
        "tables": tables,
    }


TABLE_TITLES = {
    "cross_dataset": "Cross-dataset transfer (CoCoOp paper, Table 2): trained on ImageNet, all classes",
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
VARIANT_NOTE = (
    "{titles}: not the method as published (CoOp: class token at the end, one shared context, no KgCoOp term; "
    "CoCoOp: no KgCoOp term, class token at the end). The paper reports no such runs: no (paper) row beside them."
)


def table_title(key: str, shots: list[int]) -> str:
    """A table's heading, with the shots the source models were trained with (as their results.json records)."""
    title = TABLE_TITLES[key]
    if key == "cross_dataset" and shots:
        title += ", " + ", ".join(str(n) for n in shots) + (" shot" if shots == [1] else " shots")
    return title


def transfer_markdown(tables: dict) -> str:
    lines = []
    if tables["note"]:
        lines += [f"> **{markdown_cell(tables['note'])}**", ""]
    for key, table in tables["tables"].items():
        columns = table["columns"]
        lines += [f"## {table_title(key, tables.get('shots', []))}", ""]
        lines.append("| Method | " + " | ".join(markdown_cell(COLUMN_NAMES.get(c, c)) for c in columns) + " |")
        lines.append("|---|" + "---|" * len(columns))
        for label, row in table["rows"].items():
            title = markdown_cell(tables["labels"][label]["title"])  # a method label from the grid: escaped
            cells = []
            for column in columns:
                stat = row.get(column)
                if stat is None:
                    cells.append("-")
                elif stat.get("n", 1) > 1:
                    cells.append(f"{stat['mean']:.2f} ± {stat['std']:.2f}")
                else:
                    cells.append(f"{stat['mean']:.2f}")
            lines.append(f"| {title} | " + " | ".join(cells) + " |")
            paper = table["paper"].get(label)
            if paper is not None:
                shown = [f"{paper[c]:.2f}" if c in paper else "-" for c in columns]
                lines.append(f"| {title} (paper) | " + " | ".join(shown) + " |")
        lines.append("")
        if key == "cross_dataset" and not table["average_is_papers"]:
            lines += ["The paper's average is over all 10 targets: this one covers fewer, so they do not compare.", ""]
    variants = [markdown_cell(variant["title"]) for variant in tables["labels"].values() if not variant["published"]]
    if variants:
        lines += [VARIANT_NOTE.format(titles=", ".join(variants)), ""]
    lines.append(
        "Top-1 accuracy (%) on each dataset's test split, all its classes; mean ± sample std over seeds where several. "
        "Rows marked (paper): the CoCoOp paper (Zhou et al., CVPR 2022)."
    )
    return "\n".join(lines) + "\n"


def write_tables(output_dir, tables: dict) -> None:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # New files renamed into place, never through a symlink (training/outputs.py).
    write_output(output_dir / f"{TABLE_STEM}.json", json.dumps(tables, indent=2), "table")
    write_output(output_dir / f"{TABLE_STEM}.md", transfer_markdown(tables), "table")
    rows, seen = [], set()
    for table in tables["tables"].values():
        for label, row in table["rows"].items():
            title = tables["labels"][label]["title"]
            for dataset, stat in row.items():
                if dataset == "average" or (label, dataset) in seen:
                    continue
                seen.add((label, dataset))
                column = COLUMN_NAMES.get(dataset, dataset)
                rows.append(_chart_row(column, title, stat["mean"], stat["std"]))
                paper = table["paper"].get(label, {}).get(dataset)
                if paper is not None:
                    rows.append(_chart_row(column, f"{title} (paper)", paper, 0.0))
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
