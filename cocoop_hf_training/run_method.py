"""The run's method options, resolved once from its arguments and handed down: the zero-shot prompt template, the
KgCoOp regulariser's template, PromptSRC's prompt aggregation (GPA), and the model config the options give (a saved
model's, or a dry run of `CoCoOpConfig`'s checks), each with where it comes from; refused here, before any file or
model."""

import math
from dataclasses import dataclass

from cocoop_hf.backbones_cocoop import backbone_of
from cocoop_hf_training.modeling_setup import backbone_type, check_method_config, kgcoop_template_for
from cocoop_hf_training.run_arguments import check_class_sets
from cocoop_hf_training.zeroshot import check_template


@dataclass(frozen=True)
class RunMethod:
    """
    What a run's method options resolve to, once (`resolve_run_method`), for every later phase: the prompt template
    of the zero-shot baseline (`--method zeroshot` scoring the plain backbone with a template) or None, the KgCoOp
    regulariser's template or None, each with where it comes from, and the config the model will have (a saved
    model's; the dry run's; None for zero-shot).
    """

    zero_shot_template: str | None = None
    zero_shot_source: str | None = None
    kgcoop_template: str | None = None
    kgcoop_source: str | None = None
    config: object | None = None
    gpa_mean: float | None = None  # PromptSRC's Gaussian prompt aggregation when the run trains one (else None)
    gpa_std: float | None = None

    @property
    def is_zero_shot_template(self) -> bool:
        """The plain backbone scored with a prompt template: nothing learned, nothing saved."""
        return self.zero_shot_template is not None

    @property
    def class_specific(self) -> bool:
        return bool(getattr(self.config, "class_specific_context", False))


def resolve_run_method(model_args, data_args, training_args, run_args, read_backbone: bool = True) -> RunMethod:
    """
    The run's method options resolved in one place, everything the model config would refuse refused before any file
    or model: the zero-shot template, the KgCoOp template, the config check (with --model_name_or_path: the flags
    against the saved model's options; `model_args.method` becomes the saved model's) and a saved class-specific
    context against the protocol. `read_backbone=False` (the grids' check of a cell's flags, before any checkpoint is
    needed): the backbone's config.json is not read, so a zero-shot template is chosen by the CLIP family's rule; the
    cell's own run reads it.
    """
    template, template_source = zero_shot_template(model_args, data_args, training_args, run_args, read_backbone)
    kg_template, kg_source = kgcoop_template(model_args, data_args, run_args)
    # With --model_name_or_path: the saved model's method and options.
    config = check_method_config(model_args, kg_template, read_backbone)
    gpa_mean, gpa_std = prompt_aggregation_options(model_args, training_args, run_args)
    method = RunMethod(template, template_source, kg_template, kg_source, config, gpa_mean, gpa_std)
    if model_args.model_name_or_path and method.class_specific:
        check_class_sets(data_args, training_args, f"{model_args.model_name_or_path} (class-specific context)")
    return method


def prompt_aggregation_options(model_args, training_args, run_args) -> tuple[float | None, float | None]:
    """
    (mean, std) of PromptSRC's Gaussian prompt aggregation for a PromptSRC training run: --gpa_mean / --gpa_std, else
    the official 15 / 1 (configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml); (None, None) for a run that
    trains nothing. Refused with another method, and where every epoch's weight would round to 0.
    """
    from cocoop_hf_training.prompt_aggregation import gpa_weights
    from cocoop_hf_training.run_options import gpa_values

    given = [f"--{name}" for name in ("gpa_mean", "gpa_std") if getattr(run_args, name) is not None]
    if model_args.method != "promptsrc":
        if given:
            raise ValueError(
                f"{', '.join(given)}: PromptSRC's Gaussian prompt aggregation (official trainers/promptsrc.py); "
                f"--method {model_args.method} has none. Drop them, or pass --method promptsrc."
            )
        return None, None
    if not training_args.do_train:
        return None, None  # nothing trained: the prompts are the saved model's (a recipe's values need no refusal)
    mean, std = gpa_values(run_args)
    epochs = training_args.num_train_epochs
    if training_args.max_steps <= 0 and epochs != math.floor(epochs):
        # Trainer would stop inside the last epoch, and GPA adds each epoch at its end (official OPTIM.MAX_EPOCH).
        raise ValueError(
            f"--num_train_epochs {epochs:g} with --method promptsrc: Gaussian prompt aggregation weighs whole epochs "
            "(official trainers/promptsrc.py), and the last one would stop half-way: give a whole number."
        )
    # The weights of the epochs known now; with --max_steps, when training begins.
    gpa_weights(mean, std, max(math.ceil(epochs), 1) if training_args.max_steps <= 0 else 1)
    if training_args.load_best_model_at_end:
        raise ValueError(
            "--load_best_model_at_end would replace the aggregated prompts of --method promptsrc (Gaussian prompt "
            "aggregation, official trainers/promptsrc.py) with one checkpoint's: drop it."
        )
    return float(mean), float(std)


def check_saved_class_set(model_name_or_path, config, class_names: list[str]) -> None:
    """
    A saved class-specific context scores exactly the classes it was trained on, in their order (the model refuses
    any other set once built): compare its config's id2label with the run's classes before any file is written.
    Names are compared as the saved backbone's prompts tell them apart (`split_checks.name_key`: CLIP's tokenizer
    ignores case and spacing, a cased tokenizer does not).
    """
    from cocoop_hf_training.split_checks import name_key

    # (A config read before backbones had their own field: CLIP.)
    backbone = getattr(getattr(config, "backbone_config", None), "model_type", "clip")
    saved = config.class_names
    saved_keys, run_keys = [name_key(n, backbone) for n in saved], [name_key(n, backbone) for n in class_names]
    if saved_keys == run_keys:
        return
    saved_set, run_set = set(saved_keys), set(run_keys)
    lacking = [name for name, key in zip(class_names, run_keys, strict=True) if key not in saved_set]
    extra = [name for name, key in zip(saved, saved_keys, strict=True) if key not in run_set]
    if lacking or extra:
        difference = (
            f"this run's classes it has no context for: {lacking[:10]}{' ...' if len(lacking) > 10 else ''}; its "
            f"classes this run lacks: {extra[:10]}{' ...' if len(extra) > 10 else ''}"
        )
    else:
        difference = f"the same classes in another order: it has {saved[:10]}, this run {class_names[:10]}"
    raise ValueError(
        f"--model_name_or_path {model_name_or_path} has a class-specific context (one learned context per class) "
        f"for its {len(saved)} training classes only, and this run has {len(class_names)} classes: {difference}. "
        "Evaluate it on the classes it was trained on, or train a model for these."
    )


def uses_kgcoop(model_args) -> bool:
    """Whether the run builds a model with the KgCoOp regulariser (a saved model brings its own, template included)."""
    if model_args.model_name_or_path:
        return False
    return model_args.method != "zeroshot" and model_args.method_config()["kgcoop_weight"] > 0


def kgcoop_template(model_args, data_args, run_args) -> tuple[str | None, str | None]:
    """(template, where it comes from) of the KgCoOp regulariser's zero-shot features; (None, None) without it."""
    if not uses_kgcoop(model_args):
        return None, None
    prompt = check_template(run_args.prompt_template) if run_args.prompt_template is not None else None
    return kgcoop_template_for(data_args.benchmark, prompt)


def zero_shot_template(
    model_args, data_args, training_args, run_args, read_backbone: bool = True
) -> tuple[str | None, str | None]:
    """
    (template, where it comes from) when `--method zeroshot` scores the plain backbone with a prompt template: the
    given --prompt_template; else on SigLIP / SigLIP 2 the backbone's own template (`backbones_cocoop`); else on the
    CLIP family the official template of --benchmark (CoOp trainers/zsclip.py `CUSTOM_TEMPLATES`); (None, None) for
    the CoOp-packaged zero-shot model of --ctx_init words.
    """
    from cocoop_hf_training.benchmarks import get_benchmark

    if run_args.prompt_template is not None and model_args.method != "zeroshot" and not uses_kgcoop(model_args):
        raise ValueError(
            "--prompt_template is the hand-crafted prompt of a zero-shot backbone (--method zeroshot) or of the "
            f"KgCoOp regulariser (--method kgcoop, --kgcoop_weight): drop it for --method {model_args.method} (its "
            "prompt context is learned from --ctx_init)."
        )
    if model_args.method != "zeroshot":
        return None, None
    # A saved model (--model_name_or_path) is never scored with its backbone's template: it brings its own prompts.
    own_template = run_args.prompt_template is None and not model_args.model_name_or_path and read_backbone
    backbone = backbone_of(backbone_type(model_args)) if own_template else None
    if run_args.prompt_template is not None:
        template, source = check_template(run_args.prompt_template), "--prompt_template"
    elif backbone is not None and not backbone.causal_text:
        # SigLIP / SigLIP 2 were trained on (and are documented with) their own template, not CLIP's per-dataset ones.
        template = backbone.zero_shot_template
        source = f"the {backbone.display_name} template (its model card; transformers' zero-shot pipeline)"
    elif data_args.benchmark is not None:
        template = get_benchmark(data_args.benchmark).template
        source = f"the official {data_args.benchmark} template (CoOp trainers/zsclip.py CUSTOM_TEMPLATES)"
    else:
        return None, None
    if model_args.model_name_or_path:
        raise ValueError(
            f"--method zeroshot with a prompt template ({source}) scores the plain backbone "
            f"(--backbone / --clip_model_name_or_path); drop --model_name_or_path {model_args.model_name_or_path}."
        )
    for flag, given in (
        ("--push_to_hub", training_args.push_to_hub),
        ("--save_adapter_only", run_args.save_adapter_only),
    ):
        if given:
            raise ValueError(
                f"{flag}: zero-shot with a prompt template learns nothing and saves no model, so there is "
                "nothing to share or save; its results are in --output_dir."
            )
    return template, source
