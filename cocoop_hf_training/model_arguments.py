"""The model options every training script shares: which backbone, which method (CoCoOp, CoOp, KgCoOp, zero-shot),
which prompt. Imports nothing heavy at the top, so that `--help` can list these options without loading torch."""

import math
from dataclasses import dataclass, field


def describe_value(*args, **kwargs):
    # cocoop_hf.limits_cocoop imports the model package (torch, transformers): only when a value is refused.
    from cocoop_hf.limits_cocoop import describe_value as describe

    return describe(*args, **kwargs)


METHODS = ("cocoop", "coop", "kgcoop", "zeroshot")
CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
CLIP_DTYPES = ("fp32", "bf16", "fp16")
# KgCoOp's weight w in the official base-to-new runs (htyao89/KgCoOp scripts/base2new_train.sh: WEIGHT=8.0).
KGCOOP_DEFAULT_WEIGHT = 8.0


@dataclass
class ModelArguments:
    """Which CLIP, which method, which prompt."""

    clip_model_name_or_path: str = field(
        default="openai/clip-vit-base-patch16",
        metadata={
            "aliases": ["--backbone"],
            "help": "Hub id or local folder of the frozen backbone (also --backbone, or `backbone:` in a config "
            "file): a CLIPModel (every size, MetaCLIP 1, OpenCLIP conversions), MetaClip2Model, SiglipModel or "
            "Siglip2Model checkpoint, told apart by its config.json `model_type`.",
        },
    )
    clip_revision: str | None = field(default=None, metadata={"help": "Revision (commit) of the CLIP."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A trained CoCoOp/CoOp folder or repo to start from (e.g. evaluation only)."}
    )
    method: str | None = field(
        default=None,
        metadata={
            "help": "'cocoop' (meta-net), 'coop' (conditional=False), 'kgcoop' (CoOp + the KgCoOp regulariser, Yao et "
            "al., CVPR 2023) or 'zeroshot' (CLIP, no training). Default: 'cocoop'; with --model_name_or_path, the "
            "saved model's (another one is refused)."
        },
    )
    kgcoop_weight: float | None = field(
        default=None,
        metadata={
            "help": "Weight w of the KgCoOp regulariser: loss = cross-entropy + w * (1 - mean cosine between each "
            "class's learned text feature and its zero-shot CLIP text feature of the hand-crafted prompt). Default "
            f"{KGCOOP_DEFAULT_WEIGHT} with --method kgcoop (official scripts/base2new_train.sh), off otherwise. Also "
            "accepted with --method cocoop (mean over images and classes): that combination is ours, not the paper's."
        },
    )
    class_specific_context: bool = field(
        default=False,
        metadata={
            "help": "CoOp's class-specific context (official TRAINER.COOP.CSC): one context per class. --method coop "
            "or kgcoop only; such a model cannot score other classes (no base-to-new: use --protocol all)."
        },
    )
    class_token_position: str | None = field(
        default=None,
        metadata={
            "help": "Where the class name goes in the prompt (official TRAINER.COOP.CLASS_TOKEN_POSITION): 'end' "
            "(default), 'middle' (after the first n_ctx // 2 context tokens; needs n_ctx >= 2) or 'front'."
        },
    )
    n_ctx: int | None = field(default=None, metadata={"help": "Context tokens (default: word count of ctx_init)."})
    ctx_init: str | None = field(
        default="a photo of a", metadata={"help": "Words the context starts from; 'none' for a random context."}
    )
    meta_net_reduction: int = field(default=16, metadata={"help": "Meta-net hidden width = projection_dim // this."})
    random_init_clip: bool = field(
        default=False,
        metadata={
            "help": "Build the backbone (any supported one) from its config.json with RANDOM weights (demo/CI "
            "without weights): every accuracy is then meaningless, and the outputs say so."
        },
    )
    random_init_seed: int = field(default=0, metadata={"help": "Seed of the random CLIP weights."})
    clip_dtype: str | None = field(
        default=None,
        metadata={
            "help": "Dtype of the frozen CLIP's weights: 'fp32', 'bf16' or 'fp16' (for a GPU; the official code runs "
            "its CLIP in fp16 weights). The prompt learner, its gradients and the optimizer stay fp32; combine with "
            "--bf16/--fp16 (autocast). Default: fp32, or what a --model_name_or_path model was saved with (the saved "
            "model records it and loads in it again)."
        },
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Cache folder for Hub downloads."})

    def __post_init__(self):
        # Whether --method was given: a saved model (--model_name_or_path) brings its own, and another is refused.
        self.method_given = self.method is not None
        if self.method is None:
            self.method = "cocoop"
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {METHODS}, got {describe_value(self.method, typed=False)}.")
        if self.clip_dtype is not None and self.clip_dtype not in CLIP_DTYPES:
            raise ValueError(
                f"--clip_dtype must be one of {CLIP_DTYPES}, got {describe_value(self.clip_dtype, typed=False)}."
            )
        if isinstance(self.ctx_init, str) and self.ctx_init.strip().lower() in ("", "none", "null"):
            self.ctx_init = None
        self._check_method_options()

    def _check_method_options(self) -> None:
        """The CoOp-family options that do not fit the method, refused in terms of the flags, before anything runs."""
        if self.class_token_position is not None and self.class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ValueError(
                f"--class_token_position must be one of {CLASS_TOKEN_POSITIONS}, got "
                f"{describe_value(self.class_token_position, typed=False)}."
            )
        weight = self.kgcoop_weight
        if weight is not None and (not math.isfinite(weight) or weight < 0):
            raise ValueError(
                f"--kgcoop_weight must be a finite number >= 0 (the KgCoOp weight w; official: "
                f"{KGCOOP_DEFAULT_WEIGHT}), got {weight}."
            )
        if self.model_name_or_path and not self.method_given:
            return  # the saved model's method and options: flags are checked against them (check_saved_options)
        if self.method == "zeroshot":
            given = [
                flag
                for flag, value in (
                    ("--kgcoop_weight", weight),
                    ("--class_specific_context", self.class_specific_context or None),
                    ("--class_token_position", self.class_token_position),
                )
                if value is not None
            ]
            if given:
                raise ValueError(
                    f"{', '.join(given)}: options of a learned prompt; --method zeroshot scores the plain "
                    "backbone with a fixed prompt (drop them, or pick --method coop / kgcoop / cocoop)."
                )
            return
        if self.method == "coop" and weight:
            raise ValueError(
                f"--kgcoop_weight {weight} with --method coop is KgCoOp: pass --method kgcoop (results are then "
                "labelled as such)."
            )
        if self.method == "kgcoop" and weight == 0:
            raise ValueError("--method kgcoop with --kgcoop_weight 0 is plain CoOp: pass --method coop instead.")
        if self.class_specific_context and self.method == "cocoop":
            raise ValueError(
                "--class_specific_context is a CoOp option (official TRAINER.COOP.CSC): a context per class cannot "
                "follow new classes, which is what CoCoOp's conditional context is for. Use --method coop or kgcoop."
            )
        n_ctx = self.n_ctx if self.n_ctx is not None else (len(self.ctx_init.split()) if self.ctx_init else None)
        if self.class_token_position == "middle" and n_ctx is not None and n_ctx < 2:
            raise ValueError(
                f"--class_token_position middle needs at least 2 context tokens, got {n_ctx} (--n_ctx / --ctx_init): "
                "the name goes after the first n_ctx // 2 tokens, none here; that is --class_token_position front."
            )

    def method_config(self) -> dict:
        """The CoCoOpConfig fields of the method and its options (the KgCoOp template aside)."""
        weight = self.kgcoop_weight
        if weight is None:
            weight = KGCOOP_DEFAULT_WEIGHT if self.method == "kgcoop" else 0.0
        return {
            "conditional": self.method == "cocoop",
            "class_token_position": self.class_token_position or "end",
            "class_specific_context": bool(self.class_specific_context),
            "kgcoop_weight": float(weight),
        }

    def given_method_options(self) -> dict:
        """The options passed on the command line or in the config file (left at their defaults: not given)."""
        return {
            name: value
            for name, value in (
                ("kgcoop_weight", self.kgcoop_weight),
                # argparse cannot tell "--class_specific_context false" from no flag: only True counts as given.
                ("class_specific_context", self.class_specific_context or None),
                ("class_token_position", self.class_token_position),
            )
            if value is not None
        }
