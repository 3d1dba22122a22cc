"""
Throughput, peak memory and agreement of CoCoOpModel against the per-image reference, on the same random weights.

- reference: `tests/reference_cocoop.reference_logits`, the official code's way: a Python loop over images, every
  class prompt padded to the 77-token context, an explicit causal mask;
- ours: `CoCoOpModel(pixel_values=..., input_ids=..., eos_index=...)` as shipped.

Rows of the CoOp family (`--methods`): `coop-csc` (CoOp with a class-specific context), `coop-middle` (CoOp, class
name in the middle of the context), `kgcoop` (CoOp + the KgCoOp regulariser, w = 8). Their reference is
`tests/reference_cocoop.reference_family` (the official CoOp PromptLearner's per-class prompt assembly, every prompt
padded to 77 tokens) and, for KgCoOp, `reference_kgcoop_loss` with zero-shot features from a plain CLIP text pass.

Each row first checks that the two paths give the same logits (training rows: and the same prompt-learner
gradients), then times their steps interleaved in one process and reports images/s, the ratio ours / ref and each
path's measured peak memory. Weights are random: no pretrained CLIP is needed to time the math or compare the paths.

    python benchmarks/bench_cocoop.py --preset cpu --output cpu.json
    bash benchmarks/run_gpu.sh                                   # --preset gpu on one H100/H200
    python benchmarks/bench_cocoop.py --models mid --classes 100 --batch 8 --ref-batch 4 --modes eval train

Exit status 1 when a row's paths disagree (FAIL) or run out of memory (ERROR). See benchmarks/README.md.
"""

import argparse
import contextlib
import copy
import ctypes
import datetime
import gc
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from transformers import CLIPConfig, CLIPTokenizer


REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the reference lives in tests/; the package need not be installed

from cocoop_hf import CoCoOpConfig, CoCoOpModel  # noqa: E402
from tests.reference_cocoop import (  # noqa: E402
    reference_family,
    reference_kgcoop_loss,
    reference_logits,
    reference_name_lens,
    reference_zero_shot_features,
)


TOKENIZER_DIR = REPO / "tests" / "fixtures" / "clip-tokenizer"
TINY_CLIP_DIR = REPO / "cocoop_hf_training" / "demo" / "tiny-clip"  # the tiny CLIP of the tests and the demo
VIT_B16_DIR = REPO / "tests" / "fixtures" / "clip-vit-base-patch16"  # config.json of openai/clip-vit-base-patch16
CLASS_NAMES_FILE = REPO / "benchmarks" / "imagenet_classnames.json"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("eval", "train")
# Config of each method's model (on top of the random CLIP); the official KgCoOp recipe's w = 8.0.
METHODS = {
    "cocoop": {},
    "coop-csc": {"conditional": False, "class_specific_context": True},
    "coop-middle": {"conditional": False, "class_token_position": "middle"},
    "kgcoop": {"conditional": False, "kgcoop_weight": 8.0},
}

# Agreement, relative to the largest reference value. fp32: logits within 1e-5, prompt-learner gradients of the first
# training step within 1e-4 (they sum over every class and every text layer). Half precision (autocast): both paths
# round, differently (op order, unpadded shapes), so a fixed bound on ours vs ref is loose or flaky (2.6e-2 seen at
# the ViT-B/16 shape in bf16 on CPU). Instead ours' error against the fp32 reference logits may be at most twice the
# reference's own error at that dtype, or HALF_FLOOR; half-precision gradients only have to miss no path (a gradient
# that does not flow gives 1.0): the fp32 rows are the tight check of the backward pass.
LOGIT_TOL_FP32 = 1e-5
GRAD_TOL = {"fp32": 1e-4, "bf16": 0.5, "fp16": 0.5}
HALF_FLOOR = {"bf16": 1e-2, "fp16": 2e-3}
# Rows whose CLIP weights are cast to the half dtype (`clip_weights="half"`, `CoCoOpModel.cast_frozen_clip`): the
# residual stream and every weight then round too, where autocast keeps fp32 weights and residuals; the reference
# stays in fp32 weights under autocast. Measured on the tiny CLIP in tests/test_half_precision_clip.py: 0.7-1.7% of
# the largest logit in bf16; the floor leaves room for the 12 text layers of ViT-B/16.
HALF_WEIGHTS_FLOOR = {"bf16": 5e-2, "fp16": 1e-2}


def tolerance_rule(dtype: str, clip_weights: str = "fp32") -> str:
    if dtype == "fp32":
        return f"logits {LOGIT_TOL_FP32:g} x max|ref|, grads {GRAD_TOL['fp32']:g} x max|grad ref|"
    floor = (HALF_WEIGHTS_FLOOR if clip_weights == "half" else HALF_FLOOR)[dtype]
    return f"logit error vs fp32 ref <= max(2 x ref's, {floor:g}); grads {GRAD_TOL[dtype]:g} x max|ref|"


def clip_config_for(name: str) -> CLIPConfig:
    if name == "vit-b16":
        return CLIPConfig.from_pretrained(VIT_B16_DIR)
    config = CLIPConfig.from_pretrained(TINY_CLIP_DIR)
    if name == "mid":
        # The tiny CLIP grown to half a ViT-B/16: text 256 wide x 6 layers x 8 heads (half its width and depth), a
        # small ViT 384 x 6 x 6 on 96 px images in 16 px patches (37 tokens); 4x MLPs as in CLIP.
        config = config.to_dict()
        text, vision = config["text_config"], config["vision_config"]
        text.update(hidden_size=256, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=8)
        vision.update(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6)
        vision.update(image_size=96, patch_size=16)
        config = CLIPConfig.from_dict({**config, "projection_dim": 256})
    return config


def load_class_names(count: int) -> list[str]:
    """`count` of CLIP's clean ImageNet class names, evenly spaced over the 1000 so prompt lengths are typical."""
    names = json.loads(CLASS_NAMES_FILE.read_text(encoding="utf-8"))
    if not 1 <= count <= len(names):
        raise ValueError(f"--classes must lie in [1, {len(names)}] (ImageNet class names), got {count}.")
    return [names[round(i * (len(names) - 1) / max(count - 1, 1))] for i in range(count)]


def build_model(name: str, device: torch.device, seed: int, method: str = "cocoop", class_names=None, tokenizer=None):
    """
    CoCoOp (or a CoOp-family `method`) on a random CLIP of shape `name`, with a random context (N(0, 0.02), the
    official random init) and meta-net (PyTorch's Linear init), so that every class prompt and every image's bias
    differ: a path that dropped the bias or mixed up classes would not agree with the reference. A class-specific
    context is built for `class_names` (it holds one row per class).
    """
    torch.manual_seed(seed)
    options = dict(METHODS[method])
    if options.get("class_specific_context"):
        options["id2label"] = dict(enumerate(class_names))
    with torch.device(device):
        model = CoCoOpModel(CoCoOpConfig(clip_config=clip_config_for(name), ctx_init="a photo of a", **options))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        model.prompt_learner.ctx.copy_(torch.randn(model.prompt_learner.ctx.shape, generator=generator) * 0.02)
        linears = [m for m in model.prompt_learner.modules() if isinstance(m, torch.nn.Linear)]
        for linear in linears:
            for tensor in (linear.weight, linear.bias):
                tensor.copy_((torch.rand(tensor.shape, generator=generator) * 2 - 1) * linear.in_features**-0.5)
    if options.get("class_specific_context"):
        model.set_class_names(class_names, tokenizer=tokenizer)
    return model


@dataclass(frozen=True)
class RowSpec:
    model: str
    classes: int
    batch: int
    dtype: str
    mode: str
    ref_batch: int | None = None  # the reference's batch (<= ours); None: ours
    checkpointing: bool = False  # activation checkpointing on ours (train rows)
    repeats: int | None = None  # None: --repeats
    warmup: int | None = None  # None: --warmup
    method: str = "cocoop"  # a key of METHODS
    clip_weights: str = "fp32"  # "half": ours with CLIP's weights cast to `dtype` (the prompt learner stays fp32)


def _rows(models, classes, batches, dtypes, modes, **fields) -> list[RowSpec]:
    return [RowSpec(*row, **fields) for row in itertools.product(models, classes, batches, dtypes, modes)]


PRESETS = {
    "smoke": _rows(["tiny"], [10], [4], ["fp32"], MODES, repeats=1, warmup=1),
    # A 2-core CPU, a few minutes. The reference runs smaller batches where its activations (classes x 77 tokens per
    # image) would take GBs.
    "cpu": [
        *_rows(["tiny"], [10, 100], [8], ["fp32"], MODES),
        *_rows(["tiny"], [100], [8], ["bf16"], MODES),
        *_rows(["mid"], [10], [8], ["fp32"], MODES),
        RowSpec("mid", 100, 8, "fp32", "eval", ref_batch=4),
        RowSpec("mid", 100, 8, "fp32", "train", ref_batch=2),
        RowSpec("mid", 1000, 2, "fp32", "eval", ref_batch=1, repeats=1, warmup=1),
        # The CoOp family's training step at 100 classes, beside CoCoOp's rows above (tiny and mid, fp32, train).
        *(RowSpec("tiny", 100, 8, "fp32", "train", method=m) for m in ("coop-csc", "coop-middle", "kgcoop")),
        RowSpec("mid", 100, 8, "fp32", "train", method="kgcoop"),
    ],
    # One H100/H200, under 8 minutes with the profiles of run_gpu.sh. Each target row twice on the same machine:
    # CLIP's weights in fp32 under bf16 autocast (before) and cast to bf16 (`cast_frozen_clip`, after). Reference
    # batches where its padded activations fit (its bf16 training step at 1000 classes measured 16 GB per image).
    "gpu": [
        RowSpec("vit-b16", n, batch, "bf16", mode, ref_batch=ref_b, checkpointing=ckpt, clip_weights=weights)
        for n, batch, mode, ref_b, ckpt in ((50, 256, "eval", 32, False), (1000, 64, "eval", 8, False),
                                            (1000, 32, "train", 1, True))
        for weights in ("fp32", "half")
    ] + [
        RowSpec("vit-b16", 1000, 32, "bf16", "train", ref_batch=1, clip_weights="half"),  # no checkpointing
        # The paper's recipe as users run it: batch 1, the 500 base classes of ImageNet.
        RowSpec("vit-b16", 500, 1, "bf16", "train", ref_batch=1, clip_weights="half"),
        RowSpec("vit-b16", 100, 32, "fp32", "eval", ref_batch=16),  # exactness on the GPU
    ] + [  # KgCoOp's recipe batch (128); CoOp-style text features are computed once per step on both paths
        RowSpec("vit-b16", 100, 128, "bf16", "train", method=m, clip_weights="half")
        for m in ("coop-csc", "coop-middle", "kgcoop")
    ],
}  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kib(field: str) -> int:
    lines = Path("/proc/self/status").read_text(encoding="ascii").splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith(f"{field}:"))


class PeakMemory:
    """
    Peak memory in MiB of the code in the `with`. CUDA: `torch.cuda.max_memory_allocated()`, weights included. CPU
    (Linux; torch keeps no allocator statistics there): the kernel's peak resident set of the process (VmHWM, reset
    on entry through /proc/self/clear_refs) minus its resident set at entry, after `malloc_trim` returned freed heap
    pages, so that the rise is this code's and not reuse of memory freed before.
    """

    def __init__(self, device: torch.device):
        self.device, self.peak_mib = device, None

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            _sync(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5", encoding="ascii")  # 5: reset the peak resident set
            self.start_kib = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc):
        _sync(self.device)
        if self.device.type == "cuda":
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.peak_mib = (_status_kib("VmHWM") - self.start_kib) / 1024


def make_step(model, path: str, spec: RowSpec, prompts, pixel_values, labels, zero_shot=None, name_lens=None):
    """
    One step of one path on a fixed batch: evaluation (logits under no_grad) or training (forward, fp32
    cross-entropy (+ the KgCoOp term for `kgcoop`), backward and, unless `update=False`, an SGD step with the
    official recipe; no GradScaler, which does not change one step's time). `zero_shot`: KgCoOp's zero-shot text
    features, the same tensor for both paths; `name_lens`: the reference's official name lengths.
    """
    optimizer = torch.optim.SGD(model.prompt_learner.parameters(), lr=0.002, momentum=0.9, weight_decay=5e-4)
    dtype = DTYPES[spec.dtype]
    weight = model.config.kgcoop_weight

    def forward():
        """(logits, loss): the loss of a training step; None when evaluating."""
        with torch.autocast(pixel_values.device.type, dtype=dtype, enabled=dtype != torch.float32):
            train = labels if spec.mode == "train" else None
            if path == "ours":
                extra = {"zero_shot_embeds": zero_shot} if weight > 0 else {}
                out = model(pixel_values=pixel_values, labels=train, **prompts, **extra)
                return out.logits, out.loss
            if spec.method == "cocoop":
                logits = reference_logits(model, prompts["input_ids"], prompts["eos_index"], pixel_values=pixel_values)
                return logits, None if train is None else F.cross_entropy(logits.float(), labels)
            features = model.clip.get_image_features(pixel_values=pixel_values).pooler_output
            image_embeds = features / features.norm(dim=-1, keepdim=True)
            logits, text = reference_family(model, prompts["input_ids"], prompts["eos_index"], name_lens, image_embeds)
            if train is None:
                return logits, None
            if weight > 0:
                return logits, reference_kgcoop_loss(logits.float(), labels, text.float(), zero_shot, weight)[0]
            return logits, F.cross_entropy(logits.float(), labels)

    def step(update: bool = True):
        if spec.mode == "eval":
            with torch.no_grad():
                return forward()[0]
        optimizer.zero_grad(set_to_none=True)
        logits, loss = forward()
        loss.backward()
        if update:
            optimizer.step()
        return logits.detach()

    return step


def time_interleaved(steps, repeats: int, device) -> list[list[float]]:
    """Seconds per step of each path, their steps interleaved (A B, B A, ...) so that load from other processes on
    a shared machine falls on both paths alike."""
    times = [[] for _ in steps]
    for i in range(repeats):
        for j in range(len(steps)) if i % 2 == 0 else reversed(range(len(steps))):
            _sync(device)
            start = time.perf_counter()
            steps[j]()
            _sync(device)
            times[j].append(time.perf_counter() - start)
    return times


def _rel_diff(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.detach().float(), ref.detach().float()
    if ours.shape != ref.shape:
        raise ValueError(f"ours gave shape {tuple(ours.shape)}, the reference {tuple(ref.shape)}.")
    return (ours - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)


def _free(model, device) -> None:
    """After an out-of-memory error, or between models: drop gradients and cached blocks."""
    if model is not None:
        model.zero_grad(set_to_none=True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def blank_row(spec: RowSpec) -> dict:
    """A row with every reported field, None until measured."""
    row = dict.fromkeys(field for field, _ in COLUMNS.values())
    return {**row, **asdict(spec), "ref_batch": min(spec.batch, spec.ref_batch or spec.batch), "note": ""}


def compile_ours(model, args) -> None:
    """`--compile`: ours runs its text path through torch.compile (the reference never calls the compiled code)."""
    if args.compile:
        model.compile_text_path(length_buckets=args.length_buckets)


def run_row(model, spec: RowSpec, device, args, tokenizer) -> dict:
    row = {**blank_row(spec), "tolerance": tolerance_rule(spec.dtype, spec.clip_weights)}
    rb = row["ref_batch"]
    if spec.dtype == "fp16" and device.type == "cpu":
        return {**row, "pass": "SKIP", "note": "fp16 autocast is for CUDA; not run on CPU"}
    class_names = load_class_names(spec.classes)
    prompts = model.class_prompts(class_names, tokenizer=tokenizer).to(device)
    name_lens = reference_name_lens(tokenizer, class_names)
    zero_shot = None
    if model.config.kgcoop_weight > 0:  # computed once, outside the timing, as both official and ours do
        zero_shot = reference_zero_shot_features(model, tokenizer, class_names, model.config.kgcoop_template)
        zero_shot = zero_shot.to(device)
    ours_model = model
    if spec.clip_weights == "half":
        # A second CLIP in the half dtype under the SAME prompt learner: both paths read and train one set of
        # prompt-learner tensors, so the agreement check compares them exactly as in the other rows.
        ours_model = copy.deepcopy(model)
        ours_model.prompt_learner = model.prompt_learner
        ours_model.cast_frozen_clip(DTYPES[spec.dtype])
        compile_ours(ours_model, args)  # a copied compiled function would still run the fp32 model's layers
    for each in {id(m): m for m in (model, ours_model)}.values():
        each.train(spec.mode == "train")
        if spec.checkpointing:
            each.activation_checkpointing_enable()
    generator = torch.Generator().manual_seed(args.seed)
    size = model.config.clip_config.vision_config.image_size
    pixels = torch.randn(spec.batch, 3, size, size, generator=generator).to(device)
    labels = torch.randint(0, spec.classes, (spec.batch,), generator=generator).to(device)
    initial = {k: v.detach().clone() for k, v in model.prompt_learner.state_dict().items()}

    def reset():  # both paths start from the same prompt-learner tensors
        model.prompt_learner.load_state_dict(initial)
        model.zero_grad(set_to_none=True)

    def grads():
        return {n: p.grad.float().clone() for n, p in model.prompt_learner.named_parameters() if p.grad is not None}

    family = {"zero_shot": zero_shot, "name_lens": name_lens}
    ours = make_step(ours_model, "ours", spec, prompts, pixels, labels, **family)
    ours_small = make_step(ours_model, "ours", spec, prompts, pixels[:rb], labels[:rb], **family)
    ref = make_step(model, "ref", spec, prompts, pixels[:rb], labels[:rb], **family)

    # Agreement: the reference on the first rb images against ours on the same images, and against the first rb rows
    # of ours at its own batch (other chunking). Each path's first step at its batch also gives its peak memory.
    try:
        reset()
        with PeakMemory(device) as memory:
            ref_out = ref(update=False)
        row["ref_peak_mib"], ref_grads, truth = memory.peak_mib, grads(), None
        if spec.dtype != "fp32":  # the yardstick of both half-precision paths: the reference in fp32
            with torch.no_grad():
                spec_fp32 = replace(spec, dtype="fp32", mode="eval")
                truth = make_step(model, "ref", spec_fp32, prompts, pixels[:rb], labels[:rb], **family)()
    except torch.OutOfMemoryError:
        _free(model, device)
        ref_out, row["note"] = None, f"reference out of memory at ref batch {rb}: no ratio, no check"
    reset()
    ours_out, ours_grads = ours_small(update=False), grads()
    reset()
    with PeakMemory(device) as memory:
        ours_batch_out = ours(update=False)[:rb]
    row["ours_peak_mib"] = memory.peak_mib

    if ref_out is None:
        row["pass"] = "SKIP"
    else:
        row["max_rel_diff"] = max(_rel_diff(out, ref_out) for out in (ours_out, ours_batch_out))
        if truth is None:
            passed = row["max_rel_diff"] <= LOGIT_TOL_FP32
        else:
            row["ref_err_vs_fp32"] = _rel_diff(ref_out, truth)
            row["ours_err_vs_fp32"] = max(_rel_diff(out, truth) for out in (ours_out, ours_batch_out))
            floor = (HALF_WEIGHTS_FLOOR if spec.clip_weights == "half" else HALF_FLOOR)[spec.dtype]
            passed = row["ours_err_vs_fp32"] <= max(2 * row["ref_err_vs_fp32"], floor)
        if spec.mode == "train":
            # A gradient that does not reach ours counts as zero: relative difference 1.
            row["grad_rel_diff"] = max(_rel_diff(ours_grads.get(n, 0 * g), g) for n, g in ref_grads.items())
            passed = passed and row["grad_rel_diff"] <= GRAD_TOL[spec.dtype]
        row["pass"] = "PASS" if passed else "FAIL"

    # Timing: warm-ups (the agreement step counts as one), then the paths' steps interleaved; medians give images/s.
    steps = [ours] if ref_out is None else [ours, ref]
    reset()
    for _ in range((args.warmup if spec.warmup is None else spec.warmup) - 1):
        for step in steps:
            step()
    times = time_interleaved(steps, spec.repeats or args.repeats, device)
    row["ours_img_s"], row["ours_times_s"] = spec.batch / statistics.median(times[0]), times[0]
    if ref_out is not None:
        row["ref_img_s"], row["ref_times_s"] = rb / statistics.median(times[1]), times[1]
        row["ratio"] = row["ours_img_s"] / row["ref_img_s"]
    reset()
    return row


def _git(*command) -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), *command], capture_output=True, text=True).stdout.strip()
    except OSError:  # no git on this machine
        return ""


def environment(device: torch.device) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        cpu = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").open() if line.startswith("model name")]
        name = f"{(cpu or [platform.machine()])[0]} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    commit = _git("rev-parse", "--short", "HEAD")  # empty in a copy without .git
    if commit and _git("status", "--porcelain", "cocoop_hf"):
        commit += " + uncommitted changes in cocoop_hf/"
    return {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "commit": commit or None,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        # Other processes slow small operators more than large ones: on a shared machine, read ratios with this.
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "memory": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak resident set rise (VmHWM)",
        "weights": "random (no pretrained CLIP): speed and agreement only, no accuracy",
    }


COLUMNS = {  # table header: row field, format
    "model": ("model", ""), "method": ("method", ""), "classes": ("classes", ""), "batch": ("batch", ""),
    "ref b": ("ref_batch", ""), "dtype": ("dtype", ""), "CLIP w": ("clip_weights", ""), "mode": ("mode", ""),
    "ckpt": ("checkpointing", ""), "ref img/s": ("ref_img_s", ".2f"), "ours img/s": ("ours_img_s", ".2f"),
    "ratio": ("ratio", ".1f"), "ref MiB": ("ref_peak_mib", ".0f"), "ours MiB": ("ours_peak_mib", ".0f"),
    "rel diff": ("max_rel_diff", ".1e"), "grad diff": ("grad_rel_diff", ".1e"),
    "ours vs fp32": ("ours_err_vs_fp32", ".1e"), "ref vs fp32": ("ref_err_vs_fp32", ".1e"), "pass": ("pass", ""),
}  # fmt: skip


def format_table(rows: list[dict]) -> str:
    """The rows as a Markdown table, then their notes."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = ("-" if row[key] is None else format(row[key], spec) for key, spec in COLUMNS.values())
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        f"- {r['model']}/{r['method']}/{r['classes']}/{r['dtype']}/{r['mode']}: {r['note']}" for r in rows if r["note"]
    ]
    return "\n".join(lines + notes)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a ready grid (default: gpu on CUDA, else cpu)")
    parser.add_argument("--models", nargs="+", choices=["tiny", "mid", "vit-b16"], help="grid: replaces the preset")
    parser.add_argument("--classes", nargs="+", type=int, help="grid: number of ImageNet class names")
    parser.add_argument("--batch", nargs="+", type=int, help="grid: our batch sizes")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), help="grid: fp32, bf16, fp16 (autocast)")
    parser.add_argument("--modes", nargs="+", choices=MODES, help="grid: eval and/or train")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), help="grid: cocoop and/or CoOp-family rows")
    parser.add_argument("--ref-batch", type=int, help="the reference's batch (<= ours), every row")
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing on ours, every row")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per path; the median is reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per path (the agreement step counts)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, help="torch.set_num_threads; default: 1 for --preset cpu, else torch's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument("--compile", action="store_true", help="ours with model.compile_text_path() (torch.compile)")
    parser.add_argument(
        "--length-buckets",
        nargs="+",
        type=int,
        help="with --compile: fixed suffix-length buckets (compile_text_path(length_buckets=...)), e.g. 8 16 32",
    )
    parser.add_argument(
        "--half-clip", action="store_true", help="grid: ours with CLIP's weights in the row's dtype (bf16/fp16 rows)"
    )
    args = parser.parse_args(argv)
    for name in ("repeats", "ref_batch", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}.")
    if args.warmup < 0 or any(v < 1 for v in (args.classes or []) + (args.batch or [])):
        parser.error("--warmup must be >= 0 and --classes / --batch values >= 1.")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this torch build sees no CUDA device.")
    grid = (args.models, args.classes, args.batch, args.dtypes, args.modes)
    if args.preset and any(value is not None for value in (*grid, args.methods)):
        parser.error("give either --preset or grid flags (--models/--classes/--batch/--dtypes/--modes/--methods).")
    if any(value is not None for value in (*grid, args.methods)):
        args.preset = "custom"
        defaults = (["tiny"], [10], [8], ["fp32"], MODES)
        grid = [value or default for value, default in zip(grid, defaults, strict=True)]
        specs = [spec for method in args.methods or ["cocoop"] for spec in _rows(*grid, method=method)]
    else:
        args.preset = args.preset or ("gpu" if args.device == "cuda" else "cpu")
        specs = PRESETS[args.preset]
    if args.length_buckets is not None and not args.compile:
        parser.error("--length-buckets shape the compiled text path: pass --compile too.")
    if args.half_clip and args.preset != "custom":
        parser.error("--half-clip is a grid flag: the presets name their half-weight rows themselves.")
    if args.half_clip and not any(s.dtype != "fp32" for s in specs):
        parser.error("--half-clip casts CLIP to the row's half dtype: give --dtypes bf16 or fp16.")
    if args.half_clip:
        specs = [replace(s, clip_weights="half") if s.dtype != "fp32" else s for s in specs]
    overrides = {"ref_batch": args.ref_batch} if args.ref_batch else {}
    return args, [replace(s, **overrides, checkpointing=s.checkpointing or args.checkpointing) for s in specs]


def main(argv=None) -> int:
    args, specs = parse_args(argv)
    device = torch.device(args.device)
    if args.threads is None and args.preset == "cpu":
        # On a shared 2-core machine a 2-thread run slowed 10-50x whenever another process took a core; 1 is steady.
        args.threads = 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        # fp32 rows mean IEEE fp32: TF32 convolutions would make the patch embedding of two batch sizes differ by
        # ~1e-3 and fail the 1e-5 check for a reason that is not ours. (The legacy flags: after the newer
        # `fp32_precision` setters, reading `cudnn.allow_tf32` raises in torch 2.14.)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    env = {**environment(device), "ours_compiled": args.compile, "length_buckets": args.length_buckets}
    print(f"# preset {args.preset}: " + "; ".join(f"{k} {v}" for k, v in env.items()))
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_DIR)
    rows, model, built = [], None, None

    def model_key(spec):  # a class-specific context is built for its class set
        return spec.model, spec.method, spec.classes if METHODS[spec.method].get("class_specific_context") else 0

    for index, spec in enumerate(sorted(specs, key=model_key)):  # each model built once
        print(f"# row {index + 1}/{len(specs)}: {spec}", file=sys.stderr, flush=True)
        if model_key(spec) != built:
            model = None  # the last model goes before the next is built
            _free(None, device)
            model = build_model(spec.model, device, args.seed, spec.method, load_class_names(spec.classes), tokenizer)
            built = model_key(spec)
            compile_ours(model, args)
        try:
            rows.append(run_row(model, spec, device, args, tokenizer))
        except torch.OutOfMemoryError as error:
            _free(model, device)
            rows.append({**blank_row(spec), "pass": "ERROR", "note": f"out of memory: {str(error).splitlines()[0]}"})
        if spec.checkpointing:
            model.activation_checkpointing_disable()
    return finish(rows, env, args, format_table(rows))


def finish(rows: list[dict], env: dict, args, table: str) -> int:
    """
    The end of a benchmark script (this one and bench_backbones.py): print the table and the load, write the JSON to
    `args.output`, exit status 1 when a row failed (its paths disagree) or could not run.
    """
    env["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(table)
    print(f"# load average (1, 5, 15 min) at start {env['load_average_at_start']}, end {env['load_average_at_end']}")
    failed = sum(r["pass"] in ("FAIL", "ERROR") for r in rows)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        payload = {"preset": args.preset, "environment": env, "rows": rows, "failed": failed}
        args.output.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"# wrote {args.output}")
    if failed:
        print(f"# {failed} row(s) FAIL/ERROR: the paths disagree or could not run", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
