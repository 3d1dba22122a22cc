"""What results and tables call a CoOp-family run: one label per method and options (cocoop_hf_training/report.py
`method_label`), the same in run_cocoop, evaluate_transfer and both grids; the paper's figures only beside the
method as published."""

import json

import pytest

from cocoop_hf_training.report import is_published_form, markdown_table, method_label, method_options


OPTIONS = {"conditional": False, "n_ctx": 4, "class_token_position": "end", "class_specific_context": False}


def run(method, **options):
    return {"method": method, "method_options": {**OPTIONS, "kgcoop_weight": 0.0, **options}}


@pytest.mark.parametrize(
    "entry, label, title, published",
    [
        (run("coop"), "coop", "CoOp", True),
        (run("coop", class_token_position="middle"), "coop (class token middle)", "CoOp (class token middle)", False),
        (run("coop", class_specific_context=True), "coop (CSC)", "CoOp (CSC)", False),
        (run("kgcoop", kgcoop_weight=8.0), "kgcoop", "KgCoOp", True),
        (run("kgcoop", kgcoop_weight=4.0), "kgcoop (w=4)", "KgCoOp (w=4)", False),
        (run("cocoop", conditional=True), "cocoop", "CoCoOp", True),
        (run("cocoop", conditional=True, kgcoop_weight=2.0), "cocoop (+KgCoOp w=2)", "CoCoOp (+KgCoOp w=2)", False),
        ({"method": "zeroshot"}, "zeroshot", "CLIP", True),
        # results written before the options were recorded: the method alone, not "kgcoop (w=0)"
        ({"method": "kgcoop"}, "kgcoop", "KgCoOp", True),
    ],
)  # fmt: skip
def test_method_label_and_published_form(entry, label, title, published):
    from cocoop_hf_training.grid import METHOD_TITLES

    assert method_label(entry) == label
    assert method_label(entry, METHOD_TITLES) == title
    assert is_published_form(entry) is published


def test_h_footnote_only_under_a_table_with_h():
    all_classes = [
        {"dataset": "d", "method": "coop", "seeds": [1], "scores": {"all": {"mean": 50.0, "std": 0, "n": 1}}}
    ]
    table = markdown_table(all_classes)
    assert "Accuracy (%)" in table and "H = 2" not in table and "harmonic" not in table
    stats = {c: {"mean": 50.0, "std": 0, "n": 1} for c in ("base", "new", "H")}
    table = markdown_table([{"dataset": "d", "method": "coop", "seeds": [1], "scores": stats}])
    assert "H = 2·Base·New/(Base+New)" in table


# ------------------------------------------------------------------------------------------- evaluate_transfer


@pytest.fixture(scope="module")
def eurosat(tmp_path_factory):
    from cocoop_hf_training.benchmarks import load_benchmark

    from .test_benchmark_runs import make_eurosat

    root = tmp_path_factory.mktemp("labels-data")
    make_eurosat(root)
    return root, load_benchmark("EuroSAT", root, check_files=False)["class_names"]


def save_model(folder, class_names, **flags):
    """A CoCoOp-family model on the tiny random CLIP, saved as run_cocoop saves it (with its image processor)."""
    from transformers import CLIPImageProcessor

    from cocoop_hf_training.cli import ModelArguments
    from cocoop_hf_training.modeling_setup import build_model

    from .conftest import TINY_CLIP

    model_args = ModelArguments(clip_model_name_or_path=str(TINY_CLIP), random_init_clip=True, **flags)
    model = build_model(model_args, class_names, seed=1)
    model._image_processor = CLIPImageProcessor.from_pretrained(TINY_CLIP)
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize(
    "flags, method, label",
    [
        ({"method": "kgcoop"}, "kgcoop", "kgcoop"),
        ({"method": "kgcoop", "kgcoop_weight": 4.0}, "kgcoop", "kgcoop (w=4)"),
        ({"method": "coop", "class_token_position": "middle"}, "coop", "coop (class token middle)"),
        ({"method": "coop", "class_specific_context": True}, "coop", "coop (CSC)"),
    ],
)
def test_evaluate_transfer_labels_a_saved_model_by_its_options(eurosat, tmp_path, flags, method, label):
    from cocoop_hf_training import evaluate_transfer

    from .conftest import TINY_CLIP

    root, class_names = eurosat
    model = save_model(tmp_path / "model", class_names, **flags)
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps({"targets": [{"benchmark": "EuroSAT", "data_root": str(root)}]}))
    content = evaluate_transfer.main(
        ["--model_name_or_path", str(tmp_path / "model"), "--targets", str(targets), "--output_dir",
         str(tmp_path / "out"), "--use_cpu", "true", "--per_device_eval_batch_size", "8"]
    )  # fmt: skip
    (entry,) = content["runs"]
    assert entry["method"] == method and method_label(entry) == label
    expected = method_options(model.config)
    assert {k: entry["method_options"][k] for k in expected} == expected
    assert content["aggregate"][0]["label"] == label
    assert f"| EuroSAT | {label} | 1 |" in (tmp_path / "out" / "results.md").read_text()
    # the arguments record the loaded model, not the unused defaults (--method cocoop, the OpenAI CLIP)
    recorded = content["arguments"]["model"]
    assert recorded["method"] == method and recorded["clip_model_name_or_path"] == str(TINY_CLIP)
    assert recorded["kgcoop_weight"] == model.config.kgcoop_weight
    assert recorded["class_token_position"] == model.config.class_token_position
    assert "method" in recorded["from_saved_model"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["runs"][0]["method_options"] == entry["method_options"]


def test_evaluate_transfer_of_zero_shot_records_the_given_arguments(eurosat, tmp_path):
    from cocoop_hf_training import evaluate_transfer

    from .conftest import TINY_CLIP

    root, _ = eurosat
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps({"targets": [{"benchmark": "EuroSAT", "data_root": str(root)}]}))
    content = evaluate_transfer.main(
        ["--clip_model_name_or_path", str(TINY_CLIP), "--random_init_clip", "true", "--method", "zeroshot",
         "--targets", str(targets), "--output_dir", str(tmp_path / "out"), "--use_cpu", "true"]
    )  # fmt: skip
    assert method_label(content["runs"][0]) == "zeroshot"
    recorded = content["arguments"]["model"]
    assert recorded["method"] == "zeroshot" and "from_saved_model" not in recorded


def test_model_card_of_an_all_classes_run_has_its_accuracy():
    """A --protocol all run (every CSC run) had no Results section and no model-index: only base/new/H were passed."""
    from cocoop_hf_training.report import aggregate, model_card

    options = {**OPTIONS, "class_specific_context": True, "kgcoop_weight": 0.0}
    entry = {"dataset": "d", "method": "coop", "seed": 1, "method_options": options,
             "metrics": {"all": {"accuracy": 61.25}}}  # fmt: skip
    card = model_card(aggregate([entry]), base_model="openai/clip-vit-base-patch16", recipe={}, n_ctx=4,
                      method="coop", options=options)  # fmt: skip
    (result,) = card.data.to_dict()["model-index"][0]["results"]
    assert result["dataset"]["name"] == "d (coop (CSC))"
    assert [(m["type"], m["value"]) for m in result["metrics"]] == [("accuracy", 61.25)]
    assert "## Results" in card.text and "61.25" in card.text
