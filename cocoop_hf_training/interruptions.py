"""
What a rerun does after Ctrl-C, said in one line (cocoop_hf_training/script_runner.run_script prints it as
`interrupted: <line>`, exit status 130): the phases of run_cocoop that follow the check of --output_dir and the grid
loop each wrap their part in `rerun_note(describe, *args)`, and a KeyboardInterrupt inside becomes `RunInterrupted`
carrying `describe(*args)`, computed at that moment by the very functions a rerun uses to decide where it starts (no state kept outside the call).
"""

import contextlib
import signal
import threading


# Set by run_script's SIGINT handler. Ctrl-C reaches the DataLoader's worker processes too (one process group): when the
# main process's own KeyboardInterrupt is lost (raised inside a fork hook, which ignores it), what arrives instead is
# torch's "DataLoader worker (pid(s) ...) exited unexpectedly". With this set, that error is the interruption.
CTRL_C_SEEN = threading.Event()


def note_ctrl_c(signum, frame):
    """The SIGINT handler run_script installs: Python's own (KeyboardInterrupt), remembering that it came."""
    CTRL_C_SEEN.set()
    signal.default_int_handler(signum, frame)


def is_ctrl_c_fallout(error: BaseException) -> bool:
    """A DataLoader worker killed by the Ctrl-C the command received (not a worker that crashed on its own)."""
    text = str(error)
    return (
        CTRL_C_SEEN.is_set()
        and isinstance(error, RuntimeError)
        and "DataLoader worker" in text
        and "exited unexpectedly" in text
    )


class RunInterrupted(KeyboardInterrupt):
    """A KeyboardInterrupt that says what was saved and what running the same command again does."""

    def __init__(self, note: str):
        super().__init__(note)
        self.note = note


@contextlib.contextmanager
def rerun_note(describe, *args):
    """
    A KeyboardInterrupt inside becomes `RunInterrupted(describe(*args))`, `describe` called then (what is saved by
    then). An inner note (a run inside a grid's cell) is
    replaced by the outer one: the command the user reruns is the outer one.
    """
    try:
        yield
    except KeyboardInterrupt as interrupt:
        raise RunInterrupted(describe(*args)) from interrupt
    except RuntimeError as error:
        if is_ctrl_c_fallout(error):
            raise RunInterrupted(describe(*args)) from error
        raise


def training_rerun_note(output_dir, resume_from_checkpoint, save_strategy) -> str:
    """
    What a rerun of an interrupted run_cocoop training does, from what `--resume_from_checkpoint latest` resumes from
    (checkpoints.latest_checkpoint: the newest COMPLETE checkpoint; one cut off while being written is skipped).
    """
    from cocoop_hf_training.checkpoints import latest_checkpoint, resume_requested  # torch: only once interrupted

    checkpoint = latest_checkpoint(output_dir)
    if checkpoint is None:
        strategy = getattr(save_strategy, "value", save_strategy)  # TrainingArguments holds an enum
        return (
            f"no checkpoint was saved yet (--save_strategy {strategy}); a rerun will start again from the "
            "beginning: run the same command with --overwrite_output_dir (without --resume_from_checkpoint)"
        )
    resuming = resume_requested(resume_from_checkpoint)
    latest = isinstance(resume_from_checkpoint, str) and resume_from_checkpoint.strip().lower() in ("latest", "true")
    if resuming and (latest or resume_from_checkpoint is True):
        return f"{checkpoint} is saved; run the same command again to resume from {checkpoint}"
    how = f"instead of --resume_from_checkpoint {resume_from_checkpoint}" if resuming else "added"
    return (
        f"{checkpoint} is saved; run the same command with --resume_from_checkpoint latest {how} to resume from "
        f"{checkpoint}"
    )


def run_rerun_note(phase: str, output_dir, resume_from_checkpoint, save_strategy, do_train: bool, model_saved: bool):
    """
    What a rerun of run_cocoop interrupted in `phase` (any phase after --output_dir was checked: the image selection,
    the model's build, saving, evaluation, the report) must pass, from what --output_dir holds then: a checkpoint, the
    saved model (`model_saved`: the phase came after save_model), only this run's first files, or nothing yet.
    """
    from pathlib import Path

    from cocoop_hf_training.checkpoints import latest_checkpoint  # torch: only once interrupted
    from cocoop_hf_training.outputs import MANIFEST_NAME

    stopped = f"stopped while {phase}"
    if do_train and latest_checkpoint(output_dir) is not None:
        return f"{stopped}; {training_rerun_note(output_dir, resume_from_checkpoint, save_strategy)}"
    folder = Path(output_dir)
    # Every entry is this run's: --output_dir was refused before if it held anything else (check_output_dir).
    written = (
        sorted(entry.name for entry in folder.iterdir() if entry.name != MANIFEST_NAME) if folder.is_dir() else []
    )
    if not written:
        return f"{stopped}, before writing anything into {output_dir}; run the same command again"
    again = "run the same command with --overwrite_output_dir to start again"
    if do_train and model_saved:
        return (
            f"{stopped}; the trained model is saved in {output_dir}: to evaluate it without training again, run the "
            f"same command with --model_name_or_path {output_dir} --do_train false --output_dir <a new folder>; or "
            f"{again}"
        )
    shown = ", ".join(written[:3]) + (f" and {len(written) - 3} more" if len(written) > 3 else "")
    return f"{stopped}; {output_dir} holds this run's first files ({shown}): {again}"


def grid_rerun_note(cell, index: int, total: int, finished: int, next_step) -> str:
    """
    What a rerun of an interrupted grid does: the finished cells are kept and skipped, the interrupted one continues as
    `next_step(cell)` (the grid's own decision: resume from its latest complete checkpoint, or restart) says.
    """
    from cocoop_hf_training.checkpoints import latest_checkpoint  # torch: only once interrupted

    action, _ = next_step(cell)
    checkpoint = latest_checkpoint(cell.output_dir) if action == "resume" else None
    then = {
        "resume": f"resumes from {checkpoint}",
        "restart": "starts again from the beginning (it saved no checkpoint)",
        "run": "starts from the beginning (it wrote nothing yet)",
    }.get(action, f"is run again ({action})")
    return (
        f"cell {index}/{total} ({cell}) was running; {finished} finished cell(s) are kept and are skipped by a rerun. "
        f"Run the same command again to continue: this cell {then}"
    )
