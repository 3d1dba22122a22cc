"""
The CLIP-family text tower with deep text prompts (IVLP, MaPLe, PromptSRC): text features of every class prompt.

Where the prompts enter and leave, as the official modified `clip/model.py` of muzairkhattak/multimodal-prompt-learning
puts them (`CLIP.encode_text` with the prompt learner's embeddings, `ResidualAttentionBlock_IVLP.forward` /
`ResidualAttentionBlock_MaPLe.forward` with `text_layer=True`; PromptSRC vendors the same file):
- enter: layer 0 reads `[SOS | ctx | rest of the prompt | EOS]` token embeddings (the learned `ctx` in place of the
  context tokens) + positional embeddings;
- at the input of each layer l with 1 <= l < depth the context positions (official `x[1 : 1 + n_ctx]`; here
  `context_start .. context_start + n_ctx - 1`, 1 for CLIP's SOS and MetaCLIP 2's `<s>`) are replaced by layer l's
  prompts (`text_prompts[l - 1]`), without positional embedding;
- leave: after the last prompted layer the context positions carry the layer outputs on; the text is pooled at each
  prompt's EOS after `ln_final` (`final_layer_norm`), then `text_projection`.
Attention is causal (official `build_attention_mask`; transformers' `CLIPAttention.is_causal` is False, the causal
mask comes from `CLIPTextModel.forward`, which this path does not call: it is applied here explicitly). Causal, so
tokens after the longest EOS change nothing: each call runs only up to its classes' longest EOS.

This file travels with the code of every saved folder (the modeling file imports it), so it may import only torch,
transformers and its sibling files.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .class_groups_cocoop import class_groups
from .text_layers_cocoop import finish_layer, layer_qkv, merge_heads
from .vision_encoder_prompted import checked_deep_prompt_backbone, checked_prompts


def deep_prompt_text_features(
    backbone_model,
    input_ids: torch.Tensor,
    eos_index: torch.Tensor,
    context_start: int,
    ctx: torch.Tensor,
    text_prompts: Sequence[torch.Tensor],
    chunk_tokens: int | None = None,
    gradient_checkpointing: bool = False,
) -> torch.Tensor:
    """
    Projected text features `(classes, projection_dim)`, not normalised, of the class prompts `input_ids`
    `(classes, L)` (the processor's prompts: placeholder or `ctx_init` tokens at `context_start .. context_start +
    n_ctx - 1`, each prompt's EOS at `eos_index` `(classes,)`) through the text tower of `backbone_model` (a
    `CLIPModel` or `MetaClip2Model`) with the learned context `ctx` `(n_ctx, text_width)` at layer 0 and
    `text_prompts[l - 1]` `(n_ctx, text_width)` at the context positions of layer l (1 <= l <= len(text_prompts)).

    The prompts do not depend on the image: one pass per chunk of classes. Classes are grouped by prompt length and
    chunked so that classes x length <= `chunk_tokens` per call (None: no bound). Prompts are cast to the text
    weights' dtype where they enter; gradients flow back to `ctx` and every text prompt. `gradient_checkpointing`:
    each chunk keeps only its pooled states; its activations are recomputed in the backward pass.
    """
    checked_deep_prompt_backbone(backbone_model)
    text = backbone_model.text_model
    layers = text.encoder.layers
    width = text.config.hidden_size
    if not isinstance(ctx, torch.Tensor) or ctx.dim() != 2 or ctx.shape[1] != width or ctx.shape[0] < 1:
        shape = tuple(ctx.shape) if isinstance(ctx, torch.Tensor) else type(ctx).__name__
        raise ValueError(f"ctx must be a (n_ctx, {width}) tensor, n_ctx >= 1; got {shape}.")
    n_ctx = ctx.shape[0]
    # Layer 0 reads ctx, layers 1..len(text_prompts) their own prompts.
    checked_prompts(text_prompts, width, len(layers) - 1, "text_prompts", n_tokens=n_ctx)
    if input_ids.dim() != 2 or input_ids.shape[0] == 0 or eos_index.shape != input_ids.shape[:1]:
        raise ValueError(
            f"input_ids must be (classes, length) with classes >= 1 and eos_index (classes,); got "
            f"{tuple(input_ids.shape)} and {tuple(eos_index.shape)}."
        )
    lengths = (eos_index + 1).tolist()  # each prompt is needed up to its EOS (causal: later tokens change nothing)
    first_eos, last_eos = min(lengths) - 1, max(lengths) - 1  # one copy to the host, not one per bound
    context_end = int(context_start) + n_ctx
    if int(context_start) < 0 or context_end > first_eos or last_eos >= input_ids.shape[1]:
        raise ValueError(
            f"the context positions {int(context_start)}..{context_end - 1} must lie before every prompt's EOS "
            f"(eos_index {first_eos}..{last_eos}, prompts of {input_ids.shape[1]} tokens): "
            "build the prompts with the model's processor for this n_ctx."
        )
    if chunk_tokens is not None and (
        isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 1
    ):
        raise ValueError(f"chunk_tokens must be a positive int or None; got {chunk_tokens!r}.")

    bound = chunk_tokens if chunk_tokens is not None else len(lengths) * max(lengths)
    groups = class_groups(lengths, 1, 0, bound, True, eos_index.device)
    features, order = [], []
    checkpointed = gradient_checkpointing and torch.is_grad_enabled()
    for chunk, length, _ in groups:
        args = (text, input_ids[chunk, :length], eos_index[chunk], int(context_start), ctx, *text_prompts)
        features.append(
            checkpoint(_prompted_text, *args, use_reentrant=False) if checkpointed else _prompted_text(*args)
        )
        order.append(chunk)
    pooled = torch.cat(features)[torch.argsort(torch.cat(order))]  # back to class order, (classes, width)
    return backbone_model.text_projection(pooled)


def _prompted_text(text, input_ids, eos, context_start: int, ctx, *text_prompts) -> torch.Tensor:
    """Final-layer-norm EOS states `(classes, width)` of one chunk of prompts `input_ids` `(classes, L)`."""
    embeddings = text.embeddings
    layers = text.encoder.layers
    dtype = embeddings.token_embedding.weight.dtype
    classes, length = input_ids.shape
    n_ctx = ctx.shape[0]

    def with_prompt(hidden, prompt):  # the context positions replaced by `prompt` (n_ctx, width), for every class
        prompt = prompt.to(dtype).unsqueeze(0).expand(classes, -1, -1)
        return torch.cat([hidden[:, :context_start], prompt, hidden[:, context_start + n_ctx :]], dim=1)

    # Layer 0: [specials | ctx | rest], then the positional embedding on every token (official PromptLearner.forward
    # builds the prompt, CLIP.encode_text adds `positional_embedding`).
    hidden = with_prompt(embeddings.token_embedding(input_ids), ctx) + embeddings.position_embedding.weight[:length]
    rows = torch.arange(classes, device=hidden.device)
    for index, layer in enumerate(layers):
        if 1 <= index <= len(text_prompts):
            # Official ResidualAttentionBlock_IVLP.forward (text_layer): `cat([x[:1], VPT_shallow, x[1 + n_ctx:]])`.
            hidden = with_prompt(hidden, text_prompts[index - 1])
        query, key, value = layer_qkv(layer, hidden)  # (classes, heads, L, head_dim)
        scale = layer.self_attn.scale
        if index == len(layers) - 1:
            # Only the EOS state is pooled: the last layer runs its query, MLP and norm on that token alone, under
            # the causal row of EOS.
            query = query[rows, :, eos].unsqueeze(2)  # (classes, heads, 1, head_dim)
            hidden = hidden[rows, eos].unsqueeze(1)  # (classes, 1, width)
            sees = torch.arange(length, device=hidden.device)[None, :] <= eos[:, None]  # (classes, L)
            attn = F.scaled_dot_product_attention(query, key, value, attn_mask=sees[:, None, None, :], scale=scale)
        else:
            attn = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scale)
        hidden = finish_layer(layer, hidden, merge_heads(attn))
    return text.final_layer_norm(hidden[:, 0])
