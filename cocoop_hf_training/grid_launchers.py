"""
Where the cells of a grid (cocoop_hf_training/run_benchmark.py, run_transfer_benchmark.py) run: `--launcher inline`
(the default: one after another in the grid's own process, grid.run_cells), `local` (each cell a submitit job, a
process of this machine, `--max_parallel` at a time, each with its own GPU) or `slurm` (each cell a submitit job of a
SLURM cluster: job arrays, evaluations of the transfer grid held by `afterok` on their training job, and cancelled by
SLURM if it fails: `kill_on_invalid_dep`).

A job runs its cell exactly as the inline grid does: the same run_cocoop / evaluate_transfer `main` with the same
arguments (`run_script_main`), in a fresh process. Its outcome is its cell folder (finished or not, as for inline
cells) and its job records (cocoop_hf_training/grid_cell_states.py); submitit's pickles, sbatch scripts and the jobs'
logs are in `<grid>/grid_jobs/submitit/`.
"""

import importlib
import importlib.util
import logging as std_logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from transformers.utils import logging

from cocoop_hf_training import cli
from cocoop_hf_training.grid_cell_states import (
    SUBMITIT_FOLDER,
    CellState,
    Heartbeat,
    cell_state,
    check_jobs_folder,
    counted,
    jobs_folder,
    launcher_lock,
    process_start_time,
    read_record,
    record_path,
    run_record_path,
    status_lines,
    this_process,
    write_record,
)


logger = logging.get_logger(__name__)

LAUNCHERS = ("inline", "local", "slurm")
# SLURM options a grid takes (flag `--slurm_<key>`, or key of the `slurm:` block of --slurm_config) -> submitit's
# SlurmExecutor parameter (submitit/slurm/slurm.py `_make_sbatch_string`) and the type of its value.
SLURM_OPTIONS = {
    "partition": ("partition", str),
    "gpus_per_job": ("gpus_per_node", int),  # one task per job: its node's GPUs are the job's
    "time": ("time", int),  # each job's time limit, in minutes
    "mem_gb": ("mem", float),
    "cpus_per_task": ("cpus_per_task", int),
    "array_parallelism": ("array_parallelism", int),
    "account": ("account", str),
    "qos": ("qos", str),
    "setup": ("setup", list),  # shell lines run before the job (module load ..., source .venv/bin/activate)
}
SLURM_DEFAULTS = {"gpus_per_job": 1}
JOB_NAME = "cocoop-hf-grid"
# submitit's LocalExecutor kills a job after `timeout_min` (default 2 minutes): a local cell has no time limit.
LOCAL_TIMEOUT_MIN = 60 * 24 * 365
POLL_S = 0.25  # the local launcher's look at its own processes
# After Ctrl-C, how long the local launcher waits for its jobs to save and record their interruption before it ends
# the ones still there (their controllers: SIGTERM, which they pass on to the job).
INTERRUPT_WAIT_S = 60.0
# The scripts a cell's job runs: the very `main` the inline grid calls.
SCRIPTS = {"run_cocoop": "cocoop_hf_training.run_cocoop", "evaluate_transfer": "cocoop_hf_training.evaluate_transfer"}


# ---------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class LaunchOptions:
    launcher: str
    max_parallel: int = 1
    slurm: tuple = ()  # (submitit parameter, value) pairs


def read_slurm_config(path) -> dict:
    """The `slurm:` block of a YAML file, checked: its keys are SLURM_OPTIONS', each value of the right type."""
    content = cli.read_structured_file(Path(path), "SLURM config")
    block = content.get("slurm") if isinstance(content, dict) else None
    if not isinstance(block, dict):
        raise ValueError(
            f"--slurm_config {path} must hold a mapping `slurm:` of SLURM options ({', '.join(SLURM_OPTIONS)})."
        )
    return block


def _checked_slurm_value(key, value, source: str):
    if key not in SLURM_OPTIONS:
        raise ValueError(f"{source}: unknown SLURM option {key!r}; the known ones: {', '.join(SLURM_OPTIONS)}.")
    kind = SLURM_OPTIONS[key][1]
    if kind is list:
        ok = isinstance(value, list) and all(isinstance(line, str) for line in value)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= (0 if key == "gpus_per_job" else 1)
    else:
        ok = isinstance(value, str) and value.strip() != ""
    if not ok:
        wanted = {list: "a list of shell lines", float: "a positive number", int: "a positive integer"}
        unit = " (the job's time limit, in minutes)" if key == "time" else ""
        raise ValueError(f"{source}: `{key}` must be {wanted.get(kind, 'a non-empty string')}, got {value!r}{unit}.")
    return value


def launch_options(args) -> LaunchOptions:
    """The grid's launcher flags, checked: each option only with the launcher that reads it."""
    given_slurm = {key: getattr(args, f"slurm_{key}") for key in SLURM_OPTIONS if key != "setup"}
    given_slurm = {key: value for key, value in given_slurm.items() if value is not None}
    if args.launcher != "slurm" and (given_slurm or args.slurm_config):
        flag = f"--slurm_{next(iter(given_slurm))}" if given_slurm else "--slurm_config"
        raise ValueError(f"{flag} is read by --launcher slurm only (this grid's: --launcher {args.launcher}).")
    if args.max_parallel is not None and args.launcher != "local":
        raise ValueError(f"--max_parallel is read by --launcher local only (this grid's: --launcher {args.launcher}).")
    if args.launcher != "inline" and importlib.util.find_spec("submitit") is None:
        raise ValueError(
            f"--launcher {args.launcher} runs the cells as submitit jobs, and submitit is not installed: pip install "
            '"cocoop-hf[grid]" (or use --launcher inline).'
        )
    if args.launcher == "local":
        if args.max_parallel is not None and args.max_parallel < 1:
            raise ValueError(f"--max_parallel must be at least 1 (jobs at once), got {args.max_parallel}.")
        return LaunchOptions("local", max_parallel=args.max_parallel or 1)
    if args.launcher == "inline":
        return LaunchOptions("inline")
    options = dict(SLURM_DEFAULTS)
    if args.slurm_config:
        block = read_slurm_config(args.slurm_config)
        options.update(
            {k: _checked_slurm_value(k, v, f"--slurm_config {args.slurm_config}") for k, v in block.items()}
        )
    options.update({k: _checked_slurm_value(k, v, f"--slurm_{k}") for k, v in given_slurm.items()})
    if "time" not in options:
        raise ValueError(
            "--launcher slurm needs each job's time limit in minutes (--slurm_time, or `time:` in --slurm_config): "
            "SLURM ends a job at it, and submitit's own default is 5 minutes."
        )
    parameters = {SLURM_OPTIONS[key][0]: value for key, value in options.items()}
    if parameters["gpus_per_node"] == 0:  # a CPU job: no GPU request at all (sbatch --gpus-per-node=0 is refused)
        del parameters["gpus_per_node"]
    if "mem" in parameters:  # sbatch --mem: whole GB as such, fractions in MB (as submitit's AutoExecutor writes it)
        mem = parameters["mem"]
        parameters["mem"] = f"{int(mem)}GB" if mem == int(mem) else f"{int(mem * 1024)}MB"
    if "setup" in parameters:
        parameters["setup"] = tuple(parameters["setup"])
    return LaunchOptions("slurm", slurm=tuple(sorted(parameters.items())))


# ---------------------------------------------------------------------------------------------- devices


def visible_gpus() -> list[str]:
    """This machine's GPUs as CUDA_VISIBLE_DEVICES names them for this process (its own list if set)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [name.strip() for name in listed.split(",") if name.strip() not in ("", "-1")]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def device_slots(gpus: list[str], max_parallel: int) -> list[str]:
    """
    The CUDA_VISIBLE_DEVICES of each of the `max_parallel` job slots: one GPU of its own each; "" for all where there
    are no GPUs. More jobs than GPUs is refused: two cells on one GPU would share its memory and time unseen.
    """
    if not gpus:
        return [""] * max_parallel
    named = [name for name in gpus if not name.isdigit()]
    if named:
        raise ValueError(
            f"CUDA_VISIBLE_DEVICES names GPU(s) {','.join(named)} other than by index: submitit's local executor "
            "gives each job its GPU by index. Set CUDA_VISIBLE_DEVICES to indices (0,1,...)."
        )
    if max_parallel > len(gpus):
        raise ValueError(
            f"--max_parallel {max_parallel} with {len(gpus)} GPU(s) ({','.join(gpus)}): each job gets a GPU of its "
            f"own; use --max_parallel {len(gpus)} or fewer (or hide the GPUs with CUDA_VISIBLE_DEVICES= to run on "
            "CPU)."
        )
    return gpus[:max_parallel]


# ---------------------------------------------------------------------------------------------- the job


def run_script_main(script: str, argv) -> dict:
    """The cell's run: the `main` of run_cocoop or evaluate_transfer, as the inline grid and a job call it."""
    return importlib.import_module(SCRIPTS[script]).main(list(argv))


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "(no message)"
    return f"{type(error).__name__}: {text[:500]}"


@dataclass(frozen=True)
class CellJob:
    """What submitit pickles for one cell: the script and arguments of its run, and where its records are."""

    cell: str
    script: str
    argv: tuple
    submission_record: str
    token: str  # this submission's: tells this job's run record from an earlier job's of the same cell
    cwd: str

    def __call__(self) -> None:
        import submitit

        # The local launcher starts the job with SIGINT ignored (_submit_ignoring_ctrl_c): Ctrl-C is its to pass on.
        # Before the run record says "running" (the launcher's cue to send it), Ctrl-C is a KeyboardInterrupt again.
        signal.signal(signal.SIGINT, interrupt_once)
        os.chdir(self.cwd)  # relative paths of the grid's command mean what they meant where it was given
        cli.setup_logging(logger.name, std_logging.INFO)
        path = run_record_path(Path(self.submission_record))
        base = {"cell": self.cell, "token": self.token, "job_id": submitit.JobEnvironment().job_id, **this_process()}
        base["started_at"] = time.time()
        with Heartbeat(path):
            try:
                write_record(path, {**base, "state": "running"})
                logger.info("%s: %s %s", self.cell, self.script, " ".join(self.argv))
                run_script_main(self.script, self.argv)
            except KeyboardInterrupt as interrupt:  # the run saved what it could: the rerun resumes from it
                note = getattr(interrupt, "note", None) or "stopped (Ctrl-C) before it finished"
                write_record(path, {**base, "state": "interrupted", "error": note, "ended_at": time.time()})
                raise
            except BaseException as error:
                write_record(path, {**base, "state": "failed", "error": _one_line(error), "ended_at": time.time()})
                raise
        write_record(path, {**base, "state": "exited", "ended_at": time.time()})


def interrupt_once(signum, frame) -> None:
    """
    A job's SIGINT handler: the first SIGINT is Ctrl-C (KeyboardInterrupt, as run_script's handler makes it), a second
    one is ignored. A terminal's Ctrl-C reaches the job itself (same process group) and the launcher's SIGINT follows
    it: two, and the second must not cut the saving and recording of the first.
    """
    from cocoop_hf_training import interruptions

    if interruptions.CTRL_C_SEEN.is_set():
        return
    interruptions.note_ctrl_c(signum, frame)


# ---------------------------------------------------------------------------------------------- the launchers


@dataclass
class GridPlan:
    """
    What a grid script tells the launcher (see grid.run_cells for `command`, `finished_run`, `next_step`):
    `job_of(cell, flags)` -> (script, argv) of its run; `prepare(cell)` writes what the run reads (a targets file)
    just before it is submitted; `depends_on(cell)` -> the cell whose finished run it needs, or None.
    """

    cells: list
    output_dir: Path
    command: object
    finished_run: object
    next_step: object
    job_of: object
    prepare: object
    depends_on: object
    flags_name: str


def grid_states(plan: GridPlan) -> dict:
    return {cell: grid_states_of(plan, cell) for cell in plan.cells}


def grid_states_of(plan: GridPlan, cell) -> CellState:
    return cell_state(cell, plan.output_dir, plan.finished_run)


def held_on_an_ended_job(plan: GridPlan, states: dict, to_run: list) -> list:
    """
    The cells whose SLURM job is still held (PENDING) by `afterok` on a job of the cell it needs that ended without
    finishing it (that cell is submitted again now): SLURM never starts them (DependencyNeverSatisfied). Jobs submitted
    with kill_on_invalid_dep are cancelled by SLURM itself; this is for the moments before, and for grids submitted
    without it.
    """
    return [
        cell
        for cell in plan.cells
        if states[cell].launcher == "slurm"
        and states[cell].slurm_state == "PENDING"
        and plan.depends_on(cell) is not None
        and plan.depends_on(cell) in to_run
    ]


def cancel_slurm_jobs(job_ids: list[str]) -> None:
    """scancel the jobs; one line naming them if it cannot."""
    if shutil.which("scancel") is None:
        raise ValueError(
            f"SLURM job(s) {', '.join(job_ids)} wait for a job that ended without finishing its cell and would never "
            "start; scancel, which would cancel them, is not on this machine's PATH: cancel them, then rerun."
        )
    done = subprocess.run(["scancel", *job_ids], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ValueError(
            f"scancel {' '.join(job_ids)} (jobs waiting for a job that ended without finishing its cell) failed: "
            f"{' '.join(done.stderr.split()) or f'exit status {done.returncode}'}. Cancel them, then rerun."
        )
    logger.info("Cancelled SLURM job(s) %s: they waited for a job that ended unfinished.", ", ".join(job_ids))


def print_status(plan: GridPlan) -> dict:
    """--status: the table of the cells' states and the failed cells' logs; returns cell name -> state."""
    from cocoop_hf_training.grid import AnotherCellsRun

    states = {}
    for cell in plan.cells:
        try:
            states[cell] = grid_states_of(plan, cell)
        except AnotherCellsRun as other:  # read-only: said as it is, never advice to move results
            states[cell] = CellState(
                "finished",
                f"a finished run with other flags ({other.differ}): repeat the run's flags after `--` to check it "
                "against this grid",
            )
    print("\n".join(status_lines(plan.cells, states)), flush=True)
    return {str(cell): state.state for cell, state in states.items()}


def finished_results(plan: GridPlan) -> tuple[dict, list[str]]:
    """--tables_only: the results.json content of each finished cell, and the names of the others (missing)."""
    results, missing = {}, []
    for cell in plan.cells:
        content = plan.finished_run(cell)
        if content is None:
            missing.append(str(cell))
        else:
            results[cell] = content
    if not results:
        raise ValueError(
            f"--tables_only: none of the {len(plan.cells)} cells of this grid has finished yet in {plan.output_dir} "
            "(--status shows their states)."
        )
    return results, missing


def results_for_tables(args, plan_of, run_grid) -> tuple[dict | None, list[str], dict | None]:
    """
    What a grid command has for its tables, the same for both grids: (results, missing cells, None), or (None, [],
    answer) when it writes no table now, `answer` being what the command returns: --status prints the cells' states;
    --tables_only takes the finished cells (the tables are the grid's files: the folder's record started); else the
    grid runs (`run_grid(args)`; None: handed to SLURM, the tables come with the rerun once every cell has finished).
    `plan_of()` gives the grid's GridPlan.
    """
    from cocoop_hf_training.outputs import prepare_grid_folder

    if args.status:
        return None, [], print_status(plan_of())
    if args.tables_only:
        results, missing = finished_results(plan_of())
        prepare_grid_folder(args.output_dir)
        return results, missing, None
    results = run_grid(args)
    if results is None:
        return None, [], {str(cell): state.state for cell, state in grid_states(plan_of()).items()}
    return results, [], None


class CellsNotFinished(SystemExit):
    """The grid's jobs ended with cells unfinished: one message (no traceback), exit status 1."""


def _submission(plan: GridPlan, cell, launcher: str) -> tuple:
    """The job of a cell to submit now (its resume flags decided now, as inline), and its record's first fields."""
    action, flags = plan.next_step(cell)
    plan.prepare(cell)
    script, argv = plan.job_of(cell, flags)
    path = record_path(cell, plan.output_dir)
    job = CellJob(str(cell), script, tuple(argv), str(path.resolve()), uuid.uuid4().hex, os.getcwd())
    record = {"cell": str(cell), "launcher": launcher, "action": action, "flags": flags, "token": job.token}
    return job, path, record


def _record_submitted(path: Path, record: dict, job) -> None:
    paths = job.paths
    record = {
        **record,
        "job_id": job.job_id,
        "log": str(paths.stdout),
        "stderr": str(paths.stderr),
        "submitit_folder": str(paths.folder),
        "host": socket.gethostname(),
        "submitted_at": time.time(),
    }
    if record["launcher"] == "local":
        record["controller_start"] = process_start_time(int(job.job_id))
    write_record(path, record)


def launch_cells(plan: GridPlan, options: LaunchOptions, title: str) -> dict | None:
    """
    Submit every cell that is not finished nor running (failed ones resumed or restarted as inline); returns each
    cell's results.json content once all are finished (local), None when the jobs were handed to SLURM.
    """
    from cocoop_hf_training.grid import check_grid_cells

    if options.launcher == "slurm":
        # submitit's SlurmExecutor needs both (its jobs run their cell through srun): checked before anything is written.
        for tool, use in (("sbatch", "submits with sbatch"), ("srun", "runs each job's cell through srun")):
            if shutil.which(tool) is None:
                raise ValueError(
                    f"--launcher slurm {use}, which is not on this machine's PATH: run the command on a SLURM login "
                    "node (or use --launcher local or inline)."
                )
    records = check_grid_cells(plan.cells, plan.output_dir, plan.command, plan.flags_name)
    check_jobs_folder(plan.output_dir)
    with launcher_lock(plan.output_dir):  # from reading the states to the last submission: one launcher at a time
        return _launch(plan, options, title, records)


def _launch(plan: GridPlan, options: LaunchOptions, title: str, records: dict) -> dict | None:
    from cocoop_hf_training.grid import record_commands
    from cocoop_hf_training.outputs import prepare_grid_folder

    states = grid_states(plan)  # a file in grid_jobs/ that is not a record of ours is refused here
    to_run = [cell for cell in plan.cells if states[cell].state in ("failed", "not started")]
    for cell in to_run:  # the run record its job will write: someone else's file there is refused now, not in the job
        read_record(run_record_path(record_path(cell, plan.output_dir)))
    stale = held_on_an_ended_job(plan, states, to_run)
    if stale:
        cancel_slurm_jobs([states[cell].job_id for cell in stale])
        to_run = [cell for cell in plan.cells if cell in to_run or cell in stale]
    for cell in plan.cells:
        if states[cell].state == "running" and cell not in to_run:
            logger.info("%s: still running (%s): not submitted again.", cell, states[cell].detail)
    left = [states[cell] for cell in plan.cells if cell not in to_run]
    counts = {name: sum(s.state == name for s in left) for name in ("finished", "running")}
    logger.info(
        "%s: %d finished, %d running, %d to submit (--launcher %s).",
        title,
        counts["finished"],
        counts["running"],
        len(to_run),
        options.launcher,
    )
    prepare_grid_folder(plan.output_dir)
    record_commands(plan.output_dir, records, to_run, plan.command)
    folder = jobs_folder(plan.output_dir) / SUBMITIT_FOLDER
    if options.launcher == "slurm":
        _submit_slurm(plan, to_run, states, options, folder)
        return None
    _run_local(plan, to_run, options, folder)
    states = grid_states(plan)
    unfinished = [cell for cell in plan.cells if states[cell].state != "finished"]
    if unfinished:
        raise CellsNotFinished(unfinished_message(plan.cells, unfinished, states))
    return {cell: plan.finished_run(cell) for cell in plan.cells}


def unfinished_message(cells: list, unfinished: list, states: dict) -> str:
    """Why no table: the unfinished cells' states, then what to do (wait for the running ones, resubmit failed ones)."""
    running = [cell for cell in unfinished if states[cell].state == "running"]
    if len(running) == len(unfinished):  # none failed: an earlier launcher's jobs still run them
        jobs = ", ".join(f"job {states[cell].job_id}" for cell in running)
        what = f"{counted(len(running), 'cell')} still running ({jobs})"
        return "\n".join(
            [f"{what}; no table written:"]
            + status_lines(unfinished, states)
            + [f"Wait for {'it' if len(running) == 1 else 'them'} (--status), then run the same command again."]
        )
    return "\n".join(
        [f"{len(unfinished)} of {len(cells)} cells did not finish; no table written:"]
        + status_lines(unfinished, states)
        + ["Run the same command again to resubmit them (failed cells resume from their latest checkpoint)."]
    )


def _submit_ignoring_ctrl_c(executor, job):
    """
    Submit a local job whose controller (`python -m submitit.local._local`, which would print a traceback on Ctrl-C
    and then SIGKILL the job 1 s after its SIGINT) ignores SIGINT: it inherits SIG_IGN (kept across exec; Python
    installs its KeyboardInterrupt only where SIGINT is not ignored). The job itself takes SIGINT again
    (CellJob.__call__); the launcher sends it on Ctrl-C (_interrupt_local_jobs). Only the main thread can set a handler.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        return executor.submit(job)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return executor.submit(job)
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupt_local_jobs(plan: GridPlan, running: dict, tokens: dict) -> None:
    """
    Ctrl-C of the local launcher: SIGINT to each job's own process (the pid its run record names), once it has one,
    so that each run saves, records "interrupted" and ends as an inline run would; then wait (INTERRUPT_WAIT_S) for the
    jobs to end. A job still there then is ended through its controller (SIGTERM, passed on to the job).
    """
    deadline, signalled = time.time() + INTERRUPT_WAIT_S, set()
    while time.time() < deadline:
        left = {cell: job for cell, (job, _) in running.items() if not job.done()}
        if not left:
            return
        for cell in left:
            if cell in signalled:
                continue
            try:
                run = read_record(run_record_path(record_path(cell, plan.output_dir)))
            except ValueError:
                run = None
            if run and run.get("token") == tokens[cell] and run.get("host") == socket.gethostname():
                if run.get("state") == "running" and isinstance(run.get("pid"), int):
                    try:
                        os.kill(run["pid"], signal.SIGINT)
                    except ProcessLookupError:
                        pass
                signalled.add(cell)
        time.sleep(POLL_S)
    for job, _ in running.values():
        if not job.done():
            try:
                os.kill(int(job.job_id), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


def _run_local(plan: GridPlan, to_run: list, options: LaunchOptions, folder: Path) -> None:
    """Run the cells as local submitit jobs, `max_parallel` at a time; a cell starts once the one it needs finished."""
    import submitit

    from cocoop_hf_training.interruptions import RunInterrupted

    slots = device_slots(visible_gpus(), options.max_parallel)
    executor = submitit.LocalExecutor(folder=folder)
    free, pending, running, tokens = list(range(len(slots))), list(to_run), {}, {}
    try:
        while pending or running:
            for cell in list(pending):
                if not free:
                    break
                needed = plan.depends_on(cell)
                if needed is not None and (needed in pending or needed in running):
                    continue
                pending.remove(cell)
                if needed is not None and plan.finished_run(needed) is None:
                    logger.warning("%s: not run, %s did not finish.", cell, needed)
                    continue
                slot = free.pop(0)
                gpus = [int(slots[slot])] if slots[slot] else []
                executor.update_parameters(
                    timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=len(gpus), visible_gpus=tuple(gpus)
                )
                job, path, record = _submission(plan, cell, "local")
                submitted = _submit_ignoring_ctrl_c(executor, job)
                tokens[cell] = job.token
                _record_submitted(path, record, submitted)
                logger.info(
                    "%s: job %s started (%s), log %s", cell, submitted.job_id, record["action"], submitted.paths.stdout
                )
                running[cell] = (submitted, slot)
            time.sleep(POLL_S)
            for cell, (job, slot) in list(running.items()):
                if job.done():
                    del running[cell]
                    free.append(slot)
                    outcome = "finished" if plan.finished_run(cell) is not None else "ended unfinished"
                    logger.info("%s: job %s %s (log %s).", cell, job.job_id, outcome, job.paths.stdout)
    except KeyboardInterrupt as interrupt:
        _interrupt_local_jobs(plan, running, tokens)
        raise RunInterrupted(
            f"{len(running)} running job(s) were interrupted; run the same command again to continue: finished "
            "cells are skipped, interrupted ones resume from their latest complete checkpoint"
        ) from interrupt


def _submit_slurm(plan: GridPlan, to_run: list, states: dict, options: LaunchOptions, folder: Path) -> None:
    """
    One job array of the cells that need no other cell; the cells that need one (the transfer grid's evaluations of a
    model) one array per needed cell, held by SLURM until it ends well (`afterok`; on a job still running from an
    earlier submission, that job).
    """
    import submitit

    # Cells whose SLURM job from an earlier submission still runs: their evaluations wait for that job.
    job_ids = {
        cell: state.job_id
        for cell, state in states.items()
        if state.state == "running" and state.launcher == "slurm" and state.job_id
    }
    groups: dict = {}
    for cell in to_run:
        needed = plan.depends_on(cell)
        groups.setdefault(None if needed is None or states[needed].state == "finished" else needed, []).append(cell)
    for needed in sorted(groups, key=lambda key: key is not None):  # first the cells the others may need
        parameters = {**dict(options.slurm), "job_name": JOB_NAME}
        if "setup" in parameters:
            parameters["setup"] = list(parameters["setup"])
        if needed is not None:
            if needed not in job_ids:  # it runs as a local job: SLURM cannot wait for that
                raise ValueError(
                    f"{needed} runs as a local job ({states[needed].detail}), and {groups[needed][0]} needs it: "
                    "SLURM can wait only for its own jobs. Rerun once it has ended."
                )
            parameters["dependency"] = f"afterok:{job_ids[needed]}"
            # Without it, a job whose training failed stays PENDING for ever (DependencyNeverSatisfied) and reads as
            # running; with it SLURM cancels it: CANCELLED, a failed cell the rerun submits again (sbatch(1)).
            parameters["additional_parameters"] = {"kill_on_invalid_dep": "yes"}
        executor = submitit.SlurmExecutor(folder=folder)
        executor.update_parameters(**parameters)
        prepared = [_submission(plan, cell, "slurm") for cell in groups[needed]]
        with executor.batch():
            jobs = [executor.submit(job) for job, _, _ in prepared]
        for cell, (_, path, record), job in zip(groups[needed], prepared, jobs, strict=True):
            _record_submitted(path, record, job)
            job_ids[cell] = job.job_id
            logger.info(
                "%s: SLURM job %s submitted%s.",
                cell,
                job.job_id,
                f" ({parameters['dependency']})" if needed is not None else "",
            )
    logger.info(
        "%d job(s) submitted to SLURM (scripts and logs in %s). `--status` shows their states; the same command, "
        "once they ended, writes the tables (and resubmits any failed cell); --tables_only writes them from what has "
        "finished.",
        len(to_run),
        folder,
    )
