"""
Findings of the second review of issue 17 (backbones): the processor of an adapter-only folder pads as the model's
tokenizer; call-time `context_start` is checked against `config.prompt_context_start` as the held class set is; a
user's tokenizer is checked against the backbone; the module layout (no import circle, no optional import, one
prompt-embedding assembly); the card of a backbone built from a config; whitespace around class names.
Tiny random backbones from tests/tiny_backbones.py, offline.
"""

import inspect
import subprocess
import sys

import pytest
import torch
import transformers
from transformers import CLIPTokenizer

from cocoop_hf import (
    CoCoOpModel,
    CoCoOpProcessor,
    class_set_cocoop,
    class_set_holder_cocoop,
    text_encoder_bidirectional,
    text_encoder_causal,
)
from cocoop_hf.backbones_cocoop import embed_dim
from cocoop_hf.processing_cocoop import build_prompt_ids, clean_class_name

from .conftest import TOKENIZER_DIR
from .tiny_backbones import save_tiny_backbone, tiny_backbone, tiny_tokenizer


pytestmark = pytest.mark.usefixtures("single_thread")

NAMES = ["hen", "cock"]
ATOL = 1e-5  # logits, fp32


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    root = tmp_path_factory.mktemp("review2-backbones")
    return {kind: str(save_tiny_backbone(root / kind, kind)) for kind in ("clip", "metaclip_2", "siglip", "siglip2")}


def _embed(model):
    return torch.randn(2, embed_dim(model.config.backbone_config), generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------------- finding 1


@pytest.mark.parametrize("adapter_only", [True, False])
def test_saved_processor_pads_as_the_model_tokenizer(backbones, tmp_path, adapter_only):
    """A SigLIP 2 model built with a right-padding tokenizer: its saved folder's processor builds the held prompts."""
    tokenizer = tiny_tokenizer("siglip2")
    tokenizer.padding_side = "right"
    model = CoCoOpModel.from_clip(backbones["siglip2"], NAMES, n_ctx=4, tokenizer=tokenizer)
    assert model.config.prompt_context_start is not None
    model.save_pretrained(tmp_path / "out", adapter_only=adapter_only)
    loaded = CoCoOpModel.from_pretrained(tmp_path / "out")
    processor = CoCoOpProcessor.from_pretrained(tmp_path / "out")
    assert processor.tokenizer.padding_side == loaded.tokenizer.padding_side == "right"
    embeds = _embed(loaded)
    with torch.no_grad():
        call_time = loaded(image_embeds=embeds, **dict(processor(class_names=NAMES))).logits
        held = loaded(image_embeds=embeds).logits
    torch.testing.assert_close(call_time, held, atol=ATOL, rtol=0)


def test_call_time_context_start_checked_against_config(backbones):
    """Left-padded prompts (a start per class) given to a model whose prompts are right-padded: refused, as the
    held class set refuses them, instead of other logits."""
    right = tiny_tokenizer("siglip2")
    right.padding_side = "right"
    model = CoCoOpModel.from_clip(backbones["siglip2"], NAMES, n_ctx=4, tokenizer=right)
    left = tiny_tokenizer("siglip2")
    left.padding_side = "left"
    prompts = build_prompt_ids(left, ["hen", "a big cock"], model.config.prompt_prefix, 4, 64, backbone="siglip2")
    assert len(set(prompts["context_start"].tolist())) > 1  # the planted mistake: a start per class
    with pytest.raises(ValueError, match="prompt_context_start"):
        model(image_embeds=_embed(model), **dict(prompts))
    with pytest.raises(ValueError, match="prompt_context_start"):
        model.set_class_names(["hen", "a big cock"], tokenizer=left)
    # the right-padded prompts of the same names pass both ways, with equal logits
    good = dict(model.class_prompts(["hen", "a big cock"]))
    embeds = _embed(model)
    with torch.no_grad():
        call_time = model(image_embeds=embeds, **good).logits
        model.set_class_names(["hen", "a big cock"])
        held = model(image_embeds=embeds).logits
    torch.testing.assert_close(call_time, held, atol=ATOL, rtol=0)


def test_one_context_start_rule():
    """Finding 6: one shared check, named for what it does; `prompt_context_start` is the tokenizer's count only."""
    assert class_set_cocoop.agreed_context_start is class_set_holder_cocoop.agreed_context_start
    assert not hasattr(class_set_cocoop, "prompt_context_start")


# ---------------------------------------------------------------------------------------------- finding 2


def test_other_backbones_tokenizer_refused(backbones, tokenizer):
    """CLIP's tokenizer on MetaCLIP 2 / SigLIP (ids past the vocabulary): one ValueError naming the tokenizer."""
    for kind in ("metaclip_2", "siglip", "siglip2"):
        with pytest.raises(ValueError, match="CLIPTokenizer.*vocabulary"):
            CoCoOpModel.from_clip(backbones[kind], NAMES, n_ctx=4, ctx_init=None, tokenizer=tokenizer)
    model = CoCoOpModel.from_clip(backbones["metaclip_2"], NAMES, n_ctx=4)
    with pytest.raises(ValueError, match="CLIPTokenizer"):
        model.set_class_names(NAMES, tokenizer=tokenizer)
    assert model.class_names == NAMES  # nothing changed


def test_wrong_eos_refused_on_large_vocabulary(tmp_path, tokenizer):
    """A MetaCLIP 2 table larger than CLIP's vocabulary: the ids fit, but transformers pools at EOS id 2, which CLIP's
    tokenizer never writes (meaningless logits before). Refused by the EOS rule."""
    config = transformers.MetaClip2Config(
        text_config=dict(
            vocab_size=50000, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
            eos_token_id=2, bos_token_id=0, pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=48, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, image_size=32,
            patch_size=8,
        ),
        projection_dim=40,
    )  # fmt: skip
    transformers.MetaClip2Model(config).save_pretrained(tmp_path / "big")
    with pytest.raises(ValueError, match=r"CLIPTokenizer.*eos_token_id=2"):
        CoCoOpModel.from_clip(str(tmp_path / "big"), NAMES, n_ctx=4, ctx_init=None, tokenizer=tokenizer)


def test_clip_eos_rule(tmp_path, tokenizer, tiny_clip_dir, legacy_clip_dir):
    """CLIP: the tokenizer's EOS must be the config's, except the legacy eos_token_id 2 (argmax pooling)."""
    from cocoop_hf.tokenizer_check_cocoop import check_backbone_tokenizer

    for folder in (tiny_clip_dir, legacy_clip_dir):
        CoCoOpModel.from_clip(str(folder), NAMES, n_ctx=4, tokenizer=tokenizer)
    config = transformers.CLIPConfig.from_pretrained(tiny_clip_dir)
    check_backbone_tokenizer(tokenizer, config)
    config.text_config.eos_token_id = tokenizer.eos_token_id - 1  # the planted mistake: another EOS id
    with pytest.raises(ValueError, match="CLIPTokenizer.*eos_token_id"):
        check_backbone_tokenizer(tokenizer, config)


@pytest.mark.parametrize("kind", ["clip", "metaclip_2", "siglip", "siglip2"])
def test_tiny_backbones_pass_the_tokenizer_check(kind):
    from cocoop_hf.tokenizer_check_cocoop import check_backbone_tokenizer

    model, tokenizer, _ = tiny_backbone(kind)
    check_backbone_tokenizer(tokenizer, model.config)


# ---------------------------------------------------------------------------------------------- findings 3, 4, 5, 7


def test_no_import_circle_and_plain_imports():
    from cocoop_hf import backbones_cocoop, modeling_cocoop

    assert "limits_cocoop" not in inspect.getsource(backbones_cocoop)
    assert not hasattr(backbones_cocoop, "load_backbone")
    assert "except ImportError" not in inspect.getsource(modeling_cocoop)
    # limits_cocoop first, then the loader: no partially initialised module on either order
    for first, second in (("limits_cocoop", "backbone_loading_cocoop"), ("backbone_loading_cocoop", "limits_cocoop")):
        code = f"import cocoop_hf.{first}, cocoop_hf.{second}; from cocoop_hf.backbone_loading_cocoop import load_backbone"
        subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_one_prompt_embedding_assembly(backbones, monkeypatch):
    """Both prompt encoders assemble their inputs with prompt_layout_cocoop.prompt_embeddings."""
    from cocoop_hf import prompt_layout_cocoop

    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return prompt_layout_cocoop.prompt_embeddings(*args, **kwargs)

    for module, kind in ((text_encoder_causal, "clip"), (text_encoder_bidirectional, "siglip")):
        monkeypatch.setattr(module, "prompt_embeddings", counted)
        model = CoCoOpModel.from_clip(backbones[kind], NAMES, n_ctx=4, class_token_position="middle")
        calls.clear()
        with torch.no_grad():
            model(image_embeds=_embed(model))
        assert calls, kind


def test_causal_encoder_doc_says_what_a_call_writes():
    doc = text_encoder_causal.CausalPromptEncoder.__doc__
    assert "A call changes nothing" not in doc and "derived" in doc


# ---------------------------------------------------------------------------------------------- finding 8


def test_card_of_a_backbone_without_a_checkpoint_names_none(backbones):
    from cocoop_hf.sharing_cocoop import _render_card

    model = CoCoOpModel.from_clip(backbones["siglip"], NAMES, n_ctx=4)
    named = str(_render_card(model, "me/x"))
    assert "SigLIP" in named
    model.config.clip_name_or_path = None  # built from a config
    card = str(_render_card(model, "me/x"))
    assert "openai/clip-vit-base-patch16" not in card and "base_model:" not in card
    assert "SigLIP" in card and "built from a config" in card


# ---------------------------------------------------------------------------------------------- finding 10


@pytest.mark.parametrize("kind", ["metaclip_2", "siglip2"])
def test_surrounding_whitespace_is_not_another_class(backbones, kind):
    with pytest.raises(ValueError, match="duplicate class name 'hen '"):
        CoCoOpModel.from_clip(backbones[kind], ["hen", "hen "], n_ctx=4)
    assert clean_class_name("  big_hen \t") == "big hen"
    model = CoCoOpModel.from_clip(backbones[kind], NAMES, n_ctx=4)
    spaced = model.class_prompts([" hen", "cock "])
    plain = model.class_prompts(NAMES)
    assert torch.equal(spaced["input_ids"], plain["input_ids"])


def test_clip_prompt_ids_unchanged_by_the_strip():
    """CLIP's pre-tokenizer drops whitespace: the real CLIP tokenizer gives the same prompt ids either way."""
    clip = CLIPTokenizer.from_pretrained(TOKENIZER_DIR)
    names = [" hen", "big cock ", "\tduck"]
    raw = clip([f"a photo of a {name.replace('_', ' ')}." for name in names], add_special_tokens=True)["input_ids"]
    built = build_prompt_ids(clip, names, "a photo of a", 4, 77)
    for row, ids in enumerate(raw):
        assert built["input_ids"][row, : len(ids)].tolist() == ids
