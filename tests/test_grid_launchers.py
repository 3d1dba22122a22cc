"""Grid cells as jobs (issue 20, cocoop_hf_training/grid_launchers.py): submitit's local executor runs cells as
parallel processes whose files equal the inline grid's, a job killed mid-cell is resumed by the rerun, per-cell records
keep every cell's state (--status), --tables_only shows missing cells as missing, and a SLURM submission writes the
sbatch scripts (partition, GPUs, time, memory, array, `afterok` of the transfer evaluations) without a cluster. Every
accuracy here is of a tiny RANDOM CLIP (no pretrained weights on this machine)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cocoop_hf_training import grid_cell_states as states_module
from cocoop_hf_training import run_benchmark, run_transfer_benchmark
from cocoop_hf_training.checkpoints import latest_checkpoint
from cocoop_hf_training.grid_cell_states import (
    CellState,
    cell_state,
    process_start_time,
    read_record,
    record_path,
    run_record_path,
    write_record,
)
from cocoop_hf_training.grid_launchers import device_slots

from .conftest import TINY_CLIP
from .test_benchmark_runs import make_eurosat
from .test_run_benchmark import fake, grid_argv  # noqa: F401  (`fake` is a fixture)


def tiny(epochs=1, save="no") -> list[str]:
    """run_cocoop flags of a seconds-long cell: the tiny random CLIP, 2 shots of the 2 base classes, CPU."""
    return [
        "--clip_model_name_or_path", str(TINY_CLIP), "--random_init_clip", "true",
        "--num_train_epochs", str(epochs), "--num_shots", "2", "--per_device_train_batch_size", "2",
        "--per_device_eval_batch_size", "8", "--use_cpu", "true", "--fp16", "false",
        "--dataloader_num_workers", "0", "--disable_tqdm", "true", "--save_strategy", save,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid-data")
    make_eurosat(root)
    return root


def benchmark_argv(data_root, output_dir, *options, methods=("coop", "cocoop"), extra=None):
    argv = ["--benchmark", "eurosat", "--data_root", str(data_root), "--output_dir", str(output_dir)]
    return [*argv, "--method", *methods, "--seeds", "1", *options, "--", *(tiny() if extra is None else extra)]


def files_under(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*"))


def log_text(submission: dict) -> str:
    return Path(submission["log"]).read_text()


def submission_and_run(grid: Path, key: str) -> tuple[dict, dict | None]:
    path = grid / "grid_jobs" / f"{key}.json"
    return read_record(path), read_record(run_record_path(path))


# ------------------------------------------------------------------------------------------- local launcher


def test_two_local_processes_write_the_inline_grids_files(data_root, tmp_path):
    inline, local = tmp_path / "inline", tmp_path / "local"
    inline_table = run_benchmark.main(benchmark_argv(data_root, inline))
    local_table = run_benchmark.main(benchmark_argv(data_root, local, "--launcher", "local", "--max_parallel", "2"))

    # The same files, in every cell folder and at the top of the grid folder (plus the launcher's own grid_jobs/).
    cells = ["EuroSAT/coop/seed1", "EuroSAT/cocoop/seed1"]
    for cell in cells:
        assert files_under(local / cell) == files_under(inline / cell)
    assert sorted(p.name for p in local.iterdir()) == sorted([*(p.name for p in inline.iterdir()), "grid_jobs"])
    # The same results and weights: the same run_cocoop.main with the same arguments, in another process (fp32 on
    # CPU; only the thread count may differ, so the last bits of the trained context may).
    for cell in cells:
        ours, theirs = (json.loads((grid / cell / "results.json").read_text())["runs"] for grid in (local, inline))
        assert ours[0]["metrics"].keys() == theirs[0]["metrics"].keys()
        for task in ours[0]["metrics"]:
            for name, value in ours[0]["metrics"][task].items():
                assert value == pytest.approx(theirs[0]["metrics"][task][name], abs=1e-6), (cell, task, name)
        weights = sorted(p.name for p in (inline / cell).glob("*.safetensors"))
        assert weights
        for name in weights:
            mine, reference = load_file(local / cell / name), load_file(inline / cell / name)
            assert mine.keys() == reference.keys()
            for key in reference:
                torch.testing.assert_close(mine[key], reference[key], rtol=0, atol=1e-5)
    assert [row["base"]["mean"] for row in local_table["rows"]] == pytest.approx(
        [row["base"]["mean"] for row in inline_table["rows"]], abs=1e-6
    )
    # Both jobs ran at the same time and both kept their records; grid_cells.json names both cells as inline does.
    runs = [submission_and_run(local, key)[1] for key in ("EuroSAT__coop__seed1", "EuroSAT__cocoop__seed1")]
    assert [run["state"] for run in runs] == ["exited", "exited"]
    assert max(run["started_at"] for run in runs) < min(run["ended_at"] for run in runs)
    assert runs[0]["pid"] != runs[1]["pid"] != os.getpid()
    records = json.loads((local / "grid_cells.json").read_text())
    assert sorted(Path(folder).relative_to(local).as_posix() for folder in records) == sorted(cells)


def test_a_job_killed_mid_cell_is_resumed_by_the_rerun(data_root, tmp_path, capsys):
    grid = tmp_path / "grid"
    long_run = tiny(epochs=12, save="epoch")
    argv = benchmark_argv(data_root, grid, "--launcher", "local", methods=("coop",), extra=long_run)
    cell = grid / "EuroSAT" / "coop" / "seed1"
    first = {}

    def launch():
        try:
            run_benchmark.main(argv)
        except SystemExit as error:  # the launcher's message: cells did not finish
            first["error"] = str(error)

    thread = threading.Thread(target=launch)
    thread.start()
    deadline, killed = time.time() + 60, None
    while time.time() < deadline and killed is None:
        run_path = run_record_path(grid / "grid_jobs" / "EuroSAT__coop__seed1.json")
        if run_path.exists() and cell.is_dir() and latest_checkpoint(cell) is not None:
            killed = read_record(run_path)["pid"]
            os.kill(killed, signal.SIGKILL)  # mid-training, after a complete checkpoint
        time.sleep(0.02)
    thread.join(60)
    assert killed is not None and "1 of 1 cells did not finish; no table written" in first["error"]
    assert not (grid / "table1.md").exists()

    # --status: the dead job is failed (its run record still says running), its log is named.
    states = run_benchmark.main(benchmark_argv(data_root, grid, "--status", methods=("coop",), extra=long_run))
    assert states == {"EuroSAT / coop / seed 1": "failed"}
    printed = capsys.readouterr().out
    assert f"died while running (process {killed} on this host is gone)" in printed
    submission, _ = submission_and_run(grid, "EuroSAT__coop__seed1")
    assert f"EuroSAT / coop / seed 1: {submission['log']} (stderr: {submission['stderr']})" in printed
    assert "run_cocoop" in log_text(submission)  # the job's log lines are in the file named

    checkpoint = latest_checkpoint(cell)
    table = run_benchmark.main(argv)  # the rerun: resumed from the checkpoint, then the table
    submission, run = submission_and_run(grid, "EuroSAT__coop__seed1")
    assert submission["action"] == "resume" and submission["flags"] == ["--resume_from_checkpoint", "latest"]
    assert run["state"] == "exited" and run["token"] == submission["token"]
    assert checkpoint is not None and f"--output_dir {cell} --resume_from_checkpoint latest " in log_text(submission)
    assert [row["method"] for row in table["rows"]] == ["coop"] and (grid / "table1.md").is_file()


# ------------------------------------------------------------------------------------------- cell states


class Cell:
    """A cell as the states read it: a folder under the grid folder and a name."""

    def __init__(self, output_dir: Path, name: str):
        self.output_dir, self.name = output_dir, name

    def __str__(self):
        return self.name


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_job(grid: Path, cell, launcher="local", run=None, **submission) -> Path:
    path = record_path(cell, grid)
    fields = {"launcher": launcher, "job_id": "4242", "token": "t1", "log": "x.out", "stderr": "x.err"}
    write_record(path, {**fields, "host": socket.gethostname(), "submitit_folder": str(grid), **submission})
    if run is not None:
        write_record(run_record_path(path), {"token": "t1", "job_id": "4242", "host": socket.gethostname(), **run})
    return path


def state_of(grid, cell) -> CellState:
    return cell_state(cell, grid, lambda cell: None)


def test_a_running_record_is_believed_only_while_its_process_lives(tmp_path, monkeypatch):
    grid = tmp_path / "grid"
    cell = Cell(grid / "EuroSAT" / "coop" / "seed1", "cell")
    me = {"state": "running", "pid": os.getpid(), "pid_start": process_start_time(os.getpid())}
    write_job(grid, cell, run=me)
    assert state_of(grid, cell).state == "running"
    gone = dead_pid()
    write_job(grid, cell, run={**me, "pid": gone, "pid_start": None})
    assert state_of(grid, cell) == CellState(
        "failed",
        f"job 4242 died while running (process {gone} on this host is gone)",
        "x.out (stderr: x.err)",
        "4242",
        "local",
    )
    write_job(grid, cell, run={**me, "pid_start": "1"})  # this pid, but another process's start time: a reused pid
    assert state_of(grid, cell).state == "failed"
    # Another host (a cluster node): alive while its heartbeat is fresh.
    path = write_job(grid, cell, launcher="slurm", run={"state": "running", "host": "node-7", "pid": 1})
    assert state_of(grid, cell).state == "running"
    old = time.time() - states_module.STALE_AFTER_S - 5
    os.utime(run_record_path(path), (old, old))
    assert state_of(grid, cell).detail.startswith("job 4242 died while running (last heartbeat 12")
    # An earlier job's run record (another token) is not this job's: the submitted job's own state counts.
    write_job(grid, cell, job_id=str(gone), token="t2", run=me)
    assert state_of(grid, cell).detail == f"job {gone} ended before it started the cell"
    write_job(grid, cell, launcher="slurm", run=None, token="t3")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sacct here: the job may wait in the queue
    state = state_of(grid, cell)
    assert state.state == "running" and "state unknown here (no sacct)" in state.detail
    write_job(grid, cell, run={"state": "failed", "error": "ValueError: bad"})
    assert state_of(grid, cell).detail == "job 4242 failed: ValueError: bad"


def test_the_heartbeat_keeps_a_record_fresh(tmp_path):
    path = tmp_path / "cell.job.json"
    write_record(path, {"state": "running"})
    os.utime(path, (1, 1))
    with states_module.Heartbeat(path, interval=0.01):
        time.sleep(0.2)
    assert time.time() - path.stat().st_mtime < 5


def test_a_file_that_is_not_a_record_is_refused_never_replaced(tmp_path):
    path = tmp_path / "grid_jobs" / "EuroSAT__coop__seed1.json"
    path.parent.mkdir()
    path.write_text('{"mine": 1}')
    with pytest.raises(ValueError, match=r"cannot be read as a cell's job record \(not a job record of this grid\)"):
        write_record(path, {"state": "running"})
    assert path.read_text() == '{"mine": 1}'
    path.unlink()
    path.parent.rmdir()
    path.parent.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ValueError, match=r"grid_jobs is a symbolic link: the grid keeps its cells' job records"):
        states_module.check_jobs_folder(tmp_path)


def test_status_and_tables_only_of_a_partly_run_grid(fake, tmp_path, capsys):  # noqa: F811
    argv = grid_argv(tmp_path, methods=("coop", "cocoop"), seeds=("1", "2"), datasets=("eurosat",))
    fake.fail[("EuroSAT", "cocoop", 1)] = True  # interrupted after a checkpoint: the two coop cells finished
    with pytest.raises(KeyboardInterrupt):
        run_benchmark.main(argv)
    grid = tmp_path / "grid"
    cocoop2 = Cell(grid / "EuroSAT" / "cocoop" / "seed2", "EuroSAT / cocoop / seed 2")
    write_job(grid, cocoop2, run={"state": "failed", "error": "RuntimeError: out of memory"})

    states = run_benchmark.main([*argv[: argv.index("--seeds")], "--seeds", "1", "2", "--status"])
    assert states == {
        "EuroSAT / coop / seed 1": "finished",
        "EuroSAT / coop / seed 2": "finished",
        "EuroSAT / cocoop / seed 1": "failed",
        "EuroSAT / cocoop / seed 2": "failed",
    }
    printed = capsys.readouterr().out
    assert f"interrupted (no job record: run inline) in {grid / 'EuroSAT' / 'cocoop' / 'seed1'}" in printed
    assert "4 cells: 2 finished, 0 running, 2 failed, 0 not started." in printed
    assert "Logs of the failed cells:\n  EuroSAT / cocoop / seed 2: x.out (stderr: x.err)" in printed
    assert not (grid / "table1.md").exists() and fake.calls[-1]["--seed"] == "1"  # --status ran nothing

    # A cell whose job still runs is not run inline at the same time.
    me = {"state": "running", "pid": os.getpid(), "pid_start": process_start_time(os.getpid())}
    write_job(grid, cocoop2, run=me)
    calls = len(fake.calls)
    with pytest.raises(
        ValueError, match=r"EuroSAT / cocoop / seed 2: job 4242 running \(process \d+ on this host runs"
    ):
        run_benchmark.main(argv)
    assert len(fake.calls) == calls
    write_job(grid, cocoop2, run={"state": "failed", "error": "RuntimeError: out of memory"})

    table = run_benchmark.main([*argv, "--tables_only"])
    assert table["missing_cells"] == ["EuroSAT / cocoop / seed 1", "EuroSAT / cocoop / seed 2"]
    assert [(row["method"], row["seeds"]) for row in table["rows"]] == [("coop", [1, 2])]
    assert list(table["average"]) == ["coop"]
    markdown = (grid / "table1.md").read_text()
    assert "**Partial table: 2 cell(s) not finished, missing from every row and mean:** EuroSAT / cocoop / seed 1" in (
        markdown
    )
    assert "CoCoOp |" not in markdown  # a missing cell is no row, never a 0
    # The complete grid's table keeps its fields: no "missing_cells" once every cell finished.
    assert "missing_cells" not in run_benchmark.main(argv)


def test_partial_transfer_tables_show_missing_cells_as_missing(tmp_path):
    cell = run_transfer_benchmark.TransferCell
    run = {"dataset": "ImageNet", "method": "zeroshot", "seed": 1, "num_shots": None}
    results = {cell("zeroshot", "zeroshot", 1, "ImageNet", tmp_path): {"note": None, "runs": [
        {**run, "metrics": {"all": {"accuracy": 60.0}}}]}}  # fmt: skip
    tables = run_transfer_benchmark.transfer_tables(results, ["zeroshot"], ["EuroSAT"])
    assert run_transfer_benchmark.partial_tables(tables, []) == tables  # a finished grid's: unchanged
    tables = run_transfer_benchmark.partial_tables(tables, ["zeroshot seed 1 on EuroSAT"])
    markdown = run_transfer_benchmark.transfer_markdown(tables)
    assert tables["missing_cells"] == ["zeroshot seed 1 on EuroSAT"]
    assert (
        "**Partial tables: 1 cell(s) not finished, missing from every mean ('-'):** zeroshot seed 1 on EuroSAT."
        in (markdown)
    )
    assert "| CLIP | 60.00 | - | - |" in markdown  # EuroSAT and the average: missing, not 0


# ------------------------------------------------------------------------------------------- options


def test_each_job_slot_gets_a_gpu_of_its_own():
    assert device_slots([], 3) == ["", "", ""]  # no GPU: CPU jobs
    assert device_slots(["0", "1", "2", "3"], 2) == ["0", "1"]
    assert device_slots(["5", "7"], 2) == ["5", "7"]  # the ids CUDA_VISIBLE_DEVICES gave this process
    with pytest.raises(ValueError, match=r"--max_parallel 3 with 2 GPU\(s\) \(0,1\): each job gets a GPU of its own"):
        device_slots(["0", "1"], 3)
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES names GPU.* GPU-5d2c other than by index"):
        device_slots(["0", "GPU-5d2c"], 2)


@pytest.mark.parametrize(
    "options, message",
    [
        (
            ["--max_parallel", "2"],
            r"--max_parallel is read by --launcher local only \(this grid's: --launcher inline\)",
        ),
        (["--launcher", "local", "--slurm_partition", "gpu"], "--slurm_partition is read by --launcher slurm only"),
        (["--launcher", "local", "--max_parallel", "0"], "--max_parallel must be at least 1"),
        (["--launcher", "slurm"], "--launcher slurm needs each job's time limit in minutes"),
        (["--launcher", "slurm", "--slurm_time", "0"], r"--slurm_time: `time` must be a positive integer, got 0"),
        (["--status", "--tables_only"], "not allowed with argument"),
        (["--launcher", "local", "NO_SUBMITIT"], r'submitit is not installed: pip install "cocoop-hf\[grid\]"'),
    ],
)
def test_launcher_options_are_checked(tmp_path, capsys, monkeypatch, options, message):
    if "NO_SUBMITIT" in options:
        options = options[:-1]
        monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed: find_spec raises, import fails
    argv = ["--benchmark", "eurosat", "--data_root", str(tmp_path), "--output_dir", str(tmp_path / "g"), *options]
    with pytest.raises((ValueError, SystemExit)) as error:
        run_benchmark.parse_args(argv)
    assert re.search(message, str(error.value) + capsys.readouterr().err)


def test_a_slurm_config_block_is_read_and_checked(tmp_path):
    config = tmp_path / "slurm.yaml"
    config.write_text("slurm:\n  partition: gpu\n  mem_gb: 1.5\n  setup: [module load cuda]\n  gpus: 2\n")
    argv = ["--benchmark", "eurosat", "--data_root", "d", "--output_dir", "g", "--launcher", "slurm"]
    with pytest.raises(ValueError, match=r"unknown SLURM option 'gpus'; the known ones: partition, gpus_per_job"):
        run_benchmark.parse_args([*argv, "--slurm_config", str(config), "--slurm_time", "60"])
    config.write_text("slurm:\n  partition: gpu\n  mem_gb: 1.5\n  setup: [module load cuda]\n  time: 30\n")
    args = run_benchmark.parse_args([*argv, "--slurm_config", str(config), "--slurm_time", "90"])
    assert dict(args.launch.slurm) == {
        "partition": "gpu",
        "mem": "1536MB",
        "setup": ("module load cuda",),
        "time": 90,  # the flag wins over the block
        "gpus_per_node": 1,
    }


# ------------------------------------------------------------------------------------------- SLURM


FAKE_SBATCH = """#!/bin/sh
# sbatch without a cluster: numbers the submissions, submits nothing
n=$(cat "$(dirname "$0")/count" 2>/dev/null || echo 100); n=$((n + 1)); echo $n > "$(dirname "$0")/count"
echo "Submitted batch job $n"
"""


def test_slurm_scripts_hold_the_options_and_the_evaluations_wait_for_their_model(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", "#!/bin/sh\nexit 1\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setattr(run_transfer_benchmark, "check_layouts", lambda datasets, data_root: None)
    grid = tmp_path / "grid"
    argv = ["--data_root", str(tmp_path / "data"), "--output_dir", str(grid), "--targets", "eurosat", "imagenet-v2"]
    argv += ["--method", "zeroshot", "coop", "--seeds", "1", "2", "--launcher", "slurm", "--slurm_partition", "gpu"]
    argv += ["--slurm_time", "240", "--slurm_mem_gb", "32", "--slurm_array_parallelism", "2", "--", *tiny()]
    system_path = os.environ["PATH"]
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))  # not a SLURM machine: refused before anything is written
    with pytest.raises(ValueError, match="--launcher slurm submits with sbatch, which is not on this machine's PATH"):
        run_transfer_benchmark.main(argv)
    assert not grid.exists()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{system_path}")
    states = run_transfer_benchmark.main(argv)
    assert set(states.values()) == {"running"}  # submitted; no sacct here to say more

    scripts = {p.name: p.read_text() for p in (grid / "grid_jobs" / "submitit").glob("*_submission.sh")}
    # One array of the 5 cells that need no other (3 zero-shot, 2 trainings), then one per trained model.
    assert sorted(scripts) == [f"{n}_submission.sh" for n in (101, 102, 103)]
    first = scripts["101_submission.sh"]
    for line in ("--partition=gpu", "--gpus-per-node=1", "--time=240", "--mem=32GB", "--array=0-4%2"):
        assert f"#SBATCH {line}\n" in first
    assert "--dependency" not in first and "#SBATCH --job-name=cocoop-hf-grid" in first
    trainings = {}
    for key in ("ImageNet__coop__seed1", "ImageNet__coop__seed2"):
        trainings[key[-1]] = read_record(grid / "grid_jobs" / f"{key}.json")["job_id"]
    assert sorted(trainings.values()) == ["101_3", "101_4"]  # array tasks of the first submission
    for seed, job in trainings.items():
        evaluations = [
            read_record(grid / "grid_jobs" / f"{dataset}__coop__seed{seed}.json")["job_id"]
            for dataset in ("EuroSAT", "ImageNetV2")
        ]
        array = evaluations[0].split("_")[0]
        assert evaluations == [f"{array}_0", f"{array}_1"]
        script = scripts[f"{array}_submission.sh"]
        assert f"#SBATCH --dependency=afterok:{job}\n" in script and "#SBATCH --array=0-1%2\n" in script
    # Each evaluation's targets file is written before its job is submitted.
    assert (
        json.loads((grid / "EuroSAT" / "coop" / "seed1" / "targets.json").read_text())["targets"][0]["benchmark"]
        == "EuroSAT"
    )

    # A rerun while they wait submits nothing again; one with other flags is refused, as inline.
    assert run_transfer_benchmark.main(argv) == states
    assert len(list((grid / "grid_jobs" / "submitit").glob("*_submission.sh"))) == 3
    with pytest.raises(ValueError, match=r"was run by this grid with other flags"):
        run_transfer_benchmark.main([*argv, "--learning_rate", "0.1"])


class FakeLocalExecutor:
    """submitit.LocalExecutor's surface as the local launcher uses it; a job 'runs' until the test's clock ticks."""

    log: list = []

    def __init__(self, folder):
        self.folder, self.parameters = Path(folder), {}

    def update_parameters(self, **parameters):
        self.parameters.update(parameters)

    def submit(self, job):
        submitted = FakeJob(str(len(FakeLocalExecutor.log) + 1), job, self.folder, dict(self.parameters))
        FakeLocalExecutor.log.append(submitted)
        return submitted


class FakeJob:
    def __init__(self, job_id, job, folder, parameters):
        self.job_id, self.cell_job, self.parameters, self.polls = job_id, job, parameters, 0
        self.paths = type("Paths", (), {"stdout": folder / "out", "stderr": folder / "err", "folder": folder})()

    def done(self):
        self.polls += 1
        return self.polls >= 2


def test_the_local_launcher_starts_an_evaluation_once_its_model_finished(tmp_path, monkeypatch):
    import submitit

    from cocoop_hf_training import grid_launchers

    monkeypatch.setattr(submitit, "LocalExecutor", FakeLocalExecutor)
    monkeypatch.setattr(grid_launchers, "visible_gpus", lambda: ["0", "1", "2"])
    monkeypatch.setattr(grid_launchers, "POLL_S", 0)
    monkeypatch.setattr(FakeLocalExecutor, "log", [])
    grid = tmp_path / "grid"
    train = {seed: Cell(grid / "ImageNet" / "coop" / f"seed{seed}", f"train {seed}") for seed in (1, 2)}
    evaluate = {seed: Cell(grid / "EuroSAT" / "coop" / f"seed{seed}", f"evaluate {seed}") for seed in (1, 2)}
    finished = set()

    def finished_run(cell):  # a training "finishes" when its fake job is done; seed 2's fails
        for job in FakeLocalExecutor.log:
            if job.cell_job.cell == str(cell) and job.polls >= 2 and cell is not train[2]:
                finished.add(cell)
        return {"runs": []} if cell in finished else None

    plan = grid_launchers.GridPlan(
        cells=[train[1], evaluate[1], train[2], evaluate[2]],
        output_dir=grid,
        command=lambda cell: [str(cell)],
        finished_run=finished_run,
        next_step=lambda cell: ("run", []),
        job_of=lambda cell, flags: ("run_cocoop", [str(cell)]),
        prepare=lambda cell: None,
        depends_on=lambda cell: train[int(cell.name[-1])] if cell.name.startswith("evaluate") else None,
        flags_name="flags",
    )
    with pytest.raises(SystemExit, match="2 of 4 cells did not finish; no table written"):
        grid_launchers.launch_cells(plan, grid_launchers.LaunchOptions("local", max_parallel=2), "test grid")
    started = [job.cell_job.cell for job in FakeLocalExecutor.log]
    assert started == ["train 1", "train 2", "evaluate 1"]  # evaluate 2 never: its model did not finish
    assert [job.parameters["visible_gpus"] for job in FakeLocalExecutor.log] == [(0,), (1,), (0,)]  # a free GPU each
    assert all(job.parameters["gpus_per_node"] == 1 for job in FakeLocalExecutor.log)
    assert FakeLocalExecutor.log[0].parameters["timeout_min"] >= 60 * 24 * 365  # submitit's default: 2 minutes


def test_one_launcher_at_a_time_per_grid(tmp_path):
    grid = tmp_path / "grid"
    with states_module.launcher_lock(grid):
        with pytest.raises(
            ValueError, match=rf"another launcher of this grid holds .*launcher.lock \(process {os.getpid()}"
        ):
            with states_module.launcher_lock(grid):
                pass
    assert not (grid / "grid_jobs" / "launcher.lock").exists()  # released
    lock = grid / "grid_jobs" / "launcher.lock"  # left by a launcher that was killed: taken over
    lock.write_text(
        json.dumps({"format": states_module.RECORD_FORMAT, "host": socket.gethostname(), "pid": dead_pid()})
    )
    with states_module.launcher_lock(grid):
        assert read_record(lock)["pid"] == os.getpid()
