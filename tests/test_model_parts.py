"""
The contracts of the parts the model is split into: the prompt layout (one function for both text-tower families),
the causal prompt encoder with a given `context_start` (prefix cache and whole prompts), the logit bias, the encoder
kept out of the weights, the backbone-specific input checks, `prompt_context_start` read from each tokenizer, and the
frozen text features of the causal encoder against the backbones' own `get_text_features`.
"""

import copy

import pytest
import torch

from cocoop_hf import CoCoOpModel
from cocoop_hf.class_set_cocoop import ClassPrompts
from cocoop_hf.prompt_layout_cocoop import prompt_layout

from .conftest import CLASS_NAMES, random_pixels
from .reference_backbones import Prompts, reference_features_for_context
from .tiny_backbones import MODEL_TYPES, save_tiny_backbone, tiny_backbone


# ---------------------------------------------------------------------------------------------- prompt layout


def _sources(context_start, eos, name_length, n_ctx, position, length):
    """The layout as readable rows: "c{k}" = context row k, "t{p}" = token at position p of input_ids."""
    is_ctx, ctx_pos, token_pos = prompt_layout(
        torch.tensor(context_start), torch.tensor(eos), torch.tensor(name_length), n_ctx, position, length
    )
    return [
        [f"c{c}" if x else f"t{t}" for x, c, t in zip(row_ctx, row_c, row_t, strict=True)]
        for row_ctx, row_c, row_t in zip(is_ctx.tolist(), ctx_pos.tolist(), token_pos.tolist(), strict=True)
    ]


# Written by hand from official CoOp trainers/coop.py PromptLearner.forward: [before] ctx[:h] name ctx[h:] [rest],
# h = n_ctx (end), n_ctx // 2 (middle), 0 (front). n_ctx 3, a name of 2 tokens, 9 positions.
# start 1 (CLIP: [SOS X X X n1 n2 . EOS pad]), start 0 (SigLIP: [X X X n1 n2 . EOS pad pad]),
# start 3 (left padding: [pad pad SOS X X X n1 n2 EOS]).
LAYOUTS = {
    (1, "end"): "t0 c0 c1 c2 t4 t5 t6 t7 t8",
    (1, "middle"): "t0 c0 t4 t5 c1 c2 t6 t7 t8",
    (1, "front"): "t0 t4 t5 c0 c1 c2 t6 t7 t8",
    (0, "end"): "c0 c1 c2 t3 t4 t5 t6 t7 t8",
    (0, "middle"): "c0 t3 t4 c1 c2 t5 t6 t7 t8",
    (0, "front"): "t3 t4 c0 c1 c2 t5 t6 t7 t8",
    (3, "end"): "t0 t1 t2 c0 c1 c2 t6 t7 t8",
    (3, "middle"): "t0 t1 t2 c0 t6 t7 c1 c2 t8",
    (3, "front"): "t0 t1 t2 t6 t7 c0 c1 c2 t8",
}


@pytest.mark.parametrize(("start", "position"), list(LAYOUTS))
def test_prompt_layout_follows_the_hand_written_table(start, position):
    eos = start + 3 + 2 + (1 if start < 3 else 0)  # '.', then EOS; the left-padded row ends at its EOS
    assert _sources([start], [eos], [2], 3, position, 9) == [LAYOUTS[start, position].split()]


def test_prompt_layout_takes_a_start_per_class():
    """Several classes at once, each with its own start and name length (left padding)."""
    rows = _sources([1, 0, 3], [7, 6, 8], [2, 2, 2], 3, "middle", 9)
    assert rows == [LAYOUTS[1, "middle"].split(), LAYOUTS[0, "middle"].split(), LAYOUTS[3, "middle"].split()]
    # n_ctx 4: two context tokens before a one-token name, two after.
    assert _sources([1], [8], [1], 4, "middle", 9) == ["t0 c0 c1 t5 c2 c3 t6 t7 t8".split()]


def test_prompt_layout_refuses_what_it_cannot_place():
    one = torch.tensor([1])
    with pytest.raises(ValueError, match="must be one of"):
        prompt_layout(one, one * 7, one, 3, "start", 9)
    with pytest.raises(ValueError, match='"middle" moves the class name: `name_length` is needed'):
        prompt_layout(one, one * 7, None, 3, "middle", 9)
    is_ctx, _, _ = prompt_layout(one, one * 7, None, 3, "end", 9)  # "end" never reads name_length
    assert is_ctx.tolist() == [[False, True, True, True, False, False, False, False, False]]


# ---------------------------------------------------------------------------------------------- the model's parts


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    """A checkpoint folder of each tiny backbone."""
    root = tmp_path_factory.mktemp("backbones")
    return {model_type: save_tiny_backbone(root / model_type, model_type) for model_type in MODEL_TYPES}


def build(folder, **kwargs):
    model = CoCoOpModel.from_clip(str(folder), ["cat", "red fox", "great_white_shark"], **kwargs)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.prompt_learner.parameters():
            parameter.normal_(0, 0.3)
    return model


def unit(batch, width, seed=0):
    features = torch.randn(batch, width, generator=torch.Generator().manual_seed(seed))
    return features / features.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_prompt_context_start_is_read_from_the_tokenizer(backbones, model_type):
    model = build(backbones[model_type], conditional=False)
    expected = {"clip": 1, "metaclip_2": 1, "siglip": 0, "siglip2": None}[model_type]  # siglip2: left padding
    assert model.config.prompt_context_start == expected
    held = model._held_prompts()
    rows = torch.arange(3)
    # The first context word sits at each class's context_start, whatever the padding side.
    first = model.tokenizer(model.config.prompt_prefix, add_special_tokens=False)["input_ids"][0]
    assert (held.input_ids[rows, held.context_start] == first).all()


def shifted(prompts, shifts, pad_id):
    """The prompts moved right by `shifts[i]` padding tokens each (a left-padded layout, for a causal tower)."""
    ids = torch.full_like(prompts["input_ids"], pad_id)
    for i, shift in enumerate(shifts):
        ids[i, shift:] = prompts["input_ids"][i, : ids.shape[1] - shift]
    shifts = torch.tensor(shifts)
    return {
        "input_ids": ids,
        "eos_index": prompts["eos_index"] + shifts,
        "name_length": prompts["name_length"],
        "context_start": prompts["context_start"] + shifts,
    }


@pytest.mark.parametrize("position", ["end", "middle"])
@pytest.mark.parametrize("shifts", [[2, 2, 2], [0, 3, 1]])  # one start for all (prefix cache at "end"), or per class
def test_the_causal_encoder_reads_a_given_context_start(backbones, shifts, position):
    model = build(backbones["metaclip_2"], class_token_position=position)
    prompts = shifted(model.class_prompts(model.class_names), shifts, model.tokenizer.pad_token_id)
    image_embeds = unit(2, 40)
    uses_cache = model.text_encoder._uses_prefix_cache
    calls = []
    model.text_encoder._uses_prefix_cache = lambda *args: calls.append(uses_cache(*args)) or calls[-1]
    try:
        with torch.no_grad():
            # Per-class starts on a right-padding model are refused at call time (they must agree with
            # config.prompt_context_start: context_start_cocoop); the encoder itself is fed them directly here.
            held = ClassPrompts(
                prompts["input_ids"],
                prompts["eos_index"],
                prompts["name_length"],
                torch.empty(0, 0),
                prompts["context_start"],
            )
            ours = model._text_features(image_embeds, held)
            unshifted = model.get_text_features(image_embeds)
    finally:
        del model.text_encoder._uses_prefix_cache
    assert calls[0] == (position == "end" and len(set(shifts)) == 1)
    reference = Prompts(
        prompts["input_ids"], prompts["eos_index"], prompts["name_length"], prompts["context_start"], None
    )
    with torch.no_grad():
        bias = model.prompt_learner.meta_net(image_embeds)
        expected = torch.stack(
            [
                reference_features_for_context(model.clip, reference, model.prompt_learner.ctx + bias[i], 4, position)
                for i in range(2)
            ]
        )
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    # The shift moved every prompt to other positions: features that ignored context_start could not pass above.
    assert (ours - unshifted).abs().max() > 1e-2


def test_call_prompts_without_a_start_need_one_from_the_config(backbones):
    model = build(backbones["siglip2"], conditional=False)  # left padding: prompt_context_start None
    prompts = dict(model.class_prompts(model.class_names))
    logits = model(image_embeds=unit(1, 48), **prompts).logits
    del prompts["context_start"]
    with pytest.raises(ValueError, match="need `context_start`.*config.prompt_context_start is None"):
        model(image_embeds=unit(1, 48), **prompts)
    assert logits.shape == (1, 3)


@pytest.mark.parametrize("model_type", ["siglip", "siglip2", "clip"])
def test_the_logit_bias_is_added_where_the_backbone_has_one(backbones, model_type):
    model = build(backbones[model_type], conditional=False)
    image_embeds = unit(2, 48 if model_type != "clip" else 40)
    with torch.no_grad():
        before = model(image_embeds=image_embeds).logits
        if model_type == "clip":
            assert not hasattr(model.clip, "logit_bias")
            return
        model.clip.logit_bias.add_(2.25)
        after = model(image_embeds=image_embeds).logits
    torch.testing.assert_close(after - before, torch.full_like(before, 2.25), rtol=0, atol=1e-5)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_the_text_encoder_is_no_part_of_the_weights(backbones, model_type):
    model = build(backbones[model_type])
    backbone_keys = {f"clip.{key}" for key in tiny_backbone(model_type)[0].state_dict()}
    learner_keys = {f"prompt_learner.{key}" for key in model.prompt_learner.state_dict()}
    assert set(model.state_dict()) == backbone_keys | learner_keys
    assert model.backbone is model.clip
    encoder = model.text_encoder
    assert all(module is not encoder for module in model.modules())
    assert encoder.text_model is model.clip.text_model  # a reference, no copy of the weights
    # A copy of the model reads its own backbone, not the original's.
    other = copy.deepcopy(model)
    assert other.text_encoder.text_model is other.clip.text_model and other.clip is not model.clip


def test_no_split_modules_cover_every_backbone():
    names = set(CoCoOpModel._no_split_modules)
    for model_type in MODEL_TYPES:
        model = tiny_backbone(model_type)[0]
        assert set(model._no_split_modules) <= names, model_type
        layer = type(model.text_model.encoder.layers[0]).__name__
        assert layer in names, layer


def test_vision_inputs_are_checked_by_backbone(backbones):
    siglip2 = build(backbones["siglip2"], conditional=False)
    _, _, processor = tiny_backbone("siglip2")
    inputs = processor(images=[torch.rand(3, 40, 40) * 255], return_tensors="pt")
    assert siglip2(**inputs).logits.shape == (1, 3)
    with pytest.raises(ValueError, match=r"`pixel_values` must be \(batch, patches, 192\)"):
        siglip2(pixel_values=random_pixels(1))
    with pytest.raises(ValueError, match="SigLIP 2 needs `spatial_shapes`"):
        siglip2(pixel_values=inputs["pixel_values"])
    with pytest.raises(ValueError, match="positive patch grids of at most 16 patches"):
        siglip2(pixel_values=inputs["pixel_values"], spatial_shapes=torch.tensor([[5, 5]]))
    with pytest.raises(ValueError, match="pass them with it"):
        siglip2(image_embeds=unit(1, 48), spatial_shapes=inputs["spatial_shapes"])
    clip = build(backbones["clip"], conditional=False)
    with pytest.raises(ValueError, match=r"\['spatial_shapes'\] are vision inputs of SigLIP 2"):
        clip(pixel_values=random_pixels(1), spatial_shapes=torch.tensor([[4, 4]]))


def test_a_causal_model_refuses_a_prompt_attention_mask(backbones):
    model = build(backbones["metaclip_2"], conditional=False)
    prompts = dict(model.class_prompts(model.class_names))
    assert "attention_mask" not in prompts
    with pytest.raises(TypeError, match="unexpected keyword argument 'attention_mask'.*carry no attention mask"):
        model(image_embeds=unit(1, 40), attention_mask=torch.ones_like(prompts["input_ids"]), **prompts)


# CLIP pads with its EOS token: transformers would pool a left-padded CLIP text at the padding (its first EOS).
@pytest.mark.parametrize(("model_type", "left"), [("clip", False), ("metaclip_2", False), ("metaclip_2", True)])
def test_causal_text_features_equal_the_backbones_own(backbones, model_type, left):
    """`text_features` without EOS positions pools where transformers does; a mask hides left padding as there."""
    model = build(backbones[model_type], conditional=False)
    tokenizer = model.tokenizer
    texts = ["a photo of a cat.", "a photo of a great white shark.", "red fox."]
    tokenizer.padding_side = "left" if left else "right"
    try:
        inputs = tokenizer(texts, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = "right"
    with torch.no_grad():
        expected = model.clip.get_text_features(**inputs).pooler_output
        expected = expected / expected.norm(dim=-1, keepdim=True)
        ours = model.text_encoder.text_features(inputs["input_ids"], attention_mask=inputs["attention_mask"])
        unmasked = model.text_encoder.text_features(inputs["input_ids"])
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    # Without the mask, left padding is attended to (the causal mask alone does not hide it): other features.
    assert ((unmasked - expected).abs().max() > 1e-3) == left


def test_legacy_eos_id_pools_at_the_largest_id(legacy_clip_dir, tokenizer):
    """OpenAI configs' eos_token_id 2: transformers pools at argmax(input_ids) (CLIPTextTransformer.forward)."""
    model = CoCoOpModel.from_clip(str(legacy_clip_dir), CLASS_NAMES, tokenizer=tokenizer)
    inputs = tokenizer(["a photo of a cat.", "a tench."], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model.clip.get_text_features(**inputs).pooler_output
        ours = model.text_encoder.text_features(inputs["input_ids"])
    torch.testing.assert_close(ours, expected / expected.norm(dim=-1, keepdim=True), rtol=0, atol=1e-5)


def test_the_pipeline_passes_siglip2_vision_inputs_and_every_prompt_tensor(backbones):
    from PIL import Image

    from cocoop_hf.pipeline_cocoop import CoCoOpZeroShotImageClassificationPipeline

    model = build(backbones["siglip2"])
    processor = tiny_backbone("siglip2")[2]
    pipe = CoCoOpZeroShotImageClassificationPipeline(model=model, image_processor=processor)
    pixels = (torch.rand(40, 40, 3, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8).numpy()
    image = Image.fromarray(pixels)
    labels = ["red fox", "cat", "great shark"]
    scores = {row["label"]: row["score"] for row in pipe(image, candidate_labels=labels)}
    with torch.no_grad():
        expected = model(**processor(images=[image], return_tensors="pt"), **model.class_prompts(labels)).logits
    expected = expected[0].softmax(-1).tolist()
    assert [scores[label] for label in labels] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_kgcoop_targets_are_the_backbones_own_text_features(backbones, model_type):
    """`zero_shot_text_features`: the template read as the backbone reads texts (SigLIP: padded to its context)."""
    model = build(backbones[model_type], conditional=False, kgcoop_weight=1.0)
    names = ["cat", "red_fox", "great white shark"]
    texts = [model.config.kgcoop_template.format(name.replace("_", " ")) for name in names]
    causal = model_type in ("clip", "metaclip_2")
    padding = {"padding": True} if causal else {"padding": "max_length", "max_length": 64}
    inputs = model.tokenizer(texts, return_tensors="pt", **padding)
    with torch.no_grad():
        expected = model.clip.get_text_features(**inputs).pooler_output
        ours = model.zero_shot_text_features(names)
    torch.testing.assert_close(ours, expected / expected.norm(dim=-1, keepdim=True), rtol=0, atol=1e-5)
    held = model.zero_shot_text_features(model.class_names)
    torch.testing.assert_close(model.zero_shot_embeds, held, rtol=0, atol=1e-6)


def test_a_given_backbone_must_be_the_configs_class(backbones):
    model = build(backbones["clip"], conditional=False)
    siglip = tiny_backbone("siglip")[0]
    with pytest.raises(TypeError, match="`clip_model` must be a CLIPModel.*'clip'.*got SiglipModel"):
        CoCoOpModel(model.config, clip_model=siglip)
