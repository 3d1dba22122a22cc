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


# ------------------------------------------------------------------------------------------ the CoOp family
# Official CoOp trainers/coop.py (PromptLearner: CSC, CLASS_TOKEN_POSITION, name_lens) and KgCoOp
# trainers/kgcoop.py (htyao89/KgCoOp: zero-shot features of a hand-crafted template, 1 - mean cosine), written as
# those files compute them: per-class Python loops over the token prefix/suffix and the context.


def reference_name_lens(tokenizer, class_names):
    """Official `name_lens = [len(_tokenizer.encode(name)) for name in classnames]`, "_" read as a space."""
    return [len(tokenizer(name.replace("_", " "), add_special_tokens=False)["input_ids"]) for name in class_names]


def reference_prompts(prefix, ctx, suffix, name_lens, position):
    """Official PromptLearner.forward: (classes, 77, dim) prompt embeddings; `ctx` is (classes, n_ctx, dim)."""
    if position == "end":
        return torch.cat([prefix, ctx, suffix], dim=1)
    n_ctx = ctx.shape[1]
    half_n_ctx = n_ctx // 2
    prompts = []
    for i, name_len in enumerate(name_lens):
        class_i, suffix_i = suffix[i : i + 1, :name_len], suffix[i : i + 1, name_len:]
        if position == "middle":
            parts = [prefix[i : i + 1], ctx[i : i + 1, :half_n_ctx], class_i, ctx[i : i + 1, half_n_ctx:], suffix_i]
        elif position == "front":
            parts = [prefix[i : i + 1], class_i, ctx[i : i + 1], suffix_i]
        else:
            raise ValueError(position)
        prompts.append(torch.cat(parts, dim=1))
    return torch.cat(prompts, dim=0)


def reference_family(model, prompt_ids, eos_index, name_lens, image_embeds, position=None):
    """
    Logits (batch, classes) and normalised text features (batch or 1, classes, proj) of CoOp / CoCoOp with the
    official class-token position and (for CoOp) class-specific context. `position` overrides the config's.
    """
    clip = model.clip
    position = position or model.config.class_token_position
    context_length = model.config.clip_config.text_config.max_position_embeddings
    prompt_ids = full_prompt_ids(prompt_ids, eos_index, context_length)
    n_ctx = model.config.n_ctx
    token_embeds = clip.text_model.embeddings.token_embedding(prompt_ids)
    prefix, suffix = token_embeds[:, :1], token_embeds[:, 1 + n_ctx :]
    state = dict(model.prompt_learner.named_parameters())
    ctx = state["ctx"]
    classes = prompt_ids.shape[0]
    if ctx.dim() == 2:  # official: a generic context is expanded to every class
        ctx = ctx.unsqueeze(0).expand(classes, -1, -1)
    conditional = "meta_net.linear1.weight" in state
    eos_index = eos_index.to(prompt_ids.device)

    def text_features(ctx_i):
        prompts = reference_prompts(prefix, ctx_i.to(prefix.dtype), suffix, name_lens, position)
        features = reference_text_features(model, prompts, eos_index)
        return features / features.norm(dim=-1, keepdim=True)

    if conditional:  # CoCoOp: the per-image loop of the official CustomCLIP.forward
        features = torch.stack([text_features(ctx + reference_meta_net(state, imf)) for imf in image_embeds])
        logits = torch.einsum("bd,bcd->bc", image_embeds, features)
    else:  # CoOp: one text feature per class
        features = text_features(ctx).unsqueeze(0)
        logits = image_embeds @ features[0].t()
    return clip.logit_scale.exp() * logits, features


def reference_zero_shot_features(model, tokenizer, class_names, template):
    """Official KgCoOp: `clip_model_.encode_text(clip.tokenize(temp.format(c)))`, L2-normalised, plain CLIP text."""
    texts = [template.format(name.replace("_", " ")) for name in class_names]
    encoded = [tokenizer(text)["input_ids"] for text in texts]
    context_length = model.config.clip_config.text_config.max_position_embeddings
    ids = torch.zeros(len(texts), context_length, dtype=torch.long)  # clip.tokenize pads with 0
    for row, tokens in enumerate(encoded):
        ids[row, : len(tokens)] = torch.tensor(tokens)
    eos_index = torch.tensor([len(tokens) - 1 for tokens in encoded])  # EOT is the largest id: its argmax
    with torch.no_grad():
        embeds = model.clip.text_model.embeddings.token_embedding(ids)
        features = reference_text_features(model, embeds, eos_index)
    return features / features.norm(dim=-1, keepdim=True)


def reference_kgcoop_loss(logits, labels, text_features, zero_shot, weight):
    """Official KgCoOp forward_backward: cross_entropy + w * (1 - mean(CosineSimilarity(dim=1, eps=1e-07)))."""
    cos = torch.nn.CosineSimilarity(dim=-1, eps=1e-07)
    score = 1.0 - torch.mean(cos(text_features, zero_shot.unsqueeze(0).expand_as(text_features)))
    return torch.nn.functional.cross_entropy(logits, labels) + weight * score, score
