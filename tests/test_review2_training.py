"""Reviewer 2's training wording findings: what the scripts tell a user of a non-CLIP backbone names that backbone
(or "the plain backbone" where it is not known yet); CLIP runs read exactly as before."""

from collections import namedtuple
from pathlib import Path

import matplotlib.figure
import pytest

from cocoop_hf.prompt_ids_cocoop import build_prompt_ids
from cocoop_hf_training import run_benchmark
from cocoop_hf_training.cli import ModelArguments
from cocoop_hf_training.data_loading import load_benchmark_splits
from cocoop_hf_training.grid import METHOD_TITLES, method_titles
from cocoop_hf_training.report import RANDOM_WEIGHTS_NOTE, bar_chart, chart_banner, random_weights_note
from cocoop_hf_training.run_arguments import parse_args
from cocoop_hf_training.split_checks import name_key, repeated_names
from cocoop_hf_training.transfer_tables import transfer_tables

from .test_benchmark_runs import make_eurosat
from .test_run_benchmark import grid_argv
from .tiny_backbones import save_tiny_backbone, tiny_tokenizer


REPO = Path(__file__).resolve().parent.parent
CLIP_BANNER = "RANDOM CLIP WEIGHTS: machinery demo, accuracies are meaningless"  # the banner CLIP charts always had


# ------------------------------------------------------------------ 1: no "CLIP" in messages to every backbone's users


def test_zero_shot_messages_name_the_plain_backbone_not_clip(tmp_path):
    data = ["--benchmark", "eurosat", "--data_root", str(tmp_path)]
    with pytest.raises(ValueError, match="--method zeroshot scores the plain backbone with a fixed prompt") as info:
        ModelArguments(method="zeroshot", kgcoop_weight=4.0)
    assert "CLIP" not in str(info.value)
    with pytest.raises(
        ValueError, match=r"drop --do_train \(the plain backbone is evaluated zero-shot only\)"
    ) as info:
        parse_args(["--method", "zeroshot", "--do_train", *data, "--output_dir", str(tmp_path / "out")])
    assert "CLIP" not in str(info.value)
    args = parse_args(
        [
            "--benchmark",
            "imagenetv2",
            "--protocol",
            "all",
            "--data_root",
            str(tmp_path),
            "--output_dir",
            str(tmp_path / "o"),
        ]
    )
    data_args = args[1]
    with pytest.raises(ValueError, match=r"or the plain backbone zero-shot \(--method zeroshot\)") as info:
        load_benchmark_splits(data_args, ["train", "test"])
    assert "CLIP" not in str(info.value)


# --------------------------------------------------------------------- 2: the chart banner names the run's backbone


def test_chart_banner_names_the_backbones_whose_weights_are_random():
    assert chart_banner(RANDOM_WEIGHTS_NOTE) == CLIP_BANNER  # CLIP charts unchanged
    assert chart_banner(random_weights_note("siglip")) == (
        "RANDOM SigLIP WEIGHTS: machinery demo, accuracies are meaningless"
    )
    assert chart_banner(random_weights_note("siglip2")).startswith("RANDOM SigLIP 2 WEIGHTS: ")
    # "the CLIP weights" is no part of "the MetaCLIP 2 weights": a MetaCLIP 2 chart does not say CLIP too
    assert chart_banner(random_weights_note("metaclip_2")).startswith("RANDOM MetaCLIP 2 WEIGHTS: ")
    joined = " ".join(sorted([RANDOM_WEIGHTS_NOTE, random_weights_note("metaclip_2")]))  # a grid's joined notes
    assert chart_banner(joined).startswith("RANDOM CLIP + MetaCLIP 2 WEIGHTS: ")
    assert chart_banner("some other note").startswith("RANDOM WEIGHTS: ")


@pytest.mark.parametrize(("backbone", "banner"), [("clip", CLIP_BANNER), ("siglip", "RANDOM SigLIP WEIGHTS: ")])
def test_the_chart_draws_the_banner_of_its_note(tmp_path, monkeypatch, backbone, banner):
    titles = []
    original = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(
        matplotlib.figure.Figure,
        "suptitle",
        lambda self, text, **kw: titles.append(text) or original(self, text, **kw),
    )
    rows = [{"dataset": "EuroSAT", "method": "zeroshot", "scores": {"all": {"mean": 50.0, "std": 0.0}}}]
    bar_chart(rows, tmp_path / "chart.png", random_weights_note(backbone))
    assert len(titles) == 1 and titles[0].startswith(banner)
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")


# ------------------------------------------------------------ 3: the zero-shot row is titled by the grid's backbone


def _zero_shot_content(backbone: str | None, where: str) -> dict:
    run = {"dataset": "EuroSAT", "method": "zeroshot", "seed": 1, "metrics": {"all": {"accuracy": 40.0}}}
    run["metrics"].update({"base": {"accuracy": 50.0}, "new": {"accuracy": 30.0}})
    run["H"] = 37.5
    content = {"note": None, "runs": [run], "aggregate": []}
    if backbone is not None and where == "recipe":
        content["recipe"] = {"method": "zeroshot", "backbone": backbone}  # run_cocoop's record
    elif backbone is not None:
        content["backbone"] = backbone  # evaluate_transfer's record
    return content


def test_method_titles_read_the_cells_backbone():
    assert method_titles({}) == METHOD_TITLES and METHOD_TITLES["zeroshot"] == "CLIP"  # CLIP cells: unchanged
    assert method_titles(_zero_shot_content(None, "recipe")) == METHOD_TITLES
    assert method_titles(_zero_shot_content("siglip", "recipe"))["zeroshot"] == "SigLIP"
    assert method_titles(_zero_shot_content("siglip2", "top"))["zeroshot"] == "SigLIP 2"
    assert method_titles(_zero_shot_content("metaclip_2", "recipe"))["cocoop"] == "CoCoOp"


@pytest.mark.parametrize(("backbone", "title"), [(None, "CLIP"), ("siglip", "SigLIP"), ("metaclip_2", "MetaCLIP 2")])
def test_table1_titles_the_zero_shot_row_by_backbone(backbone, title):
    table = run_benchmark.table1({"cell": _zero_shot_content(backbone, "recipe")}, ["EuroSAT"], ["zeroshot"])
    assert [row["title"] for row in table["rows"]] == [title]
    assert [average["title"] for average in table["average"].values()] == [title]


Cell = namedtuple("Cell", "kind dataset method seed")


@pytest.mark.parametrize(("backbone", "title"), [(None, "CLIP"), ("siglip2", "SigLIP 2")])
def test_transfer_tables_title_the_zero_shot_row_by_backbone(backbone, title):
    content = _zero_shot_content(backbone, "top")
    content["runs"][0]["dataset"] = "ImageNet"
    tables = transfer_tables({Cell("evaluate", "ImageNet", "zeroshot", 1): content}, ["zeroshot"], [])
    assert [label["title"] for label in tables["labels"].values()] == [title]


def test_a_siglip_grid_titles_its_zero_shot_row_and_chart_siglip(tmp_path, monkeypatch):
    titles = []
    original = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(
        matplotlib.figure.Figure,
        "suptitle",
        lambda self, text, **kw: titles.append(text) or original(self, text, **kw),
    )
    make_eurosat(tmp_path / "data")
    backbone = save_tiny_backbone(tmp_path / "siglip", "siglip")
    extra = [
        "--backbone", str(backbone), "--random_init_clip", "true", "--per_device_eval_batch_size", "4",
        "--use_cpu", "true", "--fp16", "false", "--dataloader_num_workers", "0", "--disable_tqdm", "true",
    ]  # fmt: skip
    table = run_benchmark.main(
        grid_argv(tmp_path, methods=("zeroshot",), seeds=("1",), datasets=("eurosat",), extra=extra)
    )
    assert [row["title"] for row in table["rows"]] == ["SigLIP"]
    markdown = (tmp_path / "grid" / "table1.md").read_text()
    assert "| EuroSAT | SigLIP |" in markdown and "| CLIP |" not in markdown
    # the cell's chart and the grid's chart both name SigLIP
    assert titles and all(text.startswith("RANDOM SigLIP WEIGHTS: ") for text in titles)


# ------------------------------------------------------- 4: the data checks are weaker than the model's own check


@pytest.mark.parametrize("backbone", ["siglip", "siglip2"])
def test_hen_and_hen_pass_the_data_checks_and_the_model_refuses_them(backbone):
    names = ["Hen", "hen"]
    assert repeated_names(names, backbone=backbone) is None and name_key("Hen", backbone) != name_key("hen", backbone)
    tokenizer = tiny_tokenizer(backbone)  # lowercases, as SigLIP's and SigLIP 2's tokenizers do
    n_ctx = len(tokenizer("a photo of a", add_special_tokens=False)["input_ids"])
    with pytest.raises(ValueError, match=r"duplicate class name 'hen' at index 1: it tokenises to the same prompt"):
        build_prompt_ids(tokenizer, names, "a photo of a", n_ctx, 64, backbone=backbone)


def test_the_docs_say_the_data_checks_are_weaker_and_siglip_lowercases():
    readme = " ".join((REPO / "cocoop_hf_training" / "README.md").read_text().split())
    assert "These data checks are weaker than the model's own check by its tokenizer's ids" in readme
    assert "a SigLIP run with classes `Hen` and `hen` passes the data checks and is refused" in readme
    doc = " ".join(name_key.__doc__.split())
    assert "(MetaCLIP 2, SigLIP, SigLIP 2)" not in doc and "SigLIP's and SigLIP 2's lowercase" in doc
