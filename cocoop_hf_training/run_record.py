"""
What results.json and the model card say of one run (`cocoop-hf train`): its entry (dataset, method, seed, shots,
metrics, H) and its recipe as it ran (precision and data-loader workers after the machine's limits were applied).
`run` is run_cocoop's Run record (its arguments and resolved method).
"""

from cocoop_hf.backbones_cocoop import backbone_of
from cocoop_hf_training.evaluation import harmonic_mean


def run_result(run, method: str, evaluation: dict, options: dict | None, epoch_evaluation) -> dict:
    """The run's entry of results.json "runs": what ran on which data, and its metrics (H with base and new)."""
    result = {
        "dataset": run.data_args.display_name,
        "method": method,
        "seed": run.training_args.seed,
        "num_shots": run.data_args.num_shots if run.training_args.do_train else None,
        "metrics": evaluation,
    }
    if run.method.zero_shot_template is not None:
        result["prompt_template"] = run.method.zero_shot_template
    if options is not None:
        result["method_options"] = options
    if epoch_evaluation is not None:
        result["per_epoch"] = epoch_evaluation.history
    if "base" in evaluation and "new" in evaluation:
        result["H"] = harmonic_mean(evaluation["base"]["accuracy"], evaluation["new"]["accuracy"])
    return result


def run_recipe(run, model, method: str, options: dict | None) -> dict:
    """The recipe as results.json and the model card show it."""
    training_args, run_args, dtype = run.training_args, run.run_args, next(model.clip.parameters()).dtype
    recipe = {
        "shots": run.data_args.num_shots,
        "seed": training_args.seed,
        "epochs": training_args.num_train_epochs if training_args.do_train else 0,
        "lr": training_args.learning_rate,
        "batch_size": training_args.per_device_train_batch_size * training_args.world_size,
        "method": method,
        "lr schedule": f"{run_args.lr_schedule} (warmup {run_args.warmup_epochs} epoch at {run_args.warmup_lr:g})",
        "optimizer": f"SGD momentum {run_args.sgd_momentum}, weight decay {training_args.weight_decay:g}",
        # What ran: fp16 is turned off on CPU and workers capped to the cores before the run (device_settings.py).
        "precision": "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32",
        "data-loader workers": training_args.dataloader_num_workers,
        f"{backbone_of(model.clip.config).display_name} weights": str(dtype).removeprefix("torch."),
    }
    if model.clip.config.model_type != "clip":  # CLIP runs keep the recipe they always had
        recipe["backbone"] = model.clip.config.model_type
    if run.method.zero_shot_template is not None:
        recipe["prompt template"] = run.method.zero_shot_template
    if options is not None:
        recipe["class token position"] = options["class_token_position"]
        recipe["class-specific context"] = options["class_specific_context"]
        if options["kgcoop_weight"] > 0:
            recipe["KgCoOp weight"] = options["kgcoop_weight"]
            recipe["KgCoOp template"] = options["kgcoop_template"]
        if "prompt_depth_text" in options:  # IVLP / MaPLe / PromptSRC
            recipe["prompt depth (text, vision)"] = [options["prompt_depth_text"], options["prompt_depth_vision"]]
            recipe["vision prompts"] = (
                "projected from the text prompts" if options["vision_prompts_from_text"] else options["n_ctx_vision"]
            )
        if "promptsrc_text_weight" in options:
            recipe["PromptSRC weights (text, image, logits)"] = [
                options[name]
                for name in ("promptsrc_text_weight", "promptsrc_image_weight", "promptsrc_logits_weight")
            ]
    if run.method.gpa_mean is not None:
        recipe["Gaussian prompt aggregation"] = f"mean {run.method.gpa_mean:g}, std {run.method.gpa_std:g}"
    return recipe
