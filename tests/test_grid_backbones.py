"""The Table 1 grid on a non-CLIP backbone: a real run_cocoop per cell (tiny random SigLIP, one epoch, one shot) on a
miniature official EuroSAT layout; the flags after `--` reach every cell, and the zero-shot cell scores the plain
SigLIP with SigLIP's own template."""

import json

from cocoop_hf_training import run_benchmark

from .test_benchmark_runs import make_eurosat
from .test_run_benchmark import grid_argv
from .tiny_backbones import save_tiny_backbone


def test_grid_runs_on_a_siglip_backbone(tmp_path):
    make_eurosat(tmp_path / "data")
    backbone = save_tiny_backbone(tmp_path / "siglip", "siglip")
    extra = [
        "--backbone", str(backbone), "--random_init_clip", "true",
        "--num_train_epochs", "1", "--num_shots", "1", "--per_device_eval_batch_size", "4",
        "--use_cpu", "true", "--fp16", "false", "--dataloader_num_workers", "0", "--disable_tqdm", "true",
    ]  # fmt: skip
    argv = grid_argv(tmp_path, methods=("zeroshot", "cocoop"), seeds=("1",), datasets=("eurosat",), extra=extra)
    table = run_benchmark.main(argv)

    assert [(row["dataset"], row["method"]) for row in table["rows"]] == [
        ("EuroSAT", "zeroshot"),
        ("EuroSAT", "cocoop"),
    ]
    for method in ("zeroshot", "cocoop"):
        results = json.loads((tmp_path / "grid" / "EuroSAT" / method / "seed1" / "results.json").read_text())
        assert results["recipe"]["backbone"] == "siglip"  # the cell ran on the given backbone, not the default CLIP
        assert "SigLIP weights" in results["recipe"]
    zero_shot = json.loads((tmp_path / "grid" / "EuroSAT" / "zeroshot" / "seed1" / "results.json").read_text())
    assert zero_shot["zero_shot"]["prompt_template"] == "This is a photo of {}."
    card = (tmp_path / "grid" / "EuroSAT" / "cocoop" / "seed1" / "README.md").read_text()
    assert "SigLIP" in card and "CLIP weights" not in card
