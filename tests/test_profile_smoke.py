"""The text-path profiler runs end to end on the tiny model and counts the work both paths launch."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def profiler():
    sys.path.insert(0, str(BENCHMARKS))  # profile_cocoop imports bench_cocoop from its own folder
    try:
        spec = importlib.util.spec_from_file_location("profile_cocoop", BENCHMARKS / "profile_cocoop.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


TINY = ["--model", "tiny", "--batch", "2", "--repeats", "1", "--profile-steps", "1", "--top", "3"]
TINY += ["--gemm-tokens", "64", "--device", "cpu", "--dtype", "fp32"]


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_profiler_reports_work_time_and_kernels(profiler, tmp_path, mode):
    output = tmp_path / "profile.json"
    assert profiler.main([*TINY, "--classes", "3", "12", "--mode", mode, "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    rows = result["rows"]
    assert [row["classes"] for row in rows] == [3, 12]
    for row in rows:
        assert row["mode"] == mode and row["ours_text_img_s"] > 0 and row["ours_achieved_tflops"] > 0
        # The reference pads every prompt to 77 tokens; ours runs [SOS, ctx] once per image and the class suffixes.
        assert row["ref_gflop_per_image"] > 3 * row["ours_gflop_per_image"] > 0
        assert 1 <= len(row["kernels"]) <= 3
        assert all(0 < kernel["share"] <= 1 for kernel in row["kernels"])
    # Work grows with the class count on both paths.
    assert rows[1]["ours_gflop_per_image"] > rows[0]["ours_gflop_per_image"]
    assert rows[1]["ref_gflop_per_image"] == pytest.approx(4 * rows[0]["ref_gflop_per_image"], rel=0.05)
    assert len(result["gemm"]) == 2 and all(rate > 0 for rate in result["gemm"].values())
    assert "random" in result["environment"]["weights"]


def test_profiler_refuses_bad_arguments(profiler, capsys):
    with pytest.raises(SystemExit):
        profiler.main([*TINY, "--classes", "0"])
    assert "--classes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        profiler.main([*TINY, "--dtype", "fp16"])
    assert "fp16" in capsys.readouterr().err
