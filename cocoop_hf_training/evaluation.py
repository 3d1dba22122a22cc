"""Evaluation of one model over several class sets: image features once per dataset, predictions per class set,
accuracy and macro-F1 (percent), and the base-to-new harmonic mean H.

Official reference: Dassl `SimpleTrainer.test` + `evaluation/evaluator.py` `Classification` (accuracy and macro-F1
in percent); CoCoOp paper, Table 1 (H = 2 * base * new / (base + new), of the accuracies in percent).

Image features are kept across calls (every epoch's evaluation and the final one) under what they were computed
with (`ImageFeatureSource`): the dataset, the backbone and, where the vision tower reads learned prompts (IVLP,
MaPLe, PromptSRC: `config.prompt_depth_vision > 0`), a digest of the prompt learner's tensors, so that features of
other prompts are never reused.
"""

import hashlib
import random
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ImageFeatureSource:
    """
    What a dataset's image features were computed with; a cached entry is reused only for an equal source.
    `backbone_id` / `dataset_id` are `id()`s, unique while the cache entry holds the objects themselves (it does);
    `backbone_dtype` changes with `cast_frozen_clip`; `vision_prompts_digest` is None for a model whose vision tower
    reads no learned prompts (CoOp, CoCoOp, KgCoOp, zero-shot: their image features stay reused across epochs).
    """

    dataset_id: int
    backbone_id: int
    backbone_dtype: str
    vision_prompts_digest: str | None


@dataclass(frozen=True)
class CachedImageFeatures:
    """One dataset's features and labels, with the objects whose ids its source names (kept alive, so never reused)."""

    dataset: object
    backbone: object
    embeds: torch.Tensor
    labels: torch.Tensor


def backbone_of(model) -> torch.nn.Module:
    """The frozen dual encoder a model's image features come from (CoCoOpModel and ZeroShotCLIP: `.clip`)."""
    return getattr(model, "clip", model)


def tensors_digest(module: torch.nn.Module) -> str:
    """BLAKE2b of every tensor of `module`'s state dict: names, dtypes, shapes and bytes (bit-exact)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # a byte view: also bf16
    return digest.hexdigest()


def image_feature_source(model, dataset) -> ImageFeatureSource:
    """
    What `model.get_image_features` on `dataset` depends on. With deep vision prompts (IVLP, MaPLe, PromptSRC:
    `config.prompt_depth_vision > 0`) the prompt learner's tensors enter the vision tower (official
    multimodal-prompt-learning `clip/model.py`: `VisionTransformer.forward` appends `VPT`, `ResidualAttentionBlock_IVLP`
    swaps in `VPT_shallow`; `VisionTransformer_MaPLe.forward` / `ResidualAttentionBlock_MaPLe` the projected prompts),
    so they change with every optimiser step and with PromptSRC's final Gaussian aggregation: their digest is part of
    the source. MaPLe's vision prompts are projections of its text prompts: the whole prompt learner is digested.
    """
    backbone = backbone_of(model)
    first = next(backbone.parameters(), None)
    digest = None
    if (getattr(model.config, "prompt_depth_vision", 0) or 0) > 0:
        prompt_learner = getattr(model, "prompt_learner", None)
        if not isinstance(prompt_learner, torch.nn.Module):
            raise ValueError(
                f"{type(model).__name__} has config.prompt_depth_vision={model.config.prompt_depth_vision} but no "
                "`prompt_learner` module: its image features depend on vision prompts this evaluation cannot see."
            )
        digest = tensors_digest(prompt_learner)
    return ImageFeatureSource(id(dataset), id(backbone), str(None if first is None else first.dtype), digest)


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
    object share its features; `features` (a dict, filled here: `ImageFeatureSource` -> `CachedImageFeatures`) keeps
    them across calls, reused only for the same dataset, backbone and, where the vision tower reads learned prompts,
    the same prompt learner tensors (`image_feature_source`); a dataset keeps the features of its latest source only.
    The model comes back as it went in (class set, prompts, mode).
    """
    metrics = metrics if metrics is not None else load_metrics()
    was_training = model.training
    model.eval()
    features = features if features is not None else {}
    results = {}
    try:
        for name, (dataset, class_names) in eval_sets.items():
            embeds, labels = cached_image_features(
                model, dataset, features, accelerator, batch_size, num_workers, name
            )
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


def cached_image_features(model, dataset, features: dict, accelerator, batch_size, num_workers, name: str):
    """
    (embeds, labels) of `dataset` from `features` where computed with what `model` has now, else computed and stored
    in place of that dataset's older entries (bounded: one entry per dataset). Every process reaches the same
    decision: the prompt learner is the same on all of them (DDP keeps it in sync), and the extraction gathers.
    """
    source = image_feature_source(model, dataset)
    entry = features.get(source)
    if entry is None:
        for stale in [key for key in features if key.dataset_id == source.dataset_id]:
            del features[stale]
        if source.vision_prompts_digest is not None:
            logger.info("%s: image features for prompts %s", name, source.vision_prompts_digest[:12])
        embeds, labels = extract_image_features(
            model, dataset, accelerator, batch_size, num_workers, f"Encoding {name}"
        )
        entry = features[source] = CachedImageFeatures(dataset, backbone_of(model), embeds, labels)
    return entry.embeds, entry.labels


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
    Image features are computed once and reused every epoch where they cannot have changed (frozen CLIP, no vision
    prompts); with vision prompts (IVLP, MaPLe, PromptSRC) they are computed again after every epoch
    (`cached_image_features`). The random state of every generator is restored afterwards: a run with per-epoch
    evaluation trains exactly as one without.
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
