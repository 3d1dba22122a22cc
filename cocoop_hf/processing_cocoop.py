"""Images -> pixel_values; class names -> the prompt token ids CoCoOp reads. The one place prompts are built."""

import torch
from transformers import BatchEncoding, ProcessorMixin
from transformers.utils import logging


logger = logging.get_logger(__name__)


def clean_class_name(name: str) -> str:
    """Official CoOp/CoCoOp PromptLearner: `name.replace("_", " ")`."""
    return name.replace("_", " ")


def validate_class_names(class_names) -> list[str]:
    """Return `class_names` as a list of strings; raise on an empty list, a non-string, or a duplicate."""
    if isinstance(class_names, str):
        raise TypeError(f"class names must be a list of strings, got the single string {class_names!r}.")
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
        if not clean_class_name(name).strip():
            raise ValueError(f"class name at index {index} is blank ({name!r}).")
        key = clean_class_name(name).strip()
        if key in seen:
            raise ValueError(
                f"duplicate class name {name!r} at indices {seen[key]} and {index} "
                "(names are compared after '_' -> ' '): each class needs its own name."
            )
        seen[key] = index
    return class_names


def build_prompt_ids(
    tokenizer, class_names, prompt_prefix: str, n_ctx: int, context_length: int = 77
) -> BatchEncoding:
    """
    Tokenise the CoCoOp prompts `"{prompt_prefix} {class name}."`, as the official PromptLearner does.

    Returns a `BatchEncoding` with `input_ids` (classes, context_length), padded with the tokenizer's pad token,
    and `eos_index` (classes,): the position of each prompt's EOS token. Positions 1..n_ctx hold the prefix words,
    whose embeddings the model replaces with the learned context.
    """
    class_names = validate_class_names(class_names)
    prefix_ids = tokenizer(prompt_prefix, add_special_tokens=False)["input_ids"]
    if len(prefix_ids) != n_ctx:
        raise ValueError(
            f"the context words {prompt_prefix!r} tokenise to {len(prefix_ids)} tokens, but n_ctx={n_ctx}: "
            "use a ctx_init whose words are single tokens of the CLIP vocabulary."
        )
    prompts = [f"{prompt_prefix} {clean_class_name(name)}." for name in class_names]
    encoded = tokenizer(prompts, add_special_tokens=True, truncation=False)["input_ids"]
    eos_id = tokenizer.eos_token_id
    for name, ids in zip(class_names, encoded, strict=True):
        if len(ids) > context_length:
            raise ValueError(
                f"class name {name!r} makes a prompt of {len(ids)} tokens (SOS, {n_ctx} context, name, '.', EOS), "
                f"over the text context of {context_length}: shorten this name to at most "
                f"{context_length - n_ctx - 3} name tokens."
            )
        if ids[0] != tokenizer.bos_token_id or ids[-1] != eos_id or ids[1 : 1 + n_ctx] != prefix_ids:
            raise ValueError(f"unexpected tokenisation of the prompt for class {name!r}: {ids}.")
    input_ids = torch.full((len(encoded), context_length), tokenizer.pad_token_id, dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    eos_index = torch.tensor([len(ids) - 1 for ids in encoded], dtype=torch.long)
    return BatchEncoding({"input_ids": input_ids, "eos_index": eos_index})


class CoCoOpProcessor(ProcessorMixin):
    r"""
    CLIP image processor + CLIP tokenizer, saved in every CoCoOp folder.

    `processor(images=...)` gives `pixel_values`; `processor(class_names=[...])` gives the prompt token ids
    (`input_ids`, `eos_index`) that [`CoCoOpModel`] reads, built by [`build_prompt_ids`] with the context words
    stored here (`prompt_prefix`, `n_ctx`, `context_length`, copied from the model's config when the model saves it).

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
            raise ValueError(f"`n_ctx` must be a positive integer, got {n_ctx!r}.")
        self.prompt_prefix = prompt_prefix
        self.n_ctx = n_ctx
        self.context_length = context_length
        super().__init__(image_processor, tokenizer, **kwargs)

    def __call__(self, images=None, text=None, class_names=None, return_tensors="pt", **kwargs):
        """
        `images` (PIL images, arrays or tensors) -> `pixel_values`; `class_names` -> prompt `input_ids` and
        `eos_index` (see [`~CoCoOpProcessor.tokenize_class_names`]); `text` -> plain CLIP `input_ids`.
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
        Prompt token ids for `class_names`: `input_ids` (classes, context_length) and `eos_index` (classes,), built by
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
