"""
The trainable part of a deep-prompt model (IVLP, MaPLe, PromptSRC): the layer-0 text context, the text prompts of
the deeper text layers and the vision prompts (IVLP / PromptSRC: learned; MaPLe: projected from the text prompts).

Official multimodal-prompt-learning `trainers/independentVL.py` (IVLP: `ctx`, and in its `clip/model.py` the vision
`VPT` and each block's `VPT_shallow`), `trainers/maple.py` (`MultiModalPromptLearner`: `ctx`, `proj`,
`compound_prompts_text`, `compound_prompt_projections`) and PromptSRC `trainers/promptsrc.py` (IVLP's prompts). Where
the prompts enter the towers is the towers' business (`text_encoder_deep.py`, `vision_encoder_prompted.py`). This
file travels with the code of every saved folder (the modeling file imports it), so it may import only torch,
transformers and its sibling files.
"""

from typing import NamedTuple

import torch
from torch import nn

from .backbones_cocoop import text_width


class DeepPrompts(NamedTuple):
    """
    The prompts of one call: `ctx` (n_ctx, text width) for text layer 0; `text_prompts[l - 1]` (n_ctx, text width)
    for text layer l >= 1; `vision_prompts[l]` (n_vision, vision width) for vision layer l (l = 0: appended after the
    patches). Empty tuples where a tower has no prompts at that depth.
    """

    ctx: torch.Tensor
    text_prompts: tuple[torch.Tensor, ...]
    vision_prompts: tuple[torch.Tensor, ...]


class DeepPromptLearner(nn.Module):
    """
    Parameters (state-dict keys): `ctx` (n_ctx, text width); `text_prompts.{i}` (n_ctx, text width), i = 0..depth_text-2;
    IVLP / PromptSRC: `vision_prompts.{i}` (n_ctx_vision, vision width), i = 0..depth_vision-1; MaPLe:
    `vision_projections.{i}` Linear(text width -> vision width), i = 0..depth_vision-1 (i = 0 maps `ctx`, official
    `proj`; i >= 1 maps `text_prompts[i-1]`, official `compound_prompt_projections[i-1]`).

    Initialisation (`CoCoOpPreTrainedModel._init_weights`, as the official code): every prompt N(0, 0.02) (`ctx` from
    the `ctx_init` words by `init_context_from_words`); MaPLe's projection 0 PyTorch's default Linear init and
    projections 1.. copies of one Linear (official `_get_clones` deep-copies a single layer).
    """

    def __init__(self, config):
        super().__init__()
        backbone = config.backbone_config
        width = text_width(backbone)
        vision_width = backbone.vision_config.hidden_size  # widths from the backbone (official: 512 / 768 hard-coded)
        self.ctx = nn.Parameter(torch.empty(config.n_ctx, width))
        self.text_prompts = nn.ParameterList(
            [nn.Parameter(torch.empty(config.n_ctx, width)) for _ in range(config.prompt_depth_text - 1)]
        )
        self.vision_prompts = None
        self.vision_projections = None
        if config.vision_prompts_from_text:
            self.vision_projections = nn.ModuleList(
                [nn.Linear(width, vision_width) for _ in range(config.prompt_depth_vision)]
            )
        elif config.prompt_depth_vision > 0:
            self.vision_prompts = nn.ParameterList(
                [
                    nn.Parameter(torch.empty(config.vision_prompt_tokens, vision_width))
                    for _ in range(config.prompt_depth_vision)
                ]
            )

    def forward(self) -> DeepPrompts:
        return DeepPrompts(self.ctx, tuple(self.text_prompts), self.vision_prompt_tensors())

    def vision_prompt_tensors(self) -> tuple[torch.Tensor, ...]:
        """The vision prompts per layer (empty without vision prompts): the image path needs only these."""
        if self.vision_projections is not None:
            # MaPLe: official MultiModalPromptLearner.forward `self.proj(self.ctx)` and
            # `compound_prompt_projections[i](compound_prompts_text[i])`.
            sources = (self.ctx, *self.text_prompts)
            return tuple(project(source) for project, source in zip(self.vision_projections, sources, strict=False))
        if self.vision_prompts is not None:
            return tuple(self.vision_prompts)
        return ()


def check_deep_prompt_state(prompt_learner: DeepPromptLearner, config, state_dict: dict, source: str) -> dict:
    """
    `state_dict` (keys as in `prompt_learner.state_dict()`) checked for names and shapes, cast to the prompt learner's
    dtypes. Errors say what the config implies.
    """
    expected = prompt_learner.state_dict()
    missing = sorted(set(expected) - set(state_dict), key=_natural)
    unexpected = sorted(set(state_dict) - set(expected), key=_natural)
    if missing or unexpected:
        raise ValueError(
            f"{source}: prompt-learner tensors do not match this {config.method_name} model ({_implied(config)}): "
            f"missing {missing}, unexpected {unexpected}."
        )
    for name, tensor in state_dict.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(
                f"{source}: tensor {name!r} has shape {tuple(tensor.shape)}, but this {config.method_name} model needs "
                f"{tuple(expected[name].shape)} ({_implied(config)})."
            )
    return {name: tensor.to(expected[name].dtype) for name, tensor in state_dict.items()}


def _implied(config) -> str:
    backbone = config.backbone_config
    parts = [
        f"n_ctx={config.n_ctx}",
        f"prompt_depth_text={config.prompt_depth_text} (text_prompts.0..{config.prompt_depth_text - 2})"
        if config.prompt_depth_text > 1
        else "prompt_depth_text=1 (no text_prompts)",
        f"prompt_depth_vision={config.prompt_depth_vision}",
    ]
    if config.vision_prompts_from_text:
        parts.append(f"vision_projections.0..{config.prompt_depth_vision - 1} (MaPLe)")
    elif config.prompt_depth_vision > 0:
        parts.append(f"vision_prompts of {config.vision_prompt_tokens} tokens")
    parts.append(f"text width {text_width(backbone)}, vision width {backbone.vision_config.hidden_size}")
    return ", ".join(parts)


def _natural(key: str):
    """`text_prompts.10` after `text_prompts.9`: keys in layer order."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in key.split(".")]
