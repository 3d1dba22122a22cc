"""Model cards for CoCoOp checkpoints: YAML front matter + sections, rendered by `huggingface_hub.ModelCard`.

The template is `model_card_template.md` beside this file (package data). This module is part of the installed
package only: saved model folders do not ship it (they need no card renderer to load and run). It imports only the
standard library, huggingface_hub and its siblings `markdown_cocoop` and `backbones_cocoop` (the backbone's name and
the licence usually given to its weights). Every value a user chose (class and dataset
names, recipe values, paths) is escaped where it lands: `markdown_cell` in tables and text, a Python literal in code.
"""

import math
import os
from numbers import Real
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .backbones_cocoop import backbone_of
from .markdown_cocoop import markdown_cell, markdown_code


# Every card's tags; the backbone's `model_type` ("clip", "siglip", ...) follows them.
CARD_TAGS = ["cocoop", "prompt-learning"]
RECIPE_FIELDS = {
    "shots": "Shots per class",
    "seed": "Seed",
    "epochs": "Epochs",
    "lr": "Learning rate",
    "batch_size": "Batch size",
}
# Key (as in cocoop_hf_training/report.py results.json runs) -> the title every table, chart and model-index entry shows.
# Accuracies and H are in percent everywhere, as the evaluation reports them.
METRIC_FIELDS = {"base": "Base accuracy (%)", "new": "New accuracy (%)", "H": "H, harmonic mean (%)"}
# A run on all classes at once (`--protocol all`, e.g. every class-specific-context run): one accuracy, no split.
ALL_CLASSES_FIELDS = {"accuracy": "Accuracy (%)"}
CARD_METRIC_FIELDS = {**METRIC_FIELDS, **ALL_CLASSES_FIELDS}
RESULT_KEYS = ("dataset", *CARD_METRIC_FIELDS, "random_weights")
KGCOOP_CITATION = """@inproceedings{yao2023kgcoop,
    title={Visual-Language Prompt Tuning with Knowledge-guided Context Optimization},
    author={Yao, Hantao and Zhang, Rui and Xu, Changsheng},
    booktitle={IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
    year={2023}
}"""
COOP_CITATION = """@article{zhou2022coop,
    title={Learning to Prompt for Vision-Language Models},
    author={Zhou, Kaiyang and Yang, Jingkang and Loy, Chen Change and Liu, Ziwei},
    journal={International Journal of Computer Vision (IJCV)},
    year={2022}
}"""
MAPLE_CITATION = """@inproceedings{khattak2023maple,
    title={MaPLe: Multi-modal Prompt Learning},
    author={Khattak, Muhammad Uzair and Rasheed, Hanoona and Maaz, Muhammad and Khan, Salman and Khan, Fahad Shahbaz},
    booktitle={IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
    year={2023}
}"""
PROMPTSRC_CITATION = """@inproceedings{khattak2023promptsrc,
    title={Self-regulating Prompts: Foundational Model Adaptation without Forgetting},
    author={Khattak, Muhammad Uzair and Wasim, Syed Talal and Naseer, Muzammal and Khan, Salman and Yang, Ming-Hsuan and Khan, Fahad Shahbaz},
    booktitle={IEEE/CVF International Conference on Computer Vision (ICCV)},
    year={2023}
}"""
# Deep prompts in both towers (IVLP, MaPLe, PromptSRC): the model-card wording of each.
DEEP_PROMPT_METHODS = ("ivlp", "maple", "promptsrc")
CITATION = """@inproceedings{zhou2022cocoop,
    title={Conditional Prompt Learning for Vision-Language Models},
    author={Zhou, Kaiyang and Yang, Jingkang and Loy, Chen Change and Liu, Ziwei},
    booktitle={IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
    year={2022},
    eprint={2203.05557},
    archivePrefix={arXiv}
}"""

# The one card template (package data beside this file): rendered by huggingface_hub.ModelCard.from_template.
CARD_TEMPLATE_FILE = Path(__file__).with_name("model_card_template.md")


def _check_percent(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise TypeError(f"{where} must be a finite number (an accuracy in percent, 0 to 100), got {value!r}.")
    if not 0.0 <= value <= 100.0:
        raise ValueError(f"{where} must be an accuracy in percent, in [0, 100], got {value!r}.")
    return float(value)


def is_hub_repo_id(name: str) -> bool:
    """Whether `name` can only mean a Hub repo: a valid repo id that is not a folder here."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return not os.path.isdir(name)


def _normalise_results(results) -> list[dict]:
    """Results as a list of `{"dataset", "base", "new", "H", "accuracy", "random_weights"}`; missing metrics stay
    absent."""
    if results is None:
        return []
    if isinstance(results, dict):
        results = [results]
    if not isinstance(results, (list, tuple)):
        raise TypeError(f"`results` must be a dict or a list of dicts, got {type(results).__name__}.")
    rows = []
    for index, entry in enumerate(results):
        if not isinstance(entry, dict):
            raise TypeError(f"`results[{index}]` must be a dict, got {type(entry).__name__}.")
        unknown = sorted(set(entry) - set(RESULT_KEYS))
        if unknown:
            raise ValueError(f"`results[{index}]` has unknown keys {unknown}: use {', '.join(RESULT_KEYS)}.")
        dataset = entry.get("dataset")
        if not isinstance(dataset, str) or not dataset:
            raise ValueError(f"`results[{index}]` needs a non-empty string 'dataset', got {dataset!r}.")
        row = {"dataset": dataset, "random_weights": bool(entry.get("random_weights", False))}
        for key in CARD_METRIC_FIELDS:
            if entry.get(key) is not None:
                row[key] = _check_percent(entry[key], f"`results[{index}][{key!r}]`")
        if "H" not in row and "base" in row and "new" in row:
            total = row["base"] + row["new"]
            row["H"] = 0.0 if total == 0 else 2 * row["base"] * row["new"] / total
        if any(key in row for key in CARD_METRIC_FIELDS):
            rows.append(row)
    return rows


def _normalise_recipe(recipe) -> list[tuple[str, str]]:
    if recipe is None:
        return []
    if not isinstance(recipe, dict):
        raise TypeError(f"`recipe` must be a dict (shots, seed, epochs, lr, batch_size, ...), got {recipe!r}.")
    rows = []
    for key, value in recipe.items():
        if value is None:
            continue
        if isinstance(value, float):
            value = f"{value:g}"
        rows.append((markdown_cell(RECIPE_FIELDS.get(key, str(key))), markdown_cell(value)))
    return rows


def python_str(text: str) -> str:
    """`text` as a Python string literal (`ast.literal_eval` gives it back), in double quotes where `repr` allows."""
    literal = repr(text)
    if literal[0] == "'" and '"' not in text:
        # repr chose single quotes, so `text` holds no quote at all: the same body in double quotes.
        return '"' + literal[1:-1] + '"'
    return literal


# What the card calls each training method (`cocoop_hf_training/run_cocoop.py --method`), wherever it speaks of the method's
# accuracy; and the intro's first sentence per method.
# "zero-shot CLIP" is CLIP's name; another backbone's card names its own (`method_name`).
METHOD_NAMES = {
    "cocoop": "CoCoOp",
    "coop": "CoOp",
    "kgcoop": "KgCoOp",
    "ivlp": "IVLP",
    "maple": "MaPLe",
    "promptsrc": "PromptSRC",
    "zeroshot": "zero-shot CLIP",
}
METHOD_INTRO = {
    "cocoop": "Prompts learned with **CoCoOp** (Conditional Context Optimization, Zhou et al., CVPR 2022)",
    "coop": "Prompts learned with **CoOp** (Context Optimization, Zhou et al., IJCV 2022), packaged as a CoCoOp model "
    "without meta-network",
    "kgcoop": "Prompts learned with **KgCoOp** (Knowledge-guided Context Optimization, Yao et al., CVPR 2023), "
    "packaged as a CoCoOp model without meta-network",
    "ivlp": "Prompts learned with **IVLP** (independent vision-language prompting, the baseline of MaPLe, Khattak et "
    "al., CVPR 2023), packaged as a CoCoOp model without meta-network",
    "maple": "Prompts learned with **MaPLe** (Multi-modal Prompt Learning, Khattak et al., CVPR 2023), packaged as a "
    "CoCoOp model without meta-network",
    "promptsrc": "Prompts learned with **PromptSRC** (Self-regulating Prompts, Khattak et al., ICCV 2023), packaged as "
    "a CoCoOp model without meta-network",
    "zeroshot": "The **zero-shot {backbone}** baseline, packaged as a CoCoOp model",
}
# Hub owners whose releases of a backbone carry the licence of its row (`Backbone.weights_license`); any other base
# checkpoint (MetaCLIP 1 and the LAION/OpenCLIP conversions load as CLIPModel too, under other licences; a local
# folder) gets `license: other` and the card points to the base checkpoint's own card.
KNOWN_PUBLISHERS = {
    "clip": ("openai/",),
    "metaclip_2": ("facebook/metaclip-2",),
    "siglip": ("google/",),
    "siglip2": ("google/",),
}


def method_name(method: str, backbone: str = "clip") -> str:
    """What the card calls the method: "CoCoOp", ..., "zero-shot CLIP" / "zero-shot SigLIP 2"."""
    if method == "zeroshot":
        return f"zero-shot {backbone_of(backbone).display_name}"
    return METHOD_NAMES[method]


def card_license(backbone: str, base_model: str, base_model_is_hub_id: bool) -> str:
    """
    The front matter's licence: the one usually given to the backbone's released weights where `base_model` is a
    Hub id of that release's publisher (`KNOWN_PUBLISHERS`), else "other" (the base checkpoint's card decides).
    """
    known = base_model_is_hub_id and base_model.startswith(KNOWN_PUBLISHERS.get(backbone, ()))
    return backbone_of(backbone).weights_license if known else "other"


# The prompt as the text encoder reads it, per class-token position (official CoOp trainers/coop.py,
# `PromptLearner.forward`: "middle" splits the context in two halves around the class name, "front" puts it first).
PROMPT_LAYOUTS = {
    "end": "`[context] {class name}.`",
    "middle": "`[first half of the context] {class name} [second half of the context].`",
    "front": "`{class name} [context].`",
}


def _deep_prompt_layout(n_ctx, ctx_init) -> str:
    """
    The prompt of a deep-prompt model as its text tower reads it: with fewer context tokens than `ctx_init` words, the
    first `n_ctx` words are learned and the rest stay fixed words of the prompt (official trainers/maple.py
    `ctx_vectors = embedding[0, 1 : 1 + n_ctx]`, `prompt_prefix = ctx_init`).
    """
    words = ctx_init.split() if isinstance(ctx_init, str) else []
    if not n_ctx or len(words) <= n_ctx:
        return PROMPT_LAYOUTS["end"]
    prompt = markdown_code(f"[context] {' '.join(words[n_ctx:])} {{class name}}.")
    return f'{prompt} (the first {n_ctx} words of "{markdown_cell(" ".join(words))}" learned, the rest fixed)'


def _method_detail(
    method,
    n_ctx,
    class_token_position,
    class_specific_context,
    num_classes,
    name="CLIP",
    prompt_template=None,
    prompt_depth_vision=None,
    ctx_init=None,
) -> str:
    """The card's second paragraph: how the prompt is built and which classes the model can score (`name`: the
    backbone's display name)."""
    if prompt_template is not None:
        return (
            f"Nothing is learned and no model is saved: the plain {name} scores each class with the prompt "
            f"{markdown_code(prompt_template)} filled with the class name ('_' read as a space, as the official "
            "ZeroshotCLIP does). This card records the run's results; the base checkpoint itself is what to use."
        )
    if method == "zeroshot":
        return (
            "Nothing is learned: the context is the hand-written prompt's words and the meta-network adds nothing, "
            f"so the model classifies exactly as {name} with the prompt `a photo of a {{class name}}.` (or the "
            "given words)."
        )
    count = str(n_ctx) if n_ctx else "a few"
    layout = PROMPT_LAYOUTS[class_token_position]
    if method in DEEP_PROMPT_METHODS:
        if prompt_depth_vision == 0 and method != "maple":  # the official language-only IVLP: no vision prompts
            vision = f"text prompts only: the image features are frozen {name}'s own"
        elif method == "maple":
            vision = "the vision tower's prompts in the same layers are linear projections of the text prompts"
        else:  # IVLP, PromptSRC
            vision = (
                "learned vision prompts of their own join the image tokens in the first layers of the vision tower"
            )
        if method == "promptsrc":
            vision += (
                f"; training keeps features and logits close to frozen {name}'s (PromptSRC's self-regularising terms)"
            )
        return (
            f"{count} learned context vectors, shared by every image and every class, form the prompt "
            f"{_deep_prompt_layout(n_ctx, ctx_init)} and learned prompts replace them in the first layers of the text "
            f"tower; {vision}. {name}'s weights stay frozen. The learned prompts work for any class names."
        )
    if method == "cocoop":
        return (
            f"A meta-network turns each image's {name} feature into a bias on {count} learned context vectors, so "
            f"the prompt {layout} adapts to every image; {name} itself stays frozen. The learned prompts work for any "
            "class names, including classes never seen in training."
        )
    kgcoop = (
        " Training adds to the cross-entropy a weighted term that keeps each class's learned text feature close to "
        f"{name}'s zero-shot feature of a hand-written prompt"
        if method == "kgcoop"
        else ""
    )
    if class_specific_context:
        classes = f"its {num_classes} trained classes" if num_classes else "its trained classes"
        return (
            f"Each trained class has its own {count if count != 'a few' else 'few'} learned context vectors "
            "(class-specific context), the same for "
            f"every image, forming the prompt {layout}; {name} itself stays frozen.{kgcoop + '.' if kgcoop else ''} "
            f"The model scores exactly {classes}, in their trained order: there is no learned context for any other "
            "class, so it cannot classify new classes."
        )
    if kgcoop:
        kgcoop += ", meant to keep the prompts useful for classes never seen in training."
    return (
        f"{count} learned context vectors, shared by every image and every class, form the prompt {layout}; {name} "
        f"itself stays frozen.{kgcoop} The learned prompts work for any class names."
    )


def _prompt_options(
    class_token_position, class_specific_context, kgcoop_weight, kgcoop_template, name="CLIP"
) -> list[str]:
    """One line per CoOp-family option that differs from plain CoCoOp/CoOp, for the card's "Prompt options"."""
    if class_token_position not in ("end", "middle", "front"):
        raise ValueError(f"`class_token_position` must be 'end', 'middle' or 'front', got {class_token_position!r}.")
    if isinstance(kgcoop_weight, bool) or not isinstance(kgcoop_weight, Real) or not kgcoop_weight >= 0:
        raise ValueError(f"`kgcoop_weight` must be a number >= 0, got {kgcoop_weight!r}.")
    lines = []
    if class_token_position != "end":
        lines.append(
            f"Class-token position **{class_token_position}** (CoOp's CLASS_TOKEN_POSITION): the prompt is "
            f"{PROMPT_LAYOUTS[class_token_position]}"
        )
    if class_specific_context:
        lines.append(
            "**Class-specific context** (CoOp's CSC): one learned context per trained class. The model scores only "
            "the classes it was trained on and refuses any other class set."
        )
    if kgcoop_weight > 0:
        template = f" of the prompt {markdown_code(kgcoop_template)}" if kgcoop_template else ""
        lines.append(
            f"**KgCoOp regulariser**, weight w = {kgcoop_weight:g}: loss = cross-entropy + w x (1 - mean cosine "
            f"similarity to {name}'s zero-shot text features{template})."
        )
    return lines


def render_model_card(
    *,
    base_model: str | None,
    datasets=None,
    results=None,
    recipe: dict | None = None,
    repo_id: str | None = None,
    base_model_revision: str | None = None,
    class_names=None,
    n_ctx: int | None = None,
    license: str | None = None,
    model_name: str | None = None,
    method: str = "cocoop",
    random_weights: bool = False,
    class_token_position: str = "end",
    class_specific_context: bool = False,
    kgcoop_weight: float = 0.0,
    kgcoop_template: str | None = None,
    backbone: str = "clip",
    prompt_template: str | None = None,
    prompt_depth_vision: int | None = None,
    ctx_init: str | None = None,
) -> ModelCard:
    """
    Render the model card of a CoCoOp checkpoint.

    Args:
        base_model: Hub id of the frozen backbone (linked, and front matter `base_model`), or the local folder it was
            loaded from (named, not linked, and no `base_model` in the front matter: it is not on the Hub), or None
            for a backbone built from a config (no checkpoint to name).
        datasets: dataset id or list of ids trained on (front matter `datasets`).
        results: a dict or list of dicts `{"dataset": str, "base": float, "new": float, "H": float,
            "accuracy": float, "random_weights": bool}`, in percent (0 to 100) as in the `results.json` of
            `cocoop_hf_training/run_cocoop.py`: base and new accuracy and their harmonic mean H for a base-to-new run,
            `accuracy` for a run on all classes (`--protocol all`). Any metric may be missing (H is computed from
            base and new when absent). No metric at all: no results section and no model-index.
        recipe: training settings, e.g. `{"shots": 16, "seed": 1, "epochs": 10, "lr": 0.002, "batch_size": 1}`;
            `None` values are left out, extra keys are shown as they are.
        repo_id: where the card will live; used in the usage snippets (defaults to `"<your-repo-id>"`).
        base_model_revision: commit of `base_model` the prompts were learned on.
        class_names: the trained classes, in the model's order (listed on the card; the first three are the
            snippets' example labels, except with a class-specific context, which scores only this list).
        n_ctx: number of learned context tokens.
        license: SPDX id for the front matter (default: the licence usually given to the backbone's released
            weights, `backbones_cocoop.BACKBONES[backbone].weights_license`, where `base_model` is a Hub id of their
            publisher (`KNOWN_PUBLISHERS`: openai/ for CLIP, google/ for SigLIP and SigLIP 2, facebook/metaclip-2 for
            MetaCLIP 2), else "other"; the card says that the base checkpoint's own licence decides).
        model_name: title and model-index name (defaults to the repo name).
        method: `"cocoop"`, `"coop"`, `"kgcoop"`, `"ivlp"`, `"maple"`, `"promptsrc"` (`config.method_name`) or
            `"zeroshot"`: what the card says the prompts are.
        random_weights: the model runs on random backbone weights (a demo): the card warns and is tagged, with or
            without results. A result row with `random_weights` implies it.
        class_token_position, class_specific_context, kgcoop_weight, kgcoop_template: the model's CoOp-family
            options (as in its config); those that differ from plain CoCoOp/CoOp are listed under "Prompt options",
            and the intro gives the prompt's layout. A class-specific context (CoOp and KgCoOp only) gets a card
            and snippets that keep to the trained classes.
        backbone: the backbone's `model_type` ("clip", "metaclip_2", "siglip", "siglip2"): its name on the card, the
            default licence, a tag, and for a sigmoid-trained backbone (SigLIP) what the cross-entropy training
            means for its scores.
        prompt_template: the template a zero-shot run (method "zeroshot") scored the plain backbone with: nothing
            is learned or saved, so the card says so and shows the base checkpoint in transformers' zero-shot
            pipeline with this template instead of this repo's usage.
        prompt_depth_vision: the vision prompt depth of an IVLP / PromptSRC model (config `prompt_depth_vision`); 0:
            text prompts only, and the card says so.
        ctx_init: the prompt words of a deep-prompt model (config `ctx_init`): with fewer context tokens (`n_ctx`)
            than words, the card shows the words that stay fixed.
    """
    backbone_row = backbone_of(backbone)
    name = backbone_row.display_name
    if method not in METHOD_NAMES:
        raise ValueError(f"`method` must be one of {sorted(METHOD_NAMES)}, got {method!r}.")
    if prompt_template is not None and (method != "zeroshot" or not isinstance(prompt_template, str)):
        raise ValueError(
            f"`prompt_template` ({prompt_template!r}) is the template of a zero-shot run (method 'zeroshot', a "
            f"string with one '{{}}'), got method {method!r}."
        )
    if class_specific_context and method not in ("coop", "kgcoop"):
        raise ValueError(
            f"`class_specific_context=True` is an option of CoOp and KgCoOp (method 'coop' or 'kgcoop'), got "
            f"method {method!r}."
        )
    if base_model is not None and (not isinstance(base_model, str) or not base_model):
        raise ValueError(
            f"`base_model` must be the Hub id (or local folder) of the base {name} checkpoint, or None for a "
            f"backbone built from a config, got {base_model!r}."
        )
    base_model_is_hub_id = base_model is not None and is_hub_repo_id(base_model)
    license = card_license(backbone, base_model, base_model_is_hub_id) if license is None else license
    if isinstance(datasets, str):
        datasets = [datasets]
    if datasets is not None and (
        not isinstance(datasets, (list, tuple)) or not all(isinstance(d, str) and d for d in datasets)
    ):
        raise TypeError(f"`datasets` must be a dataset id or a list of ids, got {datasets!r}.")
    options = _prompt_options(class_token_position, class_specific_context, kgcoop_weight, kgcoop_template, name)
    result_rows = _normalise_results(results)
    recipe_rows = _normalise_recipe(recipe)
    repo_id = repo_id or "<your-repo-id>"
    model_name = model_name or repo_id.split("/")[-1]
    random_weights = bool(random_weights) or any(row["random_weights"] for row in result_rows)
    for row in result_rows:
        row["random_weights"] = row["random_weights"] or random_weights

    # A class-specific context classifies into its trained classes only: an image classifier, not a zero-shot one.
    task = "image-classification" if class_specific_context else "zero-shot-image-classification"
    eval_results = []
    for row in result_rows:
        for key, label in CARD_METRIC_FIELDS.items():
            if key in row:
                metric = label + (f", random {name} weights" if row["random_weights"] else "")
                eval_results.append(
                    EvalResult(
                        task_type=task,
                        dataset_type=row["dataset"],
                        dataset_name=row["dataset"],
                        metric_type="accuracy",
                        metric_name=metric,
                        metric_value=round(row[key], 2),
                    )
                )
    tags = [*CARD_TAGS, backbone]
    tags += ["random-weights"] if random_weights else []
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=task,
        base_model=base_model if base_model_is_hub_id else None,
        datasets=list(datasets) if datasets else None,
        tags=tags,
        license=license,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )

    columns = [key for key in CARD_METRIC_FIELDS if any(key in row for row in result_rows)]
    table = [
        [markdown_cell(row["dataset"]) + (" (random weights)" if row["random_weights"] else "")]
        + [f"{row[key]:.2f}" if key in row else "-" for key in columns]
        for row in result_rows
    ]
    names = list(class_names) if class_names else []
    shown = ", ".join(markdown_cell(name) for name in names[:50]) + (
        f", ... ({len(names) - 50} more)" if len(names) > 50 else ""
    )
    examples = names[:3] if names else ["cat", "dog", "car"]
    return ModelCard.from_template(
        card_data,
        template_str=CARD_TEMPLATE_FILE.read_text(encoding="utf-8"),
        title_text=markdown_cell(model_name),
        backbone_name=backbone_row.display_name,
        license=markdown_code(license),
        known_license=license != "other",
        sigmoid_backbone=backbone_row.has_logit_bias,
        base_model=base_model,
        base_model_is_hub_id=base_model_is_hub_id,
        base_model_code=markdown_code(base_model) if base_model is not None else f"the {name} they were learned on",
        base_model_revision=base_model_revision,
        base_model_revision_code=markdown_code(base_model_revision or ""),
        repo_id_literal=python_str(repo_id),
        method_intro=METHOD_INTRO[method].format(backbone=name)
        if prompt_template is None
        else f"The **zero-shot {name}** baseline with a hand-written prompt template",
        method_detail=_method_detail(
            method,
            n_ctx,
            class_token_position,
            bool(class_specific_context),
            len(names),
            name,
            prompt_template,
            prompt_depth_vision,
            ctx_init,
        ),
        method_name=method_name(method, backbone),
        template_run=prompt_template is not None,
        pipeline_kwargs=", ".join(
            f"{key}={python_str(value)}"
            for key, value in (("model", base_model), ("revision", base_model_revision))
            if value is not None
        ),
        template_labels=", ".join(python_str(label.replace("_", " ")) for label in examples),
        template_literal=python_str(prompt_template or ""),
        class_specific_context=bool(class_specific_context),
        random_weights=random_weights,
        example_labels=", ".join(python_str(name) for name in examples),
        class_names=shown,
        num_classes=len(names),
        recipe_rows=recipe_rows,
        result_columns=[CARD_METRIC_FIELDS[key] for key in columns],
        result_rows=table,
        base_to_new_results=any(key in METRIC_FIELDS for key in columns),
        all_classes_results="accuracy" in columns,
        prompt_options=options,
        image_conditional=method == "cocoop",
        citation="\n\n".join(
            [CITATION]
            + ([COOP_CITATION] if method in ("coop", "kgcoop") else [])  # CoOp's context, KgCoOp's base method
            + ([KGCOOP_CITATION] if method == "kgcoop" or kgcoop_weight > 0 else [])
            + ([MAPLE_CITATION] if method in ("ivlp", "maple") else [])  # IVLP is MaPLe's baseline
            + ([PROMPTSRC_CITATION] if method == "promptsrc" else [])
        ),
    )
