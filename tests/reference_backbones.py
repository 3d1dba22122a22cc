"""
Plain fp32 references of prompt-learned text features and logits on every backbone, written from the official CoOp /
CoCoOp code and transformers' model files, calling nothing in cocoop_hf.

- Prompt embeddings: official CoOp `trainers/coop.py` `PromptLearner.forward` (per-class `torch.cat` of the tokens
  before the context, the context, the class name and the rest), generalised to a per-class `context_start` (the
  first context position: 1 after CLIP's SOS / XLM-R's `<s>`, 0 for SigLIP's T5-style tokenizer, the padding length
  under a left-padding tokenizer).
- Causal towers (CLIP `CLIPTextTransformer.forward`, MetaCLIP 2 `MetaClip2TextModel.forward`): + position
  embeddings, the backbone's own encoder layers under an explicit causal mask (the layers themselves are not causal:
  transformers builds the mask), `final_layer_norm`, the state at the prompt's EOS, `text_projection`.
- Bidirectional towers (`SiglipTextModel.forward`, `Siglip2TextModel.forward`): + position embeddings, the layers
  with the padding keys masked when the prompts carry an attention mask (`create_bidirectional_mask`), none
  otherwise (SigLIP attends to its padding), `final_layer_norm`, the LAST position (padding or not), `head`.
- Logits: `logit_scale.exp() * cos` (+ `logit_bias` for SigLIP: `SiglipModel.forward`).
"""

from dataclasses import dataclass

import torch


CAUSAL = {"clip": True, "metaclip_2": True, "siglip": False, "siglip2": False}


@dataclass
class Prompts:
    """Class prompts as the contract describes them (what `build_prompt_ids` / `ClassPrompts` hold)."""

    input_ids: torch.Tensor  # (classes, L)
    eos_index: torch.Tensor  # (classes,) last real token
    name_length: torch.Tensor  # (classes,) tokens of the name tokenised alone
    context_start: torch.Tensor  # (classes,) first context position
    attention_mask: torch.Tensor | None  # (classes, L) for a bidirectional tower whose tokenizer returns one


def reference_prompts(tokenizer, names, prefix: str, n_ctx: int, length: int, causal: bool) -> Prompts:
    """
    `f"{prefix} {name}."` (`_` in a name read as a space) tokenised one class at a time with the tokenizer's specials, padded to `length` with its pad
    id on its padding side; the context is the first `n_ctx` tokens of the prefix (the placeholder words).
    """
    rows, eos, starts, masks = [], [], [], []
    bos = 1 if tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id else 0
    names = [name.replace("_", " ") for name in names]  # official CoOp PromptLearner
    for name in names:
        tokens = tokenizer(f"{prefix} {name}.")["input_ids"]
        pad = [tokenizer.pad_token_id] * (length - len(tokens))
        left = tokenizer.padding_side == "left"
        rows.append(pad + tokens if left else tokens + pad)
        masks.append([0] * len(pad) + [1] * len(tokens) if left else [1] * len(tokens) + [0] * len(pad))
        eos.append(length - 1 if left else len(tokens) - 1)
        starts.append((len(pad) if left else 0) + bos)
    # The name's tokens inside the prompt (a Gemma-style tokenizer without a prefix space may cut a name alone
    # into another number of tokens than after a space).
    without_name = len(tokenizer(f"{prefix}.")["input_ids"])
    name_length = [len(tokenizer(f"{prefix} {name}.")["input_ids"]) - without_name for name in names]
    with_mask = not causal and "attention_mask" in tokenizer.model_input_names
    return Prompts(
        torch.tensor(rows),
        torch.tensor(eos),
        torch.tensor(name_length),
        torch.tensor(starts),
        torch.tensor(masks) if with_mask else None,
    )


def reference_prompt_embeds(token_embeds, ctx, prompts: Prompts, n_ctx: int, position: str):
    """
    Official PromptLearner.forward, one class at a time: `token_embeds` (classes, L, dim) of the prompt ids, `ctx`
    (classes, n_ctx, dim) each class's context. Returns (classes, L, dim).
    """
    out = []
    for i in range(token_embeds.shape[0]):
        start = int(prompts.context_start[i])
        name_len = int(prompts.name_length[i])
        before, rest = token_embeds[i, :start], token_embeds[i, start + n_ctx :]
        name, after = rest[:name_len], rest[name_len:]
        half = {"end": n_ctx, "middle": n_ctx // 2, "front": 0}[position]
        out.append(torch.cat([before, ctx[i, :half], name, ctx[i, half:], after]))
    return torch.stack(out)


def reference_text_features(text_model, projection, prompt_embeds, prompts: Prompts, causal: bool):
    """Prompt embeddings (classes, L, dim) -> L2-normalised text features (classes, embed_dim), the tower's own layers."""
    classes, length, _ = prompt_embeds.shape
    hidden = prompt_embeds + text_model.embeddings.position_embedding.weight[:length]
    mask = torch.zeros(classes, 1, length, length)  # additive, as transformers' eager masks
    if causal:
        mask = mask + torch.full((length, length), float("-inf")).triu(1)
    elif prompts.attention_mask is not None:
        mask = mask.masked_fill(prompts.attention_mask[:, None, None, :] == 0, float("-inf"))
    for layer in text_model.encoder.layers:
        hidden = layer(hidden, mask)
    hidden = text_model.final_layer_norm(hidden)
    if causal:
        pooled = hidden[torch.arange(classes), prompts.eos_index]
    else:
        pooled = hidden[:, -1]
    features = projection(pooled)
    return features / features.norm(dim=-1, keepdim=True)


def backbone_parts(backbone):
    """The text tower and its projection (CLIP family `text_projection`, SigLIP's `head`), and causal or not."""
    causal = CAUSAL[backbone.config.model_type]
    projection = backbone.text_projection if causal else backbone.text_model.head
    return backbone.text_model, projection, causal


def reference_features_for_context(backbone, prompts: Prompts, ctx, n_ctx: int, position: str = "end"):
    """Text features of one context for all classes: `ctx` (n_ctx, dim) shared, or (classes, n_ctx, dim)."""
    text_model, projection, causal = backbone_parts(backbone)
    classes = prompts.input_ids.shape[0]
    if ctx.dim() == 2:
        ctx = ctx.unsqueeze(0).expand(classes, -1, -1)
    token_embeds = text_model.embeddings.token_embedding(prompts.input_ids)
    embeds = reference_prompt_embeds(token_embeds, ctx, prompts, n_ctx, position)
    return reference_text_features(text_model, projection, embeds, prompts, causal)


def reference_logits(backbone, image_embeds, text_features):
    """
    `image_embeds` (batch, d) normalised; `text_features` (batch, classes, d) per image or (1, classes, d) shared.
    logit_scale.exp() * cos (+ logit_bias where the backbone has one).
    """
    logits = torch.einsum("bd,bcd->bc", image_embeds, text_features.expand(image_embeds.shape[0], -1, -1))
    logits = backbone.logit_scale.exp() * logits
    if not CAUSAL[backbone.config.model_type]:
        logits = logits + backbone.logit_bias
    return logits


def reference_image_embeds(backbone, pixels: dict):
    """Normalised image features of the backbone's own `get_image_features` (the frozen vision tower)."""
    features = backbone.get_image_features(**pixels).pooler_output
    return features / features.norm(dim=-1, keepdim=True)


def reference_meta_net(state: dict, image_feature):
    """Official CoCoOp meta_net: linear1 -> ReLU -> linear2, from the tensors by name."""
    hidden = image_feature @ state["meta_net.linear1.weight"].t() + state["meta_net.linear1.bias"]
    hidden = torch.clamp(hidden, min=0)
    return hidden @ state["meta_net.linear2.weight"].t() + state["meta_net.linear2.bias"]
