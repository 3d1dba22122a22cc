"""Kept so that `python training/run_transfer_benchmark.py ...` still works from a clone: the same as `cocoop-hf transfer-benchmark ...` (the
installed command; `cocoop-hf --help`), whose code is cocoop_hf_training/run_transfer_benchmark.py. Its `--help` answers at once."""

import sys
from pathlib import Path


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from cocoop_hf_training.commands import run_command

    sys.exit(run_command("transfer-benchmark", sys.argv[1:], prog="run_transfer_benchmark.py"))
