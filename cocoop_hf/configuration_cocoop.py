"""CoCoOp configuration: data only, no torch."""

from transformers import CLIPConfig, PretrainedConfig
from transformers.utils import logging


logger = logging.get_logger(__name__)


class CoCoOpConfig(PretrainedConfig):
    r"""
    Configuration for [`CoCoOpModel`]. Defaults reproduce CoCoOp ViT-B/16 `vit_b16_c4_ep10_batch1_ctxv1` of the
    official repo (Zhou et al., CVPR 2022).

    Args:
        clip_config (`dict` or [`CLIPConfig`], *optional*): the frozen CLIP the prompts are learned for.
        n_ctx (`int`, *optional*, defaults to 4): number of learned context tokens. With `ctx_init` it must equal
            the word count of `ctx_init` (or be left `None`, which means "the word count").
        ctx_init (`str`, *optional*, defaults to `"a photo of a"`): words whose token embeddings start the
            context. `None` draws the context from N(0, 0.02) and uses `"X X X X"` as the prompt placeholder.
        meta_net_reduction (`int`, *optional*, defaults to 16): hidden width of the meta-net is
            `projection_dim // meta_net_reduction`.
        conditional (`bool`, *optional*, defaults to `True`): `True` is CoCoOp (image-conditional context from the
            meta-net); `False` is CoOp (static context, no meta-net).
        clip_name_or_path (`str`, *optional*): Hub id or local folder of the CLIP the model was built from.
        clip_revision (`str`, *optional*): revision of `clip_name_or_path` (commit hash for reproducibility).
        adapter_only (`bool`, *optional*, defaults to `False`): set in a saved folder that holds only the prompt
            learner; `from_pretrained` then loads the base CLIP from `clip_name_or_path` at `clip_revision`.
        text_chunk_tokens (`int`, *optional*, defaults to 131072): upper bound on (images x classes x tokens) that
            one text-tower call processes; classes are chunked to stay below it. A memory knob, not math.
        bucket_by_length (`bool`, *optional*, defaults to `True`): group classes of equal prompt length so no
            class is padded. A speed knob, not math.
        id2label / label2id: the class names (prompts are built from `id2label`, with `_` read as a space).
    """

    model_type = "cocoop"
    sub_configs = {"clip_config": CLIPConfig}

    def __init__(
        self,
        clip_config=None,
        n_ctx=None,
        ctx_init="a photo of a",
        meta_net_reduction=16,
        conditional=True,
        clip_name_or_path=None,
        clip_revision=None,
        adapter_only=False,
        text_chunk_tokens=131072,
        bucket_by_length=True,
        **kwargs,
    ):
        if clip_config is None:
            clip_config = CLIPConfig()
            logger.info("`clip_config` is None: using the default CLIPConfig.")
        elif isinstance(clip_config, dict):
            clip_config = CLIPConfig(**clip_config)
        elif not isinstance(clip_config, CLIPConfig):
            raise TypeError(f"`clip_config` must be a CLIPConfig or a dict, got {type(clip_config).__name__}.")
        self.clip_config = clip_config

        if ctx_init is not None:
            if not isinstance(ctx_init, str) or not ctx_init.strip():
                raise ValueError(f"`ctx_init` must be a non-empty string of words or None, got {ctx_init!r}.")
            # Official PromptLearner: underscores are spaces and n_ctx is the word count.
            ctx_init = " ".join(ctx_init.replace("_", " ").split())
            n_words = len(ctx_init.split(" "))
            if n_ctx is not None and n_ctx != n_words:
                raise ValueError(
                    f"`n_ctx`={n_ctx} is inconsistent with `ctx_init`={ctx_init!r}, which has {n_words} words: "
                    f"pass n_ctx={n_words} or n_ctx=None, or ctx_init=None for a random context of {n_ctx} tokens."
                )
            n_ctx = n_words
        elif n_ctx is None:
            n_ctx = 4
        if not isinstance(n_ctx, int) or isinstance(n_ctx, bool) or n_ctx < 1:
            raise ValueError(f"`n_ctx` must be a positive integer, got {n_ctx!r}.")
        max_positions = self.clip_config.text_config.max_position_embeddings
        if n_ctx + 3 > max_positions:
            raise ValueError(
                f"`n_ctx`={n_ctx} leaves no room for a class name in the {max_positions}-token text context "
                f"(needs SOS, name, '.', EOS): use n_ctx <= {max_positions - 3}."
            )
        if not isinstance(meta_net_reduction, int) or meta_net_reduction < 1:
            raise ValueError(f"`meta_net_reduction` must be a positive integer, got {meta_net_reduction!r}.")
        if self.clip_config.projection_dim // meta_net_reduction < 1:
            raise ValueError(
                f"`meta_net_reduction`={meta_net_reduction} exceeds projection_dim="
                f"{self.clip_config.projection_dim}: the meta-net hidden width would be 0."
            )
        if not isinstance(text_chunk_tokens, int) or text_chunk_tokens < 1:
            raise ValueError(f"`text_chunk_tokens` must be a positive integer, got {text_chunk_tokens!r}.")

        self.n_ctx = n_ctx
        self.ctx_init = ctx_init
        self.meta_net_reduction = meta_net_reduction
        self.conditional = bool(conditional)
        self.clip_name_or_path = clip_name_or_path
        self.clip_revision = clip_revision
        self.adapter_only = bool(adapter_only)
        self.text_chunk_tokens = text_chunk_tokens
        self.bucket_by_length = bool(bucket_by_length)
        super().__init__(**kwargs)

    @property
    def prompt_prefix(self) -> str:
        """The words that stand for the context in the tokenised prompt (official `prompt_prefix`)."""
        return self.ctx_init if self.ctx_init is not None else " ".join(["X"] * self.n_ctx)

    @property
    def class_names(self) -> list[str]:
        """Class names in label order, from `id2label`."""
        return [self.id2label[i] for i in range(len(self.id2label))]
