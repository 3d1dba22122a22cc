"""Kept so that `python training/evaluate_transfer.py ...` still works from a clone. The code is cocoop_hf_training/evaluate_transfer.py; the
installed command is `cocoop-hf` (`cocoop-hf --help`)."""

import sys
from pathlib import Path


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from cocoop_hf_training.cli import run_script
    from cocoop_hf_training.evaluate_transfer import main

    run_script(main)
