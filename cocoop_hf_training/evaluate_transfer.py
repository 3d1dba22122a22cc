#!/usr/bin/env python
r"""
Evaluate one model on several datasets' class sets: cross-dataset transfer (e.g. ImageNet -> Caltech101, ...) and
domain generalisation (ImageNet -> ImageNet-V2 / -Sketch / -A / -R, each with its own class list). Works for a
folder trained with this package (--model_name_or_path; any method: CoCoOp, CoOp, KgCoOp, IVLP,
MaPLe, PromptSRC) and for the zero-shot backbone (--method zeroshot): with
--prompt_template, or on SigLIP / SigLIP 2 with the backbone's own template ("This is a photo of {}.", as
`cocoop-hf train` scores it), the plain backbone scores `template.format(class name)`; on the CLIP family without one,
the CoOp-packaged zero-shot model of the --ctx_init words ("a photo of a {}.").

    cocoop-hf evaluate --model_name_or_path out/cocoop_imagenet --targets targets.yaml --output_dir out/transfer

targets.yaml lists the target datasets with the data options of `cocoop-hf train`, e.g.

    targets:
      - {dataset_display_name: imagenet-a, dataset_name: <hub id>, eval_split: test, class_names_file: a.txt}
      - {dataset_display_name: dtd, split_file: split_zhou_DescribableTextures.json, image_root: dtd/images}

Each target is evaluated on all its classes, or with `protocol: base_to_new` on its base and new halves (the
official split of the sorted labels) with their harmonic mean H; the image features of a target are computed once.
Writes results.json, results.md and results.png (accuracy per target) into --output_dir, recorded in its
output_manifest.json as `cocoop-hf train` records its outputs: --overwrite_output_dir replaces this script's earlier
results there, never a file of the same name it did not write.
"""

import dataclasses
import json
import re
import sys
from dataclasses import asdict
from pathlib import Path


if __package__ in (None, ""):  # run as a script: make `training` and `cocoop_hf` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers.utils import logging

from cocoop_hf.backbones_cocoop import backbone_of
from cocoop_hf.limits_cocoop import describe_value
from cocoop_hf_training.class_split import class_names_per_task, protocol_relabels, select_labels
from cocoop_hf_training.cli import (
    ModelArguments,
    parse_config_and_flags,
    read_structured_file,
    run_script,
    setup_logging,
)
from cocoop_hf_training.close_names import did_you_mean
from cocoop_hf_training.data_arguments import DataArguments
from cocoop_hf_training.data_loading import load_splits
from cocoop_hf_training.device_settings import capped_workers, fit_mixed_precision
from cocoop_hf_training.evaluation import evaluate_sets, harmonic_mean, load_metrics
from cocoop_hf_training.image_transforms import ImageTransform, build_transforms, drop_or_raise_corrupt
from cocoop_hf_training.input_paths import resolve_file_paths
from cocoop_hf_training.modeling_setup import (
    backbone_type,
    build_model,
    build_zero_shot_clip,
    has_random_weights,
    load_image_processor,
)
from cocoop_hf_training.outputs import (
    check_separate_folders,
    finish_output_dir,
    owns,
    prepare_output_dir,
    register_outputs,
    survey_output_dir,
)
from cocoop_hf_training.report import (
    PLOT_NAME,
    RESULTS_NAME,
    TABLE_NAME,
    method_options,
    random_weights_note,
    saved_method,
    write_report,
)
from cocoop_hf_training.transfer_arguments import TransferArguments as TransferArguments
from cocoop_hf_training.transfer_arguments import build_evaluate_parser
from cocoop_hf_training.zeroshot import check_template


logger = logging.get_logger(__name__)

# What this script writes, recorded in --output_dir's manifest (cocoop_hf_training/outputs.py): its own earlier results are
# replaced only with --overwrite_output_dir, a user's file of such a name never.
OUTPUT_FILES = (RESULTS_NAME, TABLE_NAME, PLOT_NAME)
TRANSFER_OUTPUTS = re.compile(r"^(results\.(json|md|png)|tmp-.*)$")
PRODUCER = "evaluate_transfer"
# The names its manifest may prove its own (and the targets.json a transfer grid writes there); never any other.
register_outputs(PRODUCER, re.compile(r"^(results\.(json|md|png)|targets\.json|tmp-.*)$"))


def parse_args(argv=None):
    """(model, transfer) arguments from flags, or from a JSON/YAML file first and flags overriding it."""
    parser = build_evaluate_parser(description=__doc__)
    model_args, transfer_args = parse_config_and_flags(parser, argv)
    if transfer_args.targets is None or transfer_args.output_dir is None:
        raise ValueError("pass --targets (a YAML/JSON file listing the target datasets) and --output_dir.")
    if transfer_args.mixed_precision not in ("no", "fp16", "bf16"):
        raise ValueError(f"--mixed_precision must be 'no', 'fp16' or 'bf16', got {transfer_args.mixed_precision!r}.")
    if model_args.model_name_or_path is None and model_args.method != "zeroshot":
        raise ValueError(
            f"--method {model_args.method} needs a trained model: pass --model_name_or_path (or --method zeroshot)."
        )
    if transfer_args.prompt_template is not None:
        check_template(transfer_args.prompt_template)
        if model_args.model_name_or_path is not None or model_args.method != "zeroshot":
            raise ValueError(
                "--prompt_template is the hand-written prompt of the zero-shot backbone (--method zeroshot with "
                "--clip_model_name_or_path); a trained model (--model_name_or_path) brings its own prompts: drop it."
            )
    return model_args, transfer_args


def zero_shot_template(model_args: ModelArguments, args, backbone: str) -> tuple[str | None, str | None]:
    """
    (template, where it comes from) when --method zeroshot scores the plain backbone with a template, as run_cocoop.py
    does: the given --prompt_template, else on SigLIP / SigLIP 2 the backbone's own template (`backbones_cocoop`: the
    one it was trained and documented with); (None, None) for the CoOp-packaged zero-shot model (CLIP family without
    --prompt_template, as before) and for a trained model.
    """
    if model_args.model_name_or_path or model_args.method != "zeroshot":
        return None, None
    if args.prompt_template is not None:
        return args.prompt_template, "--prompt_template"
    row = backbone_of(backbone)
    if not row.causal_text:
        return row.zero_shot_template, f"the {row.display_name} template (its model card; transformers' pipeline)"
    return None, None


def read_targets(path) -> list[DataArguments]:
    """The targets of a --targets file; relative paths in an entry are relative to the file's folder."""
    content = read_structured_file(path, "--targets file")
    targets = content.get("targets") if isinstance(content, dict) else content
    if not isinstance(targets, list) or not targets:
        raise ValueError(f"{path} must hold a non-empty list `targets:` of dataset options.")
    parsed, names = [], set()
    for index, entry in enumerate(targets):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: target {index} must be a mapping of data options, got {entry!r}.")
        entry = resolve_file_paths(entry, path, f"--targets file {path}: target {index}")
        options = [item.name for item in dataclasses.fields(DataArguments)]
        unknown = [str(name) for name in entry if name not in options]
        if unknown:
            raise ValueError(
                f"{path}: target {index}: unknown data option {describe_value(unknown[0], 60, typed=False)}"
                f"{did_you_mean(unknown[:1], options)}; a target takes the data options of `cocoop-hf train --help`."
            )
        target = DataArguments(**{"num_shots": None, "protocol": "all", **entry})
        if target.display_name in names:
            raise ValueError(f"{path}: two targets are named {target.display_name!r}: set dataset_display_name.")
        names.add(target.display_name)
        parsed.append(target)
    return parsed


def trained_source_dataset(model_name_or_path: str | None, given: str | None) -> str | None:
    """
    The dataset a trained model folder was trained on, as the results.json run_cocoop wrote there names it (None
    when the folder has none, e.g. a Hub id or a folder saved elsewhere); `given` (--source_dataset) must agree.
    """
    found = None
    results = Path(model_name_or_path) / RESULTS_NAME if model_name_or_path else None
    if results is not None and results.is_file():
        try:
            runs = json.loads(results.read_text(encoding="utf-8")).get("runs") or []
        except (ValueError, AttributeError):
            runs = []
        datasets = sorted({run.get("dataset") for run in runs if isinstance(run, dict) and run.get("dataset")})
        if len(datasets) == 1:
            found = datasets[0]
    if given is not None and found is not None and given != found:
        raise ValueError(
            f"--source_dataset {given!r}, but {results} says the model was trained on {found!r}: drop "
            "--source_dataset (it is read from the folder) or evaluate the model you meant."
        )
    return found if found is not None else given


def clip_record(model, model_args: ModelArguments) -> dict:
    """The CLIP the evaluated model actually runs on: a trained model's own (its config), else the one requested."""
    if model_args.model_name_or_path:
        name, revision = model.config.clip_name_or_path, model.config.clip_revision
    else:
        name, revision = model_args.clip_model_name_or_path, model_args.clip_revision
    return {"name_or_path": name, "revision": revision, "random_weights": has_random_weights(model, model_args)}


# ModelArguments fields that a saved model (--model_name_or_path) brings itself: the flags' values play no part.
SAVED_MODEL_FIELDS = (
    "clip_model_name_or_path",
    "clip_revision",
    "method",
    "kgcoop_weight",
    "class_specific_context",
    "class_token_position",
    "n_ctx",
    "ctx_init",
    "meta_net_reduction",
)


def model_arguments_record(model_args: ModelArguments, model) -> dict:
    """
    The model arguments as results.json records them. With --model_name_or_path, the fields the saved model brings
    (its CLIP, method and prompt options) hold the loaded model's values, not the unused defaults of the flags, and
    `from_saved_model` names them.
    """
    record = asdict(model_args)
    if not model_args.model_name_or_path:
        return record
    config = model.config
    record.update(
        clip_model_name_or_path=config.clip_name_or_path,
        clip_revision=config.clip_revision,
        method=saved_method(config),
        n_ctx=config.n_ctx,
        ctx_init=config.ctx_init,
        meta_net_reduction=config.meta_net_reduction,
    )
    options = method_options(config)
    for name in ("kgcoop_weight", "class_specific_context", "class_token_position"):
        record[name] = options[name]
    record["from_saved_model"] = list(SAVED_MODEL_FIELDS)
    return record


def main(argv=None) -> dict:
    import logging as std_logging

    from accelerate import Accelerator

    model_args, args = parse_args(argv)
    output_dir = Path(args.output_dir)
    # Results written into the model's folder would replace the trained run's own results.json, card and table.
    check_separate_folders(
        output_dir,
        {
            "--model_name_or_path": model_args.model_name_or_path,
            "--clip_model_name_or_path": model_args.clip_model_name_or_path,
        },
    )
    # The targets file may lie in --output_dir (the transfer grid writes each cell's there): read, kept, never in the way.
    targets_file = Path(args.targets).resolve()
    reading = (targets_file.name,) if targets_file.parent == output_dir.resolve() else ()
    previous = [name for name in OUTPUT_FILES if (output_dir / name).exists() and owns(output_dir, name)]
    if previous and not args.overwrite_output_dir:
        raise ValueError(
            f"--output_dir {output_dir} holds previous results {previous}: pass --overwrite_output_dir to replace "
            "them, or another --output_dir."
        )
    # Checked now, changing nothing: a file of an output's name this script did not write is refused, never replaced;
    # other files are kept. The previous results are deleted only once the new ones are ready to be written.
    survey_output_dir(output_dir, True, False, TRANSFER_OUTPUTS, PRODUCER, reading)
    targets = read_targets(args.targets)
    source_dataset = trained_source_dataset(model_args.model_name_or_path, args.source_dataset)
    # Fitted to this machine (workers <= cores, no fp16 on CPU), said once; results.json records what ran.
    args.dataloader_num_workers = capped_workers(args.dataloader_num_workers)
    args.mixed_precision = fit_mixed_precision(args.mixed_precision, args.use_cpu)
    accelerator = Accelerator(cpu=args.use_cpu, mixed_precision=args.mixed_precision)
    setup_logging(logger.name, std_logging.INFO if accelerator.is_main_process else std_logging.WARNING)
    source = model_args.model_name_or_path or model_args.clip_model_name_or_path
    backbone = backbone_type(model_args)
    image_processor = load_image_processor(source, backbone)
    template, template_source = zero_shot_template(model_args, args, backbone)

    # Load and check every target before the model runs: a bad target fails fast, not after hours of evaluation.
    eval_sets, tasks_of = {}, {}
    for target in targets:
        _, eval_transform = build_transforms(image_processor, target.image_size)
        data, class_names = load_splits(target, [target.eval_split], cache_dir=model_args.cache_dir, backbone=backbone)
        full = data[target.eval_split]
        # A base_to_new target is scored on its two halves as run_cocoop splits them (official subsample_classes,
        # over the whole class list: a class without images in this split does not shift the halves).
        if target.protocol == "base_to_new":
            relabels = protocol_relabels(len(class_names), "base_to_new")
            names = class_names_per_task(class_names, relabels)
        else:
            relabels, names = {"all": None}, {"all": class_names}  # every class, labels as loaded
        tasks_of[target.display_name] = tuple(relabels)
        for task, relabel in relabels.items():
            dataset = full if relabel is None else select_labels(full, relabel)[0]
            if target.max_eval_samples is not None and len(dataset) > target.max_eval_samples:
                dataset = dataset.shuffle(seed=args.seed).select(range(target.max_eval_samples))
            if target.verify_images == "all":
                dataset, _ = drop_or_raise_corrupt(dataset, target.display_name, target.skip_corrupt_images)
            key = target.display_name if task == "all" else f"{target.display_name} ({task})"
            eval_sets[key] = (dataset.with_transform(ImageTransform(eval_transform, relabel)), names[task])

    first_names = next(iter(eval_sets.values()))[1]
    if template is not None:  # the plain backbone + a template (cocoop_hf_training/zeroshot.py): no prompt options
        shown = backbone_of(backbone).display_name
        logger.info("Zero-shot %s with the prompt template %r (%s).", shown, template, template_source)
        model = build_zero_shot_clip(model_args, template, first_names).to(accelerator.device)
    else:
        model = build_model(model_args, first_names, args.seed).to(accelerator.device)
    method = model_args.method
    if model_args.model_name_or_path:
        method = saved_method(model.config)  # what the loaded model is, whatever --method says
    # What the model is, as its config says: a saved model keeps the options it was trained with.
    options = method_options(model.config) if template is None else None
    if options is not None and options["kgcoop_weight"] > 0:
        options["kgcoop_template_source"] = "the saved model's config"
    evaluation = evaluate_sets(
        model, eval_sets, accelerator, args.per_device_eval_batch_size, args.dataloader_num_workers, load_metrics()
    )
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return {}
    runs = []
    for name, tasks in tasks_of.items():
        metrics = {task: evaluation[name if task == "all" else f"{name} ({task})"] for task in tasks}
        run = {"dataset": name, "method": method, "seed": args.seed, "num_shots": None, "metrics": metrics}
        if options is not None:
            run["method_options"] = dict(options)
        if template is not None:
            run["prompt_template"] = template
        if "base" in metrics and "new" in metrics:
            run["H"] = harmonic_mean(metrics["base"]["accuracy"], metrics["new"]["accuracy"])
        runs.append(run)
    note = random_weights_note(backbone) if has_random_weights(model, model_args) else None
    extra = {
        "world_size": accelerator.num_processes,
        "protocol": "transfer",
        "source_dataset": source_dataset,
        "model": model_args.model_name_or_path or model_args.clip_model_name_or_path,
        "clip": clip_record(model, model_args),
        **({"backbone": backbone} if backbone != "clip" else {}),  # CLIP's results read as they always did
        **({"zero_shot": {"prompt_template": template, "source": template_source}} if template is not None else {}),
        **({"method_options": options} if options is not None else {}),
        "arguments": {"model": model_arguments_record(model_args, model), "transfer": asdict(args)},
    }
    prepare_output_dir(output_dir, True, False, TRANSFER_OUTPUTS, PRODUCER, reading, name_others=False)
    content = write_report(output_dir, runs, note=note, extra=extra)
    finish_output_dir(output_dir)
    if note:
        print("\n" + "=" * 100 + f"\n{note}\n" + "=" * 100, flush=True)
    print((output_dir / TABLE_NAME).read_text(), flush=True)
    folder = output_dir.resolve()
    logger.info("Done: the outputs are in %s (results table: %s).", folder, folder / TABLE_NAME)
    return content


if __name__ == "__main__":
    run_script(main)
