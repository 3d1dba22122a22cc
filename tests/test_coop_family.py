"""The CoOp family as options of CoCoOpModel: class-token position, class-specific context (CSC), KgCoOp."""

import json
import math

import pytest
import torch

from cocoop_hf import CoCoOpConfig, CoCoOpModel, build_prompt_ids, text_encoder_causal

from .conftest import CLASS_NAMES, NEW_CLASS_NAMES, assert_same_held_state, held_state, random_pixels, tiny_clip_config
from .reference_cocoop import (
    reference_family,
    reference_kgcoop_loss,
    reference_name_lens,
    reference_zero_shot_features,
)
from .test_modeling import assert_close_relative, randomize_prompt_learner


# Names of 1 to 11 tokens, so "middle"/"front" move spans of different lengths and classes differ in length.
FAMILY_CLASS_NAMES = ["a", "very long class name with many words in it", "x_y_z", "café crème", "b c", "tench"]
RTOL = 1e-5  # fp32: differences are reduction-order rounding, relative to the largest reference value
GRAD_RTOL = 1e-4  # gradients pass through every layer twice (forward and backward): a little more rounding
pytestmark = pytest.mark.usefixtures("single_thread")


def make_config(**kwargs) -> CoCoOpConfig:
    return CoCoOpConfig(clip_config=tiny_clip_config().to_dict(), **kwargs)


# ---------------------------------------------------------------------------------------------- config


def test_config_defaults_are_plain_cocoop():
    config = make_config()
    assert config.class_token_position == "end" and config.class_specific_context is False
    assert config.kgcoop_weight == 0.0 and config.kgcoop_template == "a photo of a {}."


def test_config_fields_round_trip_through_json(tmp_path):
    config = make_config(
        conditional=False,
        class_token_position="middle",
        class_specific_context=True,
        kgcoop_weight=8,
        kgcoop_template="a photo of a {}, a type of pet.",
        id2label=dict(enumerate(CLASS_NAMES)),
    )
    assert isinstance(config.kgcoop_weight, float) and config.kgcoop_weight == 8.0  # int accepted, stored as float
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["class_token_position"] == "middle" and saved["class_specific_context"] is True
    loaded = CoCoOpConfig.from_pretrained(tmp_path)
    for field in ("class_token_position", "class_specific_context", "kgcoop_weight", "kgcoop_template"):
        assert getattr(loaded, field) == getattr(config, field), field


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"class_token_position": "start"}, r"`class_token_position` must be one of \('end', 'middle', 'front'\)"),
        ({"class_token_position": None}, "`class_token_position` must be one of"),
        ({"class_token_position": "middle", "ctx_init": None, "n_ctx": 1}, r"needs `n_ctx` >= 2, got n_ctx=1"),
        ({"class_token_position": "middle", "ctx_init": "photo"}, r"needs `n_ctx` >= 2, got n_ctx=1.*\"front\""),
        ({"kgcoop_weight": -1.0}, r"`kgcoop_weight` must be a finite number >= 0.*-1\.0"),
        ({"kgcoop_weight": math.nan}, r"`kgcoop_weight` must be a finite number >= 0.*nan"),
        ({"kgcoop_weight": math.inf}, r"`kgcoop_weight` must be a finite number >= 0.*inf"),
        ({"kgcoop_weight": True}, r"`kgcoop_weight` must be a finite number >= 0.*\(bool\)"),
        ({"kgcoop_weight": "8"}, r"`kgcoop_weight` must be a finite number >= 0.*\(str\)"),
        ({"kgcoop_template": "a photo of a cat."}, r'`kgcoop_template` must be a string with exactly one "\{\}"'),
        ({"kgcoop_template": "{} or {}"}, r'exactly one "\{\}"'),
        ({"kgcoop_template": None}, r'exactly one "\{\}"'),
        ({"kgcoop_template": "a {0} photo of {}"}, r"may hold no brace besides its one"),
        ({"class_specific_context": "true"}, r"`class_specific_context` must be True or False"),
        (
            {"class_specific_context": True, "id2label": {0: "cat"}},
            r"`class_specific_context=True` is a CoOp option.*needs `conditional=False`",
        ),
        ({"class_specific_context": True, "conditional": False}, r"`class_specific_context=True` needs `id2label`"),
    ],
)
def test_config_refuses_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_config(**kwargs)


def test_config_overrides_in_from_pretrained_are_checked(tmp_path):
    make_config().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="config.json: `kgcoop_weight` must be a finite number"):
        CoCoOpConfig.from_pretrained(tmp_path, kgcoop_weight=-2.0)
    assert CoCoOpConfig.from_pretrained(tmp_path, class_token_position="front").class_token_position == "front"


# ---------------------------------------------------------------------------------------------- models vs reference


def build(clip_dir, tokenizer, names=FAMILY_CLASS_NAMES, seed=0, **config):
    """A family model on the tiny CLIP with a random non-trivial prompt learner (a wrong assembly shows)."""
    return randomize_prompt_learner(CoCoOpModel.from_clip(str(clip_dir), names, tokenizer=tokenizer, **config), seed)


def unit_embeds(batch, dim=48, seed=0):
    embeds = torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed))
    return embeds / embeds.norm(dim=-1, keepdim=True)


def grads(model, loss):
    """Gradients of every trainable prompt-learner tensor, by name (cleared afterwards)."""
    params = dict(model.prompt_learner.named_parameters())
    values = torch.autograd.grad(loss, list(params.values()))
    return dict(zip(params, values, strict=True))


CASES = {
    # CoOp: end / middle / front x shared / class-specific context
    "coop-end": {"conditional": False},
    "coop-middle": {"conditional": False, "class_token_position": "middle"},
    "coop-front": {"conditional": False, "class_token_position": "front"},
    "csc-end": {"conditional": False, "class_specific_context": True},
    "csc-middle": {"conditional": False, "class_specific_context": True, "class_token_position": "middle"},
    "csc-front": {"conditional": False, "class_specific_context": True, "class_token_position": "front"},
    "csc-middle-random-5": {
        "conditional": False,
        "class_specific_context": True,
        "class_token_position": "middle",
        "ctx_init": None,
        "n_ctx": 5,
    },
    # CoCoOp with the name moved (ours, not the paper's)
    "cocoop-middle": {"class_token_position": "middle"},
    "cocoop-front": {"class_token_position": "front"},
    # KgCoOp with CoOp (the paper) and with CoCoOp (ours); and with the options above
    "kgcoop": {"conditional": False, "kgcoop_weight": 8.0},
    "kgcoop-cocoop": {"kgcoop_weight": 2.5, "kgcoop_template": "a photo of a {}, a type of fish."},
    "kgcoop-csc-front": {
        "conditional": False,
        "class_specific_context": True,
        "class_token_position": "front",
        "kgcoop_weight": 8,
    },
}


@pytest.fixture(scope="module")
def family(tiny_clip_dir, tokenizer):
    return {name: build(tiny_clip_dir, tokenizer, seed=i, **config) for i, (name, config) in enumerate(CASES.items())}


@pytest.mark.parametrize("mode", ["default", "chunked", "no_bucket", "checkpointing"])
@pytest.mark.parametrize("case", list(CASES))
def test_logits_loss_and_gradients_equal_the_official_math(family, tokenizer, case, mode, monkeypatch):
    model = family[case]
    model.config.text_chunk_tokens = 1 if mode == "chunked" else 131072  # "chunked": one class per call
    model.config.bucket_by_length = mode != "no_bucket"
    checkpoints = []
    if mode == "checkpointing":
        original = text_encoder_causal.checkpoint
        monkeypatch.setattr(
            text_encoder_causal, "checkpoint", lambda *a, **k: checkpoints.append(1) or original(*a, **k)
        )
        model.gradient_checkpointing = True
    try:
        names = model.class_names
        name_lens = reference_name_lens(tokenizer, names)
        assert model.name_length.tolist() == name_lens  # official name_lens, read by the tokenizer alone
        image_embeds = unit_embeds(3, seed=len(case))
        labels = torch.tensor([1, 0, 5])
        output = model(image_embeds=image_embeds, labels=labels)
        logits, features = reference_family(model, model.prompt_ids, model.eos_index, name_lens, image_embeds)
        assert_close_relative(output.logits, logits, what="logits")
        weight = model.config.kgcoop_weight
        if weight > 0:
            zero_shot = reference_zero_shot_features(model, tokenizer, names, model.config.kgcoop_template)
            loss, score = reference_kgcoop_loss(logits, labels, features, zero_shot, weight)
            assert output.kgcoop_loss is not None and 0 < score.item() < 2
            torch.testing.assert_close(output.kgcoop_loss, score, rtol=RTOL, atol=1e-6)
        else:
            loss = torch.nn.functional.cross_entropy(logits, labels)
            assert output.kgcoop_loss is None
        torch.testing.assert_close(output.loss, loss, rtol=RTOL, atol=1e-6)
        ours, theirs = grads(model, output.loss), grads(model, loss)
        for name, grad in theirs.items():
            assert grad.abs().max() > 0, name
            assert_close_relative(ours[name], grad, rtol=GRAD_RTOL, what=f"grad of {name}")
        assert bool(checkpoints) == (mode == "checkpointing")
    finally:
        model.config.text_chunk_tokens, model.config.bucket_by_length = 131072, True
        model.gradient_checkpointing = False


def test_the_reference_detects_a_wrong_assembly(family, tokenizer):
    """The equivalence tests can fail: each position, assembled as another one, gives other logits."""
    image_embeds = unit_embeds(2)
    for case, wrong in (("coop-middle", "front"), ("coop-front", "middle"), ("csc-middle", "end")):
        model = family[case]
        name_lens = reference_name_lens(tokenizer, model.class_names)
        with torch.no_grad():
            ours = model(image_embeds=image_embeds).logits
            bad, _ = reference_family(model, model.prompt_ids, model.eos_index, name_lens, image_embeds, wrong)
        assert (ours - bad).abs().max() > 1e-2 * bad.abs().max(), (case, wrong)
    # and a wrong name length (one token short) for the middle position
    model = family["coop-middle"]
    short = [max(1, n - 1) for n in reference_name_lens(tokenizer, model.class_names)]
    with torch.no_grad():
        bad, _ = reference_family(model, model.prompt_ids, model.eos_index, short, image_embeds)
        assert (model(image_embeds=image_embeds).logits - bad).abs().max() > 1e-2 * bad.abs().max()


def test_pixel_values_and_call_prompts_give_the_held_logits(family):
    model = family["cocoop-middle"]
    pixels = random_pixels(2)
    prompts = model.class_prompts(NEW_CLASS_NAMES)
    before = held_state(model)
    with torch.no_grad():
        image_embeds = model.get_image_features(pixels)
        from_pixels = model(pixel_values=pixels, **prompts).logits
        logits, _ = reference_family(
            model, prompts["input_ids"], prompts["eos_index"], prompts["name_length"].tolist(), image_embeds
        )
    assert_close_relative(from_pixels, logits)
    assert_same_held_state(before, held_state(model))


def test_coop_text_features_are_computed_once_per_forward(family):
    """CoOp-style (CSC, middle) text features do not depend on the image: one text pass per class, any batch."""
    for case in ("csc-end", "coop-middle", "kgcoop-csc-front"):
        model = family[case]
        seen = []
        encoder = model.text_encoder
        original = encoder._encode_prompts

        def counting(hidden, eos, *args, original=original, seen=seen, **kwargs):
            seen.append(hidden.shape[0])
            return original(hidden, eos, *args, **kwargs)

        encoder._encode_prompts = counting
        try:
            with torch.no_grad():
                model(image_embeds=unit_embeds(16))
        finally:
            del encoder._encode_prompts
        assert sum(seen) == len(model.class_names), (case, seen)


def test_end_with_shared_context_keeps_the_prefix_path(family):
    model = family["coop-end"]
    calls = []
    encoder = model.text_encoder
    original = encoder._encode_full_prompts
    encoder._encode_full_prompts = lambda *args: calls.append(1) or original(*args)
    try:
        with torch.no_grad():
            model(image_embeds=unit_embeds(2))
    finally:
        del encoder._encode_full_prompts
    assert calls == []


def test_middle_and_front_with_the_context_as_words_follow_plain_clip(tiny_clip_dir, tokenizer):
    """Context = embeddings of its words and no meta-net: the prompt is just text, so the logits equal CLIP's."""
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    image_embeds = unit_embeds(2)
    for position, text in (("middle", "a photo {} of a."), ("front", "{} a photo of a.")):
        model = CoCoOpModel.from_clip(
            str(tiny_clip_dir), CLASS_NAMES, tokenizer=tokenizer, conditional=False, class_token_position=position
        )
        inputs = tokenizer([text.format(n.replace("_", " ")) for n in CLASS_NAMES], padding=True, return_tensors="pt")
        with torch.no_grad():
            expected = clip.get_text_features(**inputs).pooler_output
            expected = clip.logit_scale.exp() * image_embeds @ (expected / expected.norm(dim=-1, keepdim=True)).t()
            assert_close_relative(model(image_embeds=image_embeds).logits, expected)


# ---------------------------------------------------------------------------------------------- bad input


def test_class_specific_context_refuses_another_class_set(family):
    model = family["csc-middle"]
    before = held_state(model)
    why = r"class-specific context \(class_specific_context=True: one learned context per class, 6 classes\)"
    with pytest.raises(ValueError, match=why + r".*got prompts for 8 classes"):
        model(image_embeds=unit_embeds(1), **model.class_prompts(NEW_CLASS_NAMES))
    other = FAMILY_CLASS_NAMES[:-1] + ["goldfish"]  # same count, one other name
    unknown = r".*1 class\(es\) it was not trained on \(at positions \[5\]\) and lack \['tench'\]"
    with pytest.raises(ValueError, match=why + unknown + r".*Use a shared-context model"):
        model(image_embeds=unit_embeds(1), **model.class_prompts(other))
    with pytest.raises(ValueError, match=why):
        model.set_class_names(NEW_CLASS_NAMES)
    with pytest.raises(ValueError, match=why + unknown):
        model.set_class_names(other)
    # Its own classes in another order: named, with the order to use (labels are positions).
    reordered = FAMILY_CLASS_NAMES[::-1]
    order = r".*its classes in another order \('a' at position 5, .*pass them in the trained order \['a', "
    with pytest.raises(ValueError, match=why + order):
        model(image_embeds=unit_embeds(1), **model.class_prompts(reordered))
    assert_same_held_state(before, held_state(model))
    # The held class set, as the processor gives it (any padding length), is accepted; so is set_class_names again.
    prompts = model.class_prompts(FAMILY_CLASS_NAMES)
    length = int(prompts["eos_index"].max()) + 1
    with torch.no_grad():
        given = model(image_embeds=unit_embeds(2), input_ids=prompts["input_ids"][:, :length],
                      eos_index=prompts["eos_index"], name_length=prompts["name_length"]).logits  # fmt: skip
        held = model(image_embeds=unit_embeds(2)).logits
    torch.testing.assert_close(given, held, rtol=0, atol=0)
    model.set_class_names(FAMILY_CLASS_NAMES)
    assert_same_held_state(before, held_state(model))


def test_class_specific_context_shape_and_initialisation(tiny_clip_dir, tokenizer):
    words = CoCoOpModel.from_clip(
        str(tiny_clip_dir), CLASS_NAMES, tokenizer=tokenizer, conditional=False, class_specific_context=True
    )
    ctx = words.prompt_learner.ctx
    assert ctx.shape == (len(CLASS_NAMES), 4, 64)
    expected = words.clip.text_model.embeddings.token_embedding.weight[
        tokenizer("a photo of a", add_special_tokens=False)["input_ids"]
    ]
    for row in ctx:  # the init words in every class's row
        torch.testing.assert_close(row, expected, rtol=0, atol=0)
    torch.manual_seed(0)
    random = CoCoOpModel.from_clip(
        str(tiny_clip_dir), CLASS_NAMES, tokenizer=tokenizer, conditional=False, class_specific_context=True,
        ctx_init=None, n_ctx=3,
    )  # fmt: skip
    ctx = random.prompt_learner.ctx.detach()
    assert ctx.shape == (len(CLASS_NAMES), 3, 64)
    assert 0.015 < ctx.std().item() < 0.025 and not torch.equal(ctx[0], ctx[1])  # N(0, 0.02) per class


@pytest.mark.parametrize("case", ["coop-middle", "cocoop-front"])
def test_middle_and_front_need_name_length(family, case):
    model = family[case]
    prompts = model.class_prompts(CLASS_NAMES)
    position = model.config.class_token_position
    with pytest.raises(ValueError, match=f'class_token_position="{position}" moves the class name.*`name_length`'):
        model(image_embeds=unit_embeds(1), input_ids=prompts["input_ids"], eos_index=prompts["eos_index"])
    with pytest.raises(ValueError, match=r"`name_length` must be \(7,\), one per class"):
        model(image_embeds=unit_embeds(1), **{**prompts, "name_length": prompts["name_length"][:3]})
    with pytest.raises(ValueError, match=r"`name_length` must lie in \[1, eos_index - 1 - n_ctx\].*got \[0\]"):
        model(
            image_embeds=unit_embeds(1), **{**prompts, "name_length": prompts["name_length"] * (torch.arange(7) > 0)}
        )
    with pytest.raises(ValueError, match=r"`name_length` must lie in.*got \[9\] for classes \[0\]"):
        model(
            image_embeds=unit_embeds(1),
            **{**prompts, "name_length": torch.tensor([9] + prompts["name_length"][1:].tolist())},
        )
    with pytest.raises(TypeError, match="`name_length` must be an integer torch.Tensor"):
        model(image_embeds=unit_embeds(1), **{**prompts, "name_length": prompts["name_length"].float()})


def test_end_position_does_not_need_name_length(family):
    model = family["cocoop-middle"]
    prompts = model.class_prompts(CLASS_NAMES)
    end = family["kgcoop-cocoop"]
    with torch.no_grad():
        without = end(image_embeds=unit_embeds(2), input_ids=prompts["input_ids"], eos_index=prompts["eos_index"])
        with_length = end(image_embeds=unit_embeds(2), **prompts)
    torch.testing.assert_close(without.logits, with_length.logits, rtol=0, atol=0)


def test_build_prompt_ids_name_length(tokenizer):
    names = ["tench", "great_white_shark", "café crème", "t-shirt"]
    encoding = build_prompt_ids(tokenizer, names, "a photo of a", 4)
    assert encoding["name_length"].tolist() == reference_name_lens(tokenizer, names) == [2, 3, 4, 3]
    assert encoding["name_length"].dtype == torch.long


# ---------------------------------------------------------------------------------------------- KgCoOp


def test_zero_shot_features_are_plain_clip_and_change_nothing(family, tokenizer):
    model = family["kgcoop"]
    before = held_state(model)
    features = model.zero_shot_text_features(NEW_CLASS_NAMES, tokenizer=tokenizer)
    expected = reference_zero_shot_features(model, tokenizer, NEW_CLASS_NAMES, "a photo of a {}.")
    assert features.shape == (len(NEW_CLASS_NAMES), 48) and not features.requires_grad
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-6)
    assert_same_held_state(before, held_state(model))
    # held class set: computed by set_class_names into a buffer that is never saved
    held = reference_zero_shot_features(model, tokenizer, model.class_names, "a photo of a {}.")
    torch.testing.assert_close(model.zero_shot_embeds, held, rtol=0, atol=1e-6)
    assert "zero_shot_embeds" not in model.state_dict()
    # the template of the config is used
    other = family["kgcoop-cocoop"]
    expected = reference_zero_shot_features(other, tokenizer, CLASS_NAMES, "a photo of a {}, a type of fish.")
    torch.testing.assert_close(other.zero_shot_text_features(CLASS_NAMES), expected, rtol=0, atol=1e-6)


def test_kgcoop_with_call_prompts_needs_zero_shot_embeds(family, tokenizer):
    model = family["kgcoop"]
    prompts = model.class_prompts(NEW_CLASS_NAMES)
    labels = torch.tensor([0, 3])
    with pytest.raises(ValueError, match=r"kgcoop_weight=8.0 needs the zero-shot text features.*zero_shot_embeds="):
        model(image_embeds=unit_embeds(2), labels=labels, **prompts)
    with torch.no_grad():  # without labels there is no loss, so none is needed
        assert model(image_embeds=unit_embeds(2), **prompts).kgcoop_loss is None
    zero_shot = model.zero_shot_text_features(NEW_CLASS_NAMES)
    with pytest.raises(ValueError, match=r"`zero_shot_embeds` must be \(classes, projection_dim\) = \(8, 48\)"):
        model(image_embeds=unit_embeds(2), labels=labels, zero_shot_embeds=zero_shot[:7], **prompts)
    output = model(image_embeds=unit_embeds(2), labels=labels, zero_shot_embeds=zero_shot, **prompts)
    name_lens = reference_name_lens(tokenizer, NEW_CLASS_NAMES)
    logits, features = reference_family(model, prompts["input_ids"], prompts["eos_index"], name_lens, unit_embeds(2))
    loss, score = reference_kgcoop_loss(logits, labels, features, zero_shot, 8.0)
    torch.testing.assert_close(output.loss, loss, rtol=RTOL, atol=1e-6)
    torch.testing.assert_close(output.kgcoop_loss, score, rtol=RTOL, atol=1e-6)


def test_kgcoop_weight_zero_adds_nothing(family):
    model = family["coop-end"]
    output = model(image_embeds=unit_embeds(2), labels=torch.tensor([0, 1]))
    assert output.kgcoop_loss is None
    torch.testing.assert_close(output.loss, torch.nn.functional.cross_entropy(output.logits, torch.tensor([0, 1])))
    assert model.zero_shot_embeds.numel() == 0  # not computed when KgCoOp is off


# ---------------------------------------------------------------------------------------------- save / load


SAVED_CASES = ["csc-middle", "kgcoop-csc-front", "kgcoop-cocoop", "cocoop-front"]


@pytest.mark.parametrize("adapter_only", [False, True], ids=["full", "adapter"])
@pytest.mark.parametrize("case", SAVED_CASES)
def test_save_load_keeps_every_option(family, case, adapter_only, tmp_path):
    model = family[case]
    model.save_pretrained(tmp_path, adapter_only=adapter_only)
    loaded = CoCoOpModel.from_pretrained(tmp_path)
    for field in ("class_token_position", "class_specific_context", "kgcoop_weight", "kgcoop_template", "n_ctx"):
        assert getattr(loaded.config, field) == getattr(model.config, field), field
    assert loaded.class_names == model.class_names
    assert torch.equal(loaded.name_length, model.name_length)
    # the zero-shot features (never saved) are rebuilt from the loaded CLIP, as the prompts are
    assert torch.equal(loaded.zero_shot_embeds, model.zero_shot_embeds)
    image_embeds, labels = unit_embeds(3), torch.tensor([0, 2, 4])
    with torch.no_grad():
        expected, got = (
            model(image_embeds=image_embeds, labels=labels),
            loaded(image_embeds=image_embeds, labels=labels),
        )
    torch.testing.assert_close(got.logits, expected.logits, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got.loss, expected.loss, rtol=1e-6, atol=1e-6)
    if model.config.kgcoop_weight > 0:
        torch.testing.assert_close(got.kgcoop_loss, expected.kgcoop_loss, rtol=1e-6, atol=1e-6)


def test_class_specific_state_loads_only_with_its_shape(family, tiny_clip_dir, tokenizer):
    csc = family["csc-end"]
    shared = family["coop-end"]
    with pytest.raises(ValueError, match=r"has shape \(4, 64\), but this model needs \(6, 4, 64\): a class-specific"):
        csc.load_prompt_learner_state(shared.prompt_learner.state_dict())
    with pytest.raises(
        ValueError, match=r"has shape \(6, 4, 64\), but this CLIP needs \(4, 64\).*class_specific_context=True"
    ):
        shared.load_prompt_learner_state(csc.prompt_learner.state_dict())
    fewer = build(tiny_clip_dir, tokenizer, names=CLASS_NAMES[:3], conditional=False, class_specific_context=True)
    with pytest.raises(ValueError, match=r"has shape \(6, 4, 64\), but this model needs \(3, 4, 64\).*3 classes"):
        fewer.load_prompt_learner_state(csc.prompt_learner.state_dict())


def test_model_card_of_a_saved_model_names_its_options(family):
    from cocoop_hf.sharing_cocoop import _render_card

    text = _render_card(family["kgcoop-csc-front"], "me/kg").text
    assert "learned with **KgCoOp**" in text and "Class-token position **front**" in text
    assert "**Class-specific context**" in text and "weight w = 8:" in text
    text = _render_card(family["cocoop-middle"], "me/cc").text
    assert "learned with **CoCoOp**" in text and "Class-token position **middle**" in text and "KgCoOp" not in text


def test_a_name_longer_alone_than_in_its_prompt_is_refused_where_it_is_moved(tokenizer):
    """name_lens counts the name tokenised alone; if that ran past the name's tokens in the prompt, the moved span
    would take '.' or EOS with it: a middle/front model refuses it (no real CLIP name seen does this, a tokenizer
    could); an "end" model never moves the name and takes the prompts."""

    class LongerAlone:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __call__(self, text, **kwargs):
            out = self.inner(text, **kwargs)
            if isinstance(text, list) and kwargs.get("add_special_tokens") is False:
                return {"input_ids": [ids + ids for ids in out["input_ids"]]}  # every name reads twice as long
            return out

    # The prompts are built (an "end" model never reads name_length); a model that moves the name refuses them.
    prompts = build_prompt_ids(LongerAlone(tokenizer), ["great_white_shark"], "a photo of a", 4)
    assert prompts["name_length"].tolist() == [6] and int(prompts["eos_index"][0]) - 1 - 4 == 4
    middle = CoCoOpModel(make_config(conditional=False, class_token_position="middle"))
    with pytest.raises(ValueError, match=r"got \[6\] for classes \[0\]: a name that tokenises to more tokens alone"):
        middle(image_embeds=unit_embeds(1), **prompts)
    end = CoCoOpModel(make_config(conditional=False))
    end.prompt_learner.ctx.data.normal_(std=0.02)
    assert end(image_embeds=unit_embeds(1), **prompts).logits.shape == (1, 1)
