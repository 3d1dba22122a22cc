"""Images of a run: corrupt files found (dropped or refused), and the train / eval transforms of the official recipe
(CoCoOp configs `vit_b16_c4_ep10_batch1_ctxv1.yaml`, INPUT section) built from the backbone's image processor."""

import io
import math

from transformers.utils import logging

from cocoop_hf_training.data_loading import SOURCE_ROW_COLUMN


logger = logging.get_logger(__name__)


def _describe(image_value, row, split) -> str:
    """Where a bad image is: its file name (when the dataset stored one) and its row in the split as loaded."""
    path = image_value.get("path") if isinstance(image_value, dict) else None
    where = f"row {row}" + (f" of split '{split}'" if split else "")
    return f"{path} ({where})" if path else where


def find_corrupt_images(ds, desc="Checking images", disable_progress=False) -> list[tuple[int, str]]:
    """
    Fully decode every image of `ds` (column `image`); return [(position in `ds`, description)] of those that fail.
    The description names the row in the split as loaded (`source_row`, kept through few-shot and class selection),
    not the position in this subset, which the user cannot look up.
    """
    from datasets import Image
    from PIL import Image as PILImage
    from tqdm.auto import tqdm

    raw = ds.cast_column("image", Image(decode=False))
    rows = raw[SOURCE_ROW_COLUMN] if SOURCE_ROW_COLUMN in raw.column_names else range(len(raw))
    bad = []
    for index in tqdm(range(len(raw)), desc=desc, disable=disable_progress):
        value = raw[index]["image"]
        try:
            source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
            with PILImage.open(source) as image:
                image.load()
        except Exception as error:  # any decoder failure means the file is unusable
            bad.append((index, f"{_describe(value, rows[index], ds.split)}: {type(error).__name__}: {error}"))
    return bad


def drop_or_raise_corrupt(ds, split: str, skip: bool, disable_progress=False):
    """Raise on corrupt images (naming them) or, with `skip`, drop them and report the count."""
    bad = find_corrupt_images(ds, desc=f"Checking {split} images", disable_progress=disable_progress)
    if not bad:
        return ds, 0
    if not skip:
        shown = "; ".join(name for _, name in bad[:5])
        raise ValueError(
            f"{len(bad)} corrupt image(s) in {split}: {shown}. Fix or remove them, or pass --skip_corrupt_images."
        )
    logger.warning("Skipping %d corrupt image(s) in %s: %s", len(bad), split, "; ".join(n for _, n in bad[:5]))
    drop = {index for index, _ in bad}
    return ds.select([i for i in range(len(ds)) if i not in drop]), len(bad)


def build_transforms(image_processor, image_size: int | None = None):
    """
    Official CoCoOp INPUT config: train = RandomResizedCrop(size, scale=(0.08, 1), bicubic) + horizontal flip; eval =
    the backbone's own resizing: CLIP family (a processor that center-crops) Resize(size, bicubic) + CenterCrop(size);
    SigLIP (a processor that resizes to a fixed height x width, no crop) Resize((height, width), bicubic). Both
    normalised with the processor's mean/std. SigLIP 2 (`Siglip2ImageProcessor`: variable-resolution patches): see
    `patch_transforms`.
    """
    from torchvision import transforms as T

    if hasattr(image_processor, "max_num_patches"):
        return patch_transforms(image_processor, image_size)
    size = getattr(image_processor, "size", None) or {}
    # SigLIP: no center crop, a fixed height x width (the CLIP family's processors crop a resized shortest edge).
    square = not getattr(image_processor, "do_center_crop", None) and bool(size.get("height") and size.get("width"))
    if image_size is None and square:
        image_size = (size["height"], size["width"])
    if image_size is None:
        crop = getattr(image_processor, "crop_size", None) or {}
        image_size = crop.get("height") or size.get("shortest_edge")
    if not image_size:
        raise ValueError("cannot tell the input size from the image processor: pass --image_size.")
    normalize = T.Normalize(mean=image_processor.image_mean, std=image_processor.image_std)
    bicubic = T.InterpolationMode.BICUBIC
    train = T.Compose(
        [
            T.RandomResizedCrop(image_size, scale=(0.08, 1.0), interpolation=bicubic),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            normalize,
        ]
    )
    if square:  # SigLIP's processor resizes to (height, width) without keeping the aspect ratio, and crops nothing
        shape = (image_size, image_size) if isinstance(image_size, int) else image_size
        resize = [T.Resize(shape, interpolation=bicubic)]
    else:
        resize = [T.Resize(image_size, interpolation=bicubic), T.CenterCrop(image_size)]
    evaluation = T.Compose([*resize, T.ToTensor(), normalize])
    return train, evaluation


def patch_transforms(image_processor, image_size: int | None = None):
    """
    SigLIP 2 (NaFlex): the processor itself cuts each image into at most `max_num_patches` patches at its aspect
    ratio (`pixel_values` per patch, `pixel_attention_mask`, `spatial_shapes`). Train: the official augmentation
    (RandomResizedCrop to a square of `max_num_patches` patches, or --image_size, + flip) on the PIL image first; eval:
    the processor alone.
    """
    from torchvision import transforms as T

    side = image_size or image_processor.patch_size * math.isqrt(image_processor.max_num_patches)
    augment = T.Compose(
        [
            T.RandomResizedCrop(side, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
        ]
    )
    return PatchTransform(image_processor, augment), PatchTransform(image_processor)


class PatchTransform:
    """PIL image -> the patch processor's inputs of that one image (a dict of tensors without the batch axis)."""

    def __init__(self, image_processor, augment=None):
        self.image_processor, self.augment = image_processor, augment

    def __call__(self, image) -> dict:
        if self.augment is not None:
            image = self.augment(image)
        inputs = self.image_processor(images=[image], return_tensors="pt")
        return {key: value[0] for key, value in inputs.items()}


class ImageTransform:
    """`with_transform` callable: PIL images -> `pixel_values`, labels -> relabelled `labels`; runs in workers."""

    def __init__(self, transform, relabel: dict[int, int] | None = None):
        self.transform = transform
        self.relabel = relabel

    def __call__(self, batch):
        images = [self.transform(image.convert("RGB")) for image in batch["image"]]
        labels = batch["label"] if self.relabel is None else [self.relabel[y] for y in batch["label"]]
        if images and isinstance(images[0], dict):  # SigLIP 2: pixel_values, pixel_attention_mask, spatial_shapes
            return {**{key: [image[key] for image in images] for key in images[0]}, "labels": labels}
        return {"pixel_values": images, "labels": labels}
