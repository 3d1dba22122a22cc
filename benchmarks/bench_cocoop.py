"""
Throughput, peak memory and agreement of CoCoOpModel against the per-image reference, on the same random weights.

- reference: `tests/reference_cocoop.reference_logits`, the official code's way: a Python loop over images, every
  class prompt padded to the 77-token context, an explicit causal mask;
- ours: `CoCoOpModel(pixel_values=..., input_ids=..., eos_index=...)` as shipped.

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
from tests.reference_cocoop import reference_logits  # noqa: E402


TOKENIZER_DIR = REPO / "tests" / "fixtures" / "clip-tokenizer"
TINY_CLIP_DIR = REPO / "training" / "demo" / "tiny-clip"  # the tiny CLIP of the tests and the demo
VIT_B16_DIR = REPO / "tests" / "fixtures" / "clip-vit-base-patch16"  # config.json of openai/clip-vit-base-patch16
CLASS_NAMES_FILE = REPO / "benchmarks" / "imagenet_classnames.json"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("eval", "train")

# Agreement, relative to the largest reference value. fp32: logits within 1e-5, prompt-learner gradients of the first
# training step within 1e-4 (they sum over every class and every text layer). Half precision (autocast): both paths
# round, differently (op order, unpadded shapes), so a fixed bound on ours vs ref is loose or flaky (2.6e-2 seen at
# the ViT-B/16 shape in bf16 on CPU). Instead ours' error against the fp32 reference logits may be at most twice the
# reference's own error at that dtype, or HALF_FLOOR; half-precision gradients only have to miss no path (a gradient
# that does not flow gives 1.0): the fp32 rows are the tight check of the backward pass.
LOGIT_TOL_FP32 = 1e-5
GRAD_TOL = {"fp32": 1e-4, "bf16": 0.5, "fp16": 0.5}
HALF_FLOOR = {"bf16": 1e-2, "fp16": 2e-3}


def tolerance_rule(dtype: str) -> str:
    if dtype == "fp32":
        return f"logits {LOGIT_TOL_FP32:g} x max|ref|, grads {GRAD_TOL['fp32']:g} x max|grad ref|"
    return f"logit error vs fp32 ref <= max(2 x ref's, {HALF_FLOOR[dtype]:g}); grads {GRAD_TOL[dtype]:g} x max|ref|"


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


def build_model(name: str, device: torch.device, seed: int) -> CoCoOpModel:
    """
    CoCoOp on a random CLIP of shape `name`, with a random context (N(0, 0.02), the official random init) and
    meta-net (PyTorch's Linear init), so that every class prompt and every image's bias differ: a path that dropped
    the bias or mixed up classes would not agree with the reference.
    """
    torch.manual_seed(seed)
    with torch.device(device):
        model = CoCoOpModel(CoCoOpConfig(clip_config=clip_config_for(name), ctx_init="a photo of a"))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        model.prompt_learner.ctx.copy_(torch.randn(model.prompt_learner.ctx.shape, generator=generator) * 0.02)
        for linear in (m for m in model.prompt_learner.meta_net.modules() if isinstance(m, torch.nn.Linear)):
            for tensor in (linear.weight, linear.bias):
                tensor.copy_((torch.rand(tensor.shape, generator=generator) * 2 - 1) * linear.in_features**-0.5)
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
    ],
    # One H100 (80 GB), under 7 minutes. Reference batches where its padded activations fit (its bf16 training step
    # at 1000 classes measured 16 GB per image).
    "gpu": [
        RowSpec("vit-b16", n, batch, dtype, mode, ref_batch=ref_b, checkpointing=(n, mode) == (1000, "train"))
        for dtype in ("bf16", "fp16")
        for n, batch, mode, ref_b in ((50, 64, "eval", 32), (50, 32, "train", 16), (1000, 64, "eval", 8),
                                            (1000, 32, "train", 1))
    ] + [
        RowSpec("vit-b16", 100, 32, "fp32", "eval", ref_batch=16),
        RowSpec("vit-b16", 100, 32, "fp32", "train", ref_batch=4),
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


def make_step(model, path: str, spec: RowSpec, prompts, pixel_values, labels):
    """
    One step of one path on a fixed batch: evaluation (logits under no_grad) or training (forward, fp32
    cross-entropy, backward and, unless `update=False`, an SGD step with the official recipe; no GradScaler, which
    does not change one step's time).
    """
    optimizer = torch.optim.SGD(model.prompt_learner.parameters(), lr=0.002, momentum=0.9, weight_decay=5e-4)
    dtype = DTYPES[spec.dtype]

    def logits():
        with torch.autocast(pixel_values.device.type, dtype=dtype, enabled=dtype != torch.float32):
            if path == "ours":
                return model(pixel_values=pixel_values, **prompts).logits
            return reference_logits(model, prompts["input_ids"], prompts["eos_index"], pixel_values=pixel_values)

    def step(update: bool = True):
        if spec.mode == "eval":
            with torch.no_grad():
                return logits()
        optimizer.zero_grad(set_to_none=True)
        out = logits()
        F.cross_entropy(out.float(), labels).backward()
        if update:
            optimizer.step()
        return out.detach()

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


def run_row(model, spec: RowSpec, device, args, tokenizer) -> dict:
    row = {**blank_row(spec), "tolerance": tolerance_rule(spec.dtype)}
    rb = row["ref_batch"]
    if spec.dtype == "fp16" and device.type == "cpu":
        return {**row, "pass": "SKIP", "note": "fp16 autocast is for CUDA; not run on CPU"}
    prompts = model.class_prompts(load_class_names(spec.classes), tokenizer=tokenizer).to(device)
    model.train(spec.mode == "train")
    if spec.checkpointing:
        model.activation_checkpointing_enable()
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

    ours = make_step(model, "ours", spec, prompts, pixels, labels)
    ours_small = make_step(model, "ours", spec, prompts, pixels[:rb], labels[:rb])
    ref = make_step(model, "ref", spec, prompts, pixels[:rb], labels[:rb])

    # Agreement: the reference on the first rb images against ours on the same images, and against the first rb rows
    # of ours at its own batch (other chunking). Each path's first step at its batch also gives its peak memory.
    try:
        reset()
        with PeakMemory(device) as memory:
            ref_out = ref(update=False)
        row["ref_peak_mib"], ref_grads, truth = memory.peak_mib, grads(), None
        if spec.dtype != "fp32":  # the yardstick of both half-precision paths: the reference in fp32
            with torch.no_grad():
                truth = reference_logits(model, prompts["input_ids"], prompts["eos_index"], pixel_values=pixels[:rb])
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
            passed = row["ours_err_vs_fp32"] <= max(2 * row["ref_err_vs_fp32"], HALF_FLOOR[spec.dtype])
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
    "model": ("model", ""), "classes": ("classes", ""), "batch": ("batch", ""), "ref b": ("ref_batch", ""),
    "dtype": ("dtype", ""), "mode": ("mode", ""), "ckpt": ("checkpointing", ""), "ref img/s": ("ref_img_s", ".2f"),
    "ours img/s": ("ours_img_s", ".2f"), "ratio": ("ratio", ".1f"), "ref MiB": ("ref_peak_mib", ".0f"),
    "ours MiB": ("ours_peak_mib", ".0f"), "rel diff": ("max_rel_diff", ".1e"), "grad diff": ("grad_rel_diff", ".1e"),
    "ours vs fp32": ("ours_err_vs_fp32", ".1e"), "ref vs fp32": ("ref_err_vs_fp32", ".1e"), "pass": ("pass", ""),
}  # fmt: skip


def format_table(rows: list[dict]) -> str:
    """The rows as a Markdown table, then their notes."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = ("-" if row[key] is None else format(row[key], spec) for key, spec in COLUMNS.values())
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {r['model']}/{r['classes']}/{r['dtype']}/{r['mode']}: {r['note']}" for r in rows if r["note"]]
    return "\n".join(lines + notes)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a ready grid (default: gpu on CUDA, else cpu)")
    parser.add_argument("--models", nargs="+", choices=["tiny", "mid", "vit-b16"], help="grid: replaces the preset")
    parser.add_argument("--classes", nargs="+", type=int, help="grid: number of ImageNet class names")
    parser.add_argument("--batch", nargs="+", type=int, help="grid: our batch sizes")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), help="grid: fp32, bf16, fp16 (autocast)")
    parser.add_argument("--modes", nargs="+", choices=MODES, help="grid: eval and/or train")
    parser.add_argument("--ref-batch", type=int, help="the reference's batch (<= ours), every row")
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing on ours, every row")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per path; the median is reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per path (the agreement step counts)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, help="torch.set_num_threads; default: 1 for --preset cpu, else torch's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument("--compile", action="store_true", help="ours with model.compile_text_path() (torch.compile)")
    args = parser.parse_args(argv)
    for name in ("repeats", "ref_batch", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}.")
    if args.warmup < 0 or any(v < 1 for v in (args.classes or []) + (args.batch or [])):
        parser.error("--warmup must be >= 0 and --classes / --batch values >= 1.")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this torch build sees no CUDA device.")
    grid = (args.models, args.classes, args.batch, args.dtypes, args.modes)
    if args.preset and any(value is not None for value in grid):
        parser.error("give either --preset or grid flags (--models/--classes/--batch/--dtypes/--modes).")
    if any(value is not None for value in grid):
        args.preset = "custom"
        defaults = (["tiny"], [10], [8], ["fp32"], MODES)
        specs = _rows(*(value or default for value, default in zip(grid, defaults, strict=True)))
    else:
        args.preset = args.preset or ("gpu" if args.device == "cuda" else "cpu")
        specs = PRESETS[args.preset]
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
    env = {**environment(device), "ours_compiled": args.compile}
    print(f"# preset {args.preset}: " + "; ".join(f"{k} {v}" for k, v in env.items()))
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_DIR)
    rows, model = [], None
    for index, spec in enumerate(sorted(specs, key=lambda s: s.model)):  # each model built once
        print(f"# row {index + 1}/{len(specs)}: {spec}", file=sys.stderr, flush=True)
        if index == 0 or spec.model != rows[-1]["model"]:
            model = None  # the last model goes before the next is built
            _free(None, device)
            model = build_model(spec.model, device, args.seed)
            if args.compile:  # the reference does not use the compiled function: only ours changes
                model.compile_text_path()
        try:
            rows.append(run_row(model, spec, device, args, tokenizer))
        except torch.OutOfMemoryError as error:
            _free(model, device)
            rows.append({**blank_row(spec), "pass": "ERROR", "note": f"out of memory: {str(error).splitlines()[0]}"})
        if spec.checkpointing:
            model.activation_checkpointing_disable()
    env["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(format_table(rows))
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
