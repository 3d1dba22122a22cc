"""
Loading a backbone checkpoint, checked first, or building it from its config with random weights: its own file
because it needs both the backbone rows (backbones_cocoop) and the checkpoint limits (limits_cocoop, which itself
reads the backbone rows).

The modeling file imports this file, so it may import only torch, transformers and its sibling files.
"""

import os

import torch
from transformers import PreTrainedModel
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

from .backbones_cocoop import backbone_model_type, backbone_of
from .limits_cocoop import _HUB_OPTIONS, check_clip_checkpoint


# The weight files `from_pretrained` looks for in a local folder (transformers' own names).
_WEIGHT_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)


def load_backbone(name_or_path, revision: str | None = None, **kwargs) -> PreTrainedModel:
    """
    Load a dual-encoder checkpoint (Hub id or local folder) with the class its config.json names: `CLIPModel`,
    `MetaClip2Model`, `SiglipModel` or `Siglip2Model` (`from_pretrained(name_or_path, revision=revision, **kwargs)`).
    Its config is checked first (`limits_cocoop.check_clip_checkpoint`: size limits; a local folder's weights must
    hold what the config describes), before stock loading builds whatever the config asks for; an unsupported
    `model_type` is refused with the supported ones named. A local folder with a config and no weight file (the
    shipped tiny CLIP) is refused with the way to build it with random weights named.
    """
    config = check_clip_checkpoint(name_or_path, revision=revision, **kwargs)
    check_folder_has_weights(name_or_path, kwargs.get("subfolder"))
    row = backbone_of(backbone_model_type(config))
    return row.model_class.from_pretrained(name_or_path, revision=revision, **kwargs)


def random_backbone(name_or_path, seed: int = 0, revision: str | None = None, **hub_kwargs) -> PreTrainedModel:
    """
    The backbone that the config.json of `name_or_path` (Hub id or local folder) describes, with random weights drawn
    from `seed` (the class its `model_type` names, as `load_backbone`): no weight file is read. The same seed gives
    the same weights, whatever else the caller's code draws: the draw runs on a fork of torch's CPU generator, so the
    caller's random state is neither used nor changed. Only the options that say where the config is
    (`cache_dir`, `subfolder`, `local_files_only`, ...) apply; a loading option (`dtype`, `device_map`, ...) has no
    weights to act on and is refused. Says nothing: the caller tells its user that the weights are random, in its own
    words (`CoCoOpModel.from_clip` warns once; the scripts print their machinery-demo note).
    """
    ignored = sorted(set(hub_kwargs) - set(_HUB_OPTIONS))
    if ignored:
        where = ", ".join(name for name in _HUB_OPTIONS if name != "revision")
        raise ValueError(
            f"random weights: {', '.join(ignored)} would act on loaded weights and there are none; the options that "
            f"apply are where the config is read from ({where}). Move the model afterwards (`.to(...)`) instead."
        )
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"random_init_seed must be an integer, got {seed!r} ({type(seed).__name__}).")
    config_dict = check_clip_checkpoint(name_or_path, weights=False, revision=revision, **hub_kwargs)
    row = backbone_of(backbone_model_type(config_dict))
    config = row.config_class.from_dict(config_dict)
    with torch.random.fork_rng(devices=[]):  # a CPU build: only the CPU generator is drawn from
        torch.manual_seed(seed)
        return row.model_class(config)


def check_folder_has_weights(name_or_path, subfolder: str | None = None) -> None:
    """
    A local backbone folder must hold one of the weight files `from_pretrained` reads (else transformers' OSError,
    which does not say that the folder is a config only, nor what to do with it): FileNotFoundError naming the folder
    and the way to build it with random weights. A Hub id passes (its files are the Hub's business, seen when loaded).
    Reads only the folder's file names: the scripts call it before they write anything.
    """
    folder = os.path.join(os.fspath(name_or_path), subfolder or "")
    if not os.path.isdir(folder):
        return
    if not any(os.path.isfile(os.path.join(folder, name)) for name in _WEIGHT_FILES):
        raise FileNotFoundError(
            f"{name_or_path} holds a backbone config but no weights ({SAFE_WEIGHTS_NAME} or {WEIGHTS_NAME}): "
            "CoCoOpModel.from_clip(..., random_init=True) (the scripts' flag: --random_init_clip) builds it from its "
            "config with random weights; or name a folder with weights."
        )
