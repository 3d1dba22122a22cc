#!/usr/bin/env python
r"""
Train and evaluate CoCoOp / CoOp / zero-shot CLIP with the paper's protocol on Hugging Face Trainer + datasets.

    python training/run_cocoop.py training/configs/cocoop_vit_b16_c4_ep10_batch1_ctxv1.yaml \
        --dataset_name <hub id or local folder> --output_dir out/cocoop --seed 1

A JSON/YAML file may stand first in place of flags; flags after it override it. Base-to-new (default): few-shot
training on the base half of the classes, then accuracy and macro-F1 on the base and the new classes, and
H = 2BN/(B+N). Writes results.json, results.md, results.png and README.md (model card) into --output_dir.
Distributed: `torchrun --nproc_per_node N training/run_cocoop.py ...` (or `accelerate launch`).
"""

import argparse
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path


if __package__ in (None, ""):  # run as a script: make `training` and `cocoop_hf` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from transformers import HfArgumentParser, TrainingArguments
from transformers.utils import logging

from training import cli, outputs, write_errors
from training.checkpoints import LeanCheckpointTrainer, resolve_resume_checkpoint, resume_requested
from training.cli import ModelArguments, parse_config_and_flags, run_script
from training.data import (
    DataArguments,
    ImageTransform,
    build_transforms,
    class_coverage,
    class_names_per_task,
    dataset_identity,
    drop_or_raise_corrupt,
    few_shot_indices,
    load_splits,
    official_fewshot_rows,
    protocol_relabels,
    record_training_items,
    select_labels,
    warn_if_training_split_is_evaluated,
)
from training.divergence import check_checkpoint_optimizer, check_trained_prompt_learner
from training.evaluation import EpochEvaluation, evaluate_sets, harmonic_mean, load_metrics
from training.modeling_setup import (
    build_model,
    build_zero_shot_clip,
    check_method_config,
    has_random_weights,
    kgcoop_template_for,
)
from training.outputs import MANIFEST_NAME, finish_output_dir, prepare_output_dir
from training.report import (
    CARD_NAME,
    RANDOM_WEIGHTS_NOTE,
    aggregate,
    method_options,
    model_card,
    saved_method,
    write_report,
)
from training.run_settings import check_checkpoint_settings, run_settings
from training.zeroshot import check_template


logger = logging.get_logger(__name__)

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
            "help": "Save the final model adapter-only (config + prompt learner, ~240 KB at ViT-B/16; loading takes "
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
            "--method zeroshot, plain CLIP is scored with it; with the KgCoOp regulariser (--method kgcoop, "
            "--kgcoop_weight), its zero-shot features are the target. Default with --benchmark: the dataset's "
            "official template (zero-shot CLIP: CoOp trainers/zsclip.py; KgCoOp: its trainers/kgcoop.py); "
            "else 'a photo of a {}.' for KgCoOp."
        },
    )
    eval_each_epoch: bool = field(
        default=False,
        metadata={
            "help": "Also evaluate base and new accuracy (and H) after every epoch, logged through Trainer's logging "
            "(--report_to) and kept in results.json under 'per_epoch'. Image features are computed once."
        },
    )


# ---------------------------------------------------------------------------------------------- arguments


def parse_args(argv=None):
    """(model, data, training, run) arguments from flags, or from a JSON/YAML file first and flags overriding it."""
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, TrainingArguments, RunArguments),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(**RECIPE_DEFAULTS)
    model_args, data_args, training_args, run_args = parse_config_and_flags(parser, argv)
    if data_args.fewshot_file is not None and not training_args.do_train:
        raise ValueError(
            f"--fewshot_file {data_args.fewshot_file} lists training images: pass --do_train, or drop it."
        )
    if model_args.method == "zeroshot" and training_args.do_train:
        raise ValueError("--method zeroshot has nothing to train: drop --do_train (zero-shot CLIP is evaluated only).")
    if run_args.lr_schedule not in ("dassl_cosine", "hf"):
        raise ValueError(f"--lr_schedule must be 'dassl_cosine' or 'hf', got {run_args.lr_schedule!r}.")
    if run_args.lr_schedule == "dassl_cosine" and training_args.max_steps > 0:
        raise ValueError("--max_steps does not fit the per-epoch Dassl schedule: use --num_train_epochs.")
    check_unused_trainer_options(training_args, run_args)
    if training_args.do_train and training_args.max_steps <= 0 and not training_args.num_train_epochs > 0:
        raise ValueError(
            f"--num_train_epochs {training_args.num_train_epochs} trains nothing: give a positive number of epochs, "
            "or drop --do_train to evaluate the model as it starts."
        )
    if model_args.class_specific_context:
        check_class_sets(data_args, training_args, "--class_specific_context")
    if training_args.do_train and training_args.do_eval:
        warn_if_training_split_is_evaluated(data_args)
    return model_args, data_args, training_args, run_args


def check_unused_trainer_options(training_args, run_args) -> None:
    """
    Trainer options this script would ignore, refused: it always trains with Dassl's SGD (official optim config), and
    with `--lr_schedule dassl_cosine` (the default) with Dassl's warm-up + cosine schedule. A warm-up as long as the
    training is allowed (Dassl does the same) but said: every step then runs at the warm-up rate.
    """
    from transformers import TrainingArguments

    defaults = TrainingArguments.__dataclass_fields__
    unused = []
    if str(getattr(training_args.optim, "value", training_args.optim)) != defaults["optim"].default:
        unused.append(("--optim", "the optimizer is always SGD (--learning_rate, --sgd_momentum, --weight_decay)"))
    if run_args.lr_schedule == "dassl_cosine":
        scheduler = str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type))
        if scheduler != defaults["lr_scheduler_type"].default:
            unused.append(("--lr_scheduler_type", "pass --lr_schedule hf to use Trainer's schedulers"))
        if training_args.warmup_steps:
            unused.append(("--warmup_steps", "the Dassl warm-up is --warmup_epochs / --warmup_lr"))
    if unused:
        raise ValueError(
            "; ".join(f"{flag} is not used by this script: {why}" for flag, why in unused)
            + ". Drop it (nothing is silently ignored)."
        )
    epochs = training_args.num_train_epochs
    if training_args.do_train and run_args.lr_schedule == "dassl_cosine" and 0 < epochs <= run_args.warmup_epochs:
        logger.warning(
            "--num_train_epochs %s <= --warmup_epochs %s: every step trains at the warm-up rate %g, never at "
            "--learning_rate %g (as Dassl would).",
            epochs,
            run_args.warmup_epochs,
            run_args.warmup_lr,
            training_args.learning_rate,
        )


def check_class_sets(data_args, training_args, what: str) -> None:
    """A class-specific context scores only its training classes: base-to-new evaluation would fail on the new ones."""
    if data_args.protocol == "base_to_new" and training_args.do_eval:
        raise ValueError(
            f"{what} learns one context per training class, so the model cannot score the new classes of "
            "--protocol base_to_new: pass --protocol all (the official CSC runs, scripts/coop/main.sh)."
        )


def check_saved_class_set(model_name_or_path, config, class_names: list[str]) -> None:
    """
    A saved class-specific context scores exactly the classes it was trained on, in their order (the model refuses
    any other set once built): compare its config's id2label with the run's classes before any file is written.
    """
    from cocoop_hf.processing_cocoop import class_name_key

    saved = config.class_names
    if [class_name_key(name) for name in saved] == [class_name_key(name) for name in class_names]:
        return
    saved_keys, run_keys = {class_name_key(n) for n in saved}, {class_name_key(n) for n in class_names}
    lacking = [name for name in class_names if class_name_key(name) not in saved_keys]
    extra = [name for name in saved if class_name_key(name) not in run_keys]
    if lacking or extra:
        difference = (
            f"this run's classes it has no context for: {lacking[:10]}{' ...' if len(lacking) > 10 else ''}; its "
            f"classes this run lacks: {extra[:10]}{' ...' if len(extra) > 10 else ''}"
        )
    else:
        difference = f"the same classes in another order: it has {saved[:10]}, this run {class_names[:10]}"
    raise ValueError(
        f"--model_name_or_path {model_name_or_path} has a class-specific context (one learned context per class) "
        f"for its {len(saved)} training classes only, and this run has {len(class_names)} classes: {difference}. "
        "Evaluate it on the classes it was trained on, or train a model for these."
    )


def uses_kgcoop(model_args) -> bool:
    """Whether the run builds a model with the KgCoOp regulariser (a saved model brings its own, template included)."""
    if model_args.model_name_or_path:
        return False
    return model_args.method != "zeroshot" and model_args.method_config()["kgcoop_weight"] > 0


def kgcoop_template(model_args, data_args, run_args) -> tuple[str | None, str | None]:
    """(template, where it comes from) of the KgCoOp regulariser's zero-shot features; (None, None) without it."""
    if not uses_kgcoop(model_args):
        return None, None
    prompt = check_template(run_args.prompt_template) if run_args.prompt_template is not None else None
    return kgcoop_template_for(data_args.benchmark, prompt)


def zero_shot_template(model_args, data_args, training_args, run_args) -> tuple[str | None, str | None]:
    """
    (template, where it comes from) when `--method zeroshot` scores plain CLIP with a prompt template: the given
    --prompt_template, else the official template of --benchmark (CoOp trainers/zsclip.py `CUSTOM_TEMPLATES`);
    (None, None) for the CoOp-packaged zero-shot model of --ctx_init words.
    """
    from training.benchmarks import get_benchmark

    if run_args.prompt_template is not None and model_args.method != "zeroshot" and not uses_kgcoop(model_args):
        raise ValueError(
            f"--prompt_template is the hand-crafted prompt of zero-shot CLIP (--method zeroshot) or of the KgCoOp "
            f"regulariser (--method kgcoop, --kgcoop_weight): drop it for --method {model_args.method} (its prompt "
            "context is learned from --ctx_init)."
        )
    if model_args.method != "zeroshot":
        return None, None
    if run_args.prompt_template is not None:
        template, source = check_template(run_args.prompt_template), "--prompt_template"
    elif data_args.benchmark is not None:
        template = get_benchmark(data_args.benchmark).template
        source = f"the official {data_args.benchmark} template (CoOp trainers/zsclip.py CUSTOM_TEMPLATES)"
    else:
        return None, None
    if model_args.model_name_or_path:
        raise ValueError(
            f"--method zeroshot with a prompt template ({source}) scores plain CLIP "
            f"(--clip_model_name_or_path); drop --model_name_or_path {model_args.model_name_or_path}."
        )
    for flag, given in (
        ("--push_to_hub", training_args.push_to_hub),
        ("--save_adapter_only", run_args.save_adapter_only),
    ):
        if given:
            raise ValueError(
                f"{flag}: zero-shot CLIP with a prompt template learns nothing and saves no model, so there is "
                "nothing to share or save; its results are in --output_dir."
            )
    return template, source


def check_output_dir(training_args, run_args, model_args=None) -> None:
    """
    Refuse an --output_dir holding files this script did not write, or (unless resuming) a previous run, or that is,
    contains or lies inside a folder a model or checkpoint is read from, before anything is written; with
    --overwrite_output_dir delete the previous run's outputs (see training/outputs.py).
    """
    resume = resume_requested(training_args.resume_from_checkpoint)
    sources = {}
    if model_args is not None:
        sources["--model_name_or_path"] = model_args.model_name_or_path
        sources["--clip_model_name_or_path"] = model_args.clip_model_name_or_path
    reading = ()
    if resume and training_args.do_train:
        checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
        if Path(checkpoint).resolve().parent == Path(training_args.output_dir).resolve():
            # An entry of --output_dir: resuming keeps it (a user's copy too: read, never deleted nor replaced).
            reading = (Path(checkpoint).name,)
        else:
            sources["--resume_from_checkpoint"] = checkpoint
    outputs.check_separate_folders(training_args.output_dir, sources)
    # One process checks and cleans the folder; the others wait for it (the Trainer writes from process 0 too).
    with training_args.main_process_first(local=training_args.save_on_each_node, desc="checking --output_dir"):
        if training_args.should_save:
            prepare_output_dir(training_args.output_dir, run_args.overwrite_output_dir, resume, reading=reading)
            # Recorded before Trainer writes into it: an interrupted run's logs are its own, not the user's.
            outputs.start_log_folders(training_args.output_dir, trainer_log_entries(training_args))


def trainer_log_entries(training_args) -> list[str]:
    """The entry of --output_dir holding Trainer's TensorBoard logs (`runs/<time>_<host>`) when it writes them."""
    import os

    report_to = training_args.report_to or []
    if "tensorboard" in report_to and not os.environ.get("TENSORBOARD_LOGGING_DIR"):
        return ["runs"]
    return []


# ---------------------------------------------------------------------------------------------- model


def check_trainable(model) -> list[str]:
    """Only the prompt learner may train (CoCoOpModel freezes CLIP); anything else is a bug worth stopping for."""
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    stray = [name for name in trainable if not name.startswith("prompt_learner.")]
    if stray or not trainable:
        raise RuntimeError(f"expected only prompt_learner.* to be trainable, got {trainable[:10]}")
    return trainable


# ---------------------------------------------------------------------------------------------- optimisation


class DasslCosineSchedule:
    """
    LR factor per optimizer step, constant within an epoch: Dassl's ConstantWarmupScheduler (warmup epochs at
    `warmup_lr`) + CosineAnnealingLR(T_max=max_epoch), so epoch e >= W runs at base * (1 + cos(pi (e - W) / T)) / 2.
    """

    def __init__(self, base_lr: float, max_epoch: int, steps_per_epoch: int, warmup_epochs=1, warmup_lr=1e-5):
        self.base_lr, self.max_epoch, self.steps_per_epoch = base_lr, max_epoch, max(1, steps_per_epoch)
        self.warmup_epochs, self.warmup_lr = warmup_epochs, warmup_lr

    def epoch_lr(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return self.warmup_lr
        return 0.5 * self.base_lr * (1 + math.cos(math.pi * (epoch - self.warmup_epochs) / self.max_epoch))

    def __call__(self, step: int) -> float:
        return self.epoch_lr(step // self.steps_per_epoch) / self.base_lr


class CoCoOpTrainer(LeanCheckpointTrainer):
    """
    Trainer with the official optimiser: SGD (momentum, weight decay on every trainable tensor) + Dassl LR; lean,
    crash-safe checkpoints that resume exactly (training/checkpoints.py).
    """

    def __init__(self, *args, run_args: RunArguments | None = None, **kwargs):
        self.run_args = run_args or RunArguments()
        super().__init__(*args, **kwargs)
        # CoCoOpModel's loss is the mean cross-entropy of its batch (as Dassl); it takes no num_items_in_batch.
        self.model_accepts_loss_kwargs = False
        self._kgcoop_sum, self._kgcoop_batches = None, 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        term = getattr(outputs, "kgcoop_loss", None)
        if term is not None and model.training:
            # Kept on the device until the next log: a .item() per step would wait for the device every step.
            term = term.detach().float()
            self._kgcoop_sum = term if self._kgcoop_sum is None else self._kgcoop_sum + term
            self._kgcoop_batches += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs, start_time=None):
        # Beside the training loss, the KgCoOp term averaged over the same batches (and processes, as the loss).
        if "loss" in logs and self._kgcoop_batches:
            mean = (self._kgcoop_sum / self._kgcoop_batches).reshape(1)
            logs["kgcoop_loss"] = self.accelerator.gather(mean).mean().item()
            self._kgcoop_sum, self._kgcoop_batches = None, 0
        super().log(logs, start_time)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            params = [p for _, p in opt_model.named_parameters() if p.requires_grad]
            # Dassl build_optimizer('sgd'): weight decay on all parameters, dampening 0, no Nesterov.
            self.optimizer = torch.optim.SGD(
                params,
                lr=self.args.learning_rate,
                momentum=self.run_args.sgd_momentum,
                weight_decay=self.args.weight_decay,
            )
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.run_args.lr_schedule == "hf":
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            max_epoch = math.ceil(self.args.num_train_epochs)
            schedule = DasslCosineSchedule(
                self.args.learning_rate,
                max_epoch,
                num_training_steps // max_epoch,
                self.run_args.warmup_epochs,
                self.run_args.warmup_lr,
            )
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, schedule)
        return self.lr_scheduler


# ---------------------------------------------------------------------------------------------- hub


def push_folder_to_hub(folder, training_args, commit_message: str) -> str:
    """Upload model, processor, code files, results and card (never checkpoints) with one commit; returns repo id."""
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(folder)
    api = HfApi(token=training_args.hub_token)
    repo_id = training_args.hub_model_id or folder.resolve().name
    repo_id = api.create_repo(repo_id, private=training_args.hub_private_repo, exist_ok=True).repo_id
    operations = [
        CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=str(path))
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name not in ("training_args.bin", MANIFEST_NAME)  # local bookkeeping
    ]
    api.create_commit(repo_id=repo_id, operations=operations, commit_message=commit_message)
    return repo_id


# ---------------------------------------------------------------------------------------------- main


def setup_logging(training_args) -> None:
    """This script's logger and the `training` modules' at INFO on the main process; transformers as configured."""
    import logging as std_logging

    log_level = training_args.get_process_log_level()
    cli.setup_logging(logger.name, std_logging.INFO if training_args.should_log else log_level, log_level)


def main(argv=None, callbacks=None) -> dict:
    """Run the protocol; returns the content of results.json (empty dict on non-main processes)."""
    model_args, data_args, training_args, run_args = parse_args(argv)
    template, template_source = zero_shot_template(model_args, data_args, training_args, run_args)
    kg_template, kg_template_source = kgcoop_template(model_args, data_args, run_args)
    # What the model config would refuse, before any file or model.
    config = check_method_config(model_args, kg_template)
    if model_args.model_name_or_path and getattr(config, "class_specific_context", False):
        check_class_sets(data_args, training_args, f"{model_args.model_name_or_path} (class-specific context)")
    setup_logging(training_args)
    push_to_hub = training_args.push_to_hub
    training_args.push_to_hub = False  # Trainer(push_to_hub=True) would create the repo and write its own card
    random_note = RANDOM_WEIGHTS_NOTE if model_args.random_init_clip else None
    if random_note and training_args.process_index == 0:
        print("\n" + "=" * 100 + f"\n{random_note}\n" + "=" * 100 + "\n", flush=True)

    from transformers import CLIPImageProcessor

    processor_source = model_args.model_name_or_path or model_args.clip_model_name_or_path
    image_processor = CLIPImageProcessor.from_pretrained(processor_source, revision=model_args.clip_revision)
    train_transform, eval_transform = build_transforms(image_processor, data_args.image_size)

    splits = ([data_args.train_split] if training_args.do_train else []) + (
        [data_args.eval_split] if training_args.do_eval else []
    )
    if not splits:
        raise ValueError("nothing to do: pass --do_train and/or --do_eval.")
    data, class_names = load_splits(data_args, splits, cache_dir=model_args.cache_dir)
    fewshot_seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
    quiet = not training_args.should_log or training_args.disable_tqdm

    # Classes the model trains on: the base half (base-to-new) or all of them, halved over the whole class list (see
    # protocol_relabels); every trained class must have training images (class_coverage).
    relabels = protocol_relabels(len(class_names), data_args.protocol)
    names = class_names_per_task(class_names, relabels)
    train_task = "base" if data_args.protocol == "base_to_new" else "all"
    class_set = class_coverage(data_args, data, class_names, relabels[train_task] if training_args.do_train else None)
    if model_args.model_name_or_path and getattr(config, "class_specific_context", False):
        check_saved_class_set(model_args.model_name_or_path, config, names[train_task])
    settings = run_settings(model_args, data_args, training_args, run_args)
    if training_args.do_train and resume_requested(training_args.resume_from_checkpoint):
        # Another run's checkpoint (other seed, shots, method, lr, ...) is refused before a file is written.
        checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
        check_checkpoint_settings(checkpoint, settings)
    # After the checks above: a refused run leaves --output_dir untouched.
    check_output_dir(training_args, run_args, model_args)

    label_source = data[data_args.train_split if training_args.do_train else data_args.eval_split]
    train_indices = None
    if training_args.do_train and data_args.num_shots is not None:
        # --fewshot_file: the very images of an official run, in its order, in place of our own draw.
        official = None
        if data_args.fewshot_file is not None:
            official = official_fewshot_rows(data_args, label_source, class_names, fewshot_seed)
        with training_args.main_process_first(desc="few-shot indices"):
            train_indices = few_shot_indices(
                label_source["label"],
                data_args.num_shots,
                fewshot_seed,
                training_args.output_dir,
                data_args.train_split,
                run_args.overwrite_output_dir,
                dataset=dataset_identity(data_args),
                official=official,
            )

    train_dataset, skipped = None, {}
    if training_args.do_train:
        train_dataset, _ = select_labels(data[data_args.train_split], relabels[train_task], train_indices)
        if data_args.verify_images != "none":
            train_dataset, skipped["train"] = drop_or_raise_corrupt(
                train_dataset, "train", data_args.skip_corrupt_images, quiet
            )
        logger.info("Training on %d images of %d classes.", len(train_dataset), len(names[train_task]))
        if train_indices is not None and training_args.should_save:
            record_training_items(training_args.output_dir, train_dataset, train_task, relabels[train_task], names)
        train_dataset = train_dataset.with_transform(ImageTransform(train_transform, relabels[train_task]))
    eval_sets = {}
    if training_args.do_eval:
        for task, relabel in relabels.items():
            dataset, _ = select_labels(data[data_args.eval_split], relabel)
            if data_args.max_eval_samples is not None and len(dataset) > data_args.max_eval_samples:
                dataset = dataset.shuffle(seed=fewshot_seed).select(range(data_args.max_eval_samples))
            if data_args.verify_images == "all":
                dataset, skipped[task] = drop_or_raise_corrupt(dataset, task, data_args.skip_corrupt_images, quiet)
            eval_sets[task] = (dataset.with_transform(ImageTransform(eval_transform, relabel)), names[task])

    if template is not None:
        # The official ZeroshotCLIP: plain CLIP + a template; --ctx_init / --n_ctx play no part.
        logger.info("Zero-shot CLIP with the prompt template %r (%s).", template, template_source)
        model = build_zero_shot_clip(model_args, template, names[train_task])
    else:
        if kg_template is not None:
            logger.info("KgCoOp regulariser: zero-shot features of %r (%s).", kg_template, kg_template_source)
        model = build_model(model_args, names[train_task], training_args.seed, kg_template)
    if random_note is None and has_random_weights(model):  # a saved model trained on random CLIP weights
        random_note = RANDOM_WEIGHTS_NOTE
    if run_args.save_adapter_only and random_note:
        raise ValueError(
            "--save_adapter_only: this model's CLIP has random weights, and an adapter-only folder would load the "
            f"CLIP {model.config.clip_name_or_path} instead; save the full model (drop --save_adapter_only)."
        )
    trainable = check_trainable(model) if template is None else []
    trainer = CoCoOpTrainer(
        model=model, args=training_args, train_dataset=train_dataset, callbacks=callbacks, run_args=run_args
    )
    trainer.run_settings = settings  # recorded in every checkpoint, compared on resume
    accelerator = trainer.accelerator
    epoch_evaluation = None
    if run_args.eval_each_epoch and training_args.do_train and eval_sets:
        epoch_evaluation = EpochEvaluation(
            trainer, eval_sets, training_args.per_device_eval_batch_size, training_args.dataloader_num_workers
        )
        trainer.add_callback(epoch_evaluation)
    if training_args.do_train:
        logger.info("Trainable tensors: %s", trainable)
        # "latest": the newest checkpoint whose writing finished (an interrupted one is skipped).
        resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
        check_checkpoint_optimizer(resume)  # a diverged run's NaN momentum would continue silently
        with write_errors.writing(training_args.output_dir):  # a full disk while checkpointing: one line naming it
            trainer.train(resume_from_checkpoint=resume)
    model = accelerator.unwrap_model(trainer.model)
    if template is None:  # trained or loaded: NaN prompts would be saved and evaluated at chance without a word
        check_trained_prompt_learner(model)

    if trainer.is_world_process_zero() and template is None:  # zero-shot CLIP + template: nothing to save
        # The checkpoints hold the prompt learner only; the output is a model that loads on its own (with its CLIP,
        # or adapter-only with --save_adapter_only) and its processor, with the image processor this run used.
        model._image_processor = image_processor
        # Saved into a recorded staging folder, then moved into place, each file checked first (no symlink, nothing
        # of the user's replaced) and recorded: the library's save_pretrained knows nothing of the manifest.
        staging = outputs.make_staging_folder(training_args.output_dir, f"{outputs.STAGING_PREFIX}model")
        with write_errors.writing(training_args.output_dir):
            model.save_pretrained(staging, adapter_only=run_args.save_adapter_only)
        outputs.publish_folder(staging, training_args.output_dir)

    evaluation = {}
    if training_args.do_eval:
        evaluation = evaluate_sets(
            model,
            eval_sets,
            accelerator,
            training_args.per_device_eval_batch_size,
            training_args.dataloader_num_workers,
            load_metrics(),
            features=epoch_evaluation.features if epoch_evaluation is not None else None,
        )
    accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return {}

    method = model_args.method
    if model_args.model_name_or_path and method != "zeroshot":
        method = saved_method(model.config)  # what the loaded model is, whatever --method says
        if method != model_args.method:
            logger.info("%s is a %s model: its results are labelled so.", model_args.model_name_or_path, method)
    run = {
        "dataset": data_args.display_name,
        "method": method,
        "seed": training_args.seed,
        "num_shots": data_args.num_shots if training_args.do_train else None,
        "metrics": evaluation,
    }
    if template is not None:
        run["prompt_template"] = template
    # What the model is, as its config says (a loaded model keeps the options it was saved with).
    options = method_options(model.config) if template is None else None
    if options is not None and options["kgcoop_weight"] > 0:
        options["kgcoop_template_source"] = kg_template_source or "the saved model's config"
    if options is not None:
        run["method_options"] = options
    if epoch_evaluation is not None:
        run["per_epoch"] = epoch_evaluation.history
    if "base" in evaluation and "new" in evaluation:
        run["H"] = harmonic_mean(evaluation["base"]["accuracy"], evaluation["new"]["accuracy"])
    recipe = {
        "shots": data_args.num_shots,
        "seed": training_args.seed,
        "epochs": training_args.num_train_epochs if training_args.do_train else 0,
        "lr": training_args.learning_rate,
        "batch_size": training_args.per_device_train_batch_size * training_args.world_size,
        "method": method,
        "lr schedule": f"{run_args.lr_schedule} (warmup {run_args.warmup_epochs} epoch at {run_args.warmup_lr:g})",
        "optimizer": f"SGD momentum {run_args.sgd_momentum}, weight decay {training_args.weight_decay:g}",
        "precision": "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32",
        "CLIP weights": str(next(model.clip.parameters()).dtype).removeprefix("torch."),
    }
    if template is not None:
        recipe["prompt template"] = template
    if options is not None:
        recipe["class token position"] = options["class_token_position"]
        recipe["class-specific context"] = options["class_specific_context"]
        if options["kgcoop_weight"] > 0:
            recipe["KgCoOp weight"] = options["kgcoop_weight"]
            recipe["KgCoOp template"] = options["kgcoop_template"]
    extra = {
        "world_size": training_args.world_size,
        "protocol": data_args.protocol,
        "classes": names,
        "class_set": class_set,
        "skipped_corrupt_images": skipped,
        "recipe": recipe,
        **({"zero_shot": {"prompt_template": template, "source": template_source}} if template is not None else {}),
        **({"method_options": options} if options is not None else {}),
        "arguments": {"model": asdict(model_args), "data": asdict(data_args), "run": asdict(run_args)},
    }
    content = write_report(training_args.output_dir, [run] if evaluation else [], note=random_note, extra=extra)
    card = model_card(
        aggregate([run]) if evaluation else [],
        base_model=model.config.clip_name_or_path or model_args.clip_model_name_or_path,
        base_model_revision=model.config.clip_revision,
        recipe=recipe,
        repo_id=training_args.hub_model_id,
        class_names=names[train_task],
        n_ctx=model.config.n_ctx,
        random_weights=bool(random_note),
        model_name=training_args.hub_model_id or Path(training_args.output_dir).resolve().name,
        method=method,
        options=options,
    )
    outputs.write_output(Path(training_args.output_dir) / CARD_NAME, str(card), "model card")
    # After the last file. Trainer's log folder (--report_to tensorboard) is written by Trainer, recorded now.
    finish_output_dir(training_args.output_dir, also=trainer_log_entries(training_args))
    if random_note:
        print("\n" + "=" * 100 + f"\n{random_note}\n" + "=" * 100, flush=True)
    if evaluation:
        print((Path(training_args.output_dir) / "results.md").read_text(), flush=True)
    if push_to_hub:
        content["repo_id"] = push_folder_to_hub(
            training_args.output_dir, training_args, f"CoCoOp {method} on {data_args.display_name}"
        )
    return content


if __name__ == "__main__":
    run_script(main)
