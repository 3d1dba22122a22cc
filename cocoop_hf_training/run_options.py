"""The options `cocoop-hf train` (run_cocoop) adds to the model, data and Trainer ones: the Dassl recipe's defaults and the
script's own `RunArguments`. Imports nothing heavy, so that the quick `--help` lists them without loading torch."""

from dataclasses import dataclass, field


# PromptSRC's Gaussian prompt aggregation, official configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml
# (GPA_MEAN 15, GPA_STD 1): here, a light module, so that run_settings and prompt_aggregation both read them.
GPA_DEFAULT_MEAN = 15.0
GPA_DEFAULT_STD = 1.0


def gpa_values(run_args) -> tuple[float, float]:
    """(mean, std) of PromptSRC's aggregation the run uses: --gpa_mean / --gpa_std, else the official defaults."""
    mean = run_args.gpa_mean if run_args.gpa_mean is not None else GPA_DEFAULT_MEAN
    std = run_args.gpa_std if run_args.gpa_std is not None else GPA_DEFAULT_STD
    return float(mean), float(std)


# Official CoCoOp recipe (configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml + Dassl defaults): the script's
# defaults, so a run without a config file follows the paper. A config file or flags override them.
RECIPE_DEFAULTS = {
    "learning_rate": 0.002,
    "weight_decay": 5e-4,
    "num_train_epochs": 10,
    "per_device_train_batch_size": 1,
    "per_device_eval_batch_size": 32,
    "save_strategy": "epoch",
    "logging_steps": 20,
    "remove_unused_columns": False,
    "seed": 1,
    "report_to": "none",
}


@dataclass
class RunArguments:
    """Script options that TrainingArguments lacks."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Allow an --output_dir that is not empty: the outputs of a previous run there (checkpoints "
            "included), as its output_manifest.json records them and unchanged, are deleted first; other files are "
            "kept, and one of the same name as an output is refused, never replaced."
        },
    )
    save_adapter_only: bool = field(
        default=False,
        metadata={
            "help": "Save the final model adapter-only (config, prompt learner and the code files; at ViT-B/16 ~470 "
            "KB for CoCoOp, ~510 KB for IVLP / PromptSRC, ~14.5 MB for MaPLe with its projections; loading takes "
            "CLIP from --clip_model_name_or_path) instead of complete with its CLIP. Checkpoints are always lean."
        },
    )
    sgd_momentum: float = field(default=0.9, metadata={"help": "SGD momentum (official: 0.9)."})
    lr_schedule: str = field(
        default="dassl_cosine",
        metadata={
            "help": "'dassl_cosine': constant warmup epoch(s) then cosine, stepped per epoch as Dassl; 'hf': "
            "TrainingArguments.lr_scheduler_type, stepped per optimizer step."
        },
    )
    warmup_epochs: int = field(default=1, metadata={"help": "Constant-lr warmup epochs (official: 1)."})
    warmup_lr: float = field(default=1e-5, metadata={"help": "Learning rate of the warmup epochs (official: 1e-5)."})
    seeds_note: str | None = field(default=None, metadata={"help": "Free text recorded in results.json."})
    prompt_template: str | None = field(
        default=None,
        metadata={
            "help": "The hand-crafted prompt, '{}' standing for the class name (e.g. 'a photo of a {}.'): with "
            "--method zeroshot, the plain backbone is scored with it; with the KgCoOp regulariser (--method kgcoop, "
            "--kgcoop_weight), its zero-shot features are the target. Default with --benchmark: the dataset's "
            "official template (zero-shot CLIP: CoOp trainers/zsclip.py; KgCoOp: its trainers/kgcoop.py; SigLIP "
            "and SigLIP 2 zero-shot: their own 'This is a photo of {}.'); else 'a photo of a {}.' for KgCoOp."
        },
    )
    gpa_mean: float | None = field(
        default=None,
        metadata={
            "help": "PromptSRC's Gaussian prompt aggregation (GPA): the final prompts are the sum over epochs e = "
            "1..N of w_e x the prompts after epoch e, w_e = N(e; mean, std) normalised to sum 1 (official "
            "trainers/promptsrc.py, GPA_MEAN). --method promptsrc only; default 15."
        },
    )
    gpa_std: float | None = field(
        default=None,
        metadata={"help": "Standard deviation of GPA's Gaussian over epochs (official GPA_STD). Default 1."},
    )
    eval_each_epoch: bool = field(
        default=False,
        metadata={
            "help": "Also evaluate base and new accuracy (and H) after every epoch, logged through Trainer's logging "
            "(--report_to) and kept in results.json under 'per_epoch'. Image features are computed once "
            "(CoCoOp, CoOp, KgCoOp: a frozen image tower), or again after every epoch with vision prompts (ivlp, "
            "maple, promptsrc)."
        },
    )
