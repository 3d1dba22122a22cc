"""
The state of each cell of a grid run through a launcher (cocoop_hf_training/grid_launchers.py): finished, running,
failed or not started, and the per-cell job records it is read from.

Each record has ONE writer, and each cell its own records, so two cells finishing together cannot lose each other's:
- `<grid>/grid_jobs/<dataset>__<method>__seed<S>.json`, the submission record, written by the launcher when it submits
  the cell's job (launcher, job id, log files, the resume flags);
- `<grid>/grid_jobs/<dataset>__<method>__seed<S>.job.json`, the run record, written by the job itself when it starts
  ("running": host, pid) and when it ends ("failed" with the error, "interrupted" by Ctrl-C, or "exited"); one of an
  earlier job of the cell (another job id) is not this job's and is ignored.
Both are written whole through a rename. Whether a cell is finished is never taken from a record: it is its folder's
own proof (the run's manifest marked complete, checked by the grid's `finished_run`).

A job that dies (killed, out of memory, node lost) cannot write its end: its record would say "running" forever. So a
running record is believed only while its process can be seen alive: on the same host by its pid (at once; the pid's
start time guards against a reused pid), on another host (a cluster node) by the heartbeat the job keeps on its run
record's modification time (stale after `STALE_AFTER_S`). A job submitted but not started is asked about where it
waits: the local launcher's controller process by pid, SLURM through submitit's reading of `sacct`. (submitit's own
local job state is not used: its controller exits normally when its task is killed, so it reads "FINISHED".)
"""

import contextlib
import json
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from transformers.utils import logging


logger = logging.get_logger(__name__)

JOBS_FOLDER = "grid_jobs"  # in the grid folder: the cells' job records, and submitit's own folder
SUBMITIT_FOLDER = "submitit"  # in JOBS_FOLDER: submitit's pickles, sbatch scripts and the jobs' logs
RECORD_FORMAT = "cocoop-hf grid job record 1"
HEARTBEAT_S = 30.0
# Three missed beats: a loaded file system or a paused node is not taken for a dead job.
STALE_AFTER_S = 4 * HEARTBEAT_S
STATES = ("finished", "running", "failed", "not started")
# SLURM job states (sacct) of a job that may still run, and of one that has ended (`squeue`/`sacct` documentation).
SLURM_WAITING = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "CONFIGURING",
    "COMPLETING",
    "RESIZING",
    "SUSPENDED",
    "REQUEUE_HOLD",
}


@dataclass(frozen=True)
class CellState:
    state: str  # one of STATES
    detail: str  # what the state rests on, for --status
    log: str | None = None  # the job's log files, where there are any
    job_id: str | None = None
    launcher: str | None = None  # the launcher that submitted its job ("local", "slurm")
    slurm_state: str | None = None  # its SLURM job's state as sacct reports it ("PENDING", ...), where known


# ---------------------------------------------------------------------------------------------- records


def jobs_folder(output_dir) -> Path:
    return Path(output_dir) / JOBS_FOLDER


def cell_key(cell, output_dir) -> str:
    """`EuroSAT__cocoop__seed1`: the cell folder's path under the grid folder, one name."""
    path, root = Path(cell.output_dir), Path(output_dir)
    parts = path.relative_to(root).parts if path.is_relative_to(root) else path.parts[-3:]
    return "__".join(parts)


def record_path(cell, output_dir) -> Path:
    """The cell's submission record (the launcher's)."""
    return jobs_folder(output_dir) / f"{cell_key(cell, output_dir)}.json"


def run_record_path(submission_record: Path) -> Path:
    """The cell's run record (its job's), beside its submission record."""
    return submission_record.with_name(submission_record.name.removesuffix(".json") + ".job.json")


def read_record(path: Path) -> dict | None:
    """The cell's job record, None when there is none. A file there that is not one is refused, naming it."""
    if not path.exists() and not path.is_symlink():
        return None
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        content, problem = None, f"{type(error).__name__}: {error}"
    else:
        problem = "not a job record of this grid"
    if path.is_symlink() or not isinstance(content, dict) or content.get("format") != RECORD_FORMAT:
        raise ValueError(
            f"{path} cannot be read as a cell's job record ({problem}): the grid writes these files whole, so it is "
            "someone else's file or an edited one. Move it away (the cell is then taken as never submitted), or "
            "choose another --output_dir."
        )
    return content


def write_record(path: Path, content: dict) -> None:
    """
    Replace the cell's record whole (a new file renamed into place: a reader sees the old or the new one, never half).
    A file at `path` that is not one of our records is refused by `read_record`, never replaced.
    """
    read_record(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    data = json.dumps({"format": RECORD_FORMAT, **content}, indent=2, sort_keys=True) + "\n"
    with open(staging, "x", encoding="utf-8") as handle:  # "x": never through an existing file or link
        handle.write(data)
    os.replace(staging, path)


def check_jobs_folder(output_dir) -> None:
    """The grid's job folder must be a real folder inside the grid folder (not a link out of it, not a file)."""
    folder = jobs_folder(output_dir)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ValueError(
            f"{folder} is {'a symbolic link' if folder.is_symlink() else 'not a folder'}: the grid keeps its cells' "
            "job records and logs there. Move it away, or choose another --output_dir."
        )


# ---------------------------------------------------------------------------------------------- liveness


def process_start_time(pid: int) -> str | None:
    """The start time of process `pid` (Linux /proc, clock ticks since boot), None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields and fields[0] == "Z":  # a zombie: ended, not yet reaped by its parent
        return "ended"
    return fields[19] if len(fields) > 19 else None  # field 22 of proc(5), counted after the command name


def process_alive(pid: int, start_time: str | None = None) -> bool:
    """Whether `pid` runs on this host (and, given its start time, is still the same process, not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, but then not ours when its start time differs
        pass
    now = process_start_time(pid)
    if now == "ended":
        return False
    return start_time is None or now is None or now == start_time


def this_process() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": process_start_time(os.getpid())}


class Heartbeat:
    """While the job runs, touch its record every HEARTBEAT_S seconds: another host sees it alive by the mtime."""

    def __init__(self, path: Path, interval: float = HEARTBEAT_S):
        self.path, self.interval = path, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="grid-heartbeat", daemon=True)

    def _beat(self):
        while not self.stop.wait(self.interval):
            try:
                os.utime(self.path)
            except OSError:  # the record moved away by the user: the job itself goes on
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def slurm_state(folder: Path, job_id: str) -> str | None:
    """The job's SLURM state as `sacct` reports it (through submitit), None where sacct cannot be asked."""
    if shutil.which("sacct") is None:
        return None
    try:
        from submitit.slurm.slurm import SlurmJob

        state = SlurmJob(folder=folder, job_id=job_id).watcher.get_state(job_id, mode="force")
    except Exception as error:  # noqa: BLE001  (no sacct here, no cluster: the state is unknown, said so)
        logger.debug("sacct about job %s failed: %s", job_id, error)
        return None
    state = state.split()[0] if state else state  # "CANCELLED by 123"
    return None if state in (None, "UNKNOWN") else state


LOCK_NAME = "launcher.lock"


@contextlib.contextmanager
def launcher_lock(output_dir):
    """
    One launcher at a time per grid (`grid_jobs/launcher.lock`, created with O_EXCL): two would both read a cell as not
    started and both submit it. A lock left by a launcher that died on this host is taken over; one of another host
    cannot be checked, and is named in the refusal.
    """
    path = jobs_folder(output_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_record(path) or {}
            here = holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int)
            if here and not process_alive(holder["pid"], holder.get("pid_start")):
                path.unlink()  # its launcher died (killed): the lock is stale
                continue
            raise ValueError(
                f"another launcher of this grid holds {path} (process {holder.get('pid')} on {holder.get('host')}): "
                "wait for it to end (--status shows the cells), or remove that file if that process is gone."
            ) from None
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump({"format": RECORD_FORMAT, **this_process()}, file)
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- state


def _is_alive(record: dict, path: Path) -> tuple[bool, str]:
    """Whether the process a "running" run record names still runs, and how that is known."""
    if record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int):
        alive = process_alive(record["pid"], record.get("pid_start"))
        return alive, f"process {record['pid']} on this host {'runs' if alive else 'is gone'}"
    beat = time.time() - path.stat().st_mtime
    return beat < STALE_AFTER_S, f"last heartbeat {beat:.0f} s ago on {record.get('host')}"


def job_state(submission: dict, path: Path) -> CellState:
    """The state of a cell that is not finished, from its submission record `submission` (at `path`) and its job's."""
    job_id, launcher = submission.get("job_id"), submission.get("launcher")
    # The job's log lines and its traceback, if it raised: submitit's stdout and stderr files of the job.
    log = f"{submission.get('log')} (stderr: {submission.get('stderr')})"
    where = f"job {job_id}"
    run_path = run_record_path(path)
    run = read_record(run_path)
    if run is not None and run.get("token") == submission.get("token"):  # this job's, not an earlier one's
        state = run.get("state")
        if state == "failed":
            return CellState(
                "failed", f"{where} failed: {run.get('error', 'no error recorded')}", log, job_id, launcher
            )
        if state == "interrupted":  # Ctrl-C: the run saved what it could, as an inline run does.
            # Its note (what was saved) stays in the run record; the grid's rerun resumes it by itself.
            return CellState(
                "failed", f"{where} interrupted (Ctrl-C): the same command resumes it", log, job_id, launcher
            )
        if state == "exited":
            return CellState("failed", f"{where} ended without finishing the cell", log, job_id, launcher)
        if state == "running":
            alive, how = _is_alive(run, run_path)
            if alive:
                return CellState("running", f"{where} running ({how})", log, job_id, launcher)
            return CellState("failed", f"{where} died while running ({how})", log, job_id, launcher)
        raise ValueError(f"{run_path}: unknown job state {state!r} (one of running, failed, interrupted, exited).")
    if submission.get("launcher") == "local":
        alive = submission.get("host") == socket.gethostname() and process_alive(
            int(job_id), submission.get("controller_start")
        )
        if alive:
            return CellState("running", f"{where} starting (local)", log, job_id, launcher)
        return CellState("failed", f"{where} ended before it started the cell", log, job_id, launcher)
    slurm = slurm_state(Path(submission["submitit_folder"]), job_id)
    if slurm is None:
        # No sacct to ask: it may still wait in the queue, and resubmitting it would run the cell twice at once.
        return CellState(
            "running",
            f"SLURM {where} submitted, state unknown here (no sacct): `squeue -j {job_id}`; if it is gone, move "
            f"{path} away and rerun",
            log,
            job_id,
            launcher,
        )
    if slurm in SLURM_WAITING:
        return CellState("running", f"SLURM {where} {slurm}", log, job_id, launcher, slurm)
    return CellState("failed", f"SLURM {where} {slurm} without finishing the cell", log, job_id, launcher, slurm)


def cell_state(cell, output_dir, finished_run) -> CellState:
    """
    finished (its folder's own proof), else what its job records say, else: an interrupted inline run (its folder
    holds files: failed, resumed by a rerun) or not started.
    """
    if finished_run(cell) is not None:
        return CellState("finished", str(cell.output_dir))
    path = record_path(cell, output_dir)
    submission = read_record(path)
    if submission is not None:
        return job_state(submission, path)
    folder = Path(cell.output_dir)
    if folder.is_dir() and any(folder.iterdir()):
        return CellState("failed", f"interrupted (no job record: run inline) in {folder}")
    return CellState("not started", "")


def counted(number: int, noun: str) -> str:
    """`1 cell`, `2 cells`: a count and its noun, singular for one."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def status_lines(cells: list, states: dict) -> list[str]:
    """The --status table: one row per cell, the counts, and each failed cell's log file."""
    width = max([len(str(cell)) for cell in cells] + [4])
    lines = [f"{'cell':<{width}}  {'state':<11}  detail"]
    for cell in cells:
        state = states[cell]
        lines.append(f"{str(cell):<{width}}  {state.state:<11}  {state.detail}".rstrip())
    counts = ", ".join(f"{sum(s.state == name for s in states.values())} {name}" for name in STATES)
    lines += ["", f"{counted(len(cells), 'cell')}: {counts}."]
    failed = [(cell, states[cell]) for cell in cells if states[cell].state == "failed" and states[cell].log]
    if failed:
        lines += ["", "Logs of the failed cells:"]
        lines += [f"  {cell}: {state.log}" for cell, state in failed]
    return lines
