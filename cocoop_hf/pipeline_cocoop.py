"""
`zero-shot-image-classification` with CoCoOp's learned conditional prompts, over any label set.

Reaches users through `custom_pipelines` in each saved config (see `CUSTOM_PIPELINES`), never through
`PIPELINE_REGISTRY` on import, which would replace the stock pipeline for plain CLIP in the whole process. This file
may import only torch, PIL, transformers and its sibling files, so that it loads with `trust_remote_code=True`.
"""

import os
import threading
from collections import OrderedDict

from PIL import Image, ImageOps, UnidentifiedImageError
from transformers import AutoImageProcessor, Pipeline
from transformers.image_utils import load_image
from transformers.utils import logging

from .processing_cocoop import validate_class_names


logger = logging.get_logger(__name__)

PIPELINE_CLASS_NAME = "CoCoOpZeroShotImageClassificationPipeline"
# What the image processors give that the model's forward reads (SigLIP 2: the last two).
VISION_INPUTS = ("pixel_values", "pixel_attention_mask", "spatial_shapes")
# Label sets whose prompt ids a pipeline keeps (tokenising 1,000 labels costs ~50 ms; a server sees few label sets).
PROMPT_CACHE_SIZE = 32
# Written into every saved config: `pipeline(task, model=<folder or repo id>, trust_remote_code=True)` finds it.
CUSTOM_PIPELINES = {
    "zero-shot-image-classification": {
        "impl": f"pipeline_cocoop.{PIPELINE_CLASS_NAME}",
        "pt": ["AutoModel"],
        "tf": [],
        "type": "multimodal",
    }
}


def load_pipeline_image(image, timeout=None) -> Image.Image:
    """A PIL image, local path or http(s) URL -> RGB PIL image; a clear error for anything else."""
    if isinstance(image, os.PathLike):
        image = os.fspath(image)
    if isinstance(image, Image.Image):
        return ImageOps.exif_transpose(image).convert("RGB")
    if not isinstance(image, str):
        raise TypeError(
            f"images must be PIL images, local file paths or http(s) URLs, got {type(image).__name__}: "
            f"{str(image)[:80]!r}."
        )
    if image.startswith(("http://", "https://")):
        return load_image(image, timeout=timeout)  # transformers' own URL loader
    if not os.path.isfile(image):
        raise ValueError(
            f"image {image[:200]!r} is neither an existing file nor an http(s) URL: pass a PIL image, "
            "a path to an image file or a URL."
        )
    try:
        with Image.open(image) as opened:
            opened.load()
            return ImageOps.exif_transpose(opened).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot read image file {image!r}: {error}. Is it an image (JPEG, PNG, ...)?") from error


class CoCoOpZeroShotImageClassificationPipeline(Pipeline):
    r"""
    Zero-shot image classification with a CoCoOp model: each candidate label is read through the learned,
    image-conditional prompt `[ctx + pi(image)] {label}.`; scores are the softmax over the labels.

    ```python
    from transformers import pipeline

    classifier = pipeline("zero-shot-image-classification", model="path/or/repo-id", trust_remote_code=True)
    classifier("photo.jpg", candidate_labels=["cat", "dog"])  # [{"score": ..., "label": ...}, ...], sorted
    classifier(["a.jpg", "b.jpg"], batch_size=2)  # trained classes (config.id2label); a list per image
    ```

    Args (call):
        image: a PIL image, a local path or an http(s) URL, or a list of them.
        candidate_labels (`list[str]`, *optional*): class names to score; default: the trained classes.
        top_k (`int`, *optional*): keep the `top_k` best labels (default: all).
        timeout (`float`, *optional*): seconds to wait for a URL.

    `hypothesis_template` is refused: CoCoOp learns its prompt instead of filling in a hand-written one. Scores
    are a softmax over the labels on every backbone: the prompts are trained with cross-entropy over the class set,
    also on a sigmoid-trained SigLIP (whose stock pipeline scores each label alone with a sigmoid).
    """

    _load_processor = False
    _load_image_processor = None  # optional: falls back to the base backbone's image processor
    _load_feature_extractor = False
    _load_tokenizer = None  # optional: falls back to the model's own tokenizer

    def __init__(self, *args, **kwargs):
        model = kwargs.get("model", args[0] if args else None)
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type != "cocoop" or not hasattr(model, "class_prompts"):
            raise ValueError(
                f"{type(self).__name__} needs a CoCoOp model (config.model_type 'cocoop'), got "
                f"{type(model).__name__} with model_type {model_type!r}: use the stock "
                "pipeline('zero-shot-image-classification') for plain CLIP."
            )
        super().__init__(*args, **kwargs)
        self._prompt_cache = OrderedDict()  # tuple(labels) -> the class prompts' tensors (input_ids, eos_index, ...)
        self._prompt_cache_lock = threading.Lock()
        config = self.model.config
        if self.tokenizer is None:
            self.tokenizer = self.model.tokenizer
        if self.tokenizer is None:
            raise ValueError(
                "no tokenizer found beside the model or its base backbone: pass tokenizer=... to pipeline()."
            )
        if self.image_processor is None:
            try:
                self.image_processor = AutoImageProcessor.from_pretrained(
                    config.clip_name_or_path, revision=config.clip_revision
                )
            except (OSError, ValueError, TypeError) as error:
                raise ValueError(
                    f"no image processor found in the model folder or its base backbone {config.clip_name_or_path!r} "
                    f"({error}): pass image_processor=... to pipeline()."
                ) from error

    def __call__(self, image, candidate_labels=None, **kwargs):
        if "images" in kwargs:
            if image is not None:
                raise ValueError("pass the images once: either positionally or as `images=`, not both.")
            image = kwargs.pop("images")
        if image is None:
            raise ValueError("no image given: pass a PIL image, a local path or a URL (or a list of them).")
        if isinstance(image, tuple):
            image = list(image)
        if isinstance(image, list) and not image:
            raise ValueError("the list of images is empty: pass at least one image.")
        return super().__call__(image, candidate_labels=candidate_labels, **kwargs)

    def _sanitize_parameters(
        self, candidate_labels=None, top_k=None, timeout=None, hypothesis_template=None, **kwargs
    ):
        if hypothesis_template is not None:
            raise ValueError(
                f"hypothesis_template={hypothesis_template!r} has no meaning for CoCoOp: the prompt is learned "
                "(context vectors conditioned on each image), not written by hand. Pass only candidate_labels."
            )
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected arguments: {sorted(kwargs)}.")
        if candidate_labels is None:
            labels = list(self.model.class_names or self.model.config.class_names)
        else:
            labels = validate_class_names(candidate_labels, self.tokenizer)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"`top_k` must be a positive integer or None (all labels), got {top_k!r}.")
        return {"timeout": timeout}, {"candidate_labels": labels}, {"candidate_labels": labels, "top_k": top_k}

    def preprocess(self, image, timeout=None):
        image = load_pipeline_image(image, timeout=timeout)
        inputs = self.image_processor(images=[image], return_tensors="pt")
        # SigLIP 2's processor also gives `pixel_attention_mask` and `spatial_shapes`: the model reads them all.
        return {
            name: value.to(self.dtype) if name == "pixel_values" else value
            for name, value in inputs.items()
            if name in VISION_INPUTS
        }

    def _forward(self, model_inputs, candidate_labels):
        # The labels' prompts are an input of this call: the model (shared by every caller) is never changed.
        prompts = self._class_prompts(candidate_labels)
        logits = self.model(**model_inputs, **prompts).logits  # (batch, labels)
        return {"logits": logits}

    def _class_prompts(self, labels) -> dict:
        """Prompt ids of `labels` on the model's device, built once per label set (thread-safe cache)."""
        key = tuple(labels)
        with self._prompt_cache_lock:
            prompts = self._prompt_cache.get(key)
            if prompts is not None:
                self._prompt_cache.move_to_end(key)
                return prompts
        encoding = self.model.class_prompts(list(labels), tokenizer=self.tokenizer)
        prompts = {name: tensor.to(self.model.device) for name, tensor in encoding.items()}
        with self._prompt_cache_lock:
            self._prompt_cache[key] = prompts
            while len(self._prompt_cache) > PROMPT_CACHE_SIZE:
                self._prompt_cache.popitem(last=False)
        return prompts

    def postprocess(self, model_outputs, candidate_labels, top_k=None):
        scores = model_outputs["logits"][0].float().softmax(dim=-1).tolist()
        ranked = sorted(zip(scores, candidate_labels, strict=True), key=lambda pair: -pair[0])
        if top_k is not None:
            ranked = ranked[:top_k]
        return [{"score": score, "label": label} for score, label in ranked]
