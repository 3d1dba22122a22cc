"""
Saving, loading, adapters and Hub upload of a CoCoOp model: functions that take the model (or its class) as an
argument, so this file never imports `modeling_cocoop.py`. `CoCoOpModel.save_pretrained` / `from_pretrained` /
`push_to_hub` are thin methods that call these. This file travels with the code of every saved folder (it is what
loading needs), so it may import only torch, transformers, safetensors and its sibling files.
"""

import copy
import json
import os

import torch
from transformers import PreTrainedModel
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import cached_file, logging

from .backbone_loading_cocoop import load_backbone
from .backbones_cocoop import backbone_of, embed_dim, text_context, text_width
from .configuration_cocoop import CoCoOpConfig
from .pipeline_cocoop import CUSTOM_PIPELINES
from .processing_cocoop import HUB_KWARGS, CoCoOpProcessor, load_model_tokenizer


logger = logging.get_logger(__name__)

ADAPTER_WEIGHTS_NAME = "prompt_learner.safetensors"
# Every saved folder loads with trust_remote_code=True alone; the stock image-classification pipeline needs
# AutoModelForImageClassification in auto_map, the zero-shot pipeline comes from custom_pipelines.
AUTO_MAP = {
    "AutoConfig": "configuration_cocoop.CoCoOpConfig",
    "AutoModel": "modeling_cocoop.CoCoOpModel",
    "AutoModelForImageClassification": "modeling_cocoop.CoCoOpModel",
    "AutoProcessor": "processing_cocoop.CoCoOpProcessor",
}
# Arguments that also apply to loading the base backbone (CLIP, MetaCLIP 2, SigLIP, SigLIP 2) of an adapter.
CLIP_KWARGS = ("dtype", "device_map", "cache_dir", "local_files_only", "token")

# ---------------------------------------------------------------------------------------------- base-CLIP fingerprint

# An adapter's tensors only mean something on the CLIP it was trained on; another CLIP of the same widths (other
# weights, other depth) would load silently. The adapter records a few weight samples of its base and is checked on load.
# Samples, not a hash: the same CLIP loaded in fp16 or bf16 must still match. Each backbone has the tensors of its
# own family (CLIP, MetaCLIP 2: the two projections; SigLIP, SigLIP 2: the logit bias, the text head and the vision
# pooling head's probe); only those a model has are sampled, so a CLIP's fingerprint is what it was before.
_FINGERPRINT_TENSORS = (
    "logit_scale",
    "logit_bias",
    "text_projection.weight",
    "visual_projection.weight",
    "text_model.head.weight",
    "vision_model.head.probe",
    "text_model.embeddings.token_embedding.weight",
    "vision_model.embeddings.patch_embedding.weight",
)
_FINGERPRINT_SAMPLES = 16
_FINGERPRINT_RTOL = 2e-2  # bf16 keeps 8 bits of mantissa (relative error <= 2^-8); another CLIP differs by O(1)


def fingerprint_sample_index(numel: int) -> torch.Tensor:
    """
    The evenly spaced positions sampled from a flattened tensor of `numel` values. float32 `linspace`, as adapters
    have recorded since fingerprints exist; its last position rounds up past the end beyond 2**24 values (CLIP
    ViT-B/16's token embedding has 25,296,896), so it is clamped: positions that were in range do not move.
    """
    index = torch.linspace(0, numel - 1, min(_FINGERPRINT_SAMPLES, numel)).round().long()
    return index.clamp_(max=numel - 1)


def clip_fingerprint(clip: PreTrainedModel) -> dict:
    """Kind, depths, widths and evenly spaced weight samples of a backbone model `clip` (plain JSON data)."""
    config = clip.config
    fingerprint = {
        "text_layers": config.text_config.num_hidden_layers,
        "vision_layers": config.vision_config.num_hidden_layers,
        "text_width": config.text_config.hidden_size,
        "vision_width": config.vision_config.hidden_size,
        "projection_dim": embed_dim(config),  # the joint width (SigLIP: text_config.projection_size)
        "samples": {},
    }
    if backbone_of(config).model_type != "clip":  # CLIP adapters saved before other backbones record no kind
        fingerprint["model_type"] = config.model_type
    parameters = dict(clip.named_parameters())
    if any(parameter.device.type == "meta" for parameter in parameters.values()):
        return fingerprint  # a CLIP not materialised (built on the meta device): shapes only
    # The last text layer too: a CLIP that differs only in its top layers still differs there.
    last_layer = f"text_model.encoder.layers.{config.text_config.num_hidden_layers - 1}.mlp.fc2.weight"
    for name in (*_FINGERPRINT_TENSORS, last_layer):
        if name not in parameters:  # a tensor of another backbone family
            continue
        flat = parameters[name].detach().reshape(-1)
        index = fingerprint_sample_index(flat.numel())
        fingerprint["samples"][name] = [float(value) for value in flat[index.to(flat.device)].float().cpu()]
    return fingerprint


def fingerprint_differences(expected: dict, clip: PreTrainedModel) -> list[str]:
    """What differs between a recorded fingerprint and `clip` (empty when they match within bf16 rounding)."""
    actual = clip_fingerprint(clip)
    expected_type, actual_type = expected.get("model_type", "clip"), actual.get("model_type", "clip")
    differences = (
        [] if expected_type == actual_type else [f"model_type: adapter's base {expected_type}, this {actual_type}"]
    )
    differences += [
        f"{key}: adapter's base {expected[key]}, this {backbone_of(clip.config).display_name} {actual.get(key)}"
        for key in expected
        if key not in ("samples", "model_type") and expected[key] != actual.get(key)
    ]
    for name, values in expected.get("samples", {}).items():
        mine = actual["samples"].get(name)
        if mine is None or len(mine) != len(values):
            differences.append(f"{name}: missing or of another size")
            continue
        scale = max(max(abs(v) for v in values), 1e-12)
        if max(abs(a - b) for a, b in zip(values, mine, strict=True)) > _FINGERPRINT_RTOL * scale:
            differences.append(f"{name}: other weights")
    return differences


# ---------------------------------------------------------------------------------------------- saving


def set_sharing_fields(config: CoCoOpConfig) -> None:
    config.auto_map = {**(getattr(config, "auto_map", None) or {}), **AUTO_MAP}
    config.custom_pipelines = copy.deepcopy(CUSTOM_PIPELINES)


def save_model(model, save_directory, adapter_only: bool = False, **kwargs):
    """See `CoCoOpModel.save_pretrained`."""
    if not adapter_only:
        set_sharing_fields(model.config)
        result = PreTrainedModel.save_pretrained(model, save_directory, **kwargs)
        _save_code_and_processor(model, save_directory)
        return result
    if not model.config.clip_name_or_path:
        raise ValueError(
            "adapter_only=True needs config.clip_name_or_path (the base "
            f"{backbone_of(model.config.backbone_config).display_name} to load later); this model has none: "
            "set model.config.clip_name_or_path (and clip_revision) or save the full model."
        )
    if kwargs:
        raise TypeError(f"save_pretrained(adapter_only=True) takes no other arguments, got {sorted(kwargs)}.")
    from safetensors.torch import save_file

    os.makedirs(save_directory, exist_ok=True)
    config = copy.deepcopy(model.config)
    config.adapter_only = True
    set_sharing_fields(config)
    config.save_pretrained(save_directory)
    _save_code_and_processor(model, save_directory, adapter_only=True)
    tensors = {name: t.detach().contiguous().cpu() for name, t in model.prompt_learner.state_dict().items()}
    metadata = {"format": "pt", "clip_fingerprint": json.dumps(clip_fingerprint(model.clip))}
    save_file(tensors, os.path.join(save_directory, ADAPTER_WEIGHTS_NAME), metadata=metadata)
    return None


def _save_code_and_processor(model, save_directory, adapter_only: bool = False) -> None:
    """
    Copy the model's code files (modeling and the sibling files it imports); save a CoCoOpProcessor beside the
    weights. An adapter-only folder gets only `processor_config.json` (prompt settings + image processor config,
    ~1 KB): no tokenizer files (3.6 MB for CLIP), which `CoCoOpProcessor.from_pretrained` takes from the base CLIP.
    """
    custom_object_save(model, save_directory)
    prompt_settings = {
        "prompt_prefix": model.config.prompt_prefix,
        # The processor's n_ctx is the count of context-word tokens in each prompt: with deep prompts that learn only
        # the first n_ctx words (MaPLe: 2 of "a photo of a") the prompt still holds all of them.
        "n_ctx": model.config.prompt_prefix_tokens,
        "context_length": text_context(model.config.backbone_config),
        "backbone_type": model.config.backbone_config.model_type,
    }
    image_processor = _find_image_processor(model)
    if adapter_only:
        if image_processor is None:
            logger.warning(
                "No image processor found in %s or the base backbone %s: %s holds none. CoCoOpProcessor and the "
                "zero-shot pipeline load it from the base backbone; the stock image-classification pipeline needs "
                "image_processor=... (or set model._image_processor = <the backbone's image processor> before "
                "saving).",
                model.name_or_path,
                model.config.clip_name_or_path,
                save_directory,
            )
        CoCoOpProcessor.save_adapter_config(save_directory, image_processor, **prompt_settings)
        return
    if model.tokenizer is None:
        logger.warning("No tokenizer on this model: %s holds no processor files.", save_directory)
        return
    # The side the prompts are padded on places every token (SigLIP 2's tokenizer pads left; a user may set "right"):
    # transformers writes `padding_side` into tokenizer_config.json only from init_kwargs, so record the live value.
    model.tokenizer.init_kwargs["padding_side"] = model.tokenizer.padding_side
    if image_processor is None:
        logger.warning(
            "No image processor found in %s or the base backbone %s: %s holds only the tokenizer; set "
            "model._image_processor = <the backbone's image processor> before saving to include one.",
            model.name_or_path,
            model.config.clip_name_or_path,
            save_directory,
        )
        model.tokenizer.save_pretrained(save_directory)
        return
    CoCoOpProcessor(image_processor=image_processor, tokenizer=model.tokenizer, **prompt_settings).save_pretrained(
        save_directory
    )


def _find_image_processor(model):
    """The image processor to save: the one set on the model, else this model's folder's, else the base backbone's."""
    from transformers import AutoImageProcessor

    image_processor = getattr(model, "_image_processor", None)
    sources = ((model.name_or_path, None), (model.config.clip_name_or_path, model.config.clip_revision))
    for source, revision in sources if image_processor is None else ():
        if not source:
            continue
        try:
            image_processor = AutoImageProcessor.from_pretrained(source, revision=revision)
            break
        except (OSError, ValueError):
            continue
    model._image_processor = image_processor
    return image_processor


def push_model_to_hub(
    model,
    repo_id: str,
    *,
    adapter_only: bool = False,
    model_card=None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: bool | str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    tags: list[str] | None = None,
    **save_kwargs,
):
    """See `CoCoOpModel.push_to_hub`."""
    import tempfile

    from huggingface_hub import CommitOperationAdd, HfApi, ModelCard

    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if model_card is None:
        try:
            existing = ModelCard.load(repo_id, token=token)
            model_card = existing if "cocoop" in (existing.data.tags or []) else None
        except Exception:  # noqa: BLE001  (no card yet, or an unreadable one: render ours)
            model_card = None
    if model_card is None:
        model_card = _render_card(model, repo_id)
    elif isinstance(model_card, str):
        model_card = ModelCard(model_card)
    elif not isinstance(model_card, ModelCard):
        raise TypeError(f"`model_card` must be a huggingface_hub.ModelCard or str, got {type(model_card).__name__}.")
    if tags:
        model_card.data.tags = list(dict.fromkeys([*(model_card.data.tags or []), *tags]))
    with tempfile.TemporaryDirectory() as tmp_dir:
        save_model(model, tmp_dir, adapter_only=adapter_only, **save_kwargs)
        model_card.save(os.path.join(tmp_dir, "README.md"))
        operations = [
            CommitOperationAdd(
                path_in_repo=os.path.relpath(os.path.join(root, name), tmp_dir),
                path_or_fileobj=os.path.join(root, name),
            )
            for root, _, names in os.walk(tmp_dir)
            for name in sorted(names)
        ]
        if revision is not None and not revision.startswith("refs/pr"):
            api.create_branch(repo_id=repo_id, branch=revision, exist_ok=True)
        return api.create_commit(
            repo_id=repo_id,
            operations=operations,
            commit_message=commit_message or "Upload CoCoOp model",
            commit_description=commit_description,
            create_pr=create_pr,
            revision=revision,
        )


def _render_card(model, repo_id: str):
    # The card renderer is part of the installed package, not of the code saved with a model (absolute import, in a
    # try block: transformers' remote-code import check skips it, and saved folders do not ship the renderer).
    try:
        from cocoop_hf.modelcard_cocoop import render_model_card
    except ImportError:
        raise ValueError(
            f"no model card for {repo_id}: rendering one needs the cocoop-hf package (pip install cocoop-hf); "
            "or pass model_card=... (a huggingface_hub.ModelCard or its text)."
        ) from None
    return render_model_card(
        # No checkpoint named (a backbone built from a config): no base model, rather than a made-up one.
        base_model=model.config.clip_name_or_path or None,
        base_model_revision=model.config.clip_revision,
        repo_id=repo_id,
        class_names=model.class_names,
        n_ctx=model.config.n_ctx,
        method=model.config.method_name,
        class_token_position=model.config.class_token_position,
        class_specific_context=model.config.class_specific_context,
        kgcoop_weight=model.config.kgcoop_weight,
        kgcoop_template=model.config.kgcoop_template,
        prompt_depth_vision=model.config.prompt_depth_vision,
        ctx_init=model.config.ctx_init,
        # Set by the training scripts on models built on a randomly initialised CLIP: the card must say so.
        random_weights=bool(getattr(model.config, "random_clip_weights", False)),
        backbone=model.config.backbone_config.model_type,
    )


# ---------------------------------------------------------------------------------------------- loading


def load_model(model_class, load_full, path, *model_args, clip_model: PreTrainedModel | None = None, **kwargs):
    """
    See `CoCoOpModel.from_pretrained`. `load_full` is `PreTrainedModel.from_pretrained` bound to `model_class` (the
    stock loader, for full folders).
    """
    hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
    allow_other_clip = kwargs.pop("allow_other_clip", False)
    config = kwargs.get("config")
    if not isinstance(config, CoCoOpConfig):
        config = CoCoOpConfig.from_pretrained(path, **hub_kwargs)
    if config.adapter_only:
        return _from_adapter(model_class, path, config, hub_kwargs, kwargs, clip_model, allow_other_clip)
    if clip_model is not None:
        raise ValueError(
            f"{path} is a full CoCoOp folder (it holds its own {backbone_of(config.backbone_config).display_name}): "
            "`clip_model=` is for adapter-only folders "
            "(saved with save_pretrained(..., adapter_only=True)). Load it without clip_model=."
        )
    from safetensors import SafetensorError

    output_loading_info = kwargs.pop("output_loading_info", False)
    # Shape mismatches are collected (not raised mid-load) so the error below can name the tensors.
    allow_mismatch = kwargs.setdefault("ignore_mismatched_sizes", False)
    kwargs["ignore_mismatched_sizes"] = True
    try:
        model, loading_info = load_full(path, *model_args, output_loading_info=True, **kwargs)
    except SafetensorError as error:
        raise OSError(
            f"cannot read the weights (model.safetensors) of {path}: {error}; "
            "the file is truncated or corrupt: save or download it again."
        ) from error
    _check_loading_info(path, model, loading_info, allow_mismatch)
    # The stock loader takes NaN weights as they are; those of a diverged run would evaluate at chance silently.
    check_finite_tensors(
        {f"prompt_learner.{name}": tensor for name, tensor in model.prompt_learner.state_dict().items()},
        f"{path} (model weights)",
    )
    model.clip.requires_grad_(False)  # loading materialises every parameter with requires_grad=True
    tokenizer = load_model_tokenizer(path, hub_kwargs, model.config)
    if tokenizer is not None:
        # Names checked now, tokenised at first use: a config.json with very many classes loads in bounded work.
        model._hold_class_names(model.config.class_names, tokenizer, lazy_source=f"{path} (config.json, id2label)")
    return (model, loading_info) if output_loading_info else model


def _from_adapter(model_class, path, config, hub_kwargs, kwargs, clip_model, allow_other_clip):
    from safetensors import SafetensorError, safe_open

    config = copy.deepcopy(config)
    config.adapter_only = False
    weights_file = cached_file(path, ADAPTER_WEIGHTS_NAME, **hub_kwargs)
    try:
        with safe_open(weights_file, framework="pt") as weights:
            metadata = weights.metadata() or {}
            state = {name: weights.get_tensor(name) for name in weights.keys()}  # noqa: SIM118  (safe_open API)
    except (SafetensorError, OSError) as error:
        raise OSError(f"cannot read the prompt-learner weights {weights_file}: {error}") from error
    if clip_model is None:
        clip_kwargs = {key: kwargs[key] for key in CLIP_KWARGS if key in kwargs}
        try:
            # Checked before stock loading builds whatever the base's config asks for; loaded with its own class.
            clip_model = load_backbone(config.clip_name_or_path, revision=config.clip_revision, **clip_kwargs)
        except OSError as error:
            raise OSError(
                f"adapter-only CoCoOp folder {path} needs its base {backbone_of(config.backbone_config).display_name} "
                f"{config.clip_name_or_path!r} at revision "
                f"{config.clip_revision!r}, which could not be loaded: {error}"
            ) from error
        base = repr(config.clip_name_or_path)
    elif not isinstance(clip_model, backbone_of(config.backbone_config).model_class):
        expected = backbone_of(config.backbone_config).model_class.__name__
        raise TypeError(
            f"`clip_model` must be a transformers {expected} (the adapter at {path} was trained on a "
            f"{config.backbone_config.model_type!r} backbone), got {type(clip_model).__name__}."
        )
    else:
        ignored = sorted(key for key in CLIP_KWARGS if kwargs.get(key) is not None and key not in HUB_KWARGS)
        if ignored:
            raise TypeError(
                f"{ignored} load the base {backbone_of(config.backbone_config).display_name}, but `clip_model=` is "
                "already loaded: drop them (the adapter takes the given model's dtype and device; change those with "
                "clip_model.to(...) first)."
            )
        base = "the given clip_model"
    if clip_model.config.model_type != config.backbone_config.model_type:
        raise ValueError(
            f"adapter at {path} was trained on a {config.backbone_config.model_type!r} backbone, but {base} is a "
            f"{clip_model.config.model_type!r} one ({type(clip_model).__name__}): load its own base."
        )
    if embed_dim(clip_model.config) != embed_dim(config.backbone_config):
        raise ValueError(
            f"adapter at {path} was trained for a {backbone_of(config.backbone_config).display_name} with joint "
            f"(projection) width {embed_dim(config.backbone_config)}, "
            f"but {base} has {embed_dim(clip_model.config)}."
        )
    config.backbone_config = clip_model.config
    model = model_class(config, clip_model=clip_model)
    model.load_prompt_learner_state(state, source=weights_file)  # shapes first: their message is the most precise
    _check_fingerprint(path, metadata, clip_model, base, allow_other_clip)
    tokenizer = load_model_tokenizer(config.clip_name_or_path, {"revision": config.clip_revision}, config)
    if tokenizer is not None:
        model._hold_class_names(config.class_names, tokenizer, lazy_source=f"{path} (config.json, id2label)")
    return model.eval()  # as PreTrainedModel.from_pretrained


def _check_fingerprint(path, metadata: dict, clip: PreTrainedModel, base: str, allow_other_clip: bool) -> None:
    recorded = metadata.get("clip_fingerprint")
    if recorded is None:  # adapters saved before fingerprints existed
        logger.warning(
            "%s records no fingerprint of its base backbone: cannot check that %s is the right one.", path, base
        )
        return
    differences = fingerprint_differences(json.loads(recorded), clip)
    if not differences:
        return
    name = backbone_of(clip.config).display_name
    message = (
        f"adapter at {path} was trained on another {name} than {base}: {'; '.join(differences)}. Its prompts "
        f"would give wrong logits on this {name}."
    )
    if not allow_other_clip:
        raise ValueError(message + f" Load its own base {name}, or pass allow_other_clip=True to load it anyway.")
    logger.warning("%s Loading anyway (allow_other_clip=True).", message)


BROKEN_WEIGHTS = "these weights are broken (e.g. a training run that diverged); load other weights."


def check_finite_tensors(tensors: dict, source: str, advice: str = BROKEN_WEIGHTS) -> None:
    """
    Refuse NaN or infinite values in the floating tensors of `tensors` (name -> tensor), naming `source` and the first
    such tensor: weights like these give NaN logits, hence chance accuracy, without a word. The one finiteness check
    of the prompt learner: loading its state, loading a full model, and a training run's result (`advice` says what
    to do).
    """
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(
                f"{source}: tensor {name!r} holds {bad:,} non-finite value(s) (NaN or infinity, as "
                f"{str(tensor.dtype).removeprefix('torch.')}): {advice}"
            )


def _check_loading_info(path, model, loading_info: dict, allow_mismatch: bool) -> None:
    """Refuse a checkpoint that would leave tensors at random init (missing or of another shape)."""
    mismatched = sorted(loading_info.get("mismatched_keys") or [])
    if mismatched and not allow_mismatch:
        details = "; ".join(
            f"{key}: checkpoint {tuple(ckpt)} vs model {tuple(ours)}" for key, ckpt, ours in mismatched
        )
        raise ValueError(
            f"{path}: tensors do not fit this config ({details}). The checkpoint was saved for another backbone or "
            f"context (config: text width {text_width(model.config.backbone_config)}, n_ctx "
            f"{model.config.n_ctx}): load it with its own config.json."
        )
    missing = sorted(loading_info.get("missing_keys") or [])
    if missing:
        raise ValueError(
            f"{path}: the checkpoint lacks {len(missing)} tensor(s) {missing[:8]}; refusing to initialise them at "
            "random. The weights file is incomplete: save or download it again."
        )
