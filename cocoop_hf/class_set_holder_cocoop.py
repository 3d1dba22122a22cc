"""
The class set a CoCoOp model holds, and the class prompts of each call: a mixin of `CoCoOpModel`.

The held class set is one immutable [`ClassSet`] record in `model._class_set`, replaced whole by `set_class_names` and
read once per call; a call's prompts are the given ones (checked) or the held ones. Also here: names -> prompt ids
with the model's tokenizer (`class_prompts`) and the zero-shot features of KgCoOp or PromptSRC's teacher
(`zero_shot_text_features`; the held class set's: `zero_shot_embeds`). This file
travels with the code of every saved folder (the modeling file imports it), so it may import only torch,
transformers and its sibling files.
"""

import torch
from transformers import BatchEncoding

from .backbones_cocoop import backbone_of, text_context
from .class_set_cocoop import (
    ClassPrompts,
    ClassSet,
    build_class_prompts,
    check_class_specific,
    held_teacher,
    zero_shot_text_features,
)
from .context_start_cocoop import agreed_context_start
from .model_inputs_cocoop import check_class_prompts
from .processing_cocoop import build_prompt_ids, validate_class_names
from .prompt_ids_cocoop import prompt_markers
from .promptsrc_cocoop import needs_teacher, teacher_text_features
from .tokenizer_check_cocoop import check_backbone_tokenizer


class ClassSetHolder:
    """
    The class set a model holds, as a mixin of `CoCoOpModel` (which supplies `config`, `tokenizer`,
    `prompt_learner` and `text_encoder`): one immutable [`ClassSet`] record in
    `self._class_set`, replaced whole by `set_class_names`, read once per call. Derived from the names, never saved
    (`from_pretrained` rebuilds it from config.id2label). Not buffers: a loaded model's non-persistent buffers hold
    uninitialised memory, and several tensors assigned one by one can be seen half-swapped by another thread.
    """

    _class_set: ClassSet | None

    def set_class_names(self, class_names, tokenizer=None) -> None:
        """
        Change the class set the model holds (used when `forward` gets no class prompts), keeping the learned
        weights; updates `config.id2label`. To score another class set for one call, pass its prompts to `forward`
        instead: this method changes the model for every caller. The new class set replaces the old one as a whole:
        a forward running in another thread uses one or the other, never a mix.
        """
        self._hold_class_names(class_names, tokenizer)

    def _hold_class_names(self, class_names, tokenizer=None, lazy_source: str | None = None) -> None:
        """
        `set_class_names`; with `lazy_source` (where the names come from, e.g. a config.json), the names are checked
        now ([`validate_class_names`]) but tokenised, with KgCoOp's zero-shot features, at the first call that uses the
        held class set, whose errors then name `lazy_source`: `from_pretrained` loads a config with very many classes
        without tokenising them all. A class-specific context is always built now (its class count is bounded by
        its weights, and its class set is checked against them).
        """
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        # a list: a generator would be consumed by the check
        class_names = validate_class_names(class_names, tokenizer)
        if tokenizer is None:
            raise ValueError(
                "no tokenizer to build prompts with: pass `tokenizer=` (the backbone's tokenizer) to set_class_names."
            )
        check_backbone_tokenizer(tokenizer, self.config.backbone_config)
        class_set = ClassSet(tuple(class_names), tokenizer, source=lazy_source)
        if lazy_source is None or self.config.class_specific_context:
            class_set.prompts(self._build_class_prompts)  # errors here, before anything is changed
        self._class_set = class_set  # the one assignment that swaps the class set
        self.tokenizer = tokenizer
        self.config.id2label = dict(enumerate(class_set.names))
        self.config.label2id = {name: i for i, name in enumerate(class_set.names)}

    def _build_class_prompts(self, class_set: ClassSet) -> ClassPrompts:
        """The tensors of `class_set` for this model, checked (class_set_cocoop.build_class_prompts)."""
        return build_class_prompts(self, class_set)

    def _held_prompts(self) -> ClassPrompts:
        """The prompts of the held class set (built at first use), on the prompt learner's device."""
        return self._held()[1]

    def _held(self) -> tuple[ClassSet, ClassPrompts]:
        """The held class set and its prompts (built at first use, on the prompt learner's device), of one read."""
        held = self._class_set  # read once: this call uses this class set whatever another thread sets meanwhile
        if held is None:
            raise ValueError(
                "this model holds no class prompts: pass class prompts (input_ids and eos_index from "
                "CoCoOpProcessor(class_names=...) or model.class_prompts(names)), or call "
                "model.set_class_names(class_names, tokenizer=...) first."
            )
        return held, held.prompts(self._build_class_prompts).to(self.prompt_learner.ctx.device)

    def _held_teacher(self, class_set: ClassSet) -> torch.Tensor:
        """PromptSRC's teacher of `class_set` (the held one, as read by this call): computed at its first need, then
        kept with its prompts (class_set_cocoop.held_teacher)."""
        return held_teacher(self, class_set)

    def _apply(self, fn, *args, **kwargs):
        # `.to(device)`, `.half()`, `.cuda()`: the held prompts follow the weights, as buffers would.
        super()._apply(fn, *args, **kwargs)
        held = getattr(self, "_class_set", None)
        if held is not None:
            self._class_set = held.applied(fn)
        return self

    @property
    def class_names(self) -> list[str] | None:
        held = self._class_set
        return list(held.names) if held is not None else None

    # The held class set's tensors (built on first use), read-only; each property reads the record on its own, so
    # code that needs several of them together uses one `_held_prompts()`.
    @property
    def prompt_ids(self) -> torch.Tensor:
        return self._held_prompts().input_ids

    @property
    def eos_index(self) -> torch.Tensor:
        return self._held_prompts().eos_index

    @property
    def name_length(self) -> torch.Tensor:
        return self._held_prompts().name_length

    @property
    def context_start(self) -> torch.Tensor:
        return self._held_prompts().context_start

    @property
    def zero_shot_embeds(self) -> torch.Tensor:
        """
        The frozen zero-shot text features of the held class set, (classes, embed_dim), L2-normalised: KgCoOp's, or
        PromptSRC's teacher where its text or logits term has a weight (computed here if no labelled forward has
        yet, then kept with the class set); empty for the other methods.
        """
        class_set, prompts = self._held()
        if needs_teacher(self.config):
            return self._held_teacher(class_set)
        return prompts.zero_shot

    def class_prompts(self, class_names, tokenizer=None) -> BatchEncoding:
        """
        Prompt token ids for `class_names` with this model's context words: `input_ids` (classes, text context),
        `eos_index`, `name_length` and `context_start` (classes,) [and `attention_mask` for SigLIP 2], what
        `CoCoOpProcessor(class_names=...)` gives. Pass them to `forward` or `get_text_features` to use another class
        set for one call; the model is not changed.
        """
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if tokenizer is None:
            raise ValueError("no tokenizer to build prompts with: pass `tokenizer=` (the backbone's tokenizer).")
        backbone_config = self.config.backbone_config
        return build_prompt_ids(
            tokenizer,
            class_names,
            self.config.prompt_prefix,
            self.config.prompt_prefix_tokens,  # all the context words (deep prompts may learn only the first n_ctx)
            text_context(backbone_config),
            backbone=backbone_config,
        )

    @torch.no_grad()
    def zero_shot_text_features(self, class_names, tokenizer=None) -> torch.Tensor:
        """
        The frozen zero-shot text features `(classes, embed_dim)`, L2-normalised, that the model's regulariser pulls
        towards. KgCoOp: the frozen backbone's text features of `config.kgcoop_template.format(name)` (official
        KgCoOp `trainers/kgcoop.py`: `clip_model_.encode_text(temp.format(c))`). PromptSRC (`config.method_name ==
        "promptsrc"`): the mean of the unnormalised frozen text features over its 60 templates, normalised (official
        `trainers/promptsrc.py` `fixed_embeddings`; `promptsrc_cocoop.teacher_text_features`). `_` in a name is read
        as a space, as in the prompts. The model is not changed.
        """
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        class_names = validate_class_names(class_names, tokenizer)
        if tokenizer is None:
            raise ValueError("no tokenizer to build the zero-shot prompts with: pass `tokenizer=`.")
        if self.config.method_name == "promptsrc":
            teacher = teacher_text_features(self.clip, class_names, tokenizer, self.config.text_chunk_tokens)
            return teacher.to(device=self.prompt_learner.ctx.device, dtype=self.prompt_learner.ctx.dtype)
        return zero_shot_text_features(self, class_names, tokenizer)

    def _check_prompt_markers(self, input_ids, eos_index, context_start, attention_mask) -> None:
        """
        Given class prompts must be this model's kind (prompt_ids_cocoop.prompt_markers of its tokenizer): the EOS
        id at each `eos_index` where its tokenizer appends one, its start tokens right before each `context_start`,
        an attention mask exactly where its prompts carry one. Prompts built by another backbone's tokenizer (SigLIP's
        for a CLIP model, MetaCLIP 2's `<s>` for CLIP's `<|startoftext|>`) or a SigLIP 2 prompt without its mask
        would otherwise run and give wrong logits. Without a tokenizer (none loaded) there is nothing to compare.
        """
        tokenizer = self.tokenizer
        if tokenizer is None:
            return
        backbone_config = self.config.backbone_config
        lead, eos, with_mask = prompt_markers(tokenizer, self.config.prompt_prefix, backbone_config)
        display = backbone_of(backbone_config).display_name
        help_text = (
            f"build them for this model ({display}, tokenizer {type(tokenizer).__name__}) with model.class_prompts("
            "class_names) or its CoCoOpProcessor(class_names=...)"
        )
        if with_mask and attention_mask is None:
            raise ValueError(
                f"class prompts need `attention_mask`: this model's prompts ({display}) carry one (its tokenizer "
                f"masks padding, and the text tower reads the mask); pass it with input_ids, or {help_text}."
            )
        if not with_mask and attention_mask is not None:
            raise ValueError(
                f"class prompts of this model ({display}) carry no `attention_mask` (its text tower attends to the "
                f"padding, as it was trained): these prompts were built for another backbone; {help_text}."
            )
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        if eos is not None:
            found = input_ids[rows, eos_index.to(input_ids.device)]
            bad = (found != eos).nonzero().flatten().tolist()
            if bad:
                raise ValueError(
                    f"class prompts for classes {bad[:5]} do not hold this model's EOS token (id {eos}) at "
                    f"`eos_index` (found ids {found[bad].tolist()[:5]}): they were built for another backbone or "
                    f"`eos_index` is wrong; {help_text}."
                )
        if lead:
            start = context_start.to(input_ids.device)
            offsets = start[:, None] - len(lead) + torch.arange(len(lead), device=input_ids.device)[None, :]
            found = input_ids[rows[:, None], offsets.clamp(min=0)]
            expected = torch.tensor(lead, dtype=input_ids.dtype, device=input_ids.device)
            bad = ((start < len(lead)) | (found != expected).any(dim=1)).nonzero().flatten().tolist()
            if bad:
                tokens = tokenizer.convert_ids_to_tokens(list(lead))
                raise ValueError(
                    f"class prompts for classes {bad[:5]} do not hold this model's start token(s) {tokens} (ids "
                    f"{list(lead)}) right before `context_start` (got {start[bad].tolist()[:5]}): they were built for "
                    f"another backbone; {help_text}."
                )

    def _prompts(self, input_ids, eos_index, name_length=None, context_start=None, attention_mask=None):
        """
        The class prompts of this call and the held class set they belong to: the given ones (checked; `zero_shot`
        empty) and None, else the class set the model holds, read once, and its prompts.
        """
        if all(x is None for x in (input_ids, eos_index, name_length, context_start, attention_mask)):
            class_set, prompts = self._held()
            return prompts, class_set
        if attention_mask is not None and backbone_of(self.config.backbone_config).causal_text:
            # Causal towers pool at EOS: padding after it is never seen, and their prompts carry no mask. A text
            # tokenizer's mask here means plain texts were passed where class prompts belong.
            raise TypeError(
                f"{type(self).__name__}.forward() got an unexpected keyword argument 'attention_mask': class prompts "
                f"of a causal text tower ({backbone_of(self.config.backbone_config).display_name}) carry no attention "
                "mask; pass what model.class_prompts(class_names) or CoCoOpProcessor(class_names=...) returns."
            )
        start = check_class_prompts(input_ids, eos_index, self.config, name_length, context_start, attention_mask)
        self._check_prompt_markers(input_ids, eos_index, start, attention_mask)
        if context_start is not None:  # the same agreement with config.prompt_context_start as the held class set's
            start = agreed_context_start(start, eos_index.to(start.device), input_ids.shape[1], self.config)
        device = self.prompt_learner.ctx.device
        if self.config.class_specific_context:
            held_set = self._class_set  # read once
            held = held_set.prompts(self._build_class_prompts) if held_set is not None else None
            check_class_specific(self, None, input_ids, eos_index, held)

        def moved(tensor):
            return tensor.to(device) if tensor is not None else None

        given = ClassPrompts(
            moved(input_ids),
            moved(eos_index),
            moved(name_length),
            torch.empty(0, 0),
            moved(start),
            moved(attention_mask),
        )
        return given, None
