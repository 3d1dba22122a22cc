"""Forward inputs: class prompts per call, and clear errors (or documented normalisations) for careless input."""

import copy

import pytest
import torch

from cocoop_hf import CoCoOpModel

from .conftest import CLASS_NAMES, NEW_CLASS_NAMES, assert_same_held_state, held_state, random_pixels
from .reference_cocoop import reference_logits
from .test_modeling import assert_close_relative, randomize_prompt_learner


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: one thread is steadier


@pytest.fixture(scope="module")
def model(tiny_clip_dir, tokenizer):
    return randomize_prompt_learner(CoCoOpModel.from_clip(str(tiny_clip_dir), CLASS_NAMES, tokenizer=tokenizer)).eval()


# ---------------------------------------------------------------------------------------------- class prompts


@pytest.mark.parametrize("conditional", [True, False], ids=["cocoop", "coop"])
def test_class_prompts_input_matches_reference_and_leaves_model_unchanged(tiny_clip_dir, tokenizer, conditional):
    model = CoCoOpModel.from_clip(str(tiny_clip_dir), CLASS_NAMES, conditional=conditional, tokenizer=tokenizer)
    randomize_prompt_learner(model, seed=2)
    pixels = random_pixels(3, seed=4)
    before = held_state(model)
    prompts = model.class_prompts(NEW_CLASS_NAMES)
    assert_same_held_state(before, held_state(model))  # building prompts changes nothing either
    labels = torch.tensor([0, 3, 7])
    output = model(pixel_values=pixels, labels=labels, **prompts)
    assert_same_held_state(before, held_state(model))
    reference = reference_logits(model, prompts["input_ids"], prompts["eos_index"], pixel_values=pixels)
    assert_close_relative(output.logits.detach(), reference.detach())  # fp32, 1e-5 of the largest logit
    # The same as holding the class set.
    other = copy.deepcopy(model)
    other.set_class_names(NEW_CLASS_NAMES)
    torch.testing.assert_close(output.logits, other(pixel_values=pixels).logits, rtol=0, atol=0)
    features = model.get_text_features(output.image_embeds, **prompts)
    assert features.shape == ((3 if conditional else 1), len(NEW_CLASS_NAMES), 48)
    assert_same_held_state(before, held_state(model))


def test_processor_output_feeds_forward(model, tmp_path):
    from transformers import CLIPImageProcessor

    from cocoop_hf import CoCoOpProcessor

    processor = CoCoOpProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=model.tokenizer,
        prompt_prefix=model.config.prompt_prefix,
        n_ctx=model.config.n_ctx,
    )
    inputs = processor(images=[torch.rand(3, 40, 40)], class_names=["cat", "dog"], return_tensors="pt")
    logits = model(**inputs).logits
    assert logits.shape == (1, 2)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda p: {"input_ids": p["input_ids"]}, ValueError, "`eos_index` is missing"),
        (lambda p: {"eos_index": p["eos_index"]}, ValueError, "`input_ids` is missing"),
        (lambda p: {**p, "input_ids": p["input_ids"].float()}, TypeError, "`input_ids` must be an integer"),
        (lambda p: {**p, "eos_index": p["eos_index"][:1]}, ValueError, "same non-empty set of classes"),
        (lambda p: {**p, "input_ids": p["input_ids"][0]}, ValueError, "`input_ids` must have rank 2"),
        (lambda p: {**p, "eos_index": p["eos_index"] * 0 + 2}, ValueError, r"must lie in \[6, 77\)"),
        (lambda p: {**p, "eos_index": p["eos_index"] * 0 + 90}, ValueError, r"must lie in \[6, 77\)"),
        (lambda p: {**p, "input_ids": p["input_ids"] + 10**6}, ValueError, "outside the vocabulary"),
    ],
)
def test_bad_class_prompts(model, change, error, match):
    prompts = dict(model.class_prompts(["cat", "dog"]))
    with pytest.raises(error, match=match):
        model(pixel_values=random_pixels(1), **change(prompts))


def test_set_class_names_accepts_a_generator(model):
    """A generator was consumed by the check and left an empty id2label behind."""
    other = copy.deepcopy(model)
    other.set_class_names(name for name in NEW_CLASS_NAMES)
    assert other.class_names == NEW_CLASS_NAMES
    assert other.config.id2label == dict(enumerate(NEW_CLASS_NAMES))


# ---------------------------------------------------------------------------------------------- images and labels


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_integer_pixel_values_refused(model, dtype):
    with pytest.raises(TypeError, match=rf"`pixel_values` must be floating point.*{dtype}"):
        model(pixel_values=torch.zeros(1, 3, 32, 32, dtype=dtype))


def test_empty_batch_refused(model):
    with pytest.raises(ValueError, match="batch size 0"):
        model(pixel_values=torch.zeros(0, 3, 32, 32))
    with pytest.raises(ValueError, match="batch size 0"):
        model(image_embeds=torch.zeros(0, 48))


def test_image_embeds_are_normalised(model):
    """Raw CLIP features (not unit-norm) gave logits of ~1,600; they are normalised as the official code does."""
    pixels = random_pixels(2)
    with torch.no_grad():
        unit = model.get_image_features(pixels)
        expected = model(image_embeds=unit).logits
        raw = model(image_embeds=unit * 7.5).logits
        double = model(image_embeds=unit.double()).logits
    assert raw.abs().max() <= model.clip.logit_scale.exp() * 1.0001  # a cosine times the scale
    torch.testing.assert_close(raw, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(double, expected, rtol=1e-5, atol=1e-5)  # float64 is cast, not a torch error
    with pytest.raises(ValueError, match="zero or not finite"):
        model(image_embeds=torch.zeros(1, 48))
    with pytest.raises(TypeError, match="floating-point"):
        model(image_embeds=torch.ones(1, 48, dtype=torch.int64))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_integer_labels_of_any_width(model, dtype):
    pixels = random_pixels(2)
    labels = torch.tensor([1, 4])
    with torch.no_grad():
        expected = model(pixel_values=pixels, labels=labels).loss
        loss = model(pixel_values=pixels, labels=labels.to(dtype)).loss
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)


def test_meta_net_of_another_width_names_the_reduction(model):
    state = {name: t.clone() for name, t in model.prompt_learner.state_dict().items()}
    state["meta_net.linear1.weight"] = torch.zeros(12, 48)  # reduction 4 instead of 16
    with pytest.raises(ValueError, match=r"meta_net_reduction=16.*Set meta_net_reduction"):
        model.load_prompt_learner_state(state, source="other.ckpt")


def test_reference_detects_a_meta_net_without_relu(model):
    """The reference computes the meta-net from its tensors: a model whose meta-net lost its ReLU disagrees."""
    broken = copy.deepcopy(model)
    broken.prompt_learner.meta_net.relu = torch.nn.Identity()
    pixels = random_pixels(2)
    with torch.no_grad():
        logits = broken(pixel_values=pixels).logits
        reference = reference_logits(broken, broken.prompt_ids, broken.eos_index, pixel_values=pixels)
    assert (logits - reference).abs().max() > 100 * 1e-5 * reference.abs().max()
