"""
A plain reference of the paper's math, run the way the official code runs it (trainers/cocoop.py): a Python loop
over images; for each image, every class prompt padded to the full 77-token context goes through the text tower
with an explicit causal mask; text feature = projection of the final-layer-norm state at EOS.

Written from the paper and the official code, independent of cocoop_hf's batched text path. Used by the tests and
by benchmarks/bench_cocoop.py.
"""

import torch


def reference_text_features(model, prompt_embeds, eos_index):
    """Official TextEncoder.forward: prompts (classes, 77, dim) -> normalised-ready text features (classes, proj)."""
    text = model.clip.text_model
    length = prompt_embeds.shape[1]
    hidden = text.embeddings(inputs_embeds=prompt_embeds)  # + positional embedding
    causal = torch.full((length, length), float("-inf"), device=hidden.device, dtype=hidden.dtype).triu(1)
    for layer in text.encoder.layers:
        hidden = layer(hidden, causal[None, None])
    hidden = text.final_layer_norm(hidden)
    pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), eos_index]
    return model.clip.text_projection(pooled)


def full_prompt_ids(model, context_length=None):
    """The official `tokenized_prompts`: (classes, 77) ids, padded, from the model's class prompts."""
    context_length = context_length or model.config.clip_config.text_config.max_position_embeddings
    ids = model.prompt_ids
    pad = torch.full(
        (ids.shape[0], context_length - ids.shape[1]), int(ids[0, -1]), dtype=ids.dtype, device=ids.device
    )
    return torch.cat([ids, pad], dim=1)


def reference_logits(model, pixel_values=None, image_embeds=None):
    """Official CustomCLIP.forward with its per-image loop; returns (batch, classes) logits."""
    clip = model.clip
    if image_embeds is None:
        image_features = clip.get_image_features(pixel_values=pixel_values).pooler_output
        image_embeds = image_features / image_features.norm(dim=-1, keepdim=True)
    prompt_ids = full_prompt_ids(model)
    eos_index = model.eos_index
    n_ctx = model.config.n_ctx
    token_embeds = clip.text_model.embeddings.token_embedding(prompt_ids)  # (classes, 77, dim)
    prefix, suffix = token_embeds[:, :1], token_embeds[:, 1 + n_ctx :]  # official token_prefix / token_suffix
    learner = model.prompt_learner
    ctx = learner.ctx
    logit_scale = clip.logit_scale.exp()
    logits = []
    for imf in image_embeds:
        ctx_i = ctx if learner.meta_net is None else ctx + learner.meta_net(imf.unsqueeze(0))  # (n_ctx, dim)
        ctx_i = ctx_i.unsqueeze(0).expand(prompt_ids.shape[0], -1, -1)
        prompts = torch.cat([prefix, ctx_i.to(prefix.dtype), suffix], dim=1)  # (classes, 77, dim)
        text_features = reference_text_features(model, prompts, eos_index)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        logits.append(logit_scale * imf.to(text_features.dtype) @ text_features.t())
    return torch.stack(logits)
