"""
Deep prompts inside the transformers CLIP towers (IVLP, MaPLe, PromptSRC: `prompted_image_features`,
`deep_prompt_text_features`) against the plain fp32 references of tests/reference_deep_prompts.py, on tiny random
CLIP and MetaCLIP 2 backbones of 4 layers: features within 1e-5, every prompt's gradient within 1e-4 relative, for
depths 1 to all layers and 1 to 4 prompt tokens; no prompts = the backbone's own features; chunking, thread counts
and a bf16 backbone change nothing that matters; the references tell right from a planted mistake.
"""

import copy
import functools

import pytest
import torch

from cocoop_hf import text_encoder_deep
from cocoop_hf.text_encoder_deep import deep_prompt_text_features
from cocoop_hf.vision_encoder_prompted import prompted_image_features

from .conftest import CLASS_NAMES, random_pixels
from .reference_deep_prompts import reference_image_features, reference_text_features
from .tiny_backbones import TEXT_WIDTH, VISION_WIDTH, tiny_config, tiny_tokenizer


pytestmark = pytest.mark.usefixtures("single_thread")

LAYERS = 4
CONTEXT_START = 1  # after CLIP's SOS / MetaCLIP 2's <s>
NAMES = CLASS_NAMES[:5]  # 1 to several tokens each: prompts of different lengths
# (depth, tokens) pairs: every depth from 1 to all layers, every token count from 1 to 4
CASES = [(1, 1), (2, 2), (3, 3), (LAYERS, 4), (2, 4), (LAYERS, 1)]


def deep_backbone(model_type: str, seed: int = 0):
    """A tiny random `model_type` backbone (tests/tiny_backbones.py widths) with LAYERS layers in both towers."""
    tokenizer = tiny_tokenizer(model_type)
    config = tiny_config(model_type, tokenizer)
    config.text_config.num_hidden_layers = LAYERS
    config.vision_config.num_hidden_layers = LAYERS
    model_class = {"clip": "CLIPModel", "metaclip_2": "MetaClip2Model"}[model_type]
    import transformers

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, model_class)(config).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model, tokenizer


@pytest.fixture(scope="module", params=["clip", "metaclip_2"])
def backbone(request):
    model, tokenizer = deep_backbone(request.param)
    # The prompts MaPLe's processor builds: "a photo of a {name}.", the first n_ctx words learned.
    encoded = tokenizer(
        [f"a photo of a {name.replace('_', ' ')}." for name in NAMES], padding=True, return_tensors="pt"
    )
    eos_index = encoded["attention_mask"].sum(dim=1) - 1
    assert len(set(eos_index.tolist())) > 2  # prompts of several lengths
    return model, tokenizer, encoded, eos_index


def prompts(count: int, n_tokens: int, width: int, seed: int) -> list[torch.Tensor]:
    """`count` leaf tensors `(n_tokens, width)` at the scale of token embeddings, requiring grad."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n_tokens, width, generator=generator).requires_grad_() for _ in range(count)]


def loss_of(features: torch.Tensor, seed: int = 5) -> torch.Tensor:
    """A fixed random linear read-out of the features: every feature contributes to the gradient."""
    weights = torch.randn(features.shape, generator=torch.Generator().manual_seed(seed))
    return (features * weights).sum()


def gradients(features, tensors):
    return torch.autograd.grad(loss_of(features), tensors)


def assert_relative(actual, expected, tolerance=1e-4):
    scale = expected.abs().max()
    assert scale > 0
    error = (actual - expected).abs().max()
    assert error <= tolerance * scale, f"relative gradient error {float(error / scale):.2e}"


# ------------------------------------------------------------------------------------------------ vision tower


@pytest.mark.parametrize("depth,n_tokens", CASES)
def test_image_features_and_gradients_equal_reference(backbone, depth, n_tokens):
    model = backbone[0]
    pixels = random_pixels(3)
    vision_prompts = prompts(depth, n_tokens, VISION_WIDTH, seed=depth)
    features = prompted_image_features(model, pixels, vision_prompts)
    expected = reference_image_features(model, pixels, vision_prompts)
    assert features.shape == (3, model.config.projection_dim)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)
    for got, want in zip(gradients(features, vision_prompts), gradients(expected, vision_prompts), strict=True):
        assert_relative(got, want)


def test_no_vision_prompts_are_the_backbones_image_features(backbone):
    model = backbone[0]
    pixels = random_pixels(3)
    plain = model.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(prompted_image_features(model, pixels, []), plain, rtol=0, atol=1e-5)
    torch.testing.assert_close(prompted_image_features(model, pixels, ()), plain, rtol=0, atol=1e-5)
    torch.testing.assert_close(reference_image_features(model, pixels, []), plain, rtol=0, atol=1e-5)


def test_vision_reference_tells_planted_mistakes(backbone):
    model = backbone[0]
    pixels = random_pixels(3)
    vision_prompts = prompts(3, 2, VISION_WIDTH, seed=11)
    with torch.no_grad():
        right = reference_image_features(model, pixels, vision_prompts)
        before = reference_image_features(model, pixels, vision_prompts, planted_mistake="prompts_before_patches")
        shallow = reference_image_features(model, pixels, vision_prompts, planted_mistake="depth_minus_one")
    assert (right - before).abs().max() > 1e-2  # the deep layers then replace the last patches
    assert (right - shallow).abs().max() > 1e-2


# ------------------------------------------------------------------------------------------------ text tower


def text_inputs(backbone, depth, n_tokens, seed):
    model, _, encoded, eos_index = backbone
    ctx, *text_prompts = prompts(depth, n_tokens, TEXT_WIDTH, seed=100 + seed)
    return model, encoded["input_ids"], eos_index, ctx, text_prompts


@pytest.mark.parametrize("depth,n_tokens", CASES)
def test_text_features_and_gradients_equal_reference(backbone, depth, n_tokens):
    model, input_ids, eos_index, ctx, text_prompts = text_inputs(backbone, depth, n_tokens, seed=depth)
    features = deep_prompt_text_features(model, input_ids, eos_index, CONTEXT_START, ctx, text_prompts)
    expected = reference_text_features(model, input_ids, eos_index, CONTEXT_START, ctx, text_prompts)
    assert features.shape == (len(NAMES), model.config.projection_dim)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)
    leaves = [ctx, *text_prompts]
    for got, want in zip(gradients(features, leaves), gradients(expected, leaves), strict=True):
        assert_relative(got, want)


@pytest.mark.parametrize("n_tokens", [1, 4])
def test_depth_one_with_the_words_as_context_is_plain_clip_text(backbone, n_tokens):
    """ctx = the embeddings of the first n words of "a photo of a": the backbone's own text features."""
    model, _, encoded, eos_index = backbone
    input_ids = encoded["input_ids"]
    words = input_ids[0, CONTEXT_START : CONTEXT_START + n_tokens]
    ctx = model.text_model.embeddings.token_embedding(words)
    plain = model.get_text_features(**encoded).pooler_output
    features = deep_prompt_text_features(model, input_ids, eos_index, CONTEXT_START, ctx, [])
    torch.testing.assert_close(features, plain, rtol=0, atol=1e-5)
    reference = reference_text_features(model, input_ids, eos_index, CONTEXT_START, ctx, [])
    torch.testing.assert_close(reference, plain, rtol=0, atol=1e-5)


def test_text_reference_tells_planted_mistakes(backbone):
    model, input_ids, eos_index, ctx, text_prompts = text_inputs(backbone, 3, 2, seed=7)
    args = (model, input_ids, eos_index, CONTEXT_START, ctx, text_prompts)
    with torch.no_grad():
        right = reference_text_features(*args)
        shifted = reference_text_features(*args, planted_mistake="shifted_positions")
        shallow = reference_text_features(*args, planted_mistake="depth_minus_one")
        bidirectional = reference_text_features(*args, planted_mistake="no_causal_mask")
    assert (right - shifted).abs().max() > 1e-2
    assert (right - shallow).abs().max() > 1e-2
    assert (right - bidirectional).abs().max() > 1e-2


def test_chunked_text_gives_the_same_features_within_the_bound(backbone, monkeypatch):
    model, input_ids, eos_index, ctx, text_prompts = text_inputs(backbone, 3, 4, seed=3)
    args = (model, input_ids, eos_index, CONTEXT_START, ctx, text_prompts)
    whole = deep_prompt_text_features(*args)
    calls = []
    encode = text_encoder_deep._prompted_text

    def recorded(text, ids, *rest):
        calls.append(tuple(ids.shape))
        return encode(text, ids, *rest)

    monkeypatch.setattr(text_encoder_deep, "_prompted_text", recorded)
    longest = int(eos_index.max()) + 1
    for chunk_tokens in (1, longest, 2 * longest + 1):
        calls.clear()
        chunked = deep_prompt_text_features(*args, chunk_tokens=chunk_tokens)
        torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)
        assert sum(classes for classes, _ in calls) == len(NAMES)
        # Each call stays within the bound (one class per call when a single prompt exceeds it).
        assert all(classes * length <= max(chunk_tokens, length) for classes, length in calls), calls
        assert all(length <= longest for _, length in calls)
    assert len(calls) > 1


def test_same_features_with_one_and_two_threads(backbone):
    model, input_ids, eos_index, ctx, text_prompts = text_inputs(backbone, 2, 3, seed=4)
    pixels = random_pixels(2)
    vision_prompts = prompts(2, 3, VISION_WIDTH, seed=4)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        with torch.no_grad():
            results.append(
                (
                    prompted_image_features(model, pixels, vision_prompts),
                    deep_prompt_text_features(model, input_ids, eos_index, CONTEXT_START, ctx, text_prompts),
                )
            )
    torch.set_num_threads(1)
    for one, two in zip(*results, strict=True):
        torch.testing.assert_close(one, two, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------ dtype, errors


def test_bf16_backbone_takes_fp32_prompts_and_gives_them_gradients(backbone):
    model, input_ids, eos_index, ctx, text_prompts = text_inputs(backbone, 2, 2, seed=9)
    half = copy.deepcopy(model).to(torch.bfloat16)
    pixels = random_pixels(2)
    vision_prompts = prompts(2, 2, VISION_WIDTH, seed=9)
    image = prompted_image_features(half, pixels, vision_prompts)
    text = deep_prompt_text_features(half, input_ids, eos_index, CONTEXT_START, ctx, text_prompts)
    assert image.dtype == text.dtype == torch.bfloat16
    leaves = [*vision_prompts, ctx, *text_prompts]
    grads = torch.autograd.grad(loss_of(image.float()) + loss_of(text.float()), leaves)
    for grad in grads:
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().max() > 0
    # bf16 keeps ~3 significant digits: the features stay close to the fp32 reference.
    with torch.no_grad():
        expected = reference_image_features(model, pixels, vision_prompts)
    assert (image.float() - expected).abs().max() <= 0.05 * expected.abs().max()


def test_other_backbones_are_refused_by_name():
    from .tiny_backbones import tiny_backbone

    siglip = tiny_backbone("siglip")[0]
    with pytest.raises(ValueError, match=r"CLIP or MetaCLIP 2 backbone.*'siglip'"):
        prompted_image_features(siglip, random_pixels(1), [torch.zeros(2, VISION_WIDTH)])
    with pytest.raises(ValueError, match=r"CLIP or MetaCLIP 2 backbone.*'siglip'"):
        prompted_image_features(siglip, random_pixels(1), [])
    with pytest.raises(ValueError, match=r"CLIP or MetaCLIP 2 backbone.*'siglip'"):
        deep_prompt_text_features(
            siglip, torch.ones(1, 8, dtype=torch.long), torch.tensor([7]), 1, torch.zeros(2, TEXT_WIDTH), []
        )


def test_bad_prompts_are_named(backbone):
    model, input_ids, eos_index, ctx, _ = text_inputs(backbone, 1, 2, seed=1)
    pixels = random_pixels(1)
    with pytest.raises(ValueError, match=r"vision_prompts\[1\] must be a \(n_tokens, 48\) tensor"):
        prompted_image_features(model, pixels, [torch.zeros(2, VISION_WIDTH), torch.zeros(2, TEXT_WIDTH)])
    with pytest.raises(ValueError, match=r"vision_prompts\[1\] has 3 tokens"):
        prompted_image_features(model, pixels, [torch.zeros(2, VISION_WIDTH), torch.zeros(3, VISION_WIDTH)])
    with pytest.raises(ValueError, match=r"5 vision_prompts given: at most 4"):
        prompted_image_features(model, pixels, [torch.zeros(2, VISION_WIDTH)] * 5)
    args = (model, input_ids, eos_index, CONTEXT_START)
    with pytest.raises(ValueError, match=r"text_prompts\[0\] has 3 tokens"):
        deep_prompt_text_features(*args, ctx, [torch.zeros(3, TEXT_WIDTH)])
    with pytest.raises(ValueError, match=r"4 text_prompts given: at most 3"):
        deep_prompt_text_features(*args, ctx, [torch.zeros(2, TEXT_WIDTH)] * 4)
    with pytest.raises(ValueError, match=r"context positions 1\.\.40 must lie before every prompt's EOS"):
        deep_prompt_text_features(*args, torch.zeros(40, TEXT_WIDTH), [])
    with pytest.raises(ValueError, match=r"chunk_tokens must be a positive int"):
        deep_prompt_text_features(*args, ctx, [], chunk_tokens=0)
    with pytest.raises(ValueError, match=r"input_ids must be \(classes, length\) with classes >= 1"):
        deep_prompt_text_features(model, input_ids[:0], eos_index[:0], CONTEXT_START, ctx, [])


# ------------------------------------------------------------------------------------------------ gradient checkpointing


def saved_tensor_count(run) -> int:
    """Tensors autograd keeps for the backward pass of `run()` outside checkpointed regions."""
    count = 0

    def pack(tensor):
        nonlocal count
        count += 1
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return count


def test_gradient_checkpointing_keeps_features_and_gradients(backbone):
    model, input_ids, eos_index, ctx, text_prompts = text_inputs(backbone, 3, 2, seed=12)
    pixels = random_pixels(2)
    vision_prompts = prompts(3, 2, VISION_WIDTH, seed=12)
    text_args = (model, input_ids, eos_index, CONTEXT_START, ctx, text_prompts)
    runs = {
        "image": (lambda **kw: prompted_image_features(model, pixels, vision_prompts, **kw), vision_prompts),
        "text": (lambda **kw: deep_prompt_text_features(*text_args, chunk_tokens=20, **kw), [ctx, *text_prompts]),
    }
    for run, leaves in runs.values():
        plain, checkpointed = run(), run(gradient_checkpointing=True)
        torch.testing.assert_close(checkpointed, plain, rtol=0, atol=1e-6)
        for got, want in zip(gradients(checkpointed, leaves), gradients(plain, leaves), strict=True):
            assert_relative(got, want)
        # Checkpointed layers / chunks keep (almost) nothing for the backward pass.
        assert saved_tensor_count(functools.partial(run, gradient_checkpointing=True)) * 4 < saved_tensor_count(run)
