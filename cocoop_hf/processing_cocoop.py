"""
Images -> pixel values (with SigLIP 2's patch mask and shapes); class names -> the prompt token ids CoCoOp reads,
built with the backbone's own tokenizer by `prompt_ids_cocoop.build_prompt_ids` (the one prompt builder, re-exported
here). Also the loading of a model's tokenizer (`load_model_tokenizer`: saved beside the weights, else the base
backbone's, padding on the side the model's prompts were built with).
"""

import json
import os

from huggingface_hub.errors import StrictDataclassError
from transformers import BatchEncoding, ProcessorMixin
from transformers.utils import cached_file, logging

from .backbones_cocoop import backbone_of, text_context
from .configuration_cocoop import CoCoOpConfig
from .prompt_ids_cocoop import (  # noqa: F401  (public names of this module before prompt_ids_cocoop.py existed)
    build_prompt_ids,
    class_name_key,
    clean_class_name,
    is_clip_tokenizer,
    prompt_context_start,
    validate_class_names,
)


logger = logging.get_logger(__name__)

# Arguments of from_pretrained that locate files of a folder or repo (the processor's, and the model loader's in
# sharing_cocoop.py); an adapter's base CLIP gets all but `revision`/`subfolder` (it is another repo).
HUB_KWARGS = ("revision", "cache_dir", "force_download", "local_files_only", "token", "subfolder", "proxies")


def _naming(error: Exception, source: str) -> Exception:
    """`error` (a ValueError or TypeError) again, its message prefixed with where the bad value came from."""
    return (TypeError if isinstance(error, TypeError) else ValueError)(f"{source}: {error}")


def _default_context_length(backbone_type) -> int:
    """The text context of `backbone_type`'s default text config (CLIP's 77 for None: processors saved before)."""
    if backbone_type is None:
        return 77
    text_class = backbone_of(backbone_type).config_class.sub_configs["text_config"]
    field = getattr(text_class, "__dataclass_fields__", {}).get("max_position_embeddings")
    if field is not None and isinstance(field.default, int):  # read without building a config (no warnings)
        return field.default
    return text_class().max_position_embeddings


class CoCoOpProcessor(ProcessorMixin):
    r"""
    The backbone's image processor + its tokenizer, saved in every CoCoOp folder (any backbone of
    `backbones_cocoop.BACKBONES`: CLIP, MetaCLIP 2, SigLIP, SigLIP 2; both load with the Auto classes).

    `processor(images=...)` gives `pixel_values` (SigLIP 2 also `pixel_attention_mask` and `spatial_shapes`, passed
    through for the model); `processor(class_names=[...])` gives the prompt token ids (`input_ids`, `eos_index`,
    `name_length`, `context_start`, and for SigLIP 2 `attention_mask`) that [`CoCoOpModel`] reads, built by
    [`build_prompt_ids`] with the context words stored here (`prompt_prefix`, `n_ctx`, `context_length`,
    `backbone_type`, copied from the model's config when the model saves it).

    Args:
        image_processor: the backbone's image processor (`CLIPImageProcessor`, `SiglipImageProcessor`,
            `Siglip2ImageProcessor`).
        tokenizer: the backbone's tokenizer, the one the prompts are built with.
        prompt_prefix (`str`, *optional*): the context words (`config.prompt_prefix`).
        n_ctx (`int`, *optional*): number of context tokens (`config.n_ctx`).
        context_length (`int`, *optional*): the text tower's context; defaults to the backbone's (`backbone_type`'s
            default text config: CLIP and MetaCLIP 2 77, SigLIP and SigLIP 2 64; 77 without a `backbone_type`).
        backbone_type (`str`, *optional*): the backbone's `model_type` ("clip", "metaclip_2", "siglip", "siglip2");
            a bidirectional one gets prompt attention masks where its tokenizer returns them, and plain `text` padded
            to `context_length` as the backbone was trained. `None` (processors saved before): CLIP's rules.
    """

    # Saved processors always carry their code, so AutoProcessor(..., trust_remote_code=True) loads them anywhere.
    _auto_class = "AutoProcessor"

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        prompt_prefix=None,
        n_ctx=None,
        context_length=None,
        backbone_type=None,
        **kwargs,
    ):
        if prompt_prefix is not None and (not isinstance(prompt_prefix, str) or not prompt_prefix.strip()):
            raise ValueError(f"`prompt_prefix` must be a non-empty string of context words, got {prompt_prefix!r}.")
        if n_ctx is not None and (isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 1):
            raise ValueError(f"`n_ctx` must be a positive integer, got {n_ctx!r} ({type(n_ctx).__name__}).")
        if backbone_type is not None:
            if not isinstance(backbone_type, str):
                raise ValueError(f"`backbone_type` must be a backbone's model_type string, got {backbone_type!r}.")
            backbone_of(backbone_type)  # one clear error naming the supported backbones
        if context_length is None:
            context_length = _default_context_length(backbone_type)
        if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 4:
            raise ValueError(
                "`context_length` must be the text tower's context, an integer >= 4 (77 for CLIP), got "
                f"{context_length!r} ({type(context_length).__name__})."
            )
        self.prompt_prefix = prompt_prefix
        self.n_ctx = n_ctx
        self.context_length = context_length
        self.backbone_type = backbone_type
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """
        Load from a CoCoOp folder or Hub repo. A full folder holds the tokenizer and image processor. An adapter-only
        folder (`adapter_only: true` in its config.json) holds only the prompt settings and, usually, the image
        processor config: the tokenizer (and a missing image processor) come from the base backbone named by
        `clip_name_or_path` at `clip_revision` (any backbone: loaded with AutoTokenizer / AutoImageProcessor), through
        the same cache and offline rules as the model.
        """
        base = cls._adapter_base_clip(pretrained_model_name_or_path, kwargs)
        if base is None:
            try:
                return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
            except (ValueError, TypeError) as error:
                raise _naming(error, f"processor files of {pretrained_model_name_or_path}") from error
        from transformers import AutoImageProcessor

        base_name, base_revision, config = base
        # The base CLIP is another repo: its own revision, no subfolder; the access and cache arguments carry over.
        base_kwargs = {
            key: kwargs[key] for key in HUB_KWARGS if key in kwargs and key not in ("revision", "subfolder")
        }
        processor_dict, instantiation_kwargs = cls.get_processor_dict(pretrained_model_name_or_path, **kwargs)
        # The config as CoCoOpConfig read it (checked in _adapter_base_clip): its backbone's defaults filled in.
        processor_dict.setdefault("prompt_prefix", config.prompt_prefix)
        processor_dict.setdefault("n_ctx", config.prompt_prefix_tokens)
        processor_dict.setdefault("context_length", text_context(config.backbone_config))
        processor_dict.setdefault("backbone_type", config.backbone_config.model_type)
        vocab_size = config.backbone_config.text_config.vocab_size
        try:
            tokenizer = cls.load_backbone_tokenizer(
                base_name, vocab_size, revision=base_revision, backbone_config=config.backbone_config, **base_kwargs
            )
            # The base tokenizer pads on its own default side; the adapter's prompts were built on the saved one (as the
            # model's tokenizer is set when it loads: load_model_tokenizer), else the processor's prompts differ.
            tokenizer = _with_saved_padding_side(tokenizer, config)
            image_config = processor_dict.get("image_processor")
            if isinstance(image_config, dict):  # saved with the adapter, from the base backbone's image processor
                image_class = cls.get_possibly_dynamic_module(
                    image_config.get("image_processor_type", "CLIPImageProcessor")
                )
                image_processor = image_class.from_dict(image_config)
            else:
                image_processor = AutoImageProcessor.from_pretrained(base_name, revision=base_revision, **base_kwargs)
        except OSError as error:
            raise OSError(
                f"adapter-only CoCoOp folder {pretrained_model_name_or_path} takes its tokenizer from the base "
                f"{backbone_of(config.backbone_config).display_name} {base_name!r} at revision {base_revision!r}, which could not be loaded: {error}"
            ) from error
        try:
            return cls._from_parts(image_processor, tokenizer, processor_dict, **instantiation_kwargs)
        except (ValueError, TypeError) as error:
            raise _naming(error, f"processor settings of {pretrained_model_name_or_path}") from error

    @classmethod
    def _from_parts(cls, image_processor, tokenizer, processor_dict: dict, **kwargs):
        """
        The processor from its two loaded parts and its saved settings, as transformers' `from_args_and_dict` builds
        it: deprecated in 5.25 (warns on every load) for `from_dict`, which 5.24 lacks; this works on both. Like
        both, it passes `__init__` the settings it names (a saved `auto_map`, `processor_class`, ... are no setting).
        """
        return_unused_kwargs = kwargs.pop("return_unused_kwargs", False)
        settings = {key: value for key, value in processor_dict.items() if key not in cls.get_attributes()}
        settings.update(kwargs)
        init_code = cls.__init__.__code__
        accepted = set(init_code.co_varnames[1 : init_code.co_argcount]) - set(cls.get_attributes())
        unused = {key: value for key, value in settings.items() if key not in accepted}
        processor = cls(
            image_processor=image_processor,
            tokenizer=tokenizer,
            **{key: value for key, value in settings.items() if key in accepted},
        )
        return (processor, unused) if return_unused_kwargs else processor

    @classmethod
    def _adapter_base_clip(cls, path, kwargs: dict):
        """
        `(clip_name_or_path, clip_revision, CoCoOpConfig)` when `path` is an adapter-only CoCoOp folder, else None.
        """
        if os.path.isfile(str(path)):
            return None
        hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if kwargs.get(key) is not None}
        try:
            config_file = cached_file(
                path,
                "config.json",
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
                **hub_kwargs,
            )
        except OSError:
            return None  # not a folder or repo we can read: the stock loader gives its own message
        if config_file is None:
            return None
        with open(config_file, encoding="utf-8") as f:
            try:
                config = json.load(f)
            except ValueError as error:
                raise ValueError(f"{config_file} is not valid JSON: {error}") from error
        if not isinstance(config, dict) or config.get("model_type") != "cocoop":
            return None
        checked = cls._check_raw_config(config, config_file)
        if not config.get("adapter_only"):
            return None
        if not config.get("clip_name_or_path"):
            raise ValueError(
                f"{path} is an adapter-only CoCoOp folder without `clip_name_or_path` in its config.json: the "
                f"tokenizer comes from the base {backbone_of(checked.backbone_config).display_name}, so add its Hub id "
                "or path (and `clip_revision`)."
            )
        return config["clip_name_or_path"], config.get("clip_revision"), checked

    @staticmethod
    def _check_raw_config(config: dict, config_file) -> CoCoOpConfig:
        """
        Check a CoCoOp config.json read as raw JSON with `CoCoOpConfig`'s own rules (one rule set; its file ships
        beside this one in every saved folder) before its fields are used: a string "false" would read as true.
        Returns the config.
        """
        try:
            return CoCoOpConfig.from_dict(config)
        except (ValueError, TypeError, StrictDataclassError) as error:
            raise ValueError(f"{config_file}: {error}") from error

    @staticmethod
    def load_backbone_tokenizer(name_or_path, vocab_size: int, backbone_config=None, **kwargs):
        """
        The backbone's tokenizer (`AutoTokenizer.from_pretrained`: CLIPTokenizer, XLMRobertaTokenizer, SigLIP's,
        Gemma's), checked: where no tokenizer files exist, transformers 5 silently builds a tokenizer of its special
        tokens only (2 tokens for CLIP). Raise `OSError` instead when its vocabulary cannot be the text tower's: for a
        CLIP tokenizer, not exactly `vocab_size` tokens (as released); for another, more tokens than `vocab_size`
        (ids past the embedding table; a model's table may be padded beyond its tokenizer) or nothing but special
        tokens.

        `backbone_config`: the backbone's config, given to AutoTokenizer as `config=`. Without it AutoTokenizer
        reads the folder's config.json, which in a CoCoOp folder is the CoCoOp config (model_type "cocoop" with an
        `auto_map`): transformers then asks whether to trust its remote code (an `input()` prompt in a terminal).
        """
        from transformers import AutoTokenizer

        if backbone_config is not None:
            kwargs = {**kwargs, "config": backbone_config}
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        size, specials = len(tokenizer), len(set(tokenizer.all_special_ids))
        clip = is_clip_tokenizer(tokenizer)
        if (size != vocab_size) if clip else (size > vocab_size or size <= specials):
            raise OSError(
                f"no usable {'CLIP ' if clip else ''}tokenizer in {name_or_path} (revision {kwargs.get('revision')!r}): "
                f"it has {size} tokens ({specials} special), but the text tower has vocab_size {vocab_size}; are the "
                "tokenizer files (tokenizer.json, or vocab.json + merges.txt, or the sentencepiece model) there?"
            )
        return tokenizer

    @staticmethod
    def load_clip_tokenizer(name_or_path, vocab_size: int, **kwargs):
        """The old name of [`~CoCoOpProcessor.load_backbone_tokenizer`] (it loads any backbone's tokenizer)."""
        return CoCoOpProcessor.load_backbone_tokenizer(name_or_path, vocab_size, **kwargs)

    @staticmethod
    def save_adapter_config(
        save_directory, image_processor, prompt_prefix: str, n_ctx: int, context_length: int, backbone_type=None
    ):
        """
        Write the `processor_config.json` of an adapter-only folder: prompt settings and the image processor config
        (a few KB; the stock image-classification pipeline reads it), no tokenizer files. `from_pretrained` takes the
        tokenizer from the base CLIP.
        """
        processor_dict = {
            "auto_map": {"AutoProcessor": f"processing_cocoop.{CoCoOpProcessor.__name__}"},
            "processor_class": CoCoOpProcessor.__name__,
            "prompt_prefix": prompt_prefix,
            "n_ctx": n_ctx,
            "context_length": context_length,
            "backbone_type": backbone_type,
        }
        if image_processor is not None:
            processor_dict["image_processor"] = image_processor.to_dict()
        path = os.path.join(save_directory, "processor_config.json")
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(processor_dict, indent=2, sort_keys=True) + "\n")
        return path

    def __call__(self, images=None, text=None, class_names=None, return_tensors="pt", **kwargs):
        """
        `images` (PIL images, arrays or tensors) -> `pixel_values` (and whatever else the backbone's image processor
        gives: SigLIP 2's `pixel_attention_mask`, `spatial_shapes`); `class_names` -> the prompt ids (see
        [`~CoCoOpProcessor.tokenize_class_names`]); `text` -> plain `input_ids` as the backbone reads them (a
        bidirectional backbone's padded to `context_length`, `padding="max_length"`, as it was trained; CLIP's to
        the longest text). Keyword arguments go to the tokenizer with `text`.
        """
        if images is None and text is None and class_names is None:
            raise ValueError("pass `images` (for pixel_values), `class_names` (for prompt ids) and/or `text`.")
        if text is not None and class_names is not None:
            raise ValueError("pass either `text` or `class_names`: both make `input_ids`.")
        encoding = {}
        if text is not None:
            if self.backbone_type is not None and not backbone_of(self.backbone_type).causal_text:
                # SigLIP's text tower attends to padding (no mask): its features depend on padding to the context.
                kwargs = {"padding": "max_length", "max_length": self.context_length, **kwargs}
            else:
                kwargs = {"padding": True, **kwargs}
            encoding.update(self.tokenizer(text, return_tensors=return_tensors, **kwargs))
        if class_names is not None:
            encoding.update(self.tokenize_class_names(class_names))
        if images is not None:
            try:
                encoding.update(self.image_processor(images, return_tensors=return_tensors))
            except (ValueError, TypeError) as error:
                raise type(error)(
                    f"cannot process `images` ({type(images).__name__}): {error} Pass PIL images, numpy arrays or "
                    "torch tensors (or a list of them)."
                ) from error
        return BatchEncoding(encoding, tensor_type=return_tensors)

    def tokenize_class_names(self, class_names, config=None) -> BatchEncoding:
        """
        Prompt token ids for `class_names`: `input_ids` (classes, context_length), `eos_index`, `name_length` and
        `context_start` (classes,), and `attention_mask` for a bidirectional backbone whose tokenizer gives one,
        built by [`build_prompt_ids`] with the context words of `config` (a [`CoCoOpConfig`]) or, without one, this
        processor's `prompt_prefix` / `n_ctx` / `context_length` / `backbone_type`.
        """
        if config is not None:
            prompt_prefix, n_ctx, backbone = config.prompt_prefix, config.prompt_prefix_tokens, config.backbone_config
            context_length = text_context(config.backbone_config)
        elif self.prompt_prefix is None or self.n_ctx is None:
            raise ValueError(
                "this processor does not know the context words: pass the model's config "
                "(tokenize_class_names(names, model.config)) or load the processor from a saved CoCoOp folder."
            )
        else:
            prompt_prefix, n_ctx, context_length = self.prompt_prefix, self.n_ctx, self.context_length
            backbone = self.backbone_type
        return build_prompt_ids(self.tokenizer, class_names, prompt_prefix, n_ctx, context_length, backbone=backbone)


# ---------------------------------------------------------------------------------------------- a model's tokenizer


def _with_saved_padding_side(tokenizer, config: CoCoOpConfig):
    """
    `tokenizer` padding on the side the model's prompts were built with: `config.prompt_context_start` is None only
    for prompts of a left-padding tokenizer (processing_cocoop.prompt_context_start). A tokenizer saved before its
    padding side was recorded, or an adapter's base tokenizer, may pad on the other side (SigLIP 2's pads left, and a
    user may have set "right" before from_clip): rebuilt that way, the prompts would hold the tokens at other
    positions and give other logits. The held class set's build checks the outcome (class_set_cocoop).
    """
    side = "left" if config.prompt_context_start is None else "right"
    if getattr(tokenizer, "padding_side", side) != side:
        logger.info("The model's prompts were built with padding on the %s: the loaded tokenizer pads so too.", side)
        tokenizer.padding_side = side
    return tokenizer


def load_model_tokenizer(path, hub_kwargs: dict, config: CoCoOpConfig):
    """
    The tokenizer saved beside the weights or, failing that, the base backbone's (AutoTokenizer, checked against the
    text tower's vocabulary); None (with a warning) if neither.
    """
    candidates = [(path, hub_kwargs)]
    if config.clip_name_or_path:
        candidates.append((config.clip_name_or_path, {"revision": config.clip_revision}))
    vocab_size = config.backbone_config.text_config.vocab_size
    for source, source_kwargs in candidates:
        try:
            # Checked: a folder without tokenizer files gives a silent 2-token tokenizer otherwise.
            tokenizer = CoCoOpProcessor.load_backbone_tokenizer(
                source, vocab_size, backbone_config=config.backbone_config, **source_kwargs
            )
        except (OSError, ValueError, TypeError):
            continue
        return _with_saved_padding_side(tokenizer, config)
    logger.warning(
        "No tokenizer found in %s or its base backbone %s: the class prompts are not built. Call "
        "model.set_class_names(class_names, tokenizer=...) before running the model.",
        path,
        config.clip_name_or_path,
    )
    return None
