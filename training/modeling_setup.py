"""The model a training or evaluation script runs: built from `ModelArguments`, CoCoOp / CoOp / zero-shot CLIP."""

from transformers import set_seed

from training.cli import ModelArguments


# Recorded in the config of a model built on random CLIP weights, so that every later evaluation of it (another
# script, another machine, a Hub download) can say its figures are meaningless.
RANDOM_WEIGHTS_ATTRIBUTE = "random_clip_weights"


def build_model(model_args: ModelArguments, class_names, seed: int):
    """CoCoOpModel for `class_names` (CoOp: conditional=False; zero-shot: CoOp with the context of ctx_init; for a
    template, see `build_zero_shot_clip`)."""
    from transformers import CLIPTokenizer

    from cocoop_hf import CoCoOpConfig, CoCoOpModel

    if model_args.model_name_or_path:
        model = CoCoOpModel.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
        model.set_class_names(class_names)
        return model
    if model_args.method == "zeroshot" and model_args.ctx_init is None:
        raise ValueError("--method zeroshot needs the prompt words: pass --ctx_init (e.g. 'a photo of a').")
    method_kwargs = dict(
        n_ctx=model_args.n_ctx,
        ctx_init=model_args.ctx_init,
        conditional=model_args.method == "cocoop",
        meta_net_reduction=model_args.meta_net_reduction,
    )
    path = model_args.clip_model_name_or_path
    if not model_args.random_init_clip:
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
    tokenizer = CLIPTokenizer.from_pretrained(path, revision=model_args.clip_revision)
    config = CoCoOpConfig(
        clip_config=clip_config.to_dict(),
        clip_name_or_path=str(path),
        clip_revision=model_args.clip_revision,
        id2label=dict(enumerate(class_names)),
        label2id={name: i for i, name in enumerate(class_names)},
        **{RANDOM_WEIGHTS_ATTRIBUTE: True},
        **method_kwargs,
    )
    set_seed(seed)
    model = CoCoOpModel(config)
    model.clip.load_state_dict(clip_state)
    if config.ctx_init is not None:
        model.init_context_from_words(tokenizer)
    model.set_class_names(class_names, tokenizer=tokenizer)
    return model


def random_clip(model_args: ModelArguments):
    """
    `(CLIPConfig, CLIPModel)` of `--clip_model_name_or_path`'s config with random weights drawn from
    `--random_init_seed`: the same weights for every training seed and every method (CoCoOp, CoOp, zero-shot).
    """
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig.from_pretrained(
        model_args.clip_model_name_or_path, revision=model_args.clip_revision, cache_dir=model_args.cache_dir
    )
    set_seed(model_args.random_init_seed)
    return config, CLIPModel(config)


def build_zero_shot_clip(model_args: ModelArguments, template: str, class_names):
    """Plain CLIP (pretrained, or random as `random_clip` draws it) + a prompt template (training/zeroshot.py)."""
    from transformers import CLIPModel, CLIPTokenizer

    from training.zeroshot import ZeroShotCLIP

    path, revision = model_args.clip_model_name_or_path, model_args.clip_revision
    tokenizer = CLIPTokenizer.from_pretrained(path, revision=revision, cache_dir=model_args.cache_dir)
    if model_args.random_init_clip:
        _, clip = random_clip(model_args)
    else:
        clip = CLIPModel.from_pretrained(path, revision=revision, cache_dir=model_args.cache_dir)
    return ZeroShotCLIP(
        clip.eval(),
        tokenizer,
        template,
        class_names,
        clip_name_or_path=str(path),
        clip_revision=revision,
        random_clip_weights=bool(model_args.random_init_clip),
    )


def has_random_weights(model, model_args: ModelArguments | None = None) -> bool:
    """Whether `model` runs on random CLIP weights: built so now (`--random_init_clip`) or saved so (its config)."""
    requested = model_args is not None and model_args.random_init_clip
    return requested or bool(getattr(model.config, RANDOM_WEIGHTS_ATTRIBUTE, False))
