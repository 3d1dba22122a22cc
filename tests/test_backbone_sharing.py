"""
Saving and loading on every backbone (issue 17): full and adapter-only folders of a CoCoOp model on MetaCLIP 2,
SigLIP and SigLIP 2 (CLIP: tests/test_save_load.py, test_hub.py), the base fingerprint on any backbone, the processor
saved with the model, loading with `trust_remote_code` WITHOUT the package importable, and the official converter's
refusal of a non-CLIP base. Tiny random backbones from tests/tiny_backbones.py, offline.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoImageProcessor, AutoTokenizer

from cocoop_hf import CoCoOpModel
from cocoop_hf.backbone_loading_cocoop import load_backbone
from cocoop_hf.convert_official import from_official_checkpoint
from cocoop_hf.processing_cocoop import CoCoOpProcessor
from cocoop_hf.sharing_cocoop import ADAPTER_WEIGHTS_NAME, clip_fingerprint, fingerprint_differences

from .cocoop_sharing import TOKENIZER_FILES
from .tiny_backbones import save_tiny_backbone


pytestmark = pytest.mark.usefixtures("single_thread")

NEW_TYPES = ("metaclip_2", "siglip", "siglip2")
NAMES = ["tench", "goldfish", "great white shark"]
# A loaded model repeats the saved one's computation on the same weights: equal up to float reordering, if any.
ATOL = 1e-6


def images(model_type, seed=0):
    """Model inputs for 2 random images as the backbone's image processor lays them out (SigLIP 2: patches)."""
    generator = torch.Generator().manual_seed(seed)
    if model_type != "siglip2":
        return {"pixel_values": torch.randn(2, 3, 32, 32, generator=generator)}
    return {
        "pixel_values": torch.randn(2, 16, 3 * 8 * 8, generator=generator),
        "pixel_attention_mask": torch.ones(2, 16, dtype=torch.long),
        "spatial_shapes": torch.tensor([[4, 4], [4, 4]]),
    }


def logits_of(model, model_type):
    with torch.no_grad():
        return model(**images(model_type)).logits


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Per new backbone: the base folder, a CoCoOp model on it, its full and adapter-only folders."""
    root = tmp_path_factory.mktemp("backbone-sharing")
    result = {}
    for model_type in NEW_TYPES:
        base = save_tiny_backbone(root / f"{model_type}-base", model_type)
        torch.manual_seed(1)
        model = CoCoOpModel.from_clip(str(base), NAMES, ctx_init=None, n_ctx=4).eval()
        with torch.no_grad():  # a meta-net that is not near zero, so logits depend on every saved tensor
            for parameter in model.prompt_learner.parameters():
                parameter.normal_(0, 0.5)
        full, adapter = root / f"{model_type}-full", root / f"{model_type}-adapter"
        model.save_pretrained(full)
        model.save_pretrained(adapter, adapter_only=True)
        result[model_type] = {"base": base, "model": model, "full": full, "adapter": adapter}
    return result


@pytest.mark.parametrize("model_type", NEW_TYPES)
def test_full_and_adapter_folders_load_back(model_type, saved):
    entry = saved[model_type]
    expected = logits_of(entry["model"], model_type)
    other_context = CoCoOpModel.from_clip(str(entry["base"]), NAMES, ctx_init=None, n_ctx=4).eval()
    assert (logits_of(other_context, model_type) - expected).abs().max() > 1e-3  # the comparison below can fail
    for folder in (entry["full"], entry["adapter"]):
        loaded = CoCoOpModel.from_pretrained(folder)
        assert type(loaded.clip) is type(entry["model"].clip)
        assert loaded.config.backbone_config.model_type == model_type
        assert loaded.config.prompt_context_start == entry["model"].config.prompt_context_start
        assert loaded.class_names == NAMES
        torch.testing.assert_close(logits_of(loaded, model_type), expected, rtol=0, atol=ATOL)
    config = json.loads((entry["full"] / "config.json").read_text())
    assert config["backbone_config"]["model_type"] == model_type and "clip_config" not in config


@pytest.mark.parametrize("model_type", NEW_TYPES)
def test_processor_saved_with_the_model(model_type, saved):
    entry = saved[model_type]
    base_tokenizer = AutoTokenizer.from_pretrained(entry["base"])
    files = set(os.listdir(entry["adapter"]))
    assert not files & TOKENIZER_FILES  # the adapter takes its tokenizer from the base
    assert ADAPTER_WEIGHTS_NAME in files and "model.safetensors" not in files
    for folder in (entry["full"], entry["adapter"]):
        processor = CoCoOpProcessor.from_pretrained(folder)
        assert type(processor.tokenizer) is type(base_tokenizer)
        assert processor.tokenizer.get_vocab() == base_tokenizer.get_vocab()
        assert processor.backbone_type == model_type
        assert type(processor.image_processor) is type(AutoImageProcessor.from_pretrained(entry["base"]))
        settings = {k: v for k, v in processor.image_processor.to_dict().items() if k != "auto_map"}  # + our code
        assert settings == AutoImageProcessor.from_pretrained(entry["base"]).to_dict()
        assert processor.context_length == (77 if model_type == "metaclip_2" else 64)
        prompts = processor(class_names=NAMES)
        expected = entry["model"].class_prompts(NAMES)
        assert set(prompts) == set(expected)
        for key in expected:
            torch.testing.assert_close(prompts[key], expected[key], rtol=0, atol=0)


@pytest.mark.parametrize("model_type", NEW_TYPES)
def test_the_fingerprint_tells_backbones_apart(model_type, saved, tmp_path):
    entry = saved[model_type]
    base = entry["model"].clip
    fingerprint = clip_fingerprint(base)
    assert fingerprint["model_type"] == model_type
    assert fingerprint_differences(fingerprint, base) == []
    json.dumps(fingerprint)  # plain JSON data
    other = load_backbone(save_tiny_backbone(tmp_path / "other", model_type, seed=7))
    assert any("other weights" in line for line in fingerprint_differences(fingerprint, other))
    name = {"siglip": "SigLIP", "siglip2": "SigLIP 2", "metaclip_2": "MetaCLIP 2"}[model_type]  # the backbone's own
    with pytest.raises(ValueError, match=rf"trained on another {name} than the given clip_model: .*other weights"):
        CoCoOpModel.from_pretrained(entry["adapter"], clip_model=other)
    assert CoCoOpModel.from_pretrained(entry["adapter"], clip_model=other, allow_other_clip=True) is not None
    # Another kind of backbone: refused by class before any weight is compared.
    kind = "siglip2" if model_type == "siglip" else "siglip"
    stranger = load_backbone(save_tiny_backbone(tmp_path / "stranger", kind))
    assert fingerprint_differences(fingerprint, stranger)[0].startswith(f"model_type: adapter's base {model_type}")
    with pytest.raises(TypeError, match=rf"`clip_model` must be a transformers {type(base).__name__} .*got "):
        CoCoOpModel.from_pretrained(entry["adapter"], clip_model=stranger)


def test_a_clip_fingerprint_is_what_it_was(tmp_path):
    """CLIP adapters saved before other backbones: same keys, same sampled tensors (no model_type recorded)."""
    clip = load_backbone(save_tiny_backbone(tmp_path / "clip", "clip"))
    fingerprint = clip_fingerprint(clip)
    assert set(fingerprint) == {
        "text_layers",
        "vision_layers",
        "text_width",
        "vision_width",
        "projection_dim",
        "samples",
    }
    assert set(fingerprint["samples"]) == {
        "logit_scale",
        "text_projection.weight",
        "visual_projection.weight",
        "text_model.embeddings.token_embedding.weight",
        "vision_model.embeddings.patch_embedding.weight",
        "text_model.encoder.layers.1.mlp.fc2.weight",
    }
    siglip = load_backbone(save_tiny_backbone(tmp_path / "siglip", "siglip"))
    assert fingerprint_differences(fingerprint, siglip)[0] == "model_type: adapter's base clip, this siglip"


def test_the_official_converter_refuses_another_backbone(saved, tmp_path):
    missing = tmp_path / "never-read.pth.tar-10"  # refused before the checkpoint is opened
    for model_type in NEW_TYPES:
        with pytest.raises(ValueError, match=rf"is a '{model_type}' checkpoint, but official CoOp/CoCoOp .*CLIP-only"):
            from_official_checkpoint(missing, saved[model_type]["base"], NAMES)


# Loads each folder with the package made unimportable, as a Hub user without cocoop_hf would.
NO_PACKAGE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["cocoop_hf"] = None  # any `import cocoop_hf` now raises ImportError
    import torch
    from transformers import AutoModel, AutoProcessor

    request = json.loads(open(sys.argv[1]).read())
    out = {}
    for key, (folder, inputs) in request.items():
        model = AutoModel.from_pretrained(folder, trust_remote_code=True)
        inputs = {name: torch.tensor(value) for name, value in inputs.items()}
        with torch.no_grad():
            out[key] = {
                "logits": model(**inputs).logits.tolist(),
                "module": type(model).__module__,
                "backbone": type(model.clip).__name__,
                "processor": type(AutoProcessor.from_pretrained(folder, trust_remote_code=True).tokenizer).__name__,
            }
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)
    """
)


def test_folders_load_with_remote_code_without_the_package(saved, tmp_path):
    request = {
        f"{model_type}-{kind}": (str(saved[model_type][kind]), {k: v.tolist() for k, v in images(model_type).items()})
        for model_type in NEW_TYPES
        for kind in ("full", "adapter")
    }
    (tmp_path / "request.json").write_text(json.dumps(request))
    (tmp_path / "run.py").write_text(NO_PACKAGE_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHONPATH", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    args = [sys.executable, str(tmp_path / "run.py"), str(tmp_path / "request.json"), str(tmp_path / "out.json")]
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"subprocess failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    out = json.loads((tmp_path / "out.json").read_text())
    for model_type in NEW_TYPES:
        expected = logits_of(saved[model_type]["model"], model_type)
        for kind in ("full", "adapter"):
            result = out[f"{model_type}-{kind}"]
            assert result["module"].startswith("transformers_modules.")  # the folder's code, not the package
            assert result["backbone"] == type(saved[model_type]["model"].clip).__name__
            assert result["processor"] == type(AutoTokenizer.from_pretrained(saved[model_type]["base"])).__name__
            torch.testing.assert_close(torch.tensor(result["logits"]), expected, rtol=0, atol=ATOL)


def test_fingerprint_samples_stay_inside_large_tensors():
    """CLIP ViT-B/16's token embedding (49,408 x 512 = 25,296,896 values, past float32's exact integers) made the
    float32 linspace's last sample index equal the tensor's size: saving an adapter of a real CLIP raised IndexError.
    Positions of smaller tensors (what adapters recorded before) do not move."""
    from cocoop_hf.sharing_cocoop import fingerprint_sample_index

    numel = 49408 * 512
    index = fingerprint_sample_index(numel)
    assert int(index.max()) == numel - 1 and int(index.min()) == 0 and len(index) == 16
    for small in (1, 7, 40 * 32, 1000 * 64, 2**24):
        expected = torch.linspace(0, small - 1, min(16, small)).round().long()
        assert torch.equal(fingerprint_sample_index(small), expected)
