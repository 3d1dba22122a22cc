"""
Plain fp32 references of the deep prompts of IVLP, MaPLe and PromptSRC in both CLIP towers, written from the official
modified `clip/model.py` of muzairkhattak/multimodal-prompt-learning (VisionTransformer.forward, CLIP.encode_text,
ResidualAttentionBlock_IVLP.forward) and independent of cocoop_hf: each builds its token sequences with `torch.cat` of
the pieces in the official order, runs the encoder layers one at a time with its own attention, layer norm and MLP
math read from the layers' weights, and calls none of the code under test (nor the layers' forward).

`reference_image_features(model, pixel_values, vision_prompts)` and `reference_text_features(model, input_ids,
eos_index, context_start, ctx, text_prompts, chunk_tokens=None)` take the arguments of the functions they check.
`planted_mistake` plants one known error, so that a test can show the reference itself tells right from wrong:
- "prompts_before_patches" (vision): the layer-0 prompts between the class token and the patches (the deep layers
  still replace the last n tokens, as the official blocks do);
- "depth_minus_one" (both): the last prompted layer keeps the previous layer's outputs (one prompted layer too few);
- "shifted_positions" (text): the deep text prompts replace positions shifted by one;
- "no_causal_mask" (text): bidirectional text attention.
"""

import torch
import torch.nn.functional as F

from .reference_cocoop import full_prompt_ids


VISION_MISTAKES = ("prompts_before_patches", "depth_minus_one")
TEXT_MISTAKES = ("depth_minus_one", "shifted_positions", "no_causal_mask")


def _layer_norm(norm, x):
    """nn.LayerNorm from its weights: (x - mean) / sqrt(var + eps) * weight + bias, biased variance."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _linear(linear, x):
    return x @ linear.weight.t() + (linear.bias if linear.bias is not None else 0)


def _activation(name: str, x):
    if name == "quick_gelu":  # official QuickGELU
        return x * torch.sigmoid(1.702 * x)
    if name == "gelu":
        return 0.5 * x * (1.0 + torch.erf(x / 2**0.5))
    raise ValueError(f"no reference activation for {name!r}")


def reference_layer(layer, x, additive_mask, hidden_act: str):
    """One pre-norm CLIP block on (batch, L, width): x + attn(ln_1(x)); x + mlp(ln_2(x)), every product written out."""
    attn = layer.self_attn
    batch, length, width = x.shape
    heads = attn.num_heads
    head_dim = width // heads
    h = _layer_norm(layer.layer_norm1, x)
    q, k, v = (
        _linear(p, h).view(batch, length, heads, head_dim).transpose(1, 2)
        for p in (attn.q_proj, attn.k_proj, attn.v_proj)
    )
    scores = q @ k.transpose(-1, -2) / head_dim**0.5 + additive_mask  # (batch, heads, L, L)
    weights = torch.softmax(scores, dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(batch, length, width)
    x = x + _linear(attn.out_proj, out)
    h = _layer_norm(layer.layer_norm2, x)
    return x + _linear(layer.mlp.fc2, _activation(hidden_act, _linear(layer.mlp.fc1, h)))


def _prompted_layers(count: int, planted_mistake) -> int:
    """How many layers read their own prompts (layer 0 included)."""
    return count - 1 if planted_mistake == "depth_minus_one" else count


def reference_image_features(model, pixel_values, vision_prompts, planted_mistake=None):
    """Official VisionTransformer.forward (IVLP) on a transformers CLIP: (batch, projection_dim), not normalised."""
    vision = model.vision_model
    emb = vision.embeddings
    act = vision.config.hidden_act
    patches = F.conv2d(pixel_values, emb.patch_embedding.weight, stride=emb.patch_size)  # (batch, width, g, g)
    patches = patches.flatten(2).transpose(1, 2)  # (batch, g * g, width)
    batch, _, width = patches.shape
    cls = emb.class_embedding.view(1, 1, width).expand(batch, -1, -1)
    x = torch.cat([cls, patches], dim=1) + emb.position_embedding.weight  # official: + positional_embedding
    prompts = [p.unsqueeze(0).expand(batch, -1, -1) for p in vision_prompts]
    if prompts:
        if planted_mistake == "prompts_before_patches":
            x = torch.cat([x[:, :1], prompts[0], x[:, 1:]], dim=1)
        else:
            x = torch.cat([x, prompts[0]], dim=1)  # official: after the patches, no positional embedding
    x = _layer_norm(vision.pre_layrnorm, x)  # ln_pre
    no_mask = torch.zeros(())
    deep = _prompted_layers(len(prompts), planted_mistake)
    for index, layer in enumerate(vision.encoder.layers):
        if 1 <= index < deep:
            n = prompts[index].shape[1]
            x = torch.cat([x[:, : x.shape[1] - n], prompts[index]], dim=1)  # official: prefix = x[0 : len - n]
        x = reference_layer(layer, x, no_mask, act)
    pooled = _layer_norm(vision.post_layernorm, x[:, 0])  # ln_post of the class token
    return pooled @ model.visual_projection.weight.t()


def reference_text_features(
    model, input_ids, eos_index, context_start, ctx, text_prompts, chunk_tokens=None, planted_mistake=None
):
    """
    Official CLIP.encode_text on the IVLP prompts: every prompt padded to the full text context (as the official
    tokenizer pads), [prefix | ctx | suffix] + positions, deep prompts at the context positions, causal mask, ln_final,
    EOS, projection. (classes, projection_dim), not normalised. `chunk_tokens` is accepted and ignored: the reference
    runs all classes at once.
    """
    text = model.text_model
    emb = text.embeddings
    act = text.config.hidden_act
    context_length = emb.position_embedding.weight.shape[0]
    ids = full_prompt_ids(input_ids, eos_index, context_length)  # (classes, 77)
    classes = ids.shape[0]
    tokens = emb.token_embedding.weight[ids]  # (classes, 77, width)
    n_ctx = ctx.shape[0]
    start = int(context_start)

    def replaced(x, prompt, at):
        prompt = prompt.unsqueeze(0).expand(classes, -1, -1)
        return torch.cat([x[:, :at], prompt, x[:, at + n_ctx :]], dim=1)

    x = replaced(tokens, ctx, start) + emb.position_embedding.weight  # official: prefix, ctx, suffix; + positions
    if planted_mistake == "no_causal_mask":
        mask = torch.zeros(())
    else:
        mask = torch.full((context_length, context_length), float("-inf")).triu(1)  # official build_attention_mask
    deep = _prompted_layers(len(text_prompts) + 1, planted_mistake)
    at = start + 1 if planted_mistake == "shifted_positions" else start
    for index, layer in enumerate(text.encoder.layers):
        if 1 <= index < deep:
            x = replaced(x, text_prompts[index - 1], at)  # official: cat([x[:1], VPT_shallow, x[1 + n_ctx:]])
        x = reference_layer(layer, x, mask, act)
    x = _layer_norm(text.final_layer_norm, x)
    pooled = x[torch.arange(classes), eos_index]
    return pooled @ model.text_projection.weight.t()
