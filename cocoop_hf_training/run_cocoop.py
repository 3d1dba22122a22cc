#!/usr/bin/env python
r"""
Train and evaluate CoCoOp / CoOp / KgCoOp / zero-shot with the paper's protocol on Hugging Face Trainer + datasets,
on a CLIP, MetaCLIP 2, SigLIP or SigLIP 2 backbone (--backbone, or --clip_model_name_or_path).

    cocoop-hf train cocoop_vit_b16_c4_ep10_batch1_ctxv1 --dataset_name <hub id or local folder> \
        --output_dir out/cocoop --seed 1 [--backbone google/siglip-base-patch16-224]

A JSON/YAML file, or the name of a shipped recipe (`cocoop-hf recipes`), may stand first in place of flags; flags
after it override it. Base-to-new (default): few-shot training on the base half of the classes, then accuracy and
macro-F1 on the base and the new classes, and H = 2BN/(B+N). Writes results.json, results.md, results.png and
README.md (model card) into --output_dir.
Distributed: `torchrun --nproc_per_node N -m cocoop_hf_training.run_cocoop ...` (or `accelerate launch -m`).

`main` reads as the run's story, one named phase each: start_run (arguments, method options, --output_dir's refusals),
load_data, check_before_writing, select_images, build_run_model, train, save_model, evaluate, report.
"""

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path


if __package__ in (None, ""):  # run as a script: make `training` and `cocoop_hf` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import TrainingArguments
from transformers.utils import logging

from cocoop_hf.backbone_loading_cocoop import check_folder_has_weights
from cocoop_hf.backbones_cocoop import backbone_of
from cocoop_hf_training import cli, interruptions, outputs, write_errors
from cocoop_hf_training.checkpoints import (
    check_checkpoint_settings,
    resolve_resume_checkpoint,
    resume_requested,
)
from cocoop_hf_training.class_split import class_coverage, class_names_per_task, protocol_relabels, select_labels
from cocoop_hf_training.cli import ModelArguments as ModelArguments
from cocoop_hf_training.cli import run_script
from cocoop_hf_training.data_arguments import DataArguments
from cocoop_hf_training.data_loading import load_splits
from cocoop_hf_training.device_settings import fit_training_arguments
from cocoop_hf_training.divergence import check_checkpoint_optimizer, check_trained_prompt_learner
from cocoop_hf_training.evaluation import EpochEvaluation, evaluate_sets, load_metrics
from cocoop_hf_training.fewshot import dataset_identity, few_shot_indices, official_fewshot_rows, record_training_items
from cocoop_hf_training.hub_upload import push_folder_to_hub as push_folder_to_hub
from cocoop_hf_training.image_transforms import ImageTransform, build_transforms, drop_or_raise_corrupt
from cocoop_hf_training.modeling_setup import (
    backbone_type,
    build_model,
    build_zero_shot_clip,
    check_adapter_only,
    check_zero_shot_words,
    has_random_weights,
    load_image_processor,
)
from cocoop_hf_training.outputs import finish_output_dir
from cocoop_hf_training.prompt_aggregation import GaussianPromptAggregation
from cocoop_hf_training.report import (
    CARD_NAME,
    aggregate,
    method_options,
    model_card,
    random_weights_note,
    saved_method,
    write_report,
)
from cocoop_hf_training.run_arguments import RECIPE_DEFAULTS as RECIPE_DEFAULTS
from cocoop_hf_training.run_arguments import RunArguments as RunArguments
from cocoop_hf_training.run_arguments import parse_args as _parse_args
from cocoop_hf_training.run_method import RunMethod, resolve_run_method
from cocoop_hf_training.run_method import check_saved_class_set as check_saved_class_set
from cocoop_hf_training.run_output_dir import check_output_dir, refuse_output_dir_early, trainer_log_entries
from cocoop_hf_training.run_record import run_recipe, run_result
from cocoop_hf_training.run_settings import run_settings
from cocoop_hf_training.trainer_cocoop import CoCoOpTrainer as CoCoOpTrainer
from cocoop_hf_training.trainer_cocoop import DasslCosineSchedule as DasslCosineSchedule
from cocoop_hf_training.trainer_cocoop import check_trainable


logger = logging.get_logger(__name__)


@dataclass
class Run:
    """One run's arguments and its method options, resolved once (`start_run`) and handed to every phase."""

    model_args: ModelArguments
    data_args: DataArguments
    training_args: TrainingArguments
    run_args: RunArguments
    method: RunMethod
    push_to_hub: bool = False
    random_note: str | None = None
    settings: dict | None = None  # recorded in every checkpoint, compared on resume (run_settings)
    prompt_aggregation: object | None = None  # PromptSRC's GPA of this run's training (results.json records it)


@dataclass
class RunData:
    """What the data phase gives the others: class names per task, the image sets and what was set aside."""

    image_processor: object
    transforms: tuple  # (train, eval) image transforms
    names: dict  # task -> class names ("base"/"new" or "all")
    train_task: str
    relabels: dict  # task -> {label: new label}
    class_set: dict  # classes without images, official counts (results.json "class_set")
    data: dict  # split -> dataset as loaded
    class_names: list
    train_dataset: object = None
    eval_sets: dict = field(default_factory=dict)  # task -> (dataset, class names)
    skipped: dict = field(default_factory=dict)  # set -> corrupt images dropped


def parse_args(argv=None):
    """(model, data, training, run) arguments from flags, or from a JSON/YAML file first and flags overriding it."""
    return _parse_args(argv, description=__doc__)


# ---------------------------------------------------------------------------------------------- main


def setup_logging(training_args) -> None:
    """This script's logger and the `training` modules' at INFO on the main process; transformers as configured."""
    import logging as std_logging

    log_level = training_args.get_process_log_level()
    cli.setup_logging(logger.name, std_logging.INFO if training_args.should_log else log_level, log_level)


# ---------------------------------------------------------------------------------------------- the run


def main(argv=None, callbacks=None) -> dict:
    """Run the protocol; returns the content of results.json (empty dict on non-main processes)."""
    run = start_run(argv)
    data = load_data(run)
    check_before_writing(run, data)  # after every check above: a refused run leaves --output_dir untouched
    # From here on --output_dir fills up: Ctrl-C in any phase says what a rerun must pass (training: its own note).
    with stopped_in(run, "selecting the images"):
        select_images(run, data)
    with stopped_in(run, "building the model"):
        model = build_run_model(run, data)
    trainer, epoch_evaluation = train(run, data, model, callbacks)
    with stopped_in(run, "saving the model"):
        model = save_model(run, data, trainer)
    saved = not run.method.is_zero_shot_template  # zero-shot CLIP + a template saves no model
    with stopped_in(run, "evaluating", model_saved=saved):
        evaluation = evaluate(run, data, trainer, model, epoch_evaluation)
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return {}
    with stopped_in(run, "writing the results", model_saved=saved):
        content = report(run, data, model, evaluation, epoch_evaluation, trainer_log_entries(run.training_args))
    output_dir = Path(run.training_args.output_dir).resolve()
    table = f" (results table: {output_dir / 'results.md'})" if evaluation else ""
    logger.info("Done: the outputs are in %s%s.", output_dir, table)
    return content


def stopped_in(run: Run, phase: str, model_saved: bool = False):
    """Ctrl-C in `phase` becomes one line saying what a rerun must pass (interruptions.run_rerun_note)."""
    args = run.training_args
    state = (args.output_dir, args.resume_from_checkpoint, args.save_strategy, args.do_train, model_saved)
    return interruptions.rerun_note(interruptions.run_rerun_note, phase, *state)


def start_run(argv) -> Run:
    """The arguments parsed and the method options resolved, once: what the model config would refuse, and an
    --output_dir that would be refused, refused before any file or model; logging set up."""
    model_args, data_args, training_args, run_args = parse_args(argv)
    method = resolve_run_method(model_args, data_args, training_args, run_args)
    if not model_args.model_name_or_path and not model_args.random_init_clip:
        # A config-only folder (the shipped tiny CLIP) refused now, not after the few-shot draw has been written.
        check_folder_has_weights(model_args.clip_model_name_or_path)
    setup_logging(training_args)
    fit_training_arguments(training_args)  # workers <= cores, no fp16 on CPU: said once, recorded as run
    run = Run(model_args, data_args, training_args, run_args, method, push_to_hub=training_args.push_to_hub)
    training_args.push_to_hub = False  # Trainer(push_to_hub=True) would create the repo and write its own card
    run.random_note = random_weights_note(backbone_type(model_args)) if model_args.random_init_clip else None
    # Refusals known from the arguments (and a saved model's config.json), made before --output_dir is touched: once
    # the few-shot draw is written there, a rerun with the flag dropped would be refused as "a previous run".
    check_adapter_only(
        model_args, run_args.save_adapter_only, method.config if model_args.model_name_or_path else None
    )
    if not method.is_zero_shot_template:
        check_zero_shot_words(model_args)
    # A refused --output_dir (a second run of the same command) answered at once, before the data loads and before
    # the banner: the refusal is then the only thing the command says.
    refuse_output_dir_early(training_args, run_args, model_args)
    if run.random_note and training_args.process_index == 0:
        print("\n" + "=" * 100 + f"\n{run.random_note}\n" + "=" * 100 + "\n", flush=True)
    return run


def load_data(run: Run) -> RunData:
    """
    The splits, their class names and the protocol's tasks; nothing written yet. Classes the model trains on: the
    base half (base-to-new) or all of them, halved over the whole class list (see protocol_relabels); every trained
    class must have training images (class_coverage).
    """
    model_args, data_args, training_args = run.model_args, run.data_args, run.training_args
    processor_source = model_args.model_name_or_path or model_args.clip_model_name_or_path
    saved = run.method.config if model_args.model_name_or_path else None
    backbone = saved.backbone_config.model_type if saved is not None else backbone_type(model_args)
    image_processor = load_image_processor(processor_source, backbone, revision=model_args.clip_revision)
    transforms = build_transforms(image_processor, data_args.image_size)  # (train, eval)
    splits = ([data_args.train_split] if training_args.do_train else []) + (
        [data_args.eval_split] if training_args.do_eval else []
    )
    if not splits:
        raise ValueError("nothing to do: pass --do_train and/or --do_eval.")
    data, class_names = load_splits(data_args, splits, cache_dir=model_args.cache_dir, backbone=backbone)
    relabels = protocol_relabels(len(class_names), data_args.protocol)
    names = class_names_per_task(class_names, relabels)
    train_task = "base" if data_args.protocol == "base_to_new" else "all"
    class_set = class_coverage(data_args, data, class_names, relabels[train_task] if training_args.do_train else None)
    if model_args.model_name_or_path and run.method.class_specific:
        check_saved_class_set(model_args.model_name_or_path, run.method.config, names[train_task])
    return RunData(image_processor, transforms, names, train_task, relabels, class_set, data, class_names)


def check_before_writing(run: Run, data: RunData) -> None:
    """Another run's checkpoint (other seed, shots, method, lr, ...) refused; then --output_dir checked and cleaned."""
    training_args = run.training_args
    run.settings = run_settings(run.model_args, run.data_args, training_args, run.run_args)
    if training_args.do_train and resume_requested(training_args.resume_from_checkpoint):
        checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
        check_checkpoint_settings(checkpoint, run.settings)
    check_output_dir(training_args, run.run_args, run.model_args)


def select_images(run: Run, data: RunData) -> None:
    """The few-shot training images (drawn, or an official file's) and the evaluation sets, with their transforms."""
    data_args, training_args = run.data_args, run.training_args
    train_transform, eval_transform = data.transforms
    fewshot_seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
    quiet = not training_args.should_log or training_args.disable_tqdm
    task, relabels, names = data.train_task, data.relabels, data.names
    if training_args.do_train:
        train_indices = few_shot_rows(run, data, fewshot_seed)
        train_dataset, _ = select_labels(data.data[data_args.train_split], relabels[task], train_indices)
        if data_args.verify_images != "none":
            train_dataset, data.skipped["train"] = drop_or_raise_corrupt(
                train_dataset, "train", data_args.skip_corrupt_images, quiet
            )
        logger.info("Training on %d images of %d classes.", len(train_dataset), len(names[task]))
        if train_indices is not None and training_args.should_save:
            record_training_items(training_args.output_dir, train_dataset, task, relabels[task], names)
        data.train_dataset = train_dataset.with_transform(ImageTransform(train_transform, relabels[task]))
    if training_args.do_eval:
        for eval_task, relabel in relabels.items():
            dataset, _ = select_labels(data.data[data_args.eval_split], relabel)
            if data_args.max_eval_samples is not None and len(dataset) > data_args.max_eval_samples:
                dataset = dataset.shuffle(seed=fewshot_seed).select(range(data_args.max_eval_samples))
            if data_args.verify_images == "all":
                dataset, data.skipped[eval_task] = drop_or_raise_corrupt(
                    dataset, eval_task, data_args.skip_corrupt_images, quiet
                )
            data.eval_sets[eval_task] = (
                dataset.with_transform(ImageTransform(eval_transform, relabel)),
                names[eval_task],
            )


def few_shot_rows(run: Run, data: RunData, fewshot_seed: int) -> list[int] | None:
    """Rows of the training split trained on: K per class (None: all). With --fewshot_file, the very images of an
    official run, in its order, in place of our own draw; recorded in fewshot_indices.json either way."""
    data_args, training_args = run.data_args, run.training_args
    if data_args.num_shots is None:
        return None
    label_source = data.data[data_args.train_split]
    official = None
    if data_args.fewshot_file is not None:
        official = official_fewshot_rows(data_args, label_source, data.class_names, fewshot_seed)
    with training_args.main_process_first(desc="few-shot indices"):
        return few_shot_indices(
            label_source["label"],
            data_args.num_shots,
            fewshot_seed,
            training_args.output_dir,
            data_args.train_split,
            run.run_args.overwrite_output_dir,
            dataset=dataset_identity(data_args),
            official=official,
        )


def build_run_model(run: Run, data: RunData):
    """The model the method options ask for: zero-shot CLIP with a template, or a CoCoOp / CoOp / KgCoOp model (new,
    or --model_name_or_path); a model on random CLIP weights noted (--save_adapter_only was refused for it in
    start_run)."""
    method, classes = run.method, data.names[data.train_task]
    if method.is_zero_shot_template:
        # The official ZeroshotCLIP: the plain backbone + a template; --ctx_init / --n_ctx play no part.
        model = build_zero_shot_clip(run.model_args, method.zero_shot_template, classes)
        template, source, shown = method.zero_shot_template, method.zero_shot_source, backbone_of(model.clip.config)
        logger.info("Zero-shot %s with the prompt template %r (%s).", shown.display_name, template, source)
    else:
        if method.kgcoop_template is not None:
            logger.info(
                "KgCoOp regulariser: zero-shot features of %r (%s).", method.kgcoop_template, method.kgcoop_source
            )
        model = build_model(run.model_args, classes, run.training_args.seed, method.kgcoop_template)
    if run.random_note is None and has_random_weights(model):  # a saved model trained on random CLIP weights
        run.random_note = random_weights_note(model.clip.config.model_type)
    return model


def train(run: Run, data: RunData, model, callbacks):
    """The Trainer (with a per-epoch evaluation where asked) and, with --do_train, training, resumed where asked."""
    training_args, run_args = run.training_args, run.run_args
    trainable = check_trainable(model) if not run.method.is_zero_shot_template else []
    if run.method.gpa_mean is not None:  # PromptSRC training: its final prompts are the Gaussian-weighted sum
        run.prompt_aggregation = GaussianPromptAggregation(run.method.gpa_mean, run.method.gpa_std)
    trainer = CoCoOpTrainer(
        model=model,
        args=training_args,
        train_dataset=data.train_dataset,
        callbacks=callbacks,
        run_args=run_args,
        prompt_aggregation=run.prompt_aggregation,
    )
    trainer.run_settings = run.settings  # recorded in every checkpoint, compared on resume
    epoch_evaluation = None
    if run_args.eval_each_epoch and training_args.do_train and data.eval_sets:
        epoch_evaluation = EpochEvaluation(
            trainer, data.eval_sets, training_args.per_device_eval_batch_size, training_args.dataloader_num_workers
        )
        trainer.add_callback(epoch_evaluation)
    if training_args.do_train:
        logger.info("Trainable tensors: %s", trainable)
        # "latest": the newest checkpoint whose writing finished (an interrupted one is skipped).
        resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
        check_checkpoint_optimizer(resume)  # a diverged run's NaN momentum would continue silently
        # Ctrl-C: one line naming the checkpoint a rerun resumes from (or that it starts again), not a traceback.
        interrupted = (training_args.output_dir, training_args.resume_from_checkpoint, training_args.save_strategy)
        with write_errors.writing(training_args.output_dir):  # a full disk while checkpointing: one line naming it
            with interruptions.rerun_note(interruptions.training_rerun_note, *interrupted):
                trainer.train(resume_from_checkpoint=resume)
    return trainer, epoch_evaluation


def save_model(run: Run, data: RunData, trainer):
    """
    The trained (or loaded) model, checked and saved on the main process: the checkpoints hold the prompt learner
    only; the output is a model that loads on its own (with its CLIP, or adapter-only with --save_adapter_only) and
    its processor, with the image processor this run used. Zero-shot CLIP + a template saves nothing.
    """
    model = trainer.accelerator.unwrap_model(trainer.model)
    if run.method.is_zero_shot_template:
        return model
    check_trained_prompt_learner(model)  # NaN prompts would be saved and evaluated at chance without a word
    output_dir = run.training_args.output_dir
    if trainer.is_world_process_zero():
        model._image_processor = data.image_processor
        # Saved into a recorded staging folder, then moved into place, each file checked first (no symlink, nothing
        # of the user's replaced) and recorded: the library's save_pretrained knows nothing of the manifest.
        staging = outputs.make_staging_folder(output_dir, f"{outputs.STAGING_PREFIX}model")
        with write_errors.writing(output_dir):
            model.save_pretrained(staging, adapter_only=run.run_args.save_adapter_only)
        outputs.publish_folder(staging, output_dir)
    return model


def evaluate(run: Run, data: RunData, trainer, model, epoch_evaluation) -> dict:
    """Accuracy and macro-F1 per task (image features reused from the per-epoch evaluation where it ran)."""
    if not run.training_args.do_eval:
        return {}
    return evaluate_sets(
        model,
        data.eval_sets,
        trainer.accelerator,
        run.training_args.per_device_eval_batch_size,
        run.training_args.dataloader_num_workers,
        load_metrics(),
        features=epoch_evaluation.features if epoch_evaluation is not None else None,
    )


def report(run: Run, data: RunData, model, evaluation: dict, epoch_evaluation, log_entries: list[str]) -> dict:
    """results.json / .md / .png, the model card, the output folder's record closed; pushed where asked. Returns the
    content of results.json."""
    model_args, data_args, training_args = run.model_args, run.data_args, run.training_args
    method = model_args.method
    if model_args.model_name_or_path and method != "zeroshot":
        method = saved_method(model.config)  # what the loaded model is, whatever --method says
        if method != model_args.method:
            logger.info("%s is a %s model: its results are labelled so.", model_args.model_name_or_path, method)
    template = run.method.zero_shot_template
    # What the model is, as its config says (a loaded model keeps the options it was saved with).
    options = method_options(model.config) if template is None else None
    if options is not None and run.prompt_aggregation is not None:  # PromptSRC's GPA: part of how it was trained
        options["gpa_mean"], options["gpa_std"] = run.prompt_aggregation.mean, run.prompt_aggregation.std
    if options is not None and options["kgcoop_weight"] > 0:
        options["kgcoop_template_source"] = run.method.kgcoop_source or "the saved model's config"
    result = run_result(run, method, evaluation, options, epoch_evaluation)
    recipe = run_recipe(run, model, method, options)
    extra = {
        "world_size": training_args.world_size,
        "protocol": data_args.protocol,
        "classes": data.names,
        "class_set": data.class_set,
        "skipped_corrupt_images": data.skipped,
        "recipe": recipe,
        **(
            {"zero_shot": {"prompt_template": template, "source": run.method.zero_shot_source}}
            if template is not None
            else {}
        ),
        **({"method_options": options} if options is not None else {}),
        **({"prompt_aggregation": run.prompt_aggregation.record()} if run.prompt_aggregation is not None else {}),
        "arguments": {"model": asdict(model_args), "data": asdict(data_args), "run": asdict(run.run_args)},
    }
    output_dir = Path(training_args.output_dir)
    content = write_report(output_dir, [result] if evaluation else [], note=run.random_note, extra=extra)
    card = model_card(
        aggregate([result]) if evaluation else [],
        base_model=model.config.clip_name_or_path or model_args.clip_model_name_or_path,
        base_model_revision=model.config.clip_revision,
        recipe=recipe,
        repo_id=training_args.hub_model_id,
        class_names=data.names[data.train_task],
        n_ctx=model.config.n_ctx,
        random_weights=bool(run.random_note),
        model_name=training_args.hub_model_id or output_dir.resolve().name,
        method=method,
        options=options,
        backbone=model.clip.config.model_type,
        prompt_template=template,
        ctx_init=getattr(model.config, "ctx_init", None),  # a zero-shot backbone has none
    )
    outputs.write_output(output_dir / CARD_NAME, str(card), "model card")
    # After the last file. Trainer's log folder (--report_to tensorboard) is written by Trainer, recorded now.
    finish_output_dir(output_dir, also=log_entries)
    if run.random_note:
        print("\n" + "=" * 100 + f"\n{run.random_note}\n" + "=" * 100, flush=True)
    if evaluation:
        print((output_dir / "results.md").read_text(), flush=True)
    if run.push_to_hub:
        content["repo_id"] = push_folder_to_hub(
            output_dir, training_args, f"CoCoOp {method} on {data_args.display_name}"
        )
    return content


if __name__ == "__main__":
    run_script(main)
