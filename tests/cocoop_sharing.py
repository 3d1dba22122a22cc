"""
Artifacts shared by the processor / pipeline / Hub / card tests, built once per session: a tiny CoCoOp model saved
full and adapter-only, a Hub-layout cache holding both (and the base CLIP under a Hub id), and small image files.
Built lazily behind a module-level cache so every test file's session fixture gets the same folders.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

from PIL import Image

from .conftest import CLASS_NAMES, random_pixels, save_tiny_clip


CLIP_REPO = "openai-test/tiny-clip"
FULL_REPO = "cocoop-test/tiny-cocoop"
ADAPTER_REPO = "cocoop-test/tiny-cocoop-adapter"
# Processor files of a full folder, and of an adapter-only one (prompt settings + image processor config; the
# tokenizer, 3.6 MB, comes from the base CLIP).
PROCESSOR_FILES = {"processor_config.json", "tokenizer.json", "tokenizer_config.json"}
ADAPTER_PROCESSOR_FILES = {"processor_config.json"}
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"}
_CACHE = {}


def put_in_hub_cache(cache_dir: Path, repo_id: str, folder: Path, revision: str) -> Path:
    """Lay `folder` out as huggingface_hub's cache does: models--org--name/snapshots/<rev>/ + refs/main."""
    repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / revision
    shutil.copytree(folder, snapshot)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot


def write_images(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, color, size in (("red", (220, 20, 20), (40, 30)), ("blue", (10, 30, 230), (24, 48))):
        paths[name] = folder / f"{name}.jpg"
        Image.new("RGB", size, color).save(paths[name], quality=90)
    paths["corrupt"] = folder / "corrupt.jpg"
    paths["corrupt"].write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    paths["text"] = folder / "notes.txt"
    paths["text"].write_text("not an image")
    return paths


def shared_artifacts(tmp_path_factory) -> SimpleNamespace:
    if "artifacts" in _CACHE:
        return _CACHE["artifacts"]
    from cocoop_hf import CoCoOpModel

    root = tmp_path_factory.mktemp("sharing")
    clip_dir = save_tiny_clip(root / "tiny-clip")
    model = CoCoOpModel.from_clip(str(clip_dir), CLASS_NAMES)
    with_local_clip = root / "cocoop-local"
    model.save_pretrained(with_local_clip)  # finds the image processor in the local CLIP folder
    # As if built from the Hub: adapter folders then resolve their base CLIP by id + revision.
    clip_revision = "c1" * 20
    model.config.clip_name_or_path = CLIP_REPO
    model.config.clip_revision = clip_revision
    full_dir, adapter_dir = root / "cocoop-full", root / "cocoop-adapter"
    model.save_pretrained(full_dir)
    model.save_pretrained(adapter_dir, adapter_only=True)

    hub_cache = root / "hub-cache"
    put_in_hub_cache(hub_cache, CLIP_REPO, clip_dir, clip_revision)
    put_in_hub_cache(hub_cache, FULL_REPO, full_dir, "f0" * 20)
    put_in_hub_cache(hub_cache, ADAPTER_REPO, adapter_dir, "a0" * 20)
    pixel_values = random_pixels(2)
    _CACHE["artifacts"] = SimpleNamespace(
        root=root,
        clip_dir=clip_dir,
        model=model.eval(),
        full_dir=full_dir,
        adapter_dir=adapter_dir,
        hub_cache=hub_cache,
        images=write_images(root / "images"),
        pixel_values=pixel_values,
    )
    return _CACHE["artifacts"]


# Runs with the package made unimportable: what a Hub user without cocoop_hf gets from trust_remote_code=True.
NO_PACKAGE_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.modules["cocoop_hf"] = None  # any `import cocoop_hf` now raises ImportError
    import torch
    from PIL import Image
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, AutoProcessor, pipeline

    full_repo, adapter_repo, image_path, save_dir, result_file = sys.argv[1:6]
    out = {}
    try:
        import cocoop_hf  # noqa: F401
        out["package_importable"] = True
    except ImportError:
        out["package_importable"] = False
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for key, repo in (("full", full_repo), ("adapter", adapter_repo)):
        model = AutoModel.from_pretrained(repo, trust_remote_code=True)
        with torch.no_grad():
            out[key + "_logits"] = model(pixel_values=pixels).logits.tolist()
        out[key + "_module"] = type(model).__module__
        out[key + "_class_names"] = model.class_names
    classifier = AutoModelForImageClassification.from_pretrained(full_repo, trust_remote_code=True)
    out["image_classification_class"] = type(classifier).__name__
    processor = AutoProcessor.from_pretrained(full_repo, trust_remote_code=True)
    out["processor_class"] = type(processor).__name__
    out["processor_prompt_ids_shape"] = list(processor(class_names=["cat", "dog"])["input_ids"].shape)
    out["processor_pixel_shape"] = list(processor(images=Image.open(image_path))["pixel_values"].shape)
    # The adapter repo holds no tokenizer: AutoProcessor takes it from the base CLIP (id + revision) in the cache.
    adapter_processor = AutoProcessor.from_pretrained(adapter_repo, trust_remote_code=True)
    out["adapter_processor_class"] = type(adapter_processor).__name__
    out["adapter_processor_settings"] = [adapter_processor.prompt_prefix, adapter_processor.n_ctx]
    out["adapter_processor_tokenizer"] = adapter_processor.tokenizer.name_or_path
    out["adapter_processor_prompt_ids_equal"] = bool(
        torch.equal(
            adapter_processor(class_names=["cat", "dog"])["input_ids"], processor(class_names=["cat", "dog"])["input_ids"]
        )
    )
    out["adapter_processor_pixels_equal"] = bool(
        torch.equal(
            adapter_processor(images=Image.open(image_path))["pixel_values"],
            processor(images=Image.open(image_path))["pixel_values"],
        )
    )
    zero_shot = pipeline("zero-shot-image-classification", model=full_repo, trust_remote_code=True)
    out["zero_shot"] = zero_shot(image_path, candidate_labels=["cat", "dog", "car"])
    out["zero_shot_trained"] = zero_shot(image_path)
    out["zero_shot_adapter"] = pipeline(
        "zero-shot-image-classification", model=adapter_repo, trust_remote_code=True
    )(image_path, candidate_labels=["cat", "dog", "car"])
    out["image_classification"] = pipeline("image-classification", model=full_repo, trust_remote_code=True)(
        image_path, top_k=3
    )
    out["image_classification_adapter"] = pipeline(
        "image-classification", model=adapter_repo, trust_remote_code=True
    )(image_path, top_k=3)
    for key, call in (
        ("no_trust_model", lambda: AutoModel.from_pretrained(full_repo, trust_remote_code=False)),
        ("no_trust_pipeline", lambda: pipeline("zero-shot-image-classification", model=full_repo)),
    ):
        try:
            call()
            out[key] = None
        except Exception as error:
            out[key] = f"{type(error).__name__}: {error}"
    # A model loaded through remote code saves a folder that is again complete.
    model = AutoModel.from_pretrained(full_repo, trust_remote_code=True)
    model.save_pretrained(save_dir)
    out["resaved_files"] = sorted(os.listdir(save_dir))
    reloaded = AutoModel.from_pretrained(save_dir, trust_remote_code=True)
    with torch.no_grad():
        out["resaved_logits"] = reloaded(pixel_values=pixels).logits.tolist()
    with open(result_file, "w") as f:
        json.dump(out, f)
    """
)


def no_package_results(tmp_path_factory) -> dict:
    """Run NO_PACKAGE_SCRIPT once, offline, against the Hub-layout cache; return its JSON."""
    if "no_package" in _CACHE:
        return _CACHE["no_package"]
    shared = shared_artifacts(tmp_path_factory)
    work = tmp_path_factory.mktemp("no-package")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHONPATH", "TRANSFORMERS_"))}
    env.update(
        HF_HUB_CACHE=str(shared.hub_cache),
        HF_HUB_OFFLINE="1",
        HF_MODULES_CACHE=str(work / "modules"),
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    script = work / "run.py"
    script.write_text(NO_PACKAGE_SCRIPT)
    result_file = work / "result.json"
    args = [sys.executable, str(script), FULL_REPO, ADAPTER_REPO, str(shared.images["red"]), str(work / "resaved")]
    proc = subprocess.run([*args, str(result_file)], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and result_file.exists(), (
        f"subprocess failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    _CACHE["no_package"] = json.loads(result_file.read_text())
    return _CACHE["no_package"]
