"""
Where each position of a learned prompt comes from: a context vector, or a token of the tokenised
`"{prompt_prefix} {class name}."` prompt. One function, shared by the causal and the bidirectional prompt encoders.

This file travels with the code of every saved folder (the modeling file imports it), so it may import only torch,
transformers and its sibling files.
"""

import torch


CLASS_TOKEN_POSITIONS = ("end", "middle", "front")


def prompt_layout(
    context_start: torch.Tensor,
    eos_index: torch.Tensor,
    name_length: torch.Tensor | None,
    n_ctx: int,
    position: str,
    length: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    The layout of `length` prompt positions per class: `(is_ctx, ctx_pos, token_pos)`, each `(classes, length)`.

    - `is_ctx` (bool): the position holds a context vector;
    - `ctx_pos` (long): which context row it holds (clamped into `[0, n_ctx)` where `is_ctx` is False);
    - `token_pos` (long): which position of the class's `input_ids` its token comes from (read where not `is_ctx`).

    The tokenised prompt holds the context placeholder words at `context_start .. context_start + n_ctx - 1` and
    the name's `name_length` tokens right after them. Official CoOp `trainers/coop.py` `PromptLearner.forward`
    builds, with h context tokens before the name (end: h = n_ctx, `cat([prefix, ctx, suffix])`; middle:
    h = n_ctx // 2, `cat([prefix, ctx[:h], class, ctx[h:], suffix])`; front: h = 0,
    `cat([prefix, class, ctx, suffix])`) and `prefix` = the tokens before the context (there: SOS):

        [tokens before context_start] ctx[:h] name ctx[h:] [rest: '.', EOS, padding]

    Positions are only permuted inside `[context_start, context_start + n_ctx + name_length)`: everything before
    (SOS, or a left-padding tokenizer's padding) and after (the '.', EOS, padding) stays where it is, so `eos_index`
    still points at EOS. For "end" the name does not move and `name_length` may be None.

    `context_start` `(classes,)`: 1 for CLIP / MetaCLIP 2 (after SOS / `<s>`), 0 for SigLIP's T5-style tokenizer, per
    class under left padding. `eos_index` `(classes,)`: each prompt's last real token (gives the device and class
    count; the layout never moves it).
    """
    if position not in CLASS_TOKEN_POSITIONS:
        raise ValueError(f"class token position must be one of {CLASS_TOKEN_POSITIONS}, got {position!r}.")
    if position != "end" and name_length is None:
        raise ValueError(f'class token position "{position}" moves the class name: `name_length` is needed.')
    device = eos_index.device
    half = {"end": n_ctx, "middle": n_ctx // 2, "front": 0}[position]  # context tokens before the name
    j = torch.arange(length, device=device)[None, :]  # (1, L)
    k = j - context_start.to(device)[:, None]  # offset from the first context position, (classes, L)
    if position == "end":
        n = torch.zeros_like(k[:, :1])
    else:
        n = name_length.to(device)[:, None]  # (classes, 1)
    before_name = (k >= 0) & (k < half)
    in_name = (k >= half) & (k < half + n)
    after_name = (k >= half + n) & (k < n + n_ctx)
    is_ctx = before_name | after_name
    ctx_pos = torch.where(k < half, k, k - n).clamp(0, n_ctx - 1)
    # A name token at offset half + i is the name's i-th token, which the tokenised prompt holds at offset n_ctx + i.
    token_pos = torch.where(in_name, j + n_ctx - half, j).expand_as(is_ctx)
    return is_ctx, ctx_pos, token_pos


def prompt_embeddings(
    embeddings,
    ctx: torch.Tensor,
    input_ids: torch.Tensor,
    context_start: torch.Tensor,
    eos_index: torch.Tensor,
    name_length: torch.Tensor | None,
    n_ctx: int,
    position: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The input embeddings of the learned prompts, `(hidden, token_pos)`: `hidden` `(batch, classes, L, dim)` in
    `ctx`'s dtype, the context vectors or token embeddings laid out by [`prompt_layout`] plus the position
    embeddings of the first L positions (as transformers' `CLIPTextEmbeddings` / `SiglipTextEmbeddings` add them);
    `token_pos` `(classes, L)` from the layout. One assembly for both text-tower families.

    `embeddings`: the text tower's `embeddings` module (`token_embedding`, `position_embedding`); `ctx`
    `(batch, n_ctx, dim)` shared by the classes or `(1, classes, n_ctx, dim)` one per class; `input_ids`
    `(classes, L)`.
    """
    classes, length = input_ids.shape
    is_ctx, ctx_pos, token_pos = prompt_layout(context_start, eos_index, name_length, n_ctx, position, length)
    tokens = embeddings.token_embedding(torch.gather(input_ids, 1, token_pos))  # (classes, L, dim)
    if ctx.dim() == 3:
        ctx = ctx.unsqueeze(1)
    ctx = ctx.expand(-1, classes, -1, -1)  # (batch, classes, n_ctx, dim)
    ctx = ctx[:, torch.arange(classes, device=ctx.device)[:, None], ctx_pos]  # (batch, classes, L, dim)
    hidden = torch.where(is_ctx[None, :, :, None], ctx, tokens.to(ctx.dtype)[None])
    hidden = hidden + embeddings.position_embedding.weight[:length].to(ctx.dtype)
    return hidden, token_pos
