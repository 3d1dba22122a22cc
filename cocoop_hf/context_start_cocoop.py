# Copyright 2025 The CoCoOp-HF Authors. Licensed under the Apache License, Version 2.0.
"""
Where each class prompt's context starts, checked against the model's config: one rule for the held class set
(class_set_cocoop) and for call-time prompts (model_inputs_cocoop).

The modeling file imports this file (through its siblings), so it may import only torch, transformers and its
sibling files.
"""

import torch


def agreed_context_start(context_start, eos_index: torch.Tensor, length: int, config) -> torch.Tensor:
    """
    Each prompt's first context position `(classes,)`: the prompts' own `context_start`, else
    `config.prompt_context_start` for every class. Prompts carrying their own `context_start` must agree with the
    config, which records where the model's prompts put the context (a fixed position for a right-padding tokenizer;
    None for a left-padding one, where it varies per class): a tokenizer padding on the other side (an adapter's
    base tokenizer, a user's), or a hand-edited config, would otherwise move the context silently (other logits).

    `context_start`: `(classes,)` long tensor or None; `eos_index`: `(classes,)`; `length`: the prompts' positions.
    """
    expected = getattr(config, "prompt_context_start", 1)
    if context_start is None:
        if expected is None:
            raise ValueError(
                "the class prompts carry no `context_start` and config.prompt_context_start is None (a left-padding "
                "tokenizer): build them with this model's processor or model.class_prompts(class_names)."
            )
        return torch.full_like(eos_index, int(expected))
    # Left padding ends every prompt at the last position; its start then varies per class, as recorded.
    left = bool((eos_index == length - 1).all())
    if (not left) if expected is None else bool((context_start != expected).any()):
        starts = sorted(set(context_start.tolist()))
        raise ValueError(
            f"the prompts put the first context token at {starts[:5]}"
            f"{' (left padding: a start per class)' if len(starts) > 1 else ''}, but the model's config says "
            f"prompt_context_start={expected!r} "
            f"({'a left-padding tokenizer' if expected is None else 'a right-padding tokenizer'}): use the "
            "tokenizer the model was trained with, on its padding side (tokenizer.padding_side), or correct "
            "config.prompt_context_start."
        )
    return context_start
