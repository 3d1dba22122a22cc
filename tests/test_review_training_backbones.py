"""Review findings of issue 17 on the training side and the model card (tests/tiny_backbones.py checkpoints, offline):
class-name repeats by the backbone's own rule (5), evaluate_transfer's zero-shot baseline on SigLIP (7), the backbone's
name instead of "CLIP" on cards and banners (8), the card of a template zero-shot run (12), the card's licence (13)."""

import re
from types import SimpleNamespace

import pytest
import yaml

from cocoop_hf.backbones_cocoop import BACKBONES
from cocoop_hf.modelcard_cocoop import render_model_card
from cocoop_hf_training import evaluate_transfer, run_cocoop
from cocoop_hf_training.report import RANDOM_WEIGHTS_NOTE, random_weights_note
from cocoop_hf_training.run_method import check_saved_class_set
from cocoop_hf_training.split_checks import read_class_names_file, repeated_names

from .conftest import DEMO
from .tiny_backbones import save_tiny_backbone


TEST_FILE = str(DEMO / "cifar10_demo" / "test.parquet")
# The demo's 10 classes, two of them differing only in case: one prompt for CLIP's tokenizer, two for a cased one.
CASED_NAMES = ["airplane", "automobile", "bird", "Cat", "cat", "dog", "frog", "horse", "ship", "truck"]


def front_matter(text: str) -> dict:
    return yaml.safe_load(text.split("---")[1])


# ------------------------------------------------------------------------------------- 5: repeated class names


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_names_repeat_by_the_backbones_own_rule(backbone):
    # An exact repeat (or one that differs only by '_', a space in every prompt) is one prompt on every backbone.
    assert "is repeated (positions 0 and 1)" in repeated_names(["tench", "tench"], backbone=backbone)
    assert "reads as the same words as 'sea lake'" in repeated_names(["sea lake", "sea_lake"], backbone=backbone)
    # Case is CLIP's rule only: its tokenizer lowercases, MetaCLIP 2's (and others') need not.
    case = repeated_names(["Tench", "tench"], backbone=backbone)
    if backbone == "clip":
        assert "to CLIP's tokenizer, which ignores case and spacing" in case
    else:
        assert case is None


def test_a_class_names_file_is_read_for_the_runs_backbone(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("Tench\ntench\n")
    assert read_class_names_file(path, "metaclip_2") == ["Tench", "tench"]
    with pytest.raises(ValueError, match=r"'tench' \(line 2\) reads as the same words as 'Tench' \(line 1\)"):
        read_class_names_file(path)  # CLIP, as before
    path.write_text("tench\ntench\n")
    with pytest.raises(ValueError, match=r"'tench' is repeated \(lines 1 and 2\)"):
        read_class_names_file(path, "siglip2")


def test_a_saved_class_specific_context_compares_names_as_its_backbone_does():
    metaclip = SimpleNamespace(backbone_config=SimpleNamespace(model_type="metaclip_2"), class_names=["Cat", "cat"])
    check_saved_class_set("m", metaclip, ["Cat", "cat"])
    # Two prompts for MetaCLIP 2's cased tokenizer: the other order is refused (CLIP's key read both as "cat").
    with pytest.raises(ValueError, match=r"same classes in another order: it has \['Cat', 'cat'\]"):
        check_saved_class_set("m", metaclip, ["cat", "Cat"])
    with pytest.raises(ValueError, match=r"no context for: \['CAT'\]; its classes this run lacks: \['Cat'\]"):
        check_saved_class_set("m", metaclip, ["CAT", "cat"])
    clip = SimpleNamespace(backbone_config=SimpleNamespace(model_type="clip"), class_names=["Cat", "dog"])
    check_saved_class_set("m", clip, ["cat", "DOG"])  # one prompt each for CLIP's tokenizer: accepted, as before


# ------------------------------------------------------- 5, 8, 12: a template zero-shot run on MetaCLIP 2


@pytest.fixture(scope="module")
def metaclip_template_run(tmp_path_factory):
    """run_cocoop's zero-shot baseline with a template on random MetaCLIP 2 weights, class names cased apart."""
    root = tmp_path_factory.mktemp("zs-metaclip")
    folder = save_tiny_backbone(root / "metaclip_2", "metaclip_2")
    names = root / "names.txt"
    names.write_text("\n".join(CASED_NAMES) + "\n")
    argv = [
        "--backbone", str(folder), "--train_file", TEST_FILE, "--eval_file", TEST_FILE, "--image_column", "img",
        "--class_names_file", str(names), "--dataset_display_name", "demo", "--max_eval_samples", "20",
        "--method", "zeroshot", "--prompt_template", "a blurry photo of a {}.", "--random_init_clip", "true",
        "--output_dir", str(root / "out"), "--use_cpu", "true", "--do_eval", "--disable_tqdm", "true",
        "--per_device_eval_batch_size", "20",
    ]  # fmt: skip
    return root / "out", run_cocoop.main(argv)


def test_a_cased_backbone_runs_on_names_clip_would_read_as_one(metaclip_template_run):
    _, content = metaclip_template_run
    assert content["classes"]["base"] == CASED_NAMES[:5] and content["runs"][0]["metrics"]["base"]["num_samples"]


def test_the_run_names_its_backbone_not_clip(metaclip_template_run):
    output_dir, content = metaclip_template_run
    assert content["note"] == random_weights_note("metaclip_2")
    assert content["note"].startswith("MACHINERY DEMO: the MetaCLIP 2 weights are random")
    assert content["recipe"]["MetaCLIP 2 weights"] == "float32" and "CLIP weights" not in content["recipe"]
    # CLIP's banner reads as it always did.
    assert (
        RANDOM_WEIGHTS_NOTE
        == random_weights_note("clip")
        == (
            "MACHINERY DEMO: the CLIP weights are random, so every accuracy below is meaningless; it only shows that "
            "the pipeline runs end to end."
        )
    )


def test_the_card_of_a_template_run_saves_nothing_and_gives_the_template(metaclip_template_run):
    output_dir, _ = metaclip_template_run
    card = (output_dir / "README.md").read_text()
    assert not (output_dir / "config.json").exists()  # nothing saved, and the card no longer says otherwise
    assert "packaged as a CoCoOp model" not in card and "CoCoOpModel.from_pretrained" not in card
    assert "trust_remote_code" not in card and "a photo of a {class name}" not in card
    assert "Nothing is learned and no model is saved: the plain MetaCLIP 2 scores each class with the prompt" in card
    intro = card.split("## How to use")[0]
    assert "`a blurry photo of a {}.`" in intro  # the template itself, not only in the recipe table
    folder = str(output_dir.parent / "metaclip_2")
    assert f'pipeline("zero-shot-image-classification", model="{folder}")' in card
    assert 'hypothesis_template="a blurry photo of a {}."' in card
    assert "Classes scored (5)" in card and "Trained classes" not in card


# ------------------------------------------------------------------ 7, 8: evaluate_transfer's zero-shot SigLIP


def test_evaluate_transfer_scores_zero_shot_siglip_with_its_template(tmp_path):
    folder = save_tiny_backbone(tmp_path / "siglip", "siglip")
    targets = tmp_path / "targets.yaml"
    target = {"eval_file": TEST_FILE, "image_column": "img", "dataset_display_name": "t", "max_eval_samples": 20}
    targets.write_text(yaml.safe_dump({"targets": [target]}))
    base = ["--clip_model_name_or_path", str(folder), "--method", "zeroshot", "--targets", str(targets)]
    base += ["--use_cpu", "true", "--random_init_clip", "true"]
    content = evaluate_transfer.main([*base, "--output_dir", str(tmp_path / "a")])
    template = BACKBONES["siglip"].zero_shot_template
    assert content["backbone"] == "siglip" and content["zero_shot"]["prompt_template"] == template
    run = content["runs"][0]
    assert run["prompt_template"] == template and "method_options" not in run and "method_options" not in content
    assert run["metrics"]["all"]["num_samples"] == 20
    table = (tmp_path / "a" / "results.md").read_text()
    assert "context tokens" not in table and "class name at the end" not in table
    assert content["note"].startswith("MACHINERY DEMO: the SigLIP weights are random")
    # --prompt_template chooses another; it is refused with a trained model, which brings its own prompts.
    other = evaluate_transfer.main([*base, "--prompt_template", "{}", "--output_dir", str(tmp_path / "b")])
    assert other["runs"][0]["prompt_template"] == "{}" and other["zero_shot"]["source"] == "--prompt_template"
    with pytest.raises(ValueError, match=r"--prompt_template is the hand-written prompt of the zero-shot backbone"):
        evaluate_transfer.parse_args(
            ["--model_name_or_path", "m", "--targets", "t", "--output_dir", "o", "--prompt_template", "{}"]
        )


# ------------------------------------------------------------------------------------- 8, 13: the card itself


@pytest.mark.parametrize("backbone", ["metaclip_2", "siglip", "siglip2"])
@pytest.mark.parametrize("method", ["cocoop", "coop", "kgcoop", "zeroshot"])
def test_a_card_on_another_backbone_never_says_clip(backbone, method):
    card = str(
        render_model_card(
            base_model="someone/model",
            results={"dataset": "d", "base": 50.0, "new": 40.0},
            recipe={"shots": 1},
            n_ctx=4,
            class_names=["a", "b"],
            method=method,
            random_weights=True,
            kgcoop_weight=8.0 if method != "zeroshot" else 0.0,
            kgcoop_template="a photo of a {}." if method != "zeroshot" else None,
            backbone=backbone,
        )
    )
    name = BACKBONES[backbone].display_name
    # "CLIP" as a word: MetaCLIP 2's name and the official ZeroshotCLIP do not count.
    assert re.findall(r"\bCLIP\b", card) == [], re.findall(r".{40}\bCLIP\b.{20}", card)
    assert f"random {name} weights" in card and f"randomly initialised {name}" in card
    if method == "zeroshot":
        assert f"zero-shot {name}" in card


@pytest.mark.parametrize(
    "base_model, backbone, expected",
    [
        ("openai/clip-vit-base-patch16", "clip", "mit"),
        ("facebook/metaclip-b32-400m", "clip", "other"),  # MetaCLIP 1 loads as CLIPModel: CC-BY-NC-4.0, not MIT
        ("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "clip", "other"),
        ("google/siglip-base-patch16-224", "siglip", "apache-2.0"),
        ("google/siglip2-base-patch16-224", "siglip2", "apache-2.0"),
        ("someone/siglip2-finetune", "siglip2", "other"),
        ("facebook/metaclip-2-worldwide-huge-quickgelu", "metaclip_2", "cc-by-nc-4.0"),
        ("facebook/other-model", "metaclip_2", "other"),
    ],
)
def test_the_licence_is_the_publishers_only_for_its_release(base_model, backbone, expected):
    card = str(render_model_card(base_model=base_model, backbone=backbone))
    assert front_matter(card)["license"] == expected
    name = BACKBONES[backbone].display_name
    if expected == "other":
        assert "their licence: `other` above; see the base\n  checkpoint's card for its terms." in card
        assert "usually given to released" not in card
    else:
        assert f"`{expected}` above is the one\n  usually given to released {name} weights" in card


def test_a_local_base_folder_and_a_given_licence(tmp_path):
    assert front_matter(str(render_model_card(base_model=str(tmp_path), backbone="clip")))["license"] == "other"
    given = render_model_card(base_model="laion/x", license="mit")
    assert front_matter(str(given))["license"] == "mit"  # the caller's word is kept
    with pytest.raises(ValueError, match=r"`prompt_template` .* is the template of a zero-shot run"):
        render_model_card(base_model="openai/x", method="coop", prompt_template="{}")
