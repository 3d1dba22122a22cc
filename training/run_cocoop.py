#!/usr/bin/env python
"""
Train and evaluate CoCoOp / CoOp / zero-shot CLIP with the paper's protocol on Hugging Face Trainer + datasets.

    python training/run_cocoop.py training/configs/cocoop_vit_b16_c4_ep10_batch1_ctxv1.yaml \
        --dataset_name <hub id or local folder> --output_dir out/cocoop --seed 1

A JSON/YAML file may stand first in place of flags; flags after it override it. Base-to-new (default): few-shot
training on the base half of the classes, then accuracy and macro-F1 on the base and the new classes, and
H = 2BN/(B+N). Writes results.json, results.md, results.png and README.md (model card) into --output_dir.
Distributed: `torchrun --nproc_per_node N training/run_cocoop.py ...` (or `accelerate launch`).
"""

import json
import math
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path


if __package__ in (None, ""):  # run as a script: make `training` and `cocoop_hf` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import transformers
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging

from training.data import (
    DataArguments,
    ImageTransform,
    build_transforms,
    drop_or_raise_corrupt,
    few_shot_indices,
    harmonic_mean,
    load_splits,
    select_labels,
    subsample_classes,
)
from training.report import CARD_NAME, RANDOM_WEIGHTS_NOTE, aggregate, model_card, write_report


logger = logging.get_logger(__name__)

METRICS_DIR = Path(__file__).resolve().parent / "metrics"
METHODS = ("cocoop", "coop", "zeroshot")
PREVIOUS_RUN_FILES = ("results.json", "trainer_state.json", "model.safetensors", "config.json", "all_results.json")

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
class ModelArguments:
    """Which CLIP, which method, which prompt."""

    clip_model_name_or_path: str = field(
        default="openai/clip-vit-base-patch16", metadata={"help": "Hub id or local folder of the frozen CLIP."}
    )
    clip_revision: str | None = field(default=None, metadata={"help": "Revision (commit) of the CLIP."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A trained CoCoOp/CoOp folder or repo to start from (e.g. evaluation only)."}
    )
    method: str = field(
        default="cocoop",
        metadata={"help": "'cocoop' (meta-net), 'coop' (conditional=False) or 'zeroshot' (CLIP, no training)."},
    )
    n_ctx: int | None = field(default=None, metadata={"help": "Context tokens (default: word count of ctx_init)."})
    ctx_init: str | None = field(
        default="a photo of a", metadata={"help": "Words the context starts from; 'none' for a random context."}
    )
    meta_net_reduction: int = field(default=16, metadata={"help": "Meta-net hidden width = projection_dim // this."})
    random_init_clip: bool = field(
        default=False,
        metadata={
            "help": "Build the CLIP from its config.json with RANDOM weights (demo/CI without weights): every "
            "accuracy is then meaningless, and the outputs say so."
        },
    )
    random_init_seed: int = field(default=0, metadata={"help": "Seed of the random CLIP weights."})
    cache_dir: str | None = field(default=None, metadata={"help": "Cache folder for Hub downloads."})


@dataclass
class RunArguments:
    """Script options that TrainingArguments lacks."""

    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow an --output_dir that holds a previous run (its checkpoints go)."}
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


# ---------------------------------------------------------------------------------------------- arguments


def parse_args(argv=None):
    """(model, data, training, run) arguments from flags, or from a JSON/YAML file first and flags overriding it."""
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments, RunArguments))
    parser.set_defaults(**RECIPE_DEFAULTS)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        config_path = argv.pop(0)
        if not os.path.isfile(config_path):
            raise ValueError(f"config file {config_path} does not exist.")
        with open(config_path, encoding="utf-8") as handle:
            if config_path.endswith(".json"):
                values = json.load(handle)
            else:
                import yaml

                values = yaml.safe_load(handle)
        if not isinstance(values, dict):
            raise ValueError(f"config file {config_path} must hold a mapping of argument names to values.")
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"config file {config_path} has unknown arguments {unknown}; see --help for the names.")
        parser.set_defaults(**values)
    model_args, data_args, training_args, run_args = parser.parse_args_into_dataclasses(
        args=argv, look_for_args_file=False
    )
    if model_args.method not in METHODS:
        raise ValueError(f"--method must be one of {METHODS}, got {model_args.method!r}.")
    if model_args.method == "zeroshot" and training_args.do_train:
        raise ValueError("--method zeroshot has nothing to train: drop --do_train (zero-shot CLIP is evaluated only).")
    if run_args.lr_schedule not in ("dassl_cosine", "hf"):
        raise ValueError(f"--lr_schedule must be 'dassl_cosine' or 'hf', got {run_args.lr_schedule!r}.")
    if run_args.lr_schedule == "dassl_cosine" and training_args.max_steps > 0:
        raise ValueError("--max_steps does not fit the per-epoch Dassl schedule: use --num_train_epochs.")
    if isinstance(model_args.ctx_init, str) and model_args.ctx_init.strip().lower() in ("", "none", "null"):
        model_args.ctx_init = None
    return model_args, data_args, training_args, run_args


def check_output_dir(training_args, run_args) -> None:
    """A previous run in --output_dir is an error unless resuming or --overwrite_output_dir (then checkpoints go)."""
    output_dir = Path(training_args.output_dir)
    if not output_dir.is_dir():
        return
    previous = [name for name in PREVIOUS_RUN_FILES if (output_dir / name).exists()]
    checkpoints = sorted(p.name for p in output_dir.glob("checkpoint-*"))
    if not (previous or checkpoints) or training_args.resume_from_checkpoint:
        return
    if not run_args.overwrite_output_dir:
        raise ValueError(
            f"--output_dir {output_dir} holds a previous run ({', '.join(previous + checkpoints[:3])}): pass "
            "--overwrite_output_dir to replace it, --resume_from_checkpoint to continue it, or another --output_dir."
        )
    for name in checkpoints:
        shutil.rmtree(output_dir / name)
    logger.warning("--overwrite_output_dir: replacing the previous run in %s.", output_dir)


# ---------------------------------------------------------------------------------------------- model


def build_model(model_args: ModelArguments, class_names, seed: int):
    """CoCoOpModel for `class_names` (CoOp: conditional=False; zero-shot: CoOp with the context of ctx_init)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from cocoop_hf import CoCoOpConfig, CoCoOpModel

    if model_args.model_name_or_path:
        model = CoCoOpModel.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
        model.set_class_names(class_names)
        return model
    if model_args.method == "zeroshot" and model_args.ctx_init is None:
        raise ValueError("--method zeroshot needs the prompt words: pass --ctx_init (e.g. 'a photo of a').")
    method_kwargs = dict(
        n_ctx=model_args.n_ctx,
        ctx_init=model_args.ctx_init,
        conditional=model_args.method == "cocoop",
        meta_net_reduction=model_args.meta_net_reduction,
    )
    path = model_args.clip_model_name_or_path
    if not model_args.random_init_clip:
        set_seed(seed)  # meta-net (and a random context) are drawn from the training seed
        return CoCoOpModel.from_clip(
            path,
            class_names,
            revision=model_args.clip_revision,
            clip_kwargs={"cache_dir": model_args.cache_dir},
            **method_kwargs,
        )
    clip_config = CLIPConfig.from_pretrained(path, revision=model_args.clip_revision)
    set_seed(model_args.random_init_seed)
    clip_state = CLIPModel(clip_config).state_dict()  # random weights, the same for every training seed
    tokenizer = CLIPTokenizer.from_pretrained(path, revision=model_args.clip_revision)
    config = CoCoOpConfig(
        clip_config=clip_config.to_dict(),
        clip_name_or_path=str(path),
        clip_revision=model_args.clip_revision,
        id2label=dict(enumerate(class_names)),
        label2id={name: i for i, name in enumerate(class_names)},
        **method_kwargs,
    )
    set_seed(seed)
    model = CoCoOpModel(config)
    model.clip.load_state_dict(clip_state)
    if config.ctx_init is not None:
        model.init_context_from_words(tokenizer)
    model.set_class_names(class_names, tokenizer=tokenizer)
    return model


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


class CoCoOpTrainer(Trainer):
    """Trainer with the official optimiser: SGD (momentum, weight decay on every trainable tensor) + Dassl LR."""

    def __init__(self, *args, run_args: RunArguments | None = None, **kwargs):
        self.run_args = run_args or RunArguments()
        super().__init__(*args, **kwargs)
        # CoCoOpModel's loss is the mean cross-entropy of its batch (as Dassl); it takes no num_items_in_batch.
        self.model_accepts_loss_kwargs = False

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


# ---------------------------------------------------------------------------------------------- evaluation


def load_metrics():
    """Accuracy and macro-F1 as one local `evaluate` module (shipped in training/metrics: no Hub access)."""
    import evaluate

    return [evaluate.load(str(METRICS_DIR / "classification"))]


@torch.no_grad()
def extract_image_features(model, dataset, accelerator, batch_size: int, num_workers: int, desc: str):
    """Normalised image features and labels of `dataset`, computed once (sharded over processes, then gathered)."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import default_data_collator

    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=default_data_collator)
    loader = accelerator.prepare_data_loader(loader)
    features, labels = [], []
    for batch in tqdm(loader, desc=desc, disable=not accelerator.is_local_main_process):
        with accelerator.autocast():
            embeds = model.get_image_features(batch["pixel_values"])
        embeds, batch_labels = accelerator.gather_for_metrics((embeds.float().contiguous(), batch["labels"]))
        features.append(embeds.cpu())
        labels.append(batch_labels.cpu())
    return torch.cat(features), torch.cat(labels)


@torch.no_grad()
def predict(model, image_embeds, class_names, accelerator, batch_size: int, desc: str) -> torch.Tensor:
    """Predicted class per image feature for `class_names` (images sharded over processes, then gathered)."""
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    model.set_class_names(class_names)
    mine = list(range(accelerator.process_index, len(image_embeds), accelerator.num_processes))
    results = []
    starts = range(0, len(mine), batch_size)
    for start in tqdm(starts, desc=desc, disable=not accelerator.is_local_main_process):
        index = mine[start : start + batch_size]
        with accelerator.autocast():
            logits = model(image_embeds=image_embeds[index].to(accelerator.device)).logits
        results.extend(zip(index, logits.argmax(-1).tolist(), strict=True))
    if accelerator.num_processes > 1:
        results = gather_object(results)
    predictions = torch.empty(len(image_embeds), dtype=torch.long)
    for index, prediction in results:
        predictions[index] = prediction
    return predictions


def evaluate_sets(model, eval_sets: dict, accelerator, batch_size: int, num_workers: int, metrics=None) -> dict:
    """
    `eval_sets`: name -> (dataset with the eval transform, class names). Returns name -> metrics. The images of a
    set are encoded once; sets that share a dataset object share its features.
    """
    metrics = metrics if metrics is not None else load_metrics()
    was_training = model.training
    model.eval()
    features = {}
    results = {}
    for name, (dataset, class_names) in eval_sets.items():
        key = id(dataset)
        if key not in features:
            features[key] = extract_image_features(
                model, dataset, accelerator, batch_size, num_workers, f"Encoding {name}"
            )
        embeds, labels = features[key]
        predictions = predict(model, embeds, class_names, accelerator, batch_size, f"Classifying {name}")
        scores = {}
        for metric in metrics:
            scores.update(metric.compute(predictions=predictions.tolist(), references=labels.tolist()))
        scores.update(num_samples=len(labels), num_classes=len(class_names))
        results[name] = scores
        logger.info("%s: %s", name, scores)
    model.train(was_training)
    return results


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
        if path.is_file() and path.name != "training_args.bin"
    ]
    api.create_commit(repo_id=repo_id, operations=operations, commit_message=commit_message)
    return repo_id


# ---------------------------------------------------------------------------------------------- main


def setup_logging(training_args) -> None:
    """As transformers' example scripts: this script's loggers at INFO on the main process, transformers passive."""
    import logging as std_logging

    log_level = training_args.get_process_log_level()
    script_logger = std_logging.getLogger("training")
    if not script_logger.handlers:
        handler = std_logging.StreamHandler(sys.stdout)
        handler.setFormatter(std_logging.Formatter("%(asctime)s - %(levelname)s - %(name)s - %(message)s", "%H:%M:%S"))
        script_logger.addHandler(handler)
    script_logger.setLevel(std_logging.INFO if training_args.should_log else log_level)
    logging.set_verbosity(log_level)
    transformers.utils.logging.enable_explicit_format()


def main(argv=None, callbacks=None) -> dict:
    """Run the protocol; returns the content of results.json (empty dict on non-main processes)."""
    model_args, data_args, training_args, run_args = parse_args(argv)
    setup_logging(training_args)
    push_to_hub = training_args.push_to_hub
    training_args.push_to_hub = False  # Trainer(push_to_hub=True) would create the repo and write its own card
    check_output_dir(training_args, run_args)
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

    # Classes the model trains on: the base half (base-to-new) or all of them. Dassl samples the few-shot set first,
    # then subsamples classes, with the label set taken from the (few-shot) training data.
    label_source = data[data_args.train_split if training_args.do_train else data_args.eval_split]
    train_indices = None
    if training_args.do_train and data_args.num_shots is not None:
        with training_args.main_process_first(desc="few-shot indices"):
            train_indices = few_shot_indices(
                label_source["label"],
                data_args.num_shots,
                fewshot_seed,
                training_args.output_dir,
                data_args.train_split,
                run_args.overwrite_output_dir,
            )
    present = label_source["label"] if train_indices is None else [label_source["label"][i] for i in train_indices]
    tasks = {"base": "base", "new": "new"} if data_args.protocol == "base_to_new" else {"all": "all"}
    relabels = {task: subsample_classes(present, subsample) for task, subsample in tasks.items()}
    names = {task: [class_names[old] for old in relabel] for task, relabel in relabels.items()}
    train_task = "base" if data_args.protocol == "base_to_new" else "all"

    train_dataset, skipped = None, {}
    if training_args.do_train:
        train_dataset, _ = select_labels(data[data_args.train_split], relabels[train_task], train_indices)
        if data_args.verify_images != "none":
            train_dataset, skipped["train"] = drop_or_raise_corrupt(
                train_dataset, "train", data_args.skip_corrupt_images, quiet
            )
        logger.info("Training on %d images of %d classes.", len(train_dataset), len(names[train_task]))
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

    model = build_model(model_args, names[train_task], training_args.seed)
    trainable = check_trainable(model)
    trainer = CoCoOpTrainer(
        model=model, args=training_args, train_dataset=train_dataset, callbacks=callbacks, run_args=run_args
    )
    accelerator = trainer.accelerator
    if training_args.do_train:
        logger.info("Trainable tensors: %s", trainable)
        resume = training_args.resume_from_checkpoint
        if isinstance(resume, str) and resume.lower() in ("true", "latest"):
            resume = get_last_checkpoint(training_args.output_dir)
            if resume is None:
                raise ValueError(f"--resume_from_checkpoint latest: no checkpoint-* in {training_args.output_dir}.")
        trainer.train(resume_from_checkpoint=resume)
        trainer.save_model()
    model = accelerator.unwrap_model(trainer.model)

    if trainer.is_world_process_zero():
        from cocoop_hf import CoCoOpProcessor

        CoCoOpProcessor(image_processor=image_processor, tokenizer=model.tokenizer).save_pretrained(
            training_args.output_dir
        )
        if not training_args.do_train:
            model.save_pretrained(training_args.output_dir)

    evaluation = {}
    if training_args.do_eval:
        evaluation = evaluate_sets(
            model,
            eval_sets,
            accelerator,
            training_args.per_device_eval_batch_size,
            training_args.dataloader_num_workers,
        )
        model.set_class_names(names[train_task])
    accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return {}

    run = {
        "dataset": data_args.display_name,
        "method": model_args.method,
        "seed": training_args.seed,
        "num_shots": data_args.num_shots if training_args.do_train else None,
        "metrics": evaluation,
    }
    if "base" in evaluation and "new" in evaluation:
        run["H"] = harmonic_mean(evaluation["base"]["accuracy"], evaluation["new"]["accuracy"])
    recipe = {
        "shots": data_args.num_shots,
        "seed": training_args.seed,
        "epochs": training_args.num_train_epochs if training_args.do_train else 0,
        "lr": training_args.learning_rate,
        "batch_size": training_args.per_device_train_batch_size * training_args.world_size,
        "method": model_args.method,
        "lr schedule": f"{run_args.lr_schedule} (warmup {run_args.warmup_epochs} epoch at {run_args.warmup_lr:g})",
        "optimizer": f"SGD momentum {run_args.sgd_momentum}, weight decay {training_args.weight_decay:g}",
        "precision": "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32",
    }
    extra = {
        "world_size": training_args.world_size,
        "protocol": data_args.protocol,
        "classes": names,
        "skipped_corrupt_images": skipped,
        "recipe": recipe,
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
        method=model_args.method,
    )
    card.save(Path(training_args.output_dir) / CARD_NAME)
    if random_note:
        print("\n" + "=" * 100 + f"\n{random_note}\n" + "=" * 100, flush=True)
    if evaluation:
        print((Path(training_args.output_dir) / "results.md").read_text(), flush=True)
    if push_to_hub:
        content["repo_id"] = push_folder_to_hub(
            training_args.output_dir, training_args, f"CoCoOp {model_args.method} on {data_args.display_name}"
        )
    return content


if __name__ == "__main__":
    main()
