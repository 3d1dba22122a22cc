"""CoCoOp on transformers' CLIP: output dataclass, prompt learner, batched text path, CoCoOpModel.

Reference semantics: Zhou et al., "Conditional Prompt Learning for Vision-Language Models", CVPR 2022, and the
official `trainers/cocoop.py` (PromptLearner, TextEncoder, CustomCLIP). This file may import only torch,
transformers and its sibling files, so that it loads with `trust_remote_code=True`.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import BatchEncoding, CLIPModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, logging

from .class_set_cocoop import (
    ClassPrompts,
    ClassSet,
    build_class_prompts,
    check_class_specific,
    check_name_lengths,
)
from .configuration_cocoop import CoCoOpConfig
from .limits_cocoop import check_clip_checkpoint
from .processing_cocoop import (
    CoCoOpProcessor,
    build_prompt_ids,
    clean_class_name,
    validate_class_names,
)
from .sharing_cocoop import check_finite_tensors, load_model, push_model_to_hub, save_model


logger = logging.get_logger(__name__)


@dataclass
class CoCoOpOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*): cross-entropy, when `labels` are given.
    logits (`torch.FloatTensor` of shape `(batch_size, num_classes)`): `logit_scale.exp()` x cosine similarity.
    image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`): L2-normalised image features.
    kgcoop_loss (`torch.FloatTensor` of shape `()`, *optional*): with `labels` and `config.kgcoop_weight > 0`, the
        KgCoOp term 1 - mean cosine similarity of the learned and the zero-shot text features, UNweighted; `loss` is
        cross-entropy + `config.kgcoop_weight` x `kgcoop_loss`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    kgcoop_loss: torch.FloatTensor | None = None


class CoCoOpMetaNet(nn.Module):
    """Linear -> ReLU -> Linear from the image feature to one bias for the context (official `meta_net`)."""

    def __init__(self, config: CoCoOpConfig):
        super().__init__()
        vis_dim = config.clip_config.projection_dim
        ctx_dim = config.clip_config.text_config.hidden_size
        self.linear1 = nn.Linear(vis_dim, vis_dim // config.meta_net_reduction)
        self.relu = nn.ReLU(inplace=False)
        self.linear2 = nn.Linear(vis_dim // config.meta_net_reduction, ctx_dim)

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.relu(self.linear1(image_embeds)))


class CoCoOpPromptLearner(nn.Module):
    """
    The trainable part: `n_ctx` context vectors and, for CoCoOp, the meta-net. With `class_specific_context` the
    context has one row per class, `(classes, n_ctx, dim)` (official CoOp `CSC`).
    """

    def __init__(self, config: CoCoOpConfig):
        super().__init__()
        ctx_dim = config.clip_config.text_config.hidden_size
        shape = (config.n_ctx, ctx_dim)
        if config.class_specific_context:
            # Official trainers/coop.py PromptLearner: CSC ctx_vectors = torch.empty(n_cls, n_ctx, ctx_dim).
            shape = (len(config.id2label), *shape)
        self.ctx = nn.Parameter(torch.empty(shape))
        self.meta_net = CoCoOpMetaNet(config) if config.conditional else None

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """
        Context per image, `(batch, n_ctx, dim)`; CoOp returns one shared context, `(1, n_ctx, dim)`, and CoOp with
        a class-specific context one per class, `(1, classes, n_ctx, dim)`.
        """
        if self.meta_net is None:
            return self.ctx.unsqueeze(0)
        bias = self.meta_net(image_embeds)  # (batch, dim)
        # Same bias on every context token: CoCoOp eq. (2); official PromptLearner.forward `ctx + bias`
        return self.ctx.unsqueeze(0) + bias.unsqueeze(1)  # (batch, n_ctx, dim)


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    batch, length, dim = x.shape
    return x.view(batch, length, num_heads, dim // num_heads).transpose(1, 2)  # (batch, heads, length, head_dim)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    batch, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dim)


def _qkv(layer, hidden: torch.Tensor):
    """Pre-norm query/key/value of one CLIP encoder layer, split into heads."""
    attn = layer.self_attn
    x = layer.layer_norm1(hidden)
    return tuple(_split_heads(proj(x), attn.num_heads) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))


def _finish_layer(layer, hidden: torch.Tensor, attn_output: torch.Tensor) -> torch.Tensor:
    """Output projection, residual, MLP, residual: the rest of `CLIPEncoderLayer.forward` (heads already merged)."""
    hidden = hidden + layer.self_attn.out_proj(attn_output)
    return hidden + layer.mlp(layer.layer_norm2(hidden))


# Class suffixes are 1-14 tokens: attention kernels tile queries by 64, so one suffix per (image, head) would leave most
# of every tile empty and launch one block per class. Several suffixes share one "packed" sequence instead, under a
# block-diagonal causal mask; positions are already in the embeddings, so packing changes no number.
PACKED_SUFFIX_TOKENS = 64


def _packed_suffix_mask(length: int, pack: int, prefix_len: int, device) -> torch.Tensor:
    """`(pack * L, P + pack * L)` bool: each suffix token sees the whole prefix and the earlier tokens of its class."""
    index = torch.arange(pack * length, device=device)
    same_class = (index // length)[:, None] == (index // length)[None, :]
    causal = (index % length)[None, :] <= (index % length)[:, None]
    prefix = torch.ones(pack * length, prefix_len, dtype=torch.bool, device=device)
    return torch.cat([prefix, same_class & causal], dim=1)


class CoCoOpPreTrainedModel(PreTrainedModel):
    config_class = CoCoOpConfig
    config: CoCoOpConfig
    base_model_prefix = "cocoop"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings"]

    def _init_weights(self, module):
        # CLIP's own modules are initialised by CLIPModel._init_weights (a nested PreTrainedModel).
        if isinstance(module, CoCoOpPromptLearner):
            init.normal_(module.ctx, std=0.02)  # official: nn.init.normal_(ctx_vectors, std=0.02)
        elif isinstance(module, nn.Linear):
            # PyTorch's default Linear init, as the official meta-net uses.
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(module.in_features)
            init.uniform_(module.bias, -bound, bound)


class CoCoOpModel(CoCoOpPreTrainedModel):
    r"""
    CoCoOp (or CoOp with `config.conditional=False`) around a frozen transformers [`CLIPModel`].

    For each image and class the text tower reads `[SOS] ctx_1+pi ... ctx_M+pi {class name} . [EOS]`, where pi is
    the meta-net's output for that image; logits are `logit_scale.exp()` x cosine similarity. Only the prompt
    learner (context + meta-net) is trainable; CLIP stays frozen and in eval mode.

    The text path is batched: the prefix `[SOS, ctx]` is encoded once per image and its keys/values are shared by
    every class (the causal mask means it never sees the class tokens), classes are grouped by prompt length and
    chunked to `config.text_chunk_tokens`. It equals the official per-image loop; see `tests/reference_cocoop.py`.

    The CoOp family, as config options (official CoOp `trainers/coop.py`, KgCoOp `trainers/kgcoop.py`):
    `class_token_position` "middle"/"front" moves the class name into/before the context, and
    `class_specific_context` learns one context per class; both break the shared prefix, so their prompts are
    assembled whole and encoded up to each prompt's EOS (CoOp: once per forward for all classes, never per image).
    `kgcoop_weight` adds the KgCoOp regulariser to the loss, against frozen zero-shot text features that
    `set_class_names` computes for the held class set ([`~CoCoOpModel.zero_shot_text_features`]).
    """

    def __init__(self, config: CoCoOpConfig, clip_model: CLIPModel | None = None):
        super().__init__(config)
        self.clip = clip_model if clip_model is not None else CLIPModel(config.clip_config)
        self.prompt_learner = CoCoOpPromptLearner(config)
        self.clip.requires_grad_(False)
        self.gradient_checkpointing = False
        self.tokenizer = None
        # The held class set (names, prompt ids, KgCoOp's zero-shot features): one immutable record, replaced whole by
        # set_class_names, read once per call. Derived from the names, never saved (from_pretrained rebuilds it from
        # config.id2label). Not buffers: a loaded model's non-persistent buffers hold uninitialised memory, and
        # several tensors assigned one by one can be seen half-swapped by another thread.
        self._class_set: ClassSet | None = None
        self._suffix_encoder = self._encode_suffix  # replaced by a compiled version in compile_text_path()
        self._length_buckets = None  # fixed suffix-length buckets of a compiled text path (compile_text_path)
        self.post_init()
        if clip_model is not None:
            # The prompt learner lives with the given CLIP, in its dtype (official PromptLearner: `dtype = clip.dtype`).
            self.prompt_learner.to(device=clip_model.device, dtype=clip_model.dtype)

    # ------------------------------------------------------------------ construction and class names

    @classmethod
    def from_clip(
        cls,
        clip_name_or_path: str,
        class_names,
        revision: str | None = None,
        tokenizer=None,
        clip_kwargs: dict | None = None,
        **config_kwargs,
    ) -> "CoCoOpModel":
        """
        Build a CoCoOp model on a CLIP checkpoint (Hub id or local folder) for `class_names`.

        The context starts from the token embeddings of `ctx_init` (official PromptLearner: positions 1..n_ctx of
        the tokenised words) or, with `ctx_init=None`, from N(0, 0.02).
        """
        class_names = validate_class_names(class_names)
        clip_kwargs = dict(clip_kwargs or {})
        check_clip_checkpoint(clip_name_or_path, revision=revision, **clip_kwargs)  # stock loading builds first
        clip = CLIPModel.from_pretrained(clip_name_or_path, revision=revision, **clip_kwargs)
        if tokenizer is None:
            tokenizer = CoCoOpProcessor.load_clip_tokenizer(
                clip_name_or_path, clip.config.text_config.vocab_size, revision=revision
            )
        config = CoCoOpConfig(
            clip_config=clip.config.to_dict(),
            clip_name_or_path=str(clip_name_or_path),
            clip_revision=revision or getattr(clip.config, "_commit_hash", None),
            id2label=dict(enumerate(class_names)),
            label2id={name: i for i, name in enumerate(class_names)},
            **config_kwargs,
        )
        model = cls(config, clip_model=clip)
        if config.ctx_init is not None:
            model.init_context_from_words(tokenizer)
        model.set_class_names(class_names, tokenizer=tokenizer)
        return model

    @torch.no_grad()
    def init_context_from_words(self, tokenizer) -> None:
        """Context := token embeddings of `config.ctx_init` (official: `embedding[0, 1 : 1 + n_ctx]`)."""
        ids = tokenizer(self.config.ctx_init, add_special_tokens=False)["input_ids"]
        if len(ids) != self.config.n_ctx:
            raise ValueError(
                f"ctx_init {self.config.ctx_init!r} tokenises to {len(ids)} tokens, but n_ctx={self.config.n_ctx}: "
                "use words that are single tokens of the CLIP vocabulary."
            )
        embedding = self.clip.text_model.embeddings.token_embedding.weight
        words = embedding[torch.tensor(ids, device=embedding.device)]  # (n_ctx, dim)
        # A class-specific context starts from the words in every class's row (the official code would instead
        # build a single generic context when CTX_INIT is set, dropping CSC).
        self.prompt_learner.ctx.copy_(words.expand_as(self.prompt_learner.ctx))

    def class_prompts(self, class_names, tokenizer=None) -> BatchEncoding:
        """
        Prompt token ids for `class_names` with this model's context words: `input_ids` (classes, 77), `eos_index`
        and `name_length` (classes,), what `CoCoOpProcessor(class_names=...)` gives. Pass them to `forward` or
        `get_text_features` to use another class set for one call; the model is not changed.
        """
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if tokenizer is None:
            raise ValueError("no tokenizer to build prompts with: pass `tokenizer=` (a CLIPTokenizer).")
        return build_prompt_ids(
            tokenizer,
            class_names,
            self.config.prompt_prefix,
            self.config.n_ctx,
            self.config.clip_config.text_config.max_position_embeddings,
        )

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
        class_names = validate_class_names(class_names)  # a list: a generator would be consumed by the check
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if tokenizer is None:
            raise ValueError(
                "no tokenizer to build prompts with: pass `tokenizer=` (a CLIPTokenizer) to set_class_names."
            )
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
        held = self._class_set  # read once: this call uses this class set whatever another thread sets meanwhile
        if held is None:
            raise ValueError(
                "this model holds no class prompts: pass class prompts (input_ids and eos_index from "
                "CoCoOpProcessor(class_names=...) or model.class_prompts(names)), or call "
                "model.set_class_names(class_names, tokenizer=...) first."
            )
        return held.prompts(self._build_class_prompts).to(self.prompt_learner.ctx.device)

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
    def zero_shot_embeds(self) -> torch.Tensor:
        """KgCoOp's frozen zero-shot text features of the held class set, (classes, projection_dim), L2-normalised."""
        return self._held_prompts().zero_shot

    @torch.no_grad()
    def zero_shot_text_features(self, class_names, tokenizer=None) -> torch.Tensor:
        """
        KgCoOp's frozen zero-shot text features `(classes, projection_dim)`, L2-normalised: the frozen CLIP's text
        features of `config.kgcoop_template.format(name)` (`_` in a name read as a space, as in the prompts). The
        model is not changed. Official KgCoOp `trainers/kgcoop.py`: `clip_model_.encode_text(temp.format(c))`.
        """
        class_names = validate_class_names(class_names)
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if tokenizer is None:
            raise ValueError("no tokenizer to build the zero-shot prompts with: pass `tokenizer=` (a CLIPTokenizer).")
        template = self.config.kgcoop_template
        texts = [template.format(clean_class_name(name)) for name in class_names]
        encoded = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        context = self.config.clip_config.text_config.max_position_embeddings
        for name, ids in zip(class_names, encoded, strict=True):
            if len(ids) > context or ids[-1] != tokenizer.eos_token_id:
                raise ValueError(
                    f"the zero-shot prompt of class {name!r} ({template!r}) makes {len(ids)} tokens, over the text "
                    f"context of {context}: shorten the name or `kgcoop_template`."
                )
        device = self.prompt_learner.ctx.device
        ids = torch.full((len(encoded), max(map(len, encoded))), tokenizer.pad_token_id, dtype=torch.long)
        for row, tokens in enumerate(encoded):
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        ids, eos = ids.to(device), torch.tensor([len(t) - 1 for t in encoded], device=device)
        embeddings = self.clip.text_model.embeddings
        features = []
        per_call = max(1, self.config.text_chunk_tokens // ids.shape[1])
        for start in range(0, len(encoded), per_call):
            chunk_eos = eos[start : start + per_call]
            length = int(chunk_eos.max()) + 1
            hidden = embeddings.token_embedding(ids[start : start + per_call, :length])
            features.append(self._encode_prompts(hidden + embeddings.position_embedding.weight[:length], chunk_eos))
        features = torch.cat(features)
        return features / features.norm(dim=-1, keepdim=True)

    # ------------------------------------------------------------------ saving and loading (sharing_cocoop.py)

    def load_prompt_learner_state(self, state_dict: dict, source: str = "state dict") -> None:
        """Load context + meta-net tensors (keys as in `prompt_learner.state_dict()`), checking names and shapes."""
        expected = self.prompt_learner.state_dict()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"{source}: prompt-learner tensors do not match this model (conditional={self.config.conditional}, "
                f"n_ctx={self.config.n_ctx}, class_specific_context={self.config.class_specific_context}): missing "
                f"{missing}, unexpected {unexpected}."
            )
        for name, tensor in state_dict.items():
            if tuple(tensor.shape) != tuple(expected[name].shape):
                shape = tuple(tensor.shape)
                raise ValueError(f"{source}: tensor {name!r} has shape {shape}, {self._expected_shape(name)}")
        converted = {name: tensor.to(expected[name].dtype) for name, tensor in state_dict.items()}
        # NaN / infinite weights (a diverged run, a damaged file) would give NaN logits without a word; checked after
        # the cast, which can overflow (an fp32 value beyond fp16's range).
        check_finite_tensors(converted, source)
        self.prompt_learner.load_state_dict(converted, strict=True)

    def _expected_shape(self, name: str) -> str:
        """Why this model expects the shape it does for prompt-learner tensor `name`, for error messages."""
        config = self.config
        shape = tuple(self.prompt_learner.state_dict()[name].shape)
        if name == "ctx":
            width = config.clip_config.text_config.hidden_size
            if config.class_specific_context:
                return (
                    f"but this model needs {shape}: a class-specific context (class_specific_context=True), one "
                    f"context per class ({shape[0]} classes in id2label), n_ctx={config.n_ctx}, text width {width}. "
                    "A (n_ctx, width) tensor is a shared context: load it with class_specific_context=False."
                )
            return (
                f"but this CLIP needs {shape} (n_ctx={config.n_ctx}, text width {width}); a (classes, n_ctx, width) "
                "tensor is a class-specific context: load it with class_specific_context=True and its class names."
            )
        hidden = config.clip_config.projection_dim // config.meta_net_reduction
        return (
            f"but this model needs {shape}: its meta-net maps the image feature (projection_dim "
            f"{config.clip_config.projection_dim}) to {hidden} hidden units (meta_net_reduction="
            f"{config.meta_net_reduction}) and then to the text width {config.clip_config.text_config.hidden_size}. "
            "Set meta_net_reduction to the value the tensors were trained with, or use the CLIP they belong to."
        )

    def save_pretrained(self, save_directory, adapter_only: bool = False, **kwargs):
        """
        Save a folder that is complete on its own: config (with `auto_map` and `custom_pipelines`), weights
        (safetensors), the processor (image processor + the tokenizer the prompts are built with) and the code files
        that loading and running need, so it loads with `trust_remote_code=True` without this package. With
        `adapter_only=True` the folder holds only config.json, the prompt-learner tensors
        (`prompt_learner.safetensors`, ~140 KB at ViT-B/16 widths, with a fingerprint of the base CLIP),
        `processor_config.json` (prompt settings + image processor config, no tokenizer files) and the code files.
        Loading then takes CLIP and its tokenizer from the base CLIP named by `config.clip_name_or_path` at
        `config.clip_revision`, or from an already-loaded CLIP (`from_pretrained(folder, clip_model=clip)`).
        """
        # What the saved CLIP runs in, from the weights themselves (a later .to(...) may have changed them since a cast).
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
    def from_pretrained(
        cls, pretrained_model_name_or_path, *model_args, clip_model: CLIPModel | None = None, **kwargs
    ):
        """
        Load a saved CoCoOp folder or Hub repo (full or adapter-only) and rebuild its class prompts.

        `clip_model`: for an adapter-only folder, an already-loaded `CLIPModel` to put it on instead of loading the
        base CLIP again: several adapters then share one backbone in memory (its parameters are not copied). The
        adapter's recorded fingerprint of its base CLIP must match (else ValueError; `allow_other_clip=True` loads
        anyway with a warning).
        """
        model = load_model(
            cls, super().from_pretrained, pretrained_model_name_or_path, *model_args, clip_model=clip_model, **kwargs
        )
        loaded = model[0] if isinstance(model, tuple) else model  # (model, loading info) with output_loading_info
        saved_dtype = loaded.config.frozen_clip_dtype
        if saved_dtype and clip_model is None and kwargs.get("dtype", kwargs.get("torch_dtype")) is None:
            # Saved after cast_frozen_clip: the CLIP runs in that dtype again (a given clip_model is the caller's).
            loaded.cast_frozen_clip(getattr(torch, saved_dtype))
        return model

    # ------------------------------------------------------------------ frozen CLIP

    def cast_frozen_clip(self, dtype: torch.dtype) -> "CoCoOpModel":
        """
        Cast the frozen CLIP's weights to `dtype` (e.g. `torch.bfloat16`), keeping the prompt learner (and so its
        gradients and optimizer state) in its own dtype, usually fp32. On a GPU this halves the weight traffic and
        removes autocast's re-cast of every CLIP weight on every call; the official code likewise runs its CLIP in
        fp16 weights. The prompt embeddings are cast to CLIP's dtype where they enter its text layers, so gradients
        still reach the fp32 context. Numbers then differ from an fp32 CLIP by half-precision rounding. Saving
        such a model writes CLIP's weights in `dtype` (an adapter-only save writes only the fp32 prompt learner) and
        records it in `config.frozen_clip_dtype`: `from_pretrained` casts the loaded CLIP to it again.
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
        in the lower dtype of the frozen CLIP's weights).
        """
        return self.prompt_learner.ctx.dtype

    def _text_dtype(self) -> torch.dtype:
        """The dtype of CLIP's text weights: what its layers expect (autocast may still compute in another)."""
        return self.clip.text_model.embeddings.token_embedding.weight.dtype

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen backbone: no dropout, whatever the wrapper's mode
        return self

    def _check_pixel_values(self, pixel_values) -> None:
        vision = self.config.clip_config.vision_config
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"`pixel_values` must be a torch.Tensor, got {type(pixel_values).__name__}.")
        expected = f"(batch, {vision.num_channels}, {vision.image_size}, {vision.image_size})"
        if pixel_values.dim() != 4:
            raise ValueError(
                f"`pixel_values` must have rank 4 {expected}, got shape {tuple(pixel_values.shape)}; "
                "for one image use pixel_values.unsqueeze(0)."
            )
        if pixel_values.shape[1] != vision.num_channels:
            raise ValueError(
                f"`pixel_values` must have {vision.num_channels} channels {expected}, got shape "
                f"{tuple(pixel_values.shape)} (channels-last images need .permute(0, 3, 1, 2))."
            )
        if tuple(pixel_values.shape[2:]) != (vision.image_size, vision.image_size):
            raise ValueError(
                f"`pixel_values` must be {vision.image_size}x{vision.image_size} {expected}, got shape "
                f"{tuple(pixel_values.shape)}: resize with the model's processor."
            )
        if not pixel_values.dtype.is_floating_point:
            # uint8 / int images would run through the vision tower as raw 0..255 values: silently wrong.
            raise TypeError(
                f"`pixel_values` must be floating point (normalised by the model's processor), got dtype "
                f"{pixel_values.dtype}: pass the processor's output, not raw image bytes."
            )
        if pixel_values.shape[0] == 0:
            raise ValueError("`pixel_values` holds no image (batch size 0): pass at least one image.")

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised projected image features `(batch, projection_dim)` from the frozen vision tower."""
        self._check_pixel_values(pixel_values)
        features = self.clip.get_image_features(pixel_values=pixel_values).pooler_output
        return features / features.norm(dim=-1, keepdim=True)

    # ------------------------------------------------------------------ text path

    def _encode_prefix(self, prefix: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys/values of `[SOS, ctx]` at every layer, `(batch, heads, P, head_dim)`; causal over P."""
        layers = self.clip.text_model.encoder.layers
        cache = []
        hidden = prefix
        for i, layer in enumerate(layers):
            query, key, value = _qkv(layer, hidden)
            cache.append((key, value))
            if i + 1 < len(layers):  # the last layer's prefix outputs are never read
                attn = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=layer.self_attn.scale)
                hidden = _finish_layer(layer, hidden, _merge_heads(attn))
        return cache

    def _encode_suffix(self, prefix_cache, suffix_ids: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
        """
        Text features `(batch, classes, projection_dim)` of the class-name tokens `suffix_ids` `(classes, L)`
        attending to the cached prefix keys/values; `eos` `(classes,)` is each class's EOS position in the suffix.
        """
        text = self.clip.text_model
        layers = text.encoder.layers
        batch, heads, prefix_len, head_dim = prefix_cache[0][0].shape
        classes, length = suffix_ids.shape
        pack = min(classes, max(1, PACKED_SUFFIX_TOKENS // length))  # class suffixes per packed sequence
        padding = -classes % pack  # repeat the last class to fill the last pack; its outputs are dropped
        suffix_ids = torch.cat([suffix_ids, suffix_ids[-1:].expand(padding, -1)])
        eos = torch.cat([eos, eos[-1:].expand(padding)])
        packs = suffix_ids.shape[0] // pack
        positions = text.embeddings.position_embedding.weight[prefix_len : prefix_len + length]
        hidden = text.embeddings.token_embedding(suffix_ids) + positions  # (classes + padding, L, dim)
        hidden = hidden.view(1, packs, pack * length, -1).expand(batch, -1, -1, -1).flatten(0, 1)
        mask = _packed_suffix_mask(length, pack, prefix_len, hidden.device)  # (pack * L, P + pack * L)
        # Position of each class's EOS token inside its packed sequence, per (image, pack) row.
        eos_positions = (torch.arange(pack, device=eos.device) * length + eos.view(packs, pack)).repeat(batch, 1)

        def with_prefix(prefix_part, suffix_part):  # (batch, heads, P, d) + (batch * packs, heads, pack * L, d)
            prefix_part = prefix_part.unsqueeze(1).expand(-1, packs, -1, -1, -1).flatten(0, 1)
            return torch.cat([prefix_part.to(suffix_part.dtype), suffix_part], dim=2)

        for i, (layer, (prefix_key, prefix_value)) in enumerate(zip(layers, prefix_cache, strict=True)):
            query, key, value = _qkv(layer, hidden)  # (batch * packs, heads, pack * L, head_dim)
            layer_mask = mask
            if i == len(layers) - 1:
                # Only the EOS state is pooled: the last layer runs its query, MLP and norm on that token alone.
                index = eos_positions[:, None, :, None].expand(-1, heads, -1, head_dim)
                query = torch.gather(query, 2, index)  # (batch * packs, heads, pack, head_dim)
                hidden = torch.gather(hidden, 1, eos_positions[..., None].expand(-1, -1, hidden.shape[-1]))
                layer_mask = mask[eos_positions].unsqueeze(1)  # (batch * packs, 1, pack, P + pack * L)
            attn = F.scaled_dot_product_attention(
                query,
                with_prefix(prefix_key, key),
                with_prefix(prefix_value, value),
                attn_mask=layer_mask,
                scale=layer.self_attn.scale,
            )
            hidden = _finish_layer(layer, hidden, _merge_heads(attn))
        pooled = hidden.reshape(batch, packs * pack, -1)[:, :classes]  # EOS states, (batch, classes, dim)
        return self.clip.text_projection(text.final_layer_norm(pooled))

    def _encode_prompts(self, hidden: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
        """
        Text features `(prompts, projection_dim)` of whole prompts `hidden` `(prompts, L, dim)` (token + position
        embeddings, L = the longest EOS + 1): CLIP's text layers under a causal mask, pooled at `eos` `(prompts,)`,
        final layer norm, projection (official TextEncoder.forward).
        """
        text = self.clip.text_model
        layers = text.encoder.layers
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        for i, layer in enumerate(layers):
            query, key, value = _qkv(layer, hidden)  # (prompts, heads, L, head_dim)
            if i == len(layers) - 1:
                # Only the EOS state is pooled: the last layer runs its query, MLP and norm on that token alone.
                query = query[rows, :, eos].unsqueeze(2)  # (prompts, heads, 1, head_dim)
                hidden = hidden[rows, eos].unsqueeze(1)  # (prompts, 1, dim)
                sees = torch.arange(key.shape[2], device=eos.device)[None, :] <= eos[:, None]  # causal row at EOS
                attn = F.scaled_dot_product_attention(
                    query, key, value, attn_mask=sees[:, None, None, :], scale=layer.self_attn.scale
                )
            else:
                attn = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=layer.self_attn.scale)
            hidden = _finish_layer(layer, hidden, _merge_heads(attn))
        return self.clip.text_projection(text.final_layer_norm(hidden[:, 0]))

    def _prompt_layout(self, eos_index: torch.Tensor, name_length: torch.Tensor, length: int):
        """
        Where each of the `length` prompt positions comes from, per class: `is_ctx` (classes, L) bool, `ctx_pos`
        (context row) and `token_pos` (position in the tokenised "{prefix words} {name}." prompt).

        Official CoOp PromptLearner.forward, with h context tokens before the name (end: h = n_ctx; middle:
        h = n_ctx // 2; front: h = 0) and n = name_lens: `[SOS] ctx[:h] name[:n] ctx[h:] rest-of-suffix`, where
        the name is the first n tokens of the suffix after the context. Positions are only permuted: EOS stays put.
        """
        n_ctx = self.config.n_ctx
        position = self.config.class_token_position
        half = {"end": n_ctx, "middle": n_ctx // 2, "front": 0}[position]
        j = torch.arange(length, device=eos_index.device)[None, :]  # (1, L)
        n = name_length[:, None] if position != "end" else torch.zeros_like(eos_index)[:, None]  # (classes, 1)
        is_ctx = ((j >= 1) & (j <= half)) | ((j >= half + n + 1) & (j <= n + n_ctx))
        ctx_pos = torch.where(j <= half, j - 1, j - 1 - n).clamp(0, n_ctx - 1)
        in_name = (j > half) & (j <= half + n)
        token_pos = torch.where(in_name, j + n_ctx - half, j).expand_as(is_ctx)
        return is_ctx, ctx_pos, token_pos

    def _encode_full_prompts(self, ctx, prompt_ids, eos, name_length) -> torch.Tensor:
        """
        Text features `(batch, classes, projection_dim)` of whole prompts for the classes of one chunk: `ctx`
        `(batch, n_ctx, dim)` shared by the classes, or `(1, classes, n_ctx, dim)` one per class; `prompt_ids`
        `(classes, L)` cut after the longest EOS.
        """
        classes, length = prompt_ids.shape
        is_ctx, ctx_pos, token_pos = self._prompt_layout(eos, name_length, length)
        embeddings = self.clip.text_model.embeddings
        tokens = embeddings.token_embedding(torch.gather(prompt_ids, 1, token_pos))  # (classes, L, dim)
        if ctx.dim() == 3:
            ctx = ctx.unsqueeze(1)
        ctx = ctx.expand(-1, classes, -1, -1)  # (batch, classes, n_ctx, dim)
        ctx = ctx[:, torch.arange(classes, device=ctx.device)[:, None], ctx_pos]  # (batch, classes, L, dim)
        hidden = torch.where(is_ctx[None, :, :, None], ctx, tokens.to(ctx.dtype)[None])
        hidden = hidden + embeddings.position_embedding.weight[:length].to(ctx.dtype)
        batch = hidden.shape[0]
        features = self._encode_prompts(hidden.flatten(0, 1).to(self._text_dtype()), eos.repeat(batch))
        return features.view(batch, classes, -1)

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
        eagerly.
        """
        if length_buckets is not None:
            buckets = tuple(sorted(set(length_buckets))) if not isinstance(length_buckets, (str, bytes)) else ()
            if not buckets or any(isinstance(b, bool) or not isinstance(b, int) or b < 2 for b in buckets):
                raise ValueError(
                    f"`length_buckets` must be suffix lengths in tokens, integers >= 2 (a name token and EOS), e.g. "
                    f"(8, 16, 32); got {length_buckets!r}."
                )
            compile_kwargs.setdefault("dynamic", False)
            self._length_buckets = buckets
        else:
            compile_kwargs.setdefault("dynamic", True)
            self._length_buckets = None
        self._suffix_encoder = torch.compile(self._encode_suffix, **compile_kwargs)

    def _class_groups(
        self, eos_index: torch.Tensor, batch: int, length_buckets=None, max_length: int | None = None
    ) -> list[tuple[torch.Tensor, int, int]]:
        """
        `(class indices, padded suffix length, count of real classes)` per text-tower call. Classes are grouped by
        prompt length (`config.bucket_by_length`): lengths are merged where padding a few classes costs less than
        one more call (a dynamic programme over the sorted lengths); each group is chunked to
        `config.text_chunk_tokens`. With `length_buckets` (see `compile_text_path`), lengths go to fixed buckets
        (capped at `max_length`) and each bucket's last chunk repeats its last class up to a power of two; only the
        first `count` classes of a chunk are real.
        """
        suffix_lengths = (eos_index - self.config.n_ctx).tolist()  # tokens after [SOS, ctx], EOS included
        by_length = {}
        for index, length in enumerate(suffix_lengths):
            by_length.setdefault(length, []).append(index)
        lengths = sorted(by_length)
        if length_buckets is not None:
            return self._fixed_shape_groups(by_length, batch, length_buckets, max_length, eos_index.device)
        if self.config.bucket_by_length:
            # Price of one more text-tower call in prompt tokens: kernel launches dominate small calls on a GPU.
            call_cost = 4096 if eos_index.device.type == "cuda" else 64
            best = [0.0] + [math.inf] * len(lengths)  # best[j]: cheapest grouping of lengths[:j]
            cut = [0] * (len(lengths) + 1)
            for j in range(1, len(lengths) + 1):
                count = 0
                for i in range(j, 0, -1):  # group lengths[i-1 : j], padded to lengths[j-1]
                    count += len(by_length[lengths[i - 1]])
                    cost = best[i - 1] + batch * count * lengths[j - 1] + call_cost
                    if cost < best[j]:
                        best[j], cut[j] = cost, i - 1
            bounds, j = [], len(lengths)
            while j > 0:
                bounds.append((cut[j], j))
                j = cut[j]
            groups = [
                ([index for length in lengths[i:j] for index in by_length[length]], lengths[j - 1])
                for i, j in reversed(bounds)
            ]
        else:
            groups = [(list(range(len(suffix_lengths))), lengths[-1])]
        prefix_len = 1 + self.config.n_ctx
        chunked = []
        for indices, length in groups:
            per_call = max(1, self.config.text_chunk_tokens // (batch * (prefix_len + length)))
            for start in range(0, len(indices), per_call):
                chunk = torch.tensor(indices[start : start + per_call], device=eos_index.device)
                chunked.append((chunk, length, len(chunk)))
        return chunked

    def _fixed_shape_groups(self, by_length: dict, batch: int, buckets, max_length: int, device):
        """`_class_groups` for a compiled text path: few distinct (classes, length) shapes per batch size."""
        by_bucket = {}
        for length in sorted(by_length):
            bucket = min([b for b in buckets if b >= length] or [max_length])
            by_bucket.setdefault(min(max(bucket, length), max_length), []).extend(by_length[length])
        prefix_len = 1 + self.config.n_ctx
        chunked = []
        for length, indices in by_bucket.items():
            per_call = max(1, self.config.text_chunk_tokens // (batch * (prefix_len + length)))
            for start in range(0, len(indices), per_call):
                real = indices[start : start + per_call]
                size = min(per_call, 1 << (len(real) - 1).bit_length())  # full chunks, or a power of two
                chunk = torch.tensor(real + real[-1:] * (size - len(real)), device=device)
                chunked.append((chunk, length, len(real)))
        return chunked

    def _prompts(self, input_ids, eos_index, name_length=None) -> tuple[ClassPrompts, bool]:
        """
        The class prompts of this call and whether they were given: the given ones (checked; `zero_shot` empty),
        else the class set the model holds, read once.
        """
        if input_ids is None and eos_index is None:
            return self._held_prompts(), False
        _check_class_prompts(input_ids, eos_index, self.config, name_length)
        device = self.prompt_learner.ctx.device
        if self.config.class_specific_context:
            held_set = self._class_set  # read once
            held = held_set.prompts(self._build_class_prompts) if held_set is not None else None
            check_class_specific(self, None, input_ids, eos_index, held)
        if name_length is not None:
            name_length = name_length.to(device)
        given = ClassPrompts(input_ids.to(device), eos_index.to(device), name_length, torch.empty(0, 0))
        return given, True

    def _uses_prefix_cache(self) -> bool:
        """The fast path: every class shares the `[SOS, ctx]` prefix, so its keys/values are computed once."""
        return self.config.class_token_position == "end" and not self.config.class_specific_context

    def get_text_features(
        self,
        image_embeds: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        eos_index: torch.Tensor | None = None,
        name_length: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Prompt text features, L2-normalised: `(batch, classes, projection_dim)` for CoCoOp, `(1, classes, ...)`
        for CoOp (its context does not depend on the image: computed once, whatever the batch). `input_ids` /
        `eos_index` / `name_length`: class prompts for this call (see `forward`); default: the class set the model
        holds.
        """
        prompts, _ = self._prompts(input_ids, eos_index, name_length)
        return self._text_features(image_embeds, prompts)

    def _text_features(self, image_embeds: torch.Tensor, prompts: ClassPrompts) -> torch.Tensor:
        """`get_text_features` for the class prompts of one call."""
        prompt_ids, eos_index, name_length = prompts.input_ids, prompts.eos_index, prompts.name_length
        # The meta-net reads the image feature in its own dtype: a half-precision CLIP gives half-precision features
        # to a prompt learner kept in fp32 (`cast_frozen_clip`).
        ctx = self.prompt_learner(image_embeds.to(self.prompt_learner.ctx.dtype))  # (batch|1, n_ctx, dim); CSC 4-d
        if not self._uses_prefix_cache():
            return self._full_prompt_features(ctx, prompt_ids, eos_index, name_length)
        embeddings = self.clip.text_model.embeddings
        sos = embeddings.token_embedding(prompt_ids[:1, :1]).expand(ctx.shape[0], -1, -1)
        prefix = torch.cat([sos.to(ctx.dtype), ctx], dim=1)  # (batch, P, dim), P = 1 + n_ctx
        prefix = prefix + embeddings.position_embedding.weight[: prefix.shape[1]]
        prefix_cache = self._encode_prefix(prefix.to(self._text_dtype()))
        n_ctx = self.config.n_ctx
        features, order = [], []
        groups = self._class_groups(eos_index, ctx.shape[0], self._length_buckets, prompt_ids.shape[1] - 1 - n_ctx)
        for chunk, length, count in groups:
            suffix_ids = prompt_ids[chunk, 1 + n_ctx : 1 + n_ctx + length]
            eos = eos_index[chunk] - 1 - n_ctx
            if self.gradient_checkpointing and torch.is_grad_enabled():
                # Per-chunk checkpoint: only the chunk's features are kept; its activations are recomputed.
                out = checkpoint(self._suffix_encoder, prefix_cache, suffix_ids, eos, use_reentrant=False)
            else:
                out = self._suffix_encoder(prefix_cache, suffix_ids, eos)
            features.append(out[:, :count])  # a fixed-shape chunk's repeated classes are dropped
            order.append(chunk[:count])
        features = torch.cat(features, dim=1)[:, torch.argsort(torch.cat(order))]  # back to class order
        return features / features.norm(dim=-1, keepdim=True)

    def _full_prompt_features(self, ctx, prompt_ids, eos_index, name_length) -> torch.Tensor:
        """
        The general path (class name in the middle or front, or a class-specific context): each class's whole
        prompt is assembled and encoded, classes grouped by length and chunked like the prefix path. A CoOp context
        gives `(1, classes, proj)`: one text pass per class, no per-image work.
        """
        features, order = [], []
        for chunk, length, _ in self._class_groups(eos_index, ctx.shape[0]):
            chunk_ctx = ctx[:, chunk] if ctx.dim() == 4 else ctx  # class-specific rows, or the shared context
            ids = prompt_ids[chunk, : 1 + self.config.n_ctx + length]
            lengths = name_length[chunk] if name_length is not None else None
            args = (chunk_ctx, ids, eos_index[chunk], lengths)
            if self.gradient_checkpointing and torch.is_grad_enabled():
                out = checkpoint(self._encode_full_prompts, *args, use_reentrant=False)
            else:
                out = self._encode_full_prompts(*args)
            features.append(out)
            order.append(chunk)
        features = torch.cat(features, dim=1)[:, torch.argsort(torch.cat(order))]  # back to class order
        return features / features.norm(dim=-1, keepdim=True)

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
    ) -> CoCoOpOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch, 3, size, size)`): images from the processor.
        labels (`torch.LongTensor` of shape `(batch,)`, *optional*): class indices; gives `loss`. Any integer dtype.
        image_embeds (`torch.FloatTensor` of shape `(batch, projection_dim)`, *optional*): image features from
            [`~CoCoOpModel.get_image_features`], in place of `pixel_values` (reuse them across class sets). They are
            L2-normalised here, as the official code normalises the image feature before the meta-net reads it.
        input_ids (`torch.LongTensor` of shape `(classes, length)`, *optional*): class prompts for this call only,
            with `eos_index` (`torch.LongTensor` of shape `(classes,)`): what `CoCoOpProcessor(class_names=...)`
            or [`~CoCoOpModel.class_prompts`] returns. Without them the model uses the class set it holds
            (`set_class_names`, `config.id2label`). The model is never changed by a forward.
        name_length (`torch.LongTensor` of shape `(classes,)`, *optional*): token count of each class name, part of
            the class prompts (the processor returns it); required with `input_ids` when
            `config.class_token_position` is "middle" or "front".
        zero_shot_embeds (`torch.FloatTensor` of shape `(classes, projection_dim)`, *optional*): KgCoOp's frozen
            zero-shot text features of the classes of `input_ids` ([`~CoCoOpModel.zero_shot_text_features`]);
            needed only with `labels`, `config.kgcoop_weight > 0` and class prompts given to this call (for the held
            class set the model has them).
        """
        if (pixel_values is None) == (image_embeds is None):
            raise ValueError("pass exactly one of `pixel_values` or `image_embeds`.")
        if image_embeds is None:
            image_embeds = self.get_image_features(pixel_values)
        else:
            image_embeds = _normalised_image_embeds(image_embeds, self.config, self.prompt_learner.ctx.dtype)
        # One read of the held class set per call: its prompts and zero-shot features belong to the same class set.
        prompts, given = self._prompts(input_ids, eos_index, name_length)
        text_embeds = self._text_features(image_embeds, prompts)  # (batch|1, classes, d)
        logit_scale = self.clip.logit_scale.exp()
        image_embeds_t = image_embeds.to(text_embeds.dtype)
        if self.config.conditional:
            logits = logit_scale * torch.einsum("bd,bcd->bc", image_embeds_t, text_embeds)  # (batch, classes)
        else:  # CoOp: one text feature per class, shared by all images
            logits = logit_scale * image_embeds_t @ text_embeds[0].t()
        loss = kgcoop_loss = None
        if labels is not None:
            labels = _checked_labels(labels, logits)
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
        return CoCoOpOutput(loss=loss, logits=logits, image_embeds=image_embeds, kgcoop_loss=kgcoop_loss)

    def _kgcoop_targets(self, zero_shot_embeds, held_zero_shot, classes: int) -> torch.Tensor:
        """
        The zero-shot text features KgCoOp pulls towards: given to the call, else `held_zero_shot`, those of the held
        class set (None when the call's prompts were given).
        """
        projection_dim = self.config.clip_config.projection_dim
        if zero_shot_embeds is None:
            if held_zero_shot is None:
                raise ValueError(
                    f"kgcoop_weight={self.config.kgcoop_weight} needs the zero-shot text features of the classes of "
                    "this call's prompts: pass `zero_shot_embeds=model.zero_shot_text_features(class_names)` with "
                    "`input_ids`, or use the held class set (set_class_names)."
                )
            zero_shot_embeds = held_zero_shot
            if zero_shot_embeds.numel() == 0 or zero_shot_embeds.device.type == "meta":
                raise ValueError(
                    f"kgcoop_weight={self.config.kgcoop_weight} but this model holds no zero-shot text features: "
                    "call model.set_class_names(class_names, tokenizer=...) (it computes them when kgcoop_weight > 0) "
                    "or pass `zero_shot_embeds`."
                )
        if not isinstance(zero_shot_embeds, torch.Tensor) or not zero_shot_embeds.dtype.is_floating_point:
            raise TypeError(f"`zero_shot_embeds` must be a floating-point tensor, got {type(zero_shot_embeds)}.")
        if tuple(zero_shot_embeds.shape) != (classes, projection_dim):
            raise ValueError(
                f"`zero_shot_embeds` must be (classes, projection_dim) = ({classes}, {projection_dim}), one row per "
                f"class of the prompts, got {tuple(zero_shot_embeds.shape)}."
            )
        return zero_shot_embeds.to(self.prompt_learner.ctx.device)


# ---------------------------------------------------------------------------------------------- input checks


def _normalised_image_embeds(image_embeds, config: CoCoOpConfig, dtype: torch.dtype) -> torch.Tensor:
    """`image_embeds` checked, in the model's float dtype, L2-normalised (raw CLIP features are accepted)."""
    projection_dim = config.clip_config.projection_dim
    if not isinstance(image_embeds, torch.Tensor) or not image_embeds.dtype.is_floating_point:
        found = image_embeds.dtype if isinstance(image_embeds, torch.Tensor) else type(image_embeds).__name__
        raise TypeError(
            f"`image_embeds` must be a floating-point torch.Tensor (batch, {projection_dim}), got {found}."
        )
    if image_embeds.dim() != 2 or image_embeds.shape[1] != projection_dim:
        raise ValueError(f"`image_embeds` must be (batch, {projection_dim}), got shape {tuple(image_embeds.shape)}.")
    if image_embeds.shape[0] == 0:
        raise ValueError("`image_embeds` holds no image (batch size 0): pass at least one feature row.")
    image_embeds = image_embeds.to(dtype)  # the meta-net's dtype (float64 input, or fp32 features for a bf16 model)
    norms = image_embeds.float().norm(dim=-1, keepdim=True)
    if not torch.isfinite(norms).all() or (norms == 0).any():
        bad = (~torch.isfinite(norms) | (norms == 0)).flatten().nonzero().flatten().tolist()
        raise ValueError(f"`image_embeds` rows {bad[:5]} are zero or not finite: they have no direction to compare.")
    # Features of get_image_features are unit-norm already and pass unchanged (bit-equal to the pixel path);
    # raw CLIP features (norms ~10) are normalised here, as the official code does before the meta-net.
    if (norms - 1).abs().max() <= 1e-3:
        return image_embeds
    return image_embeds / norms.to(image_embeds.dtype)


def _check_class_prompts(input_ids, eos_index, config: CoCoOpConfig, name_length=None) -> None:
    """Class prompts given to forward: shapes, dtypes and EOS positions that the text path can read."""
    help_text = "pass both, as CoCoOpProcessor(class_names=...) or model.class_prompts(class_names) returns them"
    if input_ids is None or eos_index is None:
        missing = "eos_index" if eos_index is None else "input_ids"
        raise ValueError(f"class prompts need `input_ids` and `eos_index`, `{missing}` is missing: {help_text}.")
    for name, tensor, rank in (("input_ids", input_ids, 2), ("eos_index", eos_index, 1)):
        if not isinstance(tensor, torch.Tensor) or tensor.dtype.is_floating_point or tensor.dtype == torch.bool:
            found = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise TypeError(f"`{name}` must be an integer torch.Tensor, got {found}: {help_text}.")
        if tensor.dim() != rank:
            raise ValueError(f"`{name}` must have rank {rank}, got shape {tuple(tensor.shape)}: {help_text}.")
    classes, length = input_ids.shape
    if classes == 0 or eos_index.shape[0] != classes:
        raise ValueError(
            f"`input_ids` {tuple(input_ids.shape)} and `eos_index` {tuple(eos_index.shape)} must describe the same "
            f"non-empty set of classes: {help_text}."
        )
    context = config.clip_config.text_config.max_position_embeddings
    lowest = config.n_ctx + 2  # SOS, the context, at least one name or '.' token, then EOS
    bad = (eos_index < lowest) | (eos_index >= min(length, context))
    if length > context or bad.any():
        raise ValueError(
            f"class prompts do not fit this model: `input_ids` has {length} positions (at most {context}) and each "
            f"`eos_index` must lie in [{lowest}, {min(length, context)}) (after SOS and {config.n_ctx} context "
            f"tokens); got {eos_index[bad].tolist()[:5]} for classes {bad.nonzero().flatten().tolist()[:5]}. "
            f"Build them with this model's processor or model.class_prompts(class_names)."
        )
    vocab_size = config.clip_config.text_config.vocab_size
    if (input_ids < 0).any() or (input_ids >= vocab_size).any():
        raise ValueError(f"`input_ids` hold token ids outside the vocabulary [0, {vocab_size}).")
    position = config.class_token_position
    if name_length is None:
        if position != "end":
            raise ValueError(
                f'class_token_position="{position}" moves the class name, so the class prompts need `name_length` '
                "(the token count of each name): pass it with input_ids and eos_index, as the processor and "
                "model.class_prompts(class_names) return it."
            )
        return
    if (
        not isinstance(name_length, torch.Tensor)
        or name_length.dtype.is_floating_point
        or name_length.dtype == torch.bool
    ):
        found = name_length.dtype if isinstance(name_length, torch.Tensor) else type(name_length).__name__
        raise TypeError(f"`name_length` must be an integer torch.Tensor, got {found}: {help_text}.")
    if tuple(name_length.shape) != (classes,):
        raise ValueError(f"`name_length` must be ({classes},), one per class, got {tuple(name_length.shape)}.")
    if position != "end":
        check_name_lengths(name_length, eos_index, config)


def _checked_labels(labels, logits) -> torch.Tensor:
    """Labels as int64 on the logits' device (any integer dtype is accepted), checked against the classes."""
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"`labels` must be an integer tensor of class indices, got {labels!r}.")
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"`labels` must have shape ({logits.shape[0]},), got {tuple(labels.shape)}.")
    labels = labels.to(device=logits.device, dtype=torch.long)
    bad = (labels < 0) | (labels >= logits.shape[1])
    if bad.any():
        raise ValueError(
            f"`labels` must lie in [0, {logits.shape[1]}) for {logits.shape[1]} classes; "
            f"got {labels[bad].tolist()[:5]} at positions {bad.nonzero().flatten().tolist()[:5]}."
        )
    return labels
