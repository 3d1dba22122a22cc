"""Kept so that `python training/run_cocoop.py ...` still works from a clone: the same as `cocoop-hf train ...` (the
installed command; `cocoop-hf --help`), whose code is cocoop_hf_training/run_cocoop.py. Its `--help` answers at once."""

import sys
from pathlib import Path


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from cocoop_hf_training.commands import run_command

    sys.exit(run_command("train", sys.argv[1:], prog="run_cocoop.py"))
