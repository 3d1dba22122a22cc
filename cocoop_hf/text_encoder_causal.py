"""
The prompt text encoder of causal text towers (CLIP, MetaCLIP 2): learned prompts -> L2-normalised text features.

Both towers compute, in transformers (`CLIPTextTransformer.forward`, `MetaClip2TextModel.forward`): token + position
embeddings, pre-norm layers under a causal mask (`create_causal_mask`, `is_causal=True`), `final_layer_norm`, the
state at the prompt's EOS, then `text_projection`. Official CoCoOp `trainers/cocoop.py` TextEncoder.forward runs the
same on the assembled prompt embeddings. Because the mask is causal, the tokens before the class name never see it:
when every class shares `[specials, ctx]`, their keys/values are computed once and shared (the prefix cache).

This file travels with the code of every saved folder (the modeling file imports it), so it may import only torch,
transformers and its sibling files.
"""

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .backbones_cocoop import text_projection
from .class_groups_cocoop import class_groups
from .prompt_layout_cocoop import prompt_embeddings
from .text_layers_cocoop import finish_layer, layer_qkv, merge_heads


# Class suffixes are 1-14 tokens: attention kernels tile queries by 64, so one suffix per (image, head) would leave most
# of every tile empty and launch one block per class. Several suffixes share one "packed" sequence instead, under a
# block-diagonal causal mask; positions are already in the embeddings, so packing changes no number.
PACKED_SUFFIX_TOKENS = 64


def packed_suffix_mask(length: int, pack: int, prefix_len: int, device) -> torch.Tensor:
    """`(pack * L, P + pack * L)` bool: each suffix token sees the whole prefix and the earlier tokens of its class."""
    index = torch.arange(pack * length, device=device)
    same_class = (index // length)[:, None] == (index // length)[None, :]
    causal = (index % length)[None, :] <= (index % length)[:, None]
    prefix = torch.ones(pack * length, prefix_len, dtype=torch.bool, device=device)
    return torch.cat([prefix, same_class & causal], dim=1)


def _shares_prefix(prompts) -> bool:
    """One `context_start` for every class, and the same tokens before it (the specials the prefix is built from)."""
    start = prompts.context_start
    if not bool((start == start[0]).all()):
        return False
    before = prompts.input_ids[:, : int(start[0])]
    return bool((before == before[:1]).all())


class CausalPromptEncoder:
    """
    Text features of learned prompts on a causal text tower. Holds references to the backbone's text modules (not a
    module itself: the model's weights stay `clip.*`); its only state is the compiled suffix encoder and its length
    buckets, set by [`~CausalPromptEncoder.compile`]. A call changes neither the model nor the encoder; it may memo
    one pure fact in the given `ClassPrompts` record (whether its classes share the prefix: `ClassPrompts.derived`,
    computed from the record's own tensors and published in one dict assignment, so concurrent calls see either
    nothing or the same value).

    Two paths: the prefix cache (class name at the end, one shared context, one `context_start` for all classes, no
    attention mask: `[specials, ctx]` encoded once per context row, then each class's suffix attends to its cached
    keys/values), else whole prompts (class name moved, class-specific context, or per-class starts), each encoded up
    to its EOS. Classes are grouped by length and chunked to `config.text_chunk_tokens` on both.
    """

    def __init__(self, backbone_model, config):
        self.text_model = backbone_model.text_model
        self.projection = text_projection(backbone_model)
        self.model_type = backbone_model.config.model_type
        self.config = config  # the CoCoOp config: n_ctx, class_token_position, chunking (read at each call)
        self._suffix_encoder = self._encode_suffix  # replaced by a compiled version in compile()
        self._length_buckets = None  # fixed suffix-length buckets of a compiled text path

    # ------------------------------------------------------------------ public interface

    def prompt_features(self, ctx: torch.Tensor, prompts, gradient_checkpointing: bool = False) -> torch.Tensor:
        """
        `ctx` `(batch, n_ctx, dim)` shared by the classes (CoCoOp: per image; CoOp: batch 1) or
        `(1, classes, n_ctx, dim)` one per class; `prompts`: a `ClassPrompts`. Returns L2-normalised text features
        `(batch, classes, embed_dim)`.
        """
        if self._uses_prefix_cache(ctx, prompts):
            return self._prefix_features(ctx, prompts, gradient_checkpointing)
        return self._full_prompt_features(ctx, prompts, gradient_checkpointing)

    @torch.no_grad()
    def text_features(self, input_ids: torch.Tensor, attention_mask=None, eos_index=None) -> torch.Tensor:
        """
        Frozen text features `(N, embed_dim)`, L2-normalised, of ordinary tokenised texts `input_ids` `(N, L)`:
        the backbone's own `get_text_features`. Pooled at `eos_index` `(N,)` where given (the caller knows each
        row's EOS), else where transformers pools: the first `eos_token_id` (CLIP with the legacy `eos_token_id`
        2 of the OpenAI configs: the largest id, `CLIPTextTransformer.forward`). `attention_mask`: padding keys
        masked, as transformers' mask does; padding after EOS changes nothing under the causal mask.
        """
        if eos_index is None:
            eos_id = self.text_model.config.eos_token_id
            if self.model_type == "clip" and eos_id == 2:
                eos_index = input_ids.argmax(dim=-1)
            else:
                eos_index = (input_ids == eos_id).int().argmax(dim=-1)
        embeddings = self.text_model.embeddings
        features = []
        per_call = max(1, self.config.text_chunk_tokens // input_ids.shape[1])
        for start in range(0, input_ids.shape[0], per_call):
            chunk_eos = eos_index[start : start + per_call]
            length = int(chunk_eos.max()) + 1
            hidden = embeddings.token_embedding(input_ids[start : start + per_call, :length])
            hidden = hidden + embeddings.position_embedding.weight[:length]
            mask = attention_mask[start : start + per_call, :length] if attention_mask is not None else None
            features.append(self._encode_prompts(hidden, chunk_eos, key_mask=mask))
        features = torch.cat(features)
        return features / features.norm(dim=-1, keepdim=True)

    def compile(self, length_buckets=None, **compile_kwargs) -> None:
        """`torch.compile` of the suffix encoder, see `CoCoOpModel.compile_text_path` (arguments checked there)."""
        if length_buckets is not None:
            compile_kwargs.setdefault("dynamic", False)
        else:
            compile_kwargs.setdefault("dynamic", True)
        self._length_buckets = tuple(length_buckets) if length_buckets is not None else None
        self._suffix_encoder = torch.compile(self._encode_suffix, **compile_kwargs)

    def text_dtype(self) -> torch.dtype:
        """The dtype of the text weights: what its layers expect (autocast may still compute in another)."""
        return self.text_model.embeddings.token_embedding.weight.dtype

    # ------------------------------------------------------------------ prefix cache

    def _uses_prefix_cache(self, ctx: torch.Tensor, prompts) -> bool:
        """Every class shares `[specials, ctx]`: the name at the end, one shared context, one start, the same tokens
        before it, no attention mask."""
        if self.config.class_token_position != "end" or ctx.dim() != 3 or prompts.attention_mask is not None:
            return False
        return prompts.derived("shared_prefix", _shares_prefix)

    def _prefix_features(self, ctx, prompts, gradient_checkpointing: bool) -> torch.Tensor:
        prompt_ids, eos_index = prompts.input_ids, prompts.eos_index
        start = int(prompts.context_start[0])
        embeddings = self.text_model.embeddings
        # The tokens before the context (SOS / <s>) are the same for every class (_uses_prefix_cache).
        specials = embeddings.token_embedding(prompt_ids[:1, :start]).expand(ctx.shape[0], -1, -1)
        prefix = torch.cat([specials.to(ctx.dtype), ctx], dim=1)  # (batch, P, dim), P = start + n_ctx
        prefix_len = prefix.shape[1]
        prefix = prefix + embeddings.position_embedding.weight[:prefix_len]
        prefix_cache = self._encode_prefix(prefix.to(self.text_dtype()))
        suffix_lengths = (eos_index + 1 - prefix_len).tolist()  # tokens after the prefix, EOS included
        groups = class_groups(
            suffix_lengths,
            ctx.shape[0],
            prefix_len,
            self.config.text_chunk_tokens,
            self.config.bucket_by_length,
            eos_index.device,
            self._length_buckets,
            prompt_ids.shape[1] - prefix_len,
        )
        features, order = [], []
        for chunk, length, count in groups:
            suffix_ids = prompt_ids[chunk, prefix_len : prefix_len + length]
            eos = eos_index[chunk] - prefix_len
            if gradient_checkpointing and torch.is_grad_enabled():
                # Per-chunk checkpoint: only the chunk's features are kept; its activations are recomputed.
                out = checkpoint(self._suffix_encoder, prefix_cache, suffix_ids, eos, use_reentrant=False)
            else:
                out = self._suffix_encoder(prefix_cache, suffix_ids, eos)
            features.append(out[:, :count])  # a fixed-shape chunk's repeated classes are dropped
            order.append(chunk[:count])
        features = torch.cat(features, dim=1)[:, torch.argsort(torch.cat(order))]  # back to class order
        return features / features.norm(dim=-1, keepdim=True)

    def _encode_prefix(self, prefix: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys/values of `[specials, ctx]` at every layer, `(batch, heads, P, head_dim)`; causal over P."""
        layers = self.text_model.encoder.layers
        cache = []
        hidden = prefix
        for i, layer in enumerate(layers):
            query, key, value = layer_qkv(layer, hidden)
            cache.append((key, value))
            if i + 1 < len(layers):  # the last layer's prefix outputs are never read
                attn = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=layer.self_attn.scale)
                hidden = finish_layer(layer, hidden, merge_heads(attn))
        return cache

    def _encode_suffix(self, prefix_cache, suffix_ids: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
        """
        Text features `(batch, classes, embed_dim)` of the class-name tokens `suffix_ids` `(classes, L)` attending to
        the cached prefix keys/values; `eos` `(classes,)` is each class's EOS position in the suffix.
        """
        text = self.text_model
        layers = text.encoder.layers
        batch, heads, prefix_len, head_dim = prefix_cache[0][0].shape
        classes, length = suffix_ids.shape
        pack = min(classes, max(1, PACKED_SUFFIX_TOKENS // length))  # class suffixes per packed sequence
        padding = -classes % pack  # repeat the last class to fill the last pack; its outputs are dropped
        suffix_ids = torch.cat([suffix_ids, suffix_ids[-1:].expand(padding, -1)])
        eos = torch.cat([eos, eos[-1:].expand(padding)])
        packs = suffix_ids.shape[0] // pack
        positions = text.embeddings.position_embedding.weight[prefix_len : prefix_len + length]
        hidden = text.embeddings.token_embedding(suffix_ids) + positions  # (classes + padding, L, dim)
        hidden = hidden.view(1, packs, pack * length, -1).expand(batch, -1, -1, -1).flatten(0, 1)
        mask = packed_suffix_mask(length, pack, prefix_len, hidden.device)  # (pack * L, P + pack * L)
        # Position of each class's EOS token inside its packed sequence, per (image, pack) row.
        eos_positions = (torch.arange(pack, device=eos.device) * length + eos.view(packs, pack)).repeat(batch, 1)

        def with_prefix(prefix_part, suffix_part):  # (batch, heads, P, d) + (batch * packs, heads, pack * L, d)
            prefix_part = prefix_part.unsqueeze(1).expand(-1, packs, -1, -1, -1).flatten(0, 1)
            return torch.cat([prefix_part.to(suffix_part.dtype), suffix_part], dim=2)

        for i, (layer, (prefix_key, prefix_value)) in enumerate(zip(layers, prefix_cache, strict=True)):
            query, key, value = layer_qkv(layer, hidden)  # (batch * packs, heads, pack * L, head_dim)
            layer_mask = mask
            if i == len(layers) - 1:
                # Only the EOS state is pooled: the last layer runs its query, MLP and norm on that token alone.
                index = eos_positions[:, None, :, None].expand(-1, heads, -1, head_dim)
                query = torch.gather(query, 2, index)  # (batch * packs, heads, pack, head_dim)
                hidden = torch.gather(hidden, 1, eos_positions[..., None].expand(-1, -1, hidden.shape[-1]))
                layer_mask = mask[eos_positions].unsqueeze(1)  # (batch * packs, 1, pack, P + pack * L)
            attn = F.scaled_dot_product_attention(
                query,
                with_prefix(prefix_key, key),
                with_prefix(prefix_value, value),
                attn_mask=layer_mask,
                scale=layer.self_attn.scale,
            )
            hidden = finish_layer(layer, hidden, merge_heads(attn))
        pooled = hidden.reshape(batch, packs * pack, -1)[:, :classes]  # EOS states, (batch, classes, dim)
        return self.projection(text.final_layer_norm(pooled))

    # ------------------------------------------------------------------ whole prompts

    def _full_prompt_features(self, ctx, prompts, gradient_checkpointing: bool) -> torch.Tensor:
        """
        The general path (class name in the middle or front, a class-specific context, per-class starts): each
        class's whole prompt is assembled and encoded, classes grouped by length and chunked like the prefix path.
        A CoOp context gives `(1, classes, embed_dim)`: one text pass per class, no per-image work.
        """
        eos_index, name_length, mask = prompts.eos_index, prompts.name_length, prompts.attention_mask
        lengths = (eos_index + 1).tolist()  # each prompt up to its EOS
        groups = class_groups(
            lengths,
            ctx.shape[0],
            0,
            self.config.text_chunk_tokens,
            self.config.bucket_by_length,
            eos_index.device,
        )
        features, order = [], []
        for chunk, length, _ in groups:
            chunk_ctx = ctx[:, chunk] if ctx.dim() == 4 else ctx  # class-specific rows, or the shared context
            args = (
                chunk_ctx,
                prompts.input_ids[chunk, :length],
                eos_index[chunk],
                name_length[chunk] if name_length is not None else None,
                prompts.context_start[chunk],
                mask[chunk, :length] if mask is not None else None,
            )
            if gradient_checkpointing and torch.is_grad_enabled():
                out = checkpoint(self._encode_full_prompts, *args, use_reentrant=False)
            else:
                out = self._encode_full_prompts(*args)
            features.append(out)
            order.append(chunk)
        features = torch.cat(features, dim=1)[:, torch.argsort(torch.cat(order))]  # back to class order
        return features / features.norm(dim=-1, keepdim=True)

    def _encode_full_prompts(self, ctx, prompt_ids, eos, name_length, context_start, key_mask=None) -> torch.Tensor:
        """
        Text features `(batch, classes, embed_dim)` of whole prompts for the classes of one chunk: `ctx`
        `(batch, n_ctx, dim)` shared by the classes, or `(1, classes, n_ctx, dim)` one per class; `prompt_ids`
        `(classes, L)` cut after the longest EOS.
        """
        classes = prompt_ids.shape[0]
        hidden, _ = prompt_embeddings(
            self.text_model.embeddings,
            ctx,
            prompt_ids,
            context_start,
            eos,
            name_length,
            self.config.n_ctx,
            self.config.class_token_position,
        )
        batch = hidden.shape[0]
        if key_mask is not None:
            key_mask = key_mask.repeat(batch, 1)
        features = self._encode_prompts(
            hidden.flatten(0, 1).to(self.text_dtype()), eos.repeat(batch), key_mask=key_mask
        )
        return features.view(batch, classes, -1)

    def _encode_prompts(self, hidden: torch.Tensor, eos: torch.Tensor, key_mask=None) -> torch.Tensor:
        """
        Text features `(prompts, embed_dim)` of whole prompts `hidden` `(prompts, L, dim)` (token + position
        embeddings, L = the longest EOS + 1): the text layers under a causal mask, pooled at `eos` `(prompts,)`,
        final layer norm, projection (official TextEncoder.forward). `key_mask` `(prompts, L)`: 0 on padding keys,
        as transformers' `create_causal_mask` combines an attention mask with the causal one.
        """
        layers = self.text_model.encoder.layers
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        mask = None
        if key_mask is not None:
            causal = positions[None, :] <= positions[:, None]  # (L, L): query row sees key column
            # A padding query sees itself too: a row with no key would give NaN, and NaN x 0 weight poisons the
            # real rows that read it; real queries never see padding keys either way.
            mask = (causal[None] & key_mask.bool()[:, None, :]) | torch.eye(
                len(positions), dtype=torch.bool, device=hidden.device
            )[None]
            mask = mask[:, None]  # (prompts, 1, L, L)
        for i, layer in enumerate(layers):
            query, key, value = layer_qkv(layer, hidden)  # (prompts, heads, L, head_dim)
            scale = layer.self_attn.scale
            if i == len(layers) - 1:
                # Only the EOS state is pooled: the last layer runs its query, MLP and norm on that token alone.
                query = query[rows, :, eos].unsqueeze(2)  # (prompts, heads, 1, head_dim)
                hidden = hidden[rows, eos].unsqueeze(1)  # (prompts, 1, dim)
                if mask is None:
                    sees = positions[None, :] <= eos[:, None]  # the causal row at EOS
                    eos_mask = sees[:, None, None, :]
                else:
                    eos_mask = mask[rows, :, eos].unsqueeze(2)  # (prompts, 1, 1, L)
                attn = F.scaled_dot_product_attention(query, key, value, attn_mask=eos_mask, scale=scale)
            elif mask is None:
                attn = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scale)
            else:
                attn = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale)
            hidden = finish_layer(layer, hidden, merge_heads(attn))
        return self.projection(self.text_model.final_layer_norm(hidden[:, 0]))
