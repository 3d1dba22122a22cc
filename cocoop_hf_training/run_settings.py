"""
The settings that define a training run, recorded in each checkpoint and compared when a run resumes from one.

A checkpoint continues one run: resumed with another seed, shot count, method, learning rate, prompt layout, dataset
or CLIP, the training would go on silently and the results would be labelled with the new settings. Each checkpoint's
`checkpoint_complete.json` therefore records `run_settings` (flag -> value), and a resume compares every recorded
setting with the run's own: any difference is refused, naming each setting with both values.

Recorded: what changes what is trained. Not recorded: what may differ on a resume without changing the training
(--output_dir, logging, saving, evaluation batch size and evaluation options, data-loader workers, --seeds_note,
--save_adapter_only, --overwrite_output_dir).
"""

import enum
import json
import os
from pathlib import Path

from cocoop_hf_training.model_arguments import DEEP_PROMPT_FIELDS, PROMPTSRC_FIELDS
from cocoop_hf_training.run_options import gpa_values


RUN_SETTINGS_KEY = "run_settings"  # the key in checkpoint_complete.json
DEEP_PROMPT_SETTINGS = DEEP_PROMPT_FIELDS + PROMPTSRC_FIELDS
_FORMAT = 1


def _local(path):
    """A local file or folder as an absolute path (a resume from another working folder names the same one)."""
    return str(Path(path).resolve()) if path and os.path.exists(path) else path


def _plain(value):
    """JSON data as the marker holds it: enums as their value, tuples as lists (compared after a JSON round trip)."""
    if isinstance(value, enum.Enum):
        value = value.value
    return json.loads(json.dumps(value, default=str))


def run_settings(model_args, data_args, training_args, run_args) -> dict:
    """Flag -> value of every setting that defines the training of a run_cocoop.py run (see the module docstring)."""
    from cocoop_hf_training.fewshot import dataset_identity

    method_options = model_args.method_config()
    settings = {
        "format": _FORMAT,
        # which model is trained, from what
        "--clip_model_name_or_path": _local(model_args.clip_model_name_or_path),
        "--clip_revision": model_args.clip_revision,
        "--model_name_or_path": _local(model_args.model_name_or_path),
        "--random_init_clip": model_args.random_init_clip,
        "--random_init_seed": model_args.random_init_seed,
        "--clip_dtype": model_args.clip_dtype,
        # the method and its options (as the model config receives them: defaults resolved)
        "--method": model_args.method,
        "--n_ctx": model_args.n_ctx,
        "--ctx_init": model_args.ctx_init,
        "--meta_net_reduction": model_args.meta_net_reduction,
        "--class_token_position": method_options["class_token_position"],
        "--class_specific_context": method_options["class_specific_context"],
        "--kgcoop_weight": method_options["kgcoop_weight"],
        "--prompt_template": run_args.prompt_template,
        # the data: which images, which classes, which few-shot draw
        "dataset": dataset_identity(data_args),
        "--train_split": data_args.train_split,
        "--image_column": data_args.image_column,
        "--label_column": data_args.label_column,
        "--class_names_file": _local(data_args.class_names_file),
        "--image_root": _local(data_args.image_root),
        "--protocol": data_args.protocol,
        "--num_shots": data_args.num_shots,
        "--fewshot_file": _local(data_args.fewshot_file),
        "--image_size": data_args.image_size,
        "--verify_images": data_args.verify_images,
        "--skip_corrupt_images": data_args.skip_corrupt_images,
        "--seed": training_args.seed,
        "--data_seed": training_args.data_seed,
        # the optimisation
        "--learning_rate": training_args.learning_rate,
        "--weight_decay": training_args.weight_decay,
        "--sgd_momentum": run_args.sgd_momentum,
        "--lr_schedule": run_args.lr_schedule,
        "--warmup_epochs": run_args.warmup_epochs,
        "--warmup_lr": run_args.warmup_lr,
        "--lr_scheduler_type": training_args.lr_scheduler_type,
        "--warmup_steps": training_args.warmup_steps,
        "--num_train_epochs": training_args.num_train_epochs,
        "--max_steps": training_args.max_steps,
        "--per_device_train_batch_size": training_args.per_device_train_batch_size,
        "--gradient_accumulation_steps": training_args.gradient_accumulation_steps,
        # the batch per optimizer step is per-device batch x processes x accumulation
        "number of processes (world size)": training_args.world_size,
        "--max_grad_norm": training_args.max_grad_norm,
        "--label_smoothing_factor": training_args.label_smoothing_factor,
        "--fp16": training_args.fp16,
        "--bf16": training_args.bf16,
    }
    # The deep-prompt options (IVLP / MaPLe / PromptSRC) and PromptSRC's prompt aggregation, recorded only for the
    # methods that have them: a checkpoint of another method, written before they existed, still resumes.
    for name in DEEP_PROMPT_SETTINGS:
        if name in method_options:
            settings[f"--{name}"] = method_options[name]
    if model_args.method == "promptsrc":  # the values the run uses: the defaults spelt out are the same run
        settings["--gpa_mean"], settings["--gpa_std"] = gpa_values(run_args)
    return {name: _plain(value) for name, value in settings.items()}


def _shown(value) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value, sort_keys=True)


def check_resume_settings(checkpoint, marker: dict, settings: dict) -> None:
    """
    Refuse to resume from `checkpoint` (whose `checkpoint_complete.json` content is `marker`) unless it records the
    very `settings` of this run; a checkpoint without the record (an earlier version wrote it) is refused too: whether
    it is this run's cannot be checked.
    """
    recorded = marker.get(RUN_SETTINGS_KEY) if isinstance(marker, dict) else None
    start_anew = (
        "Start a new run instead: another --output_dir, or --overwrite_output_dir without --resume_from_checkpoint."
    )
    if not isinstance(recorded, dict):
        raise ValueError(
            f"cannot resume from {checkpoint}: its checkpoint_complete.json records no `{RUN_SETTINGS_KEY}` (written "
            "by an earlier version of this script), so whether this run continues it with the same seed, shots, "
            f"method, learning rate and options cannot be checked. {start_anew}"
        )
    settings = _plain(settings)
    # A setting only one side records (another version of this script) differs too: it cannot be checked.
    names = list(settings) + [name for name in recorded if name not in settings]
    differences = [
        f"{name}: the checkpoint was trained with {_shown(recorded.get(name))}, this run asks for "
        f"{_shown(settings.get(name))}"
        for name in names
        if recorded.get(name) != settings.get(name)
    ]
    if differences:
        raise ValueError(
            f"cannot resume from {checkpoint}: it belongs to a run with other settings: {'; '.join(differences)}. "
            "Resume with the checkpoint's settings, or start a new run: another --output_dir, or "
            "--overwrite_output_dir without --resume_from_checkpoint."
        )
