"""
The checks of what a user passes to `CoCoOpModel.forward` / `get_text_features`: images, image features, class
prompts, labels, KgCoOp targets. Each bad input gets one ValueError / TypeError naming it and what would be right.

This file travels with the code of every saved folder (the modeling file imports it), so it may import only torch,
transformers and its sibling files.
"""

import torch

from .backbones_cocoop import backbone_of, embed_dim, text_context
from .class_set_cocoop import check_name_lengths
from .context_start_cocoop import agreed_context_start


PROMPTS_HELP = "pass both, as CoCoOpProcessor(class_names=...) or model.class_prompts(class_names) returns them"


def _is_integer_tensor(tensor) -> bool:
    return isinstance(tensor, torch.Tensor) and not tensor.dtype.is_floating_point and tensor.dtype != torch.bool


def _found(value) -> str:
    return str(value.dtype) if isinstance(value, torch.Tensor) else type(value).__name__


def normalised_image_embeds(image_embeds, config, dtype: torch.dtype) -> torch.Tensor:
    """`image_embeds` checked, in the model's float dtype, L2-normalised (raw backbone features are accepted)."""
    width = embed_dim(config.backbone_config)
    if not isinstance(image_embeds, torch.Tensor) or not image_embeds.dtype.is_floating_point:
        raise TypeError(
            f"`image_embeds` must be a floating-point torch.Tensor (batch, {width}), got {_found(image_embeds)}."
        )
    if image_embeds.dim() != 2 or image_embeds.shape[1] != width:
        raise ValueError(f"`image_embeds` must be (batch, {width}), got shape {tuple(image_embeds.shape)}.")
    if image_embeds.shape[0] == 0:
        raise ValueError("`image_embeds` holds no image (batch size 0): pass at least one feature row.")
    image_embeds = image_embeds.to(dtype)  # the meta-net's dtype (float64 input, or fp32 features for a bf16 model)
    norms = image_embeds.float().norm(dim=-1, keepdim=True)
    if not torch.isfinite(norms).all() or (norms == 0).any():
        bad = (~torch.isfinite(norms) | (norms == 0)).flatten().nonzero().flatten().tolist()
        raise ValueError(f"`image_embeds` rows {bad[:5]} are zero or not finite: they have no direction to compare.")
    # Features of get_image_features are unit-norm already and pass unchanged (bit-equal to the pixel path);
    # raw features (norms ~10) are normalised here, as the official code does before the meta-net.
    if (norms - 1).abs().max() <= 1e-3:
        return image_embeds
    return image_embeds / norms.to(image_embeds.dtype)


def check_pixel_values(pixel_values, backbone_config, vision_inputs: dict) -> None:
    """
    Images as the backbone's vision tower reads them: `(batch, channels, size, size)`, or for SigLIP 2 patches
    `(batch, patches, channels * patch * patch)` with `spatial_shapes` (transformers `Siglip2VisionEmbeddings`).
    `vision_inputs`: the extra vision keywords given (None values dropped), checked against the backbone.
    """
    vision = backbone_config.vision_config
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"`pixel_values` must be a torch.Tensor, got {type(pixel_values).__name__}.")
    model_type = backbone_config.model_type
    extra = sorted(vision_inputs)
    if model_type == "siglip2":
        _check_patches(pixel_values, vision, vision_inputs)
    else:
        if extra:
            raise ValueError(
                f"{extra} are vision inputs of SigLIP 2 (Siglip2Model); this model's backbone is "
                f"{backbone_of(backbone_config).display_name}, whose images need only `pixel_values`."
            )
        _check_images(pixel_values, vision)
    if not pixel_values.dtype.is_floating_point:
        # uint8 / int images would run through the vision tower as raw 0..255 values: silently wrong.
        raise TypeError(
            f"`pixel_values` must be floating point (normalised by the model's processor), got dtype "
            f"{pixel_values.dtype}: pass the processor's output, not raw image bytes."
        )
    if pixel_values.shape[0] == 0:
        raise ValueError("`pixel_values` holds no image (batch size 0): pass at least one image.")


def _check_images(pixel_values: torch.Tensor, vision) -> None:
    expected = f"(batch, {vision.num_channels}, {vision.image_size}, {vision.image_size})"
    if pixel_values.dim() != 4:
        raise ValueError(
            f"`pixel_values` must have rank 4 {expected}, got shape {tuple(pixel_values.shape)}; "
            "for one image use pixel_values.unsqueeze(0)."
        )
    if pixel_values.shape[1] != vision.num_channels:
        raise ValueError(
            f"`pixel_values` must have {vision.num_channels} channels {expected}, got shape "
            f"{tuple(pixel_values.shape)} (channels-last images need .permute(0, 3, 1, 2))."
        )
    if tuple(pixel_values.shape[2:]) != (vision.image_size, vision.image_size):
        raise ValueError(
            f"`pixel_values` must be {vision.image_size}x{vision.image_size} {expected}, got shape "
            f"{tuple(pixel_values.shape)}: resize with the model's processor."
        )


def _check_patches(pixel_values: torch.Tensor, vision, vision_inputs: dict) -> None:
    """SigLIP 2: flattened patches plus their grid (`Siglip2ImageProcessor` output)."""
    width = vision.num_channels * vision.patch_size**2
    expected = f"(batch, patches, {width}) (SigLIP 2 patches of {vision.num_channels}x{vision.patch_size}x{vision.patch_size})"
    if pixel_values.dim() != 3 or pixel_values.shape[2] != width or pixel_values.shape[1] == 0:
        raise ValueError(
            f"`pixel_values` must be {expected}, got shape {tuple(pixel_values.shape)}: pass the SigLIP 2 image "
            "processor's output (`pixel_values`, `pixel_attention_mask`, `spatial_shapes`)."
        )
    spatial_shapes = vision_inputs.get("spatial_shapes")
    batch, patches = pixel_values.shape[:2]
    if not _is_integer_tensor(spatial_shapes) or tuple(spatial_shapes.shape) != (batch, 2):
        raise ValueError(
            f"SigLIP 2 needs `spatial_shapes`, an integer tensor ({batch}, 2) of each image's patch grid "
            f"(height, width), with `pixel_values`; got {_found(spatial_shapes)}: pass the image processor's output."
        )
    grid = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    if ((spatial_shapes < 1).any(dim=1) | (grid > patches)).any():
        raise ValueError(
            f"`spatial_shapes` {spatial_shapes.tolist()[:5]} must be positive patch grids of at most {patches} patches "
            "(the patches of `pixel_values`)."
        )
    mask = vision_inputs.get("pixel_attention_mask")
    if mask is not None and (not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (batch, patches)):
        raise ValueError(
            f"`pixel_attention_mask` must be a tensor ({batch}, {patches}), one entry per patch, got "
            f"{tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}."
        )


def check_class_prompts(input_ids, eos_index, config, name_length=None, context_start=None, attention_mask=None):
    """
    Class prompts given to forward: shapes, dtypes and positions that the text path can read. Returns
    `context_start` `(classes,)` (given, or `config.prompt_context_start` for every class).
    """
    if input_ids is None or eos_index is None:
        missing = "eos_index" if eos_index is None else "input_ids"
        raise ValueError(f"class prompts need `input_ids` and `eos_index`, `{missing}` is missing: {PROMPTS_HELP}.")
    for name, tensor, rank in (("input_ids", input_ids, 2), ("eos_index", eos_index, 1)):
        if not _is_integer_tensor(tensor):
            raise TypeError(f"`{name}` must be an integer torch.Tensor, got {_found(tensor)}: {PROMPTS_HELP}.")
        if tensor.dim() != rank:
            raise ValueError(f"`{name}` must have rank {rank}, got shape {tuple(tensor.shape)}: {PROMPTS_HELP}.")
    classes, length = input_ids.shape
    if classes == 0 or eos_index.shape[0] != classes:
        raise ValueError(
            f"`input_ids` {tuple(input_ids.shape)} and `eos_index` {tuple(eos_index.shape)} must describe the same "
            f"non-empty set of classes: {PROMPTS_HELP}."
        )
    context_start = _checked_context_start(context_start, eos_index, length, config, eos_index.device)
    context = text_context(config.backbone_config)
    if length > context:
        raise ValueError(
            f"class prompts do not fit this model: `input_ids` has {length} positions, but its text context is "
            f"{context} ({backbone_of(config.backbone_config).display_name}): prompts built for another backbone? "
            "Build them with this model's processor or model.class_prompts(class_names)."
        )
    lowest = context_start + config.n_ctx + 1  # specials, the context, at least one name or '.' token, then EOS
    bad = (eos_index < lowest) | (eos_index >= min(length, context))
    if length > context or bad.any():
        low = int(lowest[0]) if bool((lowest == lowest[0]).all()) else "context_start + n_ctx + 1"
        raise ValueError(
            f"class prompts do not fit this model: `input_ids` has {length} positions (at most {context}) and each "
            f"`eos_index` must lie in [{low}, {min(length, context)}) (after the tokens before the context and "
            f"{config.n_ctx} context tokens); got {eos_index[bad].tolist()[:5]} for classes "
            f"{bad.nonzero().flatten().tolist()[:5]}. Build them with this model's processor or "
            "model.class_prompts(class_names)."
        )
    vocab_size = config.backbone_config.text_config.vocab_size
    if (input_ids < 0).any() or (input_ids >= vocab_size).any():
        raise ValueError(f"`input_ids` hold token ids outside the vocabulary [0, {vocab_size}).")
    if attention_mask is not None:
        _check_attention_mask(attention_mask, input_ids, eos_index, context_start)
    _check_name_length(name_length, eos_index, context_start, config)
    return context_start


def _checked_context_start(context_start, eos_index, length: int, config, device) -> torch.Tensor:
    if context_start is None:
        if getattr(config, "prompt_context_start", 1) is None:
            raise ValueError(
                "class prompts need `context_start` (the position of each prompt's first context token) with this "
                "model's left-padding tokenizer (config.prompt_context_start is None): " + PROMPTS_HELP + "."
            )
        return agreed_context_start(None, eos_index.to(device=device, dtype=torch.long), length, config)
    if not _is_integer_tensor(context_start):
        raise TypeError(
            f"`context_start` must be an integer torch.Tensor, got {_found(context_start)}: {PROMPTS_HELP}."
        )
    classes = eos_index.shape[0]
    if tuple(context_start.shape) != (classes,) or (context_start < 0).any():
        raise ValueError(
            f"`context_start` must be ({classes},), one position >= 0 per class, got shape "
            f"{tuple(context_start.shape)}: {PROMPTS_HELP}."
        )
    # Its agreement with config.prompt_context_start is checked after the prompts' own checks (their more specific
    # messages first: class_set_holder_cocoop), by the held class set's rule (context_start_cocoop).
    return context_start.to(device=device, dtype=torch.long)


def _check_attention_mask(attention_mask, input_ids, eos_index, context_start) -> None:
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.dtype.is_floating_point:
        raise TypeError(f"`attention_mask` must be an integer or bool torch.Tensor, got {_found(attention_mask)}.")
    if attention_mask.shape != input_ids.shape or not ((attention_mask == 0) | (attention_mask == 1)).all():
        raise ValueError(
            f"`attention_mask` must be 0/1 of the shape of `input_ids` {tuple(input_ids.shape)}, got shape "
            f"{tuple(attention_mask.shape)}: {PROMPTS_HELP}."
        )
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    mask = attention_mask.to(input_ids.device)
    if not (mask[rows, eos_index.to(input_ids.device)] == 1).all() or not (mask[rows, context_start] == 1).all():
        raise ValueError(f"`attention_mask` must be 1 on each prompt's context and EOS tokens: {PROMPTS_HELP}.")


def _check_name_length(name_length, eos_index, context_start, config) -> None:
    position = config.class_token_position
    if name_length is None:
        if position != "end":
            raise ValueError(
                f'class_token_position="{position}" moves the class name, so the class prompts need `name_length` '
                "(the token count of each name): pass it with input_ids and eos_index, as the processor and "
                "model.class_prompts(class_names) return it."
            )
        return
    if not _is_integer_tensor(name_length):
        raise TypeError(f"`name_length` must be an integer torch.Tensor, got {_found(name_length)}: {PROMPTS_HELP}.")
    classes = eos_index.shape[0]
    if tuple(name_length.shape) != (classes,):
        raise ValueError(f"`name_length` must be ({classes},), one per class, got {tuple(name_length.shape)}.")
    if position != "end":
        check_name_lengths(name_length, eos_index, config, context_start=context_start)


def checked_labels(labels, logits) -> torch.Tensor:
    """Labels as int64 on the logits' device (any integer dtype is accepted), checked against the classes."""
    if not _is_integer_tensor(labels):
        raise TypeError(f"`labels` must be an integer tensor of class indices, got {labels!r}.")
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"`labels` must have shape ({logits.shape[0]},), got {tuple(labels.shape)}.")
    labels = labels.to(device=logits.device, dtype=torch.long)
    bad = (labels < 0) | (labels >= logits.shape[1])
    if bad.any():
        raise ValueError(
            f"`labels` must lie in [0, {logits.shape[1]}) for {logits.shape[1]} classes; "
            f"got {labels[bad].tolist()[:5]} at positions {bad.nonzero().flatten().tolist()[:5]}."
        )
    return labels


def kgcoop_targets(zero_shot_embeds, held_zero_shot, classes: int, config, device) -> torch.Tensor:
    """
    The zero-shot text features KgCoOp pulls towards: given to the call, else `held_zero_shot`, those of the held
    class set (None when the call's prompts were given).
    """
    width = embed_dim(config.backbone_config)
    if zero_shot_embeds is None:
        if held_zero_shot is None:
            raise ValueError(
                f"kgcoop_weight={config.kgcoop_weight} needs the zero-shot text features of the classes of "
                "this call's prompts: pass `zero_shot_embeds=model.zero_shot_text_features(class_names)` with "
                "`input_ids`, or use the held class set (set_class_names)."
            )
        zero_shot_embeds = held_zero_shot
        if zero_shot_embeds.numel() == 0 or zero_shot_embeds.device.type == "meta":
            raise ValueError(
                f"kgcoop_weight={config.kgcoop_weight} but this model holds no zero-shot text features: "
                "call model.set_class_names(class_names, tokenizer=...) (it computes them when kgcoop_weight > 0) "
                "or pass `zero_shot_embeds`."
            )
    if not isinstance(zero_shot_embeds, torch.Tensor) or not zero_shot_embeds.dtype.is_floating_point:
        raise TypeError(f"`zero_shot_embeds` must be a floating-point tensor, got {type(zero_shot_embeds)}.")
    if tuple(zero_shot_embeds.shape) != (classes, width):
        raise ValueError(
            f"`zero_shot_embeds` must be (classes, projection_dim) = ({classes}, {width}), one row per "
            f"class of the prompts, got {tuple(zero_shot_embeds.shape)}."
        )
    return zero_shot_embeds.to(device)
