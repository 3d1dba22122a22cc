"""
How a test run shares the machine. `tests/conftest.py` imports this module before torch and transformers, so that:

- each pytest process (each xdist worker of `-n auto`, or a serial run) gets its own Hugging Face cache folders
  (Hub, datasets, dynamic modules of `trust_remote_code`), empty and removed at the end: workers never write the
  same files at once, and no test reads or writes the user's `~/.cache/huggingface`;
- each xdist worker gets its share of the CPU cores as torch threads (OMP_NUM_THREADS, which the subprocesses that
  tests start inherit): 2 workers on 2 cores use 1 thread each instead of fighting over 2 cores with 4 threads.

It also holds the hooks that cap `-n auto` and print the run's clock times.
"""

import os
import shutil
import tempfile
import time

import pytest


# `-n auto` on a large machine: each worker costs ~5 s of imports and ~1 GB, and builds the session fixtures again;
# past 8 workers the suite's longest tests (~20 s each) bound the time anyway.
MAX_AUTO_WORKERS = 8
# Variables that would send a cache elsewhere than HF_HOME.
CACHE_VARIABLES = (
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_XET_CACHE",
    "HF_ASSETS_CACHE",
    "HF_DATASETS_CACHE",
    "HF_MODULES_CACHE",
    "TRANSFORMERS_CACHE",
    "HF_EVALUATE_CACHE",
)


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def torch_threads_per_worker(workers: int) -> int:
    return max(1, available_cores() // max(1, workers))


def isolate_process() -> str:
    """Point every Hugging Face cache of this process (and its subprocesses) at a fresh folder; set worker threads."""
    hf_home = tempfile.mkdtemp(prefix="cocoop-hf-tests-hf-home-")
    os.environ["HF_HOME"] = hf_home
    for name in CACHE_VARIABLES:
        os.environ.pop(name, None)
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    # An OMP_NUM_THREADS the user set is kept. The thread count sets the speed, and with 2 or more threads the last
    # bits of a float result can differ even between two runs (reduction order, TRAPS.md): a test that compares
    # float results bit for bit runs them on one thread (the `single_thread` fixture of conftest.py).
    if workers is not None and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(torch_threads_per_worker(int(workers)))
    return hf_home


HF_HOME = isolate_process()
_started = [time.time()]


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core, at most MAX_AUTO_WORKERS (PYTEST_XDIST_AUTO_NUM_WORKERS still overrides)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own hook reads it
    return min(available_cores(), MAX_AUTO_WORKERS)


@pytest.hookimpl(wrapper=True)
def pytest_sessionstart(session):
    _started[0] = time.time()
    yield  # pytest's own header first
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or "PYTEST_XDIST_WORKER" in os.environ:
        return
    workers = getattr(session.config.option, "numprocesses", None) or 0
    if workers:
        threads = os.environ.get("OMP_NUM_THREADS") or torch_threads_per_worker(workers)
        layout = f"{workers} xdist workers, {threads} torch thread(s) each"
    else:
        layout = "1 process (no xdist workers)"
    reporter.write_line(f"started {time.strftime('%H:%M:%S')}: {layout}")


def pytest_terminal_summary(terminalreporter):
    if "PYTEST_XDIST_WORKER" in os.environ:
        return
    minutes, seconds = divmod(round(time.time() - _started[0]), 60)
    terminalreporter.write_line(f"finished {time.strftime('%H:%M:%S')}: {minutes} min {seconds:02d} s")


def pytest_unconfigure(config):
    shutil.rmtree(HF_HOME, ignore_errors=True)
