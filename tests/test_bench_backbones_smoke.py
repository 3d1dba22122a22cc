"""benchmarks/bench_backbones.py runs on the tiny SigLIP and MetaCLIP 2, its paths agree, and its checks can fail."""

import importlib.util
import json
from pathlib import Path

import pytest

from cocoop_hf import modeling_cocoop

from .tiny_backbones import tiny_tokenizer


BENCH_FILE = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_backbones.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_backbones", BENCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(bench, tmp_path, *backbones):
    output = tmp_path / "bench.json"
    code = bench.main(["--preset", "smoke", "--backbones", *backbones, "--output", str(output)])
    return code, json.loads(output.read_text())


def test_smoke_rows_agree_and_the_table_prints(bench, tmp_path, capsys):
    code, result = _run(bench, tmp_path, "siglip", "metaclip_2")
    printed = capsys.readouterr().out
    assert code == 0 and result["failed"] == 0
    rows = result["rows"]
    assert [(r["backbone"], r["mode"], r["pass"]) for r in rows] == [
        ("siglip", "eval", "PASS"),
        ("siglip", "train", "PASS"),
        ("metaclip_2", "eval", "PASS"),
        ("metaclip_2", "train", "PASS"),
    ]
    for row in rows:
        assert row["classes"] == 10 and row["size"] == "tiny"
        assert row["max_rel_diff"] <= 1e-5  # relative to max|ref logit|
        assert row["ours_img_s"] > 0 and row["ref_img_s"] > 0
        assert row["ratio"] == pytest.approx(row["ours_img_s"] / row["ref_img_s"], rel=1e-12)
        # Realistic name lengths: within 0.5x-2x of the real CLIP BPE's mean on the same names.
        assert 0.5 <= row["name_tokens_mean"] / row["clip_name_tokens_mean"] <= 2.0
    for row in rows[1::2]:
        assert row["grad_rel_diff"] <= 1e-4  # relative to max|ref grad| over the prompt learner
        assert set(row["grad_rel_diff_per_tensor"]) >= {"ctx", "meta_net.linear2.weight"}
    header = "| " + " | ".join(bench.COLUMNS) + " |"
    assert header in printed and printed.count("| PASS |") == 4


def test_agreement_check_fails_without_siglips_logit_bias(bench, tmp_path, monkeypatch):
    """Ours forgetting SigLIP's logit bias (-1.5 here) fails every row; the check is not vacuous."""
    monkeypatch.setattr(modeling_cocoop, "logit_bias", lambda model: None)
    code, result = _run(bench, tmp_path, "siglip")
    assert code == 1 and [r["pass"] for r in result["rows"]] == ["FAIL", "FAIL"]
    assert all(r["max_rel_diff"] > 1e-2 for r in result["rows"])


def test_gradient_check_fails_on_a_gradient_off_by_1e_3(bench, tmp_path, monkeypatch):
    """Logits unchanged, gradients scaled by 1.001 on ours: only the training row fails."""
    original = modeling_cocoop.CoCoOpModel.forward

    def steeper(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        output.logits = output.logits + 1e-3 * (output.logits - output.logits.detach())
        return output

    monkeypatch.setattr(modeling_cocoop.CoCoOpModel, "forward", steeper)
    code, result = _run(bench, tmp_path, "siglip")
    assert code == 1 and [r["pass"] for r in result["rows"]] == ["PASS", "FAIL"]
    assert result["rows"][1]["grad_rel_diff"] > 1e-4


def test_unrealistic_name_lengths_are_refused(bench):
    """The tiny tokenizer as trained on a few lines cuts ImageNet names into characters: refused."""
    names = bench.load_class_names(100)
    with pytest.raises(ValueError, match="real CLIP BPE"):
        bench.check_realistic(tiny_tokenizer("siglip"), tiny_tokenizer("clip"), names)
    retrained = bench.check_realistic(bench.bench_tokenizer("siglip"), tiny_tokenizer("clip"), names)
    assert 0.5 <= retrained["name_tokens_mean"] / retrained["clip_name_tokens_mean"] <= 2.0
