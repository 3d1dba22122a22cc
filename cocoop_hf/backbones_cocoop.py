"""
The dual encoders prompts can be learned for, one row each, keyed by the backbone config's `model_type`.

What differs between them, as transformers computes it (read in the installed model files):
- CLIP (`CLIPModel`, also MetaCLIP 1 and the LAION/OpenCLIP conversions) and MetaCLIP 2 (`MetaClip2Model`): causal
  text tower pooled at the prompt's EOS token, then `text_projection`; logits `logit_scale.exp() * cos`.
- SigLIP (`SiglipModel`) and SigLIP 2 (`Siglip2Model`): bidirectional text tower over the whole prompt padded to the
  text context (64), pooled at the LAST position (padding included), then `text_model.head`; logits
  `logit_scale.exp() * cos + logit_bias`.
All four keep the text tower as `text_model` with `embeddings.token_embedding`, `embeddings.position_embedding`,
`encoder.layers` (pre-norm layers: `layer_norm1`, `self_attn` with q/k/v/out projections, `layer_norm2`, `mlp`) and
`final_layer_norm`.

This file travels with the code of every saved folder (the modeling file imports it), so it may import only torch,
transformers and its sibling files.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    CLIPConfig,
    CLIPModel,
    MetaClip2Config,
    MetaClip2Model,
    PretrainedConfig,
    PreTrainedModel,
    Siglip2Config,
    Siglip2Model,
    SiglipConfig,
    SiglipModel,
)


@dataclass(frozen=True)
class Backbone:
    """One kind of dual encoder: its classes and the rules its text tower and logits follow."""

    model_type: str
    model_class: type[PreTrainedModel]
    config_class: type[PretrainedConfig]
    # True: causal text tower pooled at EOS (the [SOS, ctx] prefix cache applies); False: bidirectional, whole prompt
    # padded to the text context, pooled at the last position through `text_model.head`.
    causal_text: bool
    # logits = logit_scale.exp() * cos + logit_bias (SigLIP's sigmoid-trained logits).
    has_logit_bias: bool
    # The backbone's own zero-shot template (CLIP: the paper's "a photo of a {}."; SigLIP: the template of its model
    # card and of transformers' zero-shot pipeline docs).
    zero_shot_template: str
    # Licence of the weights usually released for it, for model cards (a checkpoint's own card takes precedence).
    weights_license: str
    display_name: str


# Backbones whose towers have the structure the official deep prompts (IVLP, MaPLe, PromptSRC) are defined on (the
# OpenAI CLIP ViT): CLIPModel and MetaClip2Model keep the same module names (`vision_model.embeddings/pre_layrnorm/
# encoder.layers/post_layernorm`, `visual_projection`, `text_model.embeddings/encoder.layers/final_layer_norm`,
# `text_projection`) and a causal text tower pooled at EOS. SigLIP's towers differ (no class token, attention-pool
# head, bidirectional text).
DEEP_PROMPT_BACKBONES = ("clip", "metaclip_2")

BACKBONES = {
    backbone.model_type: backbone
    for backbone in (
        Backbone("clip", CLIPModel, CLIPConfig, True, False, "a photo of a {}.", "mit", "CLIP"),
        Backbone(
            "metaclip_2",
            MetaClip2Model,
            MetaClip2Config,
            True,
            False,
            "a photo of a {}.",
            "cc-by-nc-4.0",
            "MetaCLIP 2",
        ),
        Backbone("siglip", SiglipModel, SiglipConfig, False, True, "This is a photo of {}.", "apache-2.0", "SigLIP"),
        Backbone(
            "siglip2", Siglip2Model, Siglip2Config, False, True, "This is a photo of {}.", "apache-2.0", "SigLIP 2"
        ),
    )
}


def backbone_of(config_or_model_type) -> Backbone:
    """The row of a backbone config (or of its `model_type`); a ValueError names the supported ones."""
    model_type = config_or_model_type if isinstance(config_or_model_type, str) else config_or_model_type.model_type
    if model_type not in BACKBONES:
        raise ValueError(
            f"backbone model_type {model_type!r} is not supported: use one of {sorted(BACKBONES)} "
            "(CLIPModel, MetaClip2Model, SiglipModel, Siglip2Model checkpoints)."
        )
    return BACKBONES[model_type]


def backbone_config_from_dict(config_dict: dict) -> PretrainedConfig:
    """A backbone config from its dict (config.json form), by its `model_type` (no `model_type`: CLIP, as saved before)."""
    model_type = config_dict.get("model_type", "clip")
    fields = {key: value for key, value in config_dict.items() if key != "model_type"}
    return backbone_of(model_type).config_class(**fields)


def embed_dim(config: PretrainedConfig) -> int:
    """Width of the joint image-text space: image and text features, the meta-net's input."""
    if backbone_of(config).causal_text:
        return config.projection_dim
    return config.text_config.projection_size  # SigLIP's text head; its vision pooler has the vision width


def vision_output_dim(config: PretrainedConfig) -> int:
    """Width of the image features the vision tower gives (must equal `embed_dim` to compare with text)."""
    if backbone_of(config).causal_text:
        return config.projection_dim
    return config.vision_config.hidden_size


def text_width(config: PretrainedConfig) -> int:
    """Width of the text tower's token embeddings: the context vectors' width."""
    return config.text_config.hidden_size


def text_context(config: PretrainedConfig) -> int:
    """Positions of the text tower (CLIP 77, SigLIP 64)."""
    return config.text_config.max_position_embeddings


def text_projection(model: PreTrainedModel) -> nn.Module:
    """What maps the pooled text state to the joint space: `text_projection` (CLIP family) or SigLIP's `head`."""
    return model.text_projection if backbone_of(model.config).causal_text else model.text_model.head


def image_features(model: PreTrainedModel, pixel_values: torch.Tensor, **vision_inputs) -> torch.Tensor:
    """Pooled, projected image features `(batch, embed_dim)`, not normalised; SigLIP 2 also takes its patch mask."""
    return model.get_image_features(pixel_values=pixel_values, **vision_inputs).pooler_output


def logit_bias(model: PreTrainedModel) -> torch.Tensor | None:
    """SigLIP's learned logit bias, else None."""
    return model.logit_bias if backbone_of(model.config).has_logit_bias else None


# ---------------------------------------------------------------------------------------------- loading (H4's additions)


def backbone_model_type(config) -> str:
    """The `model_type` of a checkpoint's config (a config object or its config.json dict; none: CLIP, as before)."""
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    return model_type or "clip"
