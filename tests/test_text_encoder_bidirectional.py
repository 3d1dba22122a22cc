"""
`BidirectionalPromptEncoder` (SigLIP, SigLIP 2) against the plain reference of tests/reference_backbones.py: text
features (1e-5) and context gradients (1e-4 relative) for CoOp (one shared context), CoCoOp (one context per image),
class-specific context, the class name at the end / in the middle / in front, chunked or not, with gradient
checkpointing or not. The tiny SigLIP attends to its padding (its tokenizer returns no attention mask, as the released
ones); the tiny SigLIP 2 pads on the left with a mask (per-class context starts, padding keys masked).
"""

from types import SimpleNamespace

import pytest
import torch

from cocoop_hf.text_encoder_bidirectional import BidirectionalPromptEncoder

from .conftest import CLASS_NAMES
from .reference_backbones import reference_features_for_context, reference_prompts
from .tiny_backbones import tiny_backbone


pytestmark = pytest.mark.usefixtures("single_thread")

N_CTX = 4
NAMES = CLASS_NAMES[:5]  # names of 1 to 12 tokens in the tiny vocabularies


@pytest.fixture(scope="module", params=["siglip", "siglip2"])
def backbone(request):
    model, tokenizer, _ = tiny_backbone(request.param)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    length = model.config.text_config.max_position_embeddings
    prompts = reference_prompts(tokenizer, NAMES, " ".join(["X"] * N_CTX), N_CTX, length, causal=False)
    return SimpleNamespace(model=model, tokenizer=tokenizer, prompts=prompts, model_type=request.param)


def encoder_for(model, position="end", chunk_tokens=131072):
    config = SimpleNamespace(n_ctx=N_CTX, class_token_position=position, text_chunk_tokens=chunk_tokens)
    return BidirectionalPromptEncoder(model, config)


def random_context(kind, classes, width=32, seed=0):
    """CoOp: (1, n_ctx, w); CoCoOp: (3, n_ctx, w), one per image; class-specific: (1, classes, n_ctx, w)."""
    generator = torch.Generator().manual_seed(seed)
    shape = {"coop": (1, N_CTX, width), "cocoop": (3, N_CTX, width), "csc": (1, classes, N_CTX, width)}[kind]
    return (0.5 * torch.randn(*shape, generator=generator)).requires_grad_(True)


def reference(model, prompts, ctx, position):
    """(batch, classes, d): the reference, one context row (shared or class-specific) at a time."""
    if ctx.dim() == 4:
        return reference_features_for_context(model, prompts, ctx[0], N_CTX, position).unsqueeze(0)
    return torch.stack([reference_features_for_context(model, prompts, row, N_CTX, position) for row in ctx])


def features_and_grad(function, ctx, weights):
    """Features and the gradient of a fixed random linear function of them with respect to the context."""
    ctx = ctx.detach().clone().requires_grad_(True)
    features = function(ctx)
    (grad,) = torch.autograd.grad((features * weights).sum(), ctx)
    return features.detach(), grad


def assert_close_relative(actual, expected, tolerance=1e-4):
    """Relative to the largest entry of the expected tensor (gradients: 1e-4 relative)."""
    scale = expected.abs().max()
    assert scale > 0
    assert (actual - expected).abs().max() <= tolerance * scale, ((actual - expected).abs().max(), scale)


@pytest.mark.parametrize("kind", ["coop", "cocoop", "csc"])
@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_features_and_gradients_equal_the_reference(backbone, kind, position):
    model, prompts = backbone.model, backbone.prompts
    ctx = random_context(kind, len(NAMES))
    encoder = encoder_for(model, position)
    weights = torch.randn(ctx.shape[0], len(NAMES), 48, generator=torch.Generator().manual_seed(1))
    actual, actual_grad = features_and_grad(lambda c: encoder.prompt_features(c, prompts), ctx, weights)
    expected, expected_grad = features_and_grad(lambda c: reference(model, prompts, c, position), ctx, weights)
    assert actual.shape == (ctx.shape[0], len(NAMES), 48)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    assert_close_relative(actual_grad, expected_grad)
    # The test can fail: the classes' features differ from each other, and so do the positions' results.
    assert (expected[:, 0] - expected[:, 1]).abs().max() > 1e-2
    if position != "end":
        assert (expected - reference(model, prompts, ctx, "end")).abs().max() > 1e-2


@pytest.mark.parametrize("chunk_tokens", [1, 64 * 2, 64 * 3 * 2])
def test_chunks_and_checkpointing_change_nothing(backbone, chunk_tokens):
    """1 token: one class per call; 128: two classes per call (CoOp) or one (CoCoOp, 3 contexts); 384: two."""
    model, prompts = backbone.model, backbone.prompts
    weights = torch.randn(3, len(NAMES), 48, generator=torch.Generator().manual_seed(2))
    ctx = random_context("cocoop", len(NAMES))
    whole = encoder_for(model, "middle")
    expected, expected_grad = features_and_grad(lambda c: whole.prompt_features(c, prompts), ctx, weights)
    chunked = encoder_for(model, "middle", chunk_tokens)
    for checkpointing in (False, True):
        actual, actual_grad = features_and_grad(
            lambda c, on=checkpointing: chunked.prompt_features(c, prompts, gradient_checkpointing=on), ctx, weights
        )
        torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0)
        assert_close_relative(actual_grad, expected_grad, 1e-5)


def test_a_call_changes_nothing(backbone):
    model = backbone.model
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    encoder = encoder_for(model, "front")
    first = encoder.prompt_features(random_context("coop", len(NAMES)), backbone.prompts)
    second = encoder.prompt_features(random_context("coop", len(NAMES)), backbone.prompts)
    torch.testing.assert_close(first, second, atol=0, rtol=0)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


@pytest.mark.parametrize("padding", ["max_length", "longest"])
def test_text_features_equal_the_backbones_own(backbone, padding):
    """Ordinary texts (KgCoOp targets, zero-shot): the backbone's own get_text_features, any padding."""
    model, tokenizer = backbone.model, backbone.tokenizer
    texts = [f"This is a photo of {name}." for name in NAMES]
    inputs = tokenizer(texts, padding=padding, max_length=64, return_tensors="pt")
    with torch.no_grad():
        own = model.get_text_features(**inputs).pooler_output
    own = own / own.norm(dim=-1, keepdim=True)
    encoder = encoder_for(model, chunk_tokens=64 * 2)
    actual = encoder.text_features(inputs["input_ids"], inputs.get("attention_mask"))
    torch.testing.assert_close(actual, own, atol=1e-5, rtol=0)
    assert (own[0] - own[1]).abs().max() > 1e-2


def test_the_mask_matters_where_the_tokenizer_gives_one(backbone):
    """SigLIP 2's prompts carry a mask: without it the padding would be attended and the features differ."""
    prompts = backbone.prompts
    if backbone.model_type == "siglip":
        assert prompts.attention_mask is None  # attends to padding, as transformers does for the released tokenizers
        return
    ctx = random_context("coop", len(NAMES))
    encoder = encoder_for(backbone.model)
    with torch.no_grad():
        masked = encoder.prompt_features(ctx, prompts)
        unmasked = encoder.prompt_features(ctx, SimpleNamespace(**{**vars(prompts), "attention_mask": None}))
    assert (masked - unmasked).abs().max() > 1e-2
    assert len(set(prompts.context_start.tolist())) > 1  # left padding: the context starts differ per class


def test_prompts_of_another_length_are_refused(backbone):
    prompts = backbone.prompts
    short = SimpleNamespace(**{**vars(prompts), "input_ids": prompts.input_ids[:, :32]})
    with pytest.raises(ValueError, match="padded to its text context of 64 tokens.*got length 32"):
        encoder_for(backbone.model).prompt_features(random_context("coop", len(NAMES)), short)


def test_length_buckets_are_refused(backbone):
    with pytest.raises(ValueError, match="length_buckets apply to causal text towers"):
        encoder_for(backbone.model).compile(length_buckets=(8, 16))
