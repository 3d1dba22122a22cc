"""
Before/after speed of two checkouts of this repo on the same machine, in one run: `bench_cocoop.py` of each checkout
is run on the same rows, alternately (before, after, before, after, ...), so a change in the machine's load hits
both sides alike; each row's img/s of the shipped model is the median over the rounds (their range beside it), and the
ratio after/before is printed. Each side also checks its own agreement with the per-image reference (a FAIL is shown).

    git worktree add /tmp/before <commit>
    python benchmarks/compare_revisions.py --before /tmp/before --after . --rounds 3 -- --preset cpu

Arguments after `--` go to both sides' `bench_cocoop.py` (the same rows); `--threads 1` is the CPU preset's default.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def row_key(row: dict) -> tuple:
    return tuple(row.get(field) for field in ("model", "method", "classes", "batch", "dtype", "mode"))


def run_side(checkout: Path, bench_args: list[str], output: Path) -> dict[tuple, dict]:
    """One run of `checkout`'s bench_cocoop.py; its rows by key."""
    command = [sys.executable, str(checkout / "benchmarks" / "bench_cocoop.py"), *bench_args, "--output", str(output)]
    completed = subprocess.run(command, cwd=checkout, capture_output=True, text=True)
    if not output.exists():
        raise SystemExit(
            f"error: {' '.join(command)} wrote no results (exit {completed.returncode}):\n{completed.stderr}"
        )
    return {row_key(row): row for row in json.loads(output.read_text(encoding="utf-8"))["rows"]}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    bench_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="checkout of the earlier revision")
    parser.add_argument("--after", type=Path, required=True, help="checkout of the later revision")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side, alternating")
    parser.add_argument("--output", type=Path, help="write the comparison as JSON here")
    args = parser.parse_args(own)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    sides = {"before": args.before.resolve(), "after": args.after.resolve()}
    runs = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            for side, checkout in sides.items():
                print(f"# round {round_index + 1}/{args.rounds}: {side} ({checkout})", file=sys.stderr, flush=True)
                runs[side].append(run_side(checkout, bench_args, Path(scratch) / f"{side}-{round_index}.json"))
    table = []
    for key in runs["before"][0]:
        medians, passes, rounds = {}, {}, {}
        for side in sides:
            rows = [run[key] for run in runs[side] if key in run and run[key].get("ours_img_s")]
            rounds[side] = [row["ours_img_s"] for row in rows]
            medians[side] = statistics.median(rounds[side]) if rows else None
            passes[side] = sorted({run[key]["pass"] for run in runs[side] if key in run})
        ratio = medians["after"] / medians["before"] if medians["before"] and medians["after"] else None
        table.append({"row": dict(zip(("model", "method", "classes", "batch", "dtype", "mode"), key, strict=True)),
                      "before_img_s": medians["before"], "after_img_s": medians["after"], "after_over_before": ratio,
                      "pass_before": passes["before"], "pass_after": passes["after"],
                      "before_rounds": rounds["before"], "after_rounds": rounds["after"]})  # fmt: skip
    print(
        "| model | method | classes | batch | dtype | mode | before img/s | after img/s | after/before "
        "| rounds before (min-max) | rounds after (min-max) | agree |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for entry in table:
        row = entry["row"]
        cells = [str(row[field]) for field in ("model", "method", "classes", "batch", "dtype", "mode")]
        numbers = [f"{entry[f]:.1f}" if entry[f] else "-" for f in ("before_img_s", "after_img_s")]
        ratio = f"{entry['after_over_before']:.2f}x" if entry["after_over_before"] else "-"
        spreads = [
            f"{min(entry[f]):.1f}-{max(entry[f]):.1f}" if entry[f] else "-" for f in ("before_rounds", "after_rounds")
        ]
        agree = "/".join(entry["pass_before"]) + " -> " + "/".join(entry["pass_after"])
        print("| " + " | ".join([*cells, *numbers, ratio, *spreads, agree]) + " |")
    if args.output is not None:
        args.output.write_text(json.dumps({"sides": {k: str(v) for k, v in sides.items()}, "rows": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
