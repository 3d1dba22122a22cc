"""
IVLP, MaPLe and PromptSRC (deep vision-language prompts): a training step and an evaluation forward of CoCoOpModel
against the official code's per-batch shape of work, on the same random weights.

- reference: the official `CustomCLIP.forward` of multimodal-prompt-learning `trainers/independentVL.py` (IVLP),
  `trainers/maple.py` (MaPLe) and PromptSRC `trainers/promptsrc.py`, per batch: the text features of EVERY class
  recomputed at every step, every prompt padded to the 77-token context (official `clip.tokenize`), the deep text
  prompts at positions 1..n_ctx of layers 1..depth-1, an explicit causal mask; the vision tower once per batch with
  the prompts appended after the patches and replacing the last n tokens of layers 1..depth-1 (official modified
  `clip/model.py`); PromptSRC's training step also runs the frozen image encoder (no prompts, no grad) and its three
  terms with the official weights (L1 text x 25, L1 image x 10, KL x 1). Written here with CLIP's own modules (its
  layers' forward, as the official code uses its own `nn.MultiheadAttention` blocks), calling nothing in cocoop_hf
  but the prompt learner's forward (which gives the prompts: MaPLe's projections included);
- ours: `CoCoOpModel(pixel_values=..., labels=..., **model.class_prompts(names))` as shipped (PromptSRC: with the
  frozen text teacher as `zero_shot_embeds`, computed once outside the timing and given to both paths).

Both paths do the same amount of work per step in the official sense: the text prompts do not depend on the image,
so each runs the text tower once per step for all classes and the vision tower once per image. What differs, and
what the ratio measures: ours runs each prompt only up to its own EOS (`ref text tok` vs `ours text tok`: classes x
77 against the sum of the prompt lengths) and its last text layer on the EOS token alone; at ViT-B/16 the vision
tower (197 patches + prompts at width 768 per image) dominates from a few images on, so the ratio falls towards 1x
as the batch grows. The official CoCoOp reference (`bench_cocoop.py`) is a per-image loop because CoCoOp's prompts
depend on the image; these methods' official code is per batch, and so is this reference.

Each row first checks that the two paths agree (fp32 logits within 1e-5 of max|ref|; training rows: the prompt
learner's gradient of the first step's loss as one vector within 1e-4 of its max|ref|), then times their steps
interleaved in one process (median of the repeats) and reports time per step, images/s, the ratio ours / ref and
each path's peak memory over its first step (bench_cocoop.PeakMemory: on CPU the rise of the process's peak
resident set, VmHWM reset through /proc/self/clear_refs, i.e. an ru_maxrss delta that can be reset; on CUDA
`torch.cuda.max_memory_allocated`, weights included).

    python benchmarks/bench_vl_prompts.py --preset cpu --output vl_cpu.json     # ViT-B/16 widths, ~20 min, 1 thread
    python benchmarks/bench_vl_prompts.py --preset smoke                        # seconds: the tiny CLIP
    python benchmarks/bench_vl_prompts.py --models vit-b16 --methods maple --classes 10 --batch 4 --modes train

Weights are random (no pretrained CLIP here): speed, memory and agreement only, never accuracy. Exit status 1 when a
row's paths disagree (FAIL) or run out of memory (ERROR).
"""

import argparse
import gc
import itertools
import statistics
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import CLIPTokenizer


REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):  # the package need not be installed; bench_cocoop's helpers beside this file
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_cocoop import (  # noqa: E402
    TOKENIZER_DIR,
    PeakMemory,
    _free,
    _rel_diff,
    clip_config_for,
    environment,
    finish,
    load_class_names,
    time_interleaved,
)

from cocoop_hf import CoCoOpConfig, CoCoOpModel  # noqa: E402
from cocoop_hf.promptsrc_cocoop import teacher_text_features  # noqa: E402


MODES = ("eval", "train")
# The official recipes: PromptSRC configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml (only PromptSRC's repo ships
# this IVLP recipe), multimodal-prompt-learning configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml, PromptSRC
# configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml. Depths are capped at the tower's layers (the tiny
# CLIP has 2). `lr`: the recipe's SGD learning rate (momentum 0.9, weight decay 5e-4 in all three).
METHODS = {
    "ivlp": {"config": {"n_ctx": 4, "n_ctx_vision": 4}, "depth": 9, "lr": 0.0025},
    "maple": {"config": {"n_ctx": 2, "vision_prompts_from_text": True}, "depth": 9, "lr": 0.0035},
    "promptsrc": {
        "config": {
            "n_ctx": 4,
            "n_ctx_vision": 4,
            "promptsrc_text_weight": 25.0,
            "promptsrc_image_weight": 10.0,
            "promptsrc_logits_weight": 1.0,
        },
        "depth": 9,
        "lr": 0.0025,
    },
}
CTX_INIT = "a photo of a"  # all three recipes; MaPLe learns its first 2 words ("a photo")
LOGIT_TOL = 1e-5  # x max|ref logit|
GRAD_TOL = 1e-4  # x max|ref grad| over the whole prompt learner


@dataclass(frozen=True)
class RowSpec:
    model: str  # "tiny" or "vit-b16" (bench_cocoop.clip_config_for)
    method: str  # a key of METHODS
    classes: int
    batch: int
    mode: str  # "eval" or "train"
    ref_batch: int | None = None  # the reference's batch (<= ours); None: ours
    repeats: int | None = None  # None: --repeats
    warmup: int | None = None  # None: --warmup


def _rows(models, methods, classes, batches, modes, **fields) -> list[RowSpec]:
    return [RowSpec(*row, **fields) for row in itertools.product(models, methods, classes, batches, modes)]


PRESETS = {
    "smoke": _rows(["tiny"], list(METHODS), [10], [4], MODES, repeats=1, warmup=1),
    # A 2-core CPU, one torch thread, about 20 minutes on an idle machine: the recipes' batch 4 and batch 32 at
    # ViT-B/16 widths, 10 classes, the median of 3 timed steps per path after the agreement step (at batch 32 a
    # step takes 10-30 s per path; one timed step was seen off by 2.5x while other processes took the cores).
    "cpu": _rows(["vit-b16"], list(METHODS), [10], [4, 32], MODES, repeats=3, warmup=1),
}


def build_model(name: str, method: str, device: torch.device, seed: int) -> CoCoOpModel:
    """
    The method's model (its official recipe) on a random CLIP of shape `name`; every prompt drawn from N(0, 0.02)
    (the official init) and MaPLe's projections with PyTorch's Linear init, each different, so that a prompt at the
    wrong layer or position, or a projection of the wrong depth, changes the logits.
    """
    clip_config = clip_config_for(name)
    recipe = METHODS[method]
    layers = min(clip_config.text_config.num_hidden_layers, clip_config.vision_config.num_hidden_layers)
    depth = min(recipe["depth"], layers)
    config = CoCoOpConfig(
        clip_config=clip_config,
        ctx_init=CTX_INIT,
        conditional=False,
        prompt_depth_text=depth,
        prompt_depth_vision=depth,
        **recipe["config"],
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = CoCoOpModel(config)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for key, tensor in model.prompt_learner.named_parameters():
            if key.endswith((".weight", ".bias")):  # MaPLe's projections: PyTorch's Linear init, per layer
                bound = tensor.shape[-1] ** -0.5 if tensor.dim() == 2 else model.prompt_learner.ctx.shape[1] ** -0.5
                tensor.copy_((torch.rand(tensor.shape, generator=generator) * 2 - 1) * bound)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.02)
    return model


# ------------------------------------------------------------------------------- the official per-batch computation


def official_prompt_ids(tokenizer, class_names, context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Official `tokenized_prompts`: `clip.tokenize(ctx_init + " " + name + ".")` for every class (names with `_` as a
    space), padded with 0 to the context; the EOS position is the argmax (EOT is the largest id). (classes, 77), (classes,).
    """
    texts = [f"{CTX_INIT} {name.replace('_', ' ')}." for name in class_names]
    ids = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, tokens in enumerate(tokenizer(texts)["input_ids"]):
        ids[row, : len(tokens)] = torch.tensor(tokens)
    return ids, ids.argmax(dim=-1)


def official_text_features(clip, prompt_ids, eos_index, ctx, text_prompts) -> torch.Tensor:
    """
    Official TextEncoder.forward with the IVLP/MaPLe text blocks: [SOS | ctx | rest] + positions, then at layers
    1..len(text_prompts) positions 1..n_ctx replaced by that layer's prompt (`ResidualAttentionBlock_IVLP.forward`,
    `text_layer`: `cat([x[:1], VPT_shallow, x[1 + n_ctx:]])`), causal mask, ln_final at EOS, projection. Unnormalised.
    """
    text = clip.text_model
    classes, length = prompt_ids.shape
    n_ctx = ctx.shape[0]

    def with_prompt(hidden, prompt):
        prompt = prompt.unsqueeze(0).expand(classes, -1, -1)
        return torch.cat([hidden[:, :1], prompt, hidden[:, 1 + n_ctx :]], dim=1)

    hidden = with_prompt(text.embeddings.token_embedding(prompt_ids), ctx) + text.embeddings.position_embedding.weight
    causal = torch.full((length, length), float("-inf"), device=hidden.device, dtype=hidden.dtype).triu(1)
    for index, layer in enumerate(text.encoder.layers):
        if 1 <= index <= len(text_prompts):
            hidden = with_prompt(hidden, text_prompts[index - 1])
        hidden = layer(hidden, causal[None, None])
    hidden = text.final_layer_norm(hidden)
    return clip.text_projection(hidden[torch.arange(classes, device=hidden.device), eos_index])


def official_image_features(clip, pixel_values, vision_prompts) -> torch.Tensor:
    """
    Official VisionTransformer.forward with the IVLP/MaPLe vision blocks: class + patches + positions, the layer-0
    prompts appended after them (no position), ln_pre, then at layers 1..depth-1 the last n tokens replaced by that
    layer's prompts; ln_post of the class token, projection. Unnormalised.
    """
    vision = clip.vision_model
    hidden = vision.embeddings(pixel_values)  # (batch, 1 + patches, width)
    batch = hidden.shape[0]
    prompts = [prompt.unsqueeze(0).expand(batch, -1, -1) for prompt in vision_prompts]
    hidden = vision.pre_layrnorm(torch.cat([hidden, prompts[0]], dim=1))
    for index, layer in enumerate(vision.encoder.layers):
        if 1 <= index < len(prompts):
            hidden = torch.cat([hidden[:, : -prompts[index].shape[1]], prompts[index]], dim=1)
        hidden = layer(hidden, None)
    return clip.visual_projection(vision.post_layernorm(hidden[:, 0]))


def official_forward(model, prompt_ids, eos_index, pixel_values, labels=None, teacher=None):
    """
    Official CustomCLIP.forward, one batch: (logits, loss). Training: cross-entropy, and for PromptSRC its
    `forward_backward` terms (official trainers/promptsrc.py) with the config's weights.
    """
    clip, config = model.clip, model.config
    ctx, text_prompts, vision_prompts = model.prompt_learner()  # DeepPrompts: MaPLe's projections computed there
    text = official_text_features(clip, prompt_ids, eos_index, ctx, text_prompts)
    image = official_image_features(clip, pixel_values, vision_prompts)
    text = text / text.norm(dim=-1, keepdim=True)
    image = image / image.norm(dim=-1, keepdim=True)
    logit_scale = clip.logit_scale.exp()
    logits = logit_scale * image @ text.t()
    if labels is None:
        return logits, None
    loss = F.cross_entropy(logits, labels)
    if teacher is not None:
        with torch.no_grad():  # official: the frozen CLIP's image encoder (`ZS_image_encoder`), no prompts
            frozen = clip.get_image_features(pixel_values=pixel_values).pooler_output
            frozen = frozen / frozen.norm(dim=-1, keepdim=True)
            zero_shot_logits = logit_scale * frozen @ teacher.t()
        text_loss = F.l1_loss(text, teacher, reduction="mean") * config.promptsrc_text_weight
        image_loss = F.l1_loss(image, frozen, reduction="mean") * config.promptsrc_image_weight
        kl = F.kl_div(
            F.log_softmax(logits, dim=1), F.log_softmax(zero_shot_logits, dim=1), reduction="sum", log_target=True
        )
        loss = loss + kl / logits.numel() * config.promptsrc_logits_weight + text_loss + image_loss
    return logits, loss


# -------------------------------------------------------------------------------------------------------- one row


def make_step(model, path: str, spec: RowSpec, inputs: dict, pixel_values, labels):
    """
    One step of one path on a fixed batch: evaluation (logits under no_grad, eval mode) or training (forward, loss,
    backward and, unless `update=False`, the recipe's SGD step on the prompt learner).
    """
    optimizer = torch.optim.SGD(
        model.prompt_learner.parameters(), lr=METHODS[spec.method]["lr"], momentum=0.9, weight_decay=5e-4
    )
    train = spec.mode == "train"

    def forward():
        if path == "ours":
            extra = {"zero_shot_embeds": inputs["teacher"]} if train and inputs["teacher"] is not None else {}
            out = model(pixel_values=pixel_values, labels=labels if train else None, **inputs["prompts"], **extra)
            return out.logits, out.loss
        return official_forward(
            model, inputs["ids"], inputs["eos"], pixel_values, labels if train else None, inputs["teacher"]
        )

    def step(update: bool = True):
        if not train:
            with torch.no_grad():
                return forward()[0]
        optimizer.zero_grad(set_to_none=True)
        logits, loss = forward()
        loss.backward()
        if update:
            optimizer.step()
        return logits.detach()

    return step


def blank_row(spec: RowSpec) -> dict:
    row = dict.fromkeys(field for field, _ in COLUMNS.values())
    return {**row, **asdict(spec), "ref_batch": min(spec.batch, spec.ref_batch or spec.batch), "note": ""}


def run_row(model, spec: RowSpec, device, args, tokenizer) -> dict:
    row = {**blank_row(spec), "tolerance": f"logits {LOGIT_TOL:g} x max|ref|, grads {GRAD_TOL:g} x max|grad ref|"}
    rb = row["ref_batch"]
    class_names = load_class_names(spec.classes)
    prompts = model.class_prompts(class_names, tokenizer=tokenizer).to(device)
    context_length = model.config.backbone_config.text_config.max_position_embeddings
    ids, eos = official_prompt_ids(tokenizer, class_names, context_length)
    teacher = None
    if spec.mode == "train" and model.config.promptsrc_text_weight + model.config.promptsrc_logits_weight > 0:
        # PromptSRC's frozen text teacher (60 templates), once, outside the timing: both the official code
        # (VLPromptLearner.__init__) and ours compute it once per class set.
        teacher = teacher_text_features(model.clip, class_names, tokenizer, chunk_tokens=4096).to(device)
    inputs = {"prompts": prompts, "ids": ids.to(device), "eos": eos.to(device), "teacher": teacher}
    row["ref_text_tokens"] = ids.numel()  # classes x 77 per step
    row["ours_text_tokens"] = int((prompts["eos_index"] + 1).sum())  # each prompt up to its EOS
    model.train(spec.mode == "train")
    generator = torch.Generator().manual_seed(args.seed)
    size = model.config.backbone_config.vision_config.image_size
    pixels = torch.randn(spec.batch, 3, size, size, generator=generator).to(device)
    labels = torch.randint(0, spec.classes, (spec.batch,), generator=generator).to(device)
    initial = {k: v.detach().clone() for k, v in model.prompt_learner.state_dict().items()}

    def reset():  # both paths start from the same prompt-learner tensors
        model.prompt_learner.load_state_dict(initial)
        model.zero_grad(set_to_none=True)

    def grads() -> dict:
        return {n: p.grad.float().clone() for n, p in model.prompt_learner.named_parameters() if p.grad is not None}

    ours = make_step(model, "ours", spec, inputs, pixels, labels)
    ours_small = make_step(model, "ours", spec, inputs, pixels[:rb], labels[:rb])
    ref = make_step(model, "ref", spec, inputs, pixels[:rb], labels[:rb])

    # Agreement: the reference on the first rb images against ours on the same images and against the first rb rows
    # of ours at its own batch. Each path's first step at its batch also gives its peak memory.
    try:
        reset()
        with PeakMemory(device) as memory:
            ref_out = ref(update=False)
        row["ref_peak_mib"], ref_grads = memory.peak_mib, grads()
    except torch.OutOfMemoryError:
        _free(model, device)
        ref_out, row["note"] = None, f"reference out of memory at ref batch {rb}: no ratio, no check"
    reset()
    with PeakMemory(device) as memory:
        ours_batch_out = ours(update=False)[:rb]
    row["ours_peak_mib"] = memory.peak_mib
    if rb == spec.batch:  # the same step: not run twice (a ViT-B/16 step at batch 32 takes tens of seconds on CPU)
        ours_out, ours_grads = ours_batch_out, grads()
    else:
        reset()
        ours_out, ours_grads = ours_small(update=False), grads()
    if ref_out is None:
        row["pass"] = "SKIP"
    else:
        row["max_rel_diff"] = max(_rel_diff(out, ref_out) for out in (ours_out, ours_batch_out))
        passed = row["max_rel_diff"] <= LOGIT_TOL
        if spec.mode == "train":
            # One vector over the prompt learner; a gradient that does not reach ours counts as zero.
            largest = max(g.abs().max().item() for g in ref_grads.values())
            worst = max((ours_grads.get(n, 0 * g) - g).abs().max().item() for n, g in ref_grads.items())
            missing = sorted(set(ours_grads) ^ set(ref_grads))
            row["grad_rel_diff"] = worst / max(largest, 1e-30)
            passed = passed and row["grad_rel_diff"] <= GRAD_TOL and not missing
            if missing:
                row["note"] = f"gradients of {missing} reach only one path"
        row["pass"] = "PASS" if passed else "FAIL"

    # Timing: warm-ups (the agreement step counts as one), then the paths' steps interleaved; medians.
    steps = [ours] if ref_out is None else [ours, ref]
    reset()
    for _ in range((args.warmup if spec.warmup is None else spec.warmup) - 1):
        for step in steps:
            step()
    times = time_interleaved(steps, spec.repeats or args.repeats, device)
    row["ours_s"], row["ours_times_s"] = statistics.median(times[0]), times[0]
    row["ours_img_s"] = spec.batch / row["ours_s"]
    if ref_out is not None:
        row["ref_s"], row["ref_times_s"] = statistics.median(times[1]), times[1]
        row["ref_img_s"] = rb / row["ref_s"]
        row["ratio"] = row["ours_img_s"] / row["ref_img_s"]
    reset()
    return row


COLUMNS = {  # table header: row field, format
    "model": ("model", ""), "method": ("method", ""), "classes": ("classes", ""), "mode": ("mode", ""),
    "batch": ("batch", ""), "ref b": ("ref_batch", ""), "ref text tok": ("ref_text_tokens", ""),
    "ours text tok": ("ours_text_tokens", ""), "ref s/step": ("ref_s", ".3f"), "ours s/step": ("ours_s", ".3f"),
    "ref img/s": ("ref_img_s", ".2f"), "ours img/s": ("ours_img_s", ".2f"), "ratio": ("ratio", ".2f"),
    "ref MiB": ("ref_peak_mib", ".0f"), "ours MiB": ("ours_peak_mib", ".0f"), "rel diff": ("max_rel_diff", ".1e"),
    "grad diff": ("grad_rel_diff", ".1e"), "pass": ("pass", ""),
}  # fmt: skip


def format_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = ("-" if row[key] is None else format(row[key], spec) for key, spec in COLUMNS.values())
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {r['model']}/{r['method']}/b{r['batch']}/{r['mode']}: {r['note']}" for r in rows if r["note"]]
    return "\n".join(lines + notes)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a ready grid (default: cpu)")
    parser.add_argument("--models", nargs="+", choices=["tiny", "vit-b16"], help="grid: replaces the preset")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), help="grid: ivlp, maple, promptsrc")
    parser.add_argument("--classes", nargs="+", type=int, help="grid: number of ImageNet class names")
    parser.add_argument("--batch", nargs="+", type=int, help="grid: our batch sizes")
    parser.add_argument("--modes", nargs="+", choices=MODES, help="grid: eval and/or train")
    parser.add_argument("--ref-batch", type=int, help="the reference's batch (<= ours), every row")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per path; the median is reported")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per path (the agreement step counts)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, help="torch.set_num_threads; default 1 on CPU (steady on a shared CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    for name in ("repeats", "ref_batch", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}.")
    if args.warmup < 0 or any(v < 1 for v in (args.classes or []) + (args.batch or [])):
        parser.error("--warmup must be >= 0 and --classes / --batch values >= 1.")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this torch build sees no CUDA device.")
    grid = (args.models, args.methods, args.classes, args.batch, args.modes)
    if args.preset and any(value is not None for value in grid):
        parser.error("give either --preset or grid flags (--models/--methods/--classes/--batch/--modes).")
    if any(value is not None for value in grid):
        args.preset = "custom"
        defaults = (["tiny"], list(METHODS), [10], [4], MODES)
        specs = _rows(*(value or default for value, default in zip(grid, defaults, strict=True)))
    else:
        args.preset = args.preset or "cpu"
        specs = PRESETS[args.preset]
    overrides = {"ref_batch": args.ref_batch} if args.ref_batch else {}
    return args, [replace(spec, **overrides) for spec in specs]


def main(argv=None) -> int:
    args, specs = parse_args(argv)
    device = torch.device(args.device)
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else None)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        # On a shared 2-core machine a 2-thread run slowed 10-50x whenever another process took a core; 1 is steady.
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 rows mean IEEE fp32
    # PeakMemory runs gc.collect() before each measured step: with every object alive so far (torch, transformers,
    # a test session's) moved out of the collector's view, each takes milliseconds instead of ~1 s on a busy machine.
    gc.collect()
    gc.freeze()
    try:
        env = environment(device)
        print(f"# preset {args.preset}: " + "; ".join(f"{k} {v}" for k, v in env.items()))
        tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_DIR)
        rows, model, built = [], None, None
        for index, spec in enumerate(sorted(specs, key=lambda s: (s.model, s.method))):  # each model built once
            print(f"# row {index + 1}/{len(specs)}: {spec}", file=sys.stderr, flush=True)
            if (spec.model, spec.method) != built:
                model = None  # the last model goes before the next is built
                _free(None, device)
                model = build_model(spec.model, spec.method, device, args.seed)
                built = (spec.model, spec.method)
            try:
                rows.append(run_row(model, spec, device, args, tokenizer))
            except torch.OutOfMemoryError as error:
                _free(model, device)
                rows.append(
                    {**blank_row(spec), "pass": "ERROR", "note": f"out of memory: {str(error).splitlines()[0]}"}
                )
        return finish(rows, env, args, format_table(rows))
    finally:
        torch.set_num_threads(previous_threads)  # run in-process by a test: leave the process as it was
        gc.unfreeze()


if __name__ == "__main__":
    sys.exit(main())
