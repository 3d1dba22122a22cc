"""Images -> pixel_values; class names -> the prompt token ids CoCoOp reads. The one place prompts are built."""

import json
import os
import unicodedata

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import BatchEncoding, ProcessorMixin
from transformers.utils import cached_file, logging

from .configuration_cocoop import CoCoOpConfig


logger = logging.get_logger(__name__)

# Arguments of from_pretrained that locate files of a folder or repo (the processor's, and the model loader's in
# sharing_cocoop.py); an adapter's base CLIP gets all but `revision`/`subfolder` (it is another repo).
HUB_KWARGS = ("revision", "cache_dir", "force_download", "local_files_only", "token", "subfolder", "proxies")


def clean_class_name(name: str) -> str:
    """Official CoOp/CoCoOp PromptLearner: `name.replace("_", " ")`."""
    return name.replace("_", " ")


# CLIP's pre-tokeniser pattern ('s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+), whose unmatched
# whitespace is dropped; stdlib `re` has no \p{...}, so the pieces are found by Unicode category.
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
# Oniguruma's Unicode \s (what the tokenizers library matches): not str.isspace, which also takes U+001C..U+001F.
_SPACE_CATEGORIES = ("Zs", "Zl", "Zp")


def _char_kind(char: str) -> str:
    if char in "\t\n\v\f\r\x85" or unicodedata.category(char) in _SPACE_CATEGORIES:
        return "space"
    return {"L": "letter", "N": "number"}.get(unicodedata.category(char)[0], "other")


def class_name_key(name: str) -> tuple[str, ...]:
    """
    The words CLIP's tokenizer makes of `name` in a prompt (`"... {name}."`): two names with the same key get the
    same token ids, hence the same prompt and the same logits. Follows `CLIPTokenizer` (tokenizer.json of
    openai/clip-vit-base-patch16): official `"_"` -> `" "`, then NFC, lowercase, and the pre-tokeniser split, which
    drops whitespace. So `"Cat"`, `"cat"`, `"CAT "`, `"cat_dog"`/`"cat  dog"` and `"t-shirt"`/`"t - shirt"` collide.
    """
    # Lowercased one character at a time, like the tokenizers library: str.lower() would write a final sigma.
    text = "".join(char.lower() for char in unicodedata.normalize("NFC", clean_class_name(name) + "."))
    pieces, i = [], 0
    while i < len(text):
        kind = _char_kind(text[i])
        contraction = next((c for c in _CONTRACTIONS if text.startswith(c, i)), None)
        if contraction is not None:
            end = i + len(contraction)
        elif kind == "space":
            i += 1
            continue
        elif kind == "number":
            end = i + 1  # [\p{N}]: one digit per piece
        else:  # a run of letters, or a run of other characters
            end = i + 1
            while end < len(text) and _char_kind(text[end]) == kind:
                end += 1
        pieces.append(text[i:end])
        i = end
    return tuple(pieces)


def validate_class_names(class_names) -> list[str]:
    """
    Return `class_names` as a list of strings; raise on an empty list, a non-string, a blank name, or two names the
    CLIP tokenizer cannot tell apart ([`class_name_key`]: they would get identical prompts and logits).
    """
    if isinstance(class_names, str):
        raise TypeError(f"class names must be a list of strings, got the single string {class_names!r}.")
    if isinstance(class_names, dict):
        raise TypeError(
            "class names must be a list of strings in label order, got a dict: pass "
            "[id2label[i] for i in range(len(id2label))]."
        )
    try:
        class_names = list(class_names)
    except TypeError:
        raise TypeError(f"class names must be a list of strings, got {type(class_names).__name__}.") from None
    if not class_names:
        raise ValueError("class names are empty: pass at least one class name.")
    seen = {}
    for index, name in enumerate(class_names):
        if not isinstance(name, str):
            raise TypeError(f"class name at index {index} must be a string, got {type(name).__name__}: {name!r}.")
        key = class_name_key(name)
        if key == (".",):
            raise ValueError(f"class name at index {index} is blank ({name!r}).")
        if key in seen:
            first = seen[key]
            raise ValueError(
                f"duplicate class name {name!r} at index {index}: the CLIP tokenizer reads it as the same words as "
                f"{class_names[first]!r} at index {first} (it ignores case and spacing; '_' is a space, as in the "
                "official code), so both would get identical prompts and logits. Give each class a distinct name."
            )
        seen[key] = index
    return class_names


def build_prompt_ids(
    tokenizer, class_names, prompt_prefix: str, n_ctx: int, context_length: int = 77
) -> BatchEncoding:
    """
    Tokenise the CoCoOp prompts `"{prompt_prefix} {class name}."`, as the official PromptLearner does.

    Returns a `BatchEncoding` with `input_ids` (classes, context_length), padded with the tokenizer's pad token,
    `eos_index` (classes,): the position of each prompt's EOS token, and `name_length` (classes,): the token count
    of the class name alone (official CoOp `name_lens`, what `class_token_position` "middle"/"front" moves). Positions
    1..n_ctx hold the prefix words, whose embeddings the model replaces with the learned context.
    """
    class_names = validate_class_names(class_names)
    if not isinstance(prompt_prefix, str) or not prompt_prefix.strip():
        raise ValueError(f"`prompt_prefix` must be a non-empty string of context words, got {prompt_prefix!r}.")
    for field, value, minimum in (("n_ctx", n_ctx, 1), ("context_length", context_length, 4)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"`{field}` must be an integer >= {minimum}, got {value!r} ({type(value).__name__}).")
    prefix_ids = tokenizer(prompt_prefix, add_special_tokens=False)["input_ids"]
    if len(prefix_ids) != n_ctx:
        raise ValueError(
            f"the context words {prompt_prefix!r} tokenise to {len(prefix_ids)} tokens, but n_ctx={n_ctx}: "
            "use a ctx_init whose words are single tokens of the CLIP vocabulary."
        )
    prompts = [f"{prompt_prefix} {clean_class_name(name)}." for name in class_names]
    encoded = tokenizer(prompts, add_special_tokens=True, truncation=False)["input_ids"]
    special = {tokenizer.bos_token_id, tokenizer.eos_token_id}
    eos_id = tokenizer.eos_token_id
    seen = {}
    for index, (name, ids) in enumerate(zip(class_names, encoded, strict=True)):
        if len(ids) > context_length:
            raise ValueError(
                f"class name {name!r} makes a prompt of {len(ids)} tokens (SOS, {n_ctx} context, name, '.', EOS), "
                f"over the text context of {context_length}: shorten this name to at most "
                f"{context_length - n_ctx - 3} name tokens."
            )
        if special & set(ids[1:-1]):
            # The text tower pools at the EOS token: one inside the name would end the prompt there.
            raise ValueError(
                f"class name {name!r} (index {index}) contains the tokenizer's start or end token "
                f"({tokenizer.bos_token!r} / {tokenizer.eos_token!r}): remove it from the name."
            )
        if ids[0] != tokenizer.bos_token_id or ids[-1] != eos_id or ids[1 : 1 + n_ctx] != prefix_ids:
            raise ValueError(f"unexpected tokenisation of the prompt for class {name!r}: {ids}.")
        first = seen.setdefault(tuple(ids), index)
        if first != index:
            raise ValueError(
                f"duplicate class name {name!r} at index {index}: it tokenises to the same prompt ids as "
                f"{class_names[first]!r} at index {first}, so both would get identical logits. Give each class a "
                "distinct name."
            )
    input_ids = torch.full((len(encoded), context_length), tokenizer.pad_token_id, dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    eos_index = torch.tensor([len(ids) - 1 for ids in encoded], dtype=torch.long)
    # Official CoOp trainers/coop.py: name_lens = len(_tokenizer.encode(name)), the name tokenised on its own.
    names = [clean_class_name(name) for name in class_names]
    # Only a model with class_token_position "middle"/"front" reads it (and checks that it fits the prompt).
    name_length = torch.tensor(
        [len(ids) for ids in tokenizer(names, add_special_tokens=False)["input_ids"]], dtype=torch.long
    )
    return BatchEncoding({"input_ids": input_ids, "eos_index": eos_index, "name_length": name_length})


def _naming(error: Exception, source: str) -> Exception:
    """`error` (a ValueError or TypeError) again, its message prefixed with where the bad value came from."""
    return (TypeError if isinstance(error, TypeError) else ValueError)(f"{source}: {error}")


class CoCoOpProcessor(ProcessorMixin):
    r"""
    CLIP image processor + CLIP tokenizer, saved in every CoCoOp folder.

    `processor(images=...)` gives `pixel_values`; `processor(class_names=[...])` gives the prompt token ids
    (`input_ids`, `eos_index`, `name_length`) that [`CoCoOpModel`] reads, built by [`build_prompt_ids`] with the
    context words stored here (`prompt_prefix`, `n_ctx`, `context_length`, copied from the model's config when the
    model saves it).

    Args:
        image_processor ([`CLIPImageProcessor`]): resizes, crops and normalises images.
        tokenizer ([`CLIPTokenizer`]): the tokenizer the prompts are built with.
        prompt_prefix (`str`, *optional*): the context words (`config.prompt_prefix`).
        n_ctx (`int`, *optional*): number of context tokens (`config.n_ctx`).
        context_length (`int`, *optional*, defaults to 77): the text tower's context.
    """

    # Saved processors always carry their code, so AutoProcessor(..., trust_remote_code=True) loads them anywhere.
    _auto_class = "AutoProcessor"

    def __init__(
        self, image_processor=None, tokenizer=None, prompt_prefix=None, n_ctx=None, context_length=77, **kwargs
    ):
        if prompt_prefix is not None and (not isinstance(prompt_prefix, str) or not prompt_prefix.strip()):
            raise ValueError(f"`prompt_prefix` must be a non-empty string of context words, got {prompt_prefix!r}.")
        if n_ctx is not None and (isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 1):
            raise ValueError(f"`n_ctx` must be a positive integer, got {n_ctx!r} ({type(n_ctx).__name__}).")
        if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 4:
            raise ValueError(
                "`context_length` must be the text tower's context, an integer >= 4 (77 for CLIP), got "
                f"{context_length!r} ({type(context_length).__name__})."
            )
        self.prompt_prefix = prompt_prefix
        self.n_ctx = n_ctx
        self.context_length = context_length
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """
        Load from a CoCoOp folder or Hub repo. A full folder holds the tokenizer and image processor. An adapter-only
        folder (`adapter_only: true` in its config.json) holds only the prompt settings and, usually, the image
        processor config: the tokenizer (and a missing image processor) come from the base CLIP named by
        `clip_name_or_path` at `clip_revision`, through the same cache and offline rules as the model.
        """
        base = cls._adapter_base_clip(pretrained_model_name_or_path, kwargs)
        if base is None:
            try:
                return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
            except (ValueError, TypeError) as error:
                raise _naming(error, f"processor files of {pretrained_model_name_or_path}") from error
        from transformers import CLIPImageProcessor

        base_name, base_revision, config = base
        # The base CLIP is another repo: its own revision, no subfolder; the access and cache arguments carry over.
        base_kwargs = {
            key: kwargs[key] for key in HUB_KWARGS if key in kwargs and key not in ("revision", "subfolder")
        }
        processor_dict, instantiation_kwargs = cls.get_processor_dict(pretrained_model_name_or_path, **kwargs)
        text_config = config.get("clip_config", {}).get("text_config", {})
        n_ctx = config.get("n_ctx")
        # Same rule as CoCoOpConfig.prompt_prefix (this file may not import the config: it travels alone).
        processor_dict.setdefault("prompt_prefix", config.get("ctx_init") or " ".join(["X"] * (n_ctx or 0)) or None)
        processor_dict.setdefault("n_ctx", n_ctx)
        processor_dict.setdefault("context_length", text_config.get("max_position_embeddings", 77))
        vocab_size = text_config.get("vocab_size", 49408)  # CLIPTextConfig's default
        try:
            tokenizer = cls.load_clip_tokenizer(base_name, vocab_size, revision=base_revision, **base_kwargs)
            image_config = processor_dict.get("image_processor")
            if isinstance(image_config, dict):  # saved with the adapter, from the base CLIP's image processor
                image_class = cls.get_possibly_dynamic_module(
                    image_config.get("image_processor_type", "CLIPImageProcessor")
                )
                image_processor = image_class.from_dict(image_config)
            else:
                image_processor = CLIPImageProcessor.from_pretrained(base_name, revision=base_revision, **base_kwargs)
        except OSError as error:
            raise OSError(
                f"adapter-only CoCoOp folder {pretrained_model_name_or_path} takes its tokenizer from the base CLIP "
                f"{base_name!r} at revision {base_revision!r}, which could not be loaded: {error}"
            ) from error
        try:
            return cls.from_args_and_dict([image_processor, tokenizer], processor_dict, **instantiation_kwargs)
        except (ValueError, TypeError) as error:
            raise _naming(error, f"processor settings of {pretrained_model_name_or_path}") from error

    @classmethod
    def _adapter_base_clip(cls, path, kwargs: dict):
        """`(clip_name_or_path, clip_revision, config dict)` when `path` is an adapter-only CoCoOp folder, else None."""
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
        cls._check_raw_config(config, config_file)
        if not config.get("adapter_only"):
            return None
        if not config.get("clip_name_or_path"):
            raise ValueError(
                f"{path} is an adapter-only CoCoOp folder without `clip_name_or_path` in its config.json: the "
                "tokenizer comes from the base CLIP, so add its Hub id or path (and `clip_revision`)."
            )
        return config["clip_name_or_path"], config.get("clip_revision"), config

    @staticmethod
    def _check_raw_config(config: dict, config_file) -> None:
        """
        Check a CoCoOp config.json read as raw JSON with `CoCoOpConfig`'s own rules (one rule set; its file ships
        beside this one in every saved folder) before its fields are used: a string "false" would read as true.
        """
        try:
            CoCoOpConfig.from_dict(config)
        except (ValueError, TypeError, StrictDataclassError) as error:
            raise ValueError(f"{config_file}: {error}") from error

    @staticmethod
    def load_clip_tokenizer(name_or_path, vocab_size: int, **kwargs):
        """
        `CLIPTokenizer.from_pretrained`, checked: where no tokenizer files exist, transformers 5 silently builds a
        2-token tokenizer. Raise `OSError` instead when the vocabulary does not match the text tower's `vocab_size`.
        """
        from transformers import CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(name_or_path, **kwargs)
        if len(tokenizer) != vocab_size:
            raise OSError(
                f"no usable CLIP tokenizer in {name_or_path} (revision {kwargs.get('revision')!r}): it has "
                f"{len(tokenizer)} tokens, but the text tower has vocab_size {vocab_size}; are the tokenizer files "
                "(vocab.json + merges.txt or tokenizer.json) there?"
            )
        return tokenizer

    @staticmethod
    def save_adapter_config(save_directory, image_processor, prompt_prefix: str, n_ctx: int, context_length: int):
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
        }
        if image_processor is not None:
            processor_dict["image_processor"] = image_processor.to_dict()
        path = os.path.join(save_directory, "processor_config.json")
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(processor_dict, indent=2, sort_keys=True) + "\n")
        return path

    def __call__(self, images=None, text=None, class_names=None, return_tensors="pt", **kwargs):
        """
        `images` (PIL images, arrays or tensors) -> `pixel_values`; `class_names` -> prompt `input_ids`,
        `eos_index` and `name_length` (see [`~CoCoOpProcessor.tokenize_class_names`]); `text` -> plain CLIP
        `input_ids`.
        """
        if images is None and text is None and class_names is None:
            raise ValueError("pass `images` (for pixel_values), `class_names` (for prompt ids) and/or `text`.")
        if text is not None and class_names is not None:
            raise ValueError("pass either `text` or `class_names`: both make `input_ids`.")
        encoding = {}
        if text is not None:
            encoding.update(self.tokenizer(text, return_tensors=return_tensors, padding=True, **kwargs))
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
        Prompt token ids for `class_names`: `input_ids` (classes, context_length), `eos_index` and `name_length`
        (classes,), built by
        [`build_prompt_ids`] with the context words of `config` (a [`CoCoOpConfig`]) or, without one, this
        processor's `prompt_prefix` / `n_ctx` / `context_length`.
        """
        if config is not None:
            prompt_prefix, n_ctx = config.prompt_prefix, config.n_ctx
            context_length = config.clip_config.text_config.max_position_embeddings
        elif self.prompt_prefix is None or self.n_ctx is None:
            raise ValueError(
                "this processor does not know the context words: pass the model's config "
                "(tokenize_class_names(names, model.config)) or load the processor from a saved CoCoOp folder."
            )
        else:
            prompt_prefix, n_ctx, context_length = self.prompt_prefix, self.n_ctx, self.context_length
        return build_prompt_ids(self.tokenizer, class_names, prompt_prefix, n_ctx, context_length)
