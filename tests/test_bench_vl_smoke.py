"""benchmarks/bench_vl_prompts.py runs IVLP, MaPLe and PromptSRC on the tiny CLIP, its paths agree, its checks can fail."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from cocoop_hf import model_parts_cocoop, modeling_cocoop


BENCH_FILE = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_vl_prompts.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_vl_prompts", BENCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(bench, tmp_path, *flags):
    output = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    code = bench.main([*flags, "--output", str(output)])
    assert torch.get_num_threads() == threads  # the benchmark gives the process its threads back
    return code, json.loads(output.read_text())


def test_smoke_rows_agree_and_report_time_memory_and_ratio(bench, tmp_path, capsys):
    code, result = _run(bench, tmp_path, "--preset", "smoke")
    printed = capsys.readouterr().out
    assert code == 0 and result["failed"] == 0
    rows = result["rows"]
    assert [(r["method"], r["mode"], r["pass"]) for r in rows] == [
        (method, mode, "PASS") for method in ("ivlp", "maple", "promptsrc") for mode in ("eval", "train")
    ]
    for row in rows:
        assert row["model"] == "tiny" and row["classes"] == 10 and row["batch"] == row["ref_batch"] == 4
        assert row["max_rel_diff"] <= 1e-5
        assert row["ours_s"] > 0 and row["ref_s"] > 0
        assert row["ours_img_s"] == pytest.approx(4 / row["ours_s"], rel=1e-12)
        assert row["ratio"] == pytest.approx(row["ours_img_s"] / row["ref_img_s"], rel=1e-12)
        assert row["ref_peak_mib"] is not None and row["ours_peak_mib"] is not None
        # The official shape of work: every prompt padded to 77 tokens; ours to each prompt's EOS.
        assert row["ref_text_tokens"] == 10 * 77 and 10 * 7 <= row["ours_text_tokens"] < 10 * 77
    for row in rows[1::2]:
        assert row["grad_rel_diff"] <= 1e-4
    assert "| ratio |" in printed and printed.count("| PASS |") == 6
    assert "weights random" in printed  # no accuracy is read into random weights


def test_agreement_fails_when_ours_drops_the_deepest_vision_prompt(bench, tmp_path, monkeypatch):
    """A vision tower one prompted layer short (the tiny CLIP has depth 2: layer 1's prompts missing) fails."""
    original = model_parts_cocoop.prompted_image_features
    monkeypatch.setattr(
        model_parts_cocoop,
        "prompted_image_features",
        lambda clip, pixels, prompts, *args, **kwargs: original(clip, pixels, prompts[:-1], *args, **kwargs),
    )
    flags = ("--models", "tiny", "--methods", "ivlp", "maple", "--modes", "eval", "--repeats", "1", "--ref-batch", "2")
    code, result = _run(bench, tmp_path, *flags)
    assert code == 1 and [r["pass"] for r in result["rows"]] == ["FAIL"] * 2


def test_agreement_fails_when_promptsrcs_image_term_is_missing(bench, tmp_path, monkeypatch):
    """PromptSRC's training step without its image term: logits agree, the gradients do not."""
    monkeypatch.setattr(modeling_cocoop, "image_term", lambda image, frozen: torch.zeros((), device=image.device))
    code, result = _run(
        bench, tmp_path, "--models", "tiny", "--methods", "promptsrc", "--repeats", "1", "--ref-batch", "2"
    )
    (evaluation, training) = result["rows"]
    assert code == 1 and evaluation["pass"] == "PASS" and training["pass"] == "FAIL"
    assert evaluation["ref_batch"] == 2 and evaluation["batch"] == 4  # ours at 4 checked on the reference's 2
    assert training["max_rel_diff"] <= 1e-5 and training["grad_rel_diff"] > 1e-4


@pytest.mark.parametrize("method", ["ivlp", "maple", "promptsrc"])
def test_ours_runs_the_text_tower_once_per_step_and_the_vision_tower_once_per_image(bench, method, monkeypatch):
    """Issue 19 "Fast": text features once per step for all classes; each image once through the prompted tower."""
    calls = {"text": [], "vision": []}
    text, vision = model_parts_cocoop.deep_prompt_text_features, model_parts_cocoop.prompted_image_features

    def counted_text(clip, input_ids, *args, **kwargs):
        calls["text"].append(input_ids.shape[0])
        return text(clip, input_ids, *args, **kwargs)

    def counted_vision(clip, pixel_values, prompts, *args, **kwargs):
        if len(prompts) > 0:  # PromptSRC's frozen image features (no prompts) are not the prompted tower
            calls["vision"].append(pixel_values.shape[0])
        return vision(clip, pixel_values, prompts, *args, **kwargs)

    monkeypatch.setattr(model_parts_cocoop, "deep_prompt_text_features", counted_text)
    monkeypatch.setattr(model_parts_cocoop, "prompted_image_features", counted_vision)
    model = bench.build_model("tiny", method, torch.device("cpu"), seed=0).train()
    names = bench.load_class_names(10)
    tokenizer = bench.CLIPTokenizer.from_pretrained(bench.TOKENIZER_DIR)
    prompts = model.class_prompts(names, tokenizer=tokenizer)
    extra = {}
    if model.config.promptsrc_text_weight > 0:
        extra["zero_shot_embeds"] = bench.teacher_text_features(model.clip, names, tokenizer, chunk_tokens=4096)
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model(pixel_values=pixels, labels=torch.tensor([0, 1, 2, 3]), **prompts, **extra).loss.backward()
    assert calls == {"text": [10], "vision": [4]}
