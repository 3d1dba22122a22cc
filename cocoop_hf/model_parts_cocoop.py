"""
The parts of a CoCoOpModel its config asks for, one small factory each: the prompt learner (CoOp / CoCoOp context and
meta-net, or the deep prompts of IVLP / MaPLe / PromptSRC), the prompt text encoder of the backbone's tower family,
the image path (the frozen vision tower, or the one with vision prompts) and the prompt text path. Each path is a
plain function of the model: no state of its own.

This file travels with the code of every saved folder (the modeling file imports it), so it may import only torch,
transformers and its sibling files.
"""

import torch

from .backbones_cocoop import backbone_of, image_features
from .class_set_cocoop import ClassPrompts
from .prompt_learner_cocoop import CoCoOpPromptLearner
from .prompt_learner_deep import DeepPromptLearner
from .text_encoder_bidirectional import BidirectionalPromptEncoder
from .text_encoder_causal import CausalPromptEncoder
from .text_encoder_deep import deep_prompt_text_features
from .vision_encoder_prompted import prompted_image_features


def prompt_encoder(backbone_model, config):
    """The prompt text encoder of the backbone's text-tower family (causal: CLIP, MetaCLIP 2; else SigLIP)."""
    if backbone_of(config.backbone_config).causal_text:
        return CausalPromptEncoder(backbone_model, config)
    return BidirectionalPromptEncoder(backbone_model, config)


def prompt_learner_for(config):
    """The trainable part the config asks for: deep prompts of both towers (IVLP, MaPLe, PromptSRC), else CoOp's /
    CoCoOp's context (+ meta-net)."""
    return DeepPromptLearner(config) if config.has_deep_prompts else CoCoOpPromptLearner(config)


def _plain_image_features(model, pixel_values: torch.Tensor, vision_inputs: dict) -> torch.Tensor:
    """The frozen vision tower's own features (no prompts)."""
    return image_features(model.clip, pixel_values, **vision_inputs)


def _prompted_image_features(model, pixel_values: torch.Tensor, vision_inputs: dict) -> torch.Tensor:
    """The vision tower with the prompt learner's vision prompts (IVLP, MaPLe, PromptSRC; CLIP-family: no extras)."""
    return prompted_image_features(
        model.clip,
        pixel_values,
        model.prompt_learner.vision_prompt_tensors(),
        gradient_checkpointing=model.gradient_checkpointing,
    )


def image_features_for(config):
    """`(model, pixel_values, vision_inputs) -> (batch, embed_dim)` unnormalised image features, as the config asks."""
    return _prompted_image_features if config.prompt_depth_vision > 0 else _plain_image_features


def _context_text_features(model, image_embeds, prompts: ClassPrompts) -> torch.Tensor:
    """CoCoOp / CoOp: the context (per image for CoCoOp) through the prompt text encoder, `(batch|1, classes, d)`."""
    if image_embeds is None and model.config.conditional:
        raise ValueError(
            "CoCoOp's context depends on the image: pass `image_embeds` (from get_image_features) to get_text_features."
        )
    # The meta-net reads the image feature in its own dtype: a half-precision backbone gives half-precision
    # features to a prompt learner kept in fp32 (`cast_frozen_clip`).
    dtype = model.prompt_learner.ctx.dtype
    ctx = model.prompt_learner(image_embeds.to(dtype) if image_embeds is not None else None)  # CSC: 4-d
    return model.text_encoder.prompt_features(ctx, prompts, gradient_checkpointing=model.gradient_checkpointing)


def _deep_text_features(model, image_embeds, prompts: ClassPrompts) -> torch.Tensor:
    """
    Deep text prompts (IVLP, MaPLe, PromptSRC): once per call for all classes, `(1, classes, d)` like CoOp's (they
    do not depend on the image; official CustomCLIP.forward encodes the prompts once per batch).
    """
    learner = model.prompt_learner  # its text prompts only: MaPLe's vision projections belong to the image path
    features = deep_prompt_text_features(
        model.clip,
        prompts.input_ids,
        prompts.eos_index,
        int(model.config.prompt_context_start),  # a right-padding tokenizer's fixed start (the config refuses None)
        learner.ctx,
        tuple(learner.text_prompts),
        chunk_tokens=model.config.text_chunk_tokens,
        gradient_checkpointing=model.gradient_checkpointing,
    )
    return (features / features.norm(dim=-1, keepdim=True)).unsqueeze(0)


def text_features_for(config):
    """`(model, image_embeds, prompts) -> (batch|1, classes, d)` normalised prompt text features, as the config asks."""
    return _deep_text_features if config.has_deep_prompts else _context_text_features
