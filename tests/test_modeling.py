"""CoCoOpModel: the batched fast path against the per-image reference, zero-shot identity, freezing, bad input."""

import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import CLIPModel

from cocoop_hf import CoCoOpModel

from .conftest import CLASS_NAMES, NEW_CLASS_NAMES, random_pixels
from .reference_cocoop import held_prompts, reference_logits


# Class names of several prompt lengths (bucketing groups them; padding mixes them).
MIXED_CLASS_NAMES = ["a", "very long class name with quite a few words in it", "x_y_z", "café crème", "b c"]
CLASS_SETS = {"base": CLASS_NAMES, "new": NEW_CLASS_NAMES, "mixed": MIXED_CLASS_NAMES}
TRAINABLE = {
    "prompt_learner.ctx",
    "prompt_learner.meta_net.linear1.weight",
    "prompt_learner.meta_net.linear1.bias",
    "prompt_learner.meta_net.linear2.weight",
    "prompt_learner.meta_net.linear2.bias",
}
RTOL = 1e-5  # fp32, relative to the largest reference logit


pytestmark = pytest.mark.usefixtures("single_thread")


def randomize_prompt_learner(model, seed=0, std=0.3):
    """Non-trivial context and meta-net so that a wrong bias, position or mask shows in the logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.prompt_learner.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return model


def assert_close_relative(actual, expected, rtol=RTOL, what="values"):
    scale = expected.abs().max().item()
    diff = (actual - expected).abs().max().item()
    assert diff <= rtol * scale, f"{what}: max abs diff {diff:.3e} > {rtol} x max |ref| {scale:.3e}"


@pytest.fixture(scope="module")
def models(tiny_clip_dir, legacy_clip_dir, tokenizer):
    """Randomised CoCoOp and CoOp models on the current and the legacy (eos_token_id=2) tiny CLIP."""
    built = {}
    for clip_name, clip_dir in (("current", tiny_clip_dir), ("legacy", legacy_clip_dir)):
        for conditional in (True, False):
            model = CoCoOpModel.from_clip(str(clip_dir), CLASS_NAMES, conditional=conditional, tokenizer=tokenizer)
            built[clip_name, conditional] = randomize_prompt_learner(model, seed=int(conditional))
    return built


def configure(model, mode):
    if mode == "no_bucket":
        model.config.bucket_by_length = False
    elif mode == "chunked":
        model.config.text_chunk_tokens = 1  # one class per text-tower call
    elif mode == "chunked_some":
        model.config.text_chunk_tokens = 70  # two short classes per call at batch 3: 2 x 3 x (1 + 4 + 6) tokens
    elif mode == "gc_flag":
        model.gradient_checkpointing = True
    elif mode == "gc_enable":  # the deprecated name (transformers 5, removed in v6) still works on our model
        with pytest.warns(FutureWarning, match="gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable()
        assert model.gradient_checkpointing, "gradient_checkpointing_enable() did not set the flag the text path reads"
    elif mode == "ac_enable":  # the name transformers 5 recommends
        model.activation_checkpointing_enable()
        assert model.gradient_checkpointing, "activation_checkpointing_enable() did not set the flag"
    else:
        assert mode == "default"
    return model


@pytest.fixture
def get_model(models):
    """A shared model, restored after the test (class names, speed knobs, checkpointing, gradients)."""
    used = []

    def get(clip_name="current", conditional=True):
        model = models[clip_name, conditional]
        used.append((model, copy.deepcopy(model.config.to_dict()), model.class_names))
        return model

    yield get
    for model, config, class_names in used:
        model.activation_checkpointing_disable()
        model.gradient_checkpointing = False
        model.config.bucket_by_length = config["bucket_by_length"]
        model.config.text_chunk_tokens = config["text_chunk_tokens"]
        model.set_class_names(class_names)
        model.zero_grad(set_to_none=True)
        model.eval()


def check_against_reference(model, batch, seed=0):
    """Logits, loss and the gradient of every trainable tensor equal the per-image reference's."""
    pixel_values = random_pixels(batch, seed=seed)
    labels = torch.arange(batch) % len(model.class_names)
    model.zero_grad(set_to_none=True)
    reference = reference_logits(model, *held_prompts(model), pixel_values=pixel_values)
    F.cross_entropy(reference, labels).backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    reference = reference.detach()

    model.zero_grad(set_to_none=True)
    output = model(pixel_values=pixel_values, labels=labels)
    assert output.logits.shape == (batch, len(model.class_names))
    assert_close_relative(output.logits.detach(), reference)
    torch.testing.assert_close(output.loss.detach(), F.cross_entropy(reference, labels), rtol=RTOL, atol=1e-6)
    output.loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    assert set(grads) == set(expected)
    for name, grad in grads.items():
        assert grad is not None, name
        assert expected[name].abs().max() > 0, f"{name}: zero reference gradient, the test could not fail"
        assert_close_relative(grad, expected[name], rtol=1e-4)  # gradients: a few more fp32 roundings


@pytest.mark.parametrize("conditional", [True, False], ids=["cocoop", "coop"])
@pytest.mark.parametrize("class_set", list(CLASS_SETS))
@pytest.mark.parametrize("batch", [1, 3])
def test_fast_path_matches_reference(get_model, conditional, class_set, batch):
    model = get_model(conditional=conditional)
    model.set_class_names(CLASS_SETS[class_set])
    check_against_reference(model, batch)


@pytest.mark.parametrize("mode", ["no_bucket", "chunked", "chunked_some", "gc_flag", "gc_enable", "ac_enable"])
@pytest.mark.parametrize("conditional", [True, False], ids=["cocoop", "coop"])
def test_fast_path_matches_reference_in_every_mode(get_model, conditional, mode):
    model = configure(get_model(conditional=conditional), mode)
    model.set_class_names(MIXED_CLASS_NAMES)
    check_against_reference(model, batch=3, seed=1)


@pytest.mark.parametrize("conditional", [True, False], ids=["cocoop", "coop"])
def test_fast_path_matches_reference_legacy_eos(get_model, conditional):
    model = get_model("legacy", conditional)
    assert model.config.clip_config.text_config.eos_token_id == 2
    check_against_reference(model, batch=2)


def test_reference_comparison_can_fail(models):
    """The tolerance is far below the effect of the meta-net and of the context: a wrong path would show."""
    model = models["current", True]
    pixel_values = random_pixels(2)
    with torch.no_grad():
        logits = model(pixel_values=pixel_values).logits
        scale = logits.abs().max()
        shifted = copy.deepcopy(model)
        # Not a constant shift: LayerNorm removes the mean of every token, so a constant bias would not show.
        shifted.prompt_learner.meta_net.linear2.bias.add_(
            0.01 * torch.randn(64, generator=torch.Generator().manual_seed(0))
        )
        assert (shifted(pixel_values=pixel_values).logits - logits).abs().max() > 100 * RTOL * scale
    # CoCoOp context depends on the image: the same class scores differ across images beyond the image feature.
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        zeroed.prompt_learner.meta_net.linear2.weight.zero_()
        assert (zeroed(pixel_values=pixel_values).logits - logits).abs().max() > 100 * RTOL * scale


def test_image_embeds_input_equals_pixel_values(models):
    model = models["current", True]
    pixel_values = random_pixels(2)
    with torch.no_grad():
        from_pixels = model(pixel_values=pixel_values)
        from_embeds = model(image_embeds=model.get_image_features(pixel_values))
    torch.testing.assert_close(from_pixels.logits, from_embeds.logits, rtol=0, atol=0)
    torch.testing.assert_close(from_pixels.image_embeds.norm(dim=-1), torch.ones(2))


# ---------------------------------------------------------------------------------------------- zero-shot identity


@pytest.mark.parametrize("clip_fixture", ["tiny_clip_dir", "legacy_clip_dir"])
@pytest.mark.parametrize("conditional", [True, False], ids=["cocoop", "coop"])
def test_zero_shot_identity(request, clip_fixture, conditional, tokenizer):
    """ctx = embeddings of "a photo of a", meta-net output 0 => CLIP's own zero-shot logits."""
    clip_dir = request.getfixturevalue(clip_fixture)
    model = CoCoOpModel.from_clip(str(clip_dir), NEW_CLASS_NAMES, conditional=conditional, tokenizer=tokenizer)
    if conditional:
        with torch.no_grad():
            model.prompt_learner.meta_net.linear2.weight.zero_()
            model.prompt_learner.meta_net.linear2.bias.zero_()
    clip = CLIPModel.from_pretrained(clip_dir).eval()
    prompts = [f"a photo of a {name.replace('_', ' ')}." for name in NEW_CLASS_NAMES]
    text = tokenizer(prompts, padding=True, return_tensors="pt")
    pixel_values = random_pixels(3)
    with torch.no_grad():
        expected = clip(**text, pixel_values=pixel_values).logits_per_image
        actual = model(pixel_values=pixel_values).logits
    assert_close_relative(actual, expected)


# ---------------------------------------------------------------------------------------------- autocast


def test_bf16_autocast_close_to_fp32(get_model):
    """bf16 keeps ~3 significant digits: logits within 5% of the largest |logit|; backward works."""
    model = get_model()
    pixel_values = random_pixels(2)
    labels = torch.tensor([0, 3])
    with torch.no_grad():
        fp32 = model(pixel_values=pixel_values).logits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(pixel_values=pixel_values, labels=labels)
    assert torch.isfinite(output.logits).all()
    assert_close_relative(output.logits.detach().float(), fp32, rtol=5e-2)
    output.loss.backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


# ---------------------------------------------------------------------------------------------- frozen CLIP


def test_only_prompt_learner_is_trainable(models):
    cocoop, coop = models["current", True], models["current", False]
    assert {name for name, p in cocoop.named_parameters() if p.requires_grad} == TRAINABLE
    assert {name for name, p in coop.named_parameters() if p.requires_grad} == {"prompt_learner.ctx"}
    assert coop.prompt_learner.meta_net is None


def test_clip_stays_in_eval_mode(get_model):
    model = get_model()
    model.train()
    assert model.training and model.prompt_learner.training
    assert not any(module.training for module in model.clip.modules())
    model.eval()
    assert not any(module.training for module in model.modules())


def test_from_clip_keeps_clip_weights(tiny_clip_dir, tokenizer):
    """Nothing of the CLIP is re-initialised: every tensor equals the checkpoint file's."""
    model = CoCoOpModel.from_clip(str(tiny_clip_dir), CLASS_NAMES, tokenizer=tokenizer)
    saved = load_file(tiny_clip_dir / "model.safetensors")
    ours = model.clip.state_dict()
    assert set(saved) <= set(ours)
    for name, tensor in saved.items():
        assert torch.equal(ours[name], tensor), name
    reference = CLIPModel.from_pretrained(tiny_clip_dir).state_dict()
    for name, tensor in reference.items():
        assert torch.equal(ours[name], tensor), name


def test_context_initialised_from_words(tiny_clip_dir, tokenizer):
    model = CoCoOpModel.from_clip(str(tiny_clip_dir), CLASS_NAMES, ctx_init="a_photo of a", tokenizer=tokenizer)
    ids = tokenizer("a photo of a", add_special_tokens=False)["input_ids"]
    embedding = model.clip.text_model.embeddings.token_embedding.weight
    assert torch.equal(model.prompt_learner.ctx.detach(), embedding[ids])
    assert model.config.n_ctx == 4


def test_random_context_init(tiny_clip_dir, tokenizer):
    torch.manual_seed(0)
    model = CoCoOpModel.from_clip(str(tiny_clip_dir), CLASS_NAMES, ctx_init=None, n_ctx=6, tokenizer=tokenizer)
    assert model.config.prompt_prefix == "X X X X X X"
    assert model.prompt_learner.ctx.shape == (6, 64)
    assert 0.01 < model.prompt_learner.ctx.std().item() < 0.03  # N(0, 0.02)
    assert torch.equal(model.prompt_ids[:, 1:7], torch.full((len(CLASS_NAMES), 6), model.prompt_ids[0, 1].item()))


def test_meta_net_shapes(models):
    meta_net = models["current", True].prompt_learner.meta_net
    assert (meta_net.linear1.in_features, meta_net.linear1.out_features) == (48, 48 // 16)
    assert (meta_net.linear2.in_features, meta_net.linear2.out_features) == (48 // 16, 64)


def test_set_class_names_keeps_weights(get_model):
    model = get_model()
    before = {name: t.clone() for name, t in model.prompt_learner.state_dict().items()}
    model.set_class_names(NEW_CLASS_NAMES)
    assert model.class_names == NEW_CLASS_NAMES
    assert model.config.id2label == dict(enumerate(NEW_CLASS_NAMES))
    assert model.config.label2id == {name: i for i, name in enumerate(NEW_CLASS_NAMES)}
    for name, tensor in model.prompt_learner.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert "prompt_ids" not in model.state_dict() and "eos_index" not in model.state_dict()


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("names", "error", "match"),
    [
        ([], ValueError, "class names are empty"),
        (["cat", "dog", "cat"], ValueError, "duplicate class name 'cat'"),
        (["great_white_shark", "great white shark"], ValueError, "duplicate class name 'great white shark'"),
        (["cat", ""], ValueError, "index 1"),
        ("cat", TypeError, "single string 'cat'"),
        (["cat", 3], TypeError, "index 1 must be a string"),
    ],
)
def test_bad_class_names(get_model, tiny_clip_dir, names, error, match, tokenizer):
    model = get_model()
    with pytest.raises(error, match=match):
        model.set_class_names(names)
    assert model.class_names == CLASS_NAMES  # unchanged after the refusal
    with pytest.raises(error, match=match):
        CoCoOpModel.from_clip(str(tiny_clip_dir), names, tokenizer=tokenizer)


def test_class_name_too_long(get_model, tokenizer):
    model = get_model()
    long_name = " ".join(["goldfish"] * 75)
    length = len(tokenizer(f"a photo of a {long_name}.")["input_ids"])
    assert length > 77
    with pytest.raises(ValueError, match=rf"class name '{long_name}' makes a prompt of {length} tokens.*77"):
        model.set_class_names(["cat", long_name])
    # The longest name that fits (77 - SOS - 4 ctx - '.' - EOS = 70 tokens) is accepted.
    model.set_class_names(["cat", " ".join(["goldfish"] * 70)])
    assert int(model.eos_index.max()) == 76


def test_no_tokenizer_for_class_names(models):
    model = copy.deepcopy(models["current", True])
    model.tokenizer = None
    with pytest.raises(ValueError, match="tokenizer"):
        model.set_class_names(NEW_CLASS_NAMES)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((3, 32, 32), "rank 4"),
        ((2, 1, 32, 32), "3 channels"),
        ((2, 32, 32, 3), "3 channels"),
        ((2, 3, 16, 16), "32x32"),
        ((2, 3, 32, 30), "32x32"),
    ],
)
def test_bad_pixel_values(models, shape, match):
    with pytest.raises(ValueError, match=rf"`pixel_values`.*{match}"):
        models["current", True](pixel_values=torch.zeros(shape))


def test_pixel_values_not_a_tensor(models):
    with pytest.raises(TypeError, match="`pixel_values` must be a torch.Tensor"):
        models["current", True](pixel_values=[[0.0]])


@pytest.mark.parametrize("bad", [-1, len(CLASS_NAMES)])
def test_labels_out_of_range(models, bad):
    with pytest.raises(ValueError, match=rf"`labels` must lie in \[0, {len(CLASS_NAMES)}\).*{bad}"):
        models["current", True](pixel_values=random_pixels(2), labels=torch.tensor([0, bad]))


def test_labels_wrong_type_or_shape(models):
    model = models["current", True]
    with pytest.raises(TypeError, match="`labels` must be an integer tensor"):
        model(pixel_values=random_pixels(2), labels=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"`labels` must have shape \(2,\)"):
        model(pixel_values=random_pixels(2), labels=torch.tensor([[0, 1]]))


def test_inputs_exactly_one_of_pixels_or_embeds(models):
    model = models["current", True]
    with pytest.raises(ValueError, match="exactly one of `pixel_values` or `image_embeds`"):
        model()
    with pytest.raises(ValueError, match=r"`image_embeds` must be \(batch, 48\)"):
        model(image_embeds=torch.zeros(2, 64))
    with pytest.raises(TypeError, match="unexpected keyword argument 'attention_mask'"):
        model(pixel_values=random_pixels(1), attention_mask=torch.ones(1, 3, dtype=torch.long))


def test_ctx_init_inconsistent_with_n_ctx(tiny_clip_dir, tokenizer):
    with pytest.raises(ValueError, match=r"`n_ctx`=3 is inconsistent with `ctx_init`='a photo of a'"):
        CoCoOpModel.from_clip(str(tiny_clip_dir), CLASS_NAMES, n_ctx=3, tokenizer=tokenizer)


def test_prompt_learner_state_width_mismatch(get_model):
    model = get_model()
    state = {name: t.clone() for name, t in model.prompt_learner.state_dict().items()}
    state["ctx"] = torch.zeros(4, 512)
    with pytest.raises(ValueError, match=r"my.ckpt: tensor 'ctx' has shape \(4, 512\).*\(4, 64\)"):
        model.load_prompt_learner_state(state, source="my.ckpt")
    del state["ctx"]
    with pytest.raises(ValueError, match=r"missing \['ctx'\]"):
        model.load_prompt_learner_state(state, source="my.ckpt")


def test_gradient_checkpointing_is_used(get_model, monkeypatch):
    """With the flag on and gradients enabled, the text path runs through torch.utils.checkpoint."""
    from cocoop_hf import text_encoder_causal

    calls = []

    def spy(function, *args, **kwargs):
        calls.append(function)
        return torch.utils.checkpoint.checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(text_encoder_causal, "checkpoint", spy)
    model = get_model()
    model(pixel_values=random_pixels(1))
    assert not calls
    model.activation_checkpointing_enable()
    model(pixel_values=random_pixels(1)).logits.sum().backward()
    assert calls
    calls.clear()
    with torch.no_grad():
        model(pixel_values=random_pixels(1))
    assert not calls


@pytest.mark.parametrize("conditional", [True, False])
def test_packed_suffixes_with_a_padded_last_pack_match_reference(tiny_clip_dir, tokenizer, conditional):
    """Many classes of one prompt length: several suffixes share a packed sequence and the last pack is padded."""
    from cocoop_hf.modeling_cocoop import PACKED_SUFFIX_TOKENS

    candidates = [f"object number {i}" for i in range(300)]
    lengths = [len(tokenizer(name)["input_ids"]) for name in candidates]
    common = max(set(lengths), key=lengths.count)
    names = [name for name, length in zip(candidates, lengths, strict=True) if length == common][:47]
    model = CoCoOpModel.from_clip(str(tiny_clip_dir), names, conditional=conditional, tokenizer=tokenizer)
    randomize_prompt_learner(model, seed=5)
    suffix_lengths = set((model.eos_index - model.config.n_ctx).tolist())
    assert len(suffix_lengths) == 1, suffix_lengths  # one bucket, so the packing below is what runs
    pack = PACKED_SUFFIX_TOKENS // suffix_lengths.pop()
    assert 1 < pack < len(names) and len(names) % pack != 0, "the test must exercise a padded last pack"
    pixels = random_pixels(2)
    with torch.no_grad():
        assert_close_relative(
            model(pixel_values=pixels).logits, reference_logits(model, *held_prompts(model), pixel_values=pixels)
        )
