"""
The tables of cocoop_hf_training/run_transfer_benchmark.py: the CoCoOp paper's Table 2 (cross-dataset transfer) and Table 3
(domain generalisation) from the grid's cells, the paper's values beside ours, as transfer.md, transfer.json and
transfer.png in the grid folder (written through cocoop_hf_training/outputs.py: recorded in the grid's manifest, a user's file
of those names refused, never replaced).
"""

import json
import statistics
from pathlib import Path

from cocoop_hf.markdown_cocoop import markdown_cell
from cocoop_hf_training.grid import method_titles
from cocoop_hf_training.grid_arguments import TABLE1_DATASETS
from cocoop_hf_training.outputs import write_output
from cocoop_hf_training.report import CROSS_DATASET_FORMS, bar_chart, is_published_form, method_label


SOURCE = "ImageNet"
# Table 2's targets: the other ten datasets of Table 1, in its order.
CROSS_DATASET_TARGETS = tuple(name for name in TABLE1_DATASETS if name != SOURCE)
DG_TARGETS = ("ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR")
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


def _stats(values: list[float], seeds: list[int]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
        "seeds": seeds,
    }


def transfer_tables(results: dict, methods: list[str], targets: list[str]) -> dict:
    """
    Accuracy per method variant and dataset (mean ± sample std over seeds), Table 2 and Table 3, the paper's beside.

    A row is labelled by what its model's results.json records (`method_options`, see
    `cocoop_hf_training.report.method_label`): an evaluation by the options of the model it scores, its training cell's run.
    MaPLe and PromptSRC count as published with the prompts of their cross-dataset recipes, the ones this grid trains
    with (report.CROSS_DATASET_FORMS). The paper's values stand only beside rows that are the method as published.
    """
    trained = {
        (cell.method, cell.seed): content["runs"][0] for cell, content in results.items() if cell.kind == "train"
    }
    scores: dict[str, dict[str, dict[int, float]]] = {}
    variants = {}
    for cell, content in results.items():
        run = content["runs"][0]
        model_run = trained.get((cell.method, cell.seed), run) if cell.kind == "evaluate" else run
        label = method_label(model_run, forms=CROSS_DATASET_FORMS)
        variants.setdefault(
            label,
            {
                "method": cell.method,
                # the zero-shot row named by its backbone
                "title": method_label(model_run, method_titles(content), forms=CROSS_DATASET_FORMS),
                "published": is_published_form(model_run, forms=CROSS_DATASET_FORMS),
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


def partial_tables(tables: dict, missing: list[str]) -> dict:
    """
    --tables_only: `tables` from the finished cells, naming the `missing` ones (in no mean; "-" where a column has
    none). Only partial tables have the field: those of a finished grid keep their fields as they were.
    """
    return {**tables, "missing_cells": list(missing)} if missing else tables


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
# The published forms: those of the recipes this grid trains its sources with (grid.RECIPES / TRANSFER_RECIPES;
# MaPLe's and PromptSRC's official *_cross_datasets.yaml).
VARIANT_NOTE = (
    "{titles}: not the method as published (CoOp: class token at the end, one shared context, no KgCoOp term; "
    "CoCoOp: no KgCoOp term, class token at the end; MaPLe, its cross-dataset recipe: 2 tokens, depth 3; PromptSRC, "
    "its cross-dataset recipe: 4+4 tokens, depth 3/3, weights 25/10/1, GPA mean 6, std 10). The paper reports no such "
    "runs: no (paper) row beside them."
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
    if tables.get("missing_cells"):
        missing = tables["missing_cells"]
        shown = "; ".join(markdown_cell(name) for name in missing)
        lines += [
            f"**Partial tables: {len(missing)} cell(s) not finished, missing from every mean ('-'):** {shown}.",
            "",
        ]
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
    # New files renamed into place, never through a symlink (cocoop_hf_training/outputs.py).
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
