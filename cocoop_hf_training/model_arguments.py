"""The model options every training script shares: which backbone, which method (CoCoOp, CoOp, KgCoOp, IVLP, MaPLe,
PromptSRC, zero-shot), which prompt. Imports nothing heavy at the top, so that `--help` can list these options without
loading torch."""

import math
from dataclasses import dataclass, field


def describe_value(*args, **kwargs):
    # cocoop_hf.limits_cocoop imports the model package (torch, transformers): only when a value is refused.
    from cocoop_hf.limits_cocoop import describe_value as describe

    return describe(*args, **kwargs)


METHODS = ("cocoop", "coop", "kgcoop", "ivlp", "maple", "promptsrc", "zeroshot")
# Prompts in both towers, at every layer below the prompt depth (CoCoOpConfig.prompt_depth_text / _vision).
DEEP_PROMPT_METHODS = ("ivlp", "maple", "promptsrc")
# The published recipes' prompt options (n_ctx, n_ctx_vision, depth_text, depth_vision), each from its official config:
# IVLP muzairkhattak/PromptSRC configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml (N_CTX_TEXT/VISION 4,
# PROMPT_DEPTH_TEXT/VISION 9); PromptSRC configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml (the same);
# MaPLe muzairkhattak/multimodal-prompt-learning configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml (N_CTX 2,
# one PROMPT_DEPTH 9 for both towers, its vision prompts projected from the text ones: no vision token count of its
# own).
DEEP_PROMPT_DEFAULTS = {
    "ivlp": {"n_ctx": 4, "n_ctx_vision": 4, "prompt_depth_text": 9, "prompt_depth_vision": 9},
    "promptsrc": {"n_ctx": 4, "n_ctx_vision": 4, "prompt_depth_text": 9, "prompt_depth_vision": 9},
    "maple": {"n_ctx": 2, "n_ctx_vision": None, "prompt_depth_text": 9, "prompt_depth_vision": 9},
}
# PromptSRC's self-regularising weights: TEXT_LOSS_WEIGHT 25 and IMAGE_LOSS_WEIGHT 10 of the official config above; the
# logits term's weight is 1 in its trainers/promptsrc.py (`L_SCL_logits = ... * (1 * 1) / logits.numel()`), no option.
PROMPTSRC_DEFAULT_WEIGHTS = {"promptsrc_text_weight": 25.0, "promptsrc_image_weight": 10.0}
PROMPTSRC_LOGITS_WEIGHT = 1.0
# The CoCoOpConfig fields of the deep-prompt methods (recorded in results.json and in the run settings of a resume).
DEEP_PROMPT_FIELDS = ("n_ctx_vision", "prompt_depth_text", "prompt_depth_vision", "vision_prompts_from_text")
PROMPTSRC_FIELDS = ("promptsrc_text_weight", "promptsrc_image_weight", "promptsrc_logits_weight")
# The flags of the deep-prompt methods, each named as the CoCoOpConfig field it sets.
DEEP_PROMPT_FLAGS = ("n_ctx_vision", "prompt_depth_text", "prompt_depth_vision", *PROMPTSRC_DEFAULT_WEIGHTS)
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
        default=None,
        metadata={
            "help": "A folder or repo trained with this package (any --method: cocoop, coop, kgcoop, ivlp, maple, "
            "promptsrc) to start from (e.g. evaluation only)."
        },
    )
    method: str | None = field(
        default=None,
        metadata={
            "help": "'cocoop' (meta-net), 'coop' (conditional=False), 'kgcoop' (CoOp + the KgCoOp regulariser, Yao et "
            "al., CVPR 2023), 'ivlp' (independent deep vision and text prompts), 'maple' (MaPLe, Khattak et al., CVPR "
            "2023: vision prompts projected from the text ones), 'promptsrc' (PromptSRC, Khattak et al., ICCV 2023: "
            "IVLP + self-regularising terms + Gaussian prompt aggregation) or 'zeroshot' (CLIP, no training). "
            "Default: 'cocoop'; with --model_name_or_path, the saved model's (another one is refused)."
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
    n_ctx: int | None = field(
        default=None,
        metadata={
            "help": "Text context tokens (default: word count of ctx_init; ivlp / promptsrc 4, maple 2: the first "
            "n_ctx words of ctx_init are learned, the rest stay fixed words of the prompt)."
        },
    )
    n_ctx_vision: int | None = field(
        default=None,
        metadata={
            "help": "Vision prompt tokens of --method ivlp / promptsrc (official N_CTX_VISION; default 4). With "
            "--prompt_depth_vision 0 there are none: leave it out, or pass 0 as the official language-only IVLP "
            "config does. MaPLe's vision prompts are projections of its n_ctx text prompts: refused there."
        },
    )
    prompt_depth_text: int | None = field(
        default=None,
        metadata={
            "help": "Text layers with learned prompts, --method ivlp / maple / promptsrc (official PROMPT_DEPTH_TEXT; "
            "MaPLe's PROMPT_DEPTH, both towers). Default 9."
        },
    )
    prompt_depth_vision: int | None = field(
        default=None,
        metadata={
            "help": "Vision layers with learned prompts, --method ivlp / promptsrc (official PROMPT_DEPTH_VISION; 0: "
            "text prompts only). Default 9. MaPLe: its one depth is --prompt_depth_text."
        },
    )
    promptsrc_text_weight: float | None = field(
        default=None,
        metadata={
            "help": "PromptSRC: weight of the L1 term between prompted and frozen text features (official "
            "TEXT_LOSS_WEIGHT; default 25)."
        },
    )
    promptsrc_image_weight: float | None = field(
        default=None,
        metadata={
            "help": "PromptSRC: weight of the L1 term between prompted and frozen image features (official "
            "IMAGE_LOSS_WEIGHT; default 10). The KL term of the logits has weight 1, as in the official trainer."
        },
    )
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
        if self.prompt_depth_vision == 0 and self.n_ctx_vision == 0:
            # No vision prompts, so no vision tokens to count: the official language-only IVLP config writes that
            # N_CTX_VISION 0 (multimodal-prompt-learning configs/trainers/IVLP/
            # vit_b16_c2_ep5_batch4_4ctx_language_only.yaml), CoCoOpConfig None. It is also how a config file's
            # n_ctx_vision is undone from the command line (argparse has no "unset").
            self.n_ctx_vision = None
        self._check_method_options()
        if self.method in DEEP_PROMPT_METHODS and self.n_ctx is None and not self.model_name_or_path:
            # The published token count, not the word count of ctx_init: MaPLe learns 2 of "a photo of a".
            self.n_ctx = DEEP_PROMPT_DEFAULTS[self.method]["n_ctx"]

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
        deep_given = self._given_flags(DEEP_PROMPT_FLAGS)
        if self.method == "zeroshot":
            given = [
                flag
                for flag, value in (
                    ("--kgcoop_weight", weight),
                    ("--class_specific_context", self.class_specific_context or None),
                    ("--class_token_position", self.class_token_position),
                )
                if value is not None
            ] + deep_given
            if given:
                raise ValueError(
                    f"{', '.join(given)}: options of a learned prompt; --method zeroshot scores the plain "
                    "backbone with a fixed prompt (drop them, or pick --method coop / kgcoop / cocoop / ivlp / "
                    "maple / promptsrc)."
                )
            return
        if self.method in DEEP_PROMPT_METHODS:
            self._check_deep_prompt_options()
            return
        if deep_given:
            raise ValueError(
                f"{', '.join(deep_given)}: options of the deep vision-language prompts (--method ivlp / maple / "
                f"promptsrc); --method {self.method} learns one context at the text input only. Drop them, or pick "
                "one of those methods."
            )
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

    def _given_flags(self, names) -> list[str]:
        return [f"--{name}" for name in names if getattr(self, name) is not None]

    def _check_deep_prompt_options(self) -> None:
        """IVLP / MaPLe / PromptSRC: the CoOp-family options they have no place for and their own, refused one each."""
        method = self.method
        if self.class_specific_context:
            raise ValueError(
                f"--class_specific_context is a CoOp option (official TRAINER.COOP.CSC); --method {method} learns one "
                "shared prompt per layer (official trainers/independentVL.py, maple.py, promptsrc.py): drop it."
            )
        if self.class_token_position not in (None, "end"):
            raise ValueError(
                f"--class_token_position {self.class_token_position}: --method {method} puts the class name at the "
                "end of the prompt, after the context (official trainers: `prompt_prefix + ' ' + name + '.'`): drop "
                "it."
            )
        if self.kgcoop_weight:
            raise ValueError(
                f"--kgcoop_weight {self.kgcoop_weight} is the KgCoOp regulariser of the CoOp family; --method "
                f"{method} has none (PromptSRC has its own terms: --promptsrc_text_weight / "
                "--promptsrc_image_weight): drop it."
            )
        for name in ("n_ctx", "n_ctx_vision", "prompt_depth_text"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                zero = " (0 only with --prompt_depth_vision 0: no vision prompts)" if name == "n_ctx_vision" else ""
                raise ValueError(f"--{name} must be a whole number >= 1{zero}, got {describe_value(value)}.")
        if self.prompt_depth_vision is not None and self.prompt_depth_vision < 0:
            raise ValueError(
                f"--prompt_depth_vision must be a whole number >= 0 (0: no vision prompts), got "
                f"{describe_value(self.prompt_depth_vision)}."
            )
        for name in PROMPTSRC_DEFAULT_WEIGHTS:
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ValueError(f"--{name} must be a finite number >= 0, got {value}.")
        if method == "maple":
            # One N_CTX and one PROMPT_DEPTH for both towers (official configs/trainers/MaPLe/*.yaml, maple.py).
            n_ctx = self.n_ctx if self.n_ctx is not None else DEEP_PROMPT_DEFAULTS["maple"]["n_ctx"]
            if self.n_ctx_vision is not None and self.n_ctx_vision != n_ctx:
                raise ValueError(
                    f"--n_ctx_vision {self.n_ctx_vision}: MaPLe's vision prompts are projections of its text prompts, "
                    "as many as --n_ctx (official trainers/maple.py): drop --n_ctx_vision."
                )
            depth = self.prompt_depth_text
            depth = depth if depth is not None else DEEP_PROMPT_DEFAULTS["maple"]["prompt_depth_text"]
            if self.prompt_depth_vision is not None and self.prompt_depth_vision != depth:
                raise ValueError(
                    f"--prompt_depth_vision {self.prompt_depth_vision}: MaPLe has one prompt depth for both towers "
                    "(official TRAINER.MAPLE.PROMPT_DEPTH): set it with --prompt_depth_text, drop "
                    "--prompt_depth_vision."
                )
        elif self.prompt_depth_vision == 0 and self.n_ctx_vision is not None:
            raise ValueError(
                f"--n_ctx_vision {self.n_ctx_vision} with --prompt_depth_vision 0: no layer of the vision tower has "
                "prompts, so there are no vision prompt tokens to count. Drop --n_ctx_vision (a config file's: pass "
                "--n_ctx_vision 0, as the official language-only IVLP config does), or set --prompt_depth_vision >= 1."
            )
        if method != "promptsrc":
            given = self._given_flags(PROMPTSRC_DEFAULT_WEIGHTS)
            if given:
                raise ValueError(
                    f"{', '.join(given)}: weights of PromptSRC's self-regularising terms; --method {method} has none. "
                    "Drop them, or pass --method promptsrc."
                )

    def method_config(self) -> dict:
        """The CoCoOpConfig fields of the method and its options (the KgCoOp template aside)."""
        weight = self.kgcoop_weight
        if weight is None:
            weight = KGCOOP_DEFAULT_WEIGHT if self.method == "kgcoop" else 0.0
        config = {
            "conditional": self.method == "cocoop",
            "class_token_position": self.class_token_position or "end",
            "class_specific_context": bool(self.class_specific_context),
            "kgcoop_weight": float(weight),
        }
        if self.method in DEEP_PROMPT_METHODS:
            config.update(self.deep_prompt_config())
        return config

    def deep_prompt_config(self) -> dict:
        """CoCoOpConfig's deep-prompt fields of --method ivlp / maple / promptsrc: published values, flags over."""
        defaults = DEEP_PROMPT_DEFAULTS[self.method]
        depth_text = self.prompt_depth_text if self.prompt_depth_text is not None else defaults["prompt_depth_text"]
        if self.method == "maple":
            depth_vision, n_ctx_vision = depth_text, None  # one depth; as many vision tokens as text ones (projected)
        else:
            depth_vision = self.prompt_depth_vision
            depth_vision = depth_vision if depth_vision is not None else defaults["prompt_depth_vision"]
            n_ctx_vision = self.n_ctx_vision
            if n_ctx_vision is None and depth_vision > 0:  # depth 0: no vision prompts, no count (CoCoOpConfig: None)
                n_ctx_vision = defaults["n_ctx_vision"]
        config = {
            "prompt_depth_text": depth_text,
            "prompt_depth_vision": depth_vision,
            "n_ctx_vision": n_ctx_vision,
            "vision_prompts_from_text": self.method == "maple",
        }
        if self.method == "promptsrc":
            for name, default in PROMPTSRC_DEFAULT_WEIGHTS.items():
                value = getattr(self, name)
                config[name] = float(value if value is not None else default)
            config["promptsrc_logits_weight"] = PROMPTSRC_LOGITS_WEIGHT
        return config

    def given_method_options(self) -> dict:
        """The options passed on the command line or in the config file (left at their defaults: not given)."""
        return {
            name: value
            for name, value in (
                ("kgcoop_weight", self.kgcoop_weight),
                # argparse cannot tell "--class_specific_context false" from no flag: only True counts as given.
                ("class_specific_context", self.class_specific_context or None),
                ("class_token_position", self.class_token_position),
                *((name, getattr(self, name)) for name in DEEP_PROMPT_FLAGS),
            )
            if value is not None
        }
