"""A user's findings on the grids' launchers (issue 20, cocoop_hf_training/grid_launchers.py): a SLURM evaluation held
on a training that failed is cancelled and submitted again, Ctrl-C of the local launcher reaches each job once (not
through submitit's controllers), --status never advises moving results, a rerun while a job still runs says to wait,
sbatch without srun and someone else's run record are refused before anything is written, the grids' read-only views
do not probe the Hub, counts read singular for one. No cluster, no Hub: fake sbatch/srun/sacct/scancel on PATH."""

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from cocoop_hf_training import commands, grid_launchers, interruptions, run_benchmark, run_transfer_benchmark
from cocoop_hf_training.grid_cell_states import CellState, read_record, record_path, run_record_path, write_record
from cocoop_hf_training.interruptions import RunInterrupted

from .test_grid_launchers import FAKE_SBATCH, Cell, process_start_time, state_of, tiny, write_job
from .test_run_benchmark import fake, grid_argv  # noqa: F401  (`fake` is a fixture)


def fake_slurm(bin_dir: Path, *, srun=True) -> None:
    """sbatch numbering its submissions, srun, sacct reading `sacct_states` (JobID|State|NodeList lines), scancel
    writing its arguments to `scancelled`: SLURM's commands without a cluster."""
    bin_dir.mkdir(exist_ok=True)
    tools = {
        "sbatch": FAKE_SBATCH,
        "sacct": '#!/bin/sh\necho "JobID|State|NodeList"\ncat "$(dirname "$0")/sacct_states" 2>/dev/null\nexit 0\n',
        "scancel": '#!/bin/sh\necho "$@" >> "$(dirname "$0")/scancelled"\n',
    }
    if srun:
        tools["srun"] = "#!/bin/sh\nexit 1\n"
    for name, text in tools.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)


@pytest.fixture
def slurm_watcher():
    """submitit's sacct reader is one per process and keeps the states of ended jobs: emptied around the test."""
    from submitit.slurm.slurm import SlurmJob

    SlurmJob.watcher.clear()
    yield
    SlurmJob.watcher.clear()


def test_an_evaluation_held_on_a_failed_training_is_cancelled_and_submitted_again(
    tmp_path, monkeypatch, slurm_watcher
):
    bin_dir = tmp_path / "bin"
    fake_slurm(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(run_transfer_benchmark, "check_layouts", lambda datasets, data_root: None)
    grid = tmp_path / "grid"
    argv = ["--data_root", str(tmp_path / "data"), "--output_dir", str(grid), "--targets", "eurosat"]
    argv += ["--method", "coop", "--seeds", "1", "--launcher", "slurm", "--slurm_time", "60", "--", *tiny()]
    run_transfer_benchmark.main(argv)
    submitted = grid / "grid_jobs" / "submitit"
    training, evaluation = (
        read_record(grid / "grid_jobs" / f"{key}.json") for key in ("ImageNet__coop__seed1", "EuroSAT__coop__seed1")
    )
    assert (training["job_id"], evaluation["job_id"]) == ("101", "102")
    held = (submitted / "102_submission.sh").read_text()
    # SLURM cancels a job whose dependency can no longer be met (CANCELLED: a failed cell the rerun submits again).
    assert "#SBATCH --dependency=afterok:101\n" in held and "#SBATCH --kill-on-invalid-dep=yes\n" in held
    assert "--kill-on-invalid-dep" not in (submitted / "101_submission.sh").read_text()

    # The training failed; its evaluation still waits (submitted without kill_on_invalid_dep, or not yet cancelled).
    (bin_dir / "sacct_states").write_text("101|FAILED|node-1\n102|PENDING|\n")
    states = run_transfer_benchmark.main(argv)
    assert (bin_dir / "scancelled").read_text().split() == ["102"]
    training, evaluation = (
        read_record(grid / "grid_jobs" / f"{key}.json") for key in ("ImageNet__coop__seed1", "EuroSAT__coop__seed1")
    )
    assert (training["job_id"], evaluation["job_id"]) == ("103", "104")  # both submitted again
    assert "#SBATCH --dependency=afterok:103\n" in (submitted / "104_submission.sh").read_text()
    assert set(states.values()) == {"running"}


class InterruptedExecutor:
    """submitit.LocalExecutor's surface: each job a real process (`sleep`) the launcher must interrupt itself."""

    def __init__(self, folder):
        self.folder, self.parameters, self.jobs = Path(folder), {}, []

    def update_parameters(self, **parameters):
        self.parameters.update(parameters)

    def submit(self, cell_job):
        job = SleepingJob(cell_job, self.folder, signal.getsignal(signal.SIGINT))
        InterruptedExecutor.jobs.append(job)
        return job


class SleepingJob:
    def __init__(self, cell_job, folder, sigint_at_submission):
        self.sigint_at_submission, self.polls = sigint_at_submission, 0
        # Started while SIGINT is ignored, as submitit's controller is; the job takes SIGINT again (CellJob.__call__).
        self.process = subprocess.Popen(
            ["sleep", "30"], preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
        )
        self.job_id = str(self.process.pid)
        self.paths = type("Paths", (), {"stdout": folder / "out", "stderr": folder / "err", "folder": folder})()
        run = {"token": cell_job.token, "state": "running", "host": socket.gethostname(), "pid": self.process.pid}
        write_record(run_record_path(Path(cell_job.submission_record)), run)  # what CellJob writes when it starts

    def done(self):
        self.polls += 1
        if self.polls == 1:
            raise KeyboardInterrupt  # Ctrl-C while the launcher waits for its jobs
        return self.process.poll() is not None


def test_ctrl_c_of_the_local_launcher_interrupts_each_job_itself(tmp_path, monkeypatch):
    import submitit

    monkeypatch.setattr(submitit, "LocalExecutor", InterruptedExecutor)
    monkeypatch.setattr(InterruptedExecutor, "jobs", [], raising=False)
    monkeypatch.setattr(grid_launchers, "visible_gpus", lambda: [])
    monkeypatch.setattr(grid_launchers, "POLL_S", 0.01)
    monkeypatch.setattr(grid_launchers, "INTERRUPT_WAIT_S", 10.0)
    grid = tmp_path / "grid"
    cell = Cell(grid / "EuroSAT" / "coop" / "seed1", "cell")
    plan = grid_launchers.GridPlan(
        cells=[cell],
        output_dir=grid,
        command=lambda cell: [str(cell)],
        finished_run=lambda cell: None,
        next_step=lambda cell: ("run", []),
        job_of=lambda cell, flags: ("run_cocoop", [str(cell)]),
        prepare=lambda cell: None,
        depends_on=lambda cell: None,
        flags_name="flags",
    )
    before = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(RunInterrupted, match="1 running job"):
            grid_launchers.launch_cells(plan, grid_launchers.LaunchOptions("local"), "test grid")
    finally:
        for job in InterruptedExecutor.jobs:
            if job.process.poll() is None:
                job.process.kill()
                job.process.wait()
    [job] = InterruptedExecutor.jobs
    # Submitted with SIGINT ignored, which its controller inherits (no traceback of its own, no SIGKILL of the job);
    # the launcher's own handler given back after.
    assert job.sigint_at_submission is signal.SIG_IGN and signal.getsignal(signal.SIGINT) is before
    assert job.process.returncode == -signal.SIGINT  # the job's own process got Ctrl-C from the launcher


def test_a_job_takes_one_ctrl_c_and_records_it_as_interrupted(tmp_path):
    interruptions.CTRL_C_SEEN.clear()
    try:
        with pytest.raises(KeyboardInterrupt):
            grid_launchers.interrupt_once(signal.SIGINT, None)
        assert grid_launchers.interrupt_once(signal.SIGINT, None) is None  # the second (the launcher's): ignored
    finally:
        interruptions.CTRL_C_SEEN.clear()
    grid = tmp_path / "grid"
    cell = Cell(grid / "EuroSAT" / "coop" / "seed1", "cell")
    write_job(grid, cell, run={"state": "interrupted", "error": "saved checkpoint-4; run it again to resume"})
    assert state_of(grid, cell) == CellState(
        "failed",
        "job 4242 interrupted (Ctrl-C): the same command resumes it",
        "x.out (stderr: x.err)",
        "4242",
        "local",
    )


def test_status_without_the_runs_flags_never_advises_moving_results(fake, tmp_path, capsys):  # noqa: F811
    argv = grid_argv(tmp_path, methods=("coop",), seeds=("1",), datasets=("eurosat",))
    run_benchmark.main([*argv, "--", "--num_shots", "2"])
    capsys.readouterr()
    states = run_benchmark.main([*argv, "--status"])  # the run's flags not repeated: its cells hold 16 shots
    printed = capsys.readouterr().out
    assert states == {"EuroSAT / coop / seed 1": "finished"}
    assert "a finished run with other flags (shots 2 (cell: 16)): repeat the run's flags after `--`" in printed
    assert "move" not in printed.lower()
    # Its tables would hold another grid's cell: refused, first naming the likelier cause.
    with pytest.raises(ValueError, match=r"If it is this grid's own run, give the run's flags again after `--`"):
        run_benchmark.main([*argv, "--tables_only"])  # it writes tables: refused, saying so


def test_a_rerun_while_a_job_still_runs_says_to_wait(tmp_path):
    grid = tmp_path / "grid"
    cell = Cell(grid / "EuroSAT" / "coop" / "seed1", "EuroSAT / coop / seed 1")
    me = {"state": "running", "pid": os.getpid(), "pid_start": process_start_time(os.getpid())}
    write_job(grid, cell, run=me)
    plan = grid_launchers.GridPlan(
        cells=[cell],
        output_dir=grid,
        command=lambda cell: [str(cell)],
        finished_run=lambda cell: None,
        next_step=lambda cell: ("run", []),
        job_of=lambda cell, flags: ("run_cocoop", [str(cell)]),
        prepare=lambda cell: None,
        depends_on=lambda cell: None,
        flags_name="flags",
    )
    with pytest.raises(SystemExit) as ended:
        grid_launchers.launch_cells(plan, grid_launchers.LaunchOptions("local"), "test grid")
    message = str(ended.value)
    assert message.startswith("1 cell still running (job 4242); no table written:")
    assert message.endswith("Wait for it (--status), then run the same command again.")
    assert "failed" not in message.splitlines()[0] and "resubmit" not in message


def test_sbatch_without_srun_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    fake_slurm(bin_dir, srun=False)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(run_transfer_benchmark, "check_layouts", lambda datasets, data_root: None)
    grid = tmp_path / "grid"
    argv = ["--data_root", str(tmp_path / "data"), "--output_dir", str(grid), "--targets", "eurosat"]
    argv += ["--method", "zeroshot", "--seeds", "1", "--launcher", "slurm", "--slurm_time", "60"]
    with pytest.raises(
        ValueError, match=r"--launcher slurm runs each job's cell through srun, which is not on this machine's PATH"
    ):
        run_transfer_benchmark.main(argv)
    assert not grid.exists()


def test_someone_elses_run_record_is_refused_before_submitting(fake, tmp_path):  # noqa: F811
    argv = grid_argv(tmp_path, methods=("coop",), seeds=("1",), datasets=("eurosat",))
    grid = tmp_path / "grid"
    cell = Cell(grid / "EuroSAT" / "coop" / "seed1", "cell")
    mine = tmp_path / "mine.json"
    mine.write_text('{"mine": 1}')
    run_record = run_record_path(record_path(cell, grid))
    run_record.parent.mkdir(parents=True)
    run_record.symlink_to(mine)
    with pytest.raises(ValueError, match=r"EuroSAT__coop__seed1.job.json cannot be read as a cell's job record"):
        run_benchmark.main([*argv, "--launcher", "local"])
    assert not (grid / "grid_cells.json").exists() and not fake.calls and mine.read_text() == '{"mine": 1}'
    assert sorted(p.name for p in (grid / "grid_jobs").iterdir()) == [run_record.name]  # nothing submitted


def test_the_grids_read_only_views_do_not_probe_the_hub():
    for name in ("benchmark", "transfer-benchmark"):
        command = commands.COMMANDS[name]
        assert commands.looks_for_the_hub(command, ["--benchmark", "eurosat"], imported={})
        assert not commands.looks_for_the_hub(command, ["--output_dir", "g", "--status"], imported={})
        assert not commands.looks_for_the_hub(command, ["--output_dir", "g", "--tables_only"], imported={})


def test_counts_of_one_read_singular(fake, tmp_path, capsys):  # noqa: F811
    run_benchmark.main(grid_argv(tmp_path, methods=("coop",), seeds=("1",), datasets=("eurosat",)))
    printed = capsys.readouterr()
    assert "Grid of 1 cell (1 dataset x 1 method, seeds [1])" in printed.err + printed.out
    config = tmp_path / "slurm.yaml"
    config.write_text("slurm:\n  time: 0\n")
    argv = ["--benchmark", "eurosat", "--data_root", "d", "--output_dir", "g", "--launcher", "slurm"]
    with pytest.raises(
        ValueError, match=r"`time` must be a positive integer, got 0 \(the job\'s time limit, in minutes\)"
    ):
        run_benchmark.parse_args([*argv, "--slurm_config", str(config)])
