"""
PromptSRC's self-regularising terms (Khattak et al., "Self-regulating Prompts: Foundational Model Adaptation without
Forgetting", ICCV 2023; official muzairkhattak/PromptSRC `trainers/promptsrc.py`): the frozen text teacher (the mean
of the frozen text features over the 60 ImageNet templates, `trainers/imagenet_templates.py`), and the three terms
of `PromptSRC.forward_backward` computed from the prompted and the frozen features. The Gaussian prompt aggregation
(GPA) over epochs belongs to training, not to the model.

This file travels with the code of every saved folder (the modeling file imports it), so it may import only torch,
transformers and its sibling files.
"""

import torch
import torch.nn.functional as F

from .backbones_cocoop import embed_dim, text_context
from .processing_cocoop import clean_class_name


# Official PromptSRC trainers/imagenet_templates.py IMAGENET_TEMPLATES (from OpenAI CLIP's prompt-engineering
# notebook), the same for every dataset; "a origami" and "a embroidered" as written there.
IMAGENET_TEMPLATES = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
)


def needs_teacher(config) -> bool:
    """Whether the loss needs the frozen text teacher: PromptSRC's text or logits term has a weight above 0."""
    return config.promptsrc_text_weight > 0 or config.promptsrc_logits_weight > 0


@torch.no_grad()
def teacher_text_features(backbone_model, class_names, tokenizer, chunk_tokens: int) -> torch.Tensor:
    """
    PromptSRC's frozen text teacher `(classes, embed_dim)`, L2-normalised, in fp32: for each class the mean over
    IMAGENET_TEMPLATES of the frozen backbone's UNnormalised text features of `template.replace("{}", name)`, then
    normalised. Official VLPromptLearner.__init__: `fixed_embeddings = cat(all_teacher_features, dim=1).mean(dim=1)`
    of `clip_model_temp.encode_text(...)`, normalised in CustomCLIP.forward. Names are read with `_` as a space (the
    official `name.replace("_", " ")`). Pooled at each text's EOS; classes run in chunks of at most `chunk_tokens`
    (texts x tokens) per text-tower call.
    """
    names = [clean_class_name(name) for name in class_names]
    context = text_context(backbone_model.config)
    device = backbone_model.text_projection.weight.device
    total = None
    for template in IMAGENET_TEMPLATES:
        texts = [template.replace("{}", name) for name in names]
        encoded = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        for name, ids in zip(class_names, encoded, strict=True):
            if len(ids) > context or ids[-1] != tokenizer.eos_token_id:
                raise ValueError(
                    f"PromptSRC's teacher prompt {template!r} for class {name!r} makes {len(ids)} tokens, over the "
                    f"text context of {context}: shorten the class name."
                )
        features = _unnormalised_text_features(backbone_model, encoded, tokenizer.pad_token_id, chunk_tokens, device)
        total = features if total is None else total + features
    mean = total / len(IMAGENET_TEMPLATES)  # (classes, embed_dim)
    return mean / mean.norm(dim=-1, keepdim=True)


def _unnormalised_text_features(backbone_model, encoded, pad_id: int, chunk_tokens: int, device) -> torch.Tensor:
    """The frozen text tower's projected features at each text's EOS, fp32, not normalised (official encode_text)."""
    length = max(map(len, encoded))
    per_call = max(1, chunk_tokens // length)
    features = []
    for start in range(0, len(encoded), per_call):
        chunk = encoded[start : start + per_call]
        ids = torch.full((len(chunk), max(map(len, chunk))), pad_id, dtype=torch.long)
        for row, tokens in enumerate(chunk):
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        ids = ids.to(device)
        # CLIPTextModel builds the causal mask: padding after each EOS changes nothing before it.
        hidden = backbone_model.text_model(input_ids=ids).last_hidden_state  # (texts, L, width), final-normed
        eos = torch.tensor([len(tokens) - 1 for tokens in chunk], device=device)
        pooled = hidden[torch.arange(len(chunk), device=device), eos]
        features.append(backbone_model.text_projection(pooled).float())
    return torch.cat(features)


def text_term(text_embeds: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """
    L1 of the prompted text features `(classes, d)` to the frozen teacher `(classes, d)`, both L2-normalised:
    official PromptSRC.forward_backward `F.l1_loss(normalized_text_features, zs_clip_text_embeddings,
    reduction="mean")`.
    """
    return F.l1_loss(text_embeds.float(), teacher.float(), reduction="mean")


def image_term(image_embeds: torch.Tensor, frozen_image_embeds: torch.Tensor) -> torch.Tensor:
    """
    L1 of the prompted image features `(batch, d)` to the frozen backbone's (no prompts) `(batch, d)`, both
    L2-normalised: official `F.l1_loss(image_ft, zs_image_embedd, reduction="mean")`.
    """
    return F.l1_loss(image_embeds.float(), frozen_image_embeds.float(), reduction="mean")


def logits_term(
    logits: torch.Tensor, frozen_image_embeds: torch.Tensor, teacher: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """
    KL(zero-shot || prompted), summed over the batch and classes and divided by their count: official
    `F.kl_div(F.log_softmax(logits), F.log_softmax(zero_shot_logits), reduction="sum", log_target=True) /
    logits.numel()`, with `zero_shot_logits = logit_scale.exp() * frozen_image @ teacher.T` (official
    CustomCLIP.forward, under no_grad). `logits` (batch, classes) are the prompted ones, `logit_scale` the backbone's
    `logit_scale.exp()`; the features are L2-normalised.
    """
    with torch.no_grad():
        zero_shot_logits = logit_scale.float() * frozen_image_embeds.float() @ teacher.float().t()  # (batch, classes)
    kl = F.kl_div(
        F.log_softmax(logits.float(), dim=1),
        F.log_softmax(zero_shot_logits, dim=1),
        reduction="sum",
        log_target=True,
    )
    return kl / logits.numel()


def checked_teacher(zero_shot_embeds, held_teacher, classes: int, config, device) -> torch.Tensor:
    """
    PromptSRC's frozen text teacher for this call: `zero_shot_embeds` when given, else `held_teacher`, that of the
    held class set (None when the call's prompts were given).
    """
    width = embed_dim(config.backbone_config)
    help_text = "pass `zero_shot_embeds=model.zero_shot_text_features(class_names)` with the class prompts"
    if zero_shot_embeds is None:
        if held_teacher is None:
            raise ValueError(
                "PromptSRC's text and logits terms need the frozen text teacher of the classes of this call's "
                f"prompts: {help_text}, or use the held class set (set_class_names)."
            )
        if held_teacher.device.type == "meta":
            raise ValueError(
                "PromptSRC's text and logits terms need the frozen text teacher, and the held class set's was "
                "computed before the weights were set (on the meta device): call "
                f"model.set_class_names(class_names, tokenizer=...) again, or {help_text}."
            )
        zero_shot_embeds = held_teacher
    if not isinstance(zero_shot_embeds, torch.Tensor) or not zero_shot_embeds.dtype.is_floating_point:
        raise TypeError(
            f"`zero_shot_embeds` must be a floating-point tensor (PromptSRC's teacher), got "
            f"{type(zero_shot_embeds).__name__}."
        )
    if tuple(zero_shot_embeds.shape) != (classes, width):
        raise ValueError(
            f"`zero_shot_embeds` must be (classes, projection_dim) = ({classes}, {width}), PromptSRC's teacher of "
            f"each class of the prompts, got {tuple(zero_shot_embeds.shape)}: {help_text}."
        )
    return zero_shot_embeds.to(device)
