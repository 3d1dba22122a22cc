"""
Throughput and peak memory of CoCoOpModel against the per-image reference, on the same random weights.

Two paths, one process, one model object:
- reference: `tests/reference_cocoop.reference_logits`, the official code's way (a Python loop over images, every
  class prompt padded to the 77-token context, explicit causal mask);
- ours: `CoCoOpModel(pixel_values=...)` as shipped (prefix key/value cache, length buckets, class chunks).

Each row times evaluation (no grad) or one training step (forward, cross-entropy, backward, SGD step on the prompt
learner; the prompt learner is reset to the same tensors before each path), checks that the two paths give the same
logits (and, for training, the same gradients), and reports images/s, the ratio and peak memory. All weights are
random: no pretrained CLIP exists here, and none is needed to time the math or compare the two paths.

    python benchmarks/bench_cocoop.py --preset cpu --output cpu.json     # this 2-core CPU, a few minutes
    python benchmarks/bench_cocoop.py --preset gpu --output gpu.json     # one H100/H200 (see run_gpu.sh)
    python benchmarks/bench_cocoop.py --models mid --classes 100 --batch 8 --ref-batch 4 --modes eval train

Exit status: 0 when every row that ran both paths agrees, 1 when any row disagrees (FAIL) or could not run ours.
"""

import argparse
import contextlib
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
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from transformers import CLIPConfig, CLIPTokenizer


REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the reference lives in tests/, the package may not be installed there

from cocoop_hf import CoCoOpConfig, CoCoOpModel  # noqa: E402
from tests.reference_cocoop import reference_logits  # noqa: E402


TOKENIZER_DIR = REPO / "tests" / "fixtures" / "clip-tokenizer"
CLASS_NAMES_FILE = Path(__file__).resolve().parent / "imagenet_classnames.json"
VIT_B16_CONFIGS = (
    REPO.parent / "shared" / "assets" / "clip-vit-base-patch16" / "config.json",
    Path(__file__).resolve().parent / "clip_vit_b16_config.json",  # a copy of the file above, for machines without it
)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("eval", "train")
MiB = 2**20

# Agreement rules. fp32: max |ours - ref| / max |ref| <= 1e-5 on the logits (the bound) and <= 1e-4 on the
# prompt-learner gradients of the first training step (they sum over every class and flow back through every text
# layer). Half precision (autocast): both paths round, differently (other op order, unpadded shapes), so a fixed
# bound on ours-vs-ref is either loose or flaky (measured on CPU, ViT-B/16 shape, bf16: 2.6e-2). The rule instead:
# ours' error against the fp32 reference logits may be at most twice the reference's own error at that dtype, or
# HALF_FLOOR, whichever is larger. Half-precision gradients only have to miss no path (relative difference <= 0.5;
# a gradient that does not flow gives 1.0); the fp32 rows are the tight check of the backward pass.
LOGIT_TOL_FP32 = 1e-5
GRAD_TOL = {"fp32": 1e-4, "bf16": 0.5, "fp16": 0.5}
HALF_FLOOR = {"bf16": 1e-2, "fp16": 2e-3}


def tolerance_rule(dtype: str) -> str:
    if dtype == "fp32":
        return f"logits {LOGIT_TOL_FP32:g} x max|ref|, grads {GRAD_TOL['fp32']:g} x max|grad ref|"
    return (
        f"logit error vs fp32 ref <= max(2 x ref {dtype} error, {HALF_FLOOR[dtype]:g}); "
        f"grads {GRAD_TOL[dtype]:g} x max|grad ref|"
    )


# Issue 5 targets: label, device type, the row they read (fields that must match), what they read, bound.
TARGETS = (
    ("CPU eval >= 10x at mid/fp32/100 classes", "cpu", dict(model="mid", dtype="fp32", classes=100, mode="eval"),
     "ratio", 10.0),
    ("CPU train >= 8x at mid/fp32/100 classes", "cpu", dict(model="mid", dtype="fp32", classes=100, mode="train"),
     "ratio", 8.0),
    ("GPU eval >= 25x at vit-b16/bf16/1000", "cuda", dict(model="vit-b16", dtype="bf16", classes=1000, mode="eval"),
     "ratio", 25.0),
    ("GPU train >= 15x at vit-b16/bf16/1000", "cuda",
     dict(model="vit-b16", dtype="bf16", classes=1000, mode="train"), "ratio", 15.0),
    ("GPU eval >= 20x at vit-b16/bf16/50", "cuda", dict(model="vit-b16", dtype="bf16", classes=50, mode="eval"),
     "ratio", 20.0),
    ("GPU train batch 32 at vit-b16/bf16/1000 <= 40 GiB", "cuda",
     dict(model="vit-b16", dtype="bf16", classes=1000, mode="train", batch=32), "ours_peak_mib", 40 * 1024.0),
)  # fmt: skip


# ---------------------------------------------------------------------------------------------- models and classes


def _text_config(hidden, layers, heads):
    return dict(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_act="quick_gelu",
    )


def _vision_config(hidden, layers, heads, image_size, patch_size):
    return dict(
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch_size,
        hidden_act="quick_gelu",
    )


def clip_config_for(name: str) -> tuple[CLIPConfig, str]:
    """The CLIP shape of a benchmark model and where it comes from."""
    if name == "tiny":  # the tests' tiny CLIP (tests/conftest.py), real vocabulary and 77-token context
        text = dict(_text_config(64, 2, 4), intermediate_size=128)
        vision = dict(_vision_config(64, 2, 4, 32, 8), intermediate_size=128)
        return CLIPConfig(text_config=text, vision_config=vision, projection_dim=48), "built in (tests' tiny CLIP)"
    if name == "mid":
        # A scaled-down ViT-B/16 CLIP: text tower at half width and half depth (256 x 6, 8 heads of 32), a small
        # ViT (384 x 6, 6 heads of 64) on 96 px images in 16 px patches (37 tokens); 4x MLPs as in CLIP.
        text = _text_config(256, 6, 8)
        vision = _vision_config(384, 6, 6, 96, 16)
        return CLIPConfig(text_config=text, vision_config=vision, projection_dim=256), "built in (mid)"
    if name == "vit-b16":
        for path in VIT_B16_CONFIGS:
            if path.is_file():
                with open(path, encoding="utf-8") as handle:
                    return CLIPConfig.from_dict(json.load(handle)), str(path)
        raise FileNotFoundError(f"no ViT-B/16 CLIP config.json at any of {[str(p) for p in VIT_B16_CONFIGS]}.")
    raise ValueError(f"unknown model {name!r}: choose from tiny, mid, vit-b16.")


def describe_shape(config: CLIPConfig) -> str:
    text, vision = config.text_config, config.vision_config
    tokens = (vision.image_size // vision.patch_size) ** 2 + 1
    return (
        f"text {text.hidden_size}w x {text.num_hidden_layers}L x {text.num_attention_heads}h "
        f"(mlp {text.intermediate_size}); vision {vision.hidden_size}w x {vision.num_hidden_layers}L x "
        f"{vision.num_attention_heads}h, {vision.image_size}px/{vision.patch_size} ({tokens} tokens); "
        f"proj {config.projection_dim}"
    )


def load_class_names(count: int) -> list[str]:
    """`count` of CLIP's clean ImageNet class names, evenly spaced over the 1000 so prompt lengths are typical."""
    with open(CLASS_NAMES_FILE, encoding="utf-8") as handle:
        names = json.load(handle)
    if not 1 <= count <= len(names):
        raise ValueError(f"--classes must lie in [1, {len(names)}] (ImageNet class names), got {count}.")
    if count == 1:
        return names[:1]
    indices = [round(i * (len(names) - 1) / (count - 1)) for i in range(count)]
    return [names[i] for i in indices]


def build_model(name: str, device: torch.device, seed: int = 0) -> tuple[CoCoOpModel, dict]:
    """
    A CoCoOp model on a random CLIP of shape `name`. The context and the meta-net are drawn afresh (context from
    N(0, 0.02) as the official random init, meta-net with PyTorch's Linear init) so that every class prompt and
    every image's bias differ: a path that dropped the bias or mixed up classes would not agree with the reference.
    """
    clip_config, source = clip_config_for(name)
    torch.manual_seed(seed)
    with torch.device(device):
        model = CoCoOpModel(CoCoOpConfig(clip_config=clip_config, ctx_init="a photo of a"))
    generator = torch.Generator(device="cpu").manual_seed(seed + 1)
    learner = model.prompt_learner
    with torch.no_grad():
        learner.ctx.copy_(torch.randn(learner.ctx.shape, generator=generator) * 0.02)
        for module in learner.meta_net.children():
            if isinstance(module, torch.nn.Linear):
                bound = 1 / module.in_features**0.5
                module.weight.copy_((torch.rand(module.weight.shape, generator=generator) * 2 - 1) * bound)
                module.bias.copy_((torch.rand(module.bias.shape, generator=generator) * 2 - 1) * bound)
    info = {"shape": describe_shape(clip_config), "config_source": source}
    return model, info


# ---------------------------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class RowSpec:
    model: str
    classes: int
    batch: int
    dtype: str
    mode: str
    ref_batch: int | None = None  # the reference's batch; None means the same as ours
    checkpointing: bool = False  # gradient checkpointing on ours (train rows)
    repeats: int | None = None  # None: --repeats
    warmup: int | None = None  # None: --warmup

    @property
    def reference_batch(self) -> int:
        return min(self.batch, self.ref_batch or self.batch)


def _rows(models, classes, batches, dtypes, modes, **fields) -> list[RowSpec]:
    return [
        RowSpec(model=m, classes=c, batch=b, dtype=d, mode=mode, **fields)
        for m, c, b, d, mode in itertools.product(models, classes, batches, dtypes, modes)
    ]


PRESETS = {
    # Seconds: the tiny model, a handful of classes.
    "smoke": _rows(["tiny"], [10], [4], ["fp32"], MODES, repeats=1, warmup=1),
    # This 2-core CPU, a few minutes. The mid/fp32/100 rows are the CPU target; the reference runs a smaller
    # batch where its activations (classes x 77 tokens per image) would otherwise take GBs.
    "cpu": [
        *_rows(["tiny"], [10, 100], [8], ["fp32"], MODES),
        *_rows(["tiny"], [100], [8], ["bf16"], MODES),
        *_rows(["mid"], [10], [8], ["fp32"], MODES),
        RowSpec("mid", 100, 8, "fp32", "eval", ref_batch=4),
        RowSpec("mid", 100, 8, "fp32", "train", ref_batch=2),
        RowSpec("mid", 1000, 2, "fp32", "eval", ref_batch=1, repeats=1, warmup=1),
    ],
    # One H100 (80 GB), under 7 minutes with the reference rows: vit-b16 in bf16 and fp16 at 50 and 1000 classes,
    # fp32 at 100. Reference batches stay where its padded activations fit (about 32 GB per image for a bf16
    # training step at 1000 classes, see estimate_reference_bytes).
    "gpu": [
        *[
            row
            for dtype in ("bf16", "fp16")
            for row in (
                RowSpec("vit-b16", 50, 64, dtype, "eval", ref_batch=32),
                RowSpec("vit-b16", 50, 32, dtype, "train", ref_batch=16),
                RowSpec("vit-b16", 1000, 64, dtype, "eval", ref_batch=8),
                RowSpec("vit-b16", 1000, 32, dtype, "train", ref_batch=1, checkpointing=True),
            )
        ],
        RowSpec("vit-b16", 100, 32, "fp32", "eval", ref_batch=16),
        RowSpec("vit-b16", 100, 32, "fp32", "train", ref_batch=4),
    ],
}


# ---------------------------------------------------------------------------------------------- measurement


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _release_cpu_memory() -> None:
    """Give freed heap pages back to the OS, so that an RSS rise measures this path and not reuse of the last."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """
    Peak memory of the code inside the `with`, in MiB.

    CUDA: `torch.cuda.max_memory_allocated()` after a reset, i.e. everything allocated on the device, weights
    included. CPU: torch has no allocator statistics there; the proxy is the rise of the process's resident set
    (RSS, /proc/self/statm) above its value at entry, sampled every 2 ms by a thread, after `malloc_trim(0)`.
    It misses spikes shorter than a sample and counts allocator slack, so treat it as +-10%.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mib = None
        self._stop = threading.Event()
        self._thread = None
        self._start = self._peak = 0

    def __enter__(self):
        if self.device.type == "cuda":
            gc.collect()
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _release_cpu_memory()
            start = _rss_bytes()
            if start is not None:
                self._start = self._peak = start
                self._thread = threading.Thread(target=self._sample, daemon=True)
                self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, _rss_bytes() or 0)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / MiB
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes() or 0)
            self.peak_mib = (self._peak - self._start) / MiB
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, dtype: str):
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


class _Runner:
    """One path (ours or the reference) as a callable step on a fixed batch."""

    def __init__(self, model, path: str, mode: str, dtype: str, pixel_values, labels, initial_state):
        self.model, self.path, self.mode, self.dtype = model, path, mode, dtype
        self.pixel_values, self.labels = pixel_values, labels
        self.initial_state = initial_state
        self.optimizer = None

    def reset(self):
        """Same prompt-learner tensors for both paths; a fresh optimizer (the official SGD recipe)."""
        self.model.prompt_learner.load_state_dict(self.initial_state)
        self.model.zero_grad(set_to_none=True)
        if self.mode == "train":
            self.optimizer = torch.optim.SGD(
                self.model.prompt_learner.parameters(), lr=0.002, momentum=0.9, weight_decay=5e-4
            )

    def logits(self):
        device = self.pixel_values.device
        with _autocast(device, self.dtype):
            if self.path == "ours":
                return self.model(pixel_values=self.pixel_values).logits
            return reference_logits(self.model, pixel_values=self.pixel_values)

    def __call__(self, step: bool = True):
        """Evaluation: logits under no_grad. Training: forward, loss, backward and (if `step`) an SGD step."""
        if self.mode == "eval":
            with torch.no_grad():
                return self.logits()
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.logits()
        # fp32 loss, as CoCoOpModel computes it; no GradScaler: one step's timing does not depend on loss scaling.
        F.cross_entropy(logits.float(), self.labels).backward()
        if step:
            self.optimizer.step()
        return logits.detach()

    def gradients(self) -> dict:
        return {n: p.grad.detach().float().clone() for n, p in self.model.prompt_learner.named_parameters()}


def _relative_diff(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    ours, ref = ours.detach().float(), ref.detach().float()
    if ours.shape != ref.shape:
        raise ValueError(f"ours gave shape {tuple(ours.shape)}, the reference {tuple(ref.shape)}.")
    abs_diff = (ours - ref).abs().max().item()
    return abs_diff, abs_diff / max(ref.abs().max().item(), 1e-30)


def _timed(runner: _Runner, device) -> float:
    _sync(device)
    start = time.perf_counter()
    runner()
    _sync(device)
    return time.perf_counter() - start


def _time_interleaved(runners: list[_Runner], repeats: int, device) -> list[list[float]]:
    """
    Seconds per step of each runner, their steps interleaved (A B, B A, A B, ...): on a shared machine, load from
    other processes then falls on both paths alike instead of on whichever ran during a busy spell.
    """
    for runner in runners:
        runner.reset()  # training steps of both paths move the same weights; values do not change the time
    times = [[] for _ in runners]
    for i in range(repeats):
        order = range(len(runners)) if i % 2 == 0 else reversed(range(len(runners)))
        for j in order:
            times[j].append(_timed(runners[j], device))
    return times


def _available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def estimate_reference_bytes(clip_config: CLIPConfig, classes: int, batch: int, mode: str, dtype: str) -> int:
    """
    Rough activation memory of the reference: classes x 77 tokens per image through the text tower. Evaluation
    holds one layer of one image; training keeps every layer of every image of the batch for backward. Used only to
    skip a reference run that would obviously not fit; a real out-of-memory error is caught as well.
    """
    text = clip_config.text_config
    width, inner, heads, context = (
        text.hidden_size,
        text.intermediate_size,
        text.num_attention_heads,
        text.max_position_embeddings,
    )
    tokens = classes * context
    if mode == "eval":  # fp32 residual stream, a few (tokens, width) tensors, the MLP and the attention scores live
        return tokens * (8 * width + 2 * inner + heads * context) * 4
    # Saved for backward per token and layer, in bytes: fp32 residual / layer norms, q k v, attention output, MLP
    # input and output and quick_gelu's operands (about 68 x width under autocast, 112 x width in fp32) + scores.
    per_token = (112 * width + 4 * heads * context) if dtype == "fp32" else (68 * width + 2 * heads * context)
    return batch * text.num_hidden_layers * tokens * per_token


# ---------------------------------------------------------------------------------------------- one row


def run_row(model, info: dict, spec: RowSpec, device: torch.device, args, tokenizer) -> dict:
    row = {
        **asdict(spec),
        "ref_batch": spec.reference_batch,
        "shape": info["shape"],
        "ref_img_s": None,
        "ours_img_s": None,
        "ratio": None,
        "ref_peak_mib": None,
        "ours_peak_mib": None,
        "max_abs_diff": None,
        "max_rel_diff": None,
        "grad_rel_diff": None,
        "ours_err_vs_fp32": None,  # half precision: max |logits - fp32 reference| / max |fp32 reference|
        "ref_err_vs_fp32": None,
        "tolerance": tolerance_rule(spec.dtype),
        "pass": None,
        "note": "",
    }
    if spec.dtype == "fp16" and device.type == "cpu":
        row.update({"pass": "SKIP", "note": "fp16 autocast is for CUDA; not run on CPU"})
        return row
    if spec.dtype not in DTYPES or spec.mode not in MODES:
        raise ValueError(f"row {spec}: dtype must be one of {list(DTYPES)} and mode one of {list(MODES)}.")
    repeats = spec.repeats or args.repeats
    warmup = spec.warmup if spec.warmup is not None else args.warmup

    model.set_class_names(load_class_names(spec.classes), tokenizer=tokenizer)
    model.train(spec.mode == "train")
    _set_checkpointing(model, spec.checkpointing)
    generator = torch.Generator().manual_seed(args.seed)
    vision = model.config.clip_config.vision_config
    pixel_values = torch.randn(spec.batch, 3, vision.image_size, vision.image_size, generator=generator).to(device)
    labels = torch.randint(0, spec.classes, (spec.batch,), generator=generator).to(device)
    initial = {k: v.detach().clone() for k, v in model.prompt_learner.state_dict().items()}
    rb = spec.reference_batch
    ours = _Runner(model, "ours", spec.mode, spec.dtype, pixel_values, labels, initial)
    ours_check = _Runner(model, "ours", spec.mode, spec.dtype, pixel_values[:rb], labels[:rb], initial)
    ref = _Runner(model, "ref", spec.mode, spec.dtype, pixel_values[:rb], labels[:rb], initial)

    # Reference first: its first call is the agreement run, a warm-up and the measure of its peak memory.
    ref_logits = ref_grads = truth = None
    estimate = estimate_reference_bytes(model.config.clip_config, spec.classes, rb, spec.mode, spec.dtype)
    available = _available_bytes(device)
    if args.skip_reference:
        row["note"] = "reference not run (--skip-reference)"
    elif available is not None and estimate > 0.9 * available:
        row["note"] = (
            f"reference skipped: needs ~{estimate / 2**30:.1f} GiB at ref batch {rb}, {available / 2**30:.1f} GiB free"
        )
    else:
        try:
            ref.reset()
            with PeakMemory(device) as memory:
                ref_logits = ref(step=False)
            row["ref_peak_mib"] = memory.peak_mib
            ref_grads = ref.gradients() if spec.mode == "train" else None
            if spec.dtype != "fp32":  # the yardstick for both half-precision paths: the reference in fp32
                with torch.no_grad():
                    truth = reference_logits(model, pixel_values=pixel_values[:rb])
            _sync(device)
        except torch.OutOfMemoryError:
            ref_logits = ref_grads = truth = None
            row["note"] = f"reference out of memory at ref batch {rb}"
            _free(model, device)

    # Ours on the reference's images (logits and, for training, the first step's gradients), then on its own batch
    # (that first step is a warm-up and the measure of its peak memory).
    try:
        ours_check.reset()
        ours_logits = ours_check(step=False)
        ours_grads = ours_check.gradients() if spec.mode == "train" else None
        ours.reset()
        with PeakMemory(device) as memory:
            ours_batch_logits = ours(step=False)[:rb]  # from the same weights as the reference's first step
            for _ in range(max(warmup - 1, 0)):
                ours()
        row["ours_peak_mib"] = memory.peak_mib
    except torch.OutOfMemoryError as error:
        row.update({"pass": "ERROR", "note": f"ours out of memory: {str(error).splitlines()[0]}"})
        _free(model, device)
        _set_checkpointing(model, False)
        return row

    if ref_logits is not None:
        abs_a, rel_a = _relative_diff(ours_logits, ref_logits)
        abs_b, rel_b = _relative_diff(ours_batch_logits, ref_logits)
        row["max_abs_diff"], row["max_rel_diff"] = max(abs_a, abs_b), max(rel_a, rel_b)
        if truth is None:
            passed = row["max_rel_diff"] <= LOGIT_TOL_FP32
        else:
            row["ref_err_vs_fp32"] = _relative_diff(ref_logits, truth)[1]
            row["ours_err_vs_fp32"] = max(_relative_diff(x, truth)[1] for x in (ours_logits, ours_batch_logits))
            passed = row["ours_err_vs_fp32"] <= max(2 * row["ref_err_vs_fp32"], HALF_FLOOR[spec.dtype])
        if ref_grads is not None:
            row["grad_rel_diff"] = max(_relative_diff(ours_grads[n], ref_grads[n])[1] for n in ref_grads)
            passed = passed and row["grad_rel_diff"] <= GRAD_TOL[spec.dtype]
        row["pass"] = "PASS" if passed else "FAIL"
    else:
        row["pass"] = "SKIP"

    ours_times = None
    if ref_logits is not None:
        try:
            ref.reset()
            for _ in range(max(warmup - 1, 0)):
                ref()
            ref_times, ours_times = _time_interleaved([ref, ours], repeats, device)
            row["ref_img_s"] = rb / statistics.median(ref_times)
            row["ref_times_s"] = [round(t, 6) for t in ref_times]
        except torch.OutOfMemoryError:
            row["note"] = f"reference out of memory while timing at ref batch {rb} (agreement was checked)"
            ours_times = None
            _free(model, device)
    if ours_times is None:
        (ours_times,) = _time_interleaved([ours], repeats, device)
    row["ours_img_s"] = spec.batch / statistics.median(ours_times)
    row["ours_times_s"] = [round(t, 6) for t in ours_times]
    if row["ref_img_s"] is not None:
        row["ratio"] = row["ours_img_s"] / row["ref_img_s"]
    if args.vision_time and spec.mode == "eval":
        row["ours_vision_share"] = _vision_share(
            model, pixel_values, spec, device, repeats, statistics.median(ours_times)
        )
    if args.profile:
        row["profile"] = profile_ours(ours, device)
    _set_checkpointing(model, False)
    return row


def _free(model, device) -> None:
    """After an out-of-memory error: drop gradients and cached blocks so the next run starts clean."""
    model.zero_grad(set_to_none=True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _set_checkpointing(model, enabled: bool) -> None:
    """Gradient checkpointing on or off through the public API (`activation_*` in transformers >= 5.24)."""
    if enabled == bool(model.gradient_checkpointing):
        return
    if enabled:
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    else:
        (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()
    if bool(model.gradient_checkpointing) != enabled:
        raise RuntimeError(
            f"checkpointing {'enable' if enabled else 'disable'} did not change model.gradient_checkpointing."
        )


def _vision_share(model, pixel_values, spec, device, repeats, ours_seconds) -> float:
    """Fraction of our evaluation time spent in the (frozen) image tower, which both paths run once per image."""
    times = []
    with torch.no_grad(), _autocast(device, spec.dtype):
        for _ in range(repeats + 1):
            _sync(device)
            start = time.perf_counter()
            model.get_image_features(pixel_values)
            _sync(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:]) / ours_seconds


def profile_ours(runner: _Runner, device) -> str:
    """torch.profiler's top operators of one step of ours (self time), as text."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    runner.reset()
    runner()
    _sync(device)
    with profile(activities=activities) as prof:
        runner()
        _sync(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=15)


# ---------------------------------------------------------------------------------------------- reporting


def environment(device: torch.device) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        with contextlib.suppress(OSError):
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if line.startswith("model name"):
                        name = line.split(":", 1)[1].strip()
                        break
        name = f"{name} ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})"
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "cocoop_hf"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        if commit and dirty:
            commit += " + uncommitted changes in cocoop_hf/"
    return {
        "device": name,
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "commit": commit or None,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        # Other processes on a shared machine slow small ops more than large ones: read ratios with this in mind.
        "load_average_at_start": _load_average(),
        "memory": (
            "torch.cuda.max_memory_allocated (weights included)"
            if device.type == "cuda"
            else "CPU proxy: peak RSS rise over the path's start, sampled every 2 ms after malloc_trim (+-10%)"
        ),
        "weights": "random (no pretrained CLIP): speed and agreement only, no accuracy",
        "fp32": "IEEE fp32 matmuls and convolutions (TF32 off)",
    }


def _load_average() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def _fmt(value, spec=".1f"):
    return "n/a" if value is None else format(value, spec)


def format_table(rows: list[dict]) -> str:
    header = (
        "model", "classes", "batch", "ref b", "dtype", "mode", "ckpt", "ref img/s", "ours img/s", "ratio",
        "ref MiB", "ours MiB", "rel diff", "grad diff", "vs fp32 ours/ref", "pass",
    )  # fmt: skip
    lines = [header]
    for r in rows:
        lines.append(
            (
                r["model"], str(r["classes"]), str(r["batch"]), str(r["ref_batch"]), r["dtype"], r["mode"],
                "on" if r["checkpointing"] else "-", _fmt(r["ref_img_s"], ".2f"), _fmt(r["ours_img_s"], ".2f"),
                _fmt(r["ratio"], ".1f") + ("x" if r["ratio"] is not None else ""), _fmt(r["ref_peak_mib"], ".0f"),
                _fmt(r["ours_peak_mib"], ".0f"), _fmt(r["max_rel_diff"], ".1e"), _fmt(r["grad_rel_diff"], ".1e"),
                "-" if r["ours_err_vs_fp32"] is None else f"{r['ours_err_vs_fp32']:.1e}/{r['ref_err_vs_fp32']:.1e}",
                r["pass"] or "n/a",
            )
        )  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [" | ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)) for line in lines]
    out.insert(1, "-+-".join("-" * w for w in widths))
    notes = [f"  {r['model']}/{r['classes']}/{r['dtype']}/{r['mode']}: {r['note']}" for r in rows if r["note"]]
    return "\n".join(out + (["notes:"] + notes if notes else []))


def evaluate_targets(rows: list[dict], device_type: str) -> list[dict]:
    """Met / not met / not measured per issue-5 target; a ratio of paths that disagree measures nothing."""
    results = []
    for label, target_device, match, field, bound in TARGETS:
        candidates = [r for r in rows if all(r[k] == v for k, v in match.items()) and r["pass"] != "FAIL"]
        value = candidates[0][field] if target_device == device_type and candidates else None
        memory = field == "ours_peak_mib"
        if value is None:
            status, shown = "not measured", None
        else:
            status = "met" if (value <= bound if memory else value >= bound) else "not met"
            shown = f"{value / 1024:.1f} GiB" if memory else f"{value:.1f}x"
        results.append({"target": label, "status": status, "value": shown})
    return results


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a ready grid (default: gpu on CUDA, else cpu)")
    parser.add_argument("--models", nargs="+", choices=["tiny", "mid", "vit-b16"], help="grid: replaces the preset")
    parser.add_argument("--classes", nargs="+", type=int, help="grid: number of ImageNet class names")
    parser.add_argument("--batch", nargs="+", type=int, help="grid: our batch sizes")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), help="grid: fp32, bf16, fp16 (autocast)")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), help="grid: eval and/or train")
    parser.add_argument("--ref-batch", type=int, help="the reference's batch (<= ours), for every row")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing on ours, every row")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per path; the median is reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per path (the agreement run counts)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads; default: 1 for --preset cpu, else torch's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument("--skip-reference", action="store_true", help="time ours only (no ratio, no check)")
    parser.add_argument(
        "--compile", action="store_true", help="ours with the opt-in model.compile_text_path() (torch.compile)"
    )
    parser.add_argument("--profile", action="store_true", help="add torch.profiler's top ops of ours per row")
    parser.add_argument("--vision-time", action="store_true", help="time our image tower alone (eval rows)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    for name in ("repeats", "ref_batch", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}.")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}.")
    for name in ("classes", "batch"):
        for value in getattr(args, name) or ():
            if value < 1:
                parser.error(f"--{name} values must be >= 1, got {value}.")
    return parser, args


def strict_fp32() -> None:
    """
    fp32 rows mean IEEE fp32 on CUDA too: cuDNN convolutions default to TF32 there, which makes the patch embedding
    of two batch sizes differ by ~1e-3 and would fail the 1e-5 check for a reason that is not ours.
    """
    # The legacy flags on purpose: after the newer `fp32_precision` setters, reading `cudnn.allow_tf32` (as other
    # code may) raises "mix of the legacy and new APIs" in torch 2.14.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r} is not a torch device (auto, cpu, cuda, cuda:N): {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: this torch build sees no CUDA device; use --device cpu.")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: only cpu and cuda are benchmarked.")
    return device


def build_specs(parser, args, device) -> tuple[str, list[RowSpec]]:
    grid = [args.models, args.classes, args.batch, args.dtypes, args.modes]
    if any(value is not None for value in grid):
        if args.preset:
            parser.error("give either --preset or grid flags (--models/--classes/--batch/--dtypes/--modes).")
        specs = _rows(
            args.models or ["tiny"],
            args.classes or [10],
            args.batch or [8],
            args.dtypes or ["fp32"],
            args.modes or list(MODES),
        )
        name = "custom"
    else:
        name = args.preset or ("gpu" if device.type == "cuda" else "cpu")
        specs = list(PRESETS[name])
    if args.ref_batch is not None:
        specs = [replace(s, ref_batch=args.ref_batch) for s in specs]
    if args.checkpointing:
        specs = [replace(s, checkpointing=True) for s in specs]
    return name, specs


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        parser.error(str(error))
    preset, specs = build_specs(parser, args, device)
    if args.threads is None and preset == "cpu":
        # On this shared 2-core machine a 2-thread run slows 10-50x whenever another process takes a core (seen:
        # tiny/100 eval from 0.035 s to 1.6-2.7 s per step), which turns ratios into noise; one thread is steady.
        args.threads = 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        strict_fp32()
    env = environment(device)
    env["ours_compiled"] = bool(args.compile)
    print(f"# CoCoOp benchmark, preset {preset}: {env['device']}; torch {env['torch']}, transformers "
          f"{env['transformers']}, {env['date']}; commit {env['commit']}")  # fmt: skip
    print(f"# weights: {env['weights']}; memory: {env['memory']}")
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_DIR)

    try:
        from tqdm.auto import tqdm
    except ImportError:  # a bare machine: no bar, same rows
        tqdm = None
    progress = None if (args.no_progress or tqdm is None) else tqdm(total=len(specs), desc="rows", file=sys.stderr)
    rows, models = [], {}
    for spec in sorted(specs, key=lambda s: s.model):  # build each model once
        if spec.model not in models:
            models.clear()
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            models[spec.model] = build_model(spec.model, device, seed=args.seed)
            if args.compile:  # the reference does not use the compiled function: only ours changes
                models[spec.model][0].compile_text_path()
            print(f"# model {spec.model}: {models[spec.model][1]['shape']} ({models[spec.model][1]['config_source']})")
        model, info = models[spec.model]
        if progress is not None:
            progress.set_postfix_str(f"{spec.model}/{spec.classes}/{spec.dtype}/{spec.mode}")
        rows.append(run_row(model, info, spec, device, args, tokenizer))
        if progress is not None:
            progress.update()
    if progress is not None:
        progress.close()

    env["load_average_at_end"] = _load_average()
    print(format_table(rows))
    print(
        f"# load average (1, 5, 15 min) at start {env['load_average_at_start']}, at end {env['load_average_at_end']}"
    )
    targets = evaluate_targets(rows, device.type)
    for target in targets:
        value = f" ({target['value']})" if target["value"] else ""
        print(f"target {target['target']}: {target['status']}{value}")
    for row in rows:
        if row.get("profile"):
            print(
                f"\n# profile of ours, {row['model']}/{row['classes']}/{row['dtype']}/{row['mode']}\n{row['profile']}"
            )
    failed = [r for r in rows if r["pass"] in ("FAIL", "ERROR")]
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        payload = {"preset": preset, "environment": env, "rows": rows, "targets": targets, "failed": len(failed)}
        args.output.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"# wrote {args.output}")
    if failed:
        print(f"# {len(failed)} row(s) FAIL/ERROR: the paths disagree or ours could not run", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
