"""
Where the time of CoCoOp's text path goes, and how far it is from the hardware.

For each class count: the text path alone (`model(image_embeds=..., **prompts)`: meta-net + text tower, no vision
tower) in evaluation or one training step; the floating-point work it executes, counted by torch's own
`torch.utils.flop_counter.FlopCounterMode` (matmuls and attention as launched, padding included), and the same count
for the per-image reference (every prompt padded to 77 tokens); its measured time and so its achieved TFLOP/s;
beside it the same device's dense GEMM TFLOP/s at text-tower shapes (tokens x width @ width x 4 width and back);
and a torch.profiler table of the top kernels with their share of device time (self CPU time on a CPU).

    python benchmarks/profile_cocoop.py --model tiny --classes 10 --device cpu            # seconds, checks the setup
    python benchmarks/profile_cocoop.py --model vit-b16 --classes 50 1000 --dtype bf16    # on a GPU

Weights are random: the work and the time do not depend on them.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


# The profiler's tracing library logs a harmless "gpuGetDeviceCount failed" ERROR line on a machine without a GPU.
os.environ.setdefault("KINETO_LOG_LEVEL", "5")

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTokenizer


REPO = Path(__file__).resolve().parents[1]
if str(REPO / "benchmarks") not in sys.path:
    sys.path.insert(0, str(REPO / "benchmarks"))

import bench_cocoop  # noqa: E402  (the models, class names and environment of the throughput benchmark)
from bench_cocoop import DTYPES, MODES, TOKENIZER_DIR, build_model, environment, load_class_names  # noqa: E402

from tests.reference_cocoop import reference_logits  # noqa: E402


def text_path_step(model, mode: str, dtype: torch.dtype, prompts, image_embeds, labels, reference: bool = False):
    """One step of the text path on fixed image features: logits under no_grad, or forward + backward."""

    def logits():
        with torch.autocast(image_embeds.device.type, dtype=dtype, enabled=dtype != torch.float32):
            if reference:
                return reference_logits(model, prompts["input_ids"], prompts["eos_index"], image_embeds=image_embeds)
            return model(image_embeds=image_embeds, **prompts).logits

    def step():
        if mode == "eval":
            with torch.no_grad():
                return logits()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(logits().float(), labels).backward()

    return step


def executed_flops(step) -> int:
    """Floating-point operations one call of `step` launches, as torch counts them (matmuls, attention)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def median_seconds(step, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        bench_cocoop._sync(device)
        start = time.perf_counter()
        step()
        bench_cocoop._sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dense_gemm_tflops(tokens: int, width: int, dtype: torch.dtype, device: torch.device, repeats: int) -> dict:
    """The device's dense GEMM rate at the text tower's MLP shapes: (tokens, w) @ (w, 4w) and (tokens, 4w) @ (4w, w)."""
    rates = {}
    for k, n in ((width, 4 * width), (4 * width, width)):
        a = torch.randn(tokens, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        torch.matmul(a, b)  # warm-up: library selection, allocation
        seconds = median_seconds(lambda a=a, b=b: torch.matmul(a, b), repeats, device)
        rates[f"({tokens}x{k}) @ ({k}x{n})"] = 2 * tokens * k * n / seconds / 1e12
    return rates


def top_kernels(step, device: torch.device, steps: int, top: int) -> list[dict]:
    """The `top` operators/kernels by self time over `steps` calls, with their share of the total."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        bench_cocoop._sync(device)
    events = prof.key_averages()
    attribute = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, attribute) for e in events) or 1.0
    ranked = sorted(events, key=lambda e: getattr(e, attribute), reverse=True)[:top]
    return [
        {"name": e.key, "calls": e.count, "self_ms": getattr(e, attribute) / 1e3 / steps, "share": getattr(e, attribute) / total}
        for e in ranked
    ]  # fmt: skip


def profile_row(model, classes: int, args, device, tokenizer) -> dict:
    dtype = DTYPES[args.dtype]
    prompts = model.class_prompts(load_class_names(classes), tokenizer=tokenizer).to(device)
    generator = torch.Generator().manual_seed(args.seed)
    width = model.config.clip_config.projection_dim
    image_embeds = F.normalize(torch.randn(args.batch, width, generator=generator), dim=-1).to(device)
    labels = torch.randint(0, classes, (args.batch,), generator=generator).to(device)
    model.train(args.mode == "train")
    ours = text_path_step(model, args.mode, dtype, prompts, image_embeds, labels)
    ref_images = min(args.batch, args.ref_batch)
    ref = text_path_step(model, args.mode, dtype, prompts, image_embeds[:ref_images], labels[:ref_images], True)
    ours()  # warm-up
    ours_flops = executed_flops(ours)
    ref_flops = executed_flops(ref)
    seconds = median_seconds(ours, args.repeats, device)
    row = {
        "classes": classes,
        "batch": args.batch,
        "dtype": args.dtype,
        "mode": args.mode,
        "ours_text_img_s": args.batch / seconds,
        "ours_gflop_per_image": ours_flops / args.batch / 1e9,
        "ref_gflop_per_image": ref_flops / ref_images / 1e9,
        "ours_achieved_tflops": ours_flops / seconds / 1e12,
        "kernels": top_kernels(ours, device, args.profile_steps, args.top),
    }
    # What the reference's dense 77-token work allows at best, at equal efficiency per FLOP.
    row["flop_ratio_ref_over_ours"] = row["ref_gflop_per_image"] / row["ours_gflop_per_image"]
    return row


def format_report(rows: list[dict], gemm: dict) -> str:
    lines = [
        "| classes | batch | dtype | mode | text img/s | GFLOP/img ours | GFLOP/img ref | ref/ours work | TFLOP/s |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['classes']} | {r['batch']} | {r['dtype']} | {r['mode']} | {r['ours_text_img_s']:.1f} | "
            f"{r['ours_gflop_per_image']:.3g} | {r['ref_gflop_per_image']:.3g} | {r['flop_ratio_ref_over_ours']:.1f}x | "
            f"{r['ours_achieved_tflops']:.3g} |"
        )
    lines += ["", "dense GEMM on this device: " + "; ".join(f"{shape} {tf:.1f} TFLOP/s" for shape, tf in gemm.items())]
    for r in rows:
        lines += ["", f"top kernels, {r['classes']} classes, {r['mode']} (self time per step, share):"]
        lines += [
            f"  {k['share']:6.1%}  {k['self_ms']:9.3f} ms  x{k['calls']:<5d} {k['name'][:90]}" for k in r["kernels"]
        ]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["tiny", "mid", "vit-b16"], default="vit-b16")
    parser.add_argument("--classes", nargs="+", type=int, default=[50, 1000])
    parser.add_argument("--batch", type=int, default=64, help="images per step (image features: no vision tower)")
    parser.add_argument("--ref-batch", type=int, default=1, help="images of the reference's FLOP count")
    parser.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    parser.add_argument("--mode", choices=MODES, default="eval")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps; the median is reported")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=12, help="kernels listed per row")
    parser.add_argument("--gemm-tokens", type=int, default=16384, help="rows of the dense GEMM baseline")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    for name in ("batch", "ref_batch", "repeats", "profile_steps", "top", "gemm_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}.")
    if any(n < 1 for n in args.classes):
        parser.error("--classes values must be >= 1.")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this torch build sees no CUDA device.")
    if args.dtype == "fp16" and args.device == "cpu":
        parser.error("--dtype fp16 autocast is for CUDA; use bf16 or fp32 on a CPU.")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    env = environment(device)
    print("# " + "; ".join(f"{k} {v}" for k, v in env.items()))
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_DIR)
    model = build_model(args.model, device, args.seed)
    rows = []
    for classes in args.classes:
        print(f"# {classes} classes", file=sys.stderr, flush=True)
        rows.append(profile_row(model, classes, args, device, tokenizer))
    width = model.config.clip_config.text_config.hidden_size
    gemm = dense_gemm_tflops(args.gemm_tokens, width, DTYPES[args.dtype], device, args.repeats)
    print(format_report(rows, gemm))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        payload = {"environment": env, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "gemm": gemm}
        args.output.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"# wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
