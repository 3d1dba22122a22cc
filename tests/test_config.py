"""CoCoOpConfig: defaults, validation with clear messages, serialisation."""

import json

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


# ------------------------------------------------------------------------------- hand-written config.json files


def write_config(folder, **changes):
    """A config.json as a person might edit it: the saved tiny config with `changes` (None deletes a key)."""
    config = make().to_dict()
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"n_ctx": "4"}, r"`n_ctx` must be a positive integer, got '4' \(str\)"),
        ({"n_ctx": "4", "ctx_init": None}, r"`n_ctx` must be a positive integer, got '4' \(str\)"),
        ({"n_ctx": 4.0}, r"`n_ctx` must be a positive integer, got 4.0 \(float\)"),
        ({"adapter_only": "false"}, r"`adapter_only` must be True or False \(a JSON boolean\), got 'false' \(str\)"),
        ({"conditional": "no"}, r"`conditional` must be True or False .*got 'no' \(str\)"),
        ({"conditional": 0}, r"`conditional` must be True or False .*got 0 \(int\)"),
        ({"bucket_by_length": "true"}, r"`bucket_by_length` must be True or False .*got 'true' \(str\)"),
        ({"meta_net_reduction": True}, r"`meta_net_reduction` must be a positive integer, got True \(bool\)"),
        ({"meta_net_reduction": -4}, r"`meta_net_reduction` must be a positive integer, got -4 \(int\)"),
        ({"text_chunk_tokens": "131072"}, r"`text_chunk_tokens` must be a positive integer, got '131072' \(str\)"),
        ({"clip_revision": 5}, r"`clip_revision` must be a non-empty string or None, got 5 \(int\)"),
        ({"clip_name_or_path": ""}, r"`clip_name_or_path` must be a non-empty string or None, got ''"),
        ({"id2label": ["cat", "dog"]}, r"`id2label` must be a mapping .*got \['cat', 'dog'\] \(list\)"),
        ({"id2label": {"0": "a", "1": "b", "3": "c"}}, r"`id2label` keys must be exactly 0..2 .*missing \[2\]"),
        (
            {"id2label": {"1": "a", "2": "b"}},
            r"`id2label` keys must be exactly 0..1 .*missing \[0\], unexpected \[2\]",
        ),
        ({"id2label": {"0": "a", "one": "b"}}, r"`id2label` keys must be class indices .*got the key 'one'"),
        ({"id2label": {"0": "a", "-1": "b"}}, r"`id2label` keys must be class indices .*got the key '-1'"),
        ({"id2label": {"0": "a", "1": ""}}, r"`id2label\[1\]` must be a non-empty class name, got ''"),
        ({"id2label": {"0": "a", "1": 7}}, r"`id2label\[1\]` must be a non-empty class name, got 7 \(int\)"),
        ({"id2label": {"0": "cat", "1": "cat"}, "label2id": None}, r"`id2label` names class 0 and class 1 both 'cat'"),
        ({"id2label": {"0": "a", "1": "b"}, "label2id": {"a": 0, "b": 0}}, r"`label2id` must be the inverse"),
    ],
)
def test_bad_config_json_names_file_field_and_value(tmp_path, changes, match):
    """Values a hand-edited config.json may hold: refused with the file, the field, the value and what is right."""
    folder = write_config(tmp_path / "model", **changes)
    with pytest.raises(ValueError, match=match) as caught:
        CoCoOpConfig.from_pretrained(folder)
    assert str(caught.value).startswith(f"{folder / 'config.json'}: ")
    with pytest.raises(ValueError, match=match):  # the Auto class reads the same file through from_dict
        AutoConfig.from_pretrained(folder)


def test_json_id2label_keys_become_ints_and_label2id_follows(tmp_path):
    folder = write_config(tmp_path / "model", id2label={"0": "cat", "1": "dog"}, label2id=None)
    config = CoCoOpConfig.from_pretrained(folder)
    assert config.id2label == {0: "cat", 1: "dog"} and config.label2id == {"cat": 0, "dog": 1}
    assert config.class_names == ["cat", "dog"]
    # Keys in any order are put in label order.
    assert make(id2label={1: "dog", 0: "cat"}).class_names == ["cat", "dog"]


def test_id2label_from_a_generator_is_refused_not_emptied():
    names = (name for name in CLASS_NAMES)
    with pytest.raises(ValueError, match=r"`id2label` must be a mapping .*\(generator\).*dict\(enumerate"):
        make(id2label=names)
    config = make(id2label=dict(enumerate(name for name in CLASS_NAMES)))
    assert config.class_names == CLASS_NAMES and config.label2id == {n: i for i, n in enumerate(CLASS_NAMES)}


def test_label2id_without_id2label():
    with pytest.raises(ValueError, match="`label2id` was given without `id2label`"):
        make(label2id={"cat": 0})


def test_from_pretrained_overrides_are_checked(tmp_path):
    """`from_pretrained(path, field=...)` goes through the same checks; derived fields follow the override."""
    folder = write_config(tmp_path / "model")
    with pytest.raises(ValueError, match=r"`adapter_only` must be True or False .*got 'false' \(str\)"):
        CoCoOpConfig.from_pretrained(folder, adapter_only="false")
    config = CoCoOpConfig.from_pretrained(folder, ctx_init="a photo")
    assert (config.ctx_init, config.n_ctx) == ("a photo", 2)  # was left at the file's n_ctx=4
    config = CoCoOpConfig.from_pretrained(folder, id2label={0: "cat", 1: "dog"})
    assert config.label2id == {"cat": 0, "dog": 1}
    config, unused = CoCoOpConfig.from_pretrained(folder, conditional=False, foo=1, return_unused_kwargs=True)
    assert config.conditional is False and unused == {"foo": 1}


def test_clip_name_or_path_may_be_a_path_object(tmp_path):
    assert make(clip_name_or_path=tmp_path).clip_name_or_path == str(tmp_path)
