# Copyright 2025 The CoCoOp-HF Authors. Licensed under the Apache License, Version 2.0.
"""
Whether a user's tokenizer can be a backbone's: one check for `CoCoOpModel.from_clip(..., tokenizer=)` and
`set_class_names(..., tokenizer=)`. Another backbone's tokenizer (CLIP's on MetaCLIP 2) gives ids past the text
tower's embedding table (an IndexError deep in the text path) or, with a larger table, meaningless logits silently.

The modeling file imports this file (through its siblings), so it may import only torch, transformers and its
sibling files.
"""

from .backbones_cocoop import backbone_of


def check_backbone_tokenizer(tokenizer, backbone_config) -> None:
    """
    Raise `ValueError` when `tokenizer` cannot be the tokenizer of the backbone described by `backbone_config`:

    - its ids must fit the text tower's vocabulary: `len(tokenizer) <= text_config.vocab_size` (as
      `CoCoOpProcessor.load_backbone_tokenizer` checks; a model's table may be padded beyond its tokenizer);
    - for a causal text tower, its EOS id must be `text_config.eos_token_id`: transformers pools the text features
      at that id (modeling_clip.py / modeling_metaclip_2.py, `CLIPTextTransformer.forward`), and the prompts end
      there. Except a "clip" backbone whose config says `eos_token_id` 2, the legacy OpenAI configs: transformers'
      modeling_clip.py pools at the highest id (argmax) there, which is CLIP's EOS.
    """
    row = backbone_of(backbone_config)
    text_config = backbone_config.text_config
    name = type(tokenizer).__name__
    size, vocab_size = len(tokenizer), text_config.vocab_size
    if size > vocab_size:
        raise ValueError(
            f"the tokenizer ({name}, {size} tokens) is not this {row.display_name} backbone's: its ids go past the "
            f"text tower's vocabulary of {vocab_size} tokens; pass the backbone's own tokenizer (or none: from_clip "
            "loads it)."
        )
    if not row.causal_text:
        return
    expected = getattr(text_config, "eos_token_id", None)
    if backbone_config.model_type == "clip" and expected == 2:
        return  # legacy OpenAI config: transformers pools at argmax (CLIP's EOS is its highest id)
    got = getattr(tokenizer, "eos_token_id", None)
    if got != expected:
        raise ValueError(
            f"the tokenizer ({name}) ends a text with token id {got!r} ({getattr(tokenizer, 'eos_token', None)!r}), "
            f"but this {row.display_name} backbone's text tower pools at its EOS id text_config.eos_token_id="
            f"{expected!r}: pass the backbone's own tokenizer (or none: from_clip loads it)."
        )
