"""The benchmark runs end to end on the tiny model, and its agreement check fails when the two paths disagree."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import CLIPConfig

from cocoop_hf import modeling_cocoop, prompt_layout_cocoop, text_encoder_causal

from .conftest import FIXTURES, tiny_clip_config


BENCH_FILE = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_cocoop.py"
TINY_ARGS = ["--models", "tiny", "--classes", "2", "--batch", "2", "--repeats", "1", "--warmup", "0"]


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
    original = text_encoder_causal.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(text_encoder_causal, "checkpoint", counting_checkpoint)
    code, result = _run(bench, tmp_path, "--modes", "train", "--checkpointing")
    assert code == 0
    row = result["rows"][0]
    assert row["checkpointing"] is True and row["pass"] == "PASS" and row["grad_rel_diff"] <= 1e-4
    assert calls, "ours never called torch.utils.checkpoint in a --checkpointing training row"


def test_reference_out_of_memory_skips_the_row_and_ours_out_of_memory_fails_it(bench, tmp_path, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(bench, "reference_logits", out_of_memory)
    code, result = _run(bench, tmp_path, "--modes", "eval")
    row = result["rows"][0]
    assert code == 0 and row["pass"] == "SKIP" and "reference out of memory" in row["note"]
    assert row["ours_img_s"] > 0 and row["ref_img_s"] is None and row["ratio"] is None and row["max_rel_diff"] is None

    monkeypatch.undo()
    monkeypatch.setattr(modeling_cocoop.CoCoOpModel, "forward", out_of_memory)
    code, result = _run(bench, tmp_path, "--modes", "eval")
    assert code == 1 and result["failed"] == 1
    assert result["rows"][0]["pass"] == "ERROR" and "out of memory" in result["rows"][0]["note"]


def test_models_come_from_the_repository_config_files(bench):
    # One tiny CLIP (cocoop_hf_training/demo/tiny-clip/config.json) for tests, demo and benchmark, with the values every test
    # was written for; one ViT-B/16 config (tests/fixtures/clip-vit-base-patch16).
    tiny = tiny_clip_config()
    assert bench.clip_config_for("tiny").to_dict() == tiny.to_dict()
    text, vision = tiny.text_config, tiny.vision_config
    for tower in (text, vision):
        assert (tower.hidden_size, tower.intermediate_size, tower.num_hidden_layers) == (64, 128, 2)
        assert (tower.num_attention_heads, tower.hidden_act) == (4, "quick_gelu")
    assert (vision.image_size, vision.patch_size, tiny.projection_dim) == (32, 8, 48)
    assert (text.vocab_size, text.max_position_embeddings) == (49408, 77)
    assert (text.bos_token_id, text.eos_token_id, text.pad_token_id) == (49406, 49407, 49407)
    assert tiny_clip_config(eos_token_id=2, hidden=32).text_config.to_dict() == {
        **text.to_dict(),
        "eos_token_id": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
    }
    vit = bench.clip_config_for("vit-b16")
    assert vit.to_dict() == CLIPConfig.from_pretrained(FIXTURES / "clip-vit-base-patch16").to_dict()
    assert (vit.text_config.hidden_size, vit.vision_config.hidden_size, vit.vision_config.patch_size) == (512, 768, 16)
    mid = bench.clip_config_for("mid")
    assert (mid.text_config.hidden_size, mid.vision_config.hidden_size, mid.vision_config.image_size) == (256, 384, 96)
    assert mid.text_config.eos_token_id == text.eos_token_id and mid.text_config.vocab_size == 49408


def test_coop_family_rows_run_and_agree(bench, tmp_path):
    code, result = _run(bench, tmp_path, "--modes", "train", "--methods", "coop-csc", "coop-middle", "kgcoop")
    assert code == 0
    rows = result["rows"]
    assert [(r["method"], r["pass"]) for r in rows] == [
        ("coop-csc", "PASS"),
        ("coop-middle", "PASS"),
        ("kgcoop", "PASS"),
    ]
    for row in rows:
        assert row["max_rel_diff"] <= 1e-5 and row["grad_rel_diff"] <= 1e-4
        assert row["ratio"] == pytest.approx(row["ours_img_s"] / row["ref_img_s"])
    assert "| method |" in bench.format_table(rows)
    cpu = [spec for spec in bench.PRESETS["cpu"] if spec.method != "cocoop"]
    assert {spec.method for spec in cpu} == {"coop-csc", "coop-middle", "kgcoop"}
    assert all(spec.mode == "train" and spec.classes == 100 for spec in cpu)


def test_agreement_check_sees_a_wrong_kgcoop_term(bench, tmp_path, monkeypatch):
    # KgCoOp pulled towards the opposite of the zero-shot features: logits agree, the training gradients must not.
    original = modeling_cocoop.CoCoOpModel._kgcoop_targets

    def opposite(self, *args, **kwargs):
        return -original(self, *args, **kwargs)

    monkeypatch.setattr(modeling_cocoop.CoCoOpModel, "_kgcoop_targets", opposite)
    code, result = _run(bench, tmp_path, "--modes", "train", "--methods", "kgcoop")
    assert code == 1
    row = result["rows"][0]
    assert row["pass"] == "FAIL" and row["max_rel_diff"] <= 1e-5 and row["grad_rel_diff"] > 1e-4


def test_agreement_check_sees_a_middle_row_assembled_as_front(bench, tmp_path, monkeypatch):
    original = prompt_layout_cocoop.prompt_layout

    def as_front(context_start, eos_index, name_length, n_ctx, position, length):
        assert position == "middle"
        return original(context_start, eos_index, name_length, n_ctx, "front", length)

    monkeypatch.setattr(prompt_layout_cocoop, "prompt_layout", as_front)
    code, result = _run(bench, tmp_path, "--modes", "eval", "--methods", "coop-middle")
    assert code == 1 and result["rows"][0]["pass"] == "FAIL"


def test_half_weight_rows_run_ours_on_a_bf16_clip_under_the_same_prompt_learner(bench, tmp_path):
    code, result = _run(bench, tmp_path, "--dtypes", "bf16", "--modes", "eval", "train", "--half-clip")
    assert code == 0
    rows = result["rows"]
    assert [(r["mode"], r["clip_weights"], r["pass"]) for r in rows] == [
        ("eval", "half", "PASS"),
        ("train", "half", "PASS"),
    ]
    for row in rows:
        # Judged against the fp32 reference with the half-weight floor, which the row states.
        assert row["ours_err_vs_fp32"] <= max(2 * row["ref_err_vs_fp32"], bench.HALF_WEIGHTS_FLOOR["bf16"])
        assert str(bench.HALF_WEIGHTS_FLOOR["bf16"]) in row["tolerance"]
    assert rows[1]["grad_rel_diff"] <= bench.GRAD_TOL["bf16"]


def test_half_clip_flag_needs_a_half_dtype_and_a_grid(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args([*TINY_ARGS, "--dtypes", "fp32", "--half-clip"])
    assert "--half-clip" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--preset", "smoke", "--half-clip"])
    assert "grid flag" in capsys.readouterr().err
    presets = bench.PRESETS["gpu"]
    # The GPU preset measures each target row before (fp32 weights) and after (bf16 weights) on the same machine.
    for classes, mode in ((50, "eval"), (1000, "eval"), (1000, "train")):
        weights = {s.clip_weights for s in presets if (s.classes, s.mode, s.method) == (classes, mode, "cocoop")}
        assert weights == {"fp32", "half"}
