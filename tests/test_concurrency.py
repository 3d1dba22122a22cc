"""
One model, many callers: class prompts are an input of the call, so threads with different class sets get their own
answers and the model never changes. Real CIFAR-10 images (the demo's test split shipped in the repo).
"""

import io
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from transformers import pipeline

from cocoop_hf import CoCoOpModel, CoCoOpProcessor

from .conftest import CLASS_NAMES, NEW_CLASS_NAMES, assert_same_held_state, held_state


CIFAR10_DEMO = Path(__file__).resolve().parents[1] / "cocoop_hf_training" / "demo" / "cifar10_demo" / "test.parquet"
# Four callers, four label sets of different sizes and prompt lengths (one of them the trained classes).
LABEL_SETS = [
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    ["bird", "fish"],
    NEW_CLASS_NAMES,
    CLASS_NAMES,
]
CALLS_PER_THREAD = 12
SCORE_TOL = 1e-5  # absolute, on softmax scores in [0, 1]; the same fp32 computation with any thread interleaving


def cifar_images(count: int) -> list[Image.Image]:
    rows = pq.read_table(CIFAR10_DEMO).slice(0, count).to_pylist()
    return [Image.open(io.BytesIO(row["img"]["bytes"])).convert("RGB") for row in rows]


def run_threads(work, count: int) -> list:
    """Run `work(thread_index)` in `count` threads started together; return their results (re-raise errors)."""
    barrier = threading.Barrier(count)
    results, errors = [None] * count, []

    def target(index):
        try:
            barrier.wait()
            results[index] = work(index)
        except BaseException as error:  # noqa: BLE001  (reported below, with the thread)
            errors.append((index, error))

    threads = [threading.Thread(target=target, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish"
    assert not errors, errors
    return results


def test_shared_pipeline_with_different_labels_per_thread(shared):
    classifier = pipeline("zero-shot-image-classification", model=str(shared.full_dir), trust_remote_code=True)
    images = cifar_images(CALLS_PER_THREAD)
    before = held_state(classifier.model)
    expected = [[classifier(image, candidate_labels=labels) for image in images] for labels in LABEL_SETS]

    def work(index):
        return [classifier(image, candidate_labels=LABEL_SETS[index]) for image in images]

    results = run_threads(work, len(LABEL_SETS))
    calls = 0
    for labels, got, want in zip(LABEL_SETS, results, expected, strict=True):
        for one, other in zip(got, want, strict=True):
            assert sorted(item["label"] for item in one) == sorted(labels)  # its own labels, no other thread's
            assert [item["label"] for item in one] == [item["label"] for item in other]
            assert [item["score"] for item in one] == pytest.approx([item["score"] for item in other], abs=SCORE_TOL)
            calls += 1
    assert calls == len(LABEL_SETS) * CALLS_PER_THREAD
    assert_same_held_state(before, held_state(classifier.model))
    # Default calls still use the trained classes.
    assert sorted(item["label"] for item in classifier(images[0])) == sorted(shared.model.class_names)


def test_shared_model_with_different_class_prompts_per_thread(shared):
    model = CoCoOpModel.from_pretrained(shared.full_dir)
    processor = CoCoOpProcessor.from_pretrained(shared.full_dir)
    pixel_values = processor(images=cifar_images(4))["pixel_values"]
    prompts = [processor(class_names=labels) for labels in LABEL_SETS]
    before = held_state(model)
    with torch.no_grad():
        expected = [model(pixel_values=pixel_values, **p).logits for p in prompts]

    def work(index):
        with torch.no_grad():
            return [model(pixel_values=pixel_values, **prompts[index]).logits for _ in range(5)]

    for index, logits in enumerate(run_threads(work, len(LABEL_SETS))):
        for one in logits:
            assert one.shape == (4, len(LABEL_SETS[index]))
            torch.testing.assert_close(one, expected[index], rtol=1e-5, atol=1e-5)
    assert_same_held_state(before, held_state(model))
