#!/usr/bin/env bash
# The GPU benchmark in one command, from the repository root of a bare GPU machine:
#
#   bash benchmarks/run_gpu.sh                 # --preset gpu + profiles + compiled row (one H100/H200;
#                                              # meant for < 8 minutes, not yet timed in this form)
#   bash benchmarks/run_gpu.sh --preset smoke  # seconds: tiny model, checks the setup
#
# Arguments, if any, replace `--preset gpu`. Writes bench_gpu.json and bench_gpu.log to $OUT if set, else to
# outputs/bench/, and with the default preset also the text-path profiles profile_eval.json / profile_train.json
# and the compiled-path row bench_compiled.json.
# Needs python3 with torch (CUDA build) and transformers >= 5.24; an older transformers is shadowed by a carried
# wheel .whl/transformers-5.24*.whl (see benchmarks/README.md). Exit status: the benchmark's (1 when a row's paths
# disagree).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
OUT_DIR="${OUT:-outputs/bench}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/bench_gpu.log"
: >"$LOG"

say() { echo "$@" | tee -a "$LOG"; }

transformers_ok() {
    "$PYTHON" - <<'EOF'
import sys
try:
    import transformers
except ImportError:
    sys.exit(1)
major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
sys.exit(0 if (major, minor) >= (5, 24) else 1)
EOF
}

if ! transformers_ok; then
    wheel=$(ls .whl/transformers-5.2[4-9]*.whl .whl/transformers-5.[3-9]*.whl 2>/dev/null | head -n 1 || true)
    if [ -z "$wheel" ]; then
        say "error: $PYTHON has no transformers >= 5.24 and no wheel .whl/transformers-5.24*.whl to carry;" \
            "see benchmarks/README.md (GPU machine)."
        exit 2
    fi
    say "# installing $wheel into /tmp/site (no deps: torch, tokenizers, huggingface_hub come from the machine)"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$wheel" 2>&1 | tee -a "$LOG"
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# The package from this checkout, without installing it.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false

if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG" || true
fi
"$PYTHON" -c "import torch, transformers, cocoop_hf; print('# torch', torch.__version__, 'cuda', torch.version.cuda,
'available', torch.cuda.is_available(), '| transformers', transformers.__version__, transformers.__file__)" \
    2>&1 | tee -a "$LOG"

if [ "$#" -gt 0 ]; then
    args=("$@")
else
    args=(--preset gpu)
fi
set +e
"$PYTHON" benchmarks/bench_cocoop.py "${args[@]}" --output "$OUT_DIR/bench_gpu.json" 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}
if [ "$#" -eq 0 ]; then
    # Where the time goes and how far from the hardware: the text path's executed work, achieved TFLOP/s, the
    # device's dense GEMM rate and the top kernels (evaluation at 50 and 1000 classes, a training step at 1000).
    "$PYTHON" benchmarks/profile_cocoop.py --classes 50 1000 --batch 64 --dtype bf16 --mode eval \
        --output "$OUT_DIR/profile_eval.json" 2>&1 | tee -a "$LOG"
    "$PYTHON" benchmarks/profile_cocoop.py --classes 1000 --batch 32 --dtype bf16 --mode train \
        --output "$OUT_DIR/profile_train.json" 2>&1 | tee -a "$LOG"
    # The compiled text path with fixed suffix-length buckets (a few static shapes), evaluation at 1000 classes with
    # bf16 CLIP weights; cut after 180 s so that a compilation that does not finish cannot eat the machine's time.
    timeout 180 "$PYTHON" benchmarks/bench_cocoop.py --models vit-b16 --classes 1000 --batch 64 --ref-batch 8 \
        --dtypes bf16 --modes eval --half-clip --compile --length-buckets 8 16 32 \
        --output "$OUT_DIR/bench_compiled.json" 2>&1 | tee -a "$LOG" || say "# compiled row: cut or failed (see above)"
fi
set -e
say "# exit status $status; results in $OUT_DIR/bench_gpu.json, log in $LOG"
exit "$status"
