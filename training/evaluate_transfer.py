"""Kept so that `python training/evaluate_transfer.py ...` still works from a clone: the same as `cocoop-hf evaluate ...` (the
installed command; `cocoop-hf --help`), whose code is cocoop_hf_training/evaluate_transfer.py. Its `--help` answers at once."""

import sys
from pathlib import Path


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from cocoop_hf_training.commands import run_command

    sys.exit(run_command("evaluate", sys.argv[1:], prog="evaluate_transfer.py"))
