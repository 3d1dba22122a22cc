"""Zero-shot scoring of a dual encoder with a hand-written prompt template, as the official `ZeroshotCLIP` (CoOp
trainers/zsclip.py), on any supported backbone with the backbone's own text and logit rule.

The CoOp-packaged zero-shot model (`--method zeroshot` alone) can only say "<ctx_init words> {class name}."; the
official per-dataset templates ("{} texture.", "a photo of a {}, a type of pet.") put words after the class name, so
they are scored here with the plain backbone: logits = logit_scale.exp() * cos(image feature, text feature of
`template.format(name with "_" read as " ")`) (+ logit_bias for SigLIP / SigLIP 2), text features from the backbone's
own `get_text_features` on the prompts tokenised as transformers' zero-shot pipeline does (CLIP family: padded to the
longest; SigLIP family: padded to `max_length` 64, the length it was trained on, pipelines/
zero_shot_image_classification.py `preprocess`). Nothing is learned, so nothing is saved: the template is recorded
in results.json and the model card.
"""

import torch
from transformers import BatchEncoding, PretrainedConfig
from transformers.modeling_outputs import ImageClassifierOutput

from cocoop_hf.backbones_cocoop import backbone_of, image_features, logit_bias, text_context


def check_template(template: str, flag: str = "--prompt_template") -> str:
    """A template with exactly one `{}` for the class name (Python `str.format`, as the official code uses)."""
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(
            f"{flag} must hold exactly one '{{}}' where the class name goes, e.g. 'a photo of a {{}}.', "
            f"got {template!r}."
        )
    try:
        template.format("x")
    except (IndexError, KeyError, ValueError) as error:
        raise ValueError(
            f"{flag} {template!r} is not a valid format string with one '{{}}' ({error}); write literal braces as "
            "'{{' and '}}'."
        ) from None
    return template


def template_prompts(template: str, class_names) -> list[str]:
    """The official prompts: `template.format(c.replace("_", " "))` (trainers/zsclip.py `ZeroshotCLIP.build_model`)."""
    return [template.format(name.replace("_", " ")) for name in class_names]


class ZeroShotCLIP(torch.nn.Module):
    """
    Evaluation-time model for a plain backbone (CLIP, MetaCLIP 2, SigLIP, SigLIP 2) + one prompt template, with the interface the evaluation code uses:
    `get_image_features`, `class_prompts(names)`, `forward(image_embeds=... | pixel_values=..., **prompts).logits`.

    `class_prompts(names)` returns the tokenised prompts (`input_ids`, `attention_mask`); given to `forward`, they are
    used for that call only. Without them `forward` scores the class set given at construction. Nothing on the model
    changes during a forward. CLIP is frozen.
    """

    def __init__(
        self,
        clip,
        tokenizer,
        template: str,
        class_names,
        clip_name_or_path: str | None = None,
        clip_revision: str | None = None,
        random_clip_weights: bool = False,
    ):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.template = check_template(template, "the prompt template")
        self.class_names = list(class_names)
        # What the run script reads off a model for its outputs (the CoCoOp config has the same fields).
        self.config = PretrainedConfig(
            clip_name_or_path=clip_name_or_path,
            clip_revision=clip_revision,
            prompt_template=self.template,
            n_ctx=None,
            random_clip_weights=random_clip_weights,
        )
        self.clip.requires_grad_(False)

    def prompts(self, class_names) -> list[str]:
        return template_prompts(self.template, class_names)

    def class_prompts(self, class_names, tokenizer=None) -> BatchEncoding:
        """
        Tokenised prompts of `class_names`, truncated to the text context: padded to the longest (CLIP family, pooled
        at EOS) or to the whole context (SigLIP family: pooled at the last position, so the padding is part of the
        feature, as transformers' zero-shot pipeline pads them); with an attention mask where the tokenizer gives one.
        """
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        max_length = text_context(self.clip.config)
        padding = True if backbone_of(self.clip.config).causal_text else "max_length"
        return tokenizer(
            self.prompts(list(class_names)),
            padding=padding,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )

    def get_image_features(self, pixel_values: torch.Tensor, **vision_inputs) -> torch.Tensor:
        """L2-normalised projected image features `(batch, embed_dim)` (SigLIP 2 also takes its patch mask)."""
        features = image_features(self.clip, pixel_values, **vision_inputs)
        return features / features.norm(dim=-1, keepdim=True)

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised projected text features `(classes, embed_dim)`: the backbone's own `get_text_features`
        (CLIP family: EOS pooling + text_projection; SigLIP family: last position + head)."""
        features = self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return features / features.norm(dim=-1, keepdim=True)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **vision_inputs,
    ) -> ImageClassifierOutput:
        if (pixel_values is None) == (image_embeds is None):
            raise ValueError("pass exactly one of `pixel_values` and `image_embeds`.")
        if image_embeds is not None and vision_inputs:
            raise ValueError(
                f"{sorted(vision_inputs)} go with `pixel_values` (the vision tower's inputs); with `image_embeds` the "
                "image features are given: drop them."
            )
        if input_ids is None:
            if attention_mask is not None:
                raise ValueError("`attention_mask` was given without `input_ids`.")
            prompts = self.class_prompts(self.class_names)
            input_ids, attention_mask = prompts["input_ids"], prompts.get("attention_mask")  # SigLIP: none
        device = self.clip.logit_scale.device
        if image_embeds is None:
            image_embeds = self.get_image_features(pixel_values, **vision_inputs)
        image_embeds = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
        text_embeds = self.get_text_features(
            input_ids.to(device), None if attention_mask is None else attention_mask.to(device)
        )
        logits = self.clip.logit_scale.exp() * image_embeds.to(text_embeds.dtype) @ text_embeds.t()
        bias = logit_bias(self.clip)  # SigLIP: logits_per_text = scale * cos + bias (modeling_siglip.SiglipModel)
        if bias is not None:
            logits = logits + bias
        loss = None if labels is None else torch.nn.functional.cross_entropy(logits, labels.to(logits.device))
        return ImageClassifierOutput(loss=loss, logits=logits)
