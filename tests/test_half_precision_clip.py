"""A frozen CLIP in half precision under a prompt learner kept in fp32 (`CoCoOpModel.cast_frozen_clip`)."""

import copy

import pytest
import torch

from cocoop_hf import CoCoOpModel

from .conftest import random_pixels
from .reference_cocoop import reference_family
from .test_coop_family import unit_embeds
from .test_modeling import randomize_prompt_learner


NAMES = ["a", "very long class name with many words", "x_y_z", "tench", "b c"]
# bf16 keeps 8 bits of mantissa: every CLIP weight and activation rounds to ~0.4%. Through the tiny CLIP's text
# layers the logits then move by a few percent of their largest value at most; measured here: 0.7% to 1.7%.
HALF_RTOL = 5e-2
OPTIONS = {
    "cocoop": {},
    "coop": {"conditional": False},
    "coop-middle-csc": {"conditional": False, "class_token_position": "middle", "class_specific_context": True},
    "cocoop-front": {"class_token_position": "front"},
    "kgcoop": {"conditional": False, "kgcoop_weight": 8.0},
}
pytestmark = pytest.mark.usefixtures("single_thread")


def build(clip_dir, tokenizer, **config):
    return randomize_prompt_learner(CoCoOpModel.from_clip(str(clip_dir), NAMES, tokenizer=tokenizer, **config))


def relative_error(actual, expected) -> float:
    return ((actual.float() - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("option", OPTIONS)
def test_half_precision_clip_follows_the_fp32_reference(tiny_clip_dir, tokenizer, option):
    model = build(tiny_clip_dir, tokenizer, **OPTIONS[option])
    embeds = unit_embeds(3, model.config.clip_config.projection_dim, seed=1)
    labels = torch.tensor([0, 4, 2])
    with torch.no_grad():
        expected, _ = reference_family(model, model.prompt_ids, model.eos_index, model.name_length.tolist(), embeds)
    fp32_grad = torch.autograd.grad(model(image_embeds=embeds, labels=labels).loss, model.prompt_learner.ctx)[0]

    half = copy.deepcopy(model).cast_frozen_clip(torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in half.clip.parameters())
    assert all(p.dtype == torch.float32 for p in half.prompt_learner.parameters())
    out = half(image_embeds=embeds, labels=labels)
    assert relative_error(out.logits, expected) <= HALF_RTOL
    assert torch.isfinite(out.loss)
    ctx_grad = torch.autograd.grad(out.loss, half.prompt_learner.ctx)[0]
    # Gradients reach the fp32 context through the cast, in fp32, pointing where the fp32 model's do.
    assert ctx_grad.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(ctx_grad.flatten(), fp32_grad.flatten(), dim=0) > 0.98


def test_half_precision_clip_from_pixels_and_under_autocast(tiny_clip_dir, tokenizer):
    model = build(tiny_clip_dir, tokenizer)
    pixels = random_pixels(2, size=model.config.clip_config.vision_config.image_size)
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits
        half = copy.deepcopy(model).cast_frozen_clip(torch.bfloat16)
        assert relative_error(half(pixel_values=pixels).logits, expected) <= HALF_RTOL
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert relative_error(half(pixel_values=pixels).logits, expected) <= HALF_RTOL


def test_a_training_step_updates_the_fp32_context_only(tiny_clip_dir, tokenizer):
    model = build(tiny_clip_dir, tokenizer).cast_frozen_clip(torch.bfloat16)
    clip_before = {name: p.clone() for name, p in model.clip.named_parameters()}
    ctx_before = model.prompt_learner.ctx.detach().clone()
    optimizer = torch.optim.SGD(model.prompt_learner.parameters(), lr=0.1)
    embeds = unit_embeds(2, model.config.clip_config.projection_dim, seed=1)
    model(image_embeds=embeds, labels=torch.tensor([1, 3])).loss.backward()
    optimizer.step()
    assert model.prompt_learner.ctx.dtype == torch.float32
    assert not torch.equal(model.prompt_learner.ctx, ctx_before)
    assert all(torch.equal(p, clip_before[name]) for name, p in model.clip.named_parameters())


@pytest.mark.parametrize("dtype", [torch.int8, "bf16", None])
def test_cast_frozen_clip_refuses_what_is_not_a_float_dtype(tiny_clip_dir, tokenizer, dtype):
    model = build(tiny_clip_dir, tokenizer)
    with pytest.raises(TypeError, match="floating-point torch.dtype"):
        model.cast_frozen_clip(dtype)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_saving_after_the_cast_keeps_the_prompt_learner_in_fp32_and_the_clip_in_bf16(
    tiny_clip_dir, tokenizer, tmp_path
):
    model = build(tiny_clip_dir, tokenizer).cast_frozen_clip(torch.bfloat16)
    assert model.config.frozen_clip_dtype == "bfloat16"
    model.save_pretrained(tmp_path / "full")
    model.save_pretrained(tmp_path / "adapter", adapter_only=True)
    # config.json records the model's own dtype (its prompt learner's), not the cast CLIP's: loading does not
    # silently round the trained context to bf16; the CLIP is cast again to the dtype it ran in.
    assert model.dtype == torch.float32
    embeds = unit_embeds(2, model.config.clip_config.projection_dim, seed=1)
    with torch.no_grad():
        expected = model(image_embeds=embeds).logits
    for folder in ("full", "adapter"):
        loaded = CoCoOpModel.from_pretrained(tmp_path / folder)
        assert loaded.prompt_learner.ctx.dtype == torch.float32
        assert torch.equal(loaded.prompt_learner.ctx, model.prompt_learner.ctx)
        assert {p.dtype for p in loaded.clip.parameters()} == {torch.bfloat16}, folder
        with torch.no_grad():
            assert torch.equal(loaded(image_embeds=embeds).logits, expected), folder
    # An explicit dtype= is the caller's choice: the whole model in it, nothing cast afterwards.
    whole = CoCoOpModel.from_pretrained(tmp_path / "full", dtype=torch.float32)
    assert {p.dtype for p in whole.clip.parameters()} == {torch.float32}
    # Cast back to the model's dtype: nothing left to record.
    assert model.cast_frozen_clip(torch.float32).config.frozen_clip_dtype is None
    # The record follows the weights saved, also after a plain .to(): a reloaded copy is what was saved.
    loaded = CoCoOpModel.from_pretrained(tmp_path / "full").to(torch.float32)
    loaded.save_pretrained(tmp_path / "again")
    again = CoCoOpModel.from_pretrained(tmp_path / "again")
    assert again.config.frozen_clip_dtype is None
    assert {p.dtype for p in again.clip.parameters()} == {torch.float32}


@pytest.mark.parametrize("recorded", ["__class__", "int8", "torch.bfloat16", 16])
def test_a_foreign_frozen_clip_dtype_in_config_json_is_refused(tiny_clip_dir, tokenizer, tmp_path, recorded):
    """The recorded dtype names a torch attribute on load: only the float dtypes are read, anything else refused."""
    import json

    build(tiny_clip_dir, tokenizer).cast_frozen_clip(torch.bfloat16).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["frozen_clip_dtype"] = recorded
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="`frozen_clip_dtype` must be"):
        CoCoOpModel.from_pretrained(tmp_path)
