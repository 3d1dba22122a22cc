"""Shared fixtures: a tiny random CLIP, the real CLIP tokenizer (copied into tests/fixtures), real images."""

# First, before torch and transformers are imported: per-process caches and torch threads (see parallel_run.py).
from .parallel_run import (  # noqa: I001, F401 (pytest finds hooks by name in conftest)
    pytest_sessionstart,
    pytest_terminal_summary,
    pytest_unconfigure,
    pytest_xdist_auto_num_workers,
)

from pathlib import Path

import huggingface_hub
import pytest
import torch
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer


FIXTURES = Path(__file__).parent / "fixtures"
DEMO = Path(__file__).resolve().parents[1] / "cocoop_hf_training" / "demo"
TINY_CLIP = DEMO / "tiny-clip"  # the one tiny CLIP config (+ tokenizer): tests, demo and benchmark
TOKENIZER_DIR = FIXTURES / "clip-tokenizer"

CLASS_NAMES = ["tench", "goldfish", "great_white_shark", "tiger shark", "hammerhead", "electric ray", "stingray"]
NEW_CLASS_NAMES = ["cock", "hen", "ostrich", "brambling", "goldfinch", "house finch", "junco", "indigo bunting"]


def tiny_clip_config(eos_token_id=None, hidden=None, projection=None, layers=None, image_size=None) -> CLIPConfig:
    """
    The tiny random CLIP of the tests, the demo and the benchmark, `cocoop_hf_training/demo/tiny-clip/config.json` (real
    vocabulary and 77-token text context; width 64 with MLP 128, 2 layers, 4 heads, 32 px images in 8 px patches,
    projection 48), with any argument given replacing its value in both towers (`hidden` also sets the MLP to 2x).
    """
    config = CLIPConfig.from_pretrained(Path(__file__).parents[1] / "cocoop_hf_training" / "demo" / "tiny-clip").to_dict()
    text, vision = config["text_config"], config["vision_config"]
    for tower in (text, vision):
        if hidden is not None:
            tower.update(hidden_size=hidden, intermediate_size=2 * hidden)
        if layers is not None:
            tower["num_hidden_layers"] = layers
    if eos_token_id is not None:
        text["eos_token_id"] = eos_token_id
    if image_size is not None:
        vision["image_size"] = image_size
    if projection is not None:
        config["projection_dim"] = projection
    return CLIPConfig.from_dict(config)


def save_tiny_clip(path, eos_token_id=49407, seed=0, **kwargs) -> Path:
    """Write a tiny random CLIPModel + the real tokenizer + an image processor to `path` (a local 'checkpoint')."""
    from transformers import CLIPImageProcessor

    torch.manual_seed(seed)
    model = CLIPModel(tiny_clip_config(eos_token_id=eos_token_id, **kwargs)).eval()
    model.save_pretrained(path)
    CLIPTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(path)
    size = model.config.vision_config.image_size
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(path)
    return Path(path)


@pytest.fixture(scope="session")
def tokenizer():
    return CLIPTokenizer.from_pretrained(TOKENIZER_DIR)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def legacy_clip_dir(tmp_path_factory):
    """Same shapes, but the legacy `eos_token_id = 2` of the OpenAI Hub configs."""
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip-legacy"), eos_token_id=2, seed=1)


def random_pixels(batch, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator)


@pytest.fixture(scope="module")
def single_thread():
    """
    One intra-op torch thread for a module of tiny-tensor tests: on a shared 2-core CPU it is ~10x faster than two (no
    oversubscription); the tests' tolerances hold with 1 or 2 threads (with 2 the last bits can differ between runs:
    TRAPS.md). A module opts in with
    `pytestmark = pytest.mark.usefixtures("single_thread")`.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A saved tiny CoCoOp (full and adapter), a Hub-layout cache and image files, built once per session."""
    from .cocoop_sharing import shared_artifacts

    return shared_artifacts(tmp_path_factory)


@pytest.fixture
def offline_cache(shared, monkeypatch):
    """The Hub-layout cache of `shared` as HF_HUB_CACHE, with HF_HUB_OFFLINE set: loads by repo id, no network."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(shared.hub_cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return shared.hub_cache


@pytest.fixture(scope="module")
def cocoop_checkpoint(tmp_path_factory):
    """A Dassl-like CoCoOp checkpoint file (fp16 tensors, pickled scheduler) and its state dict."""
    from .test_official_pickle import official_state_dict, write_dassl_checkpoint

    state = official_state_dict()
    path = tmp_path_factory.mktemp("dassl") / "prompt_learner" / "model.pth.tar-10"
    path.parent.mkdir()
    return write_dassl_checkpoint(path, state), state


def held_state(model) -> dict:
    """Everything a call could change on a model: its class set, prompt ids, mode and prompt-learner tensors."""
    return {
        "class_names": list(model.class_names),
        "id2label": dict(model.config.id2label),
        "label2id": dict(model.config.label2id),
        "prompt_ids": model.prompt_ids.clone(),
        "eos_index": model.eos_index.clone(),
        "training": model.training,
        "prompt_learner": {name: t.detach().clone() for name, t in model.prompt_learner.state_dict().items()},
    }


def assert_same_held_state(before: dict, after: dict) -> None:
    for key in ("class_names", "id2label", "label2id", "training"):
        assert after[key] == before[key], key
    assert torch.equal(after["prompt_ids"], before["prompt_ids"]) and torch.equal(
        after["eos_index"], before["eos_index"]
    )
    for name, tensor in before["prompt_learner"].items():
        assert torch.equal(after["prompt_learner"][name], tensor), name


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """
    A finished 1-epoch run_cocoop run (tiny CLIP, CIFAR-10 demo data) with evaluation (results.md/.png) and a
    checkpoint (`checkpoint-5`); tests work on copies.
    """
    from cocoop_hf_training.run_cocoop import main

    from .test_training import argv

    output_dir = tmp_path_factory.mktemp("finished") / "run"
    main(argv(output_dir, "--save_strategy", "epoch"))
    return output_dir


def tiny_run_argv(output_dir, data_args, *extra, eval_batch_size=50, train=True, evaluate=True) -> list[str]:
    """`run_cocoop.main` flags of a seconds-long run: the tiny random CLIP, 2 shots, 1 epoch, CPU, no checkpoints."""
    args = [
        "--clip_model_name_or_path", str(TINY_CLIP),
        "--random_init_clip", "true",
        *data_args,
        "--num_shots", "2",
        "--num_train_epochs", "1",
        "--per_device_train_batch_size", "2",
        "--per_device_eval_batch_size", str(eval_batch_size),
        "--output_dir", str(output_dir),
        "--use_cpu", "true",
        "--save_strategy", "no",
        "--disable_tqdm", "true",
        "--logging_steps", "100",
    ]  # fmt: skip
    if train:
        args.append("--do_train")
    if evaluate:
        args.append("--do_eval")
    return args + list(extra)
