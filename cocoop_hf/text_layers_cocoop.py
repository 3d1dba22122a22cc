"""
One pre-norm text encoder layer run by hand, in pieces: what the prompt encoders need to share keys/values across
prompts, pool one token, or apply their own attention mask.

All four backbones' text layers have the same structure (transformers `CLIPEncoderLayer`, `MetaClip2EncoderLayer`,
`SiglipEncoderLayer`, `Siglip2EncoderLayer`): `hidden + out_proj(attn(layer_norm1(hidden)))`, then
`hidden + mlp(layer_norm2(hidden))`, with attention scaled by `self_attn.scale`. This file travels with the code of
every saved folder (the modeling file imports it), so it may import only torch, transformers and its sibling files.
"""

import torch


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """`(batch, length, dim)` -> `(batch, heads, length, head_dim)`."""
    batch, length, dim = x.shape
    return x.view(batch, length, num_heads, dim // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """`(batch, heads, length, head_dim)` -> `(batch, length, dim)`."""
    batch, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dim)


def layer_qkv(layer, hidden: torch.Tensor):
    """Pre-norm query/key/value of one encoder layer, split into heads."""
    attn = layer.self_attn
    x = layer.layer_norm1(hidden)
    return tuple(split_heads(proj(x), attn.num_heads) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))


def finish_layer(layer, hidden: torch.Tensor, attn_output: torch.Tensor) -> torch.Tensor:
    """Output projection, residual, MLP, residual: the rest of the encoder layer's forward (heads already merged)."""
    hidden = hidden + layer.self_attn.out_proj(attn_output)
    return hidden + layer.mlp(layer.layer_norm2(hidden))
