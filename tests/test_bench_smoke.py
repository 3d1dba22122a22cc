"""The benchmark runs end to end on the tiny model, and its agreement check fails when the two paths disagree."""

import importlib.util
import json
from pathlib import Path

import pytest

from cocoop_hf import modeling_cocoop


BENCH_FILE = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_cocoop.py"
TINY_ARGS = ["--models", "tiny", "--classes", "2", "--batch", "2", "--repeats", "1", "--warmup", "0", "--no-progress"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_cocoop", BENCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(bench, tmp_path, *extra):
    output = tmp_path / "bench.json"
    code = bench.main([*TINY_ARGS, "--device", "cpu", "--output", str(output), *extra])
    return code, json.loads(output.read_text())


def test_benchmark_runs_and_paths_agree(bench, tmp_path):
    code, result = _run(bench, tmp_path, "--modes", "eval", "train")
    assert code == 0
    rows = result["rows"]
    assert [(r["mode"], r["pass"]) for r in rows] == [("eval", "PASS"), ("train", "PASS")]
    for row in rows:
        assert row["classes"] == 2 and row["batch"] == 2 and row["dtype"] == "fp32"
        assert row["ours_img_s"] > 0 and row["ref_img_s"] > 0
        assert row["ratio"] == pytest.approx(row["ours_img_s"] / row["ref_img_s"])
        assert row["max_rel_diff"] <= 1e-5
        assert row["ours_peak_mib"] is not None and row["ref_peak_mib"] is not None
    assert rows[1]["grad_rel_diff"] <= 1e-4
    assert result["environment"]["transformers"] and result["environment"]["torch"]
    assert {t["status"] for t in result["targets"]} == {"not measured"}  # tiny rows measure no target of issue 5


def test_agreement_check_fails_on_a_relative_error_of_5e_5(bench, tmp_path, monkeypatch):
    original = modeling_cocoop.CoCoOpModel.forward

    def slightly_off(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        output.logits = output.logits * (1 + 5e-5)
        return output

    monkeypatch.setattr(modeling_cocoop.CoCoOpModel, "forward", slightly_off)
    code, result = _run(bench, tmp_path, "--modes", "eval")
    assert code == 1
    assert [r["pass"] for r in result["rows"]] == ["FAIL"] and result["failed"] == 1
    assert result["rows"][0]["max_rel_diff"] > 1e-5


def test_agreement_check_sees_a_path_that_drops_the_meta_net_bias(bench, tmp_path, monkeypatch):
    # The benchmark draws a random context and meta-net; ours without the image-conditional bias must then differ.
    # (If this stops failing, CoCoOpModel no longer calls CoCoOpPromptLearner.forward: sabotage elsewhere.)
    def no_bias(self, image_embeds):
        return self.ctx.unsqueeze(0).expand(image_embeds.shape[0], -1, -1)

    monkeypatch.setattr(modeling_cocoop.CoCoOpPromptLearner, "forward", no_bias)
    code, result = _run(bench, tmp_path, "--modes", "eval")
    assert code == 1
    assert result["rows"][0]["pass"] == "FAIL"


def test_fp16_on_cpu_is_skipped_not_faked(bench, tmp_path):
    code, result = _run(bench, tmp_path, "--modes", "eval", "--dtypes", "fp16")
    assert code == 0
    row = result["rows"][0]
    assert row["pass"] == "SKIP" and row["ours_img_s"] is None and row["ref_img_s"] is None and "CUDA" in row["note"]


def test_bad_arguments_are_rejected(bench):
    with pytest.raises(SystemExit):
        bench.main(["--models", "tiny", "--ref-batch", "0"])
    with pytest.raises(SystemExit):
        bench.main(["--preset", "smoke", "--models", "tiny"])
    with pytest.raises(ValueError, match="--classes"):
        bench.load_class_names(1001)


def test_checkpointing_rows_reach_the_model_and_still_agree(bench, tmp_path, monkeypatch):
    calls = []
    original = modeling_cocoop.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(modeling_cocoop, "checkpoint", counting_checkpoint)
    code, result = _run(bench, tmp_path, "--modes", "train", "--checkpointing")
    assert code == 0
    row = result["rows"][0]
    assert row["checkpointing"] is True and row["pass"] == "PASS" and row["grad_rel_diff"] <= 1e-4
    assert calls, "ours never called torch.utils.checkpoint in a --checkpointing training row"
