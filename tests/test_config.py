"""CoCoOpConfig: defaults, validation with clear messages, serialisation."""

import pytest
from transformers import AutoConfig, CLIPConfig

from cocoop_hf import CoCoOpConfig

from .conftest import CLASS_NAMES, tiny_clip_config


def make(**kwargs):
    return CoCoOpConfig(clip_config=tiny_clip_config().to_dict(), **kwargs)


def test_defaults_follow_the_official_recipe():
    config = make()
    assert config.model_type == "cocoop"
    assert (config.n_ctx, config.ctx_init, config.meta_net_reduction) == (4, "a photo of a", 16)
    assert config.conditional is True and config.adapter_only is False
    assert config.prompt_prefix == "a photo of a"
    assert isinstance(config.clip_config, CLIPConfig)


def test_n_ctx_is_the_word_count_of_ctx_init():
    assert make(ctx_init="a_photo of a nice").n_ctx == 5  # official: "_" -> " ", n_ctx = word count
    assert make(ctx_init="  a   photo ").ctx_init == "a photo"
    assert make(ctx_init="a photo", n_ctx=2).n_ctx == 2


def test_random_context_placeholder():
    config = make(ctx_init=None, n_ctx=16)
    assert config.n_ctx == 16 and config.prompt_prefix == " ".join(["X"] * 16)
    assert make(ctx_init=None).n_ctx == 4


def test_ctx_init_inconsistent_with_n_ctx():
    with pytest.raises(
        ValueError, match=r"`n_ctx`=16 is inconsistent with `ctx_init`='a photo of a', which has 4 words"
    ):
        make(n_ctx=16)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ctx_init": ""}, ValueError, "`ctx_init` must be a non-empty string"),
        ({"ctx_init": 3}, ValueError, "`ctx_init` must be a non-empty string"),
        ({"ctx_init": None, "n_ctx": 0}, ValueError, "`n_ctx` must be a positive integer, got 0"),
        ({"ctx_init": None, "n_ctx": 2.0}, ValueError, "`n_ctx` must be a positive integer"),
        ({"ctx_init": None, "n_ctx": 75}, ValueError, "`n_ctx`=75 leaves no room.*n_ctx <= 74"),
        ({"meta_net_reduction": 0}, ValueError, "`meta_net_reduction` must be a positive integer"),
        ({"meta_net_reduction": 64}, ValueError, "`meta_net_reduction`=64 exceeds projection_dim=48"),
        ({"text_chunk_tokens": 0}, ValueError, "`text_chunk_tokens` must be a positive integer"),
    ],
)
def test_bad_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        make(**kwargs)


def test_bad_clip_config_type():
    with pytest.raises(TypeError, match="`clip_config` must be a CLIPConfig or a dict, got str"):
        CoCoOpConfig(clip_config="openai/clip-vit-base-patch16")


def test_round_trip_through_json(tmp_path):
    config = make(
        conditional=False,
        clip_name_or_path="openai/clip-vit-base-patch16",
        clip_revision="57c216476eefef5ab752ec549e440a49ae4ae5f3",
        id2label=dict(enumerate(CLASS_NAMES)),
        label2id={name: i for i, name in enumerate(CLASS_NAMES)},
    )
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, CoCoOpConfig)
    assert loaded.class_names == CLASS_NAMES
    assert (loaded.conditional, loaded.n_ctx, loaded.ctx_init) == (False, 4, "a photo of a")
    assert loaded.clip_name_or_path == "openai/clip-vit-base-patch16"
    assert loaded.clip_revision == "57c216476eefef5ab752ec549e440a49ae4ae5f3"
    assert isinstance(loaded.clip_config, CLIPConfig)
    assert loaded.clip_config.text_config.hidden_size == 64
    assert loaded.clip_config.projection_dim == 48


def test_legacy_eos_survives_round_trip(tmp_path):
    config = CoCoOpConfig(clip_config=tiny_clip_config(eos_token_id=2).to_dict())
    config.save_pretrained(tmp_path)
    assert CoCoOpConfig.from_pretrained(tmp_path).clip_config.text_config.eos_token_id == 2
