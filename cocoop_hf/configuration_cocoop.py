"""CoCoOp configuration: data only (the backbone's config is a sub-config chosen by its `model_type`)."""

import math
import os
from collections.abc import Mapping

from transformers import AutoConfig, CLIPConfig, PretrainedConfig
from transformers.utils import logging

from .backbones_cocoop import (
    BACKBONES,
    DEEP_PROMPT_BACKBONES,
    backbone_config_from_dict,
    backbone_of,
    embed_dim,
    text_context,
)
from .limits_cocoop import (
    MAX_MODEL_CONFIG_BYTES,
    check_backbone_config,
    check_class_count,
    check_file_size,
    check_weights_cover_config,
    describe_value,
)


logger = logging.get_logger(__name__)


# The fields `CoCoOpConfig.__init__` checks (beyond `backbone_config` / `clip_config`).
_CHECKED_FIELDS = (
    "prompt_context_start",
    "n_ctx",
    "ctx_init",
    "meta_net_reduction",
    "conditional",
    "clip_name_or_path",
    "clip_revision",
    "adapter_only",
    "text_chunk_tokens",
    "bucket_by_length",
    "class_token_position",
    "class_specific_context",
    "kgcoop_weight",
    "kgcoop_template",
    "prompt_depth_text",
    "prompt_depth_vision",
    "n_ctx_vision",
    "vision_prompts_from_text",
    "promptsrc_text_weight",
    "promptsrc_image_weight",
    "promptsrc_logits_weight",
    "frozen_clip_dtype",
    "id2label",
    "label2id",
)


def _check_int(field: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{field}` must be a positive integer, got {describe_value(value)}.")


def _check_weight(field: str, value, official: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(
            f"`{field}` must be a finite number >= 0 (0 turns the term off; {official}), got {describe_value(value)}."
        )


# Official CoOp `TRAINER.COOP.CLASS_TOKEN_POSITION` (trainers/coop.py PromptLearner.forward).
CLASS_TOKEN_POSITIONS = ("end", "middle", "front")


def _checked_id2label(id2label) -> dict[int, str]:
    """`id2label` as `{0: name, 1: name, ...}`; JSON keys ("0", "1", ...) become ints, as transformers does."""
    if not isinstance(id2label, Mapping):
        raise ValueError(
            f"`id2label` must be a mapping from class index to class name, got {describe_value(id2label)}: pass "
            'dict(enumerate(class_names)) (in config.json: {"0": "name", "1": ...}).'
        )
    check_class_count(len(id2label), "`id2label`", mapping=True)  # before any work sized by it
    checked = {}
    for key, name in id2label.items():
        # At most 9 digits: a longer key is no class index under MAX_CLASSES, and int() of a huge one is slow.
        if isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 9:
            index = int(key)
        elif isinstance(key, int) and not isinstance(key, bool):
            index = key
        else:
            raise ValueError(f"`id2label` keys must be class indices 0, 1, ..., got the key {describe_value(key)}.")
        if index in checked:
            raise ValueError(
                f"`id2label` has the class index {index} twice (keys {describe_value(key)} and another spelling)."
            )
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"`id2label[{index}]` must be a non-empty class name, got {describe_value(name)}.")
        checked[index] = name
    if sorted(checked) != list(range(len(checked))):
        missing = sorted(set(range(len(checked))) - set(checked))
        extra = sorted(set(checked) - set(range(len(checked))))
        raise ValueError(
            f"`id2label` keys must be exactly 0..{len(checked) - 1} (one per class, labels are positions), got "
            f"{describe_value(sorted(checked), 200)}: missing {describe_value(missing, 200, typed=False)}, unexpected "
            f"{describe_value(extra, 200, typed=False)}."
        )
    names = {}
    for index in range(len(checked)):
        first = names.setdefault(checked[index], index)
        if first != index:
            raise ValueError(
                f"`id2label` names class {first} and class {index} both {describe_value(checked[index])}: each class "
                "needs its own name (label2id could not map both)."
            )
    return {index: checked[index] for index in range(len(checked))}


def _checked_backbone_config(config, keyword: str) -> PretrainedConfig:
    """
    The backbone config given as `keyword` (`backbone_config` or its old name `clip_config`): a config of one of the
    supported backbones, or its dict (limits checked before the config class builds anything sized by it).
    """
    if isinstance(config, dict):
        check_backbone_config(config, source=keyword)
        return backbone_config_from_dict(config)
    if not isinstance(config, PretrainedConfig):
        if keyword == "clip_config":  # the old name: its old message, and where the other backbones go
            expected = "CLIPConfig or a dict"
            more = " (its new name `backbone_config` also takes MetaClip2Config, SiglipConfig, Siglip2Config)"
        else:
            expected, more = "CLIPConfig, MetaClip2Config, SiglipConfig, Siglip2Config or a dict", ""
        raise TypeError(f"`{keyword}` must be a {expected}, got {type(config).__name__}{more}.")
    row = backbone_of(getattr(config, "model_type", None) or type(config).__name__)
    if not isinstance(config, row.config_class):
        raise TypeError(
            f"`{keyword}` is a {type(config).__name__} with model_type {config.model_type!r}, not a "
            f"{row.config_class.__name__}: pass the backbone's own config class (supported: {sorted(BACKBONES)})."
        )
    check_backbone_config(config, source=keyword)
    return config


def _is_deep(prompt_depth_text: int, prompt_depth_vision: int, vision_prompts_from_text: bool) -> bool:
    return prompt_depth_text > 1 or prompt_depth_vision > 0 or vision_prompts_from_text


def _checked_deep_prompts(
    backbone, depth_text, depth_vision, n_ctx_vision, from_text: bool, promptsrc_weights
) -> bool:
    """
    The deep-prompt fields checked against each other and the backbone's layers; whether the config has deep prompts.
    Official multimodal-prompt-learning `clip/model.py` / trainers (IVLP, MaPLe) and PromptSRC `trainers/promptsrc.py`.
    """
    if isinstance(depth_text, bool) or not isinstance(depth_text, int) or depth_text < 1:
        raise ValueError(
            f"`prompt_depth_text` must be an integer >= 1 (layer 0 always reads the context; official "
            f"PROMPT_DEPTH_TEXT >= 1), got {describe_value(depth_text)}."
        )
    if isinstance(depth_vision, bool) or not isinstance(depth_vision, int) or depth_vision < 0:
        raise ValueError(
            f"`prompt_depth_vision` must be an integer >= 0 (0: no vision prompts), got {describe_value(depth_vision)}."
        )
    for field, weight, official in zip(
        ("promptsrc_text_weight", "promptsrc_image_weight", "promptsrc_logits_weight"),
        promptsrc_weights,
        ("official TEXT_LOSS_WEIGHT 25", "official IMAGE_LOSS_WEIGHT 10", "the official KL term has weight 1"),
        strict=True,
    ):
        _check_weight(field, weight, official)
    deep = _is_deep(depth_text, depth_vision, from_text)
    if not deep:
        if n_ctx_vision is not None:
            raise ValueError(
                f"`n_ctx_vision`={describe_value(n_ctx_vision, typed=False)} without vision prompts: set prompt_depth_vision >= 1 "
                "(IVLP, PromptSRC, MaPLe) or leave n_ctx_vision None."
            )
        if max(promptsrc_weights) > 0:
            raise ValueError(
                "the PromptSRC terms (promptsrc_*_weight > 0) regularise deep prompts of both towers: set "
                "prompt_depth_text and prompt_depth_vision (official recipe: 9 and 9, n_ctx 4, n_ctx_vision 4)."
            )
        return False
    row = backbone_of(backbone)
    if row.model_type not in DEEP_PROMPT_BACKBONES:
        raise ValueError(
            f"deep prompts (IVLP, MaPLe, PromptSRC) need a CLIP or MetaCLIP 2 backbone (the towers of the official "
            f"clip/model.py), got {row.display_name} ({row.model_type!r})."
        )
    over = [
        f"`{field}`={depth} exceeds the {layers} layers of the backbone's {tower} tower: use <= {layers}"
        for field, tower, depth, layers in (
            ("prompt_depth_text", "text", depth_text, backbone.text_config.num_hidden_layers),
            ("prompt_depth_vision", "vision", depth_vision, backbone.vision_config.num_hidden_layers),
        )
        if depth > layers
    ]
    if over:  # both towers in one message: a fix of one would otherwise meet the other's refusal next
        raise ValueError("; ".join(over) + ".")
    vision = backbone.vision_config
    image_tokens = (vision.image_size // vision.patch_size) ** 2 + 1  # patches and the class token
    if n_ctx_vision is not None and (
        isinstance(n_ctx_vision, bool) or not isinstance(n_ctx_vision, int) or not 1 <= n_ctx_vision <= image_tokens
    ):
        raise ValueError(
            f"`n_ctx_vision` must be an integer in [1, {image_tokens}] (at most the image's own tokens) or None (n_ctx "
            f"tokens), got {describe_value(n_ctx_vision)}."
        )
    if n_ctx_vision is not None and depth_vision == 0:
        raise ValueError(f"`n_ctx_vision`={n_ctx_vision} without vision prompts: set prompt_depth_vision >= 1.")
    if from_text:
        if depth_vision != depth_text:
            raise ValueError(
                "`vision_prompts_from_text=True` (MaPLe) projects each depth's text prompt to that depth's vision "
                f"prompt, so both towers have one prompt depth (official TRAINER.MAPLE.PROMPT_DEPTH): got "
                f"prompt_depth_text={depth_text}, prompt_depth_vision={depth_vision}."
            )
        if max(promptsrc_weights) > 0:
            raise ValueError(
                "the PromptSRC terms (promptsrc_*_weight > 0) belong to PromptSRC's independent prompts (IVLP's), not "
                "to MaPLe's projected ones: set vision_prompts_from_text=False or the weights to 0."
            )
    return True


def _check_deep_prompt_options(
    conditional, class_specific_context, class_token_position, kgcoop_weight, prompt_context_start
) -> None:
    """The CoOp-family options that deep prompts (IVLP, MaPLe, PromptSRC) do not combine with; each a clear error."""
    # Official trainers/independentVL.py, maple.py, promptsrc.py: one static context for all classes, the name last,
    # no meta-net, no KgCoOp term.
    refused = (
        (conditional, "conditional=True (their prompts do not depend on the image: pass conditional=False)"),
        (class_specific_context, "class_specific_context=True (their context is shared by all classes)"),
        (
            class_token_position != "end",
            f'class_token_position={class_token_position!r} (the name ends the prompt: "end")',
        ),
        (kgcoop_weight != 0, f"kgcoop_weight={kgcoop_weight} (KgCoOp's term is not part of them: pass 0)"),
        (prompt_context_start is None, "a left-padding tokenizer (prompt_context_start=None)"),
    )
    found = [why for bad, why in refused if bad]
    if found:
        raise ValueError(f"deep prompts (IVLP, MaPLe, PromptSRC) do not combine with {'; '.join(found)}.")


class CoCoOpConfig(PretrainedConfig):
    r"""
    Configuration for [`CoCoOpModel`]. Defaults reproduce CoCoOp ViT-B/16 `vit_b16_c4_ep10_batch1_ctxv1` of the
    official repo (Zhou et al., CVPR 2022).

    Args:
        backbone_config (`dict` or `PretrainedConfig`, *optional*): the frozen dual encoder the prompts are learned
            for, one of `backbones_cocoop.BACKBONES`: a [`CLIPConfig`] (also MetaCLIP 1 and the OpenCLIP conversions),
            `MetaClip2Config`, `SiglipConfig` or `Siglip2Config`, or its dict as in config.json (chosen by its
            `model_type`; a dict without one is CLIP). Defaults to `CLIPConfig()`. Saved in config.json under
            `"backbone_config"`.
        clip_config (`dict` or [`CLIPConfig`], *optional*): the old name of `backbone_config`, still read (config.json
            files saved before other backbones existed hold `"clip_config"`); `config.clip_config` is a read-only alias
            of `config.backbone_config`. Give one of the two.
        n_ctx (`int`, *optional*, defaults to 4): number of learned context tokens. With `ctx_init` it must equal
            the word count of `ctx_init` (or be left `None`, which means "the word count"); deep prompts may learn
            fewer (the first `n_ctx` words, see below).
        ctx_init (`str`, *optional*, defaults to `"a photo of a"`): words whose token embeddings start the
            context. `None` draws the context from N(0, 0.02) and uses `"X X X X"` as the prompt placeholder.
        meta_net_reduction (`int`, *optional*, defaults to 16): hidden width of the meta-net is
            `projection_dim // meta_net_reduction`.
        conditional (`bool`, *optional*, defaults to `True`): `True` is CoCoOp (image-conditional context from the
            meta-net); `False` is CoOp (static context, no meta-net).
        clip_name_or_path (`str`, *optional*): Hub id or local folder of the CLIP the model was built from (a
            folder that exists is stored as an absolute path).
        clip_revision (`str`, *optional*): revision of `clip_name_or_path` (commit hash for reproducibility).
        adapter_only (`bool`, *optional*, defaults to `False`): set in a saved folder that holds only the prompt
            learner; `from_pretrained` then loads the base CLIP from `clip_name_or_path` at `clip_revision`.
        text_chunk_tokens (`int`, *optional*, defaults to 131072): upper bound on (images x classes x tokens) that
            one text-tower call processes; classes are chunked to stay below it. A memory knob, not math.
        bucket_by_length (`bool`, *optional*, defaults to `True`): group classes of equal prompt length so no
            class is padded. A speed knob, not math.
        class_token_position (`str`, *optional*, defaults to `"end"`): where the class name sits among the context
            tokens, as the official CoOp `CLASS_TOKEN_POSITION`: `"end"` (`[SOS] ctx name . [EOS]`), `"middle"`
            (first `n_ctx // 2` context tokens, the name, the rest of the context; needs `n_ctx >= 2`) or `"front"`
            (`[SOS] name ctx . [EOS]`). `"middle"`/`"front"` with `conditional=True` is an option of this library,
            not of the CoCoOp paper.
        class_specific_context (`bool`, *optional*, defaults to `False`): one context per class (official CoOp
            `TRAINER.COOP.CSC`), `ctx` of shape `(classes, n_ctx, dim)`. Needs `id2label` (the class count) and
            `conditional=False`: a class-specific context exists only for the classes it was trained on, so such a
            model refuses any other class set. Initialisation: N(0, 0.02) per class, or with `ctx_init` the words'
            embeddings repeated for every class. (The official code, given `CTX_INIT` with `CSC=True`, silently
            builds one generic context instead; here the option is never dropped.)
        kgcoop_weight (`float`, *optional*, defaults to 0.0): the weight w of the KgCoOp regulariser (Yao et al.,
            CVPR 2023; official `trainers/kgcoop.py`, `TRAINER.COOP.W`, 8.0 in its recipes): the training loss
            becomes cross-entropy + w x (1 - mean cosine similarity of each class's learned text feature and its
            frozen zero-shot CLIP text feature). 0 turns it off. With `conditional=True` the mean runs over images
            and classes (an option of this library, not of the paper).
        kgcoop_template (`str`, *optional*, defaults to `"a photo of a {}."`): the hand-crafted prompt of the
            zero-shot text features KgCoOp pulls towards; exactly one `{}`, where the class name goes.
        prompt_context_start (`int`, *optional*, defaults to 1): position of the first context token in a prompt
            built by a right-padding tokenizer: 1 after CLIP's / MetaCLIP 2's start token, 0 for SigLIP's T5-style
            tokenizer (no start token). `CoCoOpModel.from_clip` sets it from the tokenizer
            (`processing_cocoop.prompt_context_start`). `None`: a left-padding tokenizer, where the start differs per
            class and comes with the class prompts (`context_start`).
        prompt_depth_text (`int`, *optional*, defaults to 1): text layers whose context positions hold learned
            prompts: layer 0 reads `ctx`, layers 1..depth-1 read `prompt_learner.text_prompts[l-1]` in place of the
            context (no positional embedding), as the official multimodal `clip/model.py` (IVLP / MaPLe / PromptSRC,
            `PROMPT_DEPTH_TEXT`, 9 in their recipes). 1: the context of layer 0 only (CoOp, CoCoOp, KgCoOp).
        prompt_depth_vision (`int`, *optional*, defaults to 0): vision layers with learned prompts (official
            `PROMPT_DEPTH_VISION`): layer 0 gets `n_ctx_vision` prompt tokens appended after the patches, layers
            1..depth-1 get their own in place of the last `n_ctx_vision` tokens. 0: no vision prompts.
        n_ctx_vision (`int`, *optional*): vision prompt tokens (official `N_CTX_VISION`, 4 in IVLP / PromptSRC).
            `None` with vision prompts: `n_ctx` tokens. MaPLe (`vision_prompts_from_text`): `None` or `n_ctx`, its
            vision prompts being projections of the text prompts.
        vision_prompts_from_text (`bool`, *optional*, defaults to `False`): MaPLe (Khattak et al., CVPR 2023;
            official `trainers/maple.py`): the vision prompt of depth l is `Linear_l(text prompt of depth l)` (l = 0:
            of `ctx`), with one `PROMPT_DEPTH` for both towers (`prompt_depth_vision == prompt_depth_text`).
        promptsrc_text_weight / promptsrc_image_weight / promptsrc_logits_weight (`float`, *optional*, default 0.0):
            PromptSRC's self-regularising terms (Khattak et al., ICCV 2023; official `trainers/promptsrc.py`,
            `TEXT_LOSS_WEIGHT` 25, `IMAGE_LOSS_WEIGHT` 10, the KL term 1): L1 of the prompted vs the frozen text
            features (the mean over its 60 templates), L1 of the prompted vs the frozen image features, KL of the
            frozen zero-shot logits to the prompted ones. They need deep prompts of both towers (IVLP's).

            With deep prompts (IVLP, MaPLe, PromptSRC) the model needs `conditional=False`,
            `class_specific_context=False`, `class_token_position="end"`, `kgcoop_weight=0` and a CLIP or MetaCLIP 2
            backbone, and `n_ctx` may be fewer than the `ctx_init` words: the prompt reads all the words and only the
            first `n_ctx` are learned (official `ctx_vectors = embedding[0, 1 : 1 + n_ctx]`, `prompt_prefix =
            ctx_init`; MaPLe's recipe: 2 tokens of "a photo of a"). `config.method_name` names the method.
        frozen_clip_dtype (`str`, *optional*): `"bfloat16"` or `"float16"` when the frozen CLIP runs in that dtype
            under the prompt learner's own (set by `CoCoOpModel.cast_frozen_clip`); `from_pretrained` casts the
            loaded CLIP to it again, so a saved model answers as it did. `None`: CLIP in the model's dtype.
        id2label / label2id: the class names (prompts are built from `id2label`, with `_` read as a space).
            `id2label` maps every index 0..n-1 to a non-empty name (JSON's string keys "0", "1", ... are read as
            ints); `label2id` is derived from it when not given and must be its inverse when given.

    Integers must be `int` and flags `bool` (a config.json saying `"4"` or `"false"` is refused, not coerced).

    Limits, checked before anything is built (`limits_cocoop.py`): at most `MAX_CLASSES` = 100,000 classes
    (`id2label`, `num_labels`); the backbone within `BACKBONE_LIMITS` (e.g. 64 layers, width 8,192, MLP 32,768, text
    context 1,024, vocabulary 1,000,000, images 1,024 px in 1 to 4,096 patches; generous for ViT-bigG, SigLIP 2 and
    MetaCLIP 2); a local config.json of at most 64 MiB, and a full model folder's safetensors weights must hold the
    parameters its `backbone_config` describes.
    """

    model_type = "cocoop"
    # The backbone's config class varies with its model_type, as LLaVA's sub-configs do: AutoConfig stands for it
    # (transformers walks `sub_configs` to set attention implementations and dtypes on each sub-config).
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(
        self,
        backbone_config=None,
        n_ctx=None,
        ctx_init="a photo of a",
        meta_net_reduction=16,
        conditional=True,
        clip_name_or_path=None,
        clip_revision=None,
        adapter_only=False,
        text_chunk_tokens=131072,
        bucket_by_length=True,
        class_token_position="end",
        class_specific_context=False,
        kgcoop_weight=0.0,
        kgcoop_template="a photo of a {}.",
        prompt_depth_text=1,
        prompt_depth_vision=0,
        n_ctx_vision=None,
        vision_prompts_from_text=False,
        promptsrc_text_weight=0.0,
        promptsrc_image_weight=0.0,
        promptsrc_logits_weight=0.0,
        frozen_clip_dtype=None,
        prompt_context_start=1,
        clip_config=None,
        **kwargs,
    ):
        given = {
            keyword: _checked_backbone_config(value, keyword)
            for keyword, value in (("backbone_config", backbone_config), ("clip_config", clip_config))
            if value is not None
        }
        if len(given) == 2:
            raise ValueError(
                "pass either `backbone_config` or `clip_config` (its old name), not both: they name the same backbone "
                "config."
            )
        if given:
            backbone = next(iter(given.values()))
        else:
            backbone = CLIPConfig()
            logger.info("`backbone_config` is None: using the default CLIPConfig.")
        if prompt_context_start is not None and (
            isinstance(prompt_context_start, bool)
            or not isinstance(prompt_context_start, int)
            or prompt_context_start < 0
        ):
            raise ValueError(
                "`prompt_context_start` must be an integer >= 0 (the position of the first context token: 1 after a "
                "start token as CLIP's, 0 without one as SigLIP's) or None (a left-padding tokenizer), got "
                f"{describe_value(prompt_context_start)}."
            )
        if kwargs.get("num_labels") is not None:  # PretrainedConfig would make that many "LABEL_i" names
            check_class_count(kwargs["num_labels"], "`num_labels`")
        # The dtype a CLIP was saved in is not part of what CoCoOp learns on: left in the sub-configs, it pins the CLIP's
        # tensors to it when the CoCoOp model is loaded with another `dtype` (half the model fp16, half fp32).
        for sub_config in (backbone, backbone.text_config, backbone.vision_config):
            sub_config.dtype = None
        self.backbone_config = backbone

        # A config.json edited by hand can say "4" or "false": Python would read "false" as true. Check types first.
        if n_ctx is not None:
            _check_int("n_ctx", n_ctx)
        for field, value in (("meta_net_reduction", meta_net_reduction), ("text_chunk_tokens", text_chunk_tokens)):
            _check_int(field, value)
        for field, value in (
            ("conditional", conditional),
            ("adapter_only", adapter_only),
            ("bucket_by_length", bucket_by_length),
            ("class_specific_context", class_specific_context),
            ("vision_prompts_from_text", vision_prompts_from_text),
        ):
            if not isinstance(value, bool):
                raise ValueError(f"`{field}` must be True or False (a JSON boolean), got {describe_value(value)}.")
        if isinstance(clip_name_or_path, os.PathLike):
            clip_name_or_path = os.fspath(clip_name_or_path)
        for field, value in (("clip_name_or_path", clip_name_or_path), ("clip_revision", clip_revision)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"`{field}` must be a non-empty string or None, got {describe_value(value)}.")

        if class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ValueError(
                f"`class_token_position` must be one of {CLASS_TOKEN_POSITIONS} (official CLASS_TOKEN_POSITION), got "
                f"{describe_value(class_token_position)}."
            )
        if (
            isinstance(kgcoop_weight, bool)
            or not isinstance(kgcoop_weight, (int, float))
            or not math.isfinite(kgcoop_weight)
            or kgcoop_weight < 0
        ):
            raise ValueError(
                f"`kgcoop_weight` must be a finite number >= 0 (the KgCoOp weight w; 0 turns the regulariser off, the "
                f"official recipes use 8.0), got {describe_value(kgcoop_weight)}."
            )
        if not isinstance(kgcoop_template, str) or kgcoop_template.count("{}") != 1:
            raise ValueError(
                '`kgcoop_template` must be a string with exactly one "{}" where the class name goes (e.g. '
                f'"a photo of a {{}}."), got {describe_value(kgcoop_template)}.'
            )
        if "{" in kgcoop_template.replace("{}", "", 1) or "}" in kgcoop_template.replace("{}", "", 1):
            raise ValueError(
                f'`kgcoop_template` may hold no brace besides its one "{{}}", got {describe_value(kgcoop_template)}: '
                "str.format would read it as another field."
            )
        if frozen_clip_dtype not in (None, "bfloat16", "float16", "float32"):
            raise ValueError(
                '`frozen_clip_dtype` must be "bfloat16", "float16", "float32" or None, got '
                f"{describe_value(frozen_clip_dtype)}."
            )
        if class_specific_context:
            if conditional:
                raise ValueError(
                    "`class_specific_context=True` is a CoOp option (official TRAINER.COOP.CSC) and needs "
                    "`conditional=False`: a context per class cannot follow new classes, which is what CoCoOp's "
                    "conditional context is for."
                )
            if kwargs.get("id2label") is None:
                raise ValueError(
                    "`class_specific_context=True` needs `id2label` (the class names): the context holds one row per "
                    "class, so the class count must be known when the model is built."
                )

        deep = _checked_deep_prompts(
            backbone,
            prompt_depth_text,
            prompt_depth_vision,
            n_ctx_vision,
            vision_prompts_from_text,
            (promptsrc_text_weight, promptsrc_image_weight, promptsrc_logits_weight),
        )
        if deep:
            _check_deep_prompt_options(
                conditional,
                class_specific_context,
                class_token_position,
                kgcoop_weight,
                prompt_context_start,
            )
        if ctx_init is not None:
            if not isinstance(ctx_init, str) or not ctx_init.strip():
                raise ValueError(
                    f"`ctx_init` must be a non-empty string of words or None, got {describe_value(ctx_init)}."
                )
            # Official PromptLearner: underscores are spaces and n_ctx is the word count.
            ctx_init = " ".join(ctx_init.replace("_", " ").split())
            n_words = len(ctx_init.split(" "))
            # Deep prompts may learn only the first n_ctx words, the prompt still reading them all (official
            # trainers/maple.py, independentVL.py: `ctx_vectors = embedding[0, 1 : 1 + n_ctx]`, `prompt_prefix =
            # ctx_init`); every other method learns exactly the words.
            if n_ctx is None:
                n_ctx = n_words
            elif n_ctx > n_words or (n_ctx < n_words and not deep):
                fewer = " (fewer only with deep prompts: IVLP, MaPLe, PromptSRC)" if n_ctx < n_words else ""
                raise ValueError(
                    f"`n_ctx`={n_ctx} is inconsistent with `ctx_init`={describe_value(ctx_init, typed=False)}, which "
                    f"has {n_words} words{fewer}: "
                    f"pass n_ctx={n_words} or n_ctx=None, or ctx_init=None for a random context of {n_ctx} tokens."
                )
        elif n_ctx is None:
            n_ctx = 4
        if vision_prompts_from_text and n_ctx_vision not in (None, n_ctx):
            raise ValueError(
                f"`n_ctx_vision`={n_ctx_vision} with `vision_prompts_from_text=True` (MaPLe): its vision prompts are "
                f"projections of the n_ctx={n_ctx} text prompts, so they have n_ctx tokens: leave n_ctx_vision None."
            )
        if class_token_position == "middle" and n_ctx < 2:
            raise ValueError(
                f'`class_token_position="middle"` needs `n_ctx` >= 2, got n_ctx={n_ctx}: the name goes after the '
                'first n_ctx // 2 context tokens, which would be none (that is class_token_position="front").'
            )
        max_positions = text_context(backbone)
        # The tokens around the context: those before it (CLIP's SOS; none for SigLIP), then at least a name token
        # and EOS. A left-padding tokenizer's start varies per class: its prompts are checked when built.
        before = 1 if prompt_context_start is None else prompt_context_start
        after = 2
        prefix_tokens = len(ctx_init.split(" ")) if ctx_init is not None else n_ctx  # the words the prompt reads
        if prefix_tokens + before + after > max_positions:
            raise ValueError(
                f"`n_ctx`={n_ctx} leaves no room for a class name in the {max_positions}-token text context "
                f"(needs {before} token(s) before the context, then the name and EOS): use n_ctx <= "
                f"{max_positions - before - after}."
            )
        if not backbone_of(backbone).causal_text and not getattr(backbone.vision_config, "vision_use_head", True):
            # Image features are the attention-pooling head's output (SiglipVisionTransformer's pooler_output):
            # without the head the vision tower gives no pooled feature to compare with the text.
            raise ValueError(
                "`backbone_config.vision_config.vision_use_head` must be true: SigLIP's image features are its vision "
                "pooling head's output, which a tower without the head does not give."
            )
        joint_width = embed_dim(backbone)
        if joint_width // meta_net_reduction < 1:
            width_name = "projection_dim" if backbone_of(backbone).causal_text else "text_config.projection_size"
            raise ValueError(
                f"`meta_net_reduction`={meta_net_reduction} exceeds {width_name}={joint_width} (the joint image-text "
                "width, the meta-net's input): the meta-net hidden width would be 0."
            )
        if kwargs.get("id2label") is not None:
            kwargs["id2label"] = _checked_id2label(kwargs["id2label"])
            expected = {name: i for i, name in kwargs["id2label"].items()}
            if kwargs.get("label2id") is None:
                kwargs["label2id"] = expected
            elif not isinstance(kwargs["label2id"], Mapping) or dict(kwargs["label2id"]) != expected:
                raise ValueError(
                    f"`label2id` must be the inverse of `id2label` ({describe_value(expected, 200)}), got "
                    f"{describe_value(kwargs['label2id'], 200)}: pass label2id=None to derive it."
                )
        elif kwargs.get("label2id") is not None:
            raise ValueError("`label2id` was given without `id2label`: pass id2label (the class names by index).")

        self.n_ctx = n_ctx
        self.ctx_init = ctx_init
        self.meta_net_reduction = meta_net_reduction
        self.conditional = conditional
        if clip_name_or_path is not None and os.path.isdir(clip_name_or_path):
            # A local folder is kept as an absolute path: an adapter must find its base CLIP from any working folder.
            clip_name_or_path = os.path.abspath(clip_name_or_path)
        self.clip_name_or_path = clip_name_or_path
        self.clip_revision = clip_revision
        self.adapter_only = adapter_only
        self.text_chunk_tokens = text_chunk_tokens
        self.bucket_by_length = bucket_by_length
        self.class_token_position = class_token_position
        self.class_specific_context = class_specific_context
        self.kgcoop_weight = float(kgcoop_weight)
        self.kgcoop_template = kgcoop_template
        self.prompt_depth_text = prompt_depth_text
        self.prompt_depth_vision = prompt_depth_vision
        self.n_ctx_vision = n_ctx_vision
        self.vision_prompts_from_text = vision_prompts_from_text
        self.promptsrc_text_weight = float(promptsrc_text_weight)
        self.promptsrc_image_weight = float(promptsrc_image_weight)
        self.promptsrc_logits_weight = float(promptsrc_logits_weight)
        self.frozen_clip_dtype = frozen_clip_dtype
        self.prompt_context_start = prompt_context_start
        super().__init__(**kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> "CoCoOpConfig":
        """
        `PretrainedConfig.from_pretrained`; a bad value in the file is reported with the file's path. A local file is
        refused past MAX_MODEL_CONFIG_BYTES before it is read, and a local full model's weight files must be large
        enough for the CLIP its config describes (`check_weights_cover_config`): both before any model is built.
        """
        path = str(pretrained_model_name_or_path)
        folder = os.path.join(path, kwargs.get("subfolder") or "").rstrip(os.sep) if os.path.isdir(path) else None
        source = os.path.join(folder, "config.json") if folder else path
        source = source if os.path.isfile(source) else f"config.json of {path}"
        try:
            if os.path.isfile(source):
                check_file_size(source, MAX_MODEL_CONFIG_BYTES, "model config")
            loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
            config = loaded[0] if isinstance(loaded, tuple) else loaded  # (config, unused kwargs) if asked for
            if folder and not config.adapter_only:
                check_weights_cover_config(folder, config.backbone_config, "its backbone_config")
            return loaded
        except (ValueError, TypeError) as error:
            raise (TypeError if isinstance(error, TypeError) else ValueError)(f"{source}: {error}") from error
        except RecursionError:  # json's parser gives up on a few hundred KB of nested `[`: one line, no traceback
            raise ValueError(
                f"{source} nests its JSON too deeply to be a model config (a config.json is a flat object of settings)."
            ) from None

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> "CoCoOpConfig":
        """
        `PretrainedConfig.from_dict`, but overrides of CoCoOp fields (`from_pretrained(path, n_ctx=...)`) go
        through `__init__` and its checks; the stock method would set them afterwards, unchecked.
        """
        overrides = {key: kwargs.pop(key) for key in _CHECKED_FIELDS if key in kwargs}
        if overrides:
            config_dict = dict(config_dict)
            # Derived fields follow the override instead of contradicting it.
            if overrides.get("ctx_init") is not None and "n_ctx" not in overrides:
                config_dict.pop("n_ctx", None)
            if "id2label" in overrides and "label2id" not in overrides:
                config_dict.pop("label2id", None)
            config_dict.update(overrides)
        return super().from_dict(config_dict, **kwargs)

    @property
    def clip_config(self) -> PretrainedConfig:
        """Read-only alias of `backbone_config`, its old name (whatever the backbone: CLIP, MetaCLIP 2, SigLIP...)."""
        return self.backbone_config

    @property
    def prompt_prefix(self) -> str:
        """The words that stand for the context in the tokenised prompt (official `prompt_prefix`)."""
        return self.ctx_init if self.ctx_init is not None else " ".join(["X"] * self.n_ctx)

    @property
    def prompt_prefix_tokens(self) -> int:
        """
        Tokens the context words take in every prompt: `n_ctx`, or with deep prompts that learn only the first `n_ctx`
        of the `ctx_init` words, all the words (one token each, as `build_prompt_ids` checks).
        """
        return len(self.ctx_init.split(" ")) if self.ctx_init is not None else self.n_ctx

    @property
    def has_deep_prompts(self) -> bool:
        """Prompts beyond the layer-0 text context: in deeper text layers or in the vision tower (IVLP, MaPLe, PromptSRC)."""
        return _is_deep(self.prompt_depth_text, self.prompt_depth_vision, self.vision_prompts_from_text)

    @property
    def vision_prompt_tokens(self) -> int:
        """Vision prompt tokens per prompted layer: `n_ctx_vision` (`None`: `n_ctx`), 0 without vision prompts."""
        if self.prompt_depth_vision == 0:
            return 0
        return self.n_ctx_vision if self.n_ctx_vision is not None else self.n_ctx

    @property
    def uses_promptsrc_terms(self) -> bool:
        """Whether any of PromptSRC's self-regularising terms has a weight above 0."""
        return max(self.promptsrc_text_weight, self.promptsrc_image_weight, self.promptsrc_logits_weight) > 0

    @property
    def method_name(self) -> str:
        """
        The method these options make: "cocoop" (conditional context), "coop", "kgcoop" (CoOp + KgCoOp's term),
        "maple" (vision prompts projected from the text prompts), "promptsrc" (deep prompts + PromptSRC's terms) or
        "ivlp" (independent deep prompts of both towers). Derived, never stored.
        """
        if self.vision_prompts_from_text:
            return "maple"
        if self.has_deep_prompts:
            return "promptsrc" if self.uses_promptsrc_terms else "ivlp"
        if self.conditional:
            return "cocoop"
        return "kgcoop" if self.kgcoop_weight > 0 else "coop"

    @property
    def class_names(self) -> list[str]:
        """Class names in label order, from `id2label`."""
        return [self.id2label[i] for i in range(len(self.id2label))]
