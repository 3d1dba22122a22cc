"""CoCoOp on transformers' CLIP: output dataclass, prompt learner, batched text path, CoCoOpModel.

Reference semantics: Zhou et al., "Conditional Prompt Learning for Vision-Language Models", CVPR 2022, and the
official `trainers/cocoop.py` (PromptLearner, TextEncoder, CustomCLIP). This file may import only torch,
transformers and its sibling files, so that it loads with `trust_remote_code=True`.
"""

import copy
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import CLIPModel, PreTrainedModel
from transformers import initialization as init
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import ModelOutput, cached_file, logging

from .configuration_cocoop import CoCoOpConfig
from .processing_cocoop import CoCoOpProcessor, build_prompt_ids, validate_class_names


logger = logging.get_logger(__name__)

ADAPTER_WEIGHTS_NAME = "prompt_learner.safetensors"
PROMPT_LEARNER_PREFIX = "prompt_learner."


@dataclass
class CoCoOpOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*): cross-entropy, when `labels` are given.
    logits (`torch.FloatTensor` of shape `(batch_size, num_classes)`): `logit_scale.exp()` x cosine similarity.
    image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`): L2-normalised image features.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None


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
    """The trainable part: `n_ctx` context vectors and, for CoCoOp, the meta-net."""

    def __init__(self, config: CoCoOpConfig):
        super().__init__()
        ctx_dim = config.clip_config.text_config.hidden_size
        self.ctx = nn.Parameter(torch.empty(config.n_ctx, ctx_dim))
        self.meta_net = CoCoOpMetaNet(config) if config.conditional else None

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """Context per image, `(batch, n_ctx, dim)`; CoOp returns one shared context, `(1, n_ctx, dim)`."""
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
    """

    def __init__(self, config: CoCoOpConfig, clip_model: CLIPModel | None = None):
        super().__init__(config)
        self.clip = clip_model if clip_model is not None else CLIPModel(config.clip_config)
        self.prompt_learner = CoCoOpPromptLearner(config)
        self.clip.requires_grad_(False)
        self.gradient_checkpointing = False
        self.tokenizer = None
        # Derived from the class names at run time; never saved (rebuilt by set_class_names / from_pretrained).
        self.register_buffer("prompt_ids", torch.empty(0, 0, dtype=torch.long), persistent=False)
        self.register_buffer("eos_index", torch.empty(0, dtype=torch.long), persistent=False)
        self._class_names = None
        self._suffix_encoder = self._encode_suffix  # replaced by a compiled version in compile_text_path()
        self.post_init()

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
        self.prompt_learner.ctx.copy_(embedding[torch.tensor(ids, device=embedding.device)])

    def set_class_names(self, class_names, tokenizer=None) -> None:
        """Swap the class set (base -> new) without touching learned weights; updates `config.id2label`."""
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if tokenizer is None:
            raise ValueError(
                "no tokenizer to build prompts with: pass `tokenizer=` (a CLIPTokenizer) to set_class_names."
            )
        encoding = build_prompt_ids(
            tokenizer,
            class_names,
            self.config.prompt_prefix,
            self.config.n_ctx,
            self.config.clip_config.text_config.max_position_embeddings,
        )
        device = self.prompt_learner.ctx.device
        # Cut right after the longest EOS: the causal mask means later positions never reach an EOS state.
        length = int(encoding["eos_index"].max()) + 1
        self.prompt_ids = encoding["input_ids"][:, :length].to(device)
        self.eos_index = encoding["eos_index"].to(device)
        self.tokenizer = tokenizer
        self._class_names = list(class_names)
        self.config.id2label = dict(enumerate(self._class_names))
        self.config.label2id = {name: i for i, name in enumerate(self._class_names)}

    @property
    def class_names(self) -> list[str] | None:
        return self._class_names

    # ------------------------------------------------------------------ saving and loading

    def load_prompt_learner_state(self, state_dict: dict, source: str = "state dict") -> None:
        """Load context + meta-net tensors (keys as in `prompt_learner.state_dict()`), checking names and shapes."""
        expected = self.prompt_learner.state_dict()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"{source}: prompt-learner tensors do not match this model (conditional={self.config.conditional}, "
                f"n_ctx={self.config.n_ctx}): missing {missing}, unexpected {unexpected}."
            )
        for name, tensor in state_dict.items():
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise ValueError(
                    f"{source}: tensor {name!r} has shape {tuple(tensor.shape)}, but this CLIP needs "
                    f"{tuple(expected[name].shape)} (text width {self.config.clip_config.text_config.hidden_size}, "
                    f"projection dim {self.config.clip_config.projection_dim}): is it for another CLIP?"
                )
        self.prompt_learner.load_state_dict(
            {name: tensor.to(expected[name].dtype) for name, tensor in state_dict.items()}, strict=True
        )

    def save_pretrained(self, save_directory, adapter_only: bool = False, **kwargs):
        """
        Save a folder that is complete on its own: config (with `auto_map` and `custom_pipelines`), weights
        (safetensors), the processor (image processor + the tokenizer the prompts are built with) and the code files,
        so it loads with `trust_remote_code=True` without this package. With `adapter_only=True` the folder holds
        only config.json, the prompt-learner tensors (`prompt_learner.safetensors`, ~140 KB at ViT-B/16 widths),
        `processor_config.json` (prompt settings + image processor config, no tokenizer files) and the code files:
        ~240 KB in all at ViT-B/16. Loading then takes CLIP and its tokenizer from the base CLIP named by
        `config.clip_name_or_path` at `config.clip_revision` (Hub id or folder, through the HF cache).
        """
        if not adapter_only:
            _set_sharing_fields(self.config)
            result = super().save_pretrained(save_directory, **kwargs)
            self._save_code_and_processor(save_directory)
            return result
        if not self.config.clip_name_or_path:
            raise ValueError(
                "adapter_only=True needs config.clip_name_or_path (the base CLIP to load later); this model has none: "
                "set model.config.clip_name_or_path (and clip_revision) or save the full model."
            )
        if kwargs:
            raise TypeError(f"save_pretrained(adapter_only=True) takes no other arguments, got {sorted(kwargs)}.")
        from safetensors.torch import save_file

        os.makedirs(save_directory, exist_ok=True)
        config = copy.deepcopy(self.config)
        config.adapter_only = True
        _set_sharing_fields(config)
        config.save_pretrained(save_directory)
        self._save_code_and_processor(save_directory, adapter_only=True)
        tensors = {name: t.detach().contiguous().cpu() for name, t in self.prompt_learner.state_dict().items()}
        save_file(tensors, os.path.join(save_directory, ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})
        return None

    def _save_code_and_processor(self, save_directory, adapter_only: bool = False) -> None:
        """
        Copy this file and its sibling imports (pipeline included); save a CoCoOpProcessor beside the weights. An
        adapter-only folder gets only `processor_config.json` (prompt settings + image processor config, ~1 KB): no
        tokenizer files (3.6 MB for CLIP), which `CoCoOpProcessor.from_pretrained` takes from the base CLIP.
        """
        from .pipeline_cocoop import CUSTOM_PIPELINES  # noqa: F401  (relative import: the file travels with the code)

        custom_object_save(self, save_directory)
        prompt_settings = {
            "prompt_prefix": self.config.prompt_prefix,
            "n_ctx": self.config.n_ctx,
            "context_length": self.config.clip_config.text_config.max_position_embeddings,
        }
        if adapter_only:
            image_processor = self._find_image_processor()
            if image_processor is None:
                logger.warning(
                    "No image processor found in %s or the base CLIP %s: %s holds none. CoCoOpProcessor and the "
                    "zero-shot pipeline load it from the base CLIP; the stock image-classification pipeline needs "
                    "image_processor=... (or set model._image_processor = CLIPImageProcessor(...) before saving).",
                    self.name_or_path,
                    self.config.clip_name_or_path,
                    save_directory,
                )
            CoCoOpProcessor.save_adapter_config(save_directory, image_processor, **prompt_settings)
            return
        if self.tokenizer is None:
            logger.warning("No tokenizer on this model: %s holds no processor files.", save_directory)
            return
        image_processor = self._find_image_processor()
        if image_processor is None:
            logger.warning(
                "No image processor found in %s or the base CLIP %s: %s holds only the tokenizer; set "
                "model._image_processor = CLIPImageProcessor(...) before saving to include one.",
                self.name_or_path,
                self.config.clip_name_or_path,
                save_directory,
            )
            self.tokenizer.save_pretrained(save_directory)
            return
        CoCoOpProcessor(image_processor=image_processor, tokenizer=self.tokenizer, **prompt_settings).save_pretrained(
            save_directory
        )

    def _find_image_processor(self):
        """The image processor to save: the one set on the model, else this model's folder's, else the base CLIP's."""
        from transformers import CLIPImageProcessor

        image_processor = getattr(self, "_image_processor", None)
        sources = ((self.name_or_path, None), (self.config.clip_name_or_path, self.config.clip_revision))
        for source, revision in sources if image_processor is None else ():
            if not source:
                continue
            try:
                image_processor = CLIPImageProcessor.from_pretrained(source, revision=revision)
                break
            except (OSError, ValueError):
                continue
        self._image_processor = image_processor
        return image_processor

    def push_to_hub(
        self,
        repo_id: str,
        *,
        adapter_only: bool = False,
        model_card=None,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        tags: list[str] | None = None,
        **save_kwargs,
    ):
        """
        Upload a complete folder in one commit: what [`~CoCoOpModel.save_pretrained`] writes (config with
        `auto_map`, safetensors weights, processor files, code files incl. the pipeline) plus `README.md`. With
        `adapter_only=True`: config, `prompt_learner.safetensors`, `processor_config.json` and the code files.

        The card is `model_card` (a `huggingface_hub.ModelCard` or its text) if given, else the repo's existing
        CoCoOp card (tag `cocoop`), else one rendered by `modelcard_cocoop.render_model_card` from this model.
        """
        import tempfile

        from huggingface_hub import CommitOperationAdd, HfApi, ModelCard

        from .modelcard_cocoop import render_model_card

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if model_card is None:
            try:
                existing = ModelCard.load(repo_id, token=token)
                model_card = existing if "cocoop" in (existing.data.tags or []) else None
            except Exception:  # noqa: BLE001  (no card yet, or an unreadable one: render ours)
                model_card = None
        if model_card is None:
            model_card = render_model_card(
                base_model=self.config.clip_name_or_path or "openai/clip-vit-base-patch16",
                base_model_revision=self.config.clip_revision,
                repo_id=repo_id,
                class_names=self.class_names,
                n_ctx=self.config.n_ctx,
            )
        elif isinstance(model_card, str):
            model_card = ModelCard(model_card)
        elif not isinstance(model_card, ModelCard):
            raise TypeError(
                f"`model_card` must be a huggingface_hub.ModelCard or str, got {type(model_card).__name__}."
            )
        if tags:
            model_card.data.tags = list(dict.fromkeys([*(model_card.data.tags or []), *tags]))
        with tempfile.TemporaryDirectory() as tmp_dir:
            self.save_pretrained(tmp_dir, adapter_only=adapter_only, **save_kwargs)
            model_card.save(os.path.join(tmp_dir, "README.md"))
            operations = [
                CommitOperationAdd(
                    path_in_repo=os.path.relpath(os.path.join(root, name), tmp_dir),
                    path_or_fileobj=os.path.join(root, name),
                )
                for root, _, names in os.walk(tmp_dir)
                for name in sorted(names)
            ]
            if revision is not None and not revision.startswith("refs/pr"):
                api.create_branch(repo_id=repo_id, branch=revision, exist_ok=True)
            return api.create_commit(
                repo_id=repo_id,
                operations=operations,
                commit_message=commit_message or "Upload CoCoOp model",
                commit_description=commit_description,
                create_pr=create_pr,
                revision=revision,
            )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Load a saved CoCoOp folder or Hub repo (full or adapter-only) and rebuild its class prompts."""
        hub_kwargs = {
            key: kwargs[key]
            for key in ("revision", "cache_dir", "force_download", "local_files_only", "token", "subfolder")
            if key in kwargs
        }
        config = kwargs.get("config")
        if not isinstance(config, CoCoOpConfig):
            config = CoCoOpConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        if config.adapter_only:
            return cls._from_adapter(pretrained_model_name_or_path, config, hub_kwargs, kwargs)
        from safetensors import SafetensorError

        output_loading_info = kwargs.pop("output_loading_info", False)
        # Shape mismatches are collected (not raised mid-load) so the error below can name the tensors.
        allow_mismatch = kwargs.setdefault("ignore_mismatched_sizes", False)
        kwargs["ignore_mismatched_sizes"] = True
        try:
            model, loading_info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
            )
        except SafetensorError as error:
            raise OSError(
                f"cannot read the weights (model.safetensors) of {pretrained_model_name_or_path}: {error}; "
                "the file is truncated or corrupt: save or download it again."
            ) from error
        _check_loading_info(pretrained_model_name_or_path, model, loading_info, allow_mismatch)
        model.clip.requires_grad_(False)  # loading materialises every parameter with requires_grad=True
        tokenizer = _load_tokenizer(pretrained_model_name_or_path, hub_kwargs, model.config)
        if tokenizer is not None:
            model.set_class_names(model.config.class_names, tokenizer=tokenizer)
        return (model, loading_info) if output_loading_info else model

    @classmethod
    def from_official_checkpoint(cls, checkpoint_path, clip_name_or_path: str, class_names, **kwargs) -> "CoCoOpModel":
        """
        Import an official CoOp/CoCoOp prompt-learner checkpoint (Dassl `prompt_learner/model.pth.tar-N`) onto
        `clip_name_or_path` for `class_names`; see [`~convert_official.from_official_checkpoint`]. The file is read
        without running any pickled code; `n_ctx` and `conditional` come from its tensors.
        """
        from .convert_official import from_official_checkpoint

        return from_official_checkpoint(checkpoint_path, clip_name_or_path, class_names, model_class=cls, **kwargs)

    @classmethod
    def _from_adapter(cls, path, config: CoCoOpConfig, hub_kwargs: dict, kwargs: dict) -> "CoCoOpModel":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        config = copy.deepcopy(config)
        config.adapter_only = False
        clip_keys = ("dtype", "device_map", "cache_dir", "local_files_only", "token")
        clip_kwargs = {key: kwargs[key] for key in clip_keys if key in kwargs}
        try:
            clip = CLIPModel.from_pretrained(config.clip_name_or_path, revision=config.clip_revision, **clip_kwargs)
        except OSError as error:
            raise OSError(
                f"adapter-only CoCoOp folder {path} needs its base CLIP {config.clip_name_or_path!r} at revision "
                f"{config.clip_revision!r}, which could not be loaded: {error}"
            ) from error
        for field in ("projection_dim",):
            if getattr(clip.config, field) != getattr(config.clip_config, field):
                raise ValueError(
                    f"adapter at {path} was trained for a CLIP with {field}={getattr(config.clip_config, field)}, "
                    f"but {config.clip_name_or_path} has {getattr(clip.config, field)}."
                )
        config.clip_config = clip.config
        model = cls(config, clip_model=clip)
        weights_file = cached_file(path, ADAPTER_WEIGHTS_NAME, **hub_kwargs)
        try:
            state = load_file(weights_file)
        except (SafetensorError, OSError) as error:
            raise OSError(f"cannot read the prompt-learner weights {weights_file}: {error}") from error
        model.load_prompt_learner_state(state, source=weights_file)
        tokenizer = _load_tokenizer(config.clip_name_or_path, {"revision": config.clip_revision}, config)
        if tokenizer is not None:
            model.set_class_names(config.class_names, tokenizer=tokenizer)
        return model.eval()  # as PreTrainedModel.from_pretrained

    # ------------------------------------------------------------------ frozen CLIP

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

    def compile_text_path(self, **compile_kwargs) -> None:
        """
        Opt in to `torch.compile` for the per-class text path (fuses norms, activations and residuals). Shapes vary
        with the class groups, so `dynamic=True` is the default. Numerics stay within fp32 rounding of the eager path.
        """
        compile_kwargs.setdefault("dynamic", True)
        self._suffix_encoder = torch.compile(self._encode_suffix, **compile_kwargs)

    def _class_groups(self, batch: int) -> list[tuple[torch.Tensor, int]]:
        """
        Class indices per text-tower call and their padded suffix length. Classes are grouped by prompt length
        (`config.bucket_by_length`): lengths are merged where padding a few classes costs less than one more call
        (a dynamic programme over the sorted lengths); each group is chunked to `config.text_chunk_tokens`.
        """
        suffix_lengths = (self.eos_index - self.config.n_ctx).tolist()  # tokens after [SOS, ctx], EOS included
        by_length = {}
        for index, length in enumerate(suffix_lengths):
            by_length.setdefault(length, []).append(index)
        lengths = sorted(by_length)
        if self.config.bucket_by_length:
            # Price of one more text-tower call in prompt tokens: kernel launches dominate small calls on a GPU.
            call_cost = 4096 if self.eos_index.device.type == "cuda" else 64
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
                chunk = torch.tensor(indices[start : start + per_call], device=self.eos_index.device)
                chunked.append((chunk, length))
        return chunked

    def get_text_features(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """
        Prompt text features, L2-normalised: `(batch, classes, projection_dim)` for CoCoOp, `(1, classes, ...)`
        for CoOp (its context does not depend on the image).
        """
        if self.prompt_ids.numel() == 0 or self.prompt_ids.device.type == "meta":
            raise ValueError(
                "this model has no class prompts: call model.set_class_names(class_names, tokenizer=...) first."
            )
        ctx = self.prompt_learner(image_embeds)  # (batch or 1, n_ctx, dim)
        embeddings = self.clip.text_model.embeddings
        sos = embeddings.token_embedding(self.prompt_ids[:1, :1]).expand(ctx.shape[0], -1, -1)
        prefix = torch.cat([sos.to(ctx.dtype), ctx], dim=1)  # (batch, P, dim), P = 1 + n_ctx
        prefix = prefix + embeddings.position_embedding.weight[: prefix.shape[1]]
        prefix_cache = self._encode_prefix(prefix)
        n_ctx = self.config.n_ctx
        features, order = [], []
        for chunk, length in self._class_groups(ctx.shape[0]):
            suffix_ids = self.prompt_ids[chunk, 1 + n_ctx : 1 + n_ctx + length]
            eos = self.eos_index[chunk] - 1 - n_ctx
            if self.gradient_checkpointing and torch.is_grad_enabled():
                # Per-chunk checkpoint: only the chunk's features are kept; its activations are recomputed.
                out = checkpoint(self._suffix_encoder, prefix_cache, suffix_ids, eos, use_reentrant=False)
            else:
                out = self._suffix_encoder(prefix_cache, suffix_ids, eos)
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
        return_dict: bool | None = None,
        **kwargs,
    ) -> CoCoOpOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch, 3, size, size)`): images from the processor.
        labels (`torch.LongTensor` of shape `(batch,)`, *optional*): class indices; gives `loss`.
        image_embeds (`torch.FloatTensor` of shape `(batch, projection_dim)`, *optional*): L2-normalised image
            features from [`~CoCoOpModel.get_image_features`], in place of `pixel_values` (reuse them across class
            sets).
        """
        if kwargs:
            raise TypeError(f"CoCoOpModel.forward got unexpected arguments: {sorted(kwargs)}.")
        if (pixel_values is None) == (image_embeds is None):
            raise ValueError("pass exactly one of `pixel_values` or `image_embeds`.")
        if image_embeds is None:
            image_embeds = self.get_image_features(pixel_values)
        elif image_embeds.dim() != 2 or image_embeds.shape[1] != self.config.clip_config.projection_dim:
            raise ValueError(
                f"`image_embeds` must be (batch, {self.config.clip_config.projection_dim}), "
                f"got shape {tuple(image_embeds.shape)}."
            )
        text_embeds = self.get_text_features(image_embeds)  # (batch or 1, classes, proj)
        logit_scale = self.clip.logit_scale.exp()
        image_embeds_t = image_embeds.to(text_embeds.dtype)
        if self.config.conditional:
            logits = logit_scale * torch.einsum("bd,bcd->bc", image_embeds_t, text_embeds)  # (batch, classes)
        else:  # CoOp: one text feature per class, shared by all images
            logits = logit_scale * image_embeds_t @ text_embeds[0].t()
        loss = None
        if labels is not None:
            self._check_labels(labels, logits)
            loss = F.cross_entropy(logits.float(), labels.to(logits.device))
        return CoCoOpOutput(loss=loss, logits=logits, image_embeds=image_embeds)

    def _check_labels(self, labels, logits) -> None:
        if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise TypeError(f"`labels` must be an integer tensor of class indices, got {labels!r}.")
        if labels.shape != logits.shape[:1]:
            raise ValueError(f"`labels` must have shape ({logits.shape[0]},), got {tuple(labels.shape)}.")
        bad = (labels < 0) | (labels >= logits.shape[1])
        if bad.any():
            raise ValueError(
                f"`labels` must lie in [0, {logits.shape[1]}) for {logits.shape[1]} classes; "
                f"got {labels[bad].tolist()[:5]} at positions {bad.nonzero().flatten().tolist()[:5]}."
            )


def _check_loading_info(path, model, loading_info: dict, allow_mismatch: bool) -> None:
    """Refuse a checkpoint that would leave tensors at random init (missing or of another shape)."""
    mismatched = sorted(loading_info.get("mismatched_keys") or [])
    if mismatched and not allow_mismatch:
        details = "; ".join(
            f"{key}: checkpoint {tuple(ckpt)} vs model {tuple(ours)}" for key, ckpt, ours in mismatched
        )
        raise ValueError(
            f"{path}: tensors do not fit this config ({details}). The checkpoint was saved for another CLIP or "
            f"context (config: text width {model.config.clip_config.text_config.hidden_size}, n_ctx "
            f"{model.config.n_ctx}): load it with its own config.json."
        )
    missing = sorted(loading_info.get("missing_keys") or [])
    if missing:
        raise ValueError(
            f"{path}: the checkpoint lacks {len(missing)} tensor(s) {missing[:8]}; refusing to initialise them at "
            "random. The weights file is incomplete: save or download it again."
        )


def _load_tokenizer(path, hub_kwargs: dict, config: CoCoOpConfig):
    """The tokenizer saved beside the weights or, failing that, the base CLIP's; None (with a warning) if neither."""
    candidates = [(path, hub_kwargs)]
    if config.clip_name_or_path:
        candidates.append((config.clip_name_or_path, {"revision": config.clip_revision}))
    vocab_size = config.clip_config.text_config.vocab_size
    for source, source_kwargs in candidates:
        try:
            # Checked: a folder without tokenizer files gives a silent 2-token tokenizer otherwise.
            return CoCoOpProcessor.load_clip_tokenizer(source, vocab_size, **source_kwargs)
        except (OSError, ValueError, TypeError):
            continue
    logger.warning(
        "No CLIP tokenizer found in %s or its base CLIP %s: the class prompts are not built. Call "
        "model.set_class_names(class_names, tokenizer=...) before running the model.",
        path,
        config.clip_name_or_path,
    )
    return None


# Every saved folder loads with trust_remote_code=True alone; the stock image-classification pipeline needs
# AutoModelForImageClassification in auto_map (TRAPS), the zero-shot pipeline comes from custom_pipelines.
AUTO_MAP = {
    "AutoConfig": "configuration_cocoop.CoCoOpConfig",
    "AutoModel": "modeling_cocoop.CoCoOpModel",
    "AutoModelForImageClassification": "modeling_cocoop.CoCoOpModel",
    "AutoProcessor": "processing_cocoop.CoCoOpProcessor",
}


def _set_sharing_fields(config: CoCoOpConfig) -> None:
    from .pipeline_cocoop import CUSTOM_PIPELINES

    config.auto_map = {**(getattr(config, "auto_map", None) or {}), **AUTO_MAP}
    config.custom_pipelines = copy.deepcopy(CUSTOM_PIPELINES)
