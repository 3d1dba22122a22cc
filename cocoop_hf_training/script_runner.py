"""How a training script runs: its logging set-up (the script's logger and the package's to stdout) and
`run_script`, which turns expected failures into one `error: ...` line and exit status 2."""

import logging as std_logging
import os
import signal
import sys
import threading
from pathlib import Path

from transformers.utils import logging


# The project's packages: a ValueError raised in their code is one of its refusals (`raise ValueError(<culprit, fix>)`).
_PROJECT_FOLDERS = tuple(Path(__file__).resolve().parent.parent / name for name in ("cocoop_hf", "cocoop_hf_training"))


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
    As transformers' example scripts: the script's own logger and those of the `cocoop_hf_training` modules print at
    `level` (INFO on the main process) to stdout; transformers logs at `transformers_level` (default: unchanged).

    A script run as `python training/x.py` logs under `__main__`, not `training.x`, so its logger is named here
    explicitly; the modules it imports (`cocoop_hf_training.data`, `cocoop_hf_training.evaluation`, ...) log under
    `cocoop_hf_training`.
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


def run_script(main, command: str | None = None) -> None:
    """
    Run a command's `main()`, turning every expected failure into ONE line on stderr instead of a traceback:

    - `error: <message>` and exit status 2 (as argparse does) for input refused with a ValueError raised by this
      project's code (`raise ValueError(<culprit, fix>)`; one from a library's internals keeps its traceback), a
      FileNotFoundError / NotADirectoryError (their message names the path), an output that already exists
      (FileExistsError), a model that neither a local folder nor the Hub can give (offline, unreachable, unknown id),
      a missing `[train]` extra, a full disk or a read-only or forbidden path (cocoop_hf_training/command_errors.py,
      write_errors.py);
    - `interrupted: <what was saved; what a rerun does>` and exit status 130 (as a shell reports Ctrl-C) for a
      KeyboardInterrupt (cocoop_hf_training/interruptions.py).

    `command` names the command in the missing-extra line (`cocoop-hf train`; default: the script's file name). Set
    COCOOP_HF_TRACEBACK=1 to see the traceback too; any other exception keeps its traceback.
    """
    from cocoop_hf_training import interruptions

    interruptions.CTRL_C_SEEN.clear()
    handler = _install_ctrl_c_handler(interruptions.note_ctrl_c)
    try:
        main()
    except KeyboardInterrupt as interrupt:
        if os.environ.get("COCOOP_HF_TRACEBACK"):
            raise
        # interruptions.RunInterrupted carries what a rerun does; a bare one came from outside a training or grid.
        _end_interrupted(getattr(interrupt, "note", None))
    except Exception as error:
        if interruptions.is_ctrl_c_fallout(error) and not os.environ.get("COCOOP_HF_TRACEBACK"):
            _end_interrupted(None)
        message = _one_line_message(error, command or os.path.basename(sys.argv[0] or "this command"))
        if message is None or os.environ.get("COCOOP_HF_TRACEBACK"):
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)


def _end_interrupted(note: str | None) -> None:
    """The `interrupted: <note>` line and exit status 130 (as a shell reports Ctrl-C)."""
    # A bar left open would be redrawn (its refresh thread, its close at exit) after the line, hiding it.
    close_progress_bars()
    # On a line of its own: Ctrl-C cuts a progress bar (and the terminal's "^C") mid-line.
    print(f"\ninterrupted: {note or 'stopped (Ctrl-C) before it finished'}", file=sys.stderr, flush=True)
    raise SystemExit(130) from None


def _install_ctrl_c_handler(note):
    """Install `note` for SIGINT where Python's default is in place (the main thread of a command process); returns
    the handler to give back, or None when nothing was installed (another thread, or a caller's own handler)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    current = signal.getsignal(signal.SIGINT)
    if current is not signal.default_int_handler:
        return None
    signal.signal(signal.SIGINT, note)
    return current


def close_progress_bars() -> None:
    """Close every open tqdm progress bar (Trainer's, the data loaders'), leaving each as last drawn, so that nothing
    draws after the line run_script ends with. Nothing to do when tqdm was never imported."""
    tqdm_module = sys.modules.get("tqdm")
    if tqdm_module is None:
        return
    bar_class = tqdm_module.tqdm
    with bar_class.get_lock():
        bars = list(getattr(bar_class, "_instances", ()))  # a WeakSet: copied, since close() removes from it
    for bar in bars:
        try:
            bar.close()
        except Exception as error:  # a bar whose stream is already closed: the line still matters more
            print(f"(could not close a progress bar: {error!r})", file=sys.stderr)


def _one_line_message(error: Exception, command: str) -> str | None:
    """The line an expected failure ends with (None: not an expected failure, its traceback is shown)."""
    from cocoop_hf_training import command_errors
    from cocoop_hf_training.write_errors import write_error_message

    # First: huggingface_hub's LocalEntryNotFoundError is a FileNotFoundError, its HFValidationError a ValueError,
    # and their own messages do not say which model could not be loaded.
    message = command_errors.hub_error_message(error)
    if message is not None:
        return message
    if isinstance(error, ImportError):
        return command_errors.missing_extra_message(error, command)
    if isinstance(error, (FileNotFoundError, NotADirectoryError)):  # they name the path
        return str(error)
    if isinstance(error, ValueError):
        # Our refusals name the culprit and the fix; one from a library's internals (numpy, datasets) or a bug of
        # ours (a failed unpacking) is not a refusal: its traceback is what finds it.
        return str(error) if raised_by_this_project(error) else None
    if isinstance(error, FileExistsError):
        return command_errors.file_exists_message(error)
    if isinstance(error, OSError):  # a full disk, a read-only or forbidden path: the path named
        return write_error_message(error)
    return None


def raised_by_this_project(error: BaseException) -> bool:
    """Whether the innermost frame of `error`'s traceback (where it was raised) is in cocoop_hf or cocoop_hf_training:
    by file, since a script run as `python cocoop_hf_training/run_cocoop.py` has the module name `__main__`."""
    from cocoop_hf_training.command_errors import raising_frame

    frame = raising_frame(error)
    if frame is None:
        return False
    where = Path(frame.f_code.co_filename).resolve()
    return any(where.is_relative_to(folder) for folder in _PROJECT_FOLDERS)
