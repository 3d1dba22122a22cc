"""
CoCoOpConfig on every backbone (issue 17): `backbone_config` as a sub-config chosen by its model_type, the old
`clip_config` still read, `prompt_context_start`, widths read per backbone, and the limits (parameter estimate, size
bounds, weights-cover-config) for CLIP, MetaCLIP 2, SigLIP and SigLIP 2. Configs only: no model is built, except on
the meta device to count parameters.
"""

import json

import pytest
import torch
from transformers import (
    AutoConfig,
    CLIPConfig,
    CLIPTextConfig,
    MetaClip2Config,
    Siglip2Config,
    SiglipConfig,
)

from cocoop_hf import limits_cocoop
from cocoop_hf.backbones_cocoop import BACKBONES, backbone_config_from_dict
from cocoop_hf.configuration_cocoop import CoCoOpConfig

from .tiny_backbones import MODEL_TYPES, save_tiny_backbone, tiny_config, tiny_tokenizer


CONFIG_CLASSES = {"clip": CLIPConfig, "metaclip_2": MetaClip2Config, "siglip": SiglipConfig, "siglip2": Siglip2Config}
NAMES = {0: "tench", 1: "goldfish", 2: "great white shark"}


@pytest.fixture(scope="module")
def backbone_configs():
    return {model_type: tiny_config(model_type, tiny_tokenizer(model_type)) for model_type in MODEL_TYPES}


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_each_backbone_round_trips_through_config_json(model_type, backbone_configs, tmp_path):
    start = 0 if model_type.startswith("siglip") else 1
    config = CoCoOpConfig(
        backbone_config=backbone_configs[model_type], prompt_context_start=start, id2label=NAMES, n_ctx=None
    )
    assert type(config.backbone_config) is CONFIG_CLASSES[model_type]
    assert config.clip_config is config.backbone_config  # the old name, read-only alias
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "clip_config" not in saved and saved["backbone_config"]["model_type"] == model_type
    assert saved["prompt_context_start"] == start
    for loaded in (
        CoCoOpConfig.from_pretrained(tmp_path),
        CoCoOpConfig.from_dict(json.loads(config.to_json_string())),
        CoCoOpConfig(**config.to_dict()),
    ):
        assert type(loaded.backbone_config) is CONFIG_CLASSES[model_type]
        assert loaded.to_dict() == config.to_dict()
        assert loaded.to_diff_dict() == config.to_diff_dict()
        assert loaded.prompt_context_start == start
        assert loaded.backbone_config.text_config.hidden_size == 32
    # The stock deserialiser of a sub-config whose class varies (LLaVA's pattern) agrees with ours.
    assert type(AutoConfig.for_model(**saved["backbone_config"])) is CONFIG_CLASSES[model_type]
    assert CoCoOpConfig.sub_configs == {"backbone_config": AutoConfig}


def test_an_old_config_json_with_clip_config_still_loads(backbone_configs, tmp_path):
    config = CoCoOpConfig(backbone_config=backbone_configs["clip"], id2label=NAMES)
    saved = config.to_dict()
    old = json.loads(json.dumps(saved))  # a copy
    old["clip_config"] = old.pop("backbone_config")
    old["clip_config"].pop("model_type")  # files saved before backbones may lack it: CLIP is meant
    old.pop("prompt_context_start")  # saved before the field existed: CLIP's start, 1
    (tmp_path / "config.json").write_text(json.dumps(old))
    loaded = CoCoOpConfig.from_pretrained(tmp_path)
    assert type(loaded.backbone_config) is CLIPConfig and loaded.prompt_context_start == 1
    assert loaded.to_dict() == saved
    # Re-saved, it uses the canonical key.
    loaded.save_pretrained(tmp_path / "resaved")
    assert "backbone_config" in json.loads((tmp_path / "resaved" / "config.json").read_text())


def test_clip_config_is_a_read_only_alias(backbone_configs):
    config = CoCoOpConfig(clip_config=backbone_configs["siglip"].to_dict(), prompt_context_start=0)
    assert type(config.backbone_config) is SiglipConfig and config.clip_config is config.backbone_config
    with pytest.raises(AttributeError):
        config.clip_config = CLIPConfig()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"backbone_config": "openai/clip-vit-base-patch16"}, TypeError, r"`backbone_config` must be a CLIPConfig, "
         r"MetaClip2Config, SiglipConfig, Siglip2Config or a dict, got str"),
        ({"clip_config": []}, TypeError, r"`clip_config` must be a CLIPConfig or a dict, got list"),
        ({"backbone_config": {"model_type": "blip"}}, ValueError, r"model_type 'blip' is not supported: use one of "
         r"\['clip', 'metaclip_2', 'siglip', 'siglip2'\]"),
        ({"backbone_config": CLIPTextConfig()}, ValueError, r"model_type 'clip_text_model' is not supported"),
        ({"backbone_config": {}, "clip_config": {}}, ValueError, r"pass either `backbone_config` or `clip_config`"),
        ({"prompt_context_start": -1}, ValueError, r"`prompt_context_start` must be an integer >= 0 .*got -1 \(int\)"),
        ({"prompt_context_start": "1"}, ValueError, r"`prompt_context_start` must be .*got '1' \(str\)"),
        ({"prompt_context_start": True}, ValueError, r"`prompt_context_start` must be .*got True \(bool\)"),
    ],
)  # fmt: skip
def test_bad_backbone_settings_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        CoCoOpConfig(**kwargs)


def test_a_siglip_without_vision_pooling_head_is_refused(backbone_configs):
    config = backbone_configs["siglip2"].to_dict()
    config["vision_config"]["vision_use_head"] = False
    with pytest.raises(ValueError, match=r"`backbone_config\.vision_config\.vision_use_head` must be true"):
        CoCoOpConfig(backbone_config=config)


def test_a_config_object_of_another_class_than_its_model_type_is_refused():
    class Imposter(CLIPConfig):
        model_type = "siglip"

    with pytest.raises(TypeError, match=r"is a Imposter with model_type 'siglip', not a SiglipConfig"):
        CoCoOpConfig(backbone_config=Imposter())


def test_prompt_context_start_none_and_overrides_are_checked(backbone_configs, tmp_path):
    config = CoCoOpConfig(backbone_config=backbone_configs["siglip2"], prompt_context_start=None)
    config.save_pretrained(tmp_path)
    assert CoCoOpConfig.from_pretrained(tmp_path).prompt_context_start is None
    assert CoCoOpConfig.from_pretrained(tmp_path, prompt_context_start=0).prompt_context_start == 0
    with pytest.raises(ValueError, match=r"`prompt_context_start` must be an integer >= 0"):
        CoCoOpConfig.from_pretrained(tmp_path, prompt_context_start=-2)  # an override goes through the checks


def test_widths_are_read_per_backbone(backbone_configs):
    # SigLIP's joint width is its text head's projection_size (48 here), not a projection_dim it does not have.
    siglip = backbone_configs["siglip"]
    assert CoCoOpConfig(backbone_config=siglip, meta_net_reduction=48).meta_net_reduction == 48
    with pytest.raises(ValueError, match=r"`meta_net_reduction`=49 exceeds text_config\.projection_size=48"):
        CoCoOpConfig(backbone_config=siglip, meta_net_reduction=49)
    clip = backbone_configs["clip"]  # projection_dim 40
    with pytest.raises(ValueError, match=r"`meta_net_reduction`=41 exceeds projection_dim=40"):
        CoCoOpConfig(backbone_config=clip, meta_net_reduction=41)
    # The context room follows the backbone's text context (SigLIP 64) and the tokens before the context.
    for start, longest in ((0, 62), (1, 61)):
        CoCoOpConfig(backbone_config=siglip, ctx_init=None, n_ctx=longest, prompt_context_start=start)
        with pytest.raises(ValueError, match=rf"`n_ctx`={longest + 1} leaves no room .*use n_ctx <= {longest}"):
            CoCoOpConfig(backbone_config=siglip, ctx_init=None, n_ctx=longest + 1, prompt_context_start=start)


# ---------------------------------------------------------------------------------------------- limits


def _variants(model_type):
    """Tiny configs of `model_type` that differ in every size the estimate reads, and the backbone's defaults."""
    row = BACKBONES[model_type]
    tower = dict(hidden_size=32, intermediate_size=80, num_hidden_layers=3, num_attention_heads=4)
    vision = dict(tower, hidden_size=24, image_size=40, patch_size=8, num_channels=2, num_patches=25)
    text = dict(tower, vocab_size=300, max_position_embeddings=20, projection_size=56)
    yield row.config_class()
    yield row.config_class(text_config=text, vision_config=vision, projection_dim=16)
    if not row.causal_text:  # SigLIP's vision pooling head is optional
        yield row.config_class(text_config=text, vision_config=dict(vision, vision_use_head=False))


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_parameter_estimate_is_exact_for_every_backbone(model_type):
    counts = []
    for config in _variants(model_type):
        with torch.device("meta"):
            model = BACKBONES[model_type].model_class(config)
        actual = sum(p.numel() for p in model.parameters())
        assert limits_cocoop.estimated_clip_parameters(config) == actual
        assert limits_cocoop.estimated_clip_parameters(config.to_dict()) == actual
        counts.append(actual)
    assert len(set(counts)) == len(counts)  # each variant changes the count: the comparison can fail


@pytest.mark.parametrize(
    ("model_type", "changes", "match"),
    [
        ("siglip", {"text_config": {"projection_size": 10**6}}, r"`backbone_config\.text_config\.projection_size` "
         r"must be an integer from 1 to 8,192"),
        ("siglip2", {"vision_config": {"num_patches": 10**6}}, r"`backbone_config\.vision_config\.num_patches` must be "
         r"an integer from 1 to 4,096"),
        ("siglip", {"vision_config": {"image_size": 8, "patch_size": 16}}, r"image_size 8 with patch_size 16 must give"),
        ("metaclip_2", {"text_config": {"vocab_size": 10**7}}, r"text_config\.vocab_size` must be .* 1 to 1,000,000"),
        ("siglip2", {"text_config": {"num_hidden_layers": 10**5}}, r"num_hidden_layers` must be .* 1 to 64"),
    ],
)  # fmt: skip
def test_limits_refuse_absurd_sizes_of_every_backbone_before_building(model_type, changes, match, monkeypatch):
    built = []
    for row in BACKBONES.values():  # any model built would call its class's __init__
        monkeypatch.setattr(row.model_class, "__init__", lambda self, *a, **k: built.append(1))
    config = {"model_type": model_type}
    config.update({key: dict(value) for key, value in changes.items()})
    with pytest.raises(ValueError, match=match):
        CoCoOpConfig(backbone_config=config)
    assert not built


def test_real_siglip2_and_metaclip2_sizes_fit_the_limits():
    # google/siglip2-so400m-patch16-naflex (text and vision so400m, Gemma's vocabulary, 256 patches) and
    # facebook/metaclip-2-worldwide-huge-quickgelu (ViT-H/14, XLM-V vocabulary): within the limits, and counted.
    so400m = dict(hidden_size=1152, intermediate_size=4304, num_attention_heads=16, num_hidden_layers=27)
    siglip2 = {
        "model_type": "siglip2",
        "text_config": dict(so400m, vocab_size=256_000, max_position_embeddings=64, projection_size=1152),
        "vision_config": dict(so400m, patch_size=16, num_patches=256),
    }
    metaclip2 = {
        "model_type": "metaclip_2",
        "projection_dim": 1024,
        "text_config": dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                            vocab_size=901_629),
        "vision_config": dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32,
                              patch_size=14),
    }  # fmt: skip
    for config in (siglip2, metaclip2):
        limits_cocoop.check_backbone_config(config)
    assert 1.1e9 < limits_cocoop.estimated_clip_parameters(siglip2) < 1.2e9  # so400m x 2 + 256k x 1152 embeddings
    assert 1.8e9 < limits_cocoop.estimated_clip_parameters(metaclip2) < 2.0e9  # ViT-H/14 + a 0.9 B-value table


@pytest.mark.parametrize("model_type", ["siglip", "siglip2", "metaclip_2"])
def test_a_checkpoint_config_asking_for_more_than_its_weights_is_refused(model_type, tmp_path):
    folder = save_tiny_backbone(tmp_path / model_type, model_type)
    config = limits_cocoop.check_clip_checkpoint(folder)  # the unedited folder passes
    assert config["model_type"] == model_type
    saved = json.loads((folder / "config.json").read_text())
    saved["vision_config"]["num_hidden_layers"] = 64  # within the limits; its weights hold 2 layers
    (folder / "config.json").write_text(json.dumps(saved))
    name = {"siglip": "SigLIP", "siglip2": "SigLIP 2", "metaclip_2": "MetaCLIP 2"}[model_type]  # the backbone's own
    with pytest.raises(ValueError, match=rf"config\.json describes a {name} of [\d,]+ parameters, but the weights in"):
        limits_cocoop.check_clip_checkpoint(folder)


def test_backbone_config_from_dict_defaults_to_clip():
    assert type(backbone_config_from_dict({"projection_dim": 16})) is CLIPConfig
    assert type(backbone_config_from_dict({"model_type": "siglip2"})) is Siglip2Config
