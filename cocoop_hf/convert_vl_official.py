"""
Import an official IVLP, MaPLe or PromptSRC checkpoint (Dassl `<name>/model.pth.tar-N` of
muzairkhattak/multimodal-prompt-learning or muzairkhattak/PromptSRC) into a deep-prompt [`CoCoOpModel`].

What those trainers save (read in their code): each registers its whole `CustomCLIP` with Dassl
(trainers/maple.py `register_model("MultiModalPromptLearner", self.model, ...)`, trainers/independentVL.py and
trainers/promptsrc.py `register_model("VLPromptLearner", self.model, ...)`), and Dassl's `save_model` writes
`self._models[name].state_dict()` (dassl/engine/trainer.py). So `state_dict` holds, besides the learned prompts, the
frozen CLIP (`image_encoder.*`, `text_encoder.*`, `logit_scale`), the class-dependent `prompt_learner.token_prefix`/
`token_suffix` (deleted by the official `load_model`) and, for PromptSRC, its frozen teacher
`prompt_learner.ZS_image_encoder.*` (trainers/promptsrc.py VLPromptLearner). The learned prompts are named by the
modified clip/model.py:

- text: `prompt_learner.ctx` (layer 0) and `text_encoder.transformer.resblocks.{i}.VPT_shallow` (layers
  1..depth-1; ResidualAttentionBlock_IVLP creates none in block 0); MaPLe: `prompt_learner.compound_prompts_text.{i}`
  for layer i+1 (trainers/maple.py MultiModalPromptLearner);
- vision (IVLP, PromptSRC): `image_encoder.VPT` (appended at the input, VisionTransformer) and
  `image_encoder.transformer.resblocks.{i}.VPT_shallow` (layers 1..depth-1);
- vision (MaPLe): the Linear maps of the text prompts, `prompt_learner.proj` (of `ctx`, layer 0) and
  `prompt_learner.compound_prompt_projections.{i}` (of `compound_prompts_text.{i}`, layer i+1).

They map onto `DeepPromptLearner`'s `ctx`, `text_prompts.{i}`, `vision_prompts.{i}` and
`vision_projections.{i}`; the method, token counts and depths come from the keys and shapes. The frozen CLIP is not
imported (the model runs the backbone it is built on; a log line says what was left out). A file whose keys cannot
tell IVLP from PromptSRC (only the prompts kept) needs `method`; a file that contradicts itself (a gap in the
per-layer indices, mixed widths, prompts for a layer its towers do not have) is refused with the key named.

The file is read as data, as `official_pickle.load_official_state_dict` reads CoOp/CoCoOp files (same reader: nothing
imported, called or written; bounded memory), and only the prompt tensors are built from its bytes: the frozen CLIP's
tensors (~300 MB at ViT-B/16 in fp16) are never read.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers.utils import logging

from .backbones_cocoop import backbone_config_from_dict, backbone_model_type
from .limits_cocoop import check_clip_checkpoint
from .modeling_cocoop import CoCoOpModel
from .pickle_records_cocoop import _describe, _Refused, _TensorRecord
from .torch_save_file_cocoop import _TorchSaveFile


__all__ = [
    "VL_METHODS",
    "OfficialVLCheckpoint",
    "convert_vl_state_dict",
    "from_official_vl_checkpoint",
    "is_official_vl_checkpoint",
    "read_official_vl_checkpoint",
]

logger = logging.get_logger(__name__)

VL_METHODS = ("ivlp", "maple", "promptsrc")
TITLES = {"ivlp": "IVLP", "maple": "MaPLe", "promptsrc": "PromptSRC"}
ARTICLES = {"ivlp": "an", "maple": "a", "promptsrc": "a"}
EXPECTED = (
    "an official IVLP / MaPLe / PromptSRC checkpoint (Dassl <name>/model.pth.tar-N of "
    "muzairkhattak/multimodal-prompt-learning or muzairkhattak/PromptSRC, written by torch.save)"
)
# configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml: TEXT_LOSS_WEIGHT 25, IMAGE_LOSS_WEIGHT 10; the KL term
# has no weight there (trainers/promptsrc.py adds L_SCL_logits as it is): 1. Training-time settings only; a converted
# model gets them so that it is a PromptSRC model (config.method_name) and goes on training like the official run.
PROMPTSRC_WEIGHTS = {"promptsrc_text_weight": 25.0, "promptsrc_image_weight": 10.0, "promptsrc_logits_weight": 1.0}

# A layer index: at most 4 digits (ViT-B/16 has 12 layers; a longer number is no official key and would make int()
# work on an arbitrarily long string), no leading zero (Module.state_dict never writes one).
_INDEX = r"(0|[1-9][0-9]{0,3})"
# file key -> (kind, groups); the kinds are the prompt tensors of clip/model.py and the trainers (module docstring).
_PROMPT_KEYS = {
    "ctx": re.compile(r"prompt_learner\.ctx"),
    "text_layer": re.compile(rf"text_encoder\.transformer\.resblocks\.{_INDEX}\.VPT_shallow"),
    "vision_input": re.compile(r"image_encoder\.VPT"),
    "vision_layer": re.compile(rf"image_encoder\.transformer\.resblocks\.{_INDEX}\.VPT_shallow"),
    "maple_proj": re.compile(r"prompt_learner\.proj\.(weight|bias)"),
    "maple_text": re.compile(rf"prompt_learner\.compound_prompts_text\.{_INDEX}"),
    "maple_projection": re.compile(rf"prompt_learner\.compound_prompt_projections\.{_INDEX}\.(weight|bias)"),
}
_MAPLE_KINDS = {"maple_proj", "maple_text", "maple_projection"}
_IVLP_KINDS = {"text_layer", "vision_input", "vision_layer"}
# Class-dependent token embeddings of the training classes: the official load_model deletes them; the model rebuilds
# its own from its class names.
_CLASS_BUFFERS = {"prompt_learner.token_prefix", "prompt_learner.token_suffix"}
_TEACHER_PREFIX = "prompt_learner.ZS_image_encoder."  # PromptSRC's frozen image encoder
_FROZEN_CLIP = re.compile(r"(image_encoder|text_encoder)\..+|logit_scale")
_TOWER_BLOCK = re.compile(rf"(image_encoder|text_encoder)\.transformer\.resblocks\.{_INDEX}\.")


@dataclass
class OfficialVLCheckpoint:
    """What an official IVLP / MaPLe / PromptSRC file holds, mapped onto `DeepPromptLearner`."""

    method: str  # "ivlp" | "maple" | "promptsrc"
    prompt_learner_state: dict  # DeepPromptLearner keys -> fp32 tensors
    config_kwargs: dict  # what the tensors imply: n_ctx, n_ctx_vision, depths, vision_prompts_from_text, ...
    source_keys: dict = field(default_factory=dict)  # DeepPromptLearner key -> the file's key
    dropped: tuple = ()  # keys of the frozen CLIP (and teacher) not imported
    class_buffers: tuple = ()  # token_prefix / token_suffix of the training classes: rebuilt from the class names
    why: str = ""  # what in the file told the method


# ---------------------------------------------------------------------------------------------- keys -> layout


def _layer_indices(found: dict, kind: str) -> dict[int, str]:
    """{index: file key} of a per-layer kind."""
    return {int(match.group(1)): key for key, match in found.get(kind, {}).items()}


def _check_contiguous(indices: dict[int, str], first: int, key_of, source: str, why: str) -> int:
    """The number of indices, which must be first, first+1, ...; a gap is refused naming the missing key."""
    for expected, index in enumerate(sorted(indices), start=first):  # sorted: no range() over a file's numbers
        if index != expected:
            raise ValueError(
                f"{source}: {key_of(expected)!r} is missing, but {indices[index]!r} is there: {why}, so a gap "
                "means a damaged or edited file."
            )
    return len(indices)


def _classify(keys, source: str) -> tuple[dict, list, list, list]:
    """Sort the file's keys: prompt tensors by kind, class buffers, frozen CLIP, frozen teacher; refuse the rest."""
    found: dict[str, dict] = {}
    buffers, frozen, teacher = [], [], []
    for key in keys:
        if not isinstance(key, str):
            raise ValueError(f"{source}: the state_dict has the key {_describe(key)}, not a tensor name.")
        for kind, pattern in _PROMPT_KEYS.items():
            match = pattern.fullmatch(key)
            if match:
                found.setdefault(kind, {})[key] = match
                break
        else:
            if key in _CLASS_BUFFERS:
                buffers.append(key)
            elif key.startswith(_TEACHER_PREFIX):
                teacher.append(key)
            elif "VPT" in key or key.startswith("prompt_learner.") or not _FROZEN_CLIP.fullmatch(key):
                # Not dropped as a frozen weight: a prompt-like name the official code does not write (e.g. a
                # VPT_shallow of block 0, an index of 5 digits), or a module of another method.
                raise ValueError(
                    f"{source}: the state_dict has {key!r}, which no official IVLP / MaPLe / PromptSRC trainer saves "
                    "(their keys: prompt_learner.ctx, prompt_learner.proj / compound_prompts_text / "
                    "compound_prompt_projections (MaPLe), image_encoder.VPT and *.transformer.resblocks.<i>.VPT_shallow "
                    "(IVLP, PromptSRC), the frozen CLIP's image_encoder.* / text_encoder.* / logit_scale)."
                )
            else:
                frozen.append(key)
    return found, buffers, frozen, teacher


def _method(found: dict, frozen: list, teacher: list, method: str | None, source: str) -> tuple[str, str]:
    """The trainer that wrote the file, from its keys; `method` where the keys cannot tell (else it must agree)."""
    if method is not None and method not in VL_METHODS:
        raise ValueError(f"method={method!r}: an official multimodal checkpoint is one of {', '.join(VL_METHODS)}.")
    maple = sorted(key for kind in _MAPLE_KINDS for key in found.get(kind, {}))
    ivlp = sorted(key for kind in _IVLP_KINDS for key in found.get(kind, {}))
    if maple and ivlp:
        raise ValueError(
            f"{source}: the state_dict has both MaPLe's {maple[0]!r} and IVLP's {ivlp[0]!r}: MaPLe's vision prompts "
            "are projections of its text prompts (trainers/maple.py), IVLP's and PromptSRC's are their own "
            "parameters (clip/model.py VPT); no official trainer saves both."
        )
    if maple and teacher:
        raise ValueError(
            f"{source}: the state_dict has MaPLe's {maple[0]!r} beside PromptSRC's frozen teacher {teacher[0]!r}: no "
            "official trainer saves both."
        )
    if maple:
        found_method, why = "maple", f"MaPLe's projections ({maple[0]!r}, trainers/maple.py)"
    elif teacher:
        found_method, why = "promptsrc", f"PromptSRC's frozen teacher ({teacher[0]!r}, trainers/promptsrc.py)"
    elif frozen:
        found_method = "ivlp"
        why = (
            f"the frozen CLIP saved without PromptSRC's frozen teacher {_TEACHER_PREFIX}*, which every PromptSRC "
            "checkpoint holds (trainers/promptsrc.py)"
        )
    else:
        found_method, why = None, ""
    if method is None:
        if found_method is None:
            raise ValueError(
                f"{source} holds only the learned prompts, and IVLP and PromptSRC save the same prompt keys "
                "(PromptSRC trains IVLP's prompts with other losses): pass method='ivlp' or method='promptsrc' "
                "(--method) for the trainer that wrote it."
            )
        return found_method, why
    if found_method is not None and method != found_method:
        raise ValueError(
            f"{source}: method={method!r} was passed, but the file is {ARTICLES[found_method]} {TITLES[found_method]} "
            f"checkpoint (told by {why}): "
            "drop the argument or use the matching checkpoint."
        )
    if found_method is None and method == "maple":
        raise ValueError(
            f"{source}: method='maple' was passed, but the file has no 'prompt_learner.proj.weight' (MaPLe's "
            "projection of its context to the vision tower, trainers/maple.py): it holds IVLP / PromptSRC prompts."
        )
    return method, why or f"method={method!r} as given (IVLP and PromptSRC save the same prompt keys)"


def _tower_depths(frozen: list) -> dict[str, int]:
    """Layers of each frozen tower the file holds ({'text_encoder': 12, ...}; a tower it does not hold is absent)."""
    blocks: dict[str, set] = {}
    for key in frozen:
        match = _TOWER_BLOCK.match(key)
        if match:
            blocks.setdefault(match.group(1), set()).add(int(match.group(2)))
    return {tower: len(indices) for tower, indices in blocks.items()}


# ---------------------------------------------------------------------------------------------- tensors -> model keys


def _shape_error(source, key, tensor, expected, why) -> ValueError:
    return ValueError(f"{source}: {key!r} has shape {tuple(tensor.shape)} where {expected} is needed: {why}.")


def _nonempty_2d(source: str, key: str, tensor: torch.Tensor) -> None:
    if tensor.dim() != 2 or 0 in tensor.shape:
        raise ValueError(
            f"{source}: {key!r} has shape {tuple(tensor.shape)}, not (tokens, width) with at least one token: the "
            "official prompts are 2-D (clip/model.py, trainers/*.py)."
        )


def convert_vl_state_dict(
    state_dict: dict, method: str | None = None, source: str = "checkpoint", backbone_config=None
) -> OfficialVLCheckpoint:
    """
    Map the state dict of an official IVLP / MaPLe / PromptSRC checkpoint (the file's keys and tensors) onto
    `DeepPromptLearner`'s keys (fp32 tensors) and the config fields its tensors imply. `method`: needed only where
    the keys cannot tell (IVLP vs PromptSRC with the frozen CLIP stripped); otherwise it must agree.
    `backbone_config` (the CLIP it is to run on): widths and depths are checked against it, naming the file's key.
    """
    return _convert(state_dict, lambda key, value: value, method, source, backbone_config)


def _convert(state_dict, materialize, method, source, backbone_config) -> OfficialVLCheckpoint:
    found, buffers, frozen, teacher = _classify(state_dict, source)
    if "ctx" not in found:
        shown = sorted(state_dict)[:10]
        raise ValueError(
            f"{source}: the state_dict has no 'prompt_learner.ctx', the text context every official IVLP / MaPLe / "
            f"PromptSRC prompt learner has (found {shown}{' ...' if len(state_dict) > 10 else ''})."
        )
    method, why = _method(found, frozen, teacher, method, source)
    towers = _tower_depths(frozen)

    def tensor(key):
        return materialize(key, state_dict[key])

    ctx = tensor("prompt_learner.ctx")
    if ctx.dim() == 3:
        raise ValueError(
            f"{source}: 'prompt_learner.ctx' has shape {tuple(ctx.shape)}, a class-specific context, which the "
            "official IVLP / MaPLe / PromptSRC trainers never learn (one (n_ctx, width) context)."
        )
    _nonempty_2d(source, "prompt_learner.ctx", ctx)
    n_ctx, width = ctx.shape
    converted, origin = {"ctx": ctx}, {"ctx": "prompt_learner.ctx"}

    # Text layers 1..depth-1: IVLP / PromptSRC in the text blocks (clip/model.py ResidualAttentionBlock_IVLP, block i
    # replaces positions 1..N with its VPT_shallow), MaPLe in the prompt learner (compound_prompts_text[i] at block
    # i+1, ResidualAttentionBlock_MaPLe's counter).
    if method == "maple":
        text_keys = _layer_indices(found, "maple_text")
        count = _check_contiguous(
            text_keys, 0, lambda i: f"prompt_learner.compound_prompts_text.{i}", source,
            "MaPLe learns one text prompt per layer below its depth (trainers/maple.py compound_prompts_text)",
        )  # fmt: skip
        text_layers = {i + 1: text_keys[i] for i in range(count)}
    else:
        text_keys = _layer_indices(found, "text_layer")
        if 0 in text_keys:
            raise ValueError(
                f"{source}: {text_keys[0]!r}: block 0 of the official text tower has no VPT_shallow (clip/model.py "
                "ResidualAttentionBlock_IVLP, `if i != 0`); layer 0's prompt is 'prompt_learner.ctx'."
            )
        count = _check_contiguous(
            text_keys, 1, lambda i: f"text_encoder.transformer.resblocks.{i}.VPT_shallow", source,
            "the official text tower prompts every layer below its depth (clip/model.py Transformer, prompts_needed)",
        )  # fmt: skip
        text_layers = dict(text_keys)
    for layer, key in sorted(text_layers.items()):
        prompt = tensor(key)
        if tuple(prompt.shape) != (n_ctx, width):
            raise _shape_error(
                source, key, prompt, (n_ctx, width),
                "every text prompt has the shape of 'prompt_learner.ctx' (the same N_CTX tokens of the text width)",
            )  # fmt: skip
        converted[f"text_prompts.{layer - 1}"], origin[f"text_prompts.{layer - 1}"] = prompt, key
    depth_text = 1 + len(text_layers)

    kwargs = {
        "n_ctx": int(n_ctx),
        "conditional": False,
        "class_specific_context": False,
        "prompt_depth_text": depth_text,
    }
    vision_width, deepest_vision = None, None
    if method == "maple":
        for part in ("weight", "bias"):
            if f"prompt_learner.proj.{part}" not in state_dict:
                raise ValueError(
                    f"{source}: 'prompt_learner.proj.{part}' is missing: MaPLe maps its context to the vision tower "
                    "with one Linear layer (trainers/maple.py MultiModalPromptLearner.proj)."
                )
        projection_keys = _layer_indices(found, "maple_projection")
        parts: dict[int, set] = {}
        for match in found.get("maple_projection", {}).values():
            parts.setdefault(int(match.group(1)), set()).add(match.group(2))
        count = _check_contiguous(
            projection_keys, 0, lambda i: f"prompt_learner.compound_prompt_projections.{i}.weight", source,
            "MaPLe has one projection per text prompt (trainers/maple.py compound_prompt_projections)",
        )  # fmt: skip
        if count != len(text_layers):
            raise ValueError(
                f"{source}: {len(text_layers)} 'prompt_learner.compound_prompts_text.<i>' but {count} "
                "'prompt_learner.compound_prompt_projections.<i>': MaPLe has one projection per deep text prompt "
                "(trainers/maple.py), so the file is damaged or edited."
            )
        prefixes = ["prompt_learner.proj"] + [f"prompt_learner.compound_prompt_projections.{i}" for i in range(count)]
        for index, prefix in enumerate(prefixes):
            if index and parts[index - 1] != {"weight", "bias"}:
                missing = ({"weight", "bias"} - parts[index - 1]).pop()
                raise ValueError(
                    f"{source}: '{prefix}.{missing}' is missing: each MaPLe projection is a Linear layer."
                )
            weight, bias = tensor(f"{prefix}.weight"), tensor(f"{prefix}.bias")
            if weight.dim() != 2 or weight.shape[1] != width or 0 in weight.shape:
                raise _shape_error(
                    source, f"{prefix}.weight", weight, f"(vision width, {width})",
                    f"a MaPLe projection maps the text width {width} of 'prompt_learner.ctx' to the vision width",
                )  # fmt: skip
            if vision_width is None:
                vision_width = int(weight.shape[0])
            if weight.shape[0] != vision_width:
                raise _shape_error(
                    source, f"{prefix}.weight", weight, (vision_width, width),
                    "every MaPLe projection maps to the same vision width (that of 'prompt_learner.proj.weight')",
                )  # fmt: skip
            if tuple(bias.shape) != (vision_width,):
                raise _shape_error(source, f"{prefix}.bias", bias, (vision_width,), "the bias of its Linear layer")
            for part, value in (("weight", weight), ("bias", bias)):
                converted[f"vision_projections.{index}.{part}"] = value
                origin[f"vision_projections.{index}.{part}"] = f"{prefix}.{part}"
        # MaPLe prompts both towers to the same depth, the vision prompts being the projected text prompts.
        kwargs.update(prompt_depth_vision=depth_text, vision_prompts_from_text=True, n_ctx_vision=None)
        deepest_vision = prefixes[-1] + ".weight"
    else:
        vision_keys = _layer_indices(found, "vision_layer")
        if 0 in vision_keys:
            raise ValueError(
                f"{source}: {vision_keys[0]!r}: block 0 of the official vision tower has no VPT_shallow (clip/model.py "
                "ResidualAttentionBlock_IVLP, `if i != 0`); layer 0's prompts are 'image_encoder.VPT'."
            )
        if vision_keys and "vision_input" not in found:
            raise ValueError(
                f"{source}: 'image_encoder.VPT' is missing, but {sorted(vision_keys.values())[0]!r} is there: the "
                "official vision tower with prompts always has its input prompts (clip/model.py VisionTransformer)."
            )
        layers = {}
        if "vision_input" in found:
            _check_contiguous(
                vision_keys, 1, lambda i: f"image_encoder.transformer.resblocks.{i}.VPT_shallow", source,
                "the official vision tower prompts every layer below its depth (clip/model.py Transformer)",
            )  # fmt: skip
            layers = {0: "image_encoder.VPT", **vision_keys}
        n_ctx_vision = None
        for layer, key in sorted(layers.items()):
            prompt = tensor(key)
            _nonempty_2d(source, key, prompt)
            if n_ctx_vision is None:
                n_ctx_vision, vision_width = int(prompt.shape[0]), int(prompt.shape[1])
            if tuple(prompt.shape) != (n_ctx_vision, vision_width):
                raise _shape_error(
                    source, key, prompt, (n_ctx_vision, vision_width),
                    "every vision prompt has the shape of 'image_encoder.VPT' (N_CTX_VISION tokens of the vision width)",
                )  # fmt: skip
            converted[f"vision_prompts.{layer}"], origin[f"vision_prompts.{layer}"] = prompt, key
            deepest_vision = key
        kwargs.update(prompt_depth_vision=len(layers), n_ctx_vision=n_ctx_vision, vision_prompts_from_text=False)

    deepest_text = text_layers[max(text_layers)] if text_layers else "prompt_learner.ctx"
    _check_depths(source, kwargs, towers, backbone_config, deepest_text, deepest_vision)
    _check_widths(source, backbone_config, width, vision_width, deepest_vision)
    dropped = tuple(frozen + teacher)
    converted = {key: value.float() for key, value in converted.items()}
    return OfficialVLCheckpoint(method, converted, kwargs, origin, dropped, tuple(buffers), why)


def _check_depths(source, kwargs, towers, backbone_config, deepest_text, deepest_vision) -> None:
    """Prompts for a layer the file's own towers, or the target CLIP's, do not have: refused naming the deepest key."""
    limits = []
    if "text_encoder" in towers:
        limits.append(("text", towers["text_encoder"], "the file's own text tower", deepest_text))
    if "image_encoder" in towers and deepest_vision is not None:
        limits.append(("vision", towers["image_encoder"], "the file's own vision tower", deepest_vision))
    if backbone_config is not None:
        limits.append(("text", backbone_config.text_config.num_hidden_layers, "the CLIP given", deepest_text))
        if deepest_vision is not None:
            vision_layers = backbone_config.vision_config.num_hidden_layers
            limits.append(("vision", vision_layers, "the CLIP given", deepest_vision))
    for tower, layers, where, key in limits:
        depth = kwargs[f"prompt_depth_{tower}"]
        if depth > layers:
            raise ValueError(
                f"{source}: {key!r} prompts {tower} layer {depth - 1}, but {where} has {layers} {tower} layers "
                f"(prompt depth {depth} > {layers}): use the CLIP the checkpoint was trained on."
            )


def _check_widths(source, backbone_config, width, vision_width, deepest_vision) -> None:
    if backbone_config is None:
        return
    text_hidden = backbone_config.text_config.hidden_size
    if width != text_hidden:
        raise ValueError(
            f"{source}: 'prompt_learner.ctx' has text width {width}, but the CLIP given has text width {text_hidden} "
            "(ViT-B/16: 512): use the CLIP the checkpoint was trained on."
        )
    vision_hidden = backbone_config.vision_config.hidden_size
    if vision_width is not None and vision_width != vision_hidden:
        raise ValueError(
            f"{source}: {deepest_vision!r} has vision width {vision_width}, but the CLIP given has vision width "
            f"{vision_hidden} (ViT-B/16: 768): use the CLIP the checkpoint was trained on."
        )


# ---------------------------------------------------------------------------------------------- the file


def _state_dict_of(obj) -> dict | None:
    """The state dict of a Dassl checkpoint ({"state_dict": ...}) or of a bare state dict; None if neither."""
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    return obj if isinstance(obj, dict) else None


def is_official_vl_checkpoint(checkpoint_path) -> bool:
    """
    Whether a file is laid out like an official multimodal checkpoint (the keys of a whole `CustomCLIP`:
    `prompt_learner.*`, `image_encoder.*`, `text_encoder.*`) rather than a CoOp/CoCoOp prompt learner (`ctx`, ...).
    Reads the file's pickle as data only (no tensor is built); an unreadable file answers False (the CoOp/CoCoOp
    reader then says what is wrong with it).
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        return False
    try:
        with _TorchSaveFile(path) as file:
            state_dict = _state_dict_of(file.obj)
    except _Refused:
        return False
    if state_dict is None or "ctx" in state_dict:
        return False
    prefixes = ("prompt_learner.", "image_encoder.", "text_encoder.")
    return any(isinstance(key, str) and key.startswith(prefixes) for key in state_dict)


def read_official_vl_checkpoint(
    checkpoint_path, method: str | None = None, backbone_config=None
) -> OfficialVLCheckpoint:
    """
    Read an official IVLP / MaPLe / PromptSRC checkpoint as data (see the module docstring) and map it
    (`convert_vl_state_dict`). Only the prompt tensors are built from the file; the frozen CLIP is named, not read.
    """
    path = Path(checkpoint_path)
    source = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint {source!r} does not exist; expected {EXPECTED}.")
    try:
        with _TorchSaveFile(path) as file:
            state_dict = _state_dict_of(file.obj)
            if state_dict is None:
                found = _describe(file.obj)
                raise ValueError(
                    f"{source!r} is not a multimodal prompt checkpoint: expected a dict with 'state_dict' (Dassl's "
                    f"model.pth.tar-N) or a state dict, found {found}."
                )

            def materialize(key, value):
                if not isinstance(value, _TensorRecord):
                    raise ValueError(f"{source!r}: state_dict entry {key!r} is {_describe(value)}, not a tensor.")
                return file.tensor(value)

            checkpoint = _convert(state_dict, materialize, method, source, backbone_config)
            not_loaded = file.not_loaded
    except _Refused as error:
        raise OSError(f"cannot read official checkpoint {source!r}: {error}; expected {EXPECTED}.") from None
    if not_loaded:
        shown = sorted(not_loaded)
        logger.info(
            "%s: not loaded (objects of the training state, never imported or called): %s%s",
            source,
            ", ".join(shown[:30]),
            f" and {len(shown) - 30} more" if len(shown) > 30 else "",
        )
    return checkpoint


# ---------------------------------------------------------------------------------------------- the model


def clip_base_config(clip_name_or_path, revision, clip_kwargs, methods: str = "IVLP / MaPLe / PromptSRC"):
    """
    The base CLIP's config, read before any weights; another backbone is refused: official checkpoints of `methods`
    hold prompts learned on OpenAI's CLIP (the official code is CLIP-only). Both converters check their base here.
    """
    config = check_clip_checkpoint(clip_name_or_path, weights=False, revision=revision, **(clip_kwargs or {}))
    model_type = backbone_model_type(config)
    if model_type != "clip":
        raise ValueError(
            f"{clip_name_or_path} is a {model_type!r} checkpoint, but official {methods} checkpoints hold prompts "
            "learned on OpenAI's CLIP (the official code is CLIP-only): they mean nothing to another backbone. "
            "Convert onto the CLIP the run used (e.g. openai/clip-vit-base-patch16)."
        )
    return backbone_config_from_dict(config) if isinstance(config, dict) else config


def merge_inferred_options(config_kwargs: dict, inferred: dict, source: str) -> None:
    """`config_kwargs` += the options a checkpoint's tensors imply; a passed value that contradicts them is refused
    (both converters: CoOp / CoCoOp and IVLP / MaPLe / PromptSRC)."""
    for key, value in inferred.items():
        if key in config_kwargs and config_kwargs[key] != value:
            raise ValueError(
                f"{source}: {key}={config_kwargs[key]!r} was passed, but the checkpoint's tensors imply "
                f"{key}={value!r}: drop the argument or use the matching checkpoint."
            )
        config_kwargs[key] = value


def from_official_vl_checkpoint(
    checkpoint_path,
    clip_name_or_path,
    class_names,
    method: str | None = None,
    revision=None,
    tokenizer=None,
    clip_kwargs=None,
    model_class=None,
    **config_kwargs,
):
    """
    Build a deep-prompt [`CoCoOpModel`] (or `model_class`) on `clip_name_or_path` for `class_names` with the prompts of
    an official IVLP / MaPLe / PromptSRC checkpoint. The method, `n_ctx`, `n_ctx_vision` and both prompt depths come
    from the file's keys and shapes; a value in `config_kwargs` that contradicts them is an error. `method` is needed
    only for a file that holds the prompts alone (IVLP and PromptSRC then look the same). `ctx_init` is not stored in
    a checkpoint: it defaults to the official recipes' "a photo of a" for up to 4 context tokens (the trainers use
    CTX_INIT only then: `if ctx_init and n_ctx <= 4`; MaPLe's 2 tokens learn "a photo" and keep "of a") and to
    "X X ... X" otherwise. A PromptSRC file gets the official loss weights (25, 10, 1) unless given.
    """
    model_class = CoCoOpModel if model_class is None else model_class
    source = str(checkpoint_path)
    backbone_config = clip_base_config(clip_name_or_path, revision, clip_kwargs)
    checkpoint = read_official_vl_checkpoint(checkpoint_path, method=method, backbone_config=backbone_config)
    inferred = checkpoint.config_kwargs
    merge_inferred_options(config_kwargs, inferred, source)
    position = config_kwargs.get("class_token_position", "end")
    if position != "end":
        raise ValueError(
            f"{source}: {ARTICLES[checkpoint.method]} {TITLES[checkpoint.method]} checkpoint was trained with the class name at the end of the "
            f"prompt (the official trainers build '[SOS] ctx {{name}}.' only), but class_token_position={position!r} "
            "was passed: drop it."
        )
    if checkpoint.method == "promptsrc":
        for key, value in PROMPTSRC_WEIGHTS.items():
            config_kwargs.setdefault(key, value)
    if "ctx_init" not in config_kwargs:
        config_kwargs["ctx_init"] = "a photo of a" if inferred["n_ctx"] <= 4 else None
    elif config_kwargs["ctx_init"] is not None and inferred["n_ctx"] > 4:
        raise ValueError(
            f"{source}: ctx_init={config_kwargs['ctx_init']!r} was passed, but the checkpoint has {inferred['n_ctx']} "
            "context tokens: the official trainers use CTX_INIT only for up to 4 (`if ctx_init and n_ctx <= 4`) and "
            "otherwise prompt with 'X X ... X'; drop ctx_init."
        )
    model = model_class.from_clip(
        clip_name_or_path,
        class_names,
        revision=revision,
        tokenizer=tokenizer,
        clip_kwargs=clip_kwargs,
        **config_kwargs,
    )
    model.load_prompt_learner_state(checkpoint.prompt_learner_state, source=source)
    if checkpoint.dropped:
        groups = {
            _TEACHER_PREFIX + "*" if key.startswith(_TEACHER_PREFIX) else key.split(".")[0]
            for key in checkpoint.dropped
        }
        logger.info(
            "%s: not imported: %d tensors of the frozen CLIP the official trainer saves with its prompts (%s); the "
            "model runs the weights of %s.",
            source,
            len(checkpoint.dropped),
            ", ".join(sorted(groups)),
            clip_name_or_path,
        )
    if checkpoint.class_buffers:
        # As the official load_model, which deletes them: token embeddings of the training classes' prompts.
        logger.info(
            "%s: not imported: %s (the training classes' prompt tokens; the model builds its own from its class names).",
            source,
            ", ".join(checkpoint.class_buffers),
        )
    logger.info(
        "Imported %s as %s (told by %s): n_ctx=%d, n_ctx_vision=%s, text depth %d, vision depth %d; onto %s for %d "
        "classes.",
        source,
        TITLES[checkpoint.method],
        checkpoint.why,
        inferred["n_ctx"],
        inferred["n_ctx_vision"],
        inferred["prompt_depth_text"],
        inferred["prompt_depth_vision"],
        clip_name_or_path,
        len(model.class_names),
    )
    return model
