"""cocoop_hf_training/evaluation.py: features once, predictions per class set without changing the model, metrics, H."""

import copy
from pathlib import Path

import pytest
import torch

from cocoop_hf_training.cli import ModelArguments
from cocoop_hf_training.evaluation import evaluate_sets, extract_image_features, harmonic_mean, load_metrics, predict
from cocoop_hf_training.modeling_setup import build_model

from .conftest import assert_same_held_state, held_state


REPO = Path(__file__).resolve().parent.parent
TINY_CLIP = REPO / "cocoop_hf_training" / "demo" / "tiny-clip"
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def model():
    args = ModelArguments(clip_model_name_or_path=str(TINY_CLIP), random_init_clip=True)
    return build_model(args, CIFAR10[:5], seed=1).eval()


@pytest.fixture(scope="module")
def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def image_set(count: int, num_classes: int, seed: int):
    """A list of {pixel_values, labels}: a map-style dataset the evaluation's DataLoader reads."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(count, 3, 32, 32, generator=generator)
    return [{"pixel_values": pixels[i], "labels": i % num_classes} for i in range(count)]


def test_evaluation_over_other_class_sets_leaves_the_model_unchanged(model, accelerator):
    before = held_state(model)
    dataset = image_set(12, 5, seed=0)
    eval_sets = {"base": (dataset, CIFAR10[:5]), "new": (dataset, CIFAR10[5:]), "all": (dataset, CIFAR10)}
    results = evaluate_sets(model, eval_sets, accelerator, batch_size=5, num_workers=0)
    assert_same_held_state(before, held_state(model))
    assert results["all"]["num_classes"] == 10 and results["new"]["num_samples"] == 12
    # Also in training mode: evaluation runs in eval mode and gives the mode back.
    model.train()
    try:
        training_before = held_state(model)
        evaluate_sets(model, {"new": (dataset, CIFAR10[5:])}, accelerator, batch_size=5, num_workers=0)
        assert_same_held_state(training_before, held_state(model))
    finally:
        model.eval()


def test_predictions_equal_the_model_holding_that_class_set(model, accelerator):
    """Prompts passed per call give what a model holding that class set gives (same computation: exact)."""
    dataset = image_set(10, 5, seed=1)
    embeds, labels = extract_image_features(model, dataset, accelerator, 4, 0, "features")
    assert embeds.shape[0] == 10 and labels.tolist() == [i % 5 for i in range(10)]
    predictions = predict(model, embeds, CIFAR10[5:], accelerator, batch_size=3, desc="predict")
    holding = copy.deepcopy(model)
    holding.set_class_names(CIFAR10[5:])
    with torch.no_grad():  # the same batches of 3 as `predict`: the same computation, so exactly equal
        expected = torch.cat([holding(image_embeds=embeds[i : i + 3]).logits.argmax(-1) for i in range(0, 10, 3)])
    assert torch.equal(predictions, expected)
    assert model.class_names == CIFAR10[:5]


def test_features_are_computed_once_per_dataset(model, accelerator, monkeypatch):
    from cocoop_hf_training import evaluation

    calls = []
    original = evaluation.extract_image_features

    def counting(model, dataset, *args, **kwargs):
        calls.append(id(dataset))
        return original(model, dataset, *args, **kwargs)

    monkeypatch.setattr(evaluation, "extract_image_features", counting)
    shared, other = image_set(6, 5, seed=2), image_set(4, 5, seed=3)
    eval_sets = {"base": (shared, CIFAR10[:5]), "new": (shared, CIFAR10[5:]), "other": (other, CIFAR10[:5])}
    evaluate_sets(model, eval_sets, accelerator, batch_size=8, num_workers=0)
    assert calls == [id(shared), id(other)]


def test_harmonic_mean_is_in_the_unit_of_the_accuracies():
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(0.8, 0.6) == pytest.approx(harmonic_mean(80.0, 60.0) / 100)


def test_metric_is_in_percent():
    (metric,) = load_metrics()
    assert metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])["accuracy"] == pytest.approx(75.0)


def test_an_empty_evaluation_set_is_named(model, accelerator):
    with pytest.raises(ValueError, match="Encoding empty: the evaluation set holds no images"):
        extract_image_features(model, [], accelerator, batch_size=4, num_workers=0, desc="Encoding empty")
