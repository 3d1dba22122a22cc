"""Results of CoCoOp runs: results.json, a Markdown table, a PNG bar chart, the model card; seed aggregation.

Aggregate several runs (seeds, methods, datasets) into one table and chart:

    python -m cocoop_hf_training.report out/cocoop_seed1 out/cocoop_seed2 out/coop_seed1 --output_dir out/summary
"""

import argparse
import io
import json
import math
import re
import statistics
import sys
from pathlib import Path


if __package__ in (None, ""):  # run as a script: make `training` and `cocoop_hf` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers.utils import logging

from cocoop_hf.backbones_cocoop import BACKBONES, backbone_of
from cocoop_hf.limits_cocoop import describe_value
from cocoop_hf.markdown_cocoop import markdown_cell
from cocoop_hf.modelcard_cocoop import METRIC_FIELDS
from cocoop_hf_training.cli import KGCOOP_DEFAULT_WEIGHT, run_script
from cocoop_hf_training.model_arguments import (
    DEEP_PROMPT_DEFAULTS,
    DEEP_PROMPT_FIELDS,
    DEEP_PROMPT_METHODS,
    PROMPTSRC_DEFAULT_WEIGHTS,
    PROMPTSRC_FIELDS,
)
from cocoop_hf_training.outputs import (
    MANIFEST_NAME,
    RUN_MARKERS,
    finish_output_dir,
    load_manifest,
    prepare_output_dir,
    register_outputs,
    shown,
    write_output,
)
from cocoop_hf_training.run_options import GPA_DEFAULT_MEAN, GPA_DEFAULT_STD


logger = logging.get_logger(__name__)

RESULTS_NAME = "results.json"
TABLE_NAME = "results.md"
PLOT_NAME = "results.png"
CARD_NAME = "README.md"
# What this script's aggregation writes: a user's file of such a name in --output_dir is refused, never replaced.
REPORT_OUTPUTS = re.compile(r"^(results\.(json|md|png)|tmp-.*)$")
register_outputs("report", REPORT_OUTPUTS)  # no other name recorded in its manifest is ever its own


def random_weights_note(backbone: str = "clip") -> str:
    """The demo banner of a run on random weights, naming its backbone (`model_type`) as its card does."""
    return (
        f"MACHINERY DEMO: the {backbone_of(backbone).display_name} weights are random, so every accuracy below is "
        "meaningless; it only shows that the pipeline runs end to end."
    )


RANDOM_WEIGHTS_NOTE = random_weights_note("clip")  # CLIP's, as results written before read


def chart_banner(note: str) -> str:
    """
    The red banner of a chart whose results carry `note`: names the backbones whose random-weights note it holds (a
    grid's note joins its cells' notes); "RANDOM CLIP WEIGHTS: ..." on CLIP as always, "RANDOM WEIGHTS" if none.
    """
    names = [backbone.display_name for key, backbone in BACKBONES.items() if random_weights_note(key) in note]
    which = f"{' + '.join(names)} " if names else ""
    return f"RANDOM {which}WEIGHTS: machinery demo, accuracies are meaningless"


# Column order of tables and charts: base-to-new metrics, then single-set (transfer) accuracy. A run's `H` (percent,
# as the accuracies) is titled as on the model card, so the two tables read the same.
COLUMNS = ("base", "new", "H", "all")
COLUMN_TITLES = {**METRIC_FIELDS, "all": "Accuracy (%)"}


# The deep-prompt options of IVLP / MaPLe / PromptSRC models recorded in results.json (CoCoOpConfig fields), and the
# values of their published recipes (cocoop_hf_training/model_arguments.py DEEP_PROMPT_DEFAULTS, PromptSRC's weights).
# What a table counts as each deep-prompt method "as published": the prompt options of the recipe its grid trains
# with. Table 1 (cocoop_hf_training/run_benchmark.py): the base-to-new recipes. Tables 2 and 3
# (cocoop_hf_training/transfer_tables.py): the cross-dataset recipes where the official repo ships one (grid.py
# TRANSFER_RECIPES) -- MaPLe configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml (N_CTX 2,
# PROMPT_DEPTH 3), PromptSRC configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.yaml (N_CTX_TEXT
# and N_CTX_VISION 4, PROMPT_DEPTH_TEXT and PROMPT_DEPTH_VISION 3, weights 25 / 10); IVLP has none and keeps its
# base-to-new one. Without this a source model trained with its own cross-dataset recipe read "maple (depth 3)".
# PromptSRC's Gaussian prompt aggregation is part of its form: GPA_MEAN / GPA_STD 15 / 1 base-to-new, 6 / 10 in the
# cross-dataset config (both files as above).
BASE_TO_NEW_FORMS = {
    **DEEP_PROMPT_DEFAULTS,
    "promptsrc": {**DEEP_PROMPT_DEFAULTS["promptsrc"], "gpa_mean": GPA_DEFAULT_MEAN, "gpa_std": GPA_DEFAULT_STD},
}
CROSS_DATASET_FORMS = {
    **DEEP_PROMPT_DEFAULTS,
    "maple": {**DEEP_PROMPT_DEFAULTS["maple"], "prompt_depth_text": 3, "prompt_depth_vision": 3},
    "promptsrc": {
        **DEEP_PROMPT_DEFAULTS["promptsrc"],
        "prompt_depth_text": 3,
        "prompt_depth_vision": 3,
        "gpa_mean": 6.0,
        "gpa_std": 10.0,
    },
}


def method_options(config) -> dict:
    """The method options of a CoCoOp model's config (CoOp family; deep prompts where it has them), as results.json
    records them."""
    options = {
        "conditional": bool(config.conditional),
        "n_ctx": config.n_ctx,
        "class_token_position": getattr(config, "class_token_position", "end"),
        "class_specific_context": bool(getattr(config, "class_specific_context", False)),
        "kgcoop_weight": float(getattr(config, "kgcoop_weight", 0.0)),
    }
    if options["kgcoop_weight"] > 0:
        options["kgcoop_template"] = config.kgcoop_template
    method = saved_method(config)
    if method in DEEP_PROMPT_METHODS:
        options.update({name: getattr(config, name) for name in DEEP_PROMPT_FIELDS})
    if method == "promptsrc":
        options.update({name: float(getattr(config, name)) for name in PROMPTSRC_FIELDS})
    return options


def saved_method(config) -> str:
    """
    The method a CoCoOp model's config describes: its `method_name` (IVLP, MaPLe and PromptSRC are told apart by their
    deep-prompt fields there); a config from before those fields: 'cocoop' (conditional), 'kgcoop' (CoOp +
    regulariser), 'coop'.
    """
    name = getattr(config, "method_name", None)
    if isinstance(name, str):
        return name
    if config.conditional:
        return "cocoop"
    return "kgcoop" if getattr(config, "kgcoop_weight", 0.0) > 0 else "coop"


def method_label(run: dict, titles: dict[str, str] | None = None, forms: dict | None = None) -> str:
    """
    A run's method with the options that differ from the method's published form: "coop (CSC, class token
    middle)", "kgcoop (w=4)", "cocoop (+KgCoOp w=8)". Runs of one label are one row of a table. `titles` names the
    methods ({"kgcoop": "KgCoOp", ...}: "KgCoOp (w=4)"); a run without `method_options` (results written before
    they were recorded, zero-shot CLIP with a template) is labelled by its method alone. `forms`: the deep-prompt
    methods' published prompt options the table compares with (BASE_TO_NEW_FORMS, the default, or
    CROSS_DATASET_FORMS).
    """
    method, options = run["method"], run.get("method_options") or {}
    parts = []
    if options.get("class_specific_context"):
        parts.append("CSC")
    if options.get("class_token_position", "end") != "end":
        parts.append(f"class token {options['class_token_position']}")
    weight = options.get("kgcoop_weight")
    if weight is not None and method == "kgcoop" and weight != KGCOOP_DEFAULT_WEIGHT:
        parts.append(f"w={weight:g}")
    elif weight is not None and method != "kgcoop" and weight > 0:
        parts.append(f"+KgCoOp w={weight:g}")
    parts += deep_prompt_differences(method, options, forms)
    name = (titles or {}).get(method, method)
    return f"{name} ({', '.join(parts)})" if parts else name


def deep_prompt_differences(method: str, options: dict, forms: dict | None = None) -> list[str]:
    """
    IVLP / MaPLe / PromptSRC options that differ from the method's published recipe in `forms` (default: the
    base-to-new one, BASE_TO_NEW_FORMS): "2 ctx", "depth 3/3", ...
    """
    if method not in DEEP_PROMPT_METHODS or "prompt_depth_text" not in options:
        return []
    published, parts = (forms or BASE_TO_NEW_FORMS)[method], []
    if options.get("n_ctx") != published["n_ctx"]:
        parts.append(f"{options.get('n_ctx')} ctx")
    vision_prompts = options.get("prompt_depth_vision") != 0  # text-only IVLP: no vision token count to compare
    if method != "maple" and vision_prompts and options.get("n_ctx_vision") != published["n_ctx_vision"]:
        parts.append(f"{options.get('n_ctx_vision')} vision ctx")
    depths = (options.get("prompt_depth_text"), options.get("prompt_depth_vision"))
    if depths != (published["prompt_depth_text"], published["prompt_depth_vision"]):
        parts.append(f"depth {depths[0]}" if method == "maple" else f"depth {depths[0]}/{depths[1]}")
    if method == "promptsrc":
        for name, default in PROMPTSRC_DEFAULT_WEIGHTS.items():
            if options.get(name) is not None and options[name] != default:
                parts.append(f"{name.removeprefix('promptsrc_').replace('_weight', '')} weight {options[name]:g}")
        gpa = (options.get("gpa_mean"), options.get("gpa_std"))
        if gpa[0] is not None and gpa != (published.get("gpa_mean"), published.get("gpa_std")):
            parts.append(f"GPA {gpa[0]:g}/{gpa[1]:g}")
    return parts


def is_published_form(run: dict, forms: dict | None = None) -> bool:
    """
    Whether a run is its method as published, so that the paper's figures compare with it: CoOp with the class
    token at the end, one shared context and no KgCoOp term; KgCoOp with w = 8 (and CoOp's prompt layout); CoCoOp
    without the regulariser, class token at the end; IVLP, MaPLe and PromptSRC with the prompt options of their recipe
    in `forms` (default: base-to-new, BASE_TO_NEW_FORMS). Zero-shot CLIP always is.
    """
    return method_label(run, forms=forms) == run["method"]


def options_text(options: dict) -> str:
    """One line of prose for results.md: the prompt layout and the regularisers (KgCoOp's, PromptSRC's) of a run."""
    text = (
        f"{options['n_ctx']} context tokens, "
        f"{'one context per class (CSC)' if options['class_specific_context'] else 'one shared context'}, "
        f"class name at the {options['class_token_position']} of the prompt"
    )
    if options.get("kgcoop_weight", 0.0) > 0:
        text += f"; KgCoOp regulariser w = {options['kgcoop_weight']:g} towards {options['kgcoop_template']!r}"
    if "prompt_depth_text" in options:
        if options.get("prompt_depth_vision") == 0:
            vision = "no vision prompts (text prompts only)"
        elif options.get("vision_prompts_from_text"):
            vision = "vision prompts projected from the text ones (MaPLe)"
        else:
            vision = f"{options.get('n_ctx_vision')} vision prompt tokens"
        text += (
            f"; deep prompts: text depth {options['prompt_depth_text']}, vision depth "
            f"{options.get('prompt_depth_vision')}, {vision}"
        )
    if "promptsrc_text_weight" in options:
        text += (
            f"; PromptSRC terms: text L1 x {options['promptsrc_text_weight']:g}, image L1 x "
            f"{options['promptsrc_image_weight']:g}, logits KL x {options['promptsrc_logits_weight']:g}"
        )
    return text


# Metrics of a run entry in percent; each must be a finite number in [0, 100] before it enters a table or a mean.
PERCENT_METRICS = ("accuracy", "macro_f1")


def check_run_metrics(run, source) -> None:
    """
    Refuse a results.json run entry (`source` names the file) whose metrics are not percentages: accuracy, macro-F1
    and H must be finite numbers in [0, 100] (an edited or damaged file with accuracy 1e6, NaN, -5 or "90" would
    otherwise enter Table 1 and the seed means). Names the file and the field.
    """

    def refuse(field: str, value) -> None:
        raise ValueError(
            f"{source}: `{field}` must be a number in [0, 100] (percent), got {describe_value(value)}. The file was "
            "edited or damaged: run it again, or leave that file out."
        )

    def check(field: str, value) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value <= 100):
            refuse(field, value)  # NaN fails `0 <= value <= 100`; infinity too

    if not isinstance(run, dict) or not isinstance(run.get("metrics"), dict):
        got = run.get("metrics") if isinstance(run, dict) else run
        raise ValueError(
            f"{source}: a run's `metrics` must be an object of evaluated sets, got {describe_value(got)}."
        )
    for name, metrics in run["metrics"].items():
        if not isinstance(metrics, dict) or "accuracy" not in metrics:
            raise ValueError(
                f"{source}: `metrics.{name}` must be an object with an `accuracy`, got {describe_value(metrics)}."
            )
        for field in PERCENT_METRICS:
            if field in metrics:
                check(f"metrics.{name}.{field}", metrics[field])
    if run.get("H") is not None:
        check("H", run["H"])


def run_scores(run: dict, source="a run of the results") -> dict[str, float]:
    """Percent per column of one run entry: base / new accuracy and H, or the target set's accuracy ('all')."""
    check_run_metrics(run, source)
    scores = {name: metrics["accuracy"] for name, metrics in run["metrics"].items()}
    if run.get("H") is not None:
        scores["H"] = run["H"]
    return {column: scores[column] for column in COLUMNS if column in scores}


def aggregate(runs: list[dict]) -> list[dict]:
    """Group runs by (dataset, method and its options, see `method_label`): mean and sample std of every column over
    seeds."""
    groups = {}
    for run in runs:
        groups.setdefault((run["dataset"], run["method"], method_label(run)), []).append(run)
    rows = []
    for (dataset, method, label), members in groups.items():
        per_column = {}
        for run in members:
            for column, value in run_scores(run).items():
                per_column.setdefault(column, []).append(value)
        stats = {
            column: {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "n": len(values),
            }
            for column, values in per_column.items()
        }
        seeds = sorted({run.get("seed") for run in members if run.get("seed") is not None})
        rows.append({"dataset": dataset, "method": method, "label": label, "seeds": seeds, "scores": stats})
    return rows


def markdown_table(rows: list[dict], note: str | None = None) -> str:
    columns = [c for c in COLUMNS if any(c in row["scores"] for row in rows)]
    lines = []
    if note:
        lines += [f"> **{markdown_cell(note)}**", ""]
    lines.append("| Dataset | Method | Seeds | " + " | ".join(COLUMN_TITLES[c] for c in columns) + " |")
    lines.append("|---|---|---|" + "---|" * len(columns))
    for row in rows:
        cells = []
        for column in columns:
            stat = row["scores"].get(column)
            if stat is None:
                cells.append("-")
            elif stat["n"] > 1:
                cells.append(f"{stat['mean']:.2f} ± {stat['std']:.2f}")
            else:
                cells.append(f"{stat['mean']:.2f}")
        seeds = markdown_cell(", ".join(str(s) for s in row["seeds"]) or "-")
        # Names come from results.json files: escaped, so that a `|` or a line break cannot add cells or rows.
        label = markdown_cell(row.get("label", row["method"]))
        lines.append(f"| {markdown_cell(row['dataset'])} | {label} | {seeds} | " + " | ".join(cells) + " |")
    lines.append("")
    harmonic = " H = 2·Base·New/(Base+New), their harmonic mean;" if "H" in columns else ""
    lines.append(f"Top-1 accuracy (%);{harmonic} mean ± sample std over seeds where several.")
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict], path, note: str | None = None) -> None:
    """One panel per column (Base / New / H / Accuracy): datasets on x, one bar per method, std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [c for c in COLUMNS if any(c in row["scores"] for row in rows)]
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    methods = list(dict.fromkeys(row.get("label", row["method"]) for row in rows))
    figure, axes = plt.subplots(1, len(columns), figsize=(max(4.0, 1.2 * len(datasets) + 2) * len(columns), 4))
    axes = [axes] if len(columns) == 1 else list(axes)
    width = 0.8 / len(methods)
    for axis, column in zip(axes, columns, strict=True):
        for m, method in enumerate(methods):
            means, stds, xs = [], [], []
            for d, dataset in enumerate(datasets):
                row = next(
                    (r for r in rows if r["dataset"] == dataset and r.get("label", r["method"]) == method), None
                )
                if row is not None and column in row["scores"]:
                    xs.append(d + (m - (len(methods) - 1) / 2) * width)
                    means.append(row["scores"][column]["mean"])
                    stds.append(row["scores"][column]["std"])
            axis.bar(xs, means, width, yerr=stds, capsize=3, label=method)
        axis.set_title(COLUMN_TITLES[column])
        axis.set_xticks(range(len(datasets)), datasets, rotation=20)
        axis.set_ylim(0, 100)
        axis.set_ylabel("top-1 accuracy (%)")
    axes[0].legend()
    if note:
        figure.suptitle(chart_banner(note), color="red")
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=100)
    plt.close(figure)
    write_output(path, image.getvalue(), "chart")  # a new file renamed into place, never through a symlink


def model_card(
    rows: list[dict],
    *,
    base_model: str,
    recipe: dict,
    repo_id=None,
    class_names=None,
    n_ctx=None,
    random_weights=False,
    base_model_revision=None,
    model_name=None,
    method="cocoop",
    options: dict | None = None,
    backbone: str = "clip",
    prompt_template: str | None = None,
    ctx_init: str | None = None,
):
    """
    The filled model card, via `cocoop_hf.modelcard_cocoop.render_model_card` (percent, as results.json): base, new
    and H of a base-to-new run, else the accuracy on all classes (`--protocol all`). `options`: the model's
    CoOp-family options as `method_options` gives them (class-token position, class-specific context, KgCoOp weight
    and template). `backbone`: the base model's `model_type` (its name and usual weights licence on the card).
    `prompt_template`: the template a zero-shot run scored the plain backbone with (nothing saved; the card says so).
    `ctx_init`: the model's context words (MaPLe's card shows the words it keeps fixed).
    """
    from cocoop_hf.modelcard_cocoop import render_model_card

    options = options or {}
    card_results = []
    for row in rows:
        scores = row["scores"]
        entry = {"dataset": f"{row['dataset']} ({row.get('label', row['method'])})", "random_weights": random_weights}
        if "base" in scores or "new" in scores:
            for column in METRIC_FIELDS:
                if column in scores:
                    entry[column] = scores[column]["mean"]
        elif "all" in scores:
            entry["accuracy"] = scores["all"]["mean"]
        else:
            continue
        card_results.append(entry)
    datasets = list(dict.fromkeys(row["dataset"] for row in rows)) or None
    return render_model_card(
        base_model=base_model,
        datasets=datasets,
        results=card_results or None,
        recipe=recipe,
        repo_id=repo_id,
        base_model_revision=base_model_revision,
        class_names=class_names,
        n_ctx=n_ctx,
        model_name=model_name,
        method=method,
        random_weights=random_weights,
        class_token_position=options.get("class_token_position", "end"),
        class_specific_context=options.get("class_specific_context", False),
        kgcoop_weight=options.get("kgcoop_weight", 0.0),
        kgcoop_template=options.get("kgcoop_template"),
        backbone=backbone,
        prompt_template=prompt_template,
        prompt_depth_vision=options.get("prompt_depth_vision"),
        ctx_init=ctx_init,
    )


def write_report(output_dir, runs: list[dict], *, note: str | None = None, extra: dict | None = None) -> dict:
    """Write results.json (runs + aggregate), results.md and results.png; return the JSON content."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = aggregate(runs)
    content = {"note": note, **(extra or {}), "runs": runs, "aggregate": rows}
    # Each output a new file renamed into place, never through a symlink nor over a file the run did not write.
    write_output(output_dir / RESULTS_NAME, json.dumps(content, indent=2, default=_json_default), "results")
    if rows:  # a training-only run (no --do_eval) has nothing to tabulate or plot
        table = markdown_table(rows, note)
        described = {}
        for run in runs:
            if run.get("method_options"):
                described.setdefault(method_label(run), options_text(run["method_options"]))
        if described:
            table += "\n" + "".join(f"- {label}: {text}.\n" for label, text in described.items())
        write_output(output_dir / TABLE_NAME, table, "results table")
        bar_chart(rows, output_dir / PLOT_NAME, note)
    return content


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to results.json")


def check_not_a_run_folder(output_dir) -> None:
    """
    Refuse an --output_dir holding a run's or a grid's outputs (its results.json would be replaced by the aggregate,
    its manifest by this script's): a folder with the manifest of another script, or a run's results, model,
    checkpoints, few-shot indices or grid tables that no earlier aggregate of this script recorded.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return
    manifest = load_manifest(folder)
    if (folder / MANIFEST_NAME).exists() and (manifest is None or manifest.get("producer") != "report"):
        raise ValueError(
            f"--output_dir {folder} holds the outputs of a training run ({MANIFEST_NAME}): the aggregate would "
            "replace its results. Choose another --output_dir (e.g. a new folder beside the runs)."
        )
    found = {path.name for path in folder.iterdir() if RUN_MARKERS.match(path.name)}
    recorded = set(manifest["entries"]) if manifest is not None else set()
    if found - recorded:
        raise ValueError(
            f"--output_dir {folder} holds a run's or a grid's outputs ({shown(found - recorded)}): the aggregate "
            "would replace them. Choose another --output_dir (e.g. a new folder beside the runs)."
        )


def read_results_file(path: Path) -> dict:
    """
    A results.json of cocoop_hf_training/run_cocoop.py, checked as read: JSON (UTF-8), an object with a list `runs` of objects.
    Anything else is one ValueError naming the file (not a parser message without a file name, nor a TypeError from
    a `runs` of the wrong kind, nor a JSON string that merely contains "runs").
    """
    from cocoop_hf_training.split_checks import read_text

    expected = 'an object {"runs": [{...}, ...]} as cocoop_hf_training/run_cocoop.py writes'
    try:
        content = json.loads(read_text(path, "results file"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"results file {path} is not valid JSON ({error.msg} at line {error.lineno} column {error.colno}): "
            f"expected {expected}."
        ) from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts (sys.int_info)
        raise ValueError(f"results file {path} is not valid JSON: {str(error)[:80]}.") from None
    except RecursionError:
        raise ValueError(f"results file {path} nests its JSON too deeply: expected {expected}.") from None
    if not isinstance(content, dict) or "runs" not in content:
        raise ValueError(
            f"{path} is not a results file of cocoop_hf_training/run_cocoop.py: it holds {describe_value(content)}, not "
            f"{expected}."
        )
    runs = content["runs"]
    if not isinstance(runs, list) or not all(isinstance(run, dict) for run in runs):
        raise ValueError(f"{path}: `runs` must be a list of run objects, got {describe_value(runs)}.")
    return content


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="Run folders (or results.json files) to aggregate.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Replace an earlier aggregate of this script in --output_dir (never a run's outputs nor other files).",
    )
    args = parser.parse_args(argv)
    check_not_a_run_folder(args.output_dir)
    runs, notes = [], set()
    for source in args.inputs:
        path = Path(source)
        path = path / RESULTS_NAME if path.is_dir() else path
        if not path.is_file():
            raise ValueError(f"{source}: no {RESULTS_NAME} found (is it a finished run's output folder?).")
        content = read_results_file(path)
        for run in content["runs"]:
            check_run_metrics(run, path)  # here, where the file is known: its name is in the error
        runs.extend(content["runs"])
        if content.get("note"):
            notes.add(content["note"])
    note = " ".join(sorted(notes)) or None
    prepare_output_dir(
        args.output_dir, args.overwrite_output_dir, resume=False, outputs=REPORT_OUTPUTS, producer="report"
    )
    content = write_report(args.output_dir, runs, note=note, extra={"sources": [str(s) for s in args.inputs]})
    finish_output_dir(args.output_dir)
    print(markdown_table(content["aggregate"], note))
    return content


if __name__ == "__main__":
    run_script(lambda: main(sys.argv[1:]))
