"""
PromptSRC's frozen text teacher (60 templates x classes text passes) is computed only where a loss needs it: the
first forward with `labels` of a class set (text or logits weight above 0), then kept with that class set. Building,
changing, loading and scoring a class set run none; the loss is the one of the teacher computed by hand; a class name
that fits the model's own prompt but not one of the 60 templates is scored at inference and refused for training.
Tiny random CLIP, fp32: every number here is of random weights.
"""

import threading

import pytest
import torch
from transformers.models.clip.modeling_clip import CLIPTextModel

import cocoop_hf.class_set_holder_cocoop as class_set_holder
from cocoop_hf import CoCoOpModel
from cocoop_hf.promptsrc_cocoop import IMAGENET_TEMPLATES

from .conftest import CLASS_NAMES, NEW_CLASS_NAMES, random_pixels


pytestmark = pytest.mark.usefixtures("single_thread")

PROMPTSRC = dict(
    conditional=False,
    prompt_depth_text=2,
    prompt_depth_vision=2,
    n_ctx_vision=2,
    promptsrc_text_weight=25.0,
    promptsrc_image_weight=10.0,
    promptsrc_logits_weight=1.0,
)
LABELS = torch.tensor([0, 3, 6])
TOL = 1e-5  # absolute, on losses of the same fp32 computation


@pytest.fixture
def passes(monkeypatch):
    """Teacher builds (the class names of each) and frozen text-tower passes (CLIPTextModel.forward calls)."""
    counts = {"teacher": [], "text": 0}
    teacher_text_features = class_set_holder.teacher_text_features
    text_forward = CLIPTextModel.forward

    def counted_teacher(backbone_model, class_names, *args, **kwargs):
        counts["teacher"].append(list(class_names))
        return teacher_text_features(backbone_model, class_names, *args, **kwargs)

    def counted_forward(self, *args, **kwargs):
        counts["text"] += 1
        return text_forward(self, *args, **kwargs)

    monkeypatch.setattr(class_set_holder, "teacher_text_features", counted_teacher)
    monkeypatch.setattr(CLIPTextModel, "forward", counted_forward)
    return counts


def build(tiny_clip_dir, tokenizer, names=CLASS_NAMES):
    model = CoCoOpModel.from_clip(str(tiny_clip_dir), names, tokenizer=tokenizer, **PROMPTSRC)
    with torch.no_grad():  # prompts away from their init, so that the text term is not trivially small
        for parameter in model.prompt_learner.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(7)))
    return model


def hand_teacher(model, names):
    """Official VLPromptLearner.__init__: mean over the 60 templates of unnormalised encode_text, then normalised."""
    total = 0
    for template in IMAGENET_TEMPLATES:
        texts = [template.replace("{}", name.replace("_", " ")) for name in names]
        encoded = model.tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            total = total + model.clip.get_text_features(**encoded).pooler_output
    mean = total / len(IMAGENET_TEMPLATES)
    return mean / mean.norm(dim=-1, keepdim=True)


def test_no_teacher_outside_a_loss(tiny_clip_dir, tokenizer, passes, tmp_path):
    model = build(tiny_clip_dir, tokenizer)
    assert passes == {"teacher": [], "text": 0}  # from_clip
    pixels = random_pixels(3, seed=1)
    with torch.no_grad():
        assert model(pixel_values=pixels).logits.shape == (3, len(CLASS_NAMES))
        model.get_text_features()
    model.set_class_names(NEW_CLASS_NAMES)
    with torch.no_grad():
        assert model(pixel_values=pixels).logits.shape == (3, len(NEW_CLASS_NAMES))
    assert passes == {"teacher": [], "text": 0}  # set_class_names, forwards without labels
    model.save_pretrained(tmp_path / "saved")
    loaded = CoCoOpModel.from_pretrained(tmp_path / "saved")
    with torch.no_grad():
        loaded_logits = loaded(pixel_values=pixels).logits
    assert passes == {"teacher": [], "text": 0}  # from_pretrained + a forward without labels (cocoop-hf evaluate)
    with torch.no_grad():
        torch.testing.assert_close(loaded_logits, model(pixel_values=pixels).logits, rtol=0, atol=TOL)


def test_first_labelled_forward_builds_the_teacher_once(tiny_clip_dir, tokenizer, passes):
    model = build(tiny_clip_dir, tokenizer)
    pixels = random_pixels(3, seed=2)
    first = model(pixel_values=pixels, labels=LABELS)
    assert passes["teacher"] == [CLASS_NAMES]
    assert passes["text"] == len(IMAGENET_TEMPLATES)  # 7 short prompts: one text-tower call per template
    second = model(pixel_values=pixels, labels=LABELS)
    held = model.zero_shot_embeds
    assert passes["teacher"] == [CLASS_NAMES] and passes["text"] == len(IMAGENET_TEMPLATES)  # kept, not recomputed
    torch.testing.assert_close(second.loss, first.loss, rtol=0, atol=TOL)
    assert held.shape == (len(CLASS_NAMES), model.config.clip_config.projection_dim)
    model.set_class_names(NEW_CLASS_NAMES)  # a new class set: its own teacher, at its own first labelled forward
    assert passes["teacher"] == [CLASS_NAMES]
    model(pixel_values=pixels, labels=LABELS)
    model(pixel_values=pixels, labels=LABELS)
    assert passes["teacher"] == [CLASS_NAMES, NEW_CLASS_NAMES]


def test_loss_equals_the_teacher_computed_by_hand(tiny_clip_dir, tokenizer, passes):
    model = build(tiny_clip_dir, tokenizer)
    pixels = random_pixels(3, seed=3)
    teacher = hand_teacher(model, CLASS_NAMES)
    expected = model(pixel_values=pixels, labels=LABELS, zero_shot_embeds=teacher)
    assert passes["teacher"] == []  # a teacher given with the held class set: the model computes none
    lazy = model(pixel_values=pixels, labels=LABELS)
    assert len(passes["teacher"]) == 1
    torch.testing.assert_close(model.zero_shot_embeds, teacher, rtol=0, atol=TOL)
    torch.testing.assert_close(lazy.loss, expected.loss, rtol=0, atol=TOL)
    for field in ("promptsrc_text_loss", "promptsrc_image_loss", "promptsrc_logits_loss"):
        assert float(getattr(lazy, field).detach()) > 1e-4, field  # not trivially zero, so the comparison means something
        torch.testing.assert_close(getattr(lazy, field), getattr(expected, field), rtol=0, atol=TOL)
    with torch.no_grad():  # the text term against the hand teacher, written out (official F.l1_loss, mean)
        texts = model.get_text_features()[0]
    torch.testing.assert_close(lazy.promptsrc_text_loss, (texts - teacher).abs().mean(), rtol=0, atol=TOL)


def test_class_prompts_per_call_still_need_and_take_the_teacher(tiny_clip_dir, tokenizer, passes):
    model = build(tiny_clip_dir, tokenizer)
    pixels = random_pixels(3, seed=4)
    prompts = model.class_prompts(NEW_CLASS_NAMES)
    with pytest.raises(ValueError, match=r"teacher.*zero_shot_text_features"):
        model(pixel_values=pixels, labels=LABELS, **prompts)
    teacher = model.zero_shot_text_features(NEW_CLASS_NAMES)
    given = model(pixel_values=pixels, labels=LABELS, zero_shot_embeds=teacher, **prompts)
    assert passes["teacher"] == [NEW_CLASS_NAMES]  # the caller's only: none for the held class set
    torch.testing.assert_close(teacher, hand_teacher(model, NEW_CLASS_NAMES), rtol=0, atol=TOL)
    model.set_class_names(NEW_CLASS_NAMES)
    held = model(pixel_values=pixels, labels=LABELS)
    torch.testing.assert_close(held.loss, given.loss, rtol=0, atol=TOL)


def test_a_long_name_is_scored_and_refused_only_for_training(tiny_clip_dir, tokenizer, tmp_path):
    long_name = " ".join(["goldfish"] * 69)
    context = tokenizer.model_max_length
    # The model's own prompt ("a photo of a {name}.") fits; PromptSRC's longest template does not.
    assert len(tokenizer(f"a photo of a {long_name}.")["input_ids"]) <= context
    assert len(tokenizer(f"a jpeg corrupted photo of a {long_name}.")["input_ids"]) > context
    names = ["cat", long_name, "dog"]
    model = build(tiny_clip_dir, tokenizer, names)
    pixels = random_pixels(2, seed=5)
    with torch.no_grad():
        assert model(pixel_values=pixels).logits.shape == (2, 3)
    teacher_error = rf"PromptSRC's teacher prompt .* for class 'goldfish goldfish.* over the text context of {context}"
    with pytest.raises(ValueError, match=teacher_error):
        model(pixel_values=pixels, labels=torch.tensor([0, 1]))
    # Read from a saved folder, the error names where the class names came from.
    model.save_pretrained(tmp_path / "saved")
    loaded = CoCoOpModel.from_pretrained(tmp_path / "saved")
    with torch.no_grad():
        assert loaded(pixel_values=pixels).logits.shape == (2, 3)
    with pytest.raises(ValueError, match=rf"saved \(config\.json, id2label\): {teacher_error}"):
        loaded(pixel_values=pixels, labels=torch.tensor([0, 1]))
    # The term that needs no teacher still trains on that class set.
    image_only = CoCoOpModel.from_clip(
        str(tiny_clip_dir),
        names,
        tokenizer=tokenizer,
        **{**PROMPTSRC, "promptsrc_text_weight": 0.0, "promptsrc_logits_weight": 0.0},
    )
    assert image_only(pixel_values=pixels, labels=torch.tensor([0, 1])).promptsrc_image_loss is not None


def test_teacher_first_built_under_inference_mode_still_trains(tiny_clip_dir, tokenizer):
    model = build(tiny_clip_dir, tokenizer)
    pixels = random_pixels(3, seed=6)
    with torch.inference_mode():
        model(pixel_values=pixels, labels=LABELS)  # the first labelled forward: computes and keeps the teacher
    assert not model.zero_shot_embeds.is_inference()
    model.train()(pixel_values=pixels, labels=LABELS).loss.backward()
    assert model.prompt_learner.ctx.grad is not None and torch.isfinite(model.prompt_learner.ctx.grad).all()


def test_first_labelled_forwards_in_two_threads_agree(tiny_clip_dir, tokenizer, passes):
    model = build(tiny_clip_dir, tokenizer)
    pixels = random_pixels(3, seed=7)
    barrier, losses, errors = threading.Barrier(2), [None, None], []

    def first_use(index):
        try:
            barrier.wait()
            with torch.no_grad():
                losses[index] = model(pixel_values=pixels, labels=LABELS).loss
        except BaseException as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    threads = [threading.Thread(target=first_use, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=TOL)
    built = len(passes["teacher"])
    assert built in (1, 2)  # two first callers may both compute it (equal results); one is kept
    with torch.no_grad():
        again = model(pixel_values=pixels, labels=LABELS).loss
    assert len(passes["teacher"]) == built
    torch.testing.assert_close(again, losses[0], rtol=0, atol=TOL)
