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
        ({"results": {"dataset": "d", "acc": 50.0}}, ValueError, "unknown keys \\['acc'\\]: use .*accuracy"),
        ({"results": {"dataset": "d", "accuracy": 100.5}}, ValueError, "in percent, in \\[0, 100\\]"),
        ({"results": {"dataset": "d", "accuracy": float("nan")}}, TypeError, "finite number"),
        ({"class_specific_context": True}, ValueError, "option of CoOp and KgCoOp.*got method 'cocoop'"),
        ({"class_specific_context": True, "method": "zeroshot"}, ValueError, "got method 'zeroshot'"),
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
    # CoOp-style prompts cite CoOp (IJCV 2022) beside CoCoOp; CoCoOp's card does not.
    assert "zhou2022coop" in coop and "zhou2022coop" not in cocoop
    # Only CoCoOp's prompt depends on the image: its card alone says inference is per image and class.
    kgcoop = render_model_card(base_model=BASE, n_ctx=4, method="kgcoop").text
    assert "once per image and class" in cocoop
    for card in (coop, zeroshot, kgcoop):
        assert "once per image and class" not in card and "runs once per class set" in card
    with pytest.raises(ValueError, match="`method` must be one of"):
        render_model_card(base_model=BASE, method="vpt")


def test_random_weights_without_results_are_labelled():
    card = render_model_card(base_model=BASE, random_weights=True)
    assert "random-weights" in front_matter(card)["tags"] and "Warning: random weights" in card.text
    assert "random-weights" not in front_matter(render_model_card(base_model=BASE))["tags"]


def test_local_clip_folder_is_named_not_linked(tmp_path):
    local = tmp_path / "my-clip"
    local.mkdir()
    for path in (str(local), "cocoop_hf_training/demo/tiny-clip", "./clip"):
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
    from cocoop_hf_training.report import aggregate, markdown_table, model_card

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


def csc_card(**kwargs):
    kwargs = {"base_model": BASE, "n_ctx": 4, "method": "coop", "class_specific_context": True, **kwargs}
    return render_model_card(class_names=["tench", "goldfish", "stingray", "hen"], **kwargs)


@pytest.mark.parametrize("method", ["coop", "kgcoop"])
def test_class_specific_context_card_keeps_to_the_trained_classes(method):
    """One learned context per class: the card says so, promises no new classes, and shows no other class set."""
    card = csc_card(method=method, kgcoop_weight=8.0 if method == "kgcoop" else 0.0)
    text = card.text
    intro = text.split("## How to use")[0]
    assert "Each trained class has its own 4 learned context vectors (class-specific context)" in intro
    assert "scores exactly its 4 trained classes, in their trained order" in intro
    assert "cannot classify new classes" in intro
    for promise in ("work for any class names", "never seen in training", "shared by every image and every class"):
        assert promise not in text, promise
    usage = text.split("## How to use")[1].split("## Limitations")[0]
    assert 'pipeline("image-classification", model="<your-repo-id>", trust_remote_code=True)' in usage
    assert "set_class_names" not in usage and "candidate_labels=[" not in usage
    assert "exactly the\ntrained labels in that order" in usage
    assert "Trained classes, in the model's order (4): tench, goldfish, stingray, hen." in usage
    limitations = text.split("## Limitations")[1]
    assert "A learned context exists only for the 4 trained classes: the model cannot score any other class set" in (
        limitations
    )
    assert front_matter(card)["pipeline_tag"] == "image-classification"
    # A shared context keeps the zero-shot usage and claims, and no class-specific limitation.
    shared_context = render_model_card(base_model=BASE, n_ctx=4, method=method, class_names=["tench", "goldfish"])
    assert "candidate_labels=[" in shared_context.text and "set_class_names" in shared_context.text
    assert "The learned prompts work for any class names" in shared_context.text
    assert "A learned context exists only" not in shared_context.text
    assert front_matter(shared_context)["pipeline_tag"] == "zero-shot-image-classification"


def test_class_specific_context_card_snippets_run(tmp_path, tiny_clip_dir, monkeypatch):
    """
    The card a saved class-specific-context model renders for itself: its snippets run as written, and its prose
    holds (the zero-shot pipeline takes exactly the trained labels in order and refuses another order).
    """
    from transformers import pipeline

    from cocoop_hf import CoCoOpModel
    from cocoop_hf.sharing_cocoop import _render_card

    from .cocoop_sharing import write_images
    from .conftest import CLASS_NAMES

    model = CoCoOpModel.from_clip(str(tiny_clip_dir), CLASS_NAMES, conditional=False, class_specific_context=True)
    folder = tmp_path / "csc"
    model.save_pretrained(folder)
    card = _render_card(model, str(folder))
    blocks = re.findall(r"```python\n(.*?)```", card.text, flags=re.S)
    assert len(blocks) == 2
    images = write_images(tmp_path / "images")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photo.jpg").write_bytes(images["red"].read_bytes())
    namespace = {}
    for block in blocks:
        exec(compile(block, "model-card-snippet", "exec"), namespace)
    assert namespace["probs"].shape == (1, len(CLASS_NAMES))
    assert "scores exactly its 7 trained classes" in card.text
    ranked = namespace["classifier"]("photo.jpg", top_k=len(CLASS_NAMES))
    assert sorted(entry["label"] for entry in ranked) == sorted(CLASS_NAMES)
    zero_shot = pipeline("zero-shot-image-classification", model=str(folder), trust_remote_code=True)
    assert len(zero_shot("photo.jpg")) == len(zero_shot("photo.jpg", candidate_labels=CLASS_NAMES)) == 7
    with pytest.raises(ValueError, match="class-specific context"):
        zero_shot("photo.jpg", candidate_labels=CLASS_NAMES[::-1])


@pytest.mark.parametrize(
    "position, layout",
    [
        ("middle", "`[first half of the context] {class name} [second half of the context].`"),
        ("front", "`{class name} [context].`"),
    ],
)
@pytest.mark.parametrize("method", ["cocoop", "coop", "kgcoop"])
def test_intro_gives_the_prompt_layout(method, position, layout):
    text = render_model_card(base_model=BASE, n_ctx=4, method=method, class_token_position=position).text
    intro = text.split("Prompt options")[0]
    assert f"form the prompt {layout}" in intro or f"the prompt {layout} adapts" in intro
    assert "`[context] {class name}.`" not in text
    csc = csc_card(class_token_position=position).text.split("Prompt options")[0]
    assert f"forming the prompt {layout}" in csc and "`[context] {class name}.`" not in csc


@pytest.mark.parametrize(
    "method, name", [("cocoop", "CoCoOp"), ("coop", "CoOp"), ("kgcoop", "KgCoOp"), ("zeroshot", "zero-shot CLIP")]
)
def test_caveats_name_the_method_used(method, name):
    card = render_model_card(
        base_model=BASE, method=method, results={"dataset": "d", "base": 20.0, "new": 10.0, "random_weights": True}
    ).text
    assert f"says nothing about {name}'s accuracy" in card and f"not a measure of {name}'s accuracy" in card
    assert "These prompts inherit CLIP's biases" in card
    if method != "cocoop":
        assert "CoCoOp's" not in card and "CoCoOp inherits" not in card


def test_all_classes_results_get_a_row_and_a_model_index_entry():
    """A run on all classes (`--protocol all`, every class-specific-context run) reports one accuracy."""
    card = csc_card(results={"dataset": "eurosat", "accuracy": 61.234}, model_name="me/csc")
    text = card.text
    assert "## Results" in text and "| Dataset | Accuracy (%) |" in text and "| eurosat | 61.23 |" in text
    assert "over all the dataset's classes" in text and "base-to-new protocol" not in text
    entry = front_matter(card)["model-index"][0]
    assert entry["name"] == "me/csc" and entry["results"][0]["task"]["type"] == "image-classification"
    assert entry["results"][0]["metrics"] == [{"type": "accuracy", "value": 61.23, "name": "Accuracy (%)"}]
    mixed = render_model_card(
        base_model=BASE,
        results=[
            {"dataset": "a", "base": 80.0, "new": 60.0},
            {"dataset": "b", "accuracy": 50.0, "random_weights": True},
        ],
    )
    assert "| Dataset | Base accuracy (%) | New accuracy (%) | H, harmonic mean (%) | Accuracy (%) |" in mixed.text
    assert (
        "| a (random weights) | 80.00 | 60.00 | 68.57 | - |" in mixed.text
        and "| b (random weights) | - | - | - | 50.00 |" in mixed.text
    )
    assert "base-to-new protocol" in mixed.text and "over all the dataset's classes" in mixed.text
    metrics = [result["metrics"] for result in front_matter(mixed)["model-index"][0]["results"]]
    assert [m["name"] for m in metrics[1]] == ["Accuracy (%), random CLIP weights"]
    assert "None" not in str(card) and "None" not in str(mixed)
