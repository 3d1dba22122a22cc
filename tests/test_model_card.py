"""Model cards: front matter, sections present only with their data, random-weight labels, runnable snippets."""

import re
from pathlib import Path

import pytest
import yaml

import cocoop_hf
from cocoop_hf import render_model_card
from cocoop_hf.modelcard_cocoop import CARD_TEMPLATE_FILE

from .cocoop_sharing import shared_artifacts


BASE = "openai/clip-vit-base-patch16"
RECIPE = {"shots": 16, "seed": 1, "epochs": 10, "lr": 0.002, "batch_size": 1}


def front_matter(card) -> dict:
    return yaml.safe_load(str(card).split("---")[1])


def test_full_card():
    card = render_model_card(
        base_model=BASE,
        datasets="cifar10",
        results={"dataset": "cifar10", "base": 90.0, "new": 80.0, "H": 84.7},
        recipe=RECIPE,
        repo_id="me/cocoop-cifar10",
        class_names=["airplane", "automobile", "bird"],
        n_ctx=4,
    )
    meta = front_matter(card)
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "zero-shot-image-classification"
    assert meta["base_model"] == BASE and meta["datasets"] == ["cifar10"] and meta["license"] == "mit"
    assert {"cocoop", "prompt-learning", "clip"} <= set(meta["tags"]) and "random-weights" not in meta["tags"]
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert [m["value"] for m in metrics] == [90.0, 80.0, 84.7]
    text = card.text
    for section in ("## How to use", "## Training recipe", "## Results", "## Limitations", "## Citation"):
        assert section in text
    assert "| Shots per class | 16 |" in text and "| Learning rate | 0.002 |" in text
    assert "| cifar10 | 90.00 | 80.00 | 84.70 |" in text
    assert "2203.05557" in text and "Zhou, Kaiyang and Yang, Jingkang and Loy, Chen Change and Liu, Ziwei" in text
    assert 'pipeline("zero-shot-image-classification", model="me/cocoop-cifar10"' in text
    assert "random" not in text.lower().replace("randomly initialised", "")
    assert "None" not in str(card)


def test_missing_metrics_omit_sections():
    card = render_model_card(base_model=BASE)
    assert "model-index" not in front_matter(card)
    assert "## Results" not in card.text and "## Training recipe" not in card.text
    assert "None" not in str(card)
    partial = render_model_card(
        base_model=BASE, results={"dataset": "cifar10", "base": 50.0, "new": None}, recipe={"shots": 4, "lr": None}
    )
    assert "| Dataset | Base accuracy (%) |" in partial.text and "New accuracy" not in partial.text
    assert "Learning rate" not in partial.text and "None" not in str(partial)
    assert [m["value"] for m in front_matter(partial)["model-index"][0]["results"][0]["metrics"]] == [50.0]
    assert "## Results" not in render_model_card(base_model=BASE, results={"dataset": "cifar10"}).text


def test_harmonic_mean_computed():
    card = render_model_card(base_model=BASE, results={"dataset": "d", "base": 60.0, "new": 30.0})
    assert "| d | 60.00 | 30.00 | 40.00 |" in card.text


def test_random_weights_are_labelled():
    card = render_model_card(
        base_model=BASE, results=[{"dataset": "cifar10", "base": 20.0, "new": 10.0, "random_weights": True}]
    )
    meta = front_matter(card)
    assert "random-weights" in meta["tags"]
    assert all("random CLIP weights" in m["name"] for m in meta["model-index"][0]["results"][0]["metrics"])
    assert "Warning: random weights" in card.text and "cifar10 (random weights)" in card.text


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"base_model": ""}, ValueError, "base_model"),
        ({"results": {"dataset": "d", "base": 101.0}}, ValueError, "in percent, in \\[0, 100\\]"),
        ({"results": {"dataset": "d", "base": -0.5}}, ValueError, "in percent, in \\[0, 100\\]"),
        ({"results": {"dataset": "d", "hm": 50.0}}, ValueError, "unknown keys \\['hm'\\]: use dataset, base, new, H"),
        ({"results": {"dataset": "d", "base": "high"}}, TypeError, "finite number"),
        ({"results": {"base": 0.5}}, ValueError, "'dataset'"),
        ({"results": {"dataset": "d", "accuracy": 0.5}}, ValueError, "unknown keys"),
        ({"results": "0.9"}, TypeError, "results"),
        ({"recipe": [16]}, TypeError, "recipe"),
        ({"datasets": [1]}, TypeError, "datasets"),
    ],
)
def test_bad_input(kwargs, error, match):
    kwargs = {"base_model": BASE, **kwargs}
    with pytest.raises(error, match=match):
        render_model_card(**kwargs)


def test_the_template_is_one_file_shipped_with_the_package():
    """One template: package data beside the renderer (no hand-kept copy elsewhere), declared for wheels."""
    import tomllib

    assert CARD_TEMPLATE_FILE.is_file() and CARD_TEMPLATE_FILE.parent == Path(cocoop_hf.__file__).parent
    assert CARD_TEMPLATE_FILE.read_text().startswith("---\n{{ card_data }}\n---")
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert CARD_TEMPLATE_FILE.name in pyproject["tool"]["setuptools"]["package-data"]["cocoop_hf"]
    copies = [
        p
        for p in Path(__file__).parents[1].rglob("*.md")
        if p.read_text(errors="ignore").startswith("---\n{{ card_data")
    ]
    assert copies == [CARD_TEMPLATE_FILE], copies


def test_card_snippets_run(tmp_path_factory, monkeypatch):
    """The how-to-use snippets on the card run as written, with the repo id pointing at a saved folder."""
    shared = shared_artifacts(tmp_path_factory)
    card = render_model_card(base_model=BASE, repo_id=str(shared.full_dir), class_names=["cat", "dog", "car"])
    blocks = re.findall(r"```python\n(.*?)```", card.text, flags=re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(shared.images["red"].parent)
    (shared.images["red"].parent / "photo.jpg").write_bytes(shared.images["red"].read_bytes())
    namespace = {}
    for block in blocks:
        exec(compile(block, "model-card-snippet", "exec"), namespace)
    assert namespace["probs"].shape == (1, 3)


def test_card_names_the_training_method():
    cocoop = render_model_card(base_model=BASE, n_ctx=4).text
    coop = render_model_card(base_model=BASE, n_ctx=4, method="coop").text
    zeroshot = render_model_card(base_model=BASE, n_ctx=4, method="zeroshot").text
    assert "learned with **CoCoOp**" in cocoop and "bias on 4 learned context vectors" in cocoop
    assert "learned with **CoOp**" in coop and "meta-network turns" not in coop
    assert "zero-shot CLIP" in zeroshot and "Nothing is learned" in zeroshot and "learned with" not in zeroshot
    assert "`[context] {class name}.`" in coop
    # Only CoCoOp's prompt depends on the image: its card alone says inference is per image and class.
    kgcoop = render_model_card(base_model=BASE, n_ctx=4, method="kgcoop").text
    assert "once per image and class" in cocoop
    for card in (coop, zeroshot, kgcoop):
        assert "once per image and class" not in card and "runs once per class set" in card
    with pytest.raises(ValueError, match="`method` must be one of"):
        render_model_card(base_model=BASE, method="maple")


def test_random_weights_without_results_are_labelled():
    card = render_model_card(base_model=BASE, random_weights=True)
    assert "random-weights" in front_matter(card)["tags"] and "Warning: random weights" in card.text
    assert "random-weights" not in front_matter(render_model_card(base_model=BASE))["tags"]


def test_local_clip_folder_is_named_not_linked(tmp_path):
    local = tmp_path / "my-clip"
    local.mkdir()
    for path in (str(local), "training/demo/tiny-clip", "./clip"):
        card = render_model_card(base_model=path)
        assert "huggingface.co/" + path not in card.text and "https://huggingface.co/." not in card.text
        assert f"`{path}` (a local folder)" in card.text
        assert "base_model" not in front_matter(card)
    hub = render_model_card(base_model=BASE)
    assert f"[`{BASE}`](https://huggingface.co/{BASE})" in hub.text and front_matter(hub)["base_model"] == BASE


def test_local_single_word_folder_is_not_a_hub_id(tmp_path, monkeypatch):
    (tmp_path / "clip-b16").mkdir()
    monkeypatch.chdir(tmp_path)
    card = render_model_card(base_model="clip-b16")
    assert "huggingface.co/clip-b16" not in card.text and "base_model" not in front_matter(card)
    monkeypatch.chdir(tmp_path.parent)
    assert front_matter(render_model_card(base_model="clip-b16"))["base_model"] == "clip-b16"


def test_card_and_results_table_name_h_alike():
    """results.json runs, results.md and the card: one key (`H`), one unit (percent), one column title."""
    from training.report import aggregate, markdown_table, model_card

    run = {"dataset": "d", "method": "cocoop", "seed": 1, "H": 2 * 80 * 60 / 140,
           "metrics": {"base": {"accuracy": 80.0}, "new": {"accuracy": 60.0}}}  # fmt: skip
    rows = aggregate([run])
    table = markdown_table(rows)
    card = model_card(rows, base_model=BASE, recipe={}).text
    header = "Base accuracy (%) | New accuracy (%) | H, harmonic mean (%) |"
    assert header in table and header in card
    assert "| 80.00 | 60.00 | 68.57 |" in table and "| d (cocoop) | 80.00 | 60.00 | 68.57 |" in card


def test_card_names_the_coop_family_options():
    kgcoop = render_model_card(
        base_model=BASE, n_ctx=4, method="kgcoop", kgcoop_weight=8.0, kgcoop_template="a photo of a {}, a type of pet."
    ).text
    assert "learned with **KgCoOp**" in kgcoop and "Yao et al., CVPR 2023" in kgcoop
    assert "**KgCoOp regulariser**, weight w = 8:" in kgcoop and "`a photo of a {}, a type of pet.`" in kgcoop
    assert "yao2023kgcoop" in kgcoop and "zhou2022cocoop" in kgcoop
    options = render_model_card(
        base_model=BASE, method="coop", class_token_position="front", class_specific_context=True
    ).text
    assert "Class-token position **front**" in options and "`{class name} [context].`" in options
    assert "**Class-specific context** (CoOp's CSC)" in options and "refuses any other class set" in options
    assert "KgCoOp" not in options and "yao2023kgcoop" not in options
    middle = render_model_card(base_model=BASE, class_token_position="middle", kgcoop_weight=1.5).text
    assert "Class-token position **middle**" in middle and "weight w = 1.5" in middle  # KgCoOp on CoCoOp
    plain = render_model_card(base_model=BASE).text
    assert "Prompt options" not in plain and "Class-token position" not in plain
    with pytest.raises(ValueError, match="`class_token_position` must be 'end', 'middle' or 'front'"):
        render_model_card(base_model=BASE, class_token_position="start")
    with pytest.raises(ValueError, match="`kgcoop_weight` must be a number >= 0"):
        render_model_card(base_model=BASE, kgcoop_weight=-1)
