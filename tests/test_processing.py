"""CoCoOpProcessor: images -> pixel_values, class names -> the model's prompt ids, save / load."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, CLIPImageProcessor, CLIPTokenizer

from cocoop_hf import CoCoOpModel, CoCoOpProcessor, build_prompt_ids

from .cocoop_sharing import CLIP_REPO, TOKENIZER_FILES, no_package_results
from .conftest import CLASS_NAMES, NEW_CLASS_NAMES


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
    assert set(inputs) == {"pixel_values", "input_ids", "eos_index"}
    assert shared.model(pixel_values=inputs["pixel_values"]).logits.shape == (1, len(CLASS_NAMES))


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
