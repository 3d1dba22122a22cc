"""The wheel holds what the commands need (configs, the offline demo's tiny CLIP and images, the metric, the card
template) and no tests; installed outside the repo, its `cocoop-hf` console script trains the packaged demo recipe from
another folder and writes the outputs there, never into the installed package."""

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parent.parent
# Build outputs, caches and local state of a working tree: not sources (a stale build/lib would enter the wheel).
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "outputs", "*.egg-info", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache"
)
# What the commands read besides code, as the wheel names it.
ASSETS = [
    "cocoop_hf/model_card_template.md",
    "cocoop_hf_training/demo/cifar10_demo/train.parquet",
    "cocoop_hf_training/demo/cifar10_demo/test.parquet",
    "cocoop_hf_training/metrics/classification/classification.py",
    *(f"cocoop_hf_training/configs/{path.name}" for path in (REPO / "cocoop_hf_training" / "configs").glob("*.yaml")),
    *(
        f"cocoop_hf_training/demo/tiny-clip/{path.name}"
        for path in (REPO / "cocoop_hf_training/demo/tiny-clip").iterdir()
    ),
]
# Put first on PYTHONPATH as `sitecustomize`: at exit, the process says where the two packages came from.
PACKAGES_PROBE = """
import atexit, sys

def say_where_the_packages_came_from():
    names = ("cocoop_hf", "cocoop_hf_training")
    print("PACKAGES", *(sys.modules[name].__file__ for name in names if name in sys.modules), flush=True)

atexit.register(say_where_the_packages_came_from)
"""


def _run(command, cwd, env=None, timeout=300) -> subprocess.CompletedProcess:
    # pip offline: no index (nothing may download), no check for a newer pip.
    env = {**(env or os.environ), "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the working tree's sources (the build never writes into the repo)."""
    root = tmp_path_factory.mktemp("wheel")
    shutil.copytree(REPO, root / "src", ignore=NOT_SOURCES)
    started = time.perf_counter()
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root / "dist"),
         str(root / "src")],
        cwd=root,
    )  # fmt: skip
    # A figure for the log, not a bound: the time depends on the machine and its load.
    print(f"building the wheel took {time.perf_counter() - started:.1f} s")
    [built] = (root / "dist").glob("cocoop_hf-*.whl")
    return built


def test_the_wheel_holds_the_packages_and_their_assets_and_no_tests(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in ASSETS if name not in names]
    assert not missing, f"the wheel lacks {missing}: add them to [tool.setuptools.package-data] in pyproject.toml"
    for package in ("cocoop_hf", "cocoop_hf_training"):
        sources = {path.relative_to(REPO).as_posix() for path in (REPO / package).rglob("*.py")}
        sources = {name for name in sources if "__pycache__" not in name}
        assert sources <= names, f"the wheel lacks {sorted(sources - names)}"
    tops = {name.split("/")[0] for name in names}
    assert tops == {"cocoop_hf", "cocoop_hf_training", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    dist_info = wheel.name.split("-py3")[0] + ".dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "cocoop-hf = cocoop_hf_training.commands:main" in entry_points


def test_the_installed_command_trains_the_demo_from_another_folder_into_that_folder(wheel, tmp_path):
    site, work, probe = tmp_path / "site", tmp_path / "work", tmp_path / "probe"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)], cwd=tmp_path)
    # pip install --target writes the console scripts to <target>/bin.
    script = site / "bin" / "cocoop-hf"
    assert script.is_file() and os.access(script, os.X_OK), sorted(path.name for path in site.iterdir())
    installed = sorted(path.relative_to(site) for path in site.rglob("*") if "__pycache__" not in path.parts)
    work.mkdir()
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(PACKAGES_PROBE)
    package = site / "cocoop_hf_training"
    # One epoch on a few evaluation images: the machinery end to end, not the demo's minute.
    short = ["--num_train_epochs", "1", "--max_eval_samples", "20", "--per_device_eval_batch_size", "20"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(probe), str(site)]),  # site shadows the editable install of the repo
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"),
    }
    result = _run([str(script), "train", "demo_tiny_cifar10", *short], cwd=work, env=env)
    packages = next(line for line in result.stdout.splitlines() if line.startswith("PACKAGES")).split()[1:]
    assert len(packages) == 2 and all(Path(path).is_relative_to(site) for path in packages), packages
    outputs = work / "outputs" / "demo_tiny_cifar10"
    results = json.loads((outputs / "results.json").read_text())
    # Recorded absolute: the packaged tiny CLIP and images, wherever the command ran.
    recorded = results["arguments"]["model"]["clip_model_name_or_path"]
    assert recorded == str((package / "demo" / "tiny-clip").resolve())
    assert results["arguments"]["data"]["train_file"] == str((package / "demo/cifar10_demo/train.parquet").resolve())
    card = (outputs / "README.md").read_text()
    assert f"`{recorded}` (a local folder)" in card
    assert "cocoop_hf_training/demo/tiny-clip" not in card.replace(recorded, "")  # no cwd-relative backbone path
    # Nothing was written into the installed package.
    assert sorted(path.relative_to(site) for path in site.rglob("*") if "__pycache__" not in path.parts) == installed
