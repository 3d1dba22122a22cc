"""
Bounds on what a config may ask for, checked before anything is built from it, and bounded descriptions of a user's
values for error messages. Reads configs as data (objects or config.json dicts), builds nothing: `configuration_cocoop.py`
and the training scripts use it; the backbone rows (which towers, which fields) come from `backbones_cocoop.py`.
"""

import functools
import itertools
import json
import math
import os
from collections.abc import Mapping

from transformers import PretrainedConfig

from .backbones_cocoop import backbone_of


# A config.json of a few hundred bytes can describe a model of any size, and stock transformers builds it before a
# weight is read (`num_hidden_layers: 100000` builds layers for minutes; `num_labels: 10**9` fills a dict). These
# bounds are checked first. Each is generous for every public CLIP-like backbone: ViT-bigG/14 (48 layers, widths
# 1664 / 1280, MLP 8192 / 5120, text context 77, vocabulary 49,408), SigLIP so400m (27 layers, width 1152, MLP 4304,
# images up to 512 px) and SigLIP 2 (vocabulary 256,000), MetaCLIP 2 (vocabulary ~900k), Long-CLIP (context 248).
BACKBONE_LIMITS = {
    "num_hidden_layers": 64,
    "hidden_size": 8192,
    "intermediate_size": 32768,
    "num_attention_heads": 128,
    "max_position_embeddings": 1024,  # text tower only
    "vocab_size": 1_000_000,  # text tower only
    "image_size": 1024,  # vision tower only
    "patch_size": 1024,  # vision tower only
    "num_channels": 16,  # vision tower only
}
MAX_PROJECTION_DIM = 8192
# (image_size // patch_size) ** 2 patches, each a position embedding and a token of every vision layer: 576 for
# ViT-L/14 at 336 px, 1024 for SigLIP at 512 px / 16.
MAX_PATCHES = 4096
# Classes of one model (id2label, num_labels): ImageNet-21k, the largest class set in common use, has 21,843; every
# class is a prompt the text tower encodes, so the count sizes the work of each forward.
MAX_CLASSES = 100_000
# The whole CLIP a config describes: each per-field limit is generous, so together they still allow a model of ~10^11
# parameters (64 layers of width 8192 in both towers). The largest public CLIP, ViT-bigG/14, has ~2.5 billion
# parameters; twice that bounds every real backbone and still refuses a config that would take minutes and hundreds
# of GB to build (random weights are built from the config alone, so this is checked before any build).
MAX_CLIP_PARAMETERS = 5_000_000_000
_TOWER_FIELDS = {
    "text_config": ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                    "max_position_embeddings", "vocab_size"),
    "vision_config": ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "image_size",
                      "patch_size", "num_channels"),
}  # fmt: skip


def check_class_count(count, field: str, mapping: bool = False) -> None:
    """Refuse a class count above MAX_CLASSES (or not a count) before anything is sized by it. `mapping`: the count
    is the length of `field` (id2label), said as "holds N classes" rather than shown as a number the user never wrote."""
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_CLASSES:
        given = f"it holds {count:,} classes" if mapping else f"got {describe_value(count)}"
        raise ValueError(
            f"{field} must hold at most {MAX_CLASSES:,} classes (ImageNet-21k has 21,843), {given}: every class is "
            "a prompt the model encodes, so the count bounds the work."
        )


def _field(config, name, default=None):
    """A setting of a config object or of its dict (config.json's form)."""
    return config.get(name, default) if isinstance(config, Mapping) else getattr(config, name, default)


def _model_type(config) -> str:
    """The backbone `model_type` of a config object or dict (config.json saved before backbones: CLIP)."""
    model_type = _field(config, "model_type") or "clip"
    backbone_of(model_type)  # one clear error naming the supported backbones
    return model_type


@functools.cache
def _tower_defaults(model_type: str, tower: str) -> dict:
    """
    The default size fields of a tower's config class. Read from its dataclass fields, not by building a default
    config: transformers' SiglipTextConfig() defaults to CLIP's bos/eos ids (49406/49407) past its own vocabulary
    and warns about them at every build.
    """
    config_class = backbone_of(model_type).config_class.sub_configs[tower]
    fields = getattr(config_class, "__dataclass_fields__", None)
    if fields is not None:
        defaults = {name: field.default for name, field in fields.items() if isinstance(field.default, (int, float))}
        if all(name in defaults for name in _tower_fields(model_type, tower)):
            return defaults
    return config_class().to_dict()


def _tower_fields(model_type: str, tower: str) -> tuple[str, ...]:
    """The size fields of a tower: SigLIP 2's vision tower has `num_patches` (variable resolution) for `image_size`."""
    if tower == "vision_config" and model_type == "siglip2":
        return tuple(name if name != "image_size" else "num_patches" for name in _TOWER_FIELDS[tower])
    return _TOWER_FIELDS[tower]


def _towers(clip_config, where: str) -> dict:
    """The text and vision sub-configs (object or dict; missing: the backbone's defaults), refused if neither."""
    model_type = _model_type(clip_config)
    towers = {}
    for tower in _TOWER_FIELDS:
        config = _field(clip_config, tower)
        if config is not None and not isinstance(config, (Mapping, PretrainedConfig)):
            raise ValueError(
                f"`{where}{tower}` must be a mapping of {backbone_of(model_type).display_name} settings, got "
                f"{describe_value(config)}."
            )
        defaults = _tower_defaults(model_type, tower)
        towers[tower] = {
            name: _field(config or {}, name, defaults.get(name)) for name in _tower_fields(model_type, tower)
        }
        towers[tower]["config"] = config or {}
    if not backbone_of(model_type).causal_text:  # SigLIP: the text head's width, hidden_size when unset
        text = towers["text_config"]
        projection = _field(text["config"], "projection_size", None)
        text["projection_size"] = text["hidden_size"] if projection is None else projection
        vision = towers["vision_config"]
        vision["vision_use_head"] = _field(vision["config"], "vision_use_head", True)
    return towers


def check_backbone_config(clip_config, source: str = "clip_config") -> None:
    """
    Refuse a backbone config (a `CLIPConfig`, `MetaClip2Config`, `SiglipConfig` or `Siglip2Config`, or its dict as in
    config.json, checked before the config class is built from it) beyond BACKBONE_LIMITS, MAX_PATCHES or
    MAX_CLASSES, or whose image is smaller than a patch: a tiny file must not buy a huge model, and the check costs
    nothing next to building one. `source` names it in the message ("" for none).
    """
    where = f"{source}." if source else ""
    model_type = _model_type(clip_config)
    towers = _towers(clip_config, where)
    for name, config in (
        (source or "the config", clip_config),
        *((f"{where}{tower}", values["config"]) for tower, values in towers.items()),
    ):
        # transformers fills `id2label` with num_labels names: bound both before a config is built.
        if _field(config, "num_labels") is not None:
            check_class_count(_field(config, "num_labels"), f"`{name}.num_labels`")
        if isinstance(_field(config, "id2label"), Mapping):
            check_class_count(len(_field(config, "id2label")), f"`{name}.id2label`", mapping=True)
    for tower, values in towers.items():
        for name in _tower_fields(model_type, tower):
            value, limit = values[name], BACKBONE_LIMITS.get(name, MAX_PATCHES)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
                why = ""
                if isinstance(value, int) and not isinstance(value, bool) and value > limit:
                    why = (
                        ": the limit is generous for every public CLIP (ViT-bigG, SigLIP, MetaCLIP); a larger value "
                        "would build a huge model before any weight is read"
                    )
                raise ValueError(
                    f"`{where}{tower}.{name}` must be an integer from 1 to {limit:,}, got {describe_value(value)}{why}."
                )
        if values["hidden_size"] % values["num_attention_heads"]:
            raise ValueError(
                f"`{where}{tower}.hidden_size` ({values['hidden_size']}) must be a multiple of num_attention_heads "
                f"({values['num_attention_heads']}): each attention head takes an equal share of the width."
            )
        if tower == "vision_config" and model_type != "siglip2":
            image, patch = values["image_size"], values["patch_size"]
            if patch > image or (image // patch) ** 2 > MAX_PATCHES:
                raise ValueError(
                    f"`{where}vision_config`: image_size {image} with patch_size {patch} must give 1 to "
                    f"{MAX_PATCHES:,} patches (image_size >= patch_size, (image_size // patch_size)^2 <= "
                    f"{MAX_PATCHES:,}; e.g. 224 and 16)."
                )
    if backbone_of(model_type).causal_text:
        projection_field, projection = "projection_dim", _field(clip_config, "projection_dim", 512)
    else:
        projection_field, projection = "text_config.projection_size", towers["text_config"]["projection_size"]
    if isinstance(projection, bool) or not isinstance(projection, int) or not 1 <= projection <= MAX_PROJECTION_DIM:
        raise ValueError(
            f"`{where}{projection_field}` must be an integer from 1 to {MAX_PROJECTION_DIM:,}, got "
            f"{describe_value(projection)}."
        )
    parameters = estimated_clip_parameters(clip_config)
    if parameters > MAX_CLIP_PARAMETERS:
        raise ValueError(
            f"{f'`{source}`' if source else 'The config'} describes a {backbone_of(model_type).display_name} "
            f"of {parameters:,} parameters, more than the {MAX_CLIP_PARAMETERS:,} allowed (ViT-bigG/14, the "
            "largest public CLIP-style model, has ~2.5 billion): reduce the "
            "layers or widths; building it would take minutes and far more memory than any real backbone."
        )


def estimated_clip_parameters(clip_config) -> int:
    """
    The parameter count of the backbone model `clip_config` describes (transformers' `CLIPModel`, `MetaClip2Model`,
    `SiglipModel` or `Siglip2Model`), from a config within the limits.
    """
    model_type = _model_type(clip_config)
    towers = _towers(clip_config, "")
    text, vision = towers["text_config"], towers["vision_config"]

    def encoder(tower):  # per layer: q, k, v, out (weight + bias), the MLP's two layers, two layer norms
        width, mlp = tower["hidden_size"], tower["intermediate_size"]
        return tower["num_hidden_layers"] * (4 * width * width + 2 * width * mlp + mlp + 9 * width)

    text_count = (text["vocab_size"] + text["max_position_embeddings"] + 2) * text["hidden_size"] + encoder(text)
    patch_embedding = vision["num_channels"] * vision["patch_size"] ** 2  # weights per output channel
    if backbone_of(model_type).causal_text:  # CLIP, MetaCLIP 2 (modeling_clip.py, modeling_metaclip_2.py)
        positions = (vision["image_size"] // vision["patch_size"]) ** 2 + 1  # + the class token
        # class embedding, a convolution without bias, positions, pre- and post-layer norms
        vision_count = (1 + patch_embedding + positions + 4) * vision["hidden_size"] + encoder(vision)
        projections = _field(clip_config, "projection_dim", 512) * (text["hidden_size"] + vision["hidden_size"])
        return text_count + vision_count + projections + 1  # + logit_scale
    # SigLIP (modeling_siglip.py): text `head` Linear(hidden, projection_size) with bias; vision patch convolution
    # (SigLIP 2: a Linear) with bias, one position per patch (no class token), post layer norm, and the attention
    # pooling head (probe, nn.MultiheadAttention, layer norm, MLP) when `vision_use_head`.
    width, mlp = vision["hidden_size"], vision["intermediate_size"]
    if model_type == "siglip2":
        positions = vision["num_patches"]
    else:
        positions = (vision["image_size"] // vision["patch_size"]) ** 2
    head = 4 * width * width + 2 * width * mlp + mlp + 8 * width if vision["vision_use_head"] else 0
    vision_count = (patch_embedding + 1 + positions + 2) * width + head + encoder(vision)
    text_head = (text["hidden_size"] + 1) * text["projection_size"]
    return text_count + text_head + vision_count + 2  # + logit_scale, logit_bias


# A model's config.json: the largest one allowed (MAX_CLASSES names in id2label and label2id) is a few tens of MB;
# transformers reads the file whole, so a larger one is refused before it is read.
MAX_MODEL_CONFIG_BYTES = 64 * 2**20
# safetensors' own bound on a file's JSON header (safetensors MAX_HEADER_SIZE): a larger one is not read here either.
MAX_SAFETENSORS_HEADER_BYTES = 100_000_000


def check_file_size(path, limit: int, what: str) -> None:
    """Refuse a file larger than `limit` bytes before it is read (one stat, no read)."""
    size = os.stat(path).st_size
    if size > limit:
        raise ValueError(
            f"{what} {path} has {size:,} bytes, more than the {limit:,} such a file may have: is it the right file?"
        )


def check_weights_cover_config(folder, clip_config, source: str) -> None:
    """
    The safetensors weight files of a local `folder` must declare at least as many values as the CLIP its config
    describes has parameters: stock transformers builds the whole model a config asks for, then fills what the
    weights lack with random values, so a tiny file could buy a huge, silently random model. Only the files' headers
    are read. A folder without readable safetensors weights (weights still on the Hub, an adapter, a `.bin` file, a
    header that does not parse) is left to the limits; a header declaring more tensor bytes than its file holds (a
    truncated or fake file) is refused here (OSError naming the file).
    """
    declared = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("model") and entry.name.endswith(".safetensors") and entry.is_file():
                count = _declared_values(entry.path)
                if count is None:
                    return
                declared += count
    expected = estimated_clip_parameters(clip_config)
    if declared and declared < expected:
        raise ValueError(
            f"{source} describes a {backbone_of(_model_type(clip_config)).display_name} of {expected:,} "
            f"parameters, but the weights in {folder} hold {declared:,} "
            "values: the config does not match its weights (loading would build the whole model and fill the "
            "missing parameters with random values)."
        )


# Bytes per value of the safetensors dtypes (safetensors' Dtype enum); an unknown dtype is left to the loader.
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


def _declared_values(path) -> int | None:
    """
    How many values the tensors of a safetensors file declare (its header only); None if it cannot be read. A header
    that declares more tensor bytes than the file holds is refused (ValueError naming the file): its value count would
    otherwise pass the check above, and the loader then fails with a traceback (OSError, naming the file).
    """
    size = os.stat(path).st_size
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if not 0 < length <= MAX_SAFETENSORS_HEADER_BYTES:
            return None
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            return None
    if not isinstance(header, dict):
        return None
    total = data_bytes = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
            return None
        total += math.prod(shape)
        data_bytes += math.prod(shape) * _DTYPE_BYTES.get(entry.get("dtype"), 0)
    if data_bytes > size - 8 - length:
        # OSError, as the loader's own report of a damaged file (sharing_cocoop.load_model): one line, no traceback.
        raise OSError(
            f"cannot read the weights {path}: its header declares {data_bytes:,} bytes of tensors, but the file holds "
            f"only {max(size - 8 - length, 0):,} after it; the file is truncated or corrupt: save or download it again."
        )
    return total


# The options of `from_pretrained` that say where a checkpoint's config.json is (dtype, device_map... do not).
_HUB_OPTIONS = ("revision", "cache_dir", "force_download", "proxies", "token", "local_files_only", "subfolder")


def check_clip_checkpoint(name_or_path, weights: bool = True, **from_pretrained_kwargs):
    """
    Check the config of a backbone checkpoint (Hub id or local folder; CLIP, MetaCLIP 2, SigLIP or SigLIP 2 by its
    `model_type`, another one refused) before `<its model class>.from_pretrained(name_or_path,
    **from_pretrained_kwargs)` builds a model from it: the limits, and for a local folder the size of its config.json
    and, with `weights` (they are to be loaded), that its weight files hold the parameters the config describes. Reads
    config.json as data (or takes `config=` where given, as from_pretrained would). Returns the config (dict or object).
    """
    path = os.fspath(name_or_path)
    hub_kwargs = {key: value for key, value in from_pretrained_kwargs.items() if key in _HUB_OPTIONS}
    folder = os.path.join(path, hub_kwargs["subfolder"]) if hub_kwargs.get("subfolder") else path
    source = os.path.join(folder, "config.json")
    config = from_pretrained_kwargs.get("config")
    if config is None:
        if os.path.isfile(source):
            check_file_size(source, MAX_MODEL_CONFIG_BYTES, "config.json")
        else:
            source = f"config.json of {path}"
        try:
            config, _ = PretrainedConfig.get_config_dict(path, **hub_kwargs)
        except RecursionError:  # json's parser gives up on deeply nested lists: one line, no traceback
            raise ValueError(f"{source} nests its JSON too deeply to be a backbone config.") from None
    else:
        source = "the given config"
    try:
        check_backbone_config(config, source="")
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    if os.path.isdir(folder) and weights:
        check_weights_cover_config(folder, config, source)
    return config


def describe_value(value, limit: int = 80, typed: bool = True) -> str:
    """
    A short, bounded description of a user's value for an error message: the start of its repr, then its type (and
    size). Never the whole repr: a 340-byte YAML file of nested aliases is a list whose repr runs to gigabytes, and a
    config.json may hold a name of megabytes. Containers show their first items only, to a depth of two; the cost is
    bounded whatever the value. `typed=False`: the start of the repr only.
    """
    text = _value_prefix(value, limit, depth=2)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    if not typed:
        return text
    kind = type(value).__name__
    if isinstance(value, (str, bytes)) and len(value) > limit:
        kind += f" of {len(value):,} characters"
    elif isinstance(value, (list, tuple, set, frozenset, Mapping)) and len(value) > 3:
        kind += f" of {len(value):,} items"
    return f"{text} ({kind})"


def _value_prefix(value, limit: int, depth: int) -> str:
    """`repr(value)` cut to about `limit` characters, built from at most a few items per level (see describe_value)."""
    if isinstance(value, (str, bytes)):
        return repr(value[: limit + 1])
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<a {value.bit_length()}-bit integer>"  # repr of a huge int is slow, and refused past 4300 digits
    if isinstance(value, Mapping):
        opening, closing, items = "{", "}", value.items()
    elif isinstance(value, (list, tuple, set, frozenset)):
        brackets = "[]" if isinstance(value, list) else "()" if isinstance(value, tuple) else "{}"
        opening, closing, items = brackets[0], brackets[1], value
    else:
        text = repr(value)
        return text if len(text) <= limit else text[:limit] + "..."
    if not value:
        return opening + closing
    if depth == 0:
        return f"{opening}...{closing}"
    parts, used = [], 0
    for item in itertools.islice(items, 8):
        if used > limit:
            break
        if isinstance(value, Mapping):
            key, item = item
            part = f"{_value_prefix(key, limit // 2, depth - 1)}: {_value_prefix(item, limit // 2, depth - 1)}"
        else:
            part = _value_prefix(item, limit // 2, depth - 1)
        parts.append(part)
        used += len(part) + 2
    more = ", ..." if len(parts) < len(value) else ""
    return opening + ", ".join(parts) + more + closing
