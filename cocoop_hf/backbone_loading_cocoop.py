# Copyright 2025 The CoCoOp-HF Authors. Licensed under the Apache License, Version 2.0.
"""
Loading a backbone checkpoint, checked first: its own file because it needs both the backbone rows
(backbones_cocoop) and the checkpoint limits (limits_cocoop, which itself reads the backbone rows).

The modeling file imports this file, so it may import only torch, transformers and its sibling files.
"""

from transformers import PreTrainedModel

from .backbones_cocoop import backbone_model_type, backbone_of
from .limits_cocoop import check_clip_checkpoint


def load_backbone(name_or_path, revision: str | None = None, **kwargs) -> PreTrainedModel:
    """
    Load a dual-encoder checkpoint (Hub id or local folder) with the class its config.json names: `CLIPModel`,
    `MetaClip2Model`, `SiglipModel` or `Siglip2Model` (`from_pretrained(name_or_path, revision=revision, **kwargs)`).
    Its config is checked first (`limits_cocoop.check_clip_checkpoint`: size limits; a local folder's weights must
    hold what the config describes), before stock loading builds whatever the config asks for; an unsupported
    `model_type` is refused with the supported ones named.
    """
    config = check_clip_checkpoint(name_or_path, revision=revision, **kwargs)
    row = backbone_of(backbone_model_type(config))
    return row.model_class.from_pretrained(name_or_path, revision=revision, **kwargs)
