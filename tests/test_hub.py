"""Hub round trip without the network: a Hub-layout cache for downloads, patched HfApi for uploads."""

import json
import os
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import EntryNotFoundError
from PIL import Image
from transformers.dynamic_module_utils import get_relative_import_files

import cocoop_hf
from cocoop_hf import CoCoOpModel, CoCoOpProcessor
from cocoop_hf.sharing_cocoop import AUTO_MAP

from .cocoop_sharing import (
    ADAPTER_PROCESSOR_FILES,
    ADAPTER_REPO,
    CLIP_REPO,
    FULL_REPO,
    PROCESSOR_FILES,
    TOKENIZER_FILES,
    no_package_results,
)


# Exactly the code that loading and running need: no checkpoint converter, no card renderer.
REQUIRED_CODE = {
    "model_parts_cocoop.py",
    "prompt_learner_deep.py",
    "promptsrc_cocoop.py",
    "text_encoder_deep.py",
    "vision_encoder_prompted.py",
    "backbone_loading_cocoop.py",
    "backbones_cocoop.py",
    "class_groups_cocoop.py",
    "class_set_cocoop.py",
    "class_set_holder_cocoop.py",
    "configuration_cocoop.py",
    "context_start_cocoop.py",
    "limits_cocoop.py",
    "model_inputs_cocoop.py",
    "modeling_cocoop.py",
    "pipeline_cocoop.py",
    "processing_cocoop.py",
    "prompt_ids_cocoop.py",
    "prompt_layout_cocoop.py",
    "prompt_learner_cocoop.py",
    "sharing_cocoop.py",
    "text_encoder_bidirectional.py",
    "text_encoder_causal.py",
    "text_layers_cocoop.py",
    "tokenizer_check_cocoop.py",
}


def code_files() -> set[str]:
    """modeling_cocoop.py and every sibling it imports: what trust_remote_code fetches."""
    modeling = Path(cocoop_hf.__file__).parent / "modeling_cocoop.py"
    return {modeling.name} | {Path(f).name for f in get_relative_import_files(str(modeling))}


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    return no_package_results(tmp_path_factory)


# ---------------------------------------------------------------------------------------------- saved folders


@pytest.mark.parametrize("kind", ["full", "adapter"])
def test_saved_folder_is_complete(shared, kind):
    folder = shared.full_dir if kind == "full" else shared.adapter_dir
    weights = {"model.safetensors"} if kind == "full" else {"prompt_learner.safetensors"}
    processor_files = PROCESSOR_FILES if kind == "full" else ADAPTER_PROCESSOR_FILES
    assert code_files() == REQUIRED_CODE
    assert set(os.listdir(folder)) == {"config.json"} | weights | processor_files | code_files()
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForImageClassification", "AutoProcessor"}
    task = config["custom_pipelines"]["zero-shot-image-classification"]
    assert task["impl"] == "pipeline_cocoop.CoCoOpZeroShotImageClassificationPipeline"
    assert config["adapter_only"] is (kind == "adapter")
    processor = json.loads((folder / "processor_config.json").read_text())
    assert processor["auto_map"]["AutoProcessor"] == "processing_cocoop.CoCoOpProcessor"
    assert (processor["prompt_prefix"], processor["n_ctx"]) == (shared.model.config.prompt_prefix, 4)
    assert processor["image_processor"]["crop_size"] == {"height": 32, "width": 32}  # the base CLIP's


def test_adapter_folder_is_small(shared):
    size = (shared.adapter_dir / "prompt_learner.safetensors").stat().st_size
    assert size < (shared.full_dir / "model.safetensors").stat().st_size / 10
    assert not TOKENIZER_FILES & set(os.listdir(shared.adapter_dir))
    total = sum(path.stat().st_size for path in shared.adapter_dir.iterdir())
    assert total < 350_000, total  # code files (~150 KB) included; the tokenizer alone would be 3.6 MB


# ---------------------------------------------------------------------------------------------- download path


def test_from_pretrained_by_repo_id_offline(shared, offline_cache):
    for repo in (FULL_REPO, ADAPTER_REPO):
        model = CoCoOpModel.from_pretrained(repo)
        assert model.class_names == shared.model.class_names
        with torch.no_grad():
            torch.testing.assert_close(
                model(pixel_values=shared.pixel_values).logits, shared.model(shared.pixel_values).logits
            )
    processor = CoCoOpProcessor.from_pretrained(FULL_REPO)
    assert processor(class_names=["cat"])["input_ids"].shape == (1, 77)


def test_adapter_processor_by_repo_id_offline(shared, offline_cache):
    """The adapter repo has no tokenizer: the processor takes the base CLIP's (by id + revision, from the cache)."""
    full = CoCoOpProcessor.from_pretrained(FULL_REPO)
    adapter = CoCoOpProcessor.from_pretrained(ADAPTER_REPO)
    clip_snapshot = offline_cache / "models--openai-test--tiny-clip" / "snapshots" / ("c1" * 20)
    assert adapter.tokenizer.name_or_path in (CLIP_REPO, str(clip_snapshot))
    assert (adapter.prompt_prefix, adapter.n_ctx, adapter.context_length) == (full.prompt_prefix, 4, 77)
    names = ["cat", "great_white_shark"]
    assert torch.equal(adapter(class_names=names)["input_ids"], full(class_names=names)["input_ids"])
    assert adapter.image_processor.to_dict() == full.image_processor.to_dict()
    image = Image.open(shared.images["red"])
    assert torch.equal(adapter(images=image)["pixel_values"], full(images=image)["pixel_values"])


def test_adapter_resolves_base_clip_by_id_and_revision(shared, offline_cache):
    config = json.loads((shared.adapter_dir / "config.json").read_text())
    assert (config["clip_name_or_path"], config["clip_revision"]) == (CLIP_REPO, "c1" * 20)
    model = CoCoOpModel.from_pretrained(ADAPTER_REPO)
    clip_cache = offline_cache / "models--openai-test--tiny-clip" / "snapshots" / ("c1" * 20)
    assert str(clip_cache) in model.clip.name_or_path or model.clip.name_or_path == CLIP_REPO


def test_adapter_with_missing_base_clip_names_it(shared, offline_cache, tmp_path):
    folder = tmp_path / "adapter"
    shared.model.config.clip_revision = "d" * 40  # not in the cache
    try:
        shared.model.save_pretrained(folder, adapter_only=True)
    finally:
        shared.model.config.clip_revision = "c1" * 20
    with pytest.raises(OSError, match="tiny-clip"):
        CoCoOpModel.from_pretrained(folder)


def test_remote_code_without_package(shared, remote):
    assert remote["package_importable"] is False
    expected = shared.model(shared.pixel_values).logits
    for key in ("full", "adapter"):
        assert remote[key + "_module"].startswith("transformers_modules.")
        assert remote[key + "_class_names"] == shared.model.class_names
        torch.testing.assert_close(torch.tensor(remote[key + "_logits"]), expected.detach())
    assert remote["image_classification_class"] == "CoCoOpModel"
    assert remote["processor_class"] == "CoCoOpProcessor"
    assert remote["processor_prompt_ids_shape"] == [2, 77]
    assert remote["processor_pixel_shape"] == [1, 3, 32, 32]
    assert remote["adapter_processor_class"] == "CoCoOpProcessor"
    assert remote["adapter_processor_settings"] == [shared.model.config.prompt_prefix, 4]
    assert remote["adapter_processor_tokenizer"].endswith(("tiny-clip", "c1" * 20))
    assert remote["adapter_processor_prompt_ids_equal"] and remote["adapter_processor_pixels_equal"]


def test_remote_pipelines_by_repo_id(shared, remote):
    labels = [item["label"] for item in remote["zero_shot"]]
    assert sorted(labels) == ["car", "cat", "dog"]
    assert remote["zero_shot"] == remote["zero_shot_adapter"]
    assert sorted(item["label"] for item in remote["zero_shot_trained"]) == sorted(shared.model.class_names)
    assert abs(sum(item["score"] for item in remote["zero_shot"]) - 1) < 1e-5
    assert [item["label"] for item in remote["image_classification"]] == [
        item["label"] for item in remote["zero_shot_trained"][:3]
    ]
    assert remote["image_classification_adapter"] == remote["image_classification"]


def test_trust_remote_code_missing_gives_transformers_message(remote):
    for key in ("no_trust_model", "no_trust_pipeline"):
        assert remote[key] is not None and "trust_remote_code=True" in remote[key], remote[key]


def test_model_loaded_via_remote_code_saves_a_complete_folder(remote):
    assert set(remote["resaved_files"]) == {"config.json", "model.safetensors"} | PROCESSOR_FILES | code_files()
    torch.testing.assert_close(torch.tensor(remote["resaved_logits"]), torch.tensor(remote["full_logits"]))


# ---------------------------------------------------------------------------------------------- upload wiring


class FakeHub:
    """Records what would be committed; reads the files while they still exist."""

    def __init__(self, existing_card=None):
        self.existing_card = existing_card
        self.commits = []
        self.created = []

    def install(self, monkeypatch):
        hub = self

        def create_repo(api, repo_id, **kwargs):
            hub.created.append((repo_id, kwargs))
            return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

        def create_commit(api, repo_id, operations, **kwargs):
            files = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations}
            hub.commits.append({"repo_id": repo_id, "files": files, **kwargs})
            return "commit-info"

        def load(repo_id_or_path, **kwargs):
            if hub.existing_card is None:
                raise EntryNotFoundError("no README.md")
            return hub.existing_card

        def no_network(*args, **kwargs):
            raise AssertionError("a network call was attempted")

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_commit", create_commit)
        monkeypatch.setattr(HfApi, "create_branch", no_network)
        monkeypatch.setattr(HfApi, "upload_file", no_network)
        monkeypatch.setattr(ModelCard, "load", staticmethod(load))
        return self


def test_model_push_to_hub_uploads_complete_folder_and_card(shared, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    assert shared.model.push_to_hub("me/tiny-cocoop") == "commit-info"
    assert [repo for repo, _ in hub.created] == ["me/tiny-cocoop"]
    (commit,) = hub.commits
    assert commit["repo_id"] == "me/tiny-cocoop"
    assert set(commit["files"]) == {"config.json", "model.safetensors", "README.md"} | PROCESSOR_FILES | code_files()
    config = json.loads(commit["files"]["config.json"])
    assert config["auto_map"] == AUTO_MAP and "zero-shot-image-classification" in config["custom_pipelines"]
    card = ModelCard(commit["files"]["README.md"].decode())
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert card.data.base_model == CLIP_REPO
    assert {"cocoop", "prompt-learning", "clip"} <= set(card.data.tags)
    assert 'model="me/tiny-cocoop"' in card.text and "None" not in card.text
    assert "## Results" not in card.text  # no metrics known


def test_push_to_hub_adapter_only_and_given_card(shared, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    card = cocoop_hf.render_model_card(
        base_model=CLIP_REPO, results={"dataset": "cifar10", "base": 0.5, "new": 0.25, "random_weights": True}
    )
    shared.model.push_to_hub("me/tiny-adapter", adapter_only=True, model_card=card, commit_message="adapter")
    (commit,) = hub.commits
    assert commit["commit_message"] == "adapter"
    expected = {"config.json", "prompt_learner.safetensors", "README.md"} | ADAPTER_PROCESSOR_FILES | code_files()
    assert set(commit["files"]) == expected
    config = json.loads(commit["files"]["config.json"])
    assert (config["adapter_only"], config["clip_name_or_path"], config["clip_revision"]) == (
        True,
        CLIP_REPO,
        "c1" * 20,
    )
    assert sum(len(data) for name, data in commit["files"].items() if name != "README.md") < 350_000
    assert commit["files"]["README.md"].decode() == str(card)


def test_push_to_hub_keeps_an_existing_cocoop_card(shared, monkeypatch):
    existing = cocoop_hf.render_model_card(base_model=CLIP_REPO, recipe={"shots": 16})
    hub = FakeHub(existing_card=existing).install(monkeypatch)
    shared.model.push_to_hub("me/tiny-cocoop")
    assert hub.commits[0]["files"]["README.md"].decode() == str(existing)


def test_push_to_hub_rejects_bad_card(shared, monkeypatch):
    FakeHub().install(monkeypatch)
    with pytest.raises(TypeError, match="model_card"):
        shared.model.push_to_hub("me/x", model_card=42)


def test_processor_push_to_hub(shared, monkeypatch):
    hub = FakeHub(existing_card=cocoop_hf.render_model_card(base_model=CLIP_REPO)).install(monkeypatch)
    processor = CoCoOpProcessor.from_pretrained(shared.full_dir)
    processor.push_to_hub("me/tiny-cocoop")
    (commit,) = hub.commits
    # The processor's code and the config file it validates config.json with: what loading it remotely needs.
    assert set(commit["files"]) == PROCESSOR_FILES | {
        "processing_cocoop.py",
        "prompt_ids_cocoop.py",
        "backbones_cocoop.py",
        "configuration_cocoop.py",
        "limits_cocoop.py",
        "README.md",
    }
    saved = json.loads(commit["files"]["processor_config.json"])
    assert saved["auto_map"]["AutoProcessor"] == "processing_cocoop.CoCoOpProcessor"
    assert commit["files"]["README.md"].decode() == str(hub.existing_card)  # the CoCoOp card is kept
