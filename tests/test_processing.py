"""CoCoOpProcessor: images -> pixel_values, class names -> the model's prompt ids, save / load."""

import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import normalizers
from transformers import AutoProcessor, CLIPImageProcessor, CLIPTokenizer

from cocoop_hf import CoCoOpModel, CoCoOpProcessor, build_prompt_ids
from cocoop_hf.processing_cocoop import class_name_key, clean_class_name, validate_class_names

from .cocoop_sharing import CLIP_REPO, TOKENIZER_FILES, no_package_results
from .conftest import CLASS_NAMES, NEW_CLASS_NAMES, TOKENIZER_DIR


@pytest.fixture(scope="module")
def processor(shared):
    return CoCoOpProcessor.from_pretrained(shared.full_dir)


def test_loaded_with_model_folder(shared, processor):
    assert isinstance(processor.image_processor, CLIPImageProcessor)
    assert isinstance(processor.tokenizer, CLIPTokenizer)
    config = shared.model.config
    assert (processor.prompt_prefix, processor.n_ctx, processor.context_length) == (config.prompt_prefix, 4, 77)
    auto = AutoProcessor.from_pretrained(shared.full_dir, trust_remote_code=True)
    assert type(auto).__name__ == "CoCoOpProcessor" and auto.n_ctx == 4


def test_images_to_pixel_values(processor):
    images = [Image.new("RGB", (40, 30), (255, 0, 0)), np.zeros((20, 50, 3), dtype=np.uint8)]
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (2, 3, 32, 32) and pixel_values.dtype == torch.float32


def test_class_names_match_the_model_prompts(shared, processor):
    """The processor and the model build prompts in one place: same ids, same EOS positions."""
    model = CoCoOpModel.from_pretrained(shared.full_dir)
    model.set_class_names(NEW_CLASS_NAMES)
    encoding = processor(class_names=NEW_CLASS_NAMES)
    length = model.prompt_ids.shape[1]
    assert torch.equal(encoding["input_ids"][:, :length], model.prompt_ids)
    assert torch.equal(encoding["eos_index"], model.eos_index)
    direct = build_prompt_ids(processor.tokenizer, NEW_CLASS_NAMES, "a photo of a", 4, 77)
    assert torch.equal(direct["input_ids"], encoding["input_ids"])
    assert torch.equal(processor.tokenize_class_names(NEW_CLASS_NAMES, model.config)["input_ids"], direct["input_ids"])


def test_images_and_class_names_together_feed_the_model(shared, processor):
    inputs = processor(images=Image.new("RGB", (32, 32)), class_names=CLASS_NAMES)
    assert set(inputs) == {"pixel_values", "input_ids", "eos_index", "name_length", "context_start"}
    with torch.no_grad():
        held = shared.model(pixel_values=inputs["pixel_values"]).logits  # the class set the model holds
        given = shared.model(**inputs).logits  # the same names, as prompts from the processor
        other = shared.model(**processor(images=Image.new("RGB", (32, 32)), class_names=NEW_CLASS_NAMES)).logits
    assert held.shape == (1, len(CLASS_NAMES)) and other.shape == (1, len(NEW_CLASS_NAMES))
    torch.testing.assert_close(given, held, rtol=0, atol=1e-5)


def test_save_load_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "processing_cocoop.py").exists()
    again = CoCoOpProcessor.from_pretrained(tmp_path)
    drop = {"auto_map"}
    assert {k: v for k, v in again.to_dict().items() if k not in drop} == {
        k: v for k, v in processor.to_dict().items() if k not in drop
    }
    assert torch.equal(again(class_names=["cat"])["input_ids"], processor(class_names=["cat"])["input_ids"])


def test_auto_processor_without_package(tmp_path_factory):
    result = no_package_results(tmp_path_factory)
    assert result["package_importable"] is False
    assert result["processor_class"] == "CoCoOpProcessor"
    assert result["processor_prompt_ids_shape"] == [2, 77]


# ---------------------------------------------------------------------------------------------- adapter folders


def copy_adapter(shared, tmp_path):
    folder = tmp_path / "adapter"
    shutil.copytree(shared.adapter_dir, folder)
    return folder


def assert_same_processor(loaded, processor):
    assert type(loaded).__name__ == "CoCoOpProcessor"
    assert (loaded.prompt_prefix, loaded.n_ctx, loaded.context_length) == (processor.prompt_prefix, 4, 77)
    assert loaded.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    names = NEW_CLASS_NAMES + ["great_white_shark"]
    assert torch.equal(loaded(class_names=names)["input_ids"], processor(class_names=names)["input_ids"])
    image = Image.new("RGB", (40, 30), (255, 0, 0))
    assert torch.equal(loaded(images=image)["pixel_values"], processor(images=image)["pixel_values"])


def test_adapter_folder_processor_takes_tokenizer_from_base_clip(shared, processor, offline_cache):
    assert not TOKENIZER_FILES & set(os.listdir(shared.adapter_dir))
    loaded = CoCoOpProcessor.from_pretrained(shared.adapter_dir)
    assert loaded.tokenizer.name_or_path.endswith(("tiny-clip", "c1" * 20))  # the base CLIP at its revision
    assert_same_processor(loaded, processor)
    assert_same_processor(AutoProcessor.from_pretrained(shared.adapter_dir, trust_remote_code=True), processor)


def test_adapter_folder_without_processor_config(shared, processor, offline_cache, tmp_path):
    """Prompt settings then come from config.json, the image processor from the base CLIP."""
    folder = copy_adapter(shared, tmp_path)
    (folder / "processor_config.json").unlink()
    assert_same_processor(CoCoOpProcessor.from_pretrained(folder), processor)


def test_adapter_folder_with_missing_base_clip(shared, offline_cache, tmp_path):
    folder = copy_adapter(shared, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["clip_revision"] = "d" * 40  # not in the cache
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(OSError, match=f"base CLIP '{CLIP_REPO}' at revision '{'d' * 40}'"):
        CoCoOpProcessor.from_pretrained(folder)
    config["clip_name_or_path"] = None
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="without `clip_name_or_path`"):
        CoCoOpProcessor.from_pretrained(folder)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({}, ValueError, "pass `images`"),
        ({"class_names": []}, ValueError, "empty"),
        ({"class_names": ["cat", "cat"]}, ValueError, "duplicate"),
        ({"class_names": ["cat"], "text": "a cat"}, ValueError, "either `text` or `class_names`"),
        ({"images": "not an image"}, ValueError, "cannot process `images`"),
        ({"images": 3.5}, TypeError, "cannot process `images`"),
    ],
)
def test_bad_input(processor, kwargs, error, match):
    with pytest.raises(error, match=match):
        processor(**kwargs)


def test_without_context_words(tokenizer):
    bare = CoCoOpProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer)
    with pytest.raises(ValueError, match="context words"):
        bare(class_names=["cat"])
    with pytest.raises(ValueError, match="n_ctx"):
        CoCoOpProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer, prompt_prefix="a b", n_ctx=0)


# ------------------------------------------------------------------------------ class names the tokenizer merges

# Names chosen to probe each step of CLIPTokenizer's normaliser and pre-tokeniser (NFC, whitespace, lowercase one
# character at a time, the split pattern with its contractions, digits one by one, runs of punctuation) and the
# prompt's closing "." (which joins trailing punctuation).
TRICKY_NAMES = [
    *["Cat", "cat", "CAT ", " cat", "cat\n", "catdog", "cat_dog", "cat dog", "cat  dog", "cat\tdog", "cat\u00a0dog"],
    *["cat\u2003dog", "cat\x1cdog", "cat\u200bdog", "cat.", "cat .", "cat. ", "cat..", "cat!", "cat !", "cat!."],
    *["t-shirt", "t - shirt", "t -shirt", "t--shirt", "t - - shirt", "a+b", "a + b", "c++", "c + +", "c ++"],
    *["cat's", "cat 's", "cat' s", "Cat'S", "rock'n'roll", "rock 'n' roll", "O'Neil", "o 'neil", "o' neil", "' s"],
    *["café", "cafe\u0301", "CAFÉ", "cafe", "Straße", "strasse", "STRASSE", "İstanbul", "i\u0307stanbul"],
    *["ΟΔΟΣ", "οδος", "οδοσ", "ǅemal", "ǆemal", "ﬁsh", "fish", "ＣＡＴ", "ｃａｔ", "7up", "7 up", "7-up", "12", "1 2"],
    *["1_2", "²", "2", "Ⅻ", "ⅻ", "日本", "日 本", "x\u0300", "x \u0300"],
]


def test_class_name_key_groups_exactly_the_names_the_tokenizer_merges(tokenizer):
    """Two names share a key exactly when the real CLIP tokenizer gives their prompts the same ids."""
    by_ids, by_key = {}, {}
    for name in TRICKY_NAMES:
        ids = tokenizer(f"a photo of a {clean_class_name(name)}.")["input_ids"]
        by_ids.setdefault(tuple(ids), set()).add(name)
        by_key.setdefault(class_name_key(name), set()).add(name)
    groups = sorted(map(sorted, by_ids.values()))
    assert groups == sorted(map(sorted, by_key.values()))
    assert ["Cat", "cat", "CAT ", " cat", "cat\n"] in [sorted(g, key=TRICKY_NAMES.index) for g in groups]
    assert sum(len(group) > 1 for group in groups) >= 20  # the list does probe merges, not only distinct names


@pytest.mark.parametrize(
    ("names", "first", "second"),
    [
        (["dog", "Cat", "cat"], 1, 2),
        (["cat dog", "bird", "cat  dog"], 0, 2),
        (["cat_dog", "cat dog"], 0, 1),  # official name.replace("_", " ")
        (["T-Shirt", "t - shirt"], 0, 1),
        (["café", "cafe\u0301"], 0, 1),  # NFC and NFD spellings
    ],
)
def test_names_the_tokenizer_cannot_tell_apart_are_refused(processor, names, first, second):
    encoded = processor.tokenizer([f"a photo of a {clean_class_name(n)}." for n in names])["input_ids"]
    assert encoded[first] == encoded[second]  # what the refusal is about: identical prompts, identical logits
    match = rf"duplicate class name {re.escape(repr(names[second]))} at index {second}: .*"
    match += rf"{re.escape(repr(names[first]))} at index {first}"
    with pytest.raises(ValueError, match=match):
        validate_class_names(names)
    with pytest.raises(ValueError, match=match):
        processor(class_names=names)
    with pytest.raises(ValueError, match=match):
        build_prompt_ids(processor.tokenizer, iter(names), "a photo of a", 4)


def test_identical_prompt_ids_are_refused_for_any_tokenizer():
    """Another tokenizer may merge names the CLIP key keeps apart: the ids themselves are compared too."""
    stripping = CLIPTokenizer.from_pretrained(TOKENIZER_DIR)
    stripping.backend_tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()]
    )
    names = ["café", "tea", "cafe"]
    assert class_name_key(names[0]) != class_name_key(names[2])
    with pytest.raises(ValueError, match=r"duplicate class name 'cafe' at index 2: .* as 'café' at index 0"):
        build_prompt_ids(stripping, names, "a photo of a", 4)
    assert build_prompt_ids(stripping, names[:2], "a photo of a", 4)["input_ids"].shape == (2, 77)


def test_class_names_from_a_generator(processor):
    expected = processor(class_names=NEW_CLASS_NAMES)
    for names in (iter(NEW_CLASS_NAMES), (name for name in NEW_CLASS_NAMES), tuple(NEW_CLASS_NAMES)):
        encoding = processor(class_names=names)
        assert torch.equal(encoding["input_ids"], expected["input_ids"])
        assert torch.equal(encoding["eos_index"], expected["eos_index"])
    assert validate_class_names(name for name in CLASS_NAMES) == CLASS_NAMES
    with pytest.raises(TypeError, match="got a dict"):
        validate_class_names(dict(enumerate(CLASS_NAMES)))


def test_special_tokens_inside_a_class_name_are_refused(processor):
    with pytest.raises(ValueError, match=r"class name 'cat<\|endoftext\|>' \(index 1\) contains the tokenizer's"):
        processor(class_names=["dog", "cat<|endoftext|>"])
    with pytest.raises(ValueError, match="contains the tokenizer's start or end token"):
        processor(class_names=["<|startoftext|> dog"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_ctx": "4"}, r"`n_ctx` must be an integer >= 1, got '4' \(str\)"),
        ({"n_ctx": True}, r"`n_ctx` must be an integer >= 1, got True \(bool\)"),
        ({"context_length": "77"}, r"`context_length` must be an integer >= 4, got '77' \(str\)"),
        ({"prompt_prefix": None}, r"`prompt_prefix` must be a non-empty string"),
    ],
)
def test_build_prompt_ids_checks_its_settings(tokenizer, kwargs, match):
    settings = {"prompt_prefix": "a photo of a", "n_ctx": 4, "context_length": 77, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_prompt_ids(tokenizer, ["cat"], **settings)


def test_processor_checks_context_length(tokenizer):
    with pytest.raises(ValueError, match=r"`context_length` must be .*got '77' \(str\)"):
        CoCoOpProcessor(CLIPImageProcessor(), tokenizer, prompt_prefix="a photo of a", n_ctx=4, context_length="77")


# ------------------------------------------------------------------------- hand-edited files of a saved folder


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_full_folder_with_string_adapter_only_is_refused(shared, tmp_path):
    """`"adapter_only": "false"` read as true took a full folder for an adapter and loaded another tokenizer."""
    folder = tmp_path / "full"
    shutil.copytree(shared.full_dir, folder)
    edit_json(folder / "config.json", adapter_only="false")
    match = rf"{re.escape(str(folder / 'config.json'))}: `adapter_only` must be True or False .*got 'false' \(str\)"
    with pytest.raises(ValueError, match=match):
        CoCoOpProcessor.from_pretrained(folder)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"n_ctx": "4"}, r"`n_ctx` must be a positive integer, got '4' \(str\)"),
        ({"ctx_init": 4}, r"`ctx_init` must be a non-empty string of words or None, got 4"),
        ({"clip_revision": 3}, r"`clip_revision` must be a non-empty string or None, got 3 \(int\)"),
        ({"clip_config": []}, r"`clip_config` must be a CLIPConfig or a dict, got list"),
        (
            {"clip_config": {"text_config": {"vocab_size": "x"}}},
            r"`clip_config\.text_config\.vocab_size` must be an integer from 1 to 1,000,000, got 'x' \(str\)",
        ),
    ],
)
def test_adapter_folder_with_bad_config_json(shared, offline_cache, tmp_path, changes, match):
    folder = copy_adapter(shared, tmp_path)
    (folder / "processor_config.json").unlink()  # prompt settings then come from config.json
    edit_json(folder / "config.json", **changes)
    with pytest.raises(ValueError, match=rf"{re.escape(str(folder / 'config.json'))}: {match}"):
        CoCoOpProcessor.from_pretrained(folder)


def test_config_json_that_is_not_json(shared, tmp_path):
    folder = tmp_path / "full"
    shutil.copytree(shared.full_dir, folder)
    (folder / "config.json").write_text('{"model_type": "cocoop",')
    with pytest.raises(ValueError, match=rf"{re.escape(str(folder / 'config.json'))} is not valid JSON"):
        CoCoOpProcessor.from_pretrained(folder)


def test_processor_config_with_string_numbers_names_the_folder(shared, tmp_path):
    folder = tmp_path / "full"
    shutil.copytree(shared.full_dir, folder)
    edit_json(folder / "processor_config.json", n_ctx="4")
    with pytest.raises(ValueError, match=rf"processor files of {re.escape(str(folder))}: `n_ctx` .*got '4' \(str\)"):
        CoCoOpProcessor.from_pretrained(folder)
