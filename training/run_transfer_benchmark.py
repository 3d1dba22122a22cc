"""Kept so that `python training/run_transfer_benchmark.py ...` still works from a clone. The code is cocoop_hf_training/run_transfer_benchmark.py; the
installed command is `cocoop-hf` (`cocoop-hf --help`)."""

import sys
from pathlib import Path


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from cocoop_hf_training.cli import run_script
    from cocoop_hf_training.run_transfer_benchmark import main

    run_script(main)
