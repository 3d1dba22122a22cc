"""save_pretrained / from_pretrained: full and adapter-only folders, remote code without the package, bad files."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from cocoop_hf import CoCoOpConfig, CoCoOpModel

from .conftest import CLASS_NAMES, FIXTURES, NEW_CLASS_NAMES, random_pixels, save_tiny_clip
from .test_modeling import randomize_prompt_learner


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: one thread is steadier


ADAPTER_FILE = "prompt_learner.safetensors"


@pytest.fixture(scope="module")
def trained(tiny_clip_dir, tokenizer):
    """A CoCoOp model with non-default prompt-learner weights, on the NEW class set (not the from_clip one)."""
    model = CoCoOpModel.from_clip(str(tiny_clip_dir), CLASS_NAMES, revision="main", tokenizer=tokenizer)
    randomize_prompt_learner(model, seed=3)
    model.set_class_names(NEW_CLASS_NAMES)
    return model.eval()


@pytest.fixture(scope="module")
def pixel_values():
    return random_pixels(3, seed=5)


@pytest.fixture(scope="module")
def expected_logits(trained, pixel_values):
    with torch.no_grad():
        return trained(pixel_values=pixel_values).logits


@pytest.fixture(scope="module")
def full_dir(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("full")
    trained.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def adapter_dir(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("adapter")
    trained.save_pretrained(path, adapter_only=True)
    return path


def assert_same_model(loaded, trained, pixel_values, expected_logits):
    assert loaded.class_names == NEW_CLASS_NAMES
    # Non-persistent prompt buffers come back from the meta device as garbage unless rebuilt after loading.
    assert torch.equal(loaded.prompt_ids, trained.prompt_ids)
    assert torch.equal(loaded.eos_index, trained.eos_index)
    for name, tensor in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    with torch.no_grad():
        logits = loaded(pixel_values=pixel_values).logits
    assert torch.equal(logits, expected_logits)
    # Still only the prompt learner trains, and CLIP stays in eval mode, after loading.
    trainable = {name for name, p in loaded.named_parameters() if p.requires_grad}
    assert trainable == {name for name, p in trained.named_parameters() if p.requires_grad}
    assert len(trainable) == (5 if loaded.config.conditional else 1)
    loaded.train()
    assert not any(module.training for module in loaded.clip.modules())
    loaded.eval()


# ---------------------------------------------------------------------------------------------- full


def test_full_round_trip(full_dir, trained, pixel_values, expected_logits):
    loaded = CoCoOpModel.from_pretrained(full_dir)
    assert not loaded.training
    assert_same_model(loaded, trained, pixel_values, expected_logits)
    assert loaded.config.conditional and loaded.config.n_ctx == 4


def test_full_folder_contents(full_dir):
    files = set(os.listdir(full_dir))
    assert {"config.json", "model.safetensors", "modeling_cocoop.py", "configuration_cocoop.py"} <= files
    assert "vocab.json" in files or "tokenizer.json" in files
    tensors = load_file(full_dir / "model.safetensors")
    assert "prompt_learner.ctx" in tensors and "clip.logit_scale" in tensors
    assert not any("prompt_ids" in key or "eos_index" in key for key in tensors)  # derived, never saved
    config = json.loads((full_dir / "config.json").read_text())
    assert config["model_type"] == "cocoop"
    assert config["auto_map"]["AutoModel"] == "modeling_cocoop.CoCoOpModel"
    assert config["id2label"] == {str(i): name for i, name in enumerate(NEW_CLASS_NAMES)}


def test_full_folder_without_tokenizer_files_uses_base_clip(
    full_dir, trained, pixel_values, expected_logits, tmp_path
):
    """transformers builds a silent 2-token tokenizer from a folder without tokenizer files: never use it."""
    folder = copy_folder(full_dir, tmp_path, "no-tokenizer")
    for name in os.listdir(folder):
        if name.startswith(("tokenizer", "vocab", "merges", "special_tokens")):
            (folder / name).unlink()
    loaded = CoCoOpModel.from_pretrained(folder)
    assert len(loaded.tokenizer) == 49408
    assert_same_model(loaded, trained, pixel_values, expected_logits)


def test_full_loads_through_auto_model(full_dir, trained, pixel_values, expected_logits):
    loaded = AutoModel.from_pretrained(full_dir)
    assert isinstance(loaded, CoCoOpModel)
    assert_same_model(loaded, trained, pixel_values, expected_logits)


def test_loaded_model_swaps_class_names(full_dir, trained, pixel_values):
    """After loading, a new class set gives what the original model gives for it."""
    loaded = CoCoOpModel.from_pretrained(full_dir)
    loaded.set_class_names(CLASS_NAMES)
    trained.set_class_names(CLASS_NAMES)
    try:
        with torch.no_grad():
            assert torch.equal(loaded(pixel_values=pixel_values).logits, trained(pixel_values=pixel_values).logits)
    finally:
        trained.set_class_names(NEW_CLASS_NAMES)
    assert loaded.prompt_ids.shape[0] == len(CLASS_NAMES)


def test_output_loading_info(full_dir):
    model, info = CoCoOpModel.from_pretrained(full_dir, output_loading_info=True)
    assert isinstance(model, CoCoOpModel)
    assert not info["missing_keys"] and not info["mismatched_keys"] and not info["unexpected_keys"]


# ---------------------------------------------------------------------------------------------- adapter-only


def test_adapter_round_trip(adapter_dir, trained, pixel_values, expected_logits):
    loaded = CoCoOpModel.from_pretrained(adapter_dir)
    assert not loaded.config.adapter_only  # a loaded model is complete
    assert_same_model(loaded, trained, pixel_values, expected_logits)
    via_auto = AutoModel.from_pretrained(adapter_dir)
    assert_same_model(via_auto, trained, pixel_values, expected_logits)


def test_adapter_folder_names_base_clip(adapter_dir, tiny_clip_dir):
    assert not (adapter_dir / "model.safetensors").exists()
    config = json.loads((adapter_dir / "config.json").read_text())
    assert config["adapter_only"] is True
    assert config["clip_name_or_path"] == str(tiny_clip_dir)
    assert config["clip_revision"] == "main"
    tensors = load_file(adapter_dir / ADAPTER_FILE)
    assert set(tensors) == {
        "ctx",
        "meta_net.linear1.weight",
        "meta_net.linear1.bias",
        "meta_net.linear2.weight",
        "meta_net.linear2.bias",
    }
    assert_small_adapter_folder(adapter_dir)


def assert_small_adapter_folder(folder) -> int:
    """
    Config, prompt-learner weights, processor_config.json and code: no tokenizer files (3.6 MB), < 450 KB in all
    (~140 KB of weights at ViT-B/16 widths, ~290 KB of code files for the four backbones' text paths and the deep prompts).
    """
    files = set(os.listdir(folder))
    assert {"config.json", ADAPTER_FILE, "processor_config.json", "modeling_cocoop.py"} <= files
    others = files - {"config.json", ADAPTER_FILE, "processor_config.json"}
    assert all(name.endswith(".py") for name in others), others  # no vocab.json, merges.txt, tokenizer*.json
    assert (folder / "processor_config.json").stat().st_size < 4_000
    total = sum((folder / name).stat().st_size for name in files)
    assert total < 500_000, total
    return total


def test_adapter_folder_at_vit_b16_widths(tmp_path, monkeypatch):
    """At the real ViT-B/16 widths (text 512, projection 512) the weights are ~140 KB and the folder < 300 KB."""
    import huggingface_hub
    from transformers import CLIPConfig, CLIPImageProcessor

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # nothing to fetch: all set below
    clip_config = CLIPConfig.from_pretrained(FIXTURES / "clip-vit-base-patch16")  # the real config.json
    config = CoCoOpConfig(
        clip_config=clip_config.to_dict(),
        clip_name_or_path="openai/clip-vit-base-patch16",
        clip_revision="main",
        id2label=dict(enumerate(CLASS_NAMES)),
        label2id={name: i for i, name in enumerate(CLASS_NAMES)},
    )
    with torch.device("meta"):  # the 150M CLIP parameters are never allocated
        model = CoCoOpModel(config)
    model.prompt_learner.to_empty(device="cpu")
    for parameter in model.prompt_learner.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    model._image_processor = CLIPImageProcessor()  # 224 px, as the base CLIP's
    model.save_pretrained(tmp_path, adapter_only=True)
    tensors = load_file(tmp_path / ADAPTER_FILE)
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    assert shapes == {
        "ctx": (4, 512),
        "meta_net.linear1.weight": (32, 512),
        "meta_net.linear1.bias": (32,),
        "meta_net.linear2.weight": (512, 32),
        "meta_net.linear2.bias": (512,),
    }
    size = (tmp_path / ADAPTER_FILE).stat().st_size
    assert 4 * (4 * 512 + 2 * 512 * 32 + 32 + 512) <= size < 300_000, size  # ~140 KB of fp32
    assert_small_adapter_folder(tmp_path)


def test_adapter_needs_base_clip_name(trained, tmp_path):
    config_name = trained.config.clip_name_or_path
    try:
        trained.config.clip_name_or_path = None
        with pytest.raises(ValueError, match="clip_name_or_path"):
            trained.save_pretrained(tmp_path, adapter_only=True)
    finally:
        trained.config.clip_name_or_path = config_name


def test_coop_adapter_round_trip(tiny_clip_dir, tmp_path, pixel_values, tokenizer):
    coop = randomize_prompt_learner(
        CoCoOpModel.from_clip(str(tiny_clip_dir), CLASS_NAMES, conditional=False, tokenizer=tokenizer)
    )
    coop.save_pretrained(tmp_path, adapter_only=True)
    assert set(load_file(tmp_path / ADAPTER_FILE)) == {"ctx"}
    loaded = CoCoOpModel.from_pretrained(tmp_path)
    assert loaded.prompt_learner.meta_net is None
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values=pixel_values).logits, coop(pixel_values=pixel_values).logits)


# ---------------------------------------------------------------------------------------------- remote code

HIDDEN_PACKAGE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import sys


    class HideCocoopHf(importlib.abc.MetaPathFinder):
        # Stands in for "not installed": the editable install's finder would otherwise still find the package.
        def find_spec(self, name, path=None, target=None):
            if name == "cocoop_hf" or name.startswith("cocoop_hf."):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None


    sys.meta_path.insert(0, HideCocoopHf())
    try:
        import cocoop_hf  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("cocoop_hf is importable here: the remote-code test would prove nothing")

    import torch
    from transformers import AutoModel

    pixel_values = torch.load(sys.argv[1], weights_only=True)
    for folder, out in zip(sys.argv[2::2], sys.argv[3::2]):
        model = AutoModel.from_pretrained(folder, trust_remote_code=True)
        with torch.no_grad():
            logits = model(pixel_values=pixel_values).logits
        torch.save({"logits": logits, "module": type(model).__module__}, out)
    assert not any(name.split(".")[0] == "cocoop_hf" for name in sys.modules), "cocoop_hf got imported"
    """
)


def test_remote_code_without_package(full_dir, adapter_dir, pixel_values, expected_logits, tmp_path):
    """A saved folder loads with AutoModel + trust_remote_code in a Python that cannot import cocoop_hf."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "load.py").write_text(HIDDEN_PACKAGE_SCRIPT)
    torch.save(pixel_values, work / "pixels.pt")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        HF_MODULES_CACHE=str(tmp_path / "modules"),
        TRANSFORMERS_VERBOSITY="error",
    )
    args = [str(work / "pixels.pt"), str(full_dir), str(work / "full.pt"), str(adapter_dir), str(work / "adapter.pt")]
    # -I: isolated mode, neither the script's folder nor the current directory (the repo) is on sys.path.
    result = subprocess.run(
        [sys.executable, "-I", str(work / "load.py"), *args], cwd=work, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("full", "adapter"):
        loaded = torch.load(work / f"{name}.pt", weights_only=True)
        assert loaded["module"].startswith("transformers_modules"), loaded["module"]
        assert torch.equal(loaded["logits"], expected_logits), name


# ---------------------------------------------------------------------------------------------- bad files


def copy_folder(source, tmp_path, name):
    target = tmp_path / name
    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize("keep", [0.5, 0.999, 4])
def test_truncated_full_weights_raise(full_dir, tmp_path, keep):
    folder = copy_folder(full_dir, tmp_path, "truncated")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    with pytest.raises(OSError, match=r"model\.safetensors.*truncated or corrupt"):
        CoCoOpModel.from_pretrained(folder)


def test_garbage_full_weights_raise(full_dir, tmp_path):
    folder = copy_folder(full_dir, tmp_path, "garbage")
    (folder / "model.safetensors").write_bytes(os.urandom(4096))
    with pytest.raises(OSError, match=r"model\.safetensors"):
        CoCoOpModel.from_pretrained(folder)


def test_full_weights_missing_tensor_raise(full_dir, tmp_path):
    """A readable file that lacks tensors must not give a model with those tensors at random init."""
    folder = copy_folder(full_dir, tmp_path, "missing")
    tensors = load_file(folder / "model.safetensors")
    del tensors["prompt_learner.meta_net.linear2.bias"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"lacks 1 tensor.*prompt_learner\.meta_net\.linear2\.bias"):
        CoCoOpModel.from_pretrained(folder)


def test_full_weights_width_mismatch_raise(full_dir, tmp_path):
    folder = copy_folder(full_dir, tmp_path, "width")
    tensors = load_file(folder / "model.safetensors")
    tensors["prompt_learner.ctx"] = torch.zeros(4, 32)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"prompt_learner\.ctx: checkpoint \(4, 32\) vs model \(4, 64\)"):
        CoCoOpModel.from_pretrained(folder)


@pytest.mark.parametrize("keep", [0.5, 4])
def test_truncated_adapter_weights_raise(adapter_dir, tmp_path, keep):
    folder = copy_folder(adapter_dir, tmp_path, "truncated")
    weights = folder / ADAPTER_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    with pytest.raises(OSError, match=r"prompt_learner\.safetensors"):
        CoCoOpModel.from_pretrained(folder)


def test_adapter_missing_tensor_raise(adapter_dir, tmp_path):
    folder = copy_folder(adapter_dir, tmp_path, "missing")
    tensors = load_file(folder / ADAPTER_FILE)
    del tensors["meta_net.linear1.weight"]
    save_file(tensors, folder / ADAPTER_FILE)
    with pytest.raises(ValueError, match=r"missing \['meta_net\.linear1\.weight'\]"):
        CoCoOpModel.from_pretrained(folder)


def test_adapter_for_another_clip_width_raise(adapter_dir, tmp_path):
    """An adapter whose context width does not match its (here: replaced) base CLIP."""
    narrow_clip = save_tiny_clip(tmp_path / "narrow-clip", hidden=32)
    folder = copy_folder(adapter_dir, tmp_path, "other-clip")
    config = json.loads((folder / "config.json").read_text())
    config["clip_name_or_path"] = str(narrow_clip)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"tensor 'ctx' has shape \(4, 64\), but this CLIP needs \(4, 32\)"):
        CoCoOpModel.from_pretrained(folder)


def test_from_clip_without_tokenizer_files_names_the_clip(tmp_path):
    """transformers builds a 2-token tokenizer from a folder without tokenizer files: from_clip must refuse it."""
    from .conftest import save_tiny_clip

    clip_dir = save_tiny_clip(tmp_path / "clip")
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (clip_dir / name).unlink(missing_ok=True)
    with pytest.raises(OSError, match="no usable CLIP tokenizer"):
        CoCoOpModel.from_clip(str(clip_dir), CLASS_NAMES)


# ---------------------------------------------------------------------------------------------- adapters on one CLIP


def test_two_adapters_share_one_loaded_clip(trained, adapter_dir, tiny_clip_dir, tmp_path, pixel_values):
    """A server holds one backbone and many adapters: the CLIP's parameters are the same tensors in memory."""
    from transformers import CLIPModel

    other = CoCoOpModel.from_clip(str(tiny_clip_dir), CLASS_NAMES, tokenizer=trained.tokenizer)
    randomize_prompt_learner(other, seed=11)
    other.save_pretrained(tmp_path / "other", adapter_only=True)
    with torch.no_grad():
        own_logits = (trained(pixel_values=pixel_values).logits, other(pixel_values=pixel_values).logits)

    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    first = CoCoOpModel.from_pretrained(adapter_dir, clip_model=clip)
    second = CoCoOpModel.from_pretrained(tmp_path / "other", clip_model=clip)
    assert first.clip is clip and second.clip is clip
    shared_pointers = {p.data_ptr() for p in clip.parameters()}
    assert {p.data_ptr() for p in first.clip.parameters()} == shared_pointers
    assert {p.data_ptr() for p in second.clip.parameters()} == shared_pointers
    assert first.class_names == NEW_CLASS_NAMES and second.class_names == CLASS_NAMES
    with torch.no_grad():
        logits = (first(pixel_values=pixel_values).logits, second(pixel_values=pixel_values).logits)
    # Same weights, same computation as the models they were saved from.
    torch.testing.assert_close(logits[0], own_logits[0], rtol=0, atol=0)
    torch.testing.assert_close(logits[1], own_logits[1], rtol=0, atol=0)
    assert not clip.text_projection.weight.requires_grad  # frozen, as in every CoCoOp model


def test_adapter_onto_another_clip_of_the_same_shapes_is_refused(adapter_dir, tmp_path, pixel_values):
    """Same widths, other weights (or depth): the adapter's fingerprint of its base CLIP does not match."""
    from transformers import CLIPModel

    other_weights = CLIPModel.from_pretrained(save_tiny_clip(tmp_path / "seed7", seed=7))
    with pytest.raises(ValueError, match=r"trained on another CLIP than the given clip_model: .*other weights"):
        CoCoOpModel.from_pretrained(adapter_dir, clip_model=other_weights)
    deeper = CLIPModel.from_pretrained(save_tiny_clip(tmp_path / "deeper", layers=3))
    with pytest.raises(ValueError, match=r"text_layers: adapter's base 2, this CLIP 3"):
        CoCoOpModel.from_pretrained(adapter_dir, clip_model=deeper)
    # The same holds when the base CLIP named in config.json was replaced by another one.
    folder = copy_folder(adapter_dir, tmp_path, "renamed-base")
    config = json.loads((folder / "config.json").read_text())
    config["clip_name_or_path"] = str(tmp_path / "seed7")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"allow_other_clip=True"):
        CoCoOpModel.from_pretrained(folder)
    loaded = CoCoOpModel.from_pretrained(folder, allow_other_clip=True)  # asked for: loads, with a warning
    assert loaded.clip.config.text_config.num_hidden_layers == 2


HALF_RTOL = 0.05  # bf16 keeps 8 mantissa bits: logits within 5% of the largest fp32 logit (seen: ~1%)


def test_adapter_on_a_half_precision_clip_runs(adapter_dir, tiny_clip_dir, expected_logits, pixel_values):
    """The same base CLIP loaded in bf16 matches the fingerprint, and the prompt learner follows its dtype."""
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(tiny_clip_dir, dtype=torch.bfloat16)
    model = CoCoOpModel.from_pretrained(adapter_dir, clip_model=clip)
    assert {t.dtype for t in model.state_dict().values() if t.is_floating_point()} == {torch.bfloat16}
    with torch.no_grad():
        logits = model(pixel_values=pixel_values.to(torch.bfloat16)).logits.float()
        from_fp32_features = model(image_embeds=model.get_image_features(pixel_values.to(torch.bfloat16)).float())
    assert (logits - expected_logits).abs().max() <= HALF_RTOL * expected_logits.abs().max()
    torch.testing.assert_close(from_fp32_features.logits.float(), logits, rtol=0, atol=0)  # cast to bf16 exactly
    with pytest.raises(TypeError, match=r"\['dtype'\] load the base CLIP, but `clip_model=` is already loaded"):
        CoCoOpModel.from_pretrained(adapter_dir, clip_model=clip, dtype=torch.float32)
    loaded = CoCoOpModel.from_pretrained(adapter_dir, dtype=torch.bfloat16)  # dtype= loads the base CLIP in it
    assert {t.dtype for t in loaded.state_dict().values() if t.is_floating_point()} == {torch.bfloat16}


def test_full_model_loads_wholly_in_the_requested_dtype(full_dir, expected_logits, pixel_values):
    """A CLIP saved in fp32 records dtype float32 in its config; it must not pin half the loaded model to it."""
    saved = json.loads((full_dir / "config.json").read_text())["backbone_config"]
    assert saved.get("dtype") is None and saved["text_config"].get("dtype") is None
    model = CoCoOpModel.from_pretrained(full_dir, dtype=torch.bfloat16)
    assert {t.dtype for t in model.state_dict().values() if t.is_floating_point()} == {torch.bfloat16}
    with torch.no_grad():
        logits = model(pixel_values=pixel_values.to(torch.bfloat16)).logits.float()
    assert (logits - expected_logits).abs().max() <= HALF_RTOL * expected_logits.abs().max()


def test_local_base_clip_is_stored_as_an_absolute_path(tiny_clip_dir, tokenizer, tmp_path, monkeypatch, pixel_values):
    """An adapter saved with a relative CLIP path must load from any working folder."""
    monkeypatch.chdir(tiny_clip_dir.parent)
    model = CoCoOpModel.from_clip(tiny_clip_dir.name, CLASS_NAMES, tokenizer=tokenizer)
    assert model.config.clip_name_or_path == str(tiny_clip_dir.resolve())
    model.save_pretrained(tmp_path / "adapter", adapter_only=True)
    monkeypatch.chdir(tmp_path)
    loaded = CoCoOpModel.from_pretrained(tmp_path / "adapter")
    assert loaded.class_names == CLASS_NAMES
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixel_values).logits, model(pixel_values=pixel_values).logits)


def test_clip_model_for_a_full_folder_is_refused(full_dir, tiny_clip_dir):
    from transformers import CLIPModel

    with pytest.raises(ValueError, match="full CoCoOp folder .*adapter-only"):
        CoCoOpModel.from_pretrained(full_dir, clip_model=CLIPModel.from_pretrained(tiny_clip_dir))
