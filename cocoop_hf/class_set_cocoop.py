"""
The class set a CoCoOp model holds: its names and the tokenizer they are read with, and (built once, at first use)
their prompt ids, EOS positions, name lengths and KgCoOp's zero-shot text features; PromptSRC's text teacher is
computed later still, by the first call whose loss needs it, and kept in the built record (`ClassPrompts.derived`).

It is ONE immutable record, swapped with a single attribute assignment: a forward that reads the record once sees
one whole class set, never the prompt ids of one and the EOS positions of another, while another thread calls
`set_class_names`. Also here: building a record's tensors for a model (KgCoOp's zero-shot features through the
model's prompt text encoder), and the checks a class set must pass (names that fit a moved class token, the trained
classes of a class-specific context). This file travels with the code of every saved folder (the modeling file
imports it), so it may import only torch, transformers and its sibling files.
"""

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .backbones_cocoop import backbone_of, text_context
from .context_start_cocoop import agreed_context_start
from .processing_cocoop import class_name_key, clean_class_name


@dataclass(frozen=True)
class ClassPrompts:
    """The tensors of one class set: `input_ids` (classes, L), `eos_index`, `name_length` and `context_start`
    (classes,), `zero_shot` (classes, embed_dim) for KgCoOp, else an empty tensor (PromptSRC's teacher is a `derived`
    entry, computed where a loss needs it), and `attention_mask` (classes, L) where the prompts carry one (a
    bidirectional backbone whose tokenizer returns it), else None."""

    input_ids: torch.Tensor
    eos_index: torch.Tensor
    name_length: torch.Tensor | None
    zero_shot: torch.Tensor
    context_start: torch.Tensor
    attention_mask: torch.Tensor | None = None
    # Pure facts of this record's class set, computed once per record (`derived`): the text encoders' facts of the
    # tensors, PromptSRC's teacher of the names (the class set's and the frozen backbone's alone).
    _derived: dict = field(default_factory=dict, repr=False, compare=False)

    def derived(self, key: str, compute: Callable[["ClassPrompts"], Any]) -> Any:
        """`compute(self)`, kept in the record: a held class set's prompts pay for it once, not at every call. Two
        first callers may both compute it (pure: equal results); one dict assignment publishes it.

        Not shared mutable state in the sense of the project's rule: an entry is written once, from absent to a
        whole value, by one dict assignment (atomic for readers), and it is what `compute` would return to any
        caller, so no result depends on who filled it or when: a cache of a pure function, like the lazily built
        record itself. A moved or cast record (`apply`) starts with none."""
        if key not in self._derived:
            self._derived[key] = compute(self)
        return self._derived[key]

    def apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "ClassPrompts":
        """The same prompts after `fn` (what `Module._apply` gives: `.to(device)`, `.half()`, ...)."""

        def maybe(tensor):
            return fn(tensor) if tensor is not None else None

        return ClassPrompts(
            fn(self.input_ids),
            fn(self.eos_index),
            maybe(self.name_length),
            fn(self.zero_shot),
            fn(self.context_start),
            maybe(self.attention_mask),
        )

    def to(self, device) -> "ClassPrompts":
        """On `device` (itself when already there: the usual case, no copy)."""
        if self.input_ids.device == torch.device(device):
            return self
        return self.apply(lambda tensor: tensor.to(device))

    @property
    def device(self) -> torch.device:
        return self.input_ids.device


@dataclass(frozen=True, eq=False)
class ClassSet:
    """
    Names (in label order) and the tokenizer that reads them; `source` says where the names came from, for the errors of
    a build deferred to first use (None: built at once). The prompts are a pure function of the names, the tokenizer and the model's config, so they are
    built on first use ([`ClassSet.prompts`]) and kept in the record: loading a model with very many classes tokenises
    nothing until the held class set is used.
    """

    names: tuple[str, ...]
    tokenizer: Any = field(repr=False)
    source: str | None = None
    # Written once, from None to the built prompts (see `prompts`); everything else is fixed at construction.
    _built: ClassPrompts | None = field(default=None, repr=False)

    def prompts(self, build: Callable[["ClassSet"], ClassPrompts]) -> ClassPrompts:
        """
        The built prompts, building them with `build(self)` on the first call. Two first callers may both build (the
        build is pure and gives equal tensors); each uses its own result and one of them is kept: a reader never sees
        a half-built record, because the record is published by one attribute assignment.
        """
        built = self._built  # read once
        if built is None:
            built = build(self)
            object.__setattr__(self, "_built", built)
        return built

    @property
    def built(self) -> ClassPrompts | None:
        return self._built

    def applied(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "ClassSet":
        """A new record whose built prompts went through `fn` (the model's `_apply`); not built yet: unchanged."""
        built = self._built
        if built is None:
            return self
        moved = built.apply(fn)
        # `to_empty` and friends leave no data: build again at first use rather than keep uninitialised ids.
        return replace(self, _built=None if moved.device.type == "meta" else moved)

    def __len__(self) -> int:
        return len(self.names)


# ---------------------------------------------------------------------------------------------- building and checks


def build_class_prompts(model, class_set: ClassSet) -> ClassPrompts:
    """
    The tensors of `class_set` for `model` (a CoCoOpModel), on its prompt learner's device, checked against the model.
    Pure: the model is not changed. Errors of a build deferred to first use name where the names came from.
    """
    names = list(class_set.names)
    config = model.config
    try:
        with torch.inference_mode(False):  # built under inference_mode, they would be unusable for training
            encoding = model.class_prompts(names, tokenizer=class_set.tokenizer)
            device = model.prompt_learner.ctx.device
            context_start = agreed_context_start(
                encoding.get("context_start"), encoding["eos_index"], encoding["input_ids"].shape[1], config
            )
            if config.class_specific_context:
                held = model._class_set.built if model._class_set is not None else None
                check_class_specific(model, names, encoding["input_ids"], encoding["eos_index"], held)
            if config.class_token_position != "end":
                check_name_lengths(encoding["name_length"], encoding["eos_index"], config, names, context_start)
            zero_shot = torch.empty(0, 0, device=device)
            # KgCoOp's frozen text features (one template: one text pass per class), computed once per class set.
            # PromptSRC's teacher (60 templates) is not built here: it is needed only for a loss (held_teacher).
            if config.kgcoop_weight > 0:
                zero_shot = model.zero_shot_text_features(names, tokenizer=class_set.tokenizer)
    except ValueError as error:
        if class_set.source is None:
            raise
        raise ValueError(f"the class names of {class_set.source}: {error}") from error
    mask = encoding.get("attention_mask")
    return ClassPrompts(
        encoding["input_ids"].to(device),
        encoding["eos_index"].to(device),
        encoding["name_length"].to(device),
        zero_shot,
        context_start.to(device),
        mask.to(device) if mask is not None else None,
    )


# The `ClassPrompts.derived` key of PromptSRC's frozen text teacher.
PROMPTSRC_TEACHER = "promptsrc_teacher"


def held_teacher(model, class_set: ClassSet) -> torch.Tensor:
    """
    PromptSRC's frozen text teacher `(classes, embed_dim)` of the held `class_set`, on the prompt learner's device:
    computed by the first call that needs it (a forward with `labels` and a text or logits weight above 0, or
    `model.zero_shot_embeds`), then kept in the class set's built prompts. A class set so pays its 60 x classes text
    passes once, and only where a loss needs them: building, loading and scoring a class set run none, and a name
    that fits the model's own prompt but not one of the 60 templates is refused only there. The official
    trainers/promptsrc.py also computes `fixed_embeddings` once per class set (VLPromptLearner.__init__), eagerly;
    later gives the same numbers, the backbone being frozen. Errors of a class set read from a file name it.
    """
    built = class_set.prompts(model._build_class_prompts)  # the record class_set keeps: the memo lives in it

    def compute(_prompts: ClassPrompts) -> torch.Tensor:
        try:
            with torch.inference_mode(False):  # built under inference_mode, it would be unusable for training
                return model.zero_shot_text_features(class_set.names, tokenizer=class_set.tokenizer)
        except ValueError as error:
            if class_set.source is None:
                raise
            raise ValueError(f"the class names of {class_set.source}: {error}") from error

    return built.derived(PROMPTSRC_TEACHER, compute).to(model.prompt_learner.ctx.device)


def zero_shot_text_features(model, class_names, tokenizer) -> torch.Tensor:
    """
    KgCoOp's frozen zero-shot text features `(classes, embed_dim)`, L2-normalised: the frozen backbone's text
    features of `config.kgcoop_template.format(name)` (`_` in a name read as a space, as in the prompts), tokenised
    as the backbone reads texts: a causal tower up to each EOS; a bidirectional one padded to its text context
    (SigLIP is pooled at the last position, as trained), with the attention mask where its tokenizer gives one.
    Official KgCoOp `trainers/kgcoop.py`: `clip_model_.encode_text(temp.format(c))`.
    """
    config = model.config
    template = config.kgcoop_template
    texts = [template.format(clean_class_name(name)) for name in class_names]
    context = text_context(config.backbone_config)
    causal = backbone_of(config.backbone_config).causal_text
    encoded = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    for name, ids in zip(class_names, encoded, strict=True):
        if len(ids) > context or (causal and ids[-1] != tokenizer.eos_token_id):
            raise ValueError(
                f"the zero-shot prompt of class {name!r} ({template!r}) makes {len(ids)} tokens, over the text "
                f"context of {context}: shorten the name or `kgcoop_template`."
            )
    device = model.prompt_learner.ctx.device
    if causal:
        ids = torch.full((len(encoded), max(map(len, encoded))), tokenizer.pad_token_id, dtype=torch.long)
        for row, tokens in enumerate(encoded):
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        eos = torch.tensor([len(t) - 1 for t in encoded], device=device)
        return model.text_encoder.text_features(ids.to(device), eos_index=eos)
    padded = tokenizer(texts, padding="max_length", max_length=context, truncation=False, return_tensors="pt")
    mask = padded.get("attention_mask") if "attention_mask" in tokenizer.model_input_names else None
    mask = mask.to(device) if mask is not None else None
    return model.text_encoder.text_features(padded["input_ids"].to(device), attention_mask=mask)


def check_name_lengths(
    name_length: torch.Tensor, eos_index: torch.Tensor, config, names=None, context_start=None
) -> None:
    """For "middle"/"front": each class name, moved as a block of `name_length` tokens, must fit in its prompt."""
    start = context_start.to(name_length.device) if context_start is not None else 1
    room = eos_index.to(name_length.device) - start - config.n_ctx  # the name and '.' sit between context and EOS
    start_text = "1" if context_start is None or bool((context_start == 1).all()) else "context_start"
    bad = ((name_length < 1) | (name_length > room)).nonzero().flatten().tolist()
    if bad:
        shown = [names[i] for i in bad[:5]] if names is not None else bad[:5]
        raise ValueError(
            f"`name_length` must lie in [1, eos_index - {start_text} - n_ctx] (the tokens between the context and EOS) for "
            f'class_token_position="{config.class_token_position}", got {name_length[bad].tolist()[:5]} for classes '
            f"{shown}: a name that tokenises to more tokens alone than inside its prompt cannot be moved; build the "
            "prompts with the model's processor or model.class_prompts(class_names), or rename those classes."
        )


def check_class_specific(
    model, class_names, input_ids: torch.Tensor, eos_index: torch.Tensor, held: ClassPrompts | None = None
) -> None:
    """
    A class-specific context belongs to the classes it was trained on: refuse any other class set. `held`: the
    prompts of the class set the model holds (compared token by token), else the names are compared with
    `config.id2label`.
    """
    rows = model.prompt_learner.ctx.shape[0]
    why = (
        f"this model has a class-specific context (class_specific_context=True: one learned context per class, "
        f"{rows} classes), which exists only for the classes it was trained on and cannot score other classes"
    )
    if input_ids.shape[0] != rows:
        raise ValueError(f"{why}; got prompts for {input_ids.shape[0]} classes.")
    if held is not None:
        held_ids, held_eos = held.input_ids, held.eos_index
        length = min(held_ids.shape[1], input_ids.shape[1])
        eos_index = eos_index.to(held_eos.device)
        inside = torch.arange(length, device=held_eos.device)[None, :] <= held_eos[:, None]
        same = torch.equal(eos_index, held_eos) and bool(
            ((input_ids[:, :length].to(held_ids.device) == held_ids[:, :length]) | ~inside).all()
        )
        if not same:
            raise ValueError(f"{why}; {_class_set_difference(model.class_names, input_ids, eos_index, held)}")
    elif class_names is not None:
        expected = model.config.class_names
        if [class_name_key(n) for n in class_names] != [class_name_key(n) for n in expected]:
            raise ValueError(f"{why}: {expected[:5]}...; got {list(class_names)[:5]}...")


def _class_set_difference(names, input_ids: torch.Tensor, eos_index: torch.Tensor, held: ClassPrompts) -> str:
    """How the given class prompts differ from the held ones, by class name: other classes, or another order."""

    def prompts(ids, eos):  # each class's tokens up to its EOS: what defines the class for the text tower
        return [tuple(row[: int(end) + 1]) for row, end in zip(ids.tolist(), eos.tolist(), strict=True)]

    held = prompts(held.input_ids, held.eos_index)
    given = prompts(input_ids, eos_index)
    names = names if names is not None and len(names) == len(held) else [f"class {i}" for i in range(len(held))]
    position = {prompt: i for i, prompt in enumerate(held)}
    if sorted(given) == sorted(held):
        order = [names[position[prompt]] for prompt in given]
        moved = [f"{names[i]!r} at position {order.index(names[i])}" for i in range(len(held)) if order[i] != names[i]]
        return (
            f"the given prompts are its classes in another order ({', '.join(moved[:3])}, ...): pass them in the "
            f"trained order {names[:10]}{' ...' if len(names) > 10 else ''} (labels are positions)."
        )
    unknown = [i for i, prompt in enumerate(given) if prompt not in position]
    missing = [names[i] for i, prompt in enumerate(held) if prompt not in set(given)]
    return (
        f"the given prompts hold {len(unknown)} class(es) it was not trained on (at positions {unknown[:5]}) and "
        f"lack {missing[:5]}{' ...' if len(missing) > 5 else ''}. Use a shared-context model (CoOp/CoCoOp) for "
        "other classes."
    )
