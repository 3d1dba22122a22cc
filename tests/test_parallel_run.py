"""tests/parallel_run.py: each test process has its own Hugging Face caches and its share of the cores."""

import os
import subprocess
import sys
from pathlib import Path

import datasets
import huggingface_hub
import pytest
import torch
import transformers.dynamic_module_utils

from . import parallel_run


def test_every_hugging_face_cache_is_this_process_own_temporary_folder():
    home = Path(parallel_run.HF_HOME)
    assert home.is_dir() and home.name.startswith("cocoop-hf-tests-hf-home-")
    assert Path.home() not in home.parents
    for cache in (
        huggingface_hub.constants.HF_HUB_CACHE,
        datasets.config.HF_DATASETS_CACHE,
        transformers.dynamic_module_utils.HF_MODULES_CACHE,
    ):
        assert home in Path(cache).parents, cache


def test_subprocesses_inherit_the_caches_and_the_thread_count():
    code = "import torch; from huggingface_hub import constants; print(constants.HF_HUB_CACHE, torch.get_num_threads())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    cache, threads = done.stdout.split()
    assert Path(parallel_run.HF_HOME) in Path(cache).parents
    assert int(threads) == torch.get_num_threads()


@pytest.mark.skipif("PYTEST_XDIST_WORKER" not in os.environ, reason="the thread share applies to xdist workers")
def test_workers_together_use_no_more_threads_than_cores():
    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    if "OMP_NUM_THREADS" in os.environ and os.environ["OMP_NUM_THREADS"] != str(
        parallel_run.torch_threads_per_worker(workers)
    ):
        pytest.skip("OMP_NUM_THREADS set by the user is kept")
    assert torch.get_num_threads() == parallel_run.torch_threads_per_worker(workers)
    assert workers * torch.get_num_threads() <= max(workers, parallel_run.available_cores())


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 2), (16, parallel_run.MAX_AUTO_WORKERS)])
def test_auto_workers_follow_the_cores_up_to_a_cap(monkeypatch, cores, expected):
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    monkeypatch.setattr(parallel_run, "available_cores", lambda: cores)
    assert parallel_run.pytest_xdist_auto_num_workers(None) == expected
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "3")
    assert parallel_run.pytest_xdist_auto_num_workers(None) is None  # xdist's own hook then reads the variable
