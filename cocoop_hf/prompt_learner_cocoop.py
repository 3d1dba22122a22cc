"""
The trainable part of a CoCoOp / CoOp model: the context vectors and, for CoCoOp, the meta-net; and the checks a
prompt learner's saved tensors must pass. Official CoCoOp `trainers/cocoop.py` / CoOp `trainers/coop.py`
PromptLearner (their `token_prefix` / `token_suffix` buffers are the class prompts, kept apart here).

This file travels with the code of every saved folder (the modeling file imports it), so it may import only torch,
transformers and its sibling files.
"""

import torch
from torch import nn

from .backbones_cocoop import backbone_of, embed_dim, text_width


class CoCoOpMetaNet(nn.Module):
    """Linear -> ReLU -> Linear from the image feature to one bias for the context (official `meta_net`)."""

    def __init__(self, config):
        super().__init__()
        vis_dim = embed_dim(config.backbone_config)  # the image feature's width: the joint space
        ctx_dim = text_width(config.backbone_config)
        self.linear1 = nn.Linear(vis_dim, vis_dim // config.meta_net_reduction)
        self.relu = nn.ReLU(inplace=False)
        self.linear2 = nn.Linear(vis_dim // config.meta_net_reduction, ctx_dim)

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.relu(self.linear1(image_embeds)))


class CoCoOpPromptLearner(nn.Module):
    """
    The trainable part: `n_ctx` context vectors and, for CoCoOp, the meta-net. With `class_specific_context` the
    context has one row per class, `(classes, n_ctx, dim)` (official CoOp `CSC`).
    """

    def __init__(self, config):
        super().__init__()
        shape = (config.n_ctx, text_width(config.backbone_config))
        if config.class_specific_context:
            # Official trainers/coop.py PromptLearner: CSC ctx_vectors = torch.empty(n_cls, n_ctx, ctx_dim).
            shape = (len(config.id2label), *shape)
        self.ctx = nn.Parameter(torch.empty(shape))
        self.meta_net = CoCoOpMetaNet(config) if config.conditional else None

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """
        Context per image, `(batch, n_ctx, dim)`; CoOp returns one shared context, `(1, n_ctx, dim)`, and CoOp with
        a class-specific context one per class, `(1, classes, n_ctx, dim)`.
        """
        if self.meta_net is None:
            return self.ctx.unsqueeze(0)
        bias = self.meta_net(image_embeds)  # (batch, dim)
        # Same bias on every context token: CoCoOp eq. (2); official PromptLearner.forward `ctx + bias`
        return self.ctx.unsqueeze(0) + bias.unsqueeze(1)  # (batch, n_ctx, dim)


def check_prompt_learner_state(prompt_learner: CoCoOpPromptLearner, config, state_dict: dict, source: str) -> dict:
    """
    `state_dict` (keys as in `prompt_learner.state_dict()`) checked for names and shapes, cast to the prompt learner's
    dtypes. Errors say why this model expects what it does.
    """
    expected = prompt_learner.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{source}: prompt-learner tensors do not match this model (conditional={config.conditional}, "
            f"n_ctx={config.n_ctx}, class_specific_context={config.class_specific_context}): missing "
            f"{missing}, unexpected {unexpected}."
        )
    for name, tensor in state_dict.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            shape = tuple(tensor.shape)
            why = _expected_shape(config, name, tuple(expected[name].shape))
            raise ValueError(f"{source}: tensor {name!r} has shape {shape}, {why}")
    return {name: tensor.to(expected[name].dtype) for name, tensor in state_dict.items()}


def _expected_shape(config, name: str, shape: tuple) -> str:
    """Why this model expects `shape` for prompt-learner tensor `name`, for error messages."""
    width = text_width(config.backbone_config)
    if name == "ctx":
        if config.class_specific_context:
            return (
                f"but this model needs {shape}: a class-specific context (class_specific_context=True), one "
                f"context per class ({shape[0]} classes in id2label), n_ctx={config.n_ctx}, text width {width}. "
                "A (n_ctx, width) tensor is a shared context: load it with class_specific_context=False."
            )
        return (
            f"but this {backbone_of(config.backbone_config).display_name} needs {shape} (n_ctx={config.n_ctx}, text width {width}); a (classes, n_ctx, width) "
            "tensor is a class-specific context: load it with class_specific_context=True and its class names."
        )
    joint = embed_dim(config.backbone_config)
    hidden = joint // config.meta_net_reduction
    return (
        f"but this model needs {shape}: its meta-net maps the image feature (projection_dim "
        f"{joint}) to {hidden} hidden units (meta_net_reduction="
        f"{config.meta_net_reduction}) and then to the text width {width}. "
        "Set meta_net_reduction to the value the tensors were trained with, or use the backbone they belong to."
    )
