"""
A plain reference of the paper's math, run the way the official code runs it (trainers/cocoop.py): a Python loop
over images; for each image, every class prompt padded to the full 77-token context goes through the text tower
with an explicit causal mask; text feature = projection of the final-layer-norm state at EOS.

Written from the paper and the official code, independent of cocoop_hf: it reads the prompt learner's tensors by
name and computes the meta-net itself (official `meta_net`: Linear -> ReLU -> Linear), uses CLIP's own modules for the
frozen towers, and takes the class prompts as arguments. Used by the tests and by benchmarks/bench_cocoop.py.
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


def full_prompt_ids(prompt_ids, eos_index, context_length=77):
    """The official `tokenized_prompts`: (classes, 77) ids, everything after each EOS padded with the EOS id."""
    eos_id = prompt_ids[0, eos_index[0]]
    padded = torch.nn.functional.pad(prompt_ids, (0, context_length - prompt_ids.shape[1]))
    after_eos = torch.arange(context_length, device=padded.device) > eos_index.to(padded.device)[:, None]
    return padded.masked_fill(after_eos, eos_id)  # on the ids' device, no per-class loop


def reference_meta_net(state: dict, image_feature):
    """Official meta_net: linear1 -> ReLU -> linear2, from the tensors (vis_dim,) -> (ctx_dim,)."""
    hidden = image_feature @ state["meta_net.linear1.weight"].t() + state["meta_net.linear1.bias"]
    hidden = torch.clamp(hidden, min=0)
    return hidden @ state["meta_net.linear2.weight"].t() + state["meta_net.linear2.bias"]


def reference_logits(model, prompt_ids, eos_index, pixel_values=None, image_embeds=None):
    """Official CustomCLIP.forward with its per-image loop; returns (batch, classes) logits."""
    clip = model.clip
    if image_embeds is None:
        image_features = clip.get_image_features(pixel_values=pixel_values).pooler_output
        image_embeds = image_features / image_features.norm(dim=-1, keepdim=True)
    context_length = model.config.clip_config.text_config.max_position_embeddings
    prompt_ids = full_prompt_ids(prompt_ids, eos_index, context_length)
    n_ctx = model.config.n_ctx
    token_embeds = clip.text_model.embeddings.token_embedding(prompt_ids)  # (classes, 77, dim)
    prefix, suffix = token_embeds[:, :1], token_embeds[:, 1 + n_ctx :]  # official token_prefix / token_suffix
    state = dict(model.prompt_learner.named_parameters())  # tensors by name: no prompt-learner code runs
    ctx = state["ctx"]
    conditional = "meta_net.linear1.weight" in state
    logit_scale = clip.logit_scale.exp()
    logits = []
    for imf in image_embeds:
        ctx_i = ctx + reference_meta_net(state, imf) if conditional else ctx  # (n_ctx, dim): same bias per token
        ctx_i = ctx_i.unsqueeze(0).expand(prompt_ids.shape[0], -1, -1)
        prompts = torch.cat([prefix, ctx_i.to(prefix.dtype), suffix], dim=1)  # (classes, 77, dim)
        text_features = reference_text_features(model, prompts, eos_index.to(prompts.device))
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        logits.append(logit_scale * imf.to(text_features.dtype) @ text_features.t())
    return torch.stack(logits)


def held_prompts(model):
    """The class prompts a model holds (set_class_names), as reference_logits takes them."""
    return model.prompt_ids, model.eos_index
