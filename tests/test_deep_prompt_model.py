"""
IVLP, MaPLe and PromptSRC as CoCoOpModel configs (issue 19): logits and every prompt gradient against the plain fp32
references of tests/reference_deep_prompts.py built from the prompt learner's raw tensors; PromptSRC's terms against
the official formulas written out here (trainers/promptsrc.py); config refusals; the official initialisation
(MaPLe's cloned projections); save / load / adapter round trips; class sets; a forward changes nothing.
Tiny random CLIP (3 layers per tower), fp32: every number here is of random weights.
"""

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPTokenizer, SiglipConfig

from cocoop_hf import CoCoOpConfig, CoCoOpModel
from cocoop_hf.promptsrc_cocoop import IMAGENET_TEMPLATES

from .conftest import CLASS_NAMES, NEW_CLASS_NAMES, TOKENIZER_DIR, random_pixels, save_tiny_clip, tiny_clip_config
from .reference_deep_prompts import reference_image_features, reference_text_features


pytestmark = pytest.mark.usefixtures("single_thread")

LAYERS = 3
# The three methods as config options (depths below the tiny CLIP's 3 layers where it matters: a depth that stops
# early must leave the later layers unprompted).
METHODS = {
    "ivlp": dict(conditional=False, prompt_depth_text=3, prompt_depth_vision=2, n_ctx_vision=3),
    "maple": dict(
        conditional=False, n_ctx=2, prompt_depth_text=3, prompt_depth_vision=3, vision_prompts_from_text=True
    ),
    "promptsrc": dict(
        conditional=False,
        prompt_depth_text=2,
        prompt_depth_vision=3,
        n_ctx_vision=2,
        promptsrc_text_weight=25.0,
        promptsrc_image_weight=10.0,
        promptsrc_logits_weight=1.0,
    ),
}
WEIGHT_FIELDS = ("promptsrc_text_weight", "promptsrc_image_weight", "promptsrc_logits_weight")


@pytest.fixture(scope="module")
def deep_clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("deep-clip"), seed=3, layers=LAYERS)


@pytest.fixture(scope="module")
def tok():
    return CLIPTokenizer.from_pretrained(TOKENIZER_DIR)


def build(deep_clip_dir, tok, method, names=CLASS_NAMES, perturb=True):
    model = CoCoOpModel.from_clip(str(deep_clip_dir), names, tokenizer=tok, **METHODS[method])
    if perturb:  # prompts far from their init, so that a misplaced prompt moves the numbers
        generator = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for parameter in model.prompt_learner.parameters():
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return model


@pytest.fixture(scope="module", params=sorted(METHODS))
def method_model(request, deep_clip_dir, tok):
    return request.param, build(deep_clip_dir, tok, request.param)


def raw_prompts(model):
    """The prompt learner's tensors as the official code would use them, MaPLe's projections applied by hand."""
    learner = model.prompt_learner
    text = list(learner.text_prompts)
    if model.config.vision_prompts_from_text:
        sources = [learner.ctx, *text]
        vision = [
            source @ projection.weight.t() + projection.bias
            for source, projection in zip(sources, learner.vision_projections, strict=False)
        ]
    else:
        vision = list(learner.vision_prompts)
    return learner.ctx, text, vision


def normalised(x):
    return x / x.norm(dim=-1, keepdim=True)


def reference_logits(model, pixel_values, input_ids=None, eos_index=None):
    """Official CustomCLIP.forward on the references: normalised features, logit_scale.exp() x cosine."""
    input_ids = model.prompt_ids if input_ids is None else input_ids
    eos_index = model.eos_index if eos_index is None else eos_index
    ctx, text, vision = raw_prompts(model)
    image = normalised(reference_image_features(model.clip, pixel_values, vision))
    texts = normalised(reference_text_features(model.clip, input_ids, eos_index, 1, ctx, text))
    return model.clip.logit_scale.exp() * image @ texts.t(), image, texts


def plain_teacher(model, names):
    """Official VLPromptLearner.__init__: mean over the 60 templates of unnormalised encode_text, then normalised."""
    tok = model.tokenizer
    total = 0
    for template in IMAGENET_TEMPLATES:
        encoded = tok(
            [template.replace("{}", name.replace("_", " ")) for name in names], padding=True, return_tensors="pt"
        )
        with torch.no_grad():
            total = total + model.clip.get_text_features(**encoded).pooler_output
    return normalised(total / len(IMAGENET_TEMPLATES))


def plain_terms(logits, texts, teacher, image, frozen_image, logit_scale):
    """PromptSRC.forward_backward's three terms, each formula written out (no F.l1_loss, no F.kl_div)."""
    zero_shot_logits = logit_scale * frozen_image @ teacher.t()
    p_zero_shot = torch.softmax(zero_shot_logits, dim=1)
    kl = (p_zero_shot * (torch.log_softmax(zero_shot_logits, 1) - torch.log_softmax(logits, 1))).sum()
    return (texts - teacher).abs().mean(), (image - frozen_image).abs().mean(), kl / logits.numel()


# ---------------------------------------------------------------------------------------------- equivalence


def test_logits_equal_the_reference(method_model):
    method, model = method_model
    assert model.config.method_name == method
    pixels = random_pixels(3, seed=1)
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
        expected, _, _ = reference_logits(model, pixels)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def test_every_prompt_gradient_equals_the_reference(method_model):
    method, model = method_model
    pixels, labels = random_pixels(4, seed=2), torch.tensor([0, 3, 6, 2])
    parameters = dict(model.prompt_learner.named_parameters())
    out = model(pixel_values=pixels, labels=labels)
    grads = torch.autograd.grad(out.loss, list(parameters.values()))

    logits, image, texts = reference_logits(model, pixels)
    loss = F.cross_entropy(logits, labels)
    if method == "promptsrc":
        with torch.no_grad():
            frozen = normalised(model.clip.get_image_features(pixel_values=pixels).pooler_output)
        teacher = plain_teacher(model, CLASS_NAMES)
        terms = plain_terms(logits, texts, teacher, image, frozen, model.clip.logit_scale.exp())
        loss = loss + sum(getattr(model.config, f) * t for f, t in zip(WEIGHT_FIELDS, terms, strict=True))
    expected = torch.autograd.grad(loss, list(parameters.values()))
    torch.testing.assert_close(out.loss, loss, atol=1e-5, rtol=0)
    for name, grad, reference in zip(parameters, grads, expected, strict=True):
        assert reference.abs().max() > 0, name  # every prompt reaches the loss
        error = (grad - reference).abs().max() / reference.abs().max()
        assert error <= 1e-4, f"{method} {name}: relative gradient error {float(error):.2e}"


def test_promptsrc_terms_equal_the_official_formulas(deep_clip_dir, tok):
    model = build(deep_clip_dir, tok, "promptsrc")
    pixels, labels = random_pixels(3, seed=4), torch.tensor([1, 5, 0])
    with torch.no_grad():
        out = model(pixel_values=pixels, labels=labels)
        logits, image, texts = reference_logits(model, pixels)
        frozen = normalised(model.clip.get_image_features(pixel_values=pixels).pooler_output)
        teacher = plain_teacher(model, CLASS_NAMES)
        scale = model.clip.logit_scale.exp()
        text, image_term, kl = plain_terms(logits, texts, teacher, image, frozen, scale)
    # The teacher the model holds for its class set is the 60-template mean of unnormalised features, normalised.
    torch.testing.assert_close(model.zero_shot_embeds, teacher, atol=1e-5, rtol=0)
    assert len(IMAGENET_TEMPLATES) == 60 and IMAGENET_TEMPLATES[0] == "a photo of a {}."
    for field, value in (("text", text), ("image", image_term), ("logits", kl)):
        assert float(value) > 1e-4, field  # not trivially zero, so the comparison means something
        torch.testing.assert_close(getattr(out, f"promptsrc_{field}_loss"), value, atol=1e-5, rtol=0)
    weighted = F.cross_entropy(logits, labels) + 25.0 * text + 10.0 * image_term + 1.0 * kl
    torch.testing.assert_close(out.loss, weighted, atol=1e-5, rtol=0)
    # KL(zero-shot || prompted), not the other way round: the swapped divergence is another number.
    zero_shot_logits = scale * frozen @ teacher.t()
    swapped = (torch.softmax(logits, 1) * (logits.log_softmax(1) - zero_shot_logits.log_softmax(1))).sum()
    assert abs(float(swapped / logits.numel()) - float(out.promptsrc_logits_loss)) > 1e-4
    # The mean of normalised template features (another plausible reading) is another teacher.
    normalised_mean = 0
    for template in IMAGENET_TEMPLATES:
        encoded = tok(
            [template.replace("{}", n.replace("_", " ")) for n in CLASS_NAMES], padding=True, return_tensors="pt"
        )
        with torch.no_grad():
            normalised_mean = normalised_mean + normalised(model.clip.get_text_features(**encoded).pooler_output)
    assert (normalised(normalised_mean) - model.zero_shot_embeds).abs().max() > 1e-4


def test_a_term_with_weight_zero_is_not_computed(deep_clip_dir, tok):
    model = CoCoOpModel.from_clip(
        str(deep_clip_dir),
        CLASS_NAMES,
        tokenizer=tok,
        **{**METHODS["promptsrc"], "promptsrc_text_weight": 0.0, "promptsrc_logits_weight": 0.0},
    )
    assert model.config.method_name == "promptsrc"
    assert model.zero_shot_embeds.numel() == 0  # no teacher needed: none computed
    out = model(pixel_values=random_pixels(2), labels=torch.tensor([0, 1]))
    assert out.promptsrc_text_loss is None and out.promptsrc_logits_loss is None
    assert out.promptsrc_image_loss is not None


# ---------------------------------------------------------------------------------------------- config


def test_new_fields_default_to_the_existing_methods():
    config = CoCoOpConfig()
    assert (config.prompt_depth_text, config.prompt_depth_vision, config.n_ctx_vision) == (1, 0, None)
    assert not config.vision_prompts_from_text and not config.has_deep_prompts
    assert config.method_name == "cocoop"
    assert CoCoOpConfig(conditional=False).method_name == "coop"
    assert CoCoOpConfig(conditional=False, kgcoop_weight=8.0).method_name == "kgcoop"
    for method, options in METHODS.items():
        assert CoCoOpConfig(backbone_config=tiny_clip_config(layers=LAYERS), **options).method_name == method


def test_an_old_config_json_loads_unchanged(tmp_path):
    saved = CoCoOpConfig(backbone_config=tiny_clip_config(), conditional=False, id2label={0: "cat", 1: "dog"})
    old = saved.to_dict()
    for field in (
        "prompt_depth_text",
        "prompt_depth_vision",
        "n_ctx_vision",
        "vision_prompts_from_text",
        *WEIGHT_FIELDS,
    ):
        del old[field]  # a config.json written before these fields existed
    (tmp_path / "config.json").write_text(json.dumps(old))
    loaded = CoCoOpConfig.from_pretrained(tmp_path)
    assert loaded.method_name == "coop" and loaded.prompt_depth_text == 1 and loaded.prompt_depth_vision == 0
    assert loaded.to_dict() == saved.to_dict()


def test_deep_fields_survive_a_config_round_trip(tmp_path):
    config = CoCoOpConfig(backbone_config=tiny_clip_config(layers=LAYERS), **METHODS["promptsrc"])
    config.save_pretrained(tmp_path)
    loaded = CoCoOpConfig.from_pretrained(tmp_path)
    assert loaded.method_name == "promptsrc"
    assert (loaded.prompt_depth_text, loaded.prompt_depth_vision, loaded.n_ctx_vision) == (2, 3, 2)
    assert (loaded.promptsrc_text_weight, loaded.promptsrc_image_weight, loaded.promptsrc_logits_weight) == (25, 10, 1)


def test_maple_learns_the_first_words_of_a_longer_ctx_init():
    config = CoCoOpConfig(backbone_config=tiny_clip_config(layers=LAYERS), **METHODS["maple"])
    assert config.n_ctx == 2 and config.ctx_init == "a photo of a" and config.prompt_prefix_tokens == 4
    with pytest.raises(ValueError, match=r"fewer only with deep prompts"):
        CoCoOpConfig(conditional=False, n_ctx=2)  # CoOp learns exactly its words


BASE = dict(conditional=False, prompt_depth_text=2, prompt_depth_vision=2)
REFUSED = [
    (dict(BASE, conditional=True), r"conditional=True"),
    (dict(BASE, class_specific_context=True, id2label={0: "a", 1: "b"}), r"class_specific_context=True"),
    (dict(BASE, class_token_position="front"), r"class_token_position='front'"),
    (dict(BASE, kgcoop_weight=8.0), r"kgcoop_weight=8.0"),
    (dict(BASE, prompt_depth_text=4), r"`prompt_depth_text`=4 exceeds the 3 layers"),
    (dict(BASE, prompt_depth_vision=4), r"`prompt_depth_vision`=4 exceeds the 3 layers"),
    (dict(BASE, prompt_depth_text=0), r"`prompt_depth_text` must be an integer >= 1"),
    (dict(BASE, prompt_depth_vision=-1), r"`prompt_depth_vision` must be an integer >= 0"),
    (dict(BASE, prompt_depth_vision=True), r"`prompt_depth_vision` must be an integer"),
    (dict(conditional=False, n_ctx_vision=4), r"`n_ctx_vision`=4 without vision prompts"),
    (dict(BASE, prompt_depth_vision=0, n_ctx_vision=4), r"`n_ctx_vision`=4 without vision prompts"),
    (dict(BASE, n_ctx_vision=0), r"`n_ctx_vision` must be an integer in \[1, 17\]"),
    (dict(BASE, vision_prompts_from_text=True, prompt_depth_vision=1), r"one prompt depth"),
    (dict(BASE, vision_prompts_from_text=True, n_ctx_vision=3), r"MaPLe.*leave n_ctx_vision None"),
    (dict(BASE, vision_prompts_from_text=True, promptsrc_text_weight=1.0), r"not\s+to MaPLe's"),
    (dict(conditional=False, promptsrc_image_weight=10.0), r"need|regularise deep prompts"),
    (dict(BASE, promptsrc_logits_weight=-1.0), r"`promptsrc_logits_weight` must be a finite number >= 0"),
    (dict(BASE, promptsrc_text_weight=float("nan")), r"`promptsrc_text_weight` must be a finite number"),
    (dict(BASE, vision_prompts_from_text="yes"), r"`vision_prompts_from_text` must be True or False"),
    (dict(BASE, n_ctx=5), r"`n_ctx`=5 is inconsistent"),
]


@pytest.mark.parametrize(("options", "match"), REFUSED)
def test_config_refusals(options, match):
    with pytest.raises(ValueError, match=match):
        CoCoOpConfig(backbone_config=tiny_clip_config(layers=LAYERS), **options)


def test_siglip_is_refused_for_deep_prompts():
    with pytest.raises(ValueError, match=r"need a CLIP or MetaCLIP 2 backbone.*SigLIP"):
        CoCoOpConfig(backbone_config=SiglipConfig(), **BASE)


def test_a_config_override_is_checked(tmp_path):
    CoCoOpConfig(backbone_config=tiny_clip_config(layers=LAYERS)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"conditional=True"):
        CoCoOpConfig.from_pretrained(tmp_path, prompt_depth_text=2)


# ---------------------------------------------------------------------------------------------- initialisation


def test_official_initialisation(deep_clip_dir, tok):

    maple = build(deep_clip_dir, tok, "maple", perturb=False)
    words = tok("a photo", add_special_tokens=False)["input_ids"]
    token_embedding = maple.clip.text_model.embeddings.token_embedding.weight
    torch.testing.assert_close(maple.prompt_learner.ctx, token_embedding[words], atol=0, rtol=0)
    projections = maple.prompt_learner.vision_projections
    assert torch.equal(projections[1].weight, projections[2].weight)  # official _get_clones: copies of one Linear
    assert torch.equal(projections[1].bias, projections[2].bias)
    assert not torch.equal(projections[0].weight, projections[1].weight)  # official `proj`: a Linear of its own
    bound = 1 / math.sqrt(projections[0].in_features)  # PyTorch's default Linear init
    assert float(projections[0].bias.detach().abs().max()) <= bound
    assert float(projections[0].weight.detach().abs().max()) <= bound
    ivlp = build(deep_clip_dir, tok, "ivlp", perturb=False)
    for prompt in (*ivlp.prompt_learner.text_prompts, *ivlp.prompt_learner.vision_prompts):
        assert 0.01 < float(prompt.detach().std()) < 0.03  # N(0, 0.02)
    fresh = CoCoOpModel(CoCoOpConfig(backbone_config=tiny_clip_config(layers=LAYERS), **METHODS["maple"]))
    assert torch.equal(
        fresh.prompt_learner.vision_projections[1].weight, fresh.prompt_learner.vision_projections[2].weight
    )
    assert 0.01 < float(fresh.prompt_learner.ctx.detach().std()) < 0.03


# ---------------------------------------------------------------------------------------------- class sets, purity


def test_class_prompts_per_call_equal_a_held_class_set(deep_clip_dir, tok):
    model = build(deep_clip_dir, tok, "promptsrc")
    pixels, labels = random_pixels(2, seed=5), torch.tensor([0, 7])
    prompts = model.class_prompts(NEW_CLASS_NAMES)
    with pytest.raises(ValueError, match=r"teacher.*zero_shot_text_features"):
        model(pixel_values=pixels, labels=labels, **prompts)
    teacher = model.zero_shot_text_features(NEW_CLASS_NAMES)
    with pytest.raises(ValueError, match=r"`zero_shot_embeds` must be \(classes, projection_dim\) = \(8, 48\)"):
        model(pixel_values=pixels, labels=labels, zero_shot_embeds=teacher[:2], **prompts)
    given = model(pixel_values=pixels, labels=labels, zero_shot_embeds=teacher, **prompts)
    assert model.class_names == CLASS_NAMES  # a call's prompts change nothing
    expected, _, _ = reference_logits(model, pixels, prompts["input_ids"], prompts["eos_index"])
    torch.testing.assert_close(given.logits, expected.detach(), atol=1e-5, rtol=0)
    model.set_class_names(NEW_CLASS_NAMES)
    held = model(pixel_values=pixels, labels=labels)
    torch.testing.assert_close(held.logits, given.logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(held.loss, given.loss, atol=1e-6, rtol=0)


def test_get_text_features_needs_no_image(method_model):
    _, model = method_model
    pixels = random_pixels(2, seed=6)
    with torch.no_grad():
        texts = model.get_text_features()
        image = model.get_image_features(pixels)
        logits = model(pixel_values=pixels).logits
        from_embeds = model(image_embeds=image).logits
    assert texts.shape == (1, len(CLASS_NAMES), model.config.backbone_config.projection_dim)
    torch.testing.assert_close(model.clip.logit_scale.exp() * image @ texts[0].t(), logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(from_embeds, logits, atol=1e-6, rtol=0)  # image_embeds are taken as this model's


def test_promptsrc_with_labels_needs_pixels(deep_clip_dir, tok):
    model = build(deep_clip_dir, tok, "promptsrc")
    image = model.get_image_features(random_pixels(2)).detach()
    with pytest.raises(ValueError, match=r"pass `pixel_values` with `labels`"):
        model(image_embeds=image, labels=torch.tensor([0, 1]))
    assert model(image_embeds=image).loss is None  # without labels no term is needed


def test_a_forward_changes_nothing(method_model):
    _, model = method_model
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    class_set, id2label = model._class_set, dict(model.config.id2label)
    out = model(pixel_values=random_pixels(2, seed=8), labels=torch.tensor([1, 2]))
    out.loss.backward()
    model.zero_grad(set_to_none=True)
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert model._class_set is class_set and model.config.id2label == id2label


def test_thread_count_changes_nothing_that_matters(method_model):
    _, model = method_model
    pixels = random_pixels(3, seed=9)
    with torch.no_grad():
        one = model(pixel_values=pixels).logits
        torch.set_num_threads(2)
        try:
            two = model(pixel_values=pixels).logits
        finally:
            torch.set_num_threads(1)
    torch.testing.assert_close(one, two, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- saving and loading


@pytest.mark.parametrize("method", sorted(METHODS))
def test_save_load_round_trips(method, deep_clip_dir, tok, tmp_path):
    model = build(deep_clip_dir, tok, method)
    pixels = random_pixels(3, seed=10)
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits
    model.save_pretrained(tmp_path / "full")
    model.save_pretrained(tmp_path / "adapter", adapter_only=True)
    files = set(os.listdir(tmp_path / "full"))
    shipped = {"prompt_learner_deep.py", "promptsrc_cocoop.py", "text_encoder_deep.py", "vision_encoder_prompted.py"}
    assert shipped <= files and "modelcard_cocoop.py" not in files
    assert shipped <= set(os.listdir(tmp_path / "adapter"))
    processor = json.loads((tmp_path / "adapter" / "processor_config.json").read_text())
    assert processor["n_ctx"] == model.config.prompt_prefix_tokens  # the words each prompt holds (MaPLe: 4)
    for loaded in (
        CoCoOpModel.from_pretrained(tmp_path / "full"),
        CoCoOpModel.from_pretrained(tmp_path / "adapter"),
        CoCoOpModel.from_pretrained(tmp_path / "adapter", clip_model=model.clip),
    ):
        assert loaded.config.method_name == method
        assert type(loaded.prompt_learner) is type(model.prompt_learner)
        with torch.no_grad():
            torch.testing.assert_close(loaded(pixel_values=pixels).logits, expected, atol=1e-6, rtol=0)


def test_prompt_learner_state_is_checked_against_the_config(deep_clip_dir, tok):
    ivlp, maple = build(deep_clip_dir, tok, "ivlp"), build(deep_clip_dir, tok, "maple")
    with pytest.raises(ValueError, match=r"this maple model \(n_ctx=2.*missing \['vision_projections\.0\.bias'"):
        maple.load_prompt_learner_state(ivlp.prompt_learner.state_dict())
    state = dict(ivlp.prompt_learner.state_dict())
    state["vision_prompts.1"] = torch.zeros(4, state["vision_prompts.1"].shape[1])
    with pytest.raises(ValueError, match=r"'vision_prompts.1' has shape \(4, 64\).*needs \(3, 64\).*3 tokens"):
        ivlp.load_prompt_learner_state(state)
    state = dict(ivlp.prompt_learner.state_dict())
    state["text_prompts.5"] = state.pop("text_prompts.1")
    with pytest.raises(ValueError, match=r"missing \['text_prompts.1'\], unexpected \['text_prompts.5'\]"):
        ivlp.load_prompt_learner_state(state)


def test_model_card_names_the_method(deep_clip_dir, tok):
    from cocoop_hf.sharing_cocoop import _render_card

    for method, title, cite in (
        ("maple", "MaPLe", "khattak2023maple"),
        ("promptsrc", "PromptSRC", "khattak2023promptsrc"),
    ):
        card = str(_render_card(build(deep_clip_dir, tok, method, perturb=False), "user/model"))
        assert f"**{title}**" in card and cite in card


def test_maple_folder_through_its_processor_and_the_zero_shot_pipeline(deep_clip_dir, tok, tmp_path):
    """MaPLe's prompts hold all four words of "a photo of a" while 2 are learned: the saved processor builds them."""
    from PIL import Image
    from transformers import AutoProcessor, pipeline

    model = build(deep_clip_dir, tok, "maple")
    model.save_pretrained(tmp_path)
    processor = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    built = processor(class_names=NEW_CLASS_NAMES[:3])
    expected = model.class_prompts(NEW_CLASS_NAMES[:3])
    assert torch.equal(built["input_ids"], expected["input_ids"])
    image = Image.fromarray((torch.rand(40, 40, 3, generator=torch.Generator().manual_seed(11)) * 255).byte().numpy())
    pipe = pipeline("zero-shot-image-classification", model=str(tmp_path), trust_remote_code=True)
    scores = {row["label"]: row["score"] for row in pipe(image, candidate_labels=NEW_CLASS_NAMES[:3])}
    with torch.no_grad():
        pixels = processor(images=image, return_tensors="pt")["pixel_values"]
        logits = model(pixel_values=pixels, **expected).logits
    probabilities = logits.softmax(dim=-1)[0].tolist()
    for name, probability in zip(NEW_CLASS_NAMES[:3], probabilities, strict=True):
        assert abs(scores[name] - probability) < 1e-5


def test_metaclip_2_backbone(tmp_path):
    """MetaCLIP 2 (XLM-R tokenizer, `<s>` before the context) takes deep prompts too; equal to the reference."""
    from .tiny_backbones import save_tiny_backbone

    folder = save_tiny_backbone(tmp_path, "metaclip_2", seed=2)
    model = CoCoOpModel.from_clip(str(folder), CLASS_NAMES[:4], **METHODS["promptsrc"] | {"prompt_depth_vision": 2})
    assert model.config.method_name == "promptsrc" and model.config.prompt_context_start == 1
    pixels, labels = (
        random_pixels(2, size=model.config.backbone_config.vision_config.image_size, seed=3),
        torch.tensor([0, 3]),
    )
    out = model(pixel_values=pixels, labels=labels)
    with torch.no_grad():
        expected, _, _ = reference_logits(model, pixels)
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=0)
    assert all(torch.isfinite(getattr(out, f"promptsrc_{k}_loss")) for k in ("text", "image", "logits"))


def test_get_text_features_without_image_for_the_coop_family(deep_clip_dir, tok):
    coop = CoCoOpModel.from_clip(str(deep_clip_dir), CLASS_NAMES, tokenizer=tok, conditional=False)
    assert coop.get_text_features().shape == (1, len(CLASS_NAMES), 48)  # CoOp's context ignores the image
    cocoop = CoCoOpModel.from_clip(str(deep_clip_dir), CLASS_NAMES, tokenizer=tok)
    with pytest.raises(ValueError, match=r"CoCoOp's context depends on the image: pass `image_embeds`"):
        cocoop.get_text_features()
