"""The model a training or evaluation script runs: built from `ModelArguments`, CoCoOp / CoOp / zero-shot, on any
supported backbone (`cocoop_hf/backbones_cocoop.py`: CLIP, MetaCLIP 2, SigLIP, SigLIP 2), with its image processor."""

import re

from transformers import set_seed

from cocoop_hf_training.cli import ModelArguments
from cocoop_hf_training.model_arguments import DEEP_PROMPT_METHODS


# Recorded in the config of a model built on random CLIP weights, so that every later evaluation of it (another
# script, another machine, a Hub download) can say its figures are meaningless.
RANDOM_WEIGHTS_ATTRIBUTE = "random_clip_weights"
# The KgCoOp hand-crafted prompt without a dataset template (CoCoOpConfig's default, official CUSTOM_TEMPLATES for
# ImageNet, Caltech101, StanfordCars, SUN397).
DEFAULT_KGCOOP_TEMPLATE = "a photo of a {}."
CLIP_TORCH_DTYPES = {
    "fp32": "float32",
    "bf16": "bfloat16",
    "fp16": "float16",
}  # torch attribute names: torch is imported late here
# Where htyao89/KgCoOp trainers/kgcoop.py CUSTOM_TEMPLATES differs from CoOp trainers/zsclip.py CUSTOM_TEMPLATES.
KGCOOP_TEMPLATE_OVERRIDES = {"DescribableTextures": "a photo of a {}, a type of texture."}


def build_model(model_args: ModelArguments, class_names, seed: int, kgcoop_template: str | None = None):
    """CoCoOpModel for `class_names` (CoOp: conditional=False; KgCoOp: CoOp + its regulariser, whose zero-shot
    features come from `kgcoop_template`; zero-shot: CoOp with the context of ctx_init; for a template, see
    `build_zero_shot_clip`), its frozen CLIP's weights in `--clip_dtype`."""
    model = _build_model(model_args, class_names, seed, kgcoop_template)
    if model_args.clip_dtype is not None:
        import torch

        model.cast_frozen_clip(getattr(torch, CLIP_TORCH_DTYPES[model_args.clip_dtype]))
    return model


def _build_model(model_args: ModelArguments, class_names, seed: int, kgcoop_template: str | None):
    from cocoop_hf import CoCoOpConfig, CoCoOpModel
    from cocoop_hf.processing_cocoop import prompt_context_start

    if model_args.model_name_or_path:
        model = CoCoOpModel.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
        check_saved_options(model.config, model_args, kgcoop_template)
        model.set_class_names(class_names)
        return model
    check_zero_shot_words(model_args)
    method_kwargs = dict(
        n_ctx=model_args.n_ctx,
        ctx_init=model_args.ctx_init,
        meta_net_reduction=model_args.meta_net_reduction,
        **method_config(model_args, kgcoop_template),
    )
    path = model_args.clip_model_name_or_path
    if not model_args.random_init_clip:
        checked_clip_config(model_args)  # stock from_pretrained would build whatever the config asks for
        set_seed(seed)  # meta-net (and a random context) are drawn from the training seed
        return CoCoOpModel.from_clip(
            path,
            class_names,
            revision=model_args.clip_revision,
            clip_kwargs={"cache_dir": model_args.cache_dir},
            **method_kwargs,
        )
    clip_config, clip = random_clip(model_args)
    clip_state = clip.state_dict()
    tokenizer = load_tokenizer(model_args, clip_config)
    config = CoCoOpConfig(
        backbone_config=clip_config.to_dict(),
        clip_name_or_path=str(path),
        clip_revision=model_args.clip_revision,
        id2label=dict(enumerate(class_names)),
        label2id={name: i for i, name in enumerate(class_names)},
        **{RANDOM_WEIGHTS_ATTRIBUTE: True},
        **method_kwargs,
    )
    # As `CoCoOpModel.from_clip` sets it: where the tokenizer puts the first context token (CLIP 1, SigLIP 0).
    config.prompt_context_start = prompt_context_start(tokenizer, config.prompt_prefix)
    set_seed(seed)
    model = CoCoOpModel(config)
    model.clip.load_state_dict(clip_state)
    if config.ctx_init is not None:
        model.init_context_from_words(tokenizer)
    model.set_class_names(class_names, tokenizer=tokenizer)
    return model


def check_zero_shot_words(model_args: ModelArguments) -> None:
    """The CoOp-packaged zero-shot model (no prompt template) is its --ctx_init words: refused without them."""
    if model_args.method == "zeroshot" and not model_args.model_name_or_path and model_args.ctx_init is None:
        raise ValueError("--method zeroshot needs the prompt words: pass --ctx_init (e.g. 'a photo of a').")


def check_adapter_only(model_args: ModelArguments, save_adapter_only: bool, saved_config=None) -> None:
    """
    --save_adapter_only refused for a model on random CLIP weights (built so now, or a saved one whose config says so):
    its folder would load the named CLIP's real weights instead. Known from the arguments (and a saved model's
    config.json), so refused before --output_dir is touched.
    """
    if not save_adapter_only:
        return
    if model_args.random_init_clip:
        clip = model_args.clip_model_name_or_path
    elif saved_config is not None and getattr(saved_config, RANDOM_WEIGHTS_ATTRIBUTE, False):
        clip = saved_config.clip_name_or_path
    else:
        return
    raise ValueError(
        "--save_adapter_only: this model's CLIP has random weights, and an adapter-only folder would load the "
        f"CLIP {clip} instead; save the full model (drop --save_adapter_only)."
    )


def method_config(model_args: ModelArguments, kgcoop_template: str | None = None) -> dict:
    """CoCoOpConfig fields of the method and its options; the KgCoOp template only where the regulariser is on."""
    config = model_args.method_config()
    if config["kgcoop_weight"] > 0:
        config["kgcoop_template"] = kgcoop_template or DEFAULT_KGCOOP_TEMPLATE
    return config


def check_method_config(model_args: ModelArguments, kgcoop_template: str | None = None, read_backbone: bool = True):
    """
    Refuse, before any model is built, a combination of options that `CoCoOpConfig` refuses: a dry run of its checks
    (on a default CLIP config; the meta-net width and the CLIP's own text length are checked when the model is built).
    With --model_name_or_path: options that differ from the saved model's (its config.json only is read). Deep prompts
    (IVLP, MaPLe, PromptSRC) are checked on the backbone's own config.json unless `read_backbone` is False. Returns
    the config the model will have (the saved one, or the dry run's), without its CLIP and class set.
    """
    from transformers import CLIPConfig

    from cocoop_hf import CoCoOpConfig

    if model_args.model_name_or_path:
        saved = CoCoOpConfig.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
        check_saved_options(saved, model_args, kgcoop_template)
        return saved
    if model_args.method == "zeroshot":
        return None
    backbone = CLIPConfig()
    if model_args.method in DEEP_PROMPT_METHODS and read_backbone:
        # Deep prompts are checked against the backbone's own towers (layers per tower, CLIP family): its config.json,
        # read as data, so that a depth beyond its layers is refused before --output_dir is touched.
        from cocoop_hf.backbones_cocoop import backbone_of

        config_dict = checked_clip_config(model_args)
        backbone = backbone_of(config_dict.get("model_type") or "clip").config_class.from_dict(config_dict)
    fields = method_config(model_args, kgcoop_template)
    check_context_words(model_args)
    if model_args.method in DEEP_PROMPT_METHODS and read_backbone:
        check_prompt_depths(model_args, fields, backbone)
    try:
        return CoCoOpConfig(
            clip_config=backbone,
            n_ctx=model_args.n_ctx,
            ctx_init=model_args.ctx_init,
            meta_net_reduction=1,
            id2label={0: "class"},
            **fields,
        )
    except ValueError as error:
        if model_args.method not in DEEP_PROMPT_METHODS:
            raise
        # The config names its fields; the run was given flags (--prompt_depth_text, ...) or a recipe's values.
        named = [name for name in DEEP_PROMPT_OPTIONS if re.search(rf"\b{name}\b", str(error))]
        tail = f" Each field named is the option of the same name ({', '.join(f'--{n}' for n in named)})."
        raise ValueError(
            f"--method {model_args.method} on {model_args.clip_model_name_or_path}: {error}{tail if named else ''}"
        ) from None


def check_context_words(model_args: ModelArguments) -> None:
    """
    --n_ctx against the words of --ctx_init, refused in flags (CoCoOpConfig's own check, for library users, names its
    keyword arguments): as many tokens as words, or fewer with deep prompts, whose first n_ctx words are learned and
    the rest stay fixed (official trainers/maple.py `ctx_vectors = embedding[0, 1 : 1 + n_ctx]`).
    """
    n_ctx, ctx_init = model_args.n_ctx, model_args.ctx_init
    if not isinstance(n_ctx, int) or not isinstance(ctx_init, str) or not ctx_init.strip():
        return  # no count or no words: nothing to compare (CoCoOpConfig checks the values themselves)
    n_words = len(ctx_init.replace("_", " ").split())  # the official PromptLearner's word count
    deep = model_args.method in DEEP_PROMPT_METHODS
    if n_ctx > n_words or (n_ctx < n_words and not deep):
        fewer = " (fewer only with --method ivlp / maple / promptsrc)" if n_ctx < n_words else ""
        raise ValueError(
            f"--n_ctx {n_ctx} does not match --ctx_init {ctx_init!r}, which has {n_words} words{fewer}: pass "
            f"--n_ctx {n_words} (or leave it out), or --ctx_init none for a random context of {n_ctx} tokens."
        )


# The CoCoOpConfig fields a deep-prompt run sets from the flags of the same name.
DEEP_PROMPT_OPTIONS = ("prompt_depth_text", "prompt_depth_vision", "n_ctx", "n_ctx_vision")


def check_prompt_depths(model_args: ModelArguments, fields: dict, backbone) -> None:
    """
    Deep-prompt depths beyond the backbone's layers, every tower at once, refused in one line that gives the flags
    that would run (CoCoOpConfig's own check names one config field at a time). MaPLe has one depth for both towers
    (official TRAINER.MAPLE.PROMPT_DEPTH): its only flag is --prompt_depth_text.
    """
    towers = (
        ("text", fields["prompt_depth_text"], backbone.text_config.num_hidden_layers),
        ("vision", fields["prompt_depth_vision"], backbone.vision_config.num_hidden_layers),
    )
    over = [(tower, depth, layers) for tower, depth, layers in towers if depth > layers]
    if not over:
        return
    depths = " and ".join(f"{depth} ({tower})" for tower, depth, _ in over)
    layers = " / ".join(f"{count} {tower}" for tower, _, count in over)
    if model_args.method == "maple":
        flags = f"--prompt_depth_text {min(count for _, _, count in towers)}"
    else:
        flags = " ".join(f"--prompt_depth_{tower} {count}" for tower, _, count in over)
    depth_word, verb = ("depths", "exceed") if len(over) > 1 else ("depth", "exceeds")
    raise ValueError(
        f"--method {model_args.method} on {model_args.clip_model_name_or_path}: prompt {depth_word} {depths} {verb} "
        f"the backbone's {layers} layers: pass {flags} (or less)."
    )


def check_saved_options(config, model_args: ModelArguments, kgcoop_template: str | None) -> None:
    """
    A saved model runs with the method and options it was trained with: a flag asking for others is an error, not
    ignored. Without --method, `model_args.method` becomes the saved model's.
    """
    from cocoop_hf_training.report import saved_method

    saved = saved_method(config)
    if model_args.method_given and model_args.method != saved:
        raise ValueError(
            f"--model_name_or_path {model_args.model_name_or_path} is a {saved} model; --method {model_args.method} "
            "asks for another: drop --method (the saved model's is used), or train a new model."
        )
    model_args.method = saved
    given = model_args.given_method_options()
    # Prompt-shape flags left at their defaults are not "given" (argparse cannot tell); any other value is.
    for name, default in (("n_ctx", None), ("ctx_init", "a photo of a"), ("meta_net_reduction", 16)):
        value = getattr(model_args, name)
        if value != default and not (name == "meta_net_reduction" and not config.conditional):
            given[name] = value
    if kgcoop_template is not None and getattr(config, "kgcoop_weight", 0.0) > 0:
        given["kgcoop_template"] = kgcoop_template
    differ = {name: value for name, value in given.items() if getattr(config, name, None) != value}
    if differ:
        saved = {name: getattr(config, name, None) for name in differ}
        raise ValueError(
            f"--model_name_or_path {model_args.model_name_or_path} was saved with {saved}; the options given ask for "
            f"{differ}. A saved model keeps its options: drop those flags, or train a new model."
        )


def kgcoop_template_for(benchmark: str | None, prompt_template: str | None = None) -> tuple[str, str]:
    """
    (template, where it comes from) of the hand-crafted prompt whose zero-shot CLIP features the KgCoOp regulariser
    pulls the learned ones towards: --prompt_template, else the dataset's (official KgCoOp trainers/kgcoop.py
    `CUSTOM_TEMPLATES[cfg.DATASET.NAME]`), else "a photo of a {}.".
    """
    if prompt_template is not None:
        return prompt_template, "--prompt_template"
    if benchmark is None:
        return DEFAULT_KGCOOP_TEMPLATE, "the default hand-crafted prompt (no --benchmark)"
    from cocoop_hf_training.benchmarks import get_benchmark

    name = get_benchmark(benchmark).name
    # KgCoOp's table is CoOp's zero-shot one (trainers/zsclip.py) except for DTD, where it reads
    # "a photo of a {}, a type of texture." instead of "{} texture.".
    template = KGCOOP_TEMPLATE_OVERRIDES.get(name, get_benchmark(name).template)
    return template, f"the official KgCoOp {name} template (KgCoOp trainers/kgcoop.py CUSTOM_TEMPLATES)"


def random_clip(model_args: ModelArguments):
    """
    `(config, model)` of `--clip_model_name_or_path`'s config (any supported backbone: the class its `model_type`
    names) with random weights drawn from `--random_init_seed`: the same weights for every training seed and every
    method (CoCoOp, CoOp, zero-shot).
    """
    from cocoop_hf.backbone_loading_cocoop import random_backbone

    # One implementation with `CoCoOpModel.from_clip(..., random_init=True)`: the same weights for the same seed.
    backbone = random_backbone(
        model_args.clip_model_name_or_path,
        model_args.random_init_seed,
        revision=model_args.clip_revision,
        cache_dir=model_args.cache_dir,
    )
    return backbone.config, backbone


def backbone_type(model_args: ModelArguments) -> str:
    """
    The `model_type` of the run's backbone ("clip", "metaclip_2", "siglip", "siglip2"): a saved model's (its
    config.json), else that of `--clip_model_name_or_path`'s config.json (read as data and checked, nothing built).
    """
    from cocoop_hf import CoCoOpConfig

    if model_args.model_name_or_path:
        saved = CoCoOpConfig.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
        return saved.backbone_config.model_type
    return checked_clip_config(model_args).get("model_type") or "clip"


def load_tokenizer(model_args: ModelArguments, backbone_config):
    """
    The tokenizer of `--clip_model_name_or_path`: CLIP's `CLIPTokenizer` (as always); another backbone's through
    `CoCoOpProcessor.load_backbone_tokenizer` (AutoTokenizer, its vocabulary checked against the text tower's).
    """
    path, revision = model_args.clip_model_name_or_path, model_args.clip_revision
    if backbone_config.model_type == "clip":
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(path, revision=revision, cache_dir=model_args.cache_dir)
    from cocoop_hf import CoCoOpProcessor

    vocab_size = backbone_config.text_config.vocab_size
    return CoCoOpProcessor.load_backbone_tokenizer(path, vocab_size, revision=revision, cache_dir=model_args.cache_dir)


def checked_clip_config(model_args: ModelArguments) -> dict:
    """
    The config.json of `--clip_model_name_or_path` as a dict, read as data and checked before any CLIP is built from
    it (`cocoop_hf.limits_cocoop.check_clip_checkpoint`: the size limits; for a local folder whose weights are loaded,
    weight files that hold the parameters the config describes).
    """
    from cocoop_hf.limits_cocoop import check_clip_checkpoint

    return check_clip_checkpoint(
        model_args.clip_model_name_or_path,
        weights=not model_args.random_init_clip,
        revision=model_args.clip_revision,
        cache_dir=model_args.cache_dir,
    )


def build_zero_shot_clip(model_args: ModelArguments, template: str, class_names):
    """The plain backbone (pretrained, or random as `random_clip` draws it) + a prompt template
    (cocoop_hf_training/zeroshot.py), scored with the backbone's own text and logit rule."""
    from cocoop_hf.backbones_cocoop import backbone_of
    from cocoop_hf_training.zeroshot import ZeroShotCLIP

    path, revision = model_args.clip_model_name_or_path, model_args.clip_revision
    if model_args.random_init_clip:
        config, clip = random_clip(model_args)
        tokenizer = load_tokenizer(model_args, config)
    else:
        config_dict = checked_clip_config(model_args)  # stock from_pretrained would build whatever it asks for
        row = backbone_of(config_dict.get("model_type") or "clip")
        tokenizer = load_tokenizer(model_args, row.config_class.from_dict(config_dict))
        clip = row.model_class.from_pretrained(path, revision=revision, cache_dir=model_args.cache_dir)
    if model_args.clip_dtype is not None:
        import torch

        clip.to(getattr(torch, CLIP_TORCH_DTYPES[model_args.clip_dtype]))
    return ZeroShotCLIP(
        clip.eval(),
        tokenizer,
        template,
        class_names,
        clip_name_or_path=str(path),
        clip_revision=revision,
        random_clip_weights=bool(model_args.random_init_clip),
    )


def load_image_processor(source, backbone: str, revision: str | None = None):
    """
    The image processor of a run, from `source` (a saved model, or the backbone checkpoint): CLIP's
    `CLIPImageProcessor` (as always); another backbone's own class through `AutoImageProcessor` (SigLIP: resize to
    the square without a crop, mean/std 0.5; SigLIP 2: variable-resolution patches).
    """
    if backbone == "clip":
        from transformers import CLIPImageProcessor

        return CLIPImageProcessor.from_pretrained(source, revision=revision)
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(source, revision=revision)


def has_random_weights(model, model_args: ModelArguments | None = None) -> bool:
    """Whether `model` runs on random CLIP weights: built so now (`--random_init_clip`) or saved so (its config)."""
    requested = model_args is not None and model_args.random_init_clip
    return requested or bool(getattr(model.config, RANDOM_WEIGHTS_ATTRIBUTE, False))
