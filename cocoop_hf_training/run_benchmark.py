#!/usr/bin/env python
r"""
The whole base-to-new grid, datasets x methods x seeds, with one command, and the CoCoOp paper's Table 1 from it.

    cocoop-hf benchmark --benchmark all --data_root DATA --output_dir out/table1
    cocoop-hf benchmark --benchmark eurosat dtd --data_root DATA --method cocoop --seeds 1 2 3 \
        --output_dir out/table1 -- --per_device_eval_batch_size 50

Each cell is one `cocoop-hf train` run with the published recipe of its method (CoCoOp, CoOp, KgCoOp, zero-shot
CLIP), written to `<output_dir>/<dataset>/<method>/seed<S>`; flags after `--` go to every run. The cells run
one after another in this process (the training keeps no state between runs: its logging setup is idempotent, Trainer
seeds itself, the model is rebuilt), or each as a job of its own with `--launcher local` (processes of this machine,
`--max_parallel` at a time, a GPU each) or `--launcher slurm` (a job array); `--status` shows each cell's state,
`--tables_only` writes the table from the cells finished so far. A cell whose folder holds a finished run of that same cell is skipped; an
interrupted one resumes from its newest complete checkpoint, or starts again when it has none. Zero-shot CLIP involves
no random draw (no training, all test images, the class split is fixed), so it runs once per dataset, with the first
seed.

Writes `table1.md`, `table1.json` and `table1.png` into --output_dir: Base, New and H per dataset and method (mean over
seeds), the average over the 11 base-to-new datasets, and the paper's averages beside ours.
"""

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
from cocoop_hf_training import cli
from cocoop_hf_training.benchmarks import BENCHMARKS, get_benchmark
from cocoop_hf_training.evaluation import harmonic_mean
from cocoop_hf_training.grid import (
    CONFIGS,
    check_layouts,
    check_run_cocoop_flags,
    check_same_cell,
    expected_shots,
    method_titles,
    parse_grid_args,
    read_json,
    recipe_for,
    resume_flags,
    run_cells,
    run_cocoop_argv,
    run_identity,
)
from cocoop_hf_training.grid_arguments import build_benchmark_parser, cell_flags
from cocoop_hf_training.grid_cell_states import counted
from cocoop_hf_training.grid_launchers import (
    GridPlan,
    launch_cells,
    launch_options,
    results_for_tables,
    run_script_main,
)
from cocoop_hf_training.outputs import MANIFEST_NAME, write_output
from cocoop_hf_training.report import (
    RESULTS_NAME,
    aggregate,
    bar_chart,
    check_run_metrics,
    is_published_form,
    markdown_table,
    method_label,
)


logger = logging.get_logger(__name__)

# CoCoOp paper (Zhou et al., CVPR 2022) Table 1, "Average over 11 datasets": Base / New / H (%).
PAPER_AVERAGES = {
    "zeroshot": {"base": 69.34, "new": 74.22, "H": 71.70},
    "coop": {"base": 82.69, "new": 63.22, "H": 71.66},
    "cocoop": {"base": 80.47, "new": 71.69, "H": 75.83},
    # KgCoOp paper (Yao et al., CVPR 2023; htyao89/KgCoOp readme.md table): average over the same 11 datasets.
    "kgcoop": {"base": 80.73, "new": 73.60, "H": 77.00},
    # IVLP as the PromptSRC paper (Khattak et al., ICCV 2023) reports it (its recipe: 4+4 tokens, depth 9, 20 epochs;
    # muzairkhattak/PromptSRC README.md, "Effectiveness of PromptSRC in comparison with baseline IVLP").
    "ivlp": {"base": 84.21, "new": 71.79, "H": 77.51},
    # MaPLe paper (Khattak et al., CVPR 2023) Table 1, average over the 11 datasets (also in the PromptSRC README).
    "maple": {"base": 82.28, "new": 75.14, "H": 78.55},
    # PromptSRC paper (Khattak et al., ICCV 2023) Table 1, average over the 11 datasets (muzairkhattak/PromptSRC README).
    "promptsrc": {"base": 84.26, "new": 76.10, "H": 79.97},
}
# The datasets of Table 1: every benchmark with a train split (ImageNet-V2/-Sketch/-A/-R are evaluation-only).
BASE_TO_NEW = tuple(name for name, bench in BENCHMARKS.items() if not bench.test_only)
TABLE_STEM = "table1"
# The published forms: those of grid.RECIPES, the base-to-new recipes (cocoop_hf_training/configs).
VARIANT_NOTE = (
    "{titles}: not the method as published (CoOp: class token at the end, one shared context, no KgCoOp term; "
    "KgCoOp: w = 8; CoCoOp: no KgCoOp term, class token at the end; IVLP: 4+4 tokens, depth 9/9; MaPLe: 2 tokens, "
    "depth 9; PromptSRC: 4+4 tokens, depth 9/9, weights 25/10/1, GPA mean 15, std 1). The papers report no such "
    "runs: '-' in the paper's columns."
)


@dataclass(frozen=True)
class Cell:
    dataset: str  # official benchmark name
    method: str
    seed: int
    output_dir: Path
    num_shots: int | None  # what the run's results.json must record (None: zero-shot, nothing trained)

    def __str__(self):
        return f"{self.dataset} / {self.method} / seed {self.seed}"


# ---------------------------------------------------------------------------------------------- arguments


def parse_args(argv=None):
    parser = build_benchmark_parser(description=__doc__)
    args = parse_grid_args(parser, argv)
    args.extra = cell_flags(args)
    args.benchmark = resolve_benchmarks(args.benchmark)
    args.launch = launch_options(args)
    return args


def resolve_benchmarks(names: list[str]) -> list[str]:
    """Official names of the requested datasets, in request order; 'all' = the 11 base-to-new datasets."""
    resolved = []
    for name in names:
        if name.lower() == "all":
            resolved.extend(BASE_TO_NEW)
            continue
        bench = get_benchmark(name)  # unknown names: ValueError listing the known ones
        if bench.test_only:
            raise ValueError(
                f"{bench.name} is evaluation-only (no training images): it has no base-to-new row in Table 1. "
                "Evaluate a model trained on ImageNet on it with cocoop_hf_training/evaluate_transfer.py."
            )
        resolved.append(bench.name)
    return list(dict.fromkeys(resolved))


def build_grid(args) -> list[Cell]:
    recipes = {recipe_for(m, d) for m in args.method for d in args.benchmark}
    missing = sorted(str(recipe) for recipe in recipes if not recipe.is_file())
    if missing:
        raise ValueError(f"recipe file(s) missing: {missing}; they belong in {CONFIGS}.")
    cells = []
    for dataset in args.benchmark:
        for method in args.method:
            seeds = args.seeds[:1] if method == "zeroshot" else args.seeds
            shots = expected_shots(recipe_for(method, dataset), args.extra, method)
            for seed in seeds:
                folder = Path(args.output_dir) / dataset / method / f"seed{seed}"
                cells.append(Cell(dataset, method, seed, folder, shots))
    return cells


# ---------------------------------------------------------------------------------------------- cell states


def finished_run(cell: Cell) -> dict | None:
    """
    The results.json content of a finished run in the cell's folder, checked to be this cell's; None when the run is
    not finished. A finished run of another dataset, method, seed or shot count is an error, never a skip.
    """
    manifest = read_json(cell.output_dir / MANIFEST_NAME)
    if not (isinstance(manifest, dict) and manifest.get("complete")):
        return None
    results_path = cell.output_dir / RESULTS_NAME
    content = read_json(results_path)
    runs = content.get("runs") if isinstance(content, dict) else None
    if not runs or len(runs) != 1:
        raise ValueError(
            f"{cell.output_dir} holds a finished run without the single evaluated run a cell writes to "
            f"{RESULTS_NAME}: move it away, or choose another --output_dir."
        )
    run = runs[0]
    found = {**run_identity(run), "shots": run.get("num_shots")}
    wanted = {"dataset": cell.dataset, "method": cell.method, "seed": cell.seed, "shots": cell.num_shots}
    check_same_cell(results_path, found, wanted)
    if "base" not in run.get("metrics", {}) or "new" not in run.get("metrics", {}):
        raise ValueError(f"{results_path} has no base and new accuracy: not a base-to-new run.")
    check_run_metrics(run, results_path)  # before the cell is skipped and its figures enter Table 1
    return content


# ---------------------------------------------------------------------------------------------- grid


def cell_job(cell: Cell, extra: list[str], data_root: str, flags: list[str]) -> tuple[str, list[str]]:
    """The script and arguments of a cell's run (`flags`: resume flags), whichever launcher runs it."""
    return "run_cocoop", [*run_cocoop_argv(cell, [], data_root), *flags, *extra]


def run_cell(cell: Cell, extra: list[str], data_root: str, flags: list[str]) -> dict:
    script, argv = cell_job(cell, extra, data_root, flags)
    logger.info("run_cocoop %s", " ".join(argv))
    return run_script_main(script, argv)


def grid_plan(args, cells: list[Cell]) -> GridPlan:
    """The cells and how each runs, for a launcher, --status and --tables_only."""
    return GridPlan(
        cells=cells,
        output_dir=Path(args.output_dir),
        command=lambda cell: run_cocoop_argv(cell, args.extra, args.data_root),
        finished_run=finished_run,
        next_step=resume_flags,
        job_of=lambda cell, flags: cell_job(cell, args.extra, args.data_root, flags),
        prepare=lambda cell: None,
        depends_on=lambda cell: None,
        flags_name="run_cocoop flags",
    )


def run_grid(args) -> dict[Cell, dict] | None:
    """
    Run (or skip, or resume) every cell; returns each cell's results.json content (None: the cells were handed to
    SLURM).
    """
    cells = build_grid(args)
    # Check every cell's flags, every dataset's layout and every earlier cell first: a problem stops the grid before
    # anything is written, not hours of training later.
    for cell in cells:
        check_run_cocoop_flags(cell, run_cocoop_argv(cell, args.extra, args.data_root))
    check_layouts(args.benchmark, args.data_root)
    title = (
        f"Grid of {counted(len(cells), 'cell')} ({counted(len(args.benchmark), 'dataset')} x "
        f"{counted(len(args.method), 'method')}, seeds {args.seeds})"
    )
    if args.launch.launcher != "inline":
        return launch_cells(grid_plan(args, cells), args.launch, title)
    return run_cells(
        cells,
        args.output_dir,
        title=title,
        desc="benchmark grid",
        command=lambda cell: run_cocoop_argv(cell, args.extra, args.data_root),
        finished_run=finished_run,
        next_step=resume_flags,
        run=lambda cell, flags: run_cell(cell, args.extra, args.data_root, flags),
        flags_name="run_cocoop flags",
    )


# ---------------------------------------------------------------------------------------------- table


def table1(results: dict[Cell, dict], datasets: list[str], methods: list[str], missing: list[str] = ()) -> dict:
    """
    Rows per dataset and method variant, the average over datasets, the paper's averages and the random-weights note;
    `missing`: the cells not finished yet (--tables_only), listed as such and in no mean.

    A row is labelled by what its runs' results.json records (`method_options`, see `cocoop_hf_training.report.method_label`):
    "KgCoOp (w=4)" or "CoOp (class token middle)" is not the paper's KgCoOp or CoOp, and gets no paper figures.

    H follows the paper: per dataset, the harmonic mean of the seed-averaged Base and New accuracies (official
    parse_test_res.py averages each accuracy over seeds); in the average row, of the dataset-averaged ones (Table 1's
    "Average over 11 datasets": 2 * 80.47 * 71.69 / (80.47 + 71.69) = 75.83 for CoCoOp). The mean of the per-seed H
    is kept in the JSON too ("H_mean_over_seeds").
    """
    runs = [content["runs"][0] for content in results.values()]
    canonical = {run["dataset"]: get_benchmark(run["dataset"]).name for run in runs}
    variants = {
        method_label(run): {
            "method": run["method"],
            "title": method_label(run, method_titles(content)),  # the zero-shot row named by its backbone
            "published": is_published_form(run),
        }
        for content in results.values()
        for run in content["runs"][:1]
    }
    labels = [label for method in methods for label, variant in variants.items() if variant["method"] == method]
    by_key = {(canonical[row["dataset"]], row["label"]): row for row in aggregate(runs)}
    rows = []
    for dataset in datasets:
        for label in labels:
            row = by_key.get((dataset, label))
            if row is None:
                continue
            base, new = row["scores"]["base"], row["scores"]["new"]
            rows.append(
                {
                    "dataset": dataset,
                    "method": row["method"],
                    "label": label,
                    "title": variants[label]["title"],
                    "published": variants[label]["published"],
                    "seeds": row["seeds"],
                    "base": base,
                    "new": new,
                    "H": harmonic_mean(base["mean"], new["mean"]),
                    "H_mean_over_seeds": row["scores"]["H"]["mean"],
                }
            )
    averages = {}
    for label in labels:
        members = [row for row in rows if row["label"] == label]
        if not members:
            continue
        base = statistics.fmean(row["base"]["mean"] for row in members)
        new = statistics.fmean(row["new"]["mean"] for row in members)
        covered = [row["dataset"] for row in members]
        averages[label] = {
            **variants[label],
            "datasets": covered,
            "n": len(covered),
            "paper_datasets": set(covered) == set(BASE_TO_NEW),
            "base": base,
            "new": new,
            "H": harmonic_mean(base, new),
        }
    notes = sorted({content["note"] for content in results.values() if content.get("note")})
    # Only a partial table names its missing cells: the table of a finished grid keeps its fields as they were.
    partial = {"missing_cells": list(missing)} if missing else {}
    return {
        "note": " ".join(notes) or None,
        **partial,
        "datasets": datasets,
        "methods": methods,
        "rows": rows,
        "average": averages,
        # only beside rows that are the method as published: a variant has no published figures
        "paper_average": {
            label: PAPER_AVERAGES[variant["method"]] for label, variant in averages.items() if variant["published"]
        },
        "H_convention": "H = 2*Base*New/(Base+New) of the mean accuracies (over seeds; over datasets in the average)",
    }


def missing_cells_lines(missing) -> list[str]:
    """A partial table (--tables_only) says which cells it lacks: they are in no row and no mean, never counted as 0."""
    if not missing:
        return []
    shown = "; ".join(markdown_cell(name) for name in missing)
    return [f"**Partial table: {len(missing)} cell(s) not finished, missing from every row and mean:** {shown}.", ""]


def average_label(average: dict) -> str:
    if average["paper_datasets"]:
        return f"Average over {average['n']} datasets"
    return f"Average over {average['n']} dataset(s) (not the paper's 11)"


def _report_rows(table: dict) -> list[dict]:
    """Rows in cocoop_hf_training/report.py's layout (for its table and chart): H without std, being computed from means."""
    rows = []
    for row in table["rows"]:
        scores = {"base": row["base"], "new": row["new"], "H": {"mean": row["H"], "std": 0.0, "n": 1}}
        rows.append({"dataset": row["dataset"], "method": row["title"], "seeds": row["seeds"], "scores": scores})
    return rows


def table1_markdown(table: dict) -> str:
    lines = ["# Base-to-new generalization (CoCoOp paper, Table 1)", ""]
    if table["note"]:
        lines += [f"> **{markdown_cell(table['note'])}**", ""]
    lines += missing_cells_lines(table.get("missing_cells"))
    if table["average"]:
        labels = sorted({average_label(a) for a in table["average"].values()})
        lines += [f"## {labels[0] if len(labels) == 1 else 'Averages over datasets'}", ""]
        lines.append("| Method | Datasets | Base | New | H | Paper: Base | Paper: New | Paper: H |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for label, average in table["average"].items():
            paper = table["paper_average"].get(label)
            shown = [f"{paper[c]:.2f}" for c in ("base", "new", "H")] if paper else ["-"] * 3
            lines.append(
                f"| {markdown_cell(average['title'])} | {average['n']} | {average['base']:.2f} | {average['new']:.2f} | "
                f"{average['H']:.2f} | " + " | ".join(shown) + " |"
            )
        lines.append("")
        if not all(a["paper_datasets"] for a in table["average"].values()):
            lines += ["The paper averages over all 11 datasets: the two sides are not comparable.", ""]
        variants = [markdown_cell(a["title"]) for a in table["average"].values() if not a["published"]]
        if variants:
            lines += [VARIANT_NOTE.format(titles=", ".join(variants)), ""]
    lines += ["## Per dataset", ""]
    lines.append(markdown_table(_report_rows(table)).rstrip("\n"))
    lines += [
        "",
        "H per row is computed from the seed-averaged Base and New accuracies, and in the average from the "
        "dataset-averaged ones, as in the paper.",
    ]
    return "\n".join(lines) + "\n"


def write_table(output_dir, table: dict) -> None:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # New files renamed into place, never through a symlink (cocoop_hf_training/outputs.py).
    write_output(output_dir / f"{TABLE_STEM}.json", json.dumps(table, indent=2), "table")
    write_output(output_dir / f"{TABLE_STEM}.md", table1_markdown(table), "table")
    rows = _report_rows(table)
    for label, average in table["average"].items():  # one more group on the chart: our average, the paper's beside
        group = f"average ({average['n']})"
        bars = [(average["title"], average)]
        if label in table["paper_average"]:
            bars.append((f"{average['title']} (paper)", table["paper_average"][label]))
        for who, scores in bars:
            stats = {c: {"mean": scores[c], "std": 0.0, "n": 1} for c in ("base", "new", "H")}
            rows.append({"dataset": group, "method": who, "seeds": [], "scores": stats})
    bar_chart(rows, output_dir / f"{TABLE_STEM}.png", table["note"])


# ---------------------------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    """Run the grid and write the table; returns the content of table1.json."""
    args = parse_args(argv)
    cli.setup_logging(logger.name, std_logging.INFO)
    results, missing, answer = results_for_tables(args, lambda: grid_plan(args, build_grid(args)), run_grid)
    if results is None:
        return answer
    table = table1(results, args.benchmark, args.method, missing)
    write_table(args.output_dir, table)
    markdown = table1_markdown(table)
    print(markdown, flush=True)
    folder = Path(args.output_dir).resolve()
    shown = folder / f"{TABLE_STEM}.md"
    logger.info("Done: the table is %s (also .json, .png); each cell's run is in a folder under %s.", shown, folder)
    return table


if __name__ == "__main__":
    cli.run_script(main)
