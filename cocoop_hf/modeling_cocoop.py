"""
CoCoOp on a frozen transformers dual encoder (CLIP, MetaCLIP 2, SigLIP, SigLIP 2): the model that wires the parts.

Reference semantics: Zhou et al., "Conditional Prompt Learning for Vision-Language Models", CVPR 2022, and the
official `trainers/cocoop.py` (PromptLearner, TextEncoder, CustomCLIP). The parts: the prompt learner
(`prompt_learner_cocoop.py`), the prompt text encoders (`text_encoder_causal.py` for CLIP / MetaCLIP 2,
`text_encoder_bidirectional.py` for SigLIP / SigLIP 2), the held class set (`class_set_cocoop.py`), the input checks
(`model_inputs_cocoop.py`) and saving/loading (`sharing_cocoop.py`). Deep prompts of both towers (IVLP, MaPLe,
PromptSRC: `prompt_learner_deep.py`, `text_encoder_deep.py`, `vision_encoder_prompted.py`, `promptsrc_cocoop.py`) are
chosen by the config through one small factory per part (`model_parts_cocoop.py`). This file may import only torch, transformers and its sibling files, so that it loads with
`trust_remote_code=True`.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, logging

from .backbone_loading_cocoop import load_backbone, random_backbone
from .backbones_cocoop import BACKBONES, backbone_of, image_features, logit_bias
from .class_groups_cocoop import checked_length_buckets
from .class_set_cocoop import ClassPrompts
from .class_set_holder_cocoop import ClassSetHolder
from .configuration_cocoop import CoCoOpConfig
from .model_inputs_cocoop import (
    check_pixel_values,
    checked_labels,
    kgcoop_targets,
    normalised_image_embeds,
)
from .model_parts_cocoop import image_features_for, prompt_encoder, prompt_learner_for, text_features_for
from .processing_cocoop import CoCoOpProcessor, prompt_context_start, validate_class_names
from .prompt_learner_cocoop import CoCoOpMetaNet, CoCoOpPromptLearner, check_prompt_learner_state
from .prompt_learner_deep import DeepPromptLearner, check_deep_prompt_state
from .promptsrc_cocoop import checked_teacher, image_term, logits_term, needs_teacher, text_term
from .sharing_cocoop import check_finite_tensors, load_model, push_model_to_hub, save_model
from .text_encoder_causal import PACKED_SUFFIX_TOKENS
from .tokenizer_check_cocoop import check_backbone_tokenizer


logger = logging.get_logger(__name__)

__all__ = [
    "PACKED_SUFFIX_TOKENS",
    "CoCoOpMetaNet",
    "CoCoOpModel",
    "CoCoOpOutput",
    "CoCoOpPromptLearner",
    "DeepPromptLearner",
]


@dataclass
class CoCoOpOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*): cross-entropy, when `labels` are given.
    logits (`torch.FloatTensor` of shape `(batch_size, num_classes)`): `logit_scale.exp()` x cosine similarity
        (+ the backbone's `logit_bias` for SigLIP / SigLIP 2).
    image_embeds (`torch.FloatTensor` of shape `(batch_size, embed_dim)`): L2-normalised image features.
    kgcoop_loss (`torch.FloatTensor` of shape `()`, *optional*): with `labels` and `config.kgcoop_weight > 0`, the
        KgCoOp term 1 - mean cosine similarity of the learned and the zero-shot text features, UNweighted; `loss` is
        cross-entropy + `config.kgcoop_weight` x `kgcoop_loss`.
    promptsrc_text_loss / promptsrc_image_loss / promptsrc_logits_loss (`torch.FloatTensor` of shape `()`,
        *optional*): with `labels`, PromptSRC's terms whose `config.promptsrc_*_weight` is above 0, UNweighted (official
        `trainers/promptsrc.py`): L1 of the prompted to the frozen teacher's text features, L1 of the prompted to the
        frozen image features, KL(zero-shot || prompted logits) / (batch x classes); `loss` adds each times its weight.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    kgcoop_loss: torch.FloatTensor | None = None
    promptsrc_text_loss: torch.FloatTensor | None = None
    promptsrc_image_loss: torch.FloatTensor | None = None
    promptsrc_logits_loss: torch.FloatTensor | None = None


class CoCoOpPreTrainedModel(PreTrainedModel):
    config_class = CoCoOpConfig
    config: CoCoOpConfig
    base_model_prefix = "cocoop"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    # Each backbone's own indivisible blocks (embeddings, encoder layers, SigLIP's pooling heads) for device maps.
    _no_split_modules = sorted({name for row in BACKBONES.values() for name in row.model_class._no_split_modules})

    def _init_weights(self, module):
        # The backbone's own modules are initialised by its _init_weights (a nested PreTrainedModel).
        if isinstance(module, CoCoOpPromptLearner):
            init.normal_(module.ctx, std=0.02)  # official: nn.init.normal_(ctx_vectors, std=0.02)
        elif isinstance(module, DeepPromptLearner):
            # Official: ctx, MaPLe's compound_prompts_text, IVLP's VPT / VPT_shallow all nn.init.normal_(std=0.02).
            # Called after its children (transformers initialises a module's children first): MaPLe's projections
            # already have PyTorch's default Linear init (the branch below); 2.. become copies of 1 (`_get_clones`).
            init.normal_(module.ctx, std=0.02)
            for prompt in (*module.text_prompts, *(module.vision_prompts or ())):
                init.normal_(prompt, std=0.02)
            if module.vision_projections is not None and len(module.vision_projections) > 2:
                first = module.vision_projections[1]
                for projection in list(module.vision_projections)[2:]:
                    init.copy_(projection.weight, first.weight)
                    init.copy_(projection.bias, first.bias)
        elif isinstance(module, nn.Linear):
            # PyTorch's default Linear init, as the official meta-net uses.
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(module.in_features)
            init.uniform_(module.bias, -bound, bound)


class CoCoOpModel(ClassSetHolder, CoCoOpPreTrainedModel):
    r"""
    CoCoOp (or CoOp with `config.conditional=False`) around a frozen dual encoder: transformers' `CLIPModel`,
    `MetaClip2Model`, `SiglipModel` or `Siglip2Model` (`config.backbone_config`, kept as `self.clip`, also
    `self.backbone`).

    For each image and class the text tower reads `[specials] ctx_1+pi ... ctx_M+pi {class name} . [EOS]`, where
    pi is the meta-net's output for that image; logits are `logit_scale.exp()` x cosine similarity (+ SigLIP's
    `logit_bias`). Only the prompt learner (context + meta-net) is trainable; the backbone stays frozen, in eval mode.
    The loss is cross-entropy over the class set on every backbone, as in CoOp/CoCoOp, also on a SigLIP trained with
    a sigmoid loss per image-text pair: its bias is one number added to every class, so it cancels in the softmax
    (loss and predictions do not depend on it), and scores are relative to the class set, not per-pair probabilities.

    The text path belongs to the prompt text encoder of the backbone's tower family (`self.text_encoder`, not a
    submodule: the weights are the backbone's): on a causal tower the prefix `[SOS, ctx]` is encoded once per image
    and its keys/values shared by every class; classes are grouped by prompt length and chunked to
    `config.text_chunk_tokens`. It equals the official per-image loop; see `tests/reference_cocoop.py`.

    The CoOp family, as config options (official CoOp `trainers/coop.py`, KgCoOp `trainers/kgcoop.py`):
    `class_token_position` "middle"/"front" moves the class name into/before the context, and
    `class_specific_context` learns one context per class; both break the shared prefix, so their prompts are
    assembled whole and encoded up to each prompt's EOS (CoOp: once per forward for all classes, never per image).
    `kgcoop_weight` adds the KgCoOp regulariser to the loss, against frozen zero-shot text features that
    `set_class_names` computes for the held class set ([`~CoCoOpModel.zero_shot_text_features`]).

    Deep prompts of both towers, as config options (`config.method_name`): IVLP (`prompt_depth_text`,
    `prompt_depth_vision`, `n_ctx_vision`; official multimodal-prompt-learning `trainers/independentVL.py`), MaPLe
    (`vision_prompts_from_text`; `trainers/maple.py`) and PromptSRC (IVLP's prompts + `promptsrc_*_weight`; PromptSRC
    `trainers/promptsrc.py`). Their prompt learner is a [`DeepPromptLearner`]; the text prompts are encoded once per
    call for all classes (they do not depend on the image), the image features come from the prompted vision tower
    (so they depend on this model's weights), and PromptSRC's frozen text teacher (60 templates) is computed by the
    first labelled forward of a class set that needs it, then kept with the class set.
    """

    def __init__(self, config: CoCoOpConfig, clip_model: PreTrainedModel | None = None):
        super().__init__(config)
        backbone = backbone_of(config.backbone_config)
        if clip_model is not None and not isinstance(clip_model, backbone.model_class):
            raise TypeError(
                f"`clip_model` must be a {backbone.model_class.__name__} (config.backbone_config is "
                f"{backbone.model_type!r}), got {type(clip_model).__name__}."
            )
        self.clip = clip_model if clip_model is not None else backbone.model_class(config.backbone_config)
        self.prompt_learner = prompt_learner_for(config)
        self.clip.requires_grad_(False)
        self.gradient_checkpointing = False
        self.tokenizer = None
        self._class_set = None  # the held class set: one immutable record (class_set_cocoop.ClassSetHolder)
        # A plain attribute, not a submodule: it holds references to self.clip's text modules (weights stay `clip.*`).
        self._text_encoder = prompt_encoder(self.clip, config)
        # The image and text paths the config asks for (plain functions of the model: no state of their own).
        self._image_features = image_features_for(config)
        self._prompt_text_features = text_features_for(config)
        self.post_init()
        if clip_model is not None:
            # The prompt learner lives with the given backbone, in its dtype (official PromptLearner: `clip.dtype`).
            self.prompt_learner.to(device=clip_model.device, dtype=clip_model.dtype)

    @property
    def backbone(self) -> PreTrainedModel:
        """The frozen dual encoder (the same module as `self.clip`, the attribute its weights are saved under)."""
        return self.clip

    @property
    def text_encoder(self):
        """The prompt text encoder (`CausalPromptEncoder` or `BidirectionalPromptEncoder`) on this backbone."""
        return self._text_encoder

    # ------------------------------------------------------------------ construction and class prompts

    @classmethod
    def from_clip(
        cls,
        clip_name_or_path: str,
        class_names,
        revision: str | None = None,
        tokenizer=None,
        clip_kwargs: dict | None = None,
        random_init: bool = False,
        random_init_seed: int | None = None,
        **config_kwargs,
    ) -> "CoCoOpModel":
        """
        Build a CoCoOp model on a backbone checkpoint (Hub id or local folder) for `class_names`.

        The context starts from the token embeddings of `ctx_init` (official PromptLearner: positions 1..n_ctx of
        the tokenised words) or, with `ctx_init=None`, from N(0, 0.02).

        `random_init=True` builds the backbone from the checkpoint's config.json with random weights drawn from
        `random_init_seed` (default 0; the weights the training scripts' `--random_init_clip --random_init_seed`
        give), for trying the whole path offline on a config-only folder such as the shipped tiny CLIP: its
        predictions mean nothing, it warns once and its config records `random_clip_weights=True` (model cards and
        reports say so). `clip_kwargs` then takes only where the config is read from (`cache_dir`, ...).
        """
        if "random_clip_weights" in config_kwargs:
            raise ValueError(
                "random_clip_weights is recorded by from_clip from random_init: pass random_init instead."
            )
        if random_init_seed is not None and not random_init:
            raise ValueError(
                f"random_init_seed={random_init_seed!r} without random_init=True: the backbone's weights are loaded "
                "from the checkpoint, nothing is drawn. Pass random_init=True too, or drop random_init_seed."
            )
        # Before the (slow) backbone load, only what any tokenizer needs: CLIP's case-and-spacing rule is for CLIP's
        # tokenizer alone (MetaCLIP 2's is cased; SigLIP's and SigLIP 2's lowercase by their own rules), checked
        # below once the tokenizer is known.
        class_names = validate_class_names(class_names, tokenizer, clip_rule=None if tokenizer is not None else False)
        clip_kwargs = dict(clip_kwargs or {})
        if random_init:
            seed = 0 if random_init_seed is None else random_init_seed
            backbone = random_backbone(clip_name_or_path, seed, revision=revision, **clip_kwargs)
            logger.warning_once(
                f"{backbone_of(backbone.config.model_type).display_name} built from the config of {clip_name_or_path} "
                f"with RANDOM weights (seed {seed}): every prediction and accuracy of this model is meaningless; "
                "load a pretrained checkpoint for real use."
            )
            config_kwargs = {**config_kwargs, "random_clip_weights": True}
        else:
            backbone = load_backbone(clip_name_or_path, revision=revision, **clip_kwargs)
        if tokenizer is None:
            tokenizer = CoCoOpProcessor.load_backbone_tokenizer(
                clip_name_or_path,
                backbone.config.text_config.vocab_size,
                revision=revision,
                backbone_config=backbone.config,
            )
            class_names = validate_class_names(class_names, tokenizer)
        check_backbone_tokenizer(tokenizer, backbone.config)  # a user's: before its ids reach the backbone
        config = _config_for(backbone, clip_name_or_path, revision, class_names, tokenizer, config_kwargs)
        model = cls(config, clip_model=backbone)
        if config.ctx_init is not None:
            model.init_context_from_words(tokenizer)
        model.set_class_names(class_names, tokenizer=tokenizer)
        return model

    @torch.no_grad()
    def init_context_from_words(self, tokenizer) -> None:
        """
        Context := token embeddings of the first `n_ctx` tokens of `config.ctx_init` (official: `embedding[0, 1 : 1 +
        n_ctx]`; all of them except with deep prompts that learn only the first n_ctx words, e.g. MaPLe's 2 of "a
        photo of a").
        """
        ids = tokenizer(self.config.ctx_init, add_special_tokens=False)["input_ids"]
        if len(ids) != self.config.prompt_prefix_tokens:
            learned = "" if self.config.prompt_prefix_tokens == self.config.n_ctx else f" (n_ctx={self.config.n_ctx})"
            raise ValueError(
                f"ctx_init {self.config.ctx_init!r} tokenises to {len(ids)} tokens, but n_ctx="
                f"{self.config.prompt_prefix_tokens}{learned}: use words that are single tokens of the backbone's "
                "vocabulary."
            )
        embedding = self.clip.text_model.embeddings.token_embedding.weight
        words = embedding[torch.tensor(ids[: self.config.n_ctx], device=embedding.device)]  # (n_ctx, dim)
        # A class-specific context starts from the words in every class's row (the official code would instead
        # build a single generic context when CTX_INIT is set, dropping CSC).
        self.prompt_learner.ctx.copy_(words.expand_as(self.prompt_learner.ctx))

    # ------------------------------------------------------------------ saving and loading (sharing_cocoop.py)

    def load_prompt_learner_state(self, state_dict: dict, source: str = "state dict") -> None:
        """Load context + meta-net tensors (keys as in `prompt_learner.state_dict()`), checking names and shapes."""
        check = check_deep_prompt_state if self.config.has_deep_prompts else check_prompt_learner_state
        converted = check(self.prompt_learner, self.config, state_dict, source)
        # NaN / infinite weights (a diverged run, a damaged file) would give NaN logits without a word; checked after
        # the cast, which can overflow (an fp32 value beyond fp16's range).
        check_finite_tensors(converted, source)
        self.prompt_learner.load_state_dict(converted, strict=True)

    def save_pretrained(self, save_directory, adapter_only: bool = False, **kwargs):
        """
        Save a folder that is complete on its own: config (with `auto_map` and `custom_pipelines`), weights
        (safetensors), the processor (image processor + the tokenizer the prompts are built with) and the code files
        that loading and running need, so it loads with `trust_remote_code=True` without this package. With
        `adapter_only=True` the folder holds only config.json, the prompt-learner tensors
        (`prompt_learner.safetensors`, ~140 KB at ViT-B/16 widths, with a fingerprint of the base backbone),
        `processor_config.json` (prompt settings + image processor config, no tokenizer files) and the code files.
        Loading then takes the backbone and its tokenizer from `config.clip_name_or_path` at `config.clip_revision`,
        or from an already-loaded backbone (`from_pretrained(folder, clip_model=backbone)`).
        """
        # What the saved backbone runs in, from the weights themselves (a later .to(...) may have changed them).
        clip_dtype = self._text_dtype()
        self.config.frozen_clip_dtype = None if clip_dtype == self.dtype else str(clip_dtype).removeprefix("torch.")
        return save_model(self, save_directory, adapter_only=adapter_only, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs):
        """
        Upload a complete folder in one commit: what [`~CoCoOpModel.save_pretrained`] writes plus `README.md`.
        Keywords: `adapter_only`, `model_card` (a `huggingface_hub.ModelCard` or its text; default: the repo's
        existing CoCoOp card, else one rendered from this model), `commit_message`, `commit_description`, `private`,
        `token`, `revision`, `create_pr`, `tags`, and `save_pretrained` arguments.
        """
        return push_model_to_hub(self, repo_id, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, clip_model=None, **kwargs):
        """
        Load a saved CoCoOp folder or Hub repo (full or adapter-only) and rebuild its class prompts.

        `clip_model`: for an adapter-only folder, an already-loaded backbone to put it on instead of loading the
        base again: several adapters then share one backbone in memory (its parameters are not copied). The
        adapter's recorded fingerprint of its base must match (else ValueError; `allow_other_clip=True` loads
        anyway with a warning).
        """
        model = load_model(
            cls, super().from_pretrained, pretrained_model_name_or_path, *model_args, clip_model=clip_model, **kwargs
        )
        loaded = model[0] if isinstance(model, tuple) else model  # (model, loading info) with output_loading_info
        saved_dtype = loaded.config.frozen_clip_dtype
        if saved_dtype and clip_model is None and kwargs.get("dtype", kwargs.get("torch_dtype")) is None:
            # Saved after cast_frozen_clip: the backbone runs in that dtype again (a given clip_model is the caller's).
            loaded.cast_frozen_clip(getattr(torch, saved_dtype))
        return model

    # ------------------------------------------------------------------ frozen backbone

    def cast_frozen_clip(self, dtype: torch.dtype) -> "CoCoOpModel":
        """
        Cast the frozen backbone's weights to `dtype` (e.g. `torch.bfloat16`), keeping the prompt learner (and so its
        gradients and optimizer state) in its own dtype, usually fp32. On a GPU this halves the weight traffic and
        removes autocast's re-cast of every backbone weight on every call; the official code likewise runs its CLIP
        in fp16 weights. The prompt embeddings are cast to the backbone's dtype where they enter its text layers, so
        gradients still reach the fp32 context. Numbers then differ from fp32 by half-precision rounding. Saving such
        a model writes the backbone's weights in `dtype` (an adapter-only save writes only the fp32 prompt learner)
        and records it in `config.frozen_clip_dtype`: `from_pretrained` casts the loaded backbone to it again.
        """
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"`dtype` must be a floating-point torch.dtype such as torch.bfloat16, got {dtype!r}.")
        self.clip.to(dtype)
        self.config.frozen_clip_dtype = None if dtype == self.dtype else str(dtype).removeprefix("torch.")
        return self

    @property
    def dtype(self) -> torch.dtype:
        """
        The prompt learner's dtype: the model's own weights (what it trains, and what `save_pretrained` records in
        config.json, so that a model saved after `cast_frozen_clip` loads with its prompt learner in fp32 rather than
        in the lower dtype of the frozen backbone's weights).
        """
        return self.prompt_learner.ctx.dtype

    def _text_dtype(self) -> torch.dtype:
        """The dtype of the backbone's text weights: what its layers expect (autocast may still compute in another)."""
        return self._text_encoder.text_dtype()

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen backbone: no dropout, whatever the wrapper's mode
        return self

    def compile_text_path(self, length_buckets=None, **compile_kwargs) -> None:
        """
        Opt in to `torch.compile` for the per-class text path (fuses norms, activations and residuals). Numerics stay
        within fp32 rounding of the eager path.

        Without `length_buckets`, shapes vary with the class groups and `dynamic=True` is the default. With
        `length_buckets` (suffix lengths in tokens, e.g. `(8, 16, 32)`), each class suffix is padded to the next
        bucket (longer ones to the longest the prompts allow) and the last call of a bucket is filled up to a power
        of two classes by repeating a class whose extra outputs are dropped: the compiled function then sees a small
        fixed set of shapes (per batch size: at most two class counts per bucket) and `dynamic=False` is the default.
        Padding after a class's EOS changes no number of its feature (the text tower is causal). torch's recompile
        limit (`torch._dynamo.config.recompile_limit`, 8 by default) caps the shapes compiled; calls beyond it run
        eagerly. The compiled state lives in the text encoder; nothing else changes.
        """
        length_buckets = checked_length_buckets(length_buckets)
        if self.config.has_deep_prompts:
            raise ValueError(
                f"compile_text_path compiles the CoOp/CoCoOp text path; a {self.config.method_name} model encodes its "
                "deep prompts once per call for all classes: compile the model itself (torch.compile(model)) instead."
            )
        if not hasattr(self._text_encoder, "compile"):
            name = backbone_of(self.config.backbone_config).display_name
            raise ValueError(f"compile_text_path is not available for {name}'s text encoder.")
        self._text_encoder.compile(length_buckets, **compile_kwargs)

    # ------------------------------------------------------------------ features

    def get_image_features(self, pixel_values: torch.Tensor, pixel_attention_mask=None, spatial_shapes=None):
        """
        L2-normalised projected image features `(batch, embed_dim)` from the frozen vision tower, with the learned
        vision prompts where the method has them (IVLP, MaPLe, PromptSRC: then they depend on this model's weights).
        SigLIP 2 also takes its image processor's `pixel_attention_mask` and `spatial_shapes`.
        """
        vision_inputs = {"pixel_attention_mask": pixel_attention_mask, "spatial_shapes": spatial_shapes}
        vision_inputs = {key: value for key, value in vision_inputs.items() if value is not None}
        check_pixel_values(pixel_values, self.config.backbone_config, vision_inputs)
        features = self._image_features(self, pixel_values, vision_inputs)
        return features / features.norm(dim=-1, keepdim=True)

    def get_text_features(
        self,
        image_embeds: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        eos_index: torch.Tensor | None = None,
        name_length: torch.Tensor | None = None,
        context_start: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Prompt text features, L2-normalised: `(batch, classes, embed_dim)` for CoCoOp, `(1, classes, ...)` for CoOp and
        the deep-prompt methods (their text prompts do not depend on the image: computed once, whatever the batch;
        `image_embeds` may be None). `input_ids` / `eos_index` /
        `name_length` / `context_start` / `attention_mask`: class prompts for this call (see `forward`); default:
        the class set the model holds.
        """
        prompts, _ = self._prompts(input_ids, eos_index, name_length, context_start, attention_mask)
        return self._text_features(image_embeds, prompts)

    def _text_features(self, image_embeds: torch.Tensor, prompts: ClassPrompts) -> torch.Tensor:
        """`get_text_features` for the class prompts of one call, by the method's text path."""
        return self._prompt_text_features(self, image_embeds, prompts)

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        eos_index: torch.Tensor | None = None,
        name_length: torch.Tensor | None = None,
        zero_shot_embeds: torch.Tensor | None = None,
        context_start: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
    ) -> CoCoOpOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch, 3, size, size)`): images from the processor (SigLIP 2:
            `(batch, patches, 3 * patch * patch)` with `pixel_attention_mask` and `spatial_shapes`).
        labels (`torch.LongTensor` of shape `(batch,)`, *optional*): class indices; gives `loss`. Any integer dtype.
        image_embeds (`torch.FloatTensor` of shape `(batch, embed_dim)`, *optional*): image features from
            [`~CoCoOpModel.get_image_features`], in place of `pixel_values` (reuse them across class sets), taken as
            this model's own: with vision prompts (IVLP, MaPLe, PromptSRC) they must come from this model with its
            current weights. They are L2-normalised here, as the official code normalises the image feature before
            the meta-net reads it.
        input_ids (`torch.LongTensor` of shape `(classes, length)`, *optional*): class prompts for this call only,
            with `eos_index` (`torch.LongTensor` of shape `(classes,)`) and the other prompt tensors: what
            `CoCoOpProcessor(class_names=...)` or [`~CoCoOpModel.class_prompts`] returns. Without them the model uses
            the class set it holds (`set_class_names`, `config.id2label`). The model is never changed by a forward.
        name_length (`torch.LongTensor` of shape `(classes,)`, *optional*): token count of each class name, part of
            the class prompts; required with `input_ids` when `config.class_token_position` is "middle" or "front".
        context_start (`torch.LongTensor` of shape `(classes,)`, *optional*): each prompt's first context position;
            default `config.prompt_context_start` for every class.
        attention_mask (`torch.LongTensor` of shape `(classes, length)`, *optional*): the prompts' padding mask
            (SigLIP 2 prompts carry one).
        zero_shot_embeds (`torch.FloatTensor` of shape `(classes, embed_dim)`, *optional*): the frozen zero-shot
            text features of the classes of `input_ids` ([`~CoCoOpModel.zero_shot_text_features`]: KgCoOp's, or
            PromptSRC's teacher); needed only with `labels`, `config.kgcoop_weight > 0` or PromptSRC's text / logits
            term, and class prompts given to this call (for the held class set the model computes them at the
            first labelled forward that needs them, and keeps them).

        PromptSRC (`config.promptsrc_*_weight`): with `labels` the loss adds its terms, which compare with the frozen
        backbone's image features of the same images: they need `pixel_values` (not `image_embeds`).
        """
        if (pixel_values is None) == (image_embeds is None):
            raise ValueError("pass exactly one of `pixel_values` or `image_embeds`.")
        if image_embeds is None:
            image_embeds = self.get_image_features(pixel_values, pixel_attention_mask, spatial_shapes)
        elif pixel_attention_mask is not None or spatial_shapes is not None:
            raise ValueError("`pixel_attention_mask` / `spatial_shapes` describe `pixel_values`: pass them with it.")
        else:
            image_embeds = normalised_image_embeds(image_embeds, self.config, self.prompt_learner.ctx.dtype)
        # One read of the held class set per call: its prompts and zero-shot features belong to the same class set.
        prompts, held_set = self._prompts(input_ids, eos_index, name_length, context_start, attention_mask)
        given = held_set is None
        text_embeds = self._text_features(image_embeds, prompts)  # (batch|1, classes, d)
        logit_scale = self.clip.logit_scale.exp()
        image_embeds_t = image_embeds.to(text_embeds.dtype)
        if self.config.conditional:
            logits = logit_scale * torch.einsum("bd,bcd->bc", image_embeds_t, text_embeds)  # (batch, classes)
        else:  # CoOp: one text feature per class, shared by all images
            logits = logit_scale * image_embeds_t @ text_embeds[0].t()
        bias = logit_bias(self.clip)
        if bias is not None:  # SiglipModel.forward: logits = cos * logit_scale.exp() + logit_bias
            logits = logits + bias.to(logits.dtype)
        loss = kgcoop_loss = None
        promptsrc = {}
        if labels is not None:
            labels = checked_labels(labels, logits)
            loss = F.cross_entropy(logits.float(), labels)
            if self.config.kgcoop_weight > 0:
                held_zero_shot = None if given else prompts.zero_shot
                zero_shot = self._kgcoop_targets(zero_shot_embeds, held_zero_shot, text_embeds.shape[1])
                # KgCoOp (Yao et al., CVPR 2023), official trainers/kgcoop.py CustomCLIP.forward:
                # score = 1 - mean(CosineSimilarity(dim=1, eps=1e-07)(text_features, text_features_old)).
                # A conditional model has a text feature per image and class: the mean runs over both (ours).
                cosine = F.cosine_similarity(text_embeds.float(), zero_shot.float()[None], dim=-1, eps=1e-7)
                kgcoop_loss = 1.0 - cosine.mean()
                loss = loss + self.config.kgcoop_weight * kgcoop_loss
            if self.config.uses_promptsrc_terms:
                held_teacher = None
                if needs_teacher(self.config) and zero_shot_embeds is None and not given:
                    # 60 x classes text passes at the first labelled forward of a class set, none after (kept with it)
                    held_teacher = self._held_teacher(held_set)
                promptsrc = self._promptsrc_terms(
                    pixel_values, image_embeds, text_embeds[0], logits, logit_scale, zero_shot_embeds, held_teacher
                )
                for name, term in promptsrc.items():  # promptsrc_text_loss x config.promptsrc_text_weight, ...
                    loss = loss + getattr(self.config, name.replace("_loss", "_weight")) * term
        return CoCoOpOutput(loss=loss, logits=logits, image_embeds=image_embeds, kgcoop_loss=kgcoop_loss, **promptsrc)

    def _promptsrc_terms(
        self, pixel_values, image_embeds, text_embeds, logits, logit_scale, zero_shot_embeds, held_teacher
    ) -> dict:
        """
        PromptSRC's terms whose weight is above 0, UNweighted, by output field (official trainers/promptsrc.py
        CustomCLIP.forward + PromptSRC.forward_backward; promptsrc_cocoop). `text_embeds` (classes, d) and
        `image_embeds` (batch, d): the prompted features, normalised.
        """
        config = self.config
        terms = {}
        frozen_image = None
        if config.promptsrc_image_weight > 0 or config.promptsrc_logits_weight > 0:
            if pixel_values is None:
                raise ValueError(
                    "PromptSRC's image and logits terms compare with the frozen backbone's features of the same images: "
                    "pass `pixel_values` with `labels` (image_embeds alone do not give them)."
                )
            with torch.no_grad():  # official: the frozen ZS_image_encoder under no_grad, normalised
                frozen_image = image_features(self.clip, pixel_values)
                frozen_image = frozen_image / frozen_image.norm(dim=-1, keepdim=True)
        teacher = None
        if needs_teacher(config):
            device = self.prompt_learner.ctx.device
            teacher = checked_teacher(zero_shot_embeds, held_teacher, text_embeds.shape[0], config, device)
        if config.promptsrc_text_weight > 0:
            terms["promptsrc_text_loss"] = text_term(text_embeds, teacher)
        if config.promptsrc_image_weight > 0:
            terms["promptsrc_image_loss"] = image_term(image_embeds, frozen_image)
        if config.promptsrc_logits_weight > 0:
            terms["promptsrc_logits_loss"] = logits_term(logits, frozen_image, teacher, logit_scale)
        return terms

    def _kgcoop_targets(self, zero_shot_embeds, held_zero_shot, classes: int) -> torch.Tensor:
        """KgCoOp's targets: given to the call, else those of the held class set (model_inputs_cocoop)."""
        return kgcoop_targets(zero_shot_embeds, held_zero_shot, classes, self.config, self.prompt_learner.ctx.device)


def _config_for(backbone, name_or_path, revision, class_names, tokenizer, config_kwargs: dict) -> CoCoOpConfig:
    """The config of `from_clip`: the backbone's config and where it came from, the classes, the user's options."""
    # Where the tokenizer puts the first context token (after SOS / <s>: 1; SigLIP's T5-style tokenizer: 0): the
    # count of its leading special tokens, the same whatever the context words. Known before the config is built, so
    # the config's n_ctx limit counts the tokens this tokenizer really puts before the context.
    start = prompt_context_start(tokenizer, "x")
    if "prompt_context_start" in config_kwargs and config_kwargs["prompt_context_start"] != start:
        raise ValueError(
            f"prompt_context_start={config_kwargs['prompt_context_start']!r}, but the tokenizer puts the first "
            f"context token at {start!r}: leave prompt_context_start out (from_clip reads it from the tokenizer)."
        )
    config = CoCoOpConfig(
        backbone_config=backbone.config.to_dict(),
        clip_name_or_path=str(name_or_path),
        clip_revision=revision or getattr(backbone.config, "_commit_hash", None),
        id2label=dict(enumerate(class_names)),
        label2id={name: i for i, name in enumerate(class_names)},
        **{**config_kwargs, "prompt_context_start": start},
    )
    if prompt_context_start(tokenizer, config.prompt_prefix) != start:  # the same count with the real words
        raise ValueError(
            f"the tokenizer puts a different number of special tokens before the context words "
            f"{config.prompt_prefix!r} than before 'x': the context position is not fixed; use other ctx_init words."
        )
    return config
