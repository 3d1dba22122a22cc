"""
The CLIP-family vision tower with deep vision prompts (IVLP, MaPLe, PromptSRC): image features of prompted images.

Where the prompts enter and leave, as the official modified `clip/model.py` of muzairkhattak/multimodal-prompt-learning
puts them (`VisionTransformer.forward` / `VisionTransformer_MaPLe.forward`, `ResidualAttentionBlock_IVLP.forward` /
`ResidualAttentionBlock_MaPLe.forward`; PromptSRC vendors the same file):
- enter: after the class + patch embeddings and their positional embeddings, the layer-0 prompts are appended AFTER
  the patches, without positional embedding, before `ln_pre` (transformers: `pre_layrnorm`);
- at the input of each layer l with 1 <= l < depth the last n tokens (the previous layer's prompt outputs) are
  replaced by layer l's prompts;
- leave: never: after the last prompted layer the prompt tokens stay in the sequence through every remaining layer;
  only the class token is pooled (`ln_post` = `post_layernorm`, then the projection).
Attention is bidirectional, as in every CLIP vision tower (no mask).

This file travels with the code of every saved folder (the modeling file imports it), so it may import only torch,
transformers and its sibling files.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .backbones_cocoop import DEEP_PROMPT_BACKBONES
from .text_layers_cocoop import finish_layer, layer_qkv, merge_heads


def checked_deep_prompt_backbone(backbone_model) -> None:
    """Raise a one-line ValueError unless `backbone_model` is a CLIP or MetaCLIP 2 dual encoder."""
    model_type = getattr(getattr(backbone_model, "config", None), "model_type", None)
    if model_type not in DEEP_PROMPT_BACKBONES:
        name = model_type if model_type is not None else type(backbone_model).__name__
        raise ValueError(
            f"deep prompts (IVLP, MaPLe, PromptSRC) need a CLIP or MetaCLIP 2 backbone (CLIPModel, MetaClip2Model: "
            f"model_type {DEEP_PROMPT_BACKBONES}); got {name!r}."
        )


def checked_prompts(prompts: Sequence[torch.Tensor], width: int, at_most: int, what: str, n_tokens=None) -> int:
    """
    The token count shared by `prompts` (a sequence of `(n, width)` tensors, one per prompted layer); raises a
    one-line ValueError naming the culprit when a shape differs or there are more than `at_most` of them.
    """
    if len(prompts) > at_most:
        raise ValueError(f"{len(prompts)} {what} given: at most {at_most}, one per prompted layer of the tower.")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.shape[1] != width:
            shape = tuple(prompt.shape) if isinstance(prompt, torch.Tensor) else type(prompt).__name__
            raise ValueError(f"{what}[{index}] must be a (n_tokens, {width}) tensor; got {shape}.")
        n_tokens = prompt.shape[0] if n_tokens is None else n_tokens
        if prompt.shape[0] != n_tokens or n_tokens < 1:
            raise ValueError(
                f"{what}[{index}] has {prompt.shape[0]} tokens; every prompted layer needs the same {n_tokens} >= 1."
            )
    return n_tokens


def prompted_image_features(
    backbone_model, pixel_values: torch.Tensor, vision_prompts, gradient_checkpointing: bool = False
) -> torch.Tensor:
    """
    Projected image features `(batch, projection_dim)`, not normalised, of `pixel_values` `(batch, 3, H, W)` through
    the vision tower of `backbone_model` (a `CLIPModel` or `MetaClip2Model`) with deep vision prompts.

    `vision_prompts`: a sequence of `(n, vision_width)` tensors, one per prompted layer: `vision_prompts[0]` is
    appended after the patches (official `VPT` / MaPLe's projected `shared_ctx`), `vision_prompts[l]` replaces the
    last n tokens at the input of layer l (official per-block `VPT_shallow` / MaPLe's `compound_prompts_deeper`).
    The same prompts serve every image. Empty: exactly the backbone's `get_image_features`. Prompts are cast to the
    tower's weight dtype where they enter (a frozen backbone may run in bf16/fp16); gradients flow back to them.
    `gradient_checkpointing`: each layer's activations are recomputed in the backward pass instead of kept.
    """
    checked_deep_prompt_backbone(backbone_model)
    if len(vision_prompts) == 0:
        return backbone_model.get_image_features(pixel_values=pixel_values).pooler_output
    vision = backbone_model.vision_model
    layers = vision.encoder.layers
    n_tokens = checked_prompts(vision_prompts, vision.config.hidden_size, len(layers), "vision_prompts")
    dtype = vision.embeddings.patch_embedding.weight.dtype
    hidden = vision.embeddings(pixel_values)  # (batch, 1 + patches, width): class + patches, with positions
    batch = hidden.shape[0]

    def expanded(prompt):  # (n, width) -> (batch, n, width), the same prompts for every image
        return prompt.to(dtype).unsqueeze(0).expand(batch, -1, -1)

    # Official VisionTransformer.forward: `torch.cat([x, visual_ctx], dim=1)` after the positional embedding, then ln_pre.
    hidden = torch.cat([hidden, expanded(vision_prompts[0])], dim=1)  # (batch, 1 + patches + n, width)
    hidden = vision.pre_layrnorm(hidden)
    checkpointed = gradient_checkpointing and torch.is_grad_enabled()
    for index, layer in enumerate(layers):
        if 1 <= index < len(vision_prompts):
            # Official ResidualAttentionBlock_IVLP.forward: `prefix = x[0 : len - n_ctx_visual]`, then the new prompts.
            hidden = torch.cat([hidden[:, :-n_tokens], expanded(vision_prompts[index])], dim=1)
        run = _class_token_layer if index == len(layers) - 1 else _full_layer
        hidden = checkpoint(run, layer, hidden, use_reentrant=False) if checkpointed else run(layer, hidden)
    pooled = vision.post_layernorm(hidden[:, 0])  # the class token; the prompt tokens are never pooled
    return backbone_model.visual_projection(pooled)


def _full_layer(layer, hidden: torch.Tensor) -> torch.Tensor:
    """CLIPEncoderLayer(hidden_states, attention_mask): None is full attention, as CLIPVisionModel.forward calls it."""
    return layer(hidden, None)


def _class_token_layer(layer, hidden: torch.Tensor) -> torch.Tensor:
    """The last layer on the class token alone `(batch, 1, width)`: only its output is pooled; it attends to all."""
    query, key, value = layer_qkv(layer, hidden)  # (batch, heads, tokens, head_dim)
    attn = F.scaled_dot_product_attention(query[:, :, :1], key, value, scale=layer.self_attn.scale)
    return finish_layer(layer, hidden[:, :1], merge_heads(attn))
