"""
Exactness on every backbone (CLIP, MetaCLIP 2, SigLIP, SigLIP 2; tiny random configs of tests/tiny_backbones.py,
whose tokenizers follow the real ones' rules):

1. the plain reference of tests/reference_backbones.py is itself right: with the context set to the words' own
   embeddings it equals the backbone's own `get_text_features` (1e-5), and it fails on planted mistakes (token order,
   causal / padding mask, pooling position);
2. `CoCoOpModel` built with `from_clip` on a saved tiny checkpoint, for CoOp, CoCoOp, KgCoOp, class-specific context
   and the class name in the middle / in front: logits equal the reference (1e-5; SigLIP's include `logit_bias`) and
   the gradients of the loss with respect to the context (and CoCoOp's meta-net) too (1e-4 relative);
3. zero-shot identity: context = the template's words, meta-net output zeroed -> logits equal the backbone's own
   `logits_per_image` on "{template}".format(name) tokenised as its processor does (SigLIP: padding to 64).
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cocoop_hf import CoCoOpModel

from .conftest import CLASS_NAMES
from .reference_backbones import (
    CAUSAL,
    Prompts,
    backbone_parts,
    reference_features_for_context,
    reference_image_embeds,
    reference_logits,
    reference_meta_net,
    reference_prompt_embeds,
    reference_prompts,
    reference_text_features,
)
from .tiny_backbones import MODEL_TYPES, save_tiny_backbone, tiny_backbone


pytestmark = pytest.mark.usefixtures("single_thread")

NAMES = CLASS_NAMES[:5]  # 1 to 12 tokens in the tiny vocabularies; "goldfish" is cut differently alone (SigLIP 2)
TEMPLATE_WORDS = {"clip": "a photo of a", "metaclip_2": "a photo of a", "siglip": "This is a photo of"}
TEMPLATE_WORDS["siglip2"] = TEMPLATE_WORDS["siglip"]


def context_length(backbone):
    return backbone.config.text_config.max_position_embeddings


def images(image_processor, count=3, seed=0):
    """Random RGB images through the backbone's own image processor (SigLIP 2: patches + mask + shapes)."""
    generator = np.random.default_rng(seed)
    pictures = [generator.integers(0, 256, (40 + 8 * i, 48, 3), dtype=np.uint8) for i in range(count)]
    return dict(image_processor(images=pictures, return_tensors="pt"))


# ---------------------------------------------------------------------------------------------- 1. the reference


@pytest.fixture(scope="module", params=MODEL_TYPES)
def tiny(request):
    model, tokenizer, image_processor = tiny_backbone(request.param)
    model.requires_grad_(False)
    return SimpleNamespace(model=model, tokenizer=tokenizer, image_processor=image_processor, type=request.param)


def words_prompts(tiny, names=NAMES):
    """Prompts `"{words} {name}."` whose context is the template's words, and those words' embeddings."""
    words = TEMPLATE_WORDS[tiny.type]
    n_ctx = len(tiny.tokenizer(words, add_special_tokens=False)["input_ids"])
    causal = CAUSAL[tiny.type]
    prompts = reference_prompts(tiny.tokenizer, names, words, n_ctx, context_length(tiny.model), causal)
    start = int(prompts.context_start[0])
    token_embedding = tiny.model.text_model.embeddings.token_embedding
    ctx = token_embedding(prompts.input_ids[0, start : start + n_ctx])  # (n_ctx, dim): the words' own embeddings
    return prompts, ctx, n_ctx


def own_text_features(model, input_ids, attention_mask=None):
    with torch.no_grad():
        kwargs = {} if attention_mask is None else {"attention_mask": attention_mask}
        features = model.get_text_features(input_ids=input_ids, **kwargs).pooler_output
    return features / features.norm(dim=-1, keepdim=True)


def moved_ids(prompts: Prompts, n_ctx: int, position: str) -> torch.Tensor:
    """The token ids the reference's layout gives (its cat of slices run on the ids themselves)."""
    ids = prompts.input_ids[..., None].double()
    ctx = torch.stack([ids[i, s : s + n_ctx] for i, s in enumerate(prompts.context_start.tolist())])
    return reference_prompt_embeds(ids, ctx, prompts, n_ctx, position)[..., 0].long()


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_reference_with_the_words_equals_the_backbones_own_text_features(tiny, position):
    prompts, ctx, n_ctx = words_prompts(tiny)
    with torch.no_grad():
        features = reference_features_for_context(tiny.model, prompts, ctx, n_ctx, position)
    ids = moved_ids(prompts, n_ctx, position)
    if position != "end":
        assert not torch.equal(ids, prompts.input_ids)  # the layout moved the names
    own = own_text_features(tiny.model, ids, prompts.attention_mask)
    torch.testing.assert_close(features, own, atol=1e-5, rtol=0)
    assert (own[0] - own[1]).abs().max() > 1e-2  # the classes differ: the comparison can fail


def test_the_reference_fails_on_planted_mistakes(tiny):
    """Each mistake moves the features by far more than the 1e-5 tolerance of the tests that use the reference."""
    model = tiny.model
    prompts, ctx, n_ctx = words_prompts(tiny)
    own = own_text_features(model, prompts.input_ids, prompts.attention_mask)
    text_model, projection, causal = backbone_parts(model)
    embeds = model.text_model.embeddings.token_embedding(prompts.input_ids).detach()

    def features(embeds=embeds, prompts=prompts, causal=causal):
        with torch.no_grad():
            return reference_text_features(text_model, projection, embeds, prompts, causal)

    torch.testing.assert_close(features(), own, atol=1e-5, rtol=0)  # the planted-free version agrees
    mistakes = {
        "context after the name (wrong token order)": features(
            reference_prompt_embeds(embeds, ctx.expand(len(NAMES), -1, -1).detach(), prompts, n_ctx, "front")
        ),
        "the other tower family's mask and pooling": features(causal=not causal),
    }
    if causal:
        shifted = Prompts(**{**vars(prompts), "eos_index": prompts.eos_index - 1})
        mistakes["pooled one token before EOS"] = features(prompts=shifted)
    if prompts.attention_mask is not None:
        mistakes["padding attended"] = features(prompts=Prompts(**{**vars(prompts), "attention_mask": None}))
    for name, wrong in mistakes.items():
        assert (wrong - own).abs().max() > 1e-3, name


# Per tiny tokenizer: (first token, last token, pad token, padding side, returns an attention mask), the real rules.
TOKENIZER_RULES = {
    "clip": ("<|startoftext|>", "<|endoftext|>", "<|endoftext|>", "right", True),
    "metaclip_2": ("<s>", "</s>", "<pad>", "right", True),
    "siglip": (None, "</s>", "</s>", "right", False),
    "siglip2": (None, "<eos>", "<pad>", "left", True),
}


def test_tiny_tokenizers_follow_the_real_rules_and_load_back(tiny, checkpoint):
    from transformers import AutoTokenizer

    first, last, pad, side, with_mask = TOKENIZER_RULES[tiny.type]
    loaded = AutoTokenizer.from_pretrained(checkpoint)  # offline, from the saved tiny checkpoint
    encodings = []
    for tokenizer in (tiny.tokenizer, loaded):
        tokens = tokenizer.convert_ids_to_tokens(tokenizer("a photo of a tench.")["input_ids"])
        assert tokens[-1] == last and tokens.count(last) == 1
        assert tokens[0] == first if first is not None else tokens[0] not in tokenizer.all_special_tokens
        padded = tokenizer(["a photo of a tench.", "X"], padding="max_length", max_length=context_length(tiny.model))
        short = tokenizer.convert_ids_to_tokens(padded["input_ids"][1])
        assert tokenizer.padding_side == side and tokenizer.pad_token == pad
        assert short[-1 if side == "right" else 0] == pad and short[0 if side == "right" else -1] != pad
        assert ("attention_mask" in padded) == with_mask
        assert tokenizer.convert_tokens_to_ids(last) == tiny.model.config.text_config.eos_token_id
        assert tokenizer.pad_token_id == tiny.model.config.text_config.pad_token_id
        encodings.append(padded["input_ids"])
    assert encodings[0] == encodings[1]


# ---------------------------------------------------------------------------------------------- 2. the model

METHODS = {
    "coop": dict(conditional=False),
    "cocoop": dict(conditional=True),
    "kgcoop": dict(conditional=False, kgcoop_weight=8.0),
    "class-specific": dict(conditional=False, class_specific_context=True),
    "coop-middle": dict(conditional=False, class_token_position="middle"),
    "cocoop-front": dict(conditional=True, class_token_position="front"),
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny):
    return save_tiny_backbone(tmp_path_factory.mktemp(f"tiny-{tiny.type}"), tiny.type)


def built_model(checkpoint, **config):
    torch.manual_seed(0)  # the meta-net's initialisation
    # meta_net_reduction 4: 10-12 hidden units (16 would leave 2-3, all of which a ReLU may silence for 3 images).
    model = CoCoOpModel.from_clip(str(checkpoint), NAMES, ctx_init=None, n_ctx=4, meta_net_reduction=4, **config)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a context far from N(0, 0.02), so the text tower sees it
        model.prompt_learner.ctx.copy_(0.5 * torch.randn(model.prompt_learner.ctx.shape, generator=generator))
    return model


def reference_loss_and_logits(model, tiny, pixels, labels):
    """The reference forward: prompts built here, tensors of the prompt learner read by name, the backbone's own
    modules; CE (+ KgCoOp's 1 - mean cosine to the backbone's own text features of the template)."""
    config, backbone = model.config, model.backbone
    n_ctx, position = config.n_ctx, config.class_token_position
    prompts = reference_prompts(
        tiny.tokenizer, NAMES, " ".join(["X"] * n_ctx), n_ctx, context_length(backbone), CAUSAL[tiny.type]
    )
    state = dict(model.prompt_learner.named_parameters())
    ctx = state["ctx"]
    with torch.no_grad():
        image_embeds = reference_image_embeds(backbone, pixels)
    if config.conditional:  # official CustomCLIP.forward: one context per image, ctx + meta_net(image)
        rows = [ctx + reference_meta_net(state, image) for image in image_embeds]
        text = torch.stack([reference_features_for_context(backbone, prompts, row, n_ctx, position) for row in rows])
    else:
        text = reference_features_for_context(backbone, prompts, ctx, n_ctx, position).unsqueeze(0)
    logits = reference_logits(backbone, image_embeds, text)
    loss = F.cross_entropy(logits, labels)
    if config.kgcoop_weight > 0:
        texts = [config.kgcoop_template.format(name.replace("_", " ")) for name in NAMES]
        padding = {"padding": "max_length", "max_length": 64} if not CAUSAL[tiny.type] else {"padding": True}
        inputs = tiny.tokenizer(texts, return_tensors="pt", **padding)
        zero_shot = own_text_features(backbone, inputs["input_ids"], inputs.get("attention_mask"))
        cosine = F.cosine_similarity(text, zero_shot[None], dim=-1, eps=1e-7)
        loss = loss + config.kgcoop_weight * (1.0 - cosine.mean())
    return loss, logits, prompts


@pytest.mark.parametrize("method", METHODS)
def test_logits_and_context_gradients_equal_the_reference(checkpoint, tiny, method):
    model = built_model(checkpoint, **METHODS[method])
    pixels = images(tiny.image_processor)
    labels = torch.tensor([0, 3, 4])
    output = model(**pixels, labels=labels)
    learned = dict(model.prompt_learner.named_parameters())  # ctx, and CoCoOp's meta-net
    grads = torch.autograd.grad(output.loss, list(learned.values()))
    loss, logits, prompts = reference_loss_and_logits(model, tiny, pixels, labels)
    expected_grads = torch.autograd.grad(loss, list(learned.values()))
    torch.testing.assert_close(output.logits, logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(output.loss, loss, atol=1e-5, rtol=0)
    for name, grad, expected_grad in zip(learned, grads, expected_grads, strict=True):
        scale = expected_grad.abs().max()
        assert scale > 0 and (grad - expected_grad).abs().max() <= 1e-4 * scale, name
    # Not a constant: the classes' logits differ (and SigLIP's carry its bias, -1.5 of them).
    assert (logits[:, 0] - logits[:, 1]).abs().max() > 1e-2
    # The model holds the prompts the backbone's tokenizer gives (the reference built its own).
    held = model.class_prompts(NAMES)
    assert torch.equal(held["input_ids"], prompts.input_ids)
    assert torch.equal(held["eos_index"], prompts.eos_index)
    assert torch.equal(held["context_start"], prompts.context_start)


def test_zero_shot_identity(checkpoint, tiny):
    """Context = the template's words, meta-net output 0: the backbone's own zero-shot logits."""
    words = TEMPLATE_WORDS[tiny.type]
    n_ctx = len(tiny.tokenizer(words, add_special_tokens=False)["input_ids"])
    model = CoCoOpModel.from_clip(str(checkpoint), NAMES, ctx_init=words, n_ctx=n_ctx)
    with torch.no_grad():
        model.prompt_learner.meta_net.linear2.weight.zero_()
        model.prompt_learner.meta_net.linear2.bias.zero_()
    pixels = images(tiny.image_processor)
    texts = [f"{words} {name.replace('_', ' ')}." for name in NAMES]
    padding = {"padding": "max_length", "max_length": 64} if not CAUSAL[tiny.type] else {"padding": True}
    inputs = dict(tiny.tokenizer(texts, return_tensors="pt", **padding))
    with torch.no_grad():
        own = model.backbone(**inputs, **pixels).logits_per_image
        logits = model(**pixels).logits
    torch.testing.assert_close(logits, own, atol=1e-5, rtol=0)
    assert (own[:, 0] - own[:, 1]).abs().max() > 1e-2


def test_chunks_and_gradient_checkpointing_change_nothing(checkpoint, tiny):
    """CoCoOp with the classes cut into chunks of one or two and each chunk checkpointed: the same logits and grads."""
    pixels = images(tiny.image_processor)
    labels = torch.tensor([0, 3, 4])
    results = []
    for chunk_tokens, checkpointing in ((131072, False), (3 * context_length(tiny.model) * 2, True)):
        model = built_model(checkpoint, conditional=True, text_chunk_tokens=chunk_tokens)
        if checkpointing:
            model.activation_checkpointing_enable()  # transformers 5: the new name of gradient_checkpointing_enable
            assert model.gradient_checkpointing
        model.train()
        output = model(**pixels, labels=labels)
        results.append((output.logits.detach(), torch.autograd.grad(output.loss, model.prompt_learner.ctx)[0]))
    (logits, grad), (chunked_logits, chunked_grad) = results
    torch.testing.assert_close(chunked_logits, logits, atol=1e-6, rtol=0)
    assert (chunked_grad - grad).abs().max() <= 1e-5 * grad.abs().max()
