"""
The prompt text encoder of bidirectional text towers (SigLIP, SigLIP 2): learned prompts -> L2-normalised features.

Both towers compute, in transformers (`SiglipTextModel.forward`, `Siglip2TextModel.forward`): token + position
embeddings of the whole prompt padded to the text context (64: the released tokenizers pad to `max_length`, what the
towers were trained on), pre-norm layers under `create_bidirectional_mask` (padding keys masked when an attention mask
is given; the released SigLIP tokenizers return none, so SigLIP attends to its padding), `final_layer_norm`, the state
at the LAST position (padding or not: "The model uses the last token's hidden state, which may be padding"), then
`head`. Every token sees every other, so nothing can be cached across classes (no prefix cache): each class's whole
prompt is encoded, classes chunked to `config.text_chunk_tokens`.

This file travels with the code of every saved folder (the modeling file imports it), so it may import only torch,
transformers and its sibling files.
"""

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .backbones_cocoop import text_context, text_projection
from .prompt_layout_cocoop import prompt_embeddings
from .text_layers_cocoop import finish_layer, layer_qkv, merge_heads


# Tokens per text-tower call on a CPU, whatever `config.text_chunk_tokens` allows: every (image, class) prompt is
# encoded whole here, so a large call only grows the working set past the caches. Measured with
# benchmarks/bench_backbones.py (mid SigLIP, 100 classes, batch 8, 1 thread, 2-core CPU): one call of 51,200 tokens
# ran at 0.57x the per-image reference, calls of 6,400 at 1.16x. A GPU keeps the configured bound.
CPU_CALL_TOKENS = 8192


class BidirectionalPromptEncoder:
    """
    Text features of learned prompts on a bidirectional text tower. Holds references to the backbone's text modules
    (not a module itself: the model's weights stay `clip.*`); its only state is the (optionally compiled) chunk
    encoder set by [`~BidirectionalPromptEncoder.compile`]. A call changes nothing.

    Every prompt has the same length (the text context), so there is no grouping by length: the classes are cut into
    chunks of at most `config.text_chunk_tokens` tokens (contexts x classes x 64) per call, and on a CPU of at most
    `CPU_CALL_TOKENS`.
    """

    def __init__(self, backbone_model, config):
        self.text_model = backbone_model.text_model
        self.projection = text_projection(backbone_model)  # `text_model.head`
        self.context_length = text_context(backbone_model.config)
        self.config = config  # the CoCoOp config: n_ctx, class_token_position, text_chunk_tokens (read at each call)
        self._chunk_encoder = self._encode_chunk  # replaced by a compiled version in compile()

    # ------------------------------------------------------------------ public interface

    def prompt_features(self, ctx: torch.Tensor, prompts, gradient_checkpointing: bool = False) -> torch.Tensor:
        """
        `ctx` `(batch, n_ctx, dim)` shared by the classes (CoCoOp: per image; CoOp: batch 1, computed once for all
        classes) or `(1, classes, n_ctx, dim)` one per class; `prompts`: a `ClassPrompts` (`input_ids`,
        `eos_index`, `name_length`, `context_start`, `attention_mask`). Returns L2-normalised text features
        `(batch, classes, embed_dim)`.
        """
        input_ids = prompts.input_ids
        classes, length = input_ids.shape
        if length != self.context_length:
            # Pooling reads the last position: prompts padded to another length give other features than the tower
            # was trained to give (transformers would compute them silently).
            raise ValueError(
                f"prompts for a SigLIP-style text tower must be padded to its text context of {self.context_length} "
                f"tokens (padding='max_length', as its processor does), got length {length}: the tower pools at the "
                "last position. Build them with the model's processor or model.class_prompts(class_names)."
            )
        batch = ctx.shape[0]
        call_tokens = self.config.text_chunk_tokens
        if input_ids.device.type == "cpu":
            call_tokens = min(call_tokens, CPU_CALL_TOKENS)
        per_call = max(1, call_tokens // (batch * length))
        features = []
        for start in range(0, classes, per_call):
            chunk = slice(start, start + per_call)
            args = (
                ctx[:, chunk] if ctx.dim() == 4 else ctx,
                input_ids[chunk],
                prompts.eos_index[chunk],
                prompts.name_length[chunk] if prompts.name_length is not None else None,
                prompts.context_start[chunk],
                prompts.attention_mask[chunk] if prompts.attention_mask is not None else None,
            )
            if gradient_checkpointing and torch.is_grad_enabled():
                # Per-chunk checkpoint: only the chunk's features are kept; its activations are recomputed.
                features.append(checkpoint(self._chunk_encoder, *args, use_reentrant=False))
            else:
                features.append(self._chunk_encoder(*args))
        features = torch.cat(features, dim=1)
        return features / features.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def text_features(self, input_ids: torch.Tensor, attention_mask=None, eos_index=None) -> torch.Tensor:
        """
        Frozen text features `(N, embed_dim)`, L2-normalised, of ordinary tokenised texts `input_ids` `(N, L)`: the
        backbone's own `get_text_features(input_ids, attention_mask)`, pooled at the last position whatever `L`.
        `eos_index` is accepted for the causal encoder's interface and has no effect: a bidirectional tower does not
        pool at EOS.
        """
        embeddings = self.text_model.embeddings
        per_call = max(1, self.config.text_chunk_tokens // input_ids.shape[1])
        features = []
        for start in range(0, input_ids.shape[0], per_call):
            ids = input_ids[start : start + per_call]
            hidden = embeddings.token_embedding(ids) + embeddings.position_embedding.weight[: ids.shape[1]]
            mask = attention_mask[start : start + per_call] if attention_mask is not None else None
            features.append(self._encode(hidden.to(self.text_dtype()), mask))
        features = torch.cat(features)
        return features / features.norm(dim=-1, keepdim=True)

    def compile(self, length_buckets=None, **compile_kwargs) -> None:
        """
        `torch.compile` of the chunk encoder (see `CoCoOpModel.compile_text_path`). Prompts all have the text
        context's length, so only the class count of a chunk varies (the last chunk): `length_buckets` have no
        meaning here and must be None.
        """
        if length_buckets is not None:
            raise ValueError(
                "length_buckets apply to causal text towers (CLIP, MetaCLIP 2), whose prompts end at their EOS; a "
                f"SigLIP-style tower encodes every prompt at its full {self.context_length} tokens: pass None."
            )
        compile_kwargs.setdefault("dynamic", True)
        self._chunk_encoder = torch.compile(self._encode_chunk, **compile_kwargs)

    def text_dtype(self) -> torch.dtype:
        """The dtype of the text weights: what its layers expect (autocast may still compute in another)."""
        return self.text_model.embeddings.token_embedding.weight.dtype

    # ------------------------------------------------------------------ encoding

    def _encode_chunk(self, ctx, input_ids, eos_index, name_length, context_start, attention_mask) -> torch.Tensor:
        """
        Unnormalised features `(batch, classes, embed_dim)` of the whole prompts of one chunk of classes: `ctx`
        `(batch, n_ctx, dim)` shared by the classes or `(1, classes, n_ctx, dim)` one per class.
        """
        classes = input_ids.shape[0]
        hidden, token_pos = prompt_embeddings(
            self.text_model.embeddings,
            ctx,
            input_ids,
            context_start,
            eos_index,
            name_length,
            self.config.n_ctx,
            self.config.class_token_position,
        )  # (batch, classes, L, dim)
        batch = hidden.shape[0]
        if attention_mask is not None:
            # The layout only permutes real tokens (context and name), so this equals the given mask; gathered all the
            # same, so that mask and tokens can never disagree.
            attention_mask = torch.gather(attention_mask, 1, token_pos).repeat(batch, 1)
        features = self._encode(hidden.flatten(0, 1).to(self.text_dtype()), attention_mask)
        return features.view(batch, classes, -1)

    def _encode(self, hidden: torch.Tensor, attention_mask=None) -> torch.Tensor:
        """
        Features `(prompts, embed_dim)` of token + position embeddings `hidden` `(prompts, L, dim)`: the text layers
        (padding keys masked where `attention_mask` `(prompts, L)` is 0, else every key seen), the last position,
        final layer norm, head. Only the last position is pooled, so the last layer runs its query, output
        projection and MLP on that token alone (its keys and values still cover every position).
        """
        mask = None
        if attention_mask is not None:
            mask = attention_mask.bool()[:, None, None, :]  # (prompts, 1, 1, L): key columns, as SDPA broadcasts
        layers = self.text_model.encoder.layers
        for i, layer in enumerate(layers):
            query, key, value = layer_qkv(layer, hidden)  # (prompts, heads, L, head_dim)
            if i == len(layers) - 1:
                query, hidden = query[:, :, -1:], hidden[:, -1:]
            attn = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=layer.self_attn.scale)
            hidden = finish_layer(layer, hidden, merge_heads(attn))
        return self.projection(self.text_model.final_layer_norm(hidden[:, 0]))
