"""
Class names -> the prompt token ids CoCoOp reads, with the backbone's own tokenizer: the one prompt builder and the
one check of class names. `processing_cocoop.py` re-exports everything here (its public names stay where they were).

A prompt is the official CoOp/CoCoOp one, `f"{prompt_prefix} {name}."` with the name's `_` read as spaces, tokenised
WITH the tokenizer's special tokens, whatever they are:
- CLIP (`CLIPTokenizer`): `<|startoftext|> ctx name . <|endoftext|>`, right padding with `<|endoftext|>`;
- MetaCLIP 2 (`XLMRobertaTokenizer`): `<s> ctx name . </s>`, right padding with `<pad>`;
- SigLIP (`SiglipTokenizer`, T5-style): `ctx name . </s>` (no start token), right padding with `</s>`;
- SigLIP 2 (Gemma's tokenizer): its own start/end rule and padding side, read from the tokenizer.
So the context starts after the leading special tokens (`context_start`), EOS is the last real token (`eos_index`),
and nothing here assumes CLIP's ids.

This file travels with the code of every saved folder (the processor imports it), so it may import only torch,
transformers and its sibling files.
"""

import unicodedata

import torch
from transformers import BatchEncoding, CLIPTokenizer

from .backbones_cocoop import backbone_of


def clean_class_name(name: str) -> str:
    """
    Official CoOp/CoCoOp PromptLearner: `name.replace("_", " ")`, then stripped of leading and trailing whitespace.
    CLIP's pre-tokenizer drops whitespace (its prompt ids do not change), but SentencePiece-style tokenizers
    (MetaCLIP 2, SigLIP 2) turn a trailing space into an extra "▁" token: "hen" and "hen " would be two classes.
    """
    return name.replace("_", " ").strip()


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

    A rule of CLIP's tokenizer only: another backbone's tokenizer may tell such names apart (SigLIP's and MetaCLIP 2's
    are cased), so [`validate_class_names`] applies it only to a CLIP tokenizer or where no tokenizer is at hand;
    [`build_prompt_ids`] compares the prompts' own ids whatever the tokenizer.
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


def is_clip_tokenizer(tokenizer) -> bool:
    """Whether `tokenizer` is CLIP's (`CLIPTokenizer`), the one [`class_name_key`] describes."""
    return isinstance(tokenizer, CLIPTokenizer)


def validate_class_names(class_names, tokenizer=None, *, clip_rule: bool | None = None) -> list[str]:
    """
    Return `class_names` as a list of strings; raise on an empty list, a non-string or a blank name. With no
    `tokenizer`, or a CLIP one, also on two names CLIP's tokenizer cannot tell apart ([`class_name_key`]: they would
    get identical prompts and logits). With another backbone's tokenizer that rule is not applied (it would refuse
    names a cased tokenizer tells apart, e.g. "Cat" and "cat"): [`build_prompt_ids`] refuses names whose prompt ids
    are equal, by that tokenizer. `clip_rule` overrides the choice (False: only the checks any tokenizer needs, e.g.
    before the backbone's tokenizer is loaded).
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
    if clip_rule is None:
        clip_rule = tokenizer is None or is_clip_tokenizer(tokenizer)
    seen = {}
    for index, name in enumerate(class_names):
        if not isinstance(name, str):
            raise TypeError(f"class name at index {index} must be a string, got {type(name).__name__}: {name!r}.")
        if not clip_rule:
            if not clean_class_name(name).strip():
                raise ValueError(f"class name at index {index} is blank ({name!r}).")
            continue
        key = class_name_key(name)
        if key == (".",):
            raise ValueError(f"class name at index {index} is blank ({name!r}).")
        if key in seen:
            first = seen[key]
            raise ValueError(
                f"duplicate class name {name!r} at index {index}: the CLIP tokenizer reads it as the same words as "
                f"{class_names[first]!r} at index {first} (it ignores case and spacing; '_' is a space, as in the "
                "official code), so both would get identical prompts and logits. Give each class a distinct name."
                + ("" if tokenizer is not None else " (CLIP's rule, used where no tokenizer is given.)")
            )
        seen[key] = index
    return class_names


def _leading_specials(ids, special_ids) -> int:
    """How many special tokens open `ids` (CLIP's start token: 1; SigLIP's T5-style tokenizer: 0)."""
    count = 0
    while count < len(ids) and ids[count] in special_ids:
        count += 1
    return count


def _check_prompt_prefix(prompt_prefix) -> None:
    if not isinstance(prompt_prefix, str) or not prompt_prefix.strip():
        raise ValueError(f"`prompt_prefix` must be a non-empty string of context words, got {prompt_prefix!r}.")


def prompt_context_start(tokenizer, prompt_prefix: str) -> int | None:
    """
    Position of the first context token in the prompts `tokenizer` builds (`CoCoOpConfig.prompt_context_start`):
    the count of special tokens it puts before the text (CLIP, MetaCLIP 2: 1; SigLIP: 0). None for a left-padding
    tokenizer, whose prompts start at a different position per class (the prompts carry `context_start`).
    """
    _check_prompt_prefix(prompt_prefix)
    if getattr(tokenizer, "padding_side", "right") == "left":
        return None
    ids = tokenizer(f"{prompt_prefix} x.", add_special_tokens=True)["input_ids"]
    return _leading_specials(ids, set(tokenizer.all_special_ids))


def _row(backbone):
    """The backbones_cocoop row of `backbone` (a row, a model_type or a backbone config)."""
    return backbone if hasattr(backbone, "causal_text") else backbone_of(backbone)


def _wants_attention_mask(tokenizer, backbone) -> bool:
    """An attention mask only for a bidirectional text tower whose tokenizer returns one (contract: SigLIP 2)."""
    if backbone is None:
        return False
    row = _row(backbone)
    return not row.causal_text and "attention_mask" in getattr(tokenizer, "model_input_names", ())


def build_prompt_ids(
    tokenizer, class_names, prompt_prefix: str, n_ctx: int, context_length: int = 77, backbone=None
) -> BatchEncoding:
    """
    Tokenise the CoCoOp prompts `"{prompt_prefix} {class name}."`, as the official PromptLearner does, with the
    backbone's own tokenizer and its special tokens.

    Returns a `BatchEncoding` with
    - `input_ids` (classes, context_length): padded with the tokenizer's pad token on its padding side;
    - `eos_index` (classes,): the position of each prompt's last real token (its EOS where the tokenizer appends one);
    - `name_length` (classes,): the token count of the class name as it stands in the prompt (official CoOp
      `name_lens`, the name tokenised alone, which it equals for CLIP's tokenizer; what `class_token_position`
      "middle"/"front" moves);
    - `context_start` (classes,): the position of each prompt's first context token (after the tokenizer's leading
      special tokens, and after the padding of a left-padding tokenizer). Positions `context_start ..
      context_start + n_ctx - 1` hold the prefix words, whose embeddings the model replaces with the learned context;
    - `attention_mask` (classes, context_length), 1 on real tokens and 0 on padding: only when `backbone` (a
      `backbones_cocoop.Backbone` row, its `model_type` or a backbone config) has a bidirectional text tower and the
      tokenizer returns an attention mask (`"attention_mask" in tokenizer.model_input_names`). Absent otherwise.

    Refused, naming the class: a prompt longer than `context_length`; a name holding one of the tokenizer's special
    tokens (the causal tower pools at EOS; every tower reads them as structure); two names whose prompt ids are equal
    (identical logits); and context words that do not tokenise to `n_ctx` tokens at the context position.
    """
    class_names = validate_class_names(class_names, tokenizer)
    _check_prompt_prefix(prompt_prefix)
    for field, value, minimum in (("n_ctx", n_ctx, 1), ("context_length", context_length, 4)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"`{field}` must be an integer >= {minimum}, got {value!r} ({type(value).__name__}).")
    with_mask = _wants_attention_mask(tokenizer, backbone)
    if tokenizer.pad_token_id is None:
        raise ValueError(
            f"the tokenizer ({type(tokenizer).__name__}) has no pad token: prompts are padded to the text context "
            "with it; load the backbone's own tokenizer (or set tokenizer.pad_token)."
        )
    prefix_ids = tokenizer(prompt_prefix, add_special_tokens=False)["input_ids"]
    if len(prefix_ids) != n_ctx:
        raise ValueError(
            f"the context words {prompt_prefix!r} tokenise to {len(prefix_ids)} tokens, but n_ctx={n_ctx}: "
            "use a ctx_init whose words are single tokens of the backbone's vocabulary."
        )
    special_ids = set(tokenizer.all_special_ids)
    # A name that reads as unknown tokens is still a name (SigLIP's vocabulary has no CJK, say); the unknown token is
    # refused only where it is also a structural one (CLIP's <|endoftext|> is unk, pad and EOS at once).
    unk = tokenizer.unk_token_id
    structural = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    refused = special_ids - ({unk} - structural)
    appends_eos = tokenizer.eos_token_id is not None and _appends_eos(tokenizer)
    names = [clean_class_name(name) for name in class_names]
    encoded = tokenizer([f"{prompt_prefix} {name}." for name in names], add_special_tokens=True)["input_ids"]
    # The prompt of no name at all (the context and '.'): a name whose prompt tokenises to it is read as nothing (a
    # tokenizer that drops punctuation reads '???' so) and would make a prompt of the context alone.
    nameless = tokenizer(f"{prompt_prefix}.", add_special_tokens=True)["input_ids"]
    seen = {}
    lead = []
    for index, (name, ids) in enumerate(zip(class_names, encoded, strict=True)):
        if len(ids) > context_length:
            before = _leading_specials(ids, special_ids)
            raise ValueError(
                f"class name {name!r} makes a prompt of {len(ids)} tokens ({before} special token(s) before, {n_ctx} "
                f"context, the name, '.', end), over the text context of {context_length} (class index {index}): "
                f"shorten this name to at most {context_length - (len(ids) - _name_tokens(ids, before, n_ctx, special_ids))}"
                " name tokens."
            )
        start = _leading_specials(ids, special_ids)
        trailing = len(ids) - _leading_specials(ids[::-1], special_ids)
        body = ids[start + n_ctx : trailing]
        if refused & set(body):
            # The causal text tower pools at the EOS token: one inside the name would end the prompt there.
            found = refused & set(body)
            kind = (
                "start or end token" if found & {tokenizer.bos_token_id, tokenizer.eos_token_id} else "special token"
            )
            tokens = sorted(tokenizer.convert_ids_to_tokens(i) for i in found)
            raise ValueError(
                f"class name {name!r} (index {index}) contains the tokenizer's {kind} {tokens}: remove it from the name."
            )
        if ids == nameless or not body:
            raise ValueError(
                f"class name {name!r} (index {index}) tokenises to nothing with this tokenizer "
                f"({type(tokenizer).__name__}): its prompt would be the context alone, like a blank name. Give it a "
                "name of words the tokenizer reads."
            )
        if ids[start : start + n_ctx] != prefix_ids:
            raise ValueError(
                f"the context words {prompt_prefix!r} tokenise differently inside the prompt of class {name!r} "
                f"(index {index}): {ids[start : start + n_ctx]} at positions {start}..{start + n_ctx - 1} instead of "
                f"{prefix_ids}; the learned context replaces exactly those tokens, so use context words the tokenizer "
                "splits the same way alone and before a name."
            )
        if appends_eos and ids[-1] != tokenizer.eos_token_id:
            raise ValueError(f"unexpected tokenisation of the prompt for class {name!r}: {ids} does not end with EOS.")
        first = seen.setdefault(tuple(ids), index)
        if first != index:
            raise ValueError(
                f"duplicate class name {name!r} at index {index}: it tokenises to the same prompt ids as "
                f"{class_names[first]!r} at index {first}, so both would get identical logits. Give each class a "
                "distinct name."
            )
        lead.append(start)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    input_ids = torch.full((len(encoded), context_length), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), context_length), dtype=torch.long)
    offsets = [context_length - len(ids) if left else 0 for ids in encoded]
    for row, (ids, offset) in enumerate(zip(encoded, offsets, strict=True)):
        input_ids[row, offset : offset + len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, offset : offset + len(ids)] = 1
    eos_index = torch.tensor([offset + len(ids) - 1 for ids, offset in zip(encoded, offsets, strict=True)])
    context_start = torch.tensor([offset + start for start, offset in zip(lead, offsets, strict=True)])
    # Official CoOp trainers/coop.py: name_lens = len(_tokenizer.encode(name)), the name tokenised on its own. Counted
    # here inside the prompt (its tokens after the context, less those of the '.'): the same for CLIP's, XLM-R's and
    # T5's tokenizers, but a Gemma-style one (SigLIP 2, no prefix space) cuts "goldfish" alone and " goldfish" after
    # the context differently. Only a model with class_token_position "middle"/"front" reads it.
    # A CLIP backbone keeps the official count exactly (they differ only where a name's last characters merge with the
    # '.', e.g. "Mr." + "." -> "..").
    clip_backbone = backbone is None or _row(backbone).model_type == "clip"  # no backbone: CLIP, as before
    if clip_backbone or is_clip_tokenizer(tokenizer):
        name_length = torch.tensor([len(ids) for ids in tokenizer(names, add_special_tokens=False)["input_ids"]])
    else:
        dot = _name_tokens(tokenizer(f"{prompt_prefix}.")["input_ids"], lead[0] if lead else 0, n_ctx, special_ids)
        in_prompt = [_name_tokens(ids, start, n_ctx, special_ids) for ids, start in zip(encoded, lead, strict=True)]
        name_length = torch.tensor([count - dot for count in in_prompt])
    encoding = {
        "input_ids": input_ids,
        "eos_index": eos_index.long(),
        "name_length": name_length.long(),
        "context_start": context_start.long(),
    }
    if with_mask:
        encoding["attention_mask"] = attention_mask
    return BatchEncoding(encoding)


def prompt_markers(tokenizer, prompt_prefix: str, backbone) -> tuple[tuple[int, ...], int | None, bool]:
    """
    What every prompt `build_prompt_ids` makes with `tokenizer` carries, to recognise prompts built for another
    backbone: the ids of the special tokens before the context (CLIP `<|startoftext|>`, MetaCLIP 2 `<s>`, SigLIP
    none), the EOS id at `eos_index` (None where the tokenizer appends no EOS) and whether the prompts carry an
    attention mask.
    """
    _check_prompt_prefix(prompt_prefix)
    ids = tokenizer(f"{prompt_prefix} x.", add_special_tokens=True)["input_ids"]
    lead = tuple(ids[: _leading_specials(ids, set(tokenizer.all_special_ids))])
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None and _appends_eos(tokenizer) else None
    return lead, eos, _wants_attention_mask(tokenizer, backbone)


def _appends_eos(tokenizer) -> bool:
    """Whether the tokenizer ends a text with its EOS token (CLIP, XLM-R, T5 do; Gemma's does not by default)."""
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[-1] == tokenizer.eos_token_id


def _name_tokens(ids, before: int, n_ctx: int, special_ids) -> int:
    """Tokens of a prompt between the context and the trailing special tokens (the name and its '.')."""
    trailing = len(ids) - _leading_specials(ids[::-1], special_ids)
    return max(trailing - before - n_ctx, 0)
