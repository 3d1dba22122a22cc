"""How a training script runs: its logging set-up (the script's logger and the package's to stdout) and
`run_script`, which turns expected failures into one `error: ...` line and exit status 2."""

import logging as std_logging
import os
import sys

from transformers.utils import logging


class _CurrentStdoutHandler(std_logging.StreamHandler):
    """Writes to whatever `sys.stdout` is at the time of the record (test runners and notebooks swap it)."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ and setStream assign it; the current stdout wins
        pass


def setup_logging(script_logger_name: str, level: int, transformers_level: int | None = None) -> None:
    """
    As transformers' example scripts: the script's own logger and those of the `cocoop_hf_training` modules print at `level`
    (INFO on the main process) to stdout; transformers logs at `transformers_level` (default: unchanged).

    A script run as `python training/x.py` logs under `__main__`, not `training.x`, so its logger is named here
    explicitly; the modules it imports (`cocoop_hf_training.data`, `cocoop_hf_training.evaluation`, ...) log under `cocoop_hf_training`.
    """
    names = ["cocoop_hf_training"]
    if script_logger_name != "cocoop_hf_training" and not script_logger_name.startswith("cocoop_hf_training."):
        names.append(script_logger_name)
    for name in names:
        target = std_logging.getLogger(name)
        if not any(isinstance(handler, _CurrentStdoutHandler) for handler in target.handlers):
            handler = _CurrentStdoutHandler()
            handler.setFormatter(
                std_logging.Formatter("%(asctime)s - %(levelname)s - %(name)s - %(message)s", "%H:%M:%S")
            )
            target.addHandler(handler)
        target.setLevel(level)
    if transformers_level is not None:
        logging.set_verbosity(transformers_level)
    logging.enable_explicit_format()


def run_script(main) -> None:
    """
    Run a script's `main()`. Bad input is refused with ValueError / FileNotFoundError carrying a message that names the
    culprit: show that message and exit with status 2, as argparse does, instead of a traceback; so are a full disk and
    a read-only or forbidden output path (OSError ENOSPC / EROFS / EACCES ...). Set COCOOP_HF_TRACEBACK=1 to see the
    traceback too; any other exception keeps its traceback.
    """
    from cocoop_hf_training.write_errors import write_error_message

    try:
        main()
    except (ValueError, FileNotFoundError) as error:
        if os.environ.get("COCOOP_HF_TRACEBACK"):
            raise
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as error:
        # A full disk, a read-only or forbidden output folder: one line naming the path, not a traceback.
        message = write_error_message(error)
        if message is None or os.environ.get("COCOOP_HF_TRACEBACK"):
            raise
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
