"""Evaluation of one model over several class sets: image features once per dataset, predictions per class set,
accuracy and macro-F1 (percent), and the base-to-new harmonic mean H.

Official reference: Dassl `SimpleTrainer.test` + `evaluation/evaluator.py` `Classification` (accuracy and macro-F1
in percent); CoCoOp paper, Table 1 (H = 2 * base * new / (base + new), of the accuracies in percent).
"""

import random
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback
from transformers.utils import logging


logger = logging.get_logger(__name__)

METRICS_DIR = Path(__file__).resolve().parent / "metrics"


def load_metrics():
    """Accuracy and macro-F1 (percent) as one local `evaluate` module (shipped in cocoop_hf_training/metrics: no Hub access)."""
    import evaluate

    return [evaluate.load(str(METRICS_DIR / "classification"))]


def harmonic_mean(base: float, new: float) -> float:
    """H = 2BN / (B + N), the base-to-new summary of the CoCoOp paper, in the unit of its inputs (percent here)."""
    return 0.0 if base + new == 0 else 2 * base * new / (base + new)


@torch.no_grad()
def extract_image_features(model, dataset, accelerator, batch_size: int, num_workers: int, desc: str):
    """Normalised image features and labels of `dataset`, computed once (sharded over processes, then gathered)."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import default_data_collator

    if len(dataset) == 0:
        raise ValueError(
            f"{desc}: the evaluation set holds no images (check the split, its filters and max_eval_samples)."
        )
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=default_data_collator)
    loader = accelerator.prepare_data_loader(loader)
    features, labels = [], []
    for batch in tqdm(loader, desc=desc, disable=not accelerator.is_local_main_process):
        with accelerator.autocast():
            # SigLIP 2's patch inputs (pixel_attention_mask, spatial_shapes) go with its pixels; no other has any.
            vision_inputs = {key: value for key, value in batch.items() if key not in ("pixel_values", "labels")}
            embeds = model.get_image_features(batch["pixel_values"], **vision_inputs)
        embeds, batch_labels = accelerator.gather_for_metrics((embeds.float().contiguous(), batch["labels"]))
        features.append(embeds.cpu())
        labels.append(batch_labels.cpu())
    return torch.cat(features), torch.cat(labels)


@torch.no_grad()
def predict(model, image_embeds, class_names, accelerator, batch_size: int, desc: str) -> torch.Tensor:
    """
    Predicted class per image feature among `class_names` (images sharded over processes, then gathered). The
    prompts of the class set are an input of each forward call: the model's own class set is left as it is.
    """
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    prompts = model.class_prompts(list(class_names))
    prompts = {name: tensor.to(accelerator.device) for name, tensor in prompts.items()}
    mine = list(range(accelerator.process_index, len(image_embeds), accelerator.num_processes))
    results = []
    starts = range(0, len(mine), batch_size)
    for start in tqdm(starts, desc=desc, disable=not accelerator.is_local_main_process):
        index = mine[start : start + batch_size]
        with accelerator.autocast():
            logits = model(image_embeds=image_embeds[index].to(accelerator.device), **prompts).logits
        results.extend(zip(index, logits.argmax(-1).tolist(), strict=True))
    if accelerator.num_processes > 1:
        results = gather_object(results)
    predictions = torch.empty(len(image_embeds), dtype=torch.long)
    for index, prediction in results:
        predictions[index] = prediction
    return predictions


def evaluate_sets(
    model, eval_sets: dict, accelerator, batch_size: int, num_workers: int, metrics=None, features=None
) -> dict:
    """
    `eval_sets`: name -> (dataset with the eval transform, class names). Returns name -> metrics (accuracy and
    macro_f1 in percent, num_samples, num_classes). The images of a set are encoded once; sets that share a dataset
    object share its features; `features` (a dict, filled here) keeps them across calls: the CLIP is frozen, so an
    image's feature never changes during training. The model comes back as it went in (class set, prompts, mode).
    """
    metrics = metrics if metrics is not None else load_metrics()
    was_training = model.training
    model.eval()
    features = features if features is not None else {}
    results = {}
    try:
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
    finally:
        model.train(was_training)
    return results


def base_new_summary(evaluation: dict) -> dict:
    """Accuracy per class set and, with both base and new, their harmonic mean H (all in percent)."""
    summary = {f"{name}_accuracy": scores["accuracy"] for name, scores in evaluation.items()}
    if "base" in evaluation and "new" in evaluation:
        summary["H"] = harmonic_mean(evaluation["base"]["accuracy"], evaluation["new"]["accuracy"])
    return summary


class EpochEvaluation(TrainerCallback):
    """
    Base and new accuracy (and H) after every training epoch, logged through `Trainer.log` so that `--report_to`
    integrations (tensorboard, wandb, ...) and `trainer_state.json` get them; kept in `history` for results.json.
    Image features are computed once (frozen CLIP) and reused every epoch. The random state of every generator is
    restored afterwards: a run with per-epoch evaluation trains exactly as one without.
    """

    def __init__(self, trainer, eval_sets: dict, batch_size: int, num_workers: int, metrics=None):
        self.trainer = trainer
        self.eval_sets = eval_sets
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.metrics = metrics if metrics is not None else load_metrics()
        self.features = {}
        self.history = []

    def on_epoch_end(self, args, state, control, **kwargs):
        accelerator = self.trainer.accelerator
        model = accelerator.unwrap_model(self.trainer.model)
        python_state, numpy_state = random.getstate(), np.random.get_state()
        cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=cuda_devices):
            evaluation = evaluate_sets(
                model, self.eval_sets, accelerator, self.batch_size, self.num_workers, self.metrics, self.features
            )
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        summary = {f"eval_{key}": value for key, value in base_new_summary(evaluation).items()}
        self.history.append({"epoch": round(state.epoch or 0.0, 4), **summary})
        self.trainer.log(summary)
        return control
