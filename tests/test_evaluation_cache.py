"""
cocoop_hf_training/evaluation.py's image-feature cache says what it was computed with: features of a model whose
vision tower reads learned prompts (IVLP, MaPLe, PromptSRC) are reused only for the same prompts; the others' stay
reused across epochs (frozen CLIP); another backbone never gets a cached feature.
"""

import copy
from types import SimpleNamespace

import pytest
import torch

from cocoop_hf_training import evaluation
from cocoop_hf_training.cli import ModelArguments
from cocoop_hf_training.evaluation import EpochEvaluation, evaluate_sets, image_feature_source
from cocoop_hf_training.modeling_setup import build_model

from .conftest import TINY_CLIP


CLASSES = ["zero", "one", "two", "three"]


@pytest.fixture(scope="module")
def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


class VisionPromptedModel(torch.nn.Module):
    """
    The evaluation's interface on a model whose image features depend on its prompt learner, as IVLP's do: the
    feature is the backbone's plus a learned "vision prompt" vector, and the logits are the feature's first entries.
    A vision prompt of 100 on one class makes every image predicted as that class: a stale feature shows in accuracy.
    """

    def __init__(self, prompt_depth_vision: int = 9, backbone=None):
        super().__init__()
        self.config = SimpleNamespace(prompt_depth_vision=prompt_depth_vision)
        self.clip = backbone if backbone is not None else torch.nn.Linear(3 * 4 * 4, len(CLASSES))
        self.prompt_learner = torch.nn.Module()
        self.prompt_learner.vision_prompt = torch.nn.Parameter(torch.zeros(len(CLASSES)))
        self.image_feature_calls = 0

    def favour(self, class_index: int) -> None:
        with torch.no_grad():
            self.prompt_learner.vision_prompt.zero_()
            self.prompt_learner.vision_prompt[class_index] = 100.0

    def get_image_features(self, pixel_values):
        self.image_feature_calls += 1
        return self.clip(pixel_values.flatten(1)) + self.prompt_learner.vision_prompt  # (batch, classes)

    def class_prompts(self, class_names):
        return {"class_index": torch.arange(len(class_names))}

    def forward(self, image_embeds, class_index):
        return SimpleNamespace(logits=image_embeds[:, class_index])


def image_set(count: int, label: int, seed: int = 0):
    pixels = torch.randn(count, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) * 0.01
    return [{"pixel_values": pixels[i], "labels": label} for i in range(count)]


def accuracy(model, dataset, accelerator, features) -> float:
    results = evaluate_sets(model, {"set": (dataset, CLASSES)}, accelerator, 4, 0, features=features)
    return results["set"]["accuracy"]


def test_changed_vision_prompts_are_encoded_again_and_unchanged_ones_reused(accelerator):
    model, dataset, features = VisionPromptedModel(), image_set(6, label=1), {}
    model.favour(0)
    assert accuracy(model, dataset, accelerator, features) == 0.0
    calls = model.image_feature_calls
    assert calls == 2  # 6 images in batches of 4
    assert accuracy(model, dataset, accelerator, features) == 0.0
    assert model.image_feature_calls == calls  # same prompts: reused
    model.favour(1)  # one "epoch" later
    assert accuracy(model, dataset, accelerator, features) == 100.0  # a stale feature would still say class 0
    assert model.image_feature_calls == 2 * calls
    assert len(features) == 1  # the old prompts' entry is gone: one entry per dataset, not one per epoch
    # A change in the last bit of one float is a change.
    with torch.no_grad():
        model.prompt_learner.vision_prompt[3] = torch.nextafter(torch.tensor(0.0), torch.tensor(1.0))
    accuracy(model, dataset, accelerator, features)
    assert model.image_feature_calls == 3 * calls


def test_two_models_sharing_a_backbone_never_share_prompted_features(accelerator):
    """Adapters on one shared backbone: the backbone is the same, the vision prompts are not."""
    first = VisionPromptedModel()
    second = VisionPromptedModel(backbone=first.clip)
    first.favour(0)
    second.favour(1)
    dataset, features = image_set(5, label=1), {}
    assert accuracy(first, dataset, accelerator, features) == 0.0
    assert accuracy(second, dataset, accelerator, features) == 100.0
    assert accuracy(first, dataset, accelerator, features) == 0.0


def test_epoch_evaluation_encodes_again_after_an_epoch_that_moved_the_vision_prompts(accelerator):
    model, dataset = VisionPromptedModel(), image_set(4, label=2)
    logged = []
    trainer = SimpleNamespace(accelerator=accelerator, model=model, log=logged.append)
    callback = EpochEvaluation(trainer, {"base": (dataset, CLASSES), "new": (dataset, CLASSES[::-1])}, 4, 0)
    model.favour(0)
    callback.on_epoch_end(None, SimpleNamespace(epoch=1.0), None)
    callback.on_epoch_end(None, SimpleNamespace(epoch=2.0), None)  # nothing trained in between: reused
    assert model.image_feature_calls == 1
    model.favour(2)
    callback.on_epoch_end(None, SimpleNamespace(epoch=3.0), None)
    assert model.image_feature_calls == 2
    assert [entry["eval_base_accuracy"] for entry in callback.history] == [0.0, 0.0, 100.0]
    # The final evaluation of run_cocoop.py takes the callback's features: after PromptSRC's aggregation changed
    # the prompts once more, they are encoded again.
    model.favour(1)
    results = evaluate_sets(model, {"base": (dataset, CLASSES)}, accelerator, 4, 0, features=callback.features)
    assert model.image_feature_calls == 3 and results["base"]["accuracy"] == 0.0


def test_without_vision_prompts_features_stay_reused_across_epochs(accelerator):
    """CoOp / CoCoOp / KgCoOp: the prompt learner moves, the image features cannot (frozen CLIP): reused."""
    model = VisionPromptedModel(prompt_depth_vision=0)  # the vision tower reads no prompt (the config says so)
    dataset, features = image_set(4, label=0), {}
    model.favour(0)
    accuracy(model, dataset, accelerator, features)
    model.favour(3)
    accuracy(model, dataset, accelerator, features)
    assert model.image_feature_calls == 1


def test_a_real_coop_model_keeps_its_features_after_its_context_moved(accelerator, monkeypatch):
    model = build_model(
        ModelArguments(clip_model_name_or_path=str(TINY_CLIP), random_init_clip=True, method="coop"), CLASSES, seed=1
    ).eval()
    calls = []
    original = evaluation.extract_image_features
    monkeypatch.setattr(evaluation, "extract_image_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    dataset, features = [{"pixel_values": p, "labels": 0} for p in pixels], {}
    evaluate_sets(model, {"base": (dataset, CLASSES)}, accelerator, 4, 0, features=features)
    with torch.no_grad():
        model.prompt_learner.ctx.add_(1.0)
    evaluate_sets(model, {"base": (dataset, CLASSES)}, accelerator, 4, 0, features=features)
    assert len(calls) == 1
    assert image_feature_source(model, dataset).vision_prompts_digest is None


def test_another_backbone_or_its_dtype_is_never_given_cached_features(accelerator):
    model, dataset, features = VisionPromptedModel(prompt_depth_vision=0), image_set(4, label=0), {}
    accuracy(model, dataset, accelerator, features)
    other = copy.deepcopy(model)  # equal weights, another module: its features are its own
    other.image_feature_calls = 0
    accuracy(other, dataset, accelerator, features)
    assert other.image_feature_calls == 1
    other.clip.to(torch.float64)  # what `cast_frozen_clip` does to a backbone's weights
    source = image_feature_source(other, dataset)
    assert source.backbone_dtype == "torch.float64" and source not in features


def test_a_vision_prompted_model_without_a_prompt_learner_is_named():
    model = VisionPromptedModel()
    del model.prompt_learner
    with pytest.raises(
        ValueError, match=r"VisionPromptedModel has config.prompt_depth_vision=9 but no `prompt_learner`"
    ):
        image_feature_source(model, [])


def test_the_digest_reads_every_dtype_and_every_bit():
    learner = torch.nn.Module()
    learner.prompt = torch.nn.Parameter(torch.randn(4, 8, dtype=torch.bfloat16))
    before = evaluation.tensors_digest(learner)
    assert before == evaluation.tensors_digest(copy.deepcopy(learner))
    with torch.no_grad():
        learner.prompt.view(torch.int16)[2, 5] ^= 1  # the lowest mantissa bit of one entry
    assert evaluation.tensors_digest(learner) != before


def test_two_ivlp_models_on_one_backbone_get_their_own_image_features(accelerator, monkeypatch):
    """
    A real IVLP model (tiny random CLIP, vision prompts at depth 2) and a second one on the SAME backbone module with
    other vision prompts, evaluated in turn with one feature cache: each gets exactly the features of its own
    prompted vision tower, and each model's accuracy equals a fresh evaluation of it; the backbone itself cannot
    tell them apart, only the prompt digest can.
    """
    from cocoop_hf import CoCoOpModel

    options = dict(conditional=False, prompt_depth_text=2, prompt_depth_vision=2, n_ctx_vision=2)
    first = CoCoOpModel.from_clip(str(TINY_CLIP), CLASSES, random_init=True, **options).eval()
    second = CoCoOpModel(first.config, clip_model=first.clip).eval()
    second.tokenizer = first.tokenizer
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for model in (first, second):
            for parameter in model.prompt_learner.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    assert second.clip is first.clip and first.config.prompt_depth_vision == 2
    pixels = torch.randn(6, 3, 32, 32, generator=generator)
    dataset = [{"pixel_values": p, "labels": i % len(CLASSES)} for i, p in enumerate(pixels)]
    with torch.no_grad():
        own = {id(model): model.get_image_features(pixels) for model in (first, second)}
    assert not torch.allclose(own[id(first)], own[id(second)], atol=1e-3)  # the prompts do move the features

    def evaluate(model, features):
        return evaluate_sets(model, {"set": (dataset, CLASSES)}, accelerator, 4, 0, features=features)["set"]

    classified = []  # the image features each evaluation classifies
    original = evaluation.predict
    monkeypatch.setattr(
        evaluation, "predict", lambda m, embeds, *a, **k: classified.append(embeds) or original(m, embeds, *a, **k)
    )
    fresh = {id(model): evaluate(model, {}) for model in (first, second)}
    shared = {}
    for model in (first, second, first, second):
        assert evaluate(model, shared) == fresh[id(model)]
        torch.testing.assert_close(classified[-1], own[id(model)], rtol=1e-5, atol=1e-6)
    assert len(shared) == 1  # one entry for the dataset: the latest model's
