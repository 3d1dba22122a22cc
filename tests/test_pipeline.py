"""The CoCoOp zero-shot pipeline and the stock image-classification pipeline, from a saved folder."""

import json
import os
import shutil

import pytest
import torch
from PIL import Image
from transformers import pipeline

from cocoop_hf.pipeline_cocoop import CoCoOpZeroShotImageClassificationPipeline

from .cocoop_sharing import ADAPTER_REPO, TOKENIZER_FILES
from .conftest import NEW_CLASS_NAMES


@pytest.fixture(scope="module")
def zero_shot(shared):
    return pipeline("zero-shot-image-classification", model=str(shared.full_dir), trust_remote_code=True)


def expected_scores(shared, image_path, labels):
    """What the pipeline must return: the model's own softmax over `labels` (through the processor)."""
    from cocoop_hf import CoCoOpModel, CoCoOpProcessor

    model = CoCoOpModel.from_pretrained(shared.full_dir)
    model.set_class_names(labels)
    pixels = CoCoOpProcessor.from_pretrained(shared.full_dir)(images=Image.open(image_path).convert("RGB"))
    with torch.no_grad():
        return model(**pixels).logits.softmax(-1)[0]


def test_new_labels_use_learned_prompts(shared, zero_shot):
    labels = NEW_CLASS_NAMES[:5]
    out = zero_shot(str(shared.images["red"]), candidate_labels=labels)
    assert [set(item) for item in out] == [{"score", "label"}] * 5
    assert [item["score"] for item in out] == sorted((item["score"] for item in out), reverse=True)
    probs = expected_scores(shared, shared.images["red"], labels)
    for item in out:
        assert item["score"] == pytest.approx(probs[labels.index(item["label"])].item(), abs=1e-5)
    # The trained class set is untouched by a call with other labels.
    assert zero_shot.model.class_names == shared.model.class_names
    assert zero_shot.model.config.id2label == dict(enumerate(shared.model.class_names))


def test_default_labels_are_trained_classes(shared, zero_shot):
    out = zero_shot(Image.open(shared.images["blue"]))
    assert sorted(item["label"] for item in out) == sorted(shared.model.class_names)
    assert sum(item["score"] for item in out) == pytest.approx(1.0, abs=1e-5)


def test_batch_of_images_top_k_and_batch_size(shared, zero_shot):
    images = [str(shared.images["red"]), Image.open(shared.images["blue"]), shared.images["red"]]
    single = [zero_shot(image, candidate_labels=["cat", "dog", "car"], top_k=2) for image in images]
    batched = zero_shot(images, candidate_labels=["cat", "dog", "car"], top_k=2, batch_size=2)
    assert len(batched) == 3 and all(len(result) == 2 for result in batched)
    for one, other in zip(single, batched, strict=True):
        assert [r["label"] for r in one] == [r["label"] for r in other]
        assert [r["score"] for r in one] == pytest.approx([r["score"] for r in other], abs=1e-5)


def test_device_argument(shared):
    pipe = pipeline("zero-shot-image-classification", model=str(shared.full_dir), trust_remote_code=True, device="cpu")
    assert pipe.device.type == "cpu"
    assert len(pipe(str(shared.images["red"]), candidate_labels=["a", "b"])) == 2


@pytest.mark.parametrize("by", ["folder", "repo id"])
def test_adapter_pipelines(shared, zero_shot, offline_cache, by):
    """An adapter folder holds no tokenizer: both pipelines still work, the tokenizer coming from the base CLIP."""
    assert not TOKENIZER_FILES & set(os.listdir(shared.adapter_dir))
    model = str(shared.adapter_dir) if by == "folder" else ADAPTER_REPO
    pipe = pipeline("zero-shot-image-classification", model=model, trust_remote_code=True)
    assert pipe.tokenizer is pipe.model.tokenizer and pipe.tokenizer.name_or_path.endswith(("tiny-clip", "c1" * 20))
    image, labels = str(shared.images["red"]), ["cat", "dog"]
    assert pipe(image, candidate_labels=labels) == zero_shot(image, candidate_labels=labels)
    assert pipe(image) == zero_shot(image)
    classifier = pipeline("image-classification", model=model, trust_remote_code=True)
    full = pipeline("image-classification", model=str(shared.full_dir), trust_remote_code=True)
    assert classifier(image, top_k=3) == full(image, top_k=3)


def test_adapter_without_image_processor_config(shared, zero_shot, offline_cache, tmp_path):
    """No image processor in the adapter folder: the zero-shot pipeline takes the base CLIP's; the stock one says so."""
    folder = tmp_path / "adapter"
    shutil.copytree(shared.adapter_dir, folder)
    processor_config = json.loads((folder / "processor_config.json").read_text())
    del processor_config["image_processor"]
    (folder / "processor_config.json").write_text(json.dumps(processor_config))
    pipe = pipeline("zero-shot-image-classification", model=str(folder), trust_remote_code=True)
    settings = [{k: v for k, v in p.image_processor.to_dict().items() if k != "auto_map"} for p in (pipe, zero_shot)]
    assert settings[0] == settings[1]
    image = str(shared.images["blue"])
    assert pipe(image, candidate_labels=["cat", "dog"]) == zero_shot(image, candidate_labels=["cat", "dog"])
    with pytest.raises(OSError, match="image processor"):
        pipeline("image-classification", model=str(folder), trust_remote_code=True)
    classifier = pipeline(
        "image-classification", model=str(folder), trust_remote_code=True, image_processor=pipe.image_processor
    )
    assert len(classifier(image, top_k=2)) == 2


def test_image_classification_pipeline(shared, zero_shot):
    classifier = pipeline("image-classification", model=str(shared.full_dir), trust_remote_code=True)
    out = classifier(str(shared.images["red"]), top_k=3)
    reference = zero_shot(str(shared.images["red"]))[:3]
    assert [item["label"] for item in out] == [item["label"] for item in reference]
    assert [item["score"] for item in out] == pytest.approx([item["score"] for item in reference], abs=1e-5)


def test_stock_pipeline_untouched_by_import():
    from transformers.pipelines import PIPELINE_REGISTRY

    import cocoop_hf  # noqa: F401

    impl = PIPELINE_REGISTRY.supported_tasks["zero-shot-image-classification"]["impl"]
    assert impl is not CoCoOpZeroShotImageClassificationPipeline


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"candidate_labels": []}, ValueError, "empty"),
        ({"candidate_labels": ["cat", "dog", "cat"]}, ValueError, "duplicate class name 'cat'"),
        ({"candidate_labels": "cat"}, TypeError, "single string"),
        ({"candidate_labels": ["cat"], "hypothesis_template": "a photo of {}"}, ValueError, "learned"),
        ({"candidate_labels": ["cat"], "top_k": 0}, ValueError, "top_k"),
        ({"candidate_labels": ["cat"], "temperature": 2}, TypeError, "temperature"),
    ],
)
def test_bad_arguments(shared, zero_shot, kwargs, error, match):
    with pytest.raises(error, match=match):
        zero_shot(str(shared.images["red"]), **kwargs)


@pytest.mark.parametrize(
    "image, error, match",
    [
        (42, TypeError, "got int"),
        (torch.zeros(3, 8, 8), TypeError, "got Tensor"),
        ("corrupt", ValueError, "cannot read image file .*corrupt.jpg"),
        ("text", ValueError, "cannot read image file .*notes.txt"),
        ("/no/such/file.jpg", ValueError, "neither an existing file"),
        ([], ValueError, "empty"),
    ],
)
def test_bad_images(shared, zero_shot, image, error, match):
    image = str(shared.images[image]) if isinstance(image, str) and image in shared.images else image
    with pytest.raises(error, match=match):
        zero_shot(image, candidate_labels=["cat", "dog"])


def test_not_a_cocoop_folder(tmp_path, tiny_clip_dir):
    with pytest.raises((OSError, ValueError), match="config.json|does not appear to have"):
        pipeline("zero-shot-image-classification", model=str(tmp_path), trust_remote_code=True)
    with pytest.raises(ValueError, match="needs a CoCoOp model"):
        from transformers import CLIPModel

        CoCoOpZeroShotImageClassificationPipeline(model=CLIPModel.from_pretrained(tiny_clip_dir))


def test_label_prompts_are_built_once_per_label_set(shared, monkeypatch):
    """Tokenising 1,000 labels costs ~50 ms: the pipeline keeps the prompts of each label set it has seen."""
    classifier = pipeline("zero-shot-image-classification", model=str(shared.full_dir), trust_remote_code=True)
    built = []
    original = classifier.model.class_prompts
    monkeypatch.setattr(
        classifier.model, "class_prompts", lambda names, **kw: built.append(names) or original(names, **kw)
    )
    image = str(shared.images["red"])
    first = classifier(image, candidate_labels=["cat", "dog"])
    for _ in range(3):
        again = classifier(image, candidate_labels=["cat", "dog"])
        assert [item["label"] for item in again] == [item["label"] for item in first]
        assert [item["score"] for item in again] == pytest.approx([item["score"] for item in first], abs=1e-6)
    classifier(image, candidate_labels=["fox", "wolf", "bear"])
    classifier(image, candidate_labels=["cat", "dog"])
    assert built == [["cat", "dog"], ["fox", "wolf", "bear"]]


def test_pipeline_passes_the_name_length_of_moved_class_names(tiny_clip_dir, tokenizer, tmp_path, shared):
    """class_token_position="middle" needs each label's name length: the pipeline passes it with the prompts."""
    from cocoop_hf import CoCoOpModel, CoCoOpProcessor

    model = CoCoOpModel.from_clip(
        str(tiny_clip_dir), NEW_CLASS_NAMES, tokenizer=tokenizer, class_token_position="middle"
    )
    model.save_pretrained(tmp_path)
    classifier = pipeline("zero-shot-image-classification", model=str(tmp_path), trust_remote_code=True)
    labels = ["great white shark", "tench", "x"]
    out = classifier(str(shared.images["red"]), candidate_labels=labels)
    inputs = CoCoOpProcessor.from_pretrained(tmp_path)(
        images=Image.open(shared.images["red"]).convert("RGB"), class_names=labels
    )
    with torch.no_grad():
        probs = model(**inputs).logits.softmax(-1)[0]
    for item in out:
        assert item["score"] == pytest.approx(probs[labels.index(item["label"])].item(), abs=1e-5)
