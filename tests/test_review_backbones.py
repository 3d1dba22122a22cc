"""
Review findings on the new backbones (issue 17), library side: loading a saved folder with trust_remote_code never
asks a question; given class prompts must be this model's (EOS, start token, attention mask); a save/load keeps the
padding side of the prompts and a config whose `prompt_context_start` disagrees with the tokenizer is refused; the
CLIP name rule only for CLIP's tokenizer; no spurious config warnings; a name that tokenises to nothing is refused;
messages and defaults that name the right backbone and the right limits. Tiny random backbones, offline.
"""

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from transformers import AutoTokenizer, CLIPImageProcessor

from cocoop_hf import CoCoOpModel
from cocoop_hf.limits_cocoop import _tower_defaults, check_backbone_config, estimated_clip_parameters
from cocoop_hf.processing_cocoop import CoCoOpProcessor
from cocoop_hf.sharing_cocoop import clip_fingerprint, fingerprint_differences

from .tiny_backbones import save_tiny_backbone, tiny_backbone


pytestmark = pytest.mark.usefixtures("single_thread")

TYPES = ("clip", "metaclip_2", "siglip", "siglip2")
NAMES = ["tench", "goldfish"]
# The joint width of the tiny backbones (tests/tiny_backbones.py): CLIP family projection 40, SigLIP family 48.
JOINT = {"clip": 40, "metaclip_2": 40, "siglip": 48, "siglip2": 48}
# Same weights, same prompts, same computation: equal up to float reordering, if any.
ATOL = 1e-6


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("review-bases")
    return {model_type: str(save_tiny_backbone(root / model_type, model_type)) for model_type in TYPES}


@pytest.fixture(scope="module")
def models(bases):
    return {model_type: CoCoOpModel.from_clip(base, NAMES).eval() for model_type, base in bases.items()}


def embeds(model_type, seed=0):
    return torch.randn(2, JOINT[model_type], generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ 1: no trust_remote_code question at load

NO_PACKAGE_SCRIPT = textwrap.dedent(
    """
    import builtins, importlib.abc, json, sys

    class Block(importlib.abc.MetaPathFinder):  # the package is installed here: make it unimportable
        def find_spec(self, name, path=None, target=None):
            if name == "cocoop_hf" or name.startswith("cocoop_hf."):
                raise ImportError(name)

    sys.meta_path.insert(0, Block())
    asked = []

    def no_input(prompt=""):  # what a terminal would wait on (15 s), here recorded and refused
        asked.append(prompt)
        raise EOFError("input() called")

    builtins.input = no_input
    import torch
    from transformers import AutoModel, AutoProcessor

    folder = sys.argv[1]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    with torch.no_grad():
        logits = model(image_embeds=torch.ones(1, 48)).logits
    print(json.dumps({
        "asked": asked,
        "module": type(model).__module__,
        "tokenizer": type(model.tokenizer).__name__ if model.tokenizer is not None else None,
        "processor_tokenizer": type(processor.tokenizer).__name__,
        "logits": logits.tolist(),
    }))
    """
)


def test_full_folder_loads_with_remote_code_without_asking(bases, models, tmp_path):
    # The base backbone is moved away after saving: the tokenizer must come from the folder itself (no fallback).
    base = tmp_path / "base"
    shutil.copytree(bases["siglip"], base)
    model = CoCoOpModel.from_clip(str(base), NAMES).eval()
    folder = tmp_path / "full"
    model.save_pretrained(folder)
    shutil.rmtree(base)
    (tmp_path / "run.py").write_text(NO_PACKAGE_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHONPATH", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "run.py"), str(folder)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"subprocess failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["asked"] == []  # no "Do you wish to run the custom code? [y/N]"
    assert not out["module"].startswith("cocoop_hf")  # the folder's own code ran, not the installed package
    assert out["tokenizer"] is not None and out["processor_tokenizer"] == out["tokenizer"]
    assert "a model of type cocoop to instantiate" not in proc.stderr
    with torch.no_grad():
        expected = model(image_embeds=torch.ones(1, 48)).logits
    torch.testing.assert_close(torch.tensor(out["logits"]), expected, rtol=0, atol=ATOL)


def test_load_backbone_tokenizer_reads_no_cocoop_config(models, tmp_path, monkeypatch):
    """In process: AutoTokenizer is told the backbone config, so it never resolves config.json's remote code."""
    folder = tmp_path / "full"
    models["siglip"].save_pretrained(folder)
    calls = []
    original = transformers.dynamic_module_utils.resolve_trust_remote_code

    def recording(trust_remote_code, model_name, has_local_code, has_remote_code, *args, **kwargs):
        calls.append((trust_remote_code, has_remote_code))
        return original(trust_remote_code, model_name, has_local_code, has_remote_code, *args, **kwargs)

    for module in (transformers.dynamic_module_utils, transformers.models.auto.configuration_auto,
                   transformers.models.auto.tokenization_auto):  # fmt: skip
        if hasattr(module, "resolve_trust_remote_code"):
            monkeypatch.setattr(module, "resolve_trust_remote_code", recording)
    loaded = CoCoOpModel.from_pretrained(folder)
    assert loaded.tokenizer is not None
    assert [call for call in calls if call[0] is None and call[1]] == []


# ------------------------------------------------------------------ 2, 3: given prompts must be this model's


@pytest.mark.parametrize("model_type", TYPES)
def test_own_prompts_are_accepted(models, model_type):
    model = models[model_type]
    prompts = dict(model.class_prompts(NAMES))
    with torch.no_grad():
        held = model(image_embeds=embeds(model_type)).logits
        given = model(image_embeds=embeds(model_type), **prompts).logits
    torch.testing.assert_close(given, held, rtol=0, atol=ATOL)


def test_siglip2_prompts_without_their_mask_are_refused(models):
    model = models["siglip2"]
    prompts = dict(model.class_prompts(NAMES))
    del prompts["attention_mask"]
    with pytest.raises(ValueError, match=r"class prompts need `attention_mask`: this model's prompts \(SigLIP 2\)"):
        model(image_embeds=embeds("siglip2"), **prompts)


def test_siglip_prompts_with_a_mask_are_refused(models):
    model = models["siglip"]
    prompts = dict(model.class_prompts(NAMES))
    prompts["attention_mask"] = (prompts["input_ids"] != -1).long()
    with pytest.raises(ValueError, match=r"\(SigLIP\) carry no `attention_mask`"):
        model(image_embeds=embeds("siglip"), **prompts)


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        ("siglip", "clip", r"do not hold this model's EOS token \(id 49407\)"),
        ("siglip", "metaclip_2", r"do not hold this model's EOS token \(id 2\)"),
        ("siglip", "siglip2", r"need `attention_mask`"),
        ("metaclip_2", "clip", r"do not hold this model's EOS token \(id 49407\)"),
    ],
)
def test_prompts_of_another_backbone_are_refused(models, source, target, message):
    prompts = dict(models[source].class_prompts(NAMES))
    with pytest.raises(ValueError, match=message):
        models[target](image_embeds=embeds(target), **prompts)


def test_prompts_without_the_start_token_are_refused(models):
    """CLIP prompts whose `<|startoftext|>` was replaced (e.g. another tokenizer's `<s>`): the start check."""
    model = models["clip"]
    prompts = dict(model.class_prompts(NAMES))
    prompts["input_ids"] = prompts["input_ids"].clone()
    prompts["input_ids"][:, 0] = 0
    with pytest.raises(ValueError, match=r"do not hold this model's start token\(s\) \['<\|startoftext\|>'\]"):
        model(image_embeds=embeds("clip"), **prompts)
    prompts = dict(model.class_prompts(NAMES))
    prompts["context_start"] = torch.zeros(2, dtype=torch.long)  # SigLIP's start, on a CLIP model
    with pytest.raises(ValueError, match=r"start token"):
        model(image_embeds=embeds("clip"), **prompts)


# ------------------------------------------------------------------ 4: padding side and prompt_context_start


def test_right_padding_siglip2_tokenizer_survives_save_and_load(bases, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(bases["siglip2"])
    tokenizer.padding_side = "right"
    torch.manual_seed(0)
    model = CoCoOpModel.from_clip(bases["siglip2"], NAMES, tokenizer=tokenizer).eval()
    assert model.config.prompt_context_start == 0
    with torch.no_grad():
        expected = model(image_embeds=embeds("siglip2")).logits
    left = CoCoOpModel.from_clip(bases["siglip2"], NAMES).eval()  # the same weights, left-padded prompts
    left.prompt_learner.load_state_dict(model.prompt_learner.state_dict())
    with torch.no_grad():
        assert (left(image_embeds=embeds("siglip2")).logits - expected).abs().max() > 1e-3  # the check can fail
    for adapter_only in (False, True):
        folder = tmp_path / f"right-{adapter_only}"
        model.save_pretrained(folder, adapter_only=adapter_only)
        loaded = CoCoOpModel.from_pretrained(folder).eval()
        assert loaded.tokenizer.padding_side == "right"
        assert loaded.context_start.tolist() == [0, 0]
        with torch.no_grad():
            logits = loaded(image_embeds=embeds("siglip2")).logits
        torch.testing.assert_close(logits, expected, rtol=0, atol=ATOL)
    saved = json.loads((tmp_path / "right-False" / "tokenizer_config.json").read_text())
    assert saved["padding_side"] == "right"


def test_edited_prompt_context_start_is_refused(models, tmp_path):
    folder = tmp_path / "edited"
    models["siglip"].save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["prompt_context_start"] == 0
    config["prompt_context_start"] = 1
    (folder / "config.json").write_text(json.dumps(config))
    loaded = CoCoOpModel.from_pretrained(folder).eval()
    with pytest.raises(
        ValueError, match=r"first context token at \[0\], but the model's config says prompt_context_start=1"
    ):
        loaded(image_embeds=embeds("siglip"))


def test_right_padding_tokenizer_on_a_left_padded_model_is_refused(models, bases):
    tokenizer = AutoTokenizer.from_pretrained(bases["siglip2"])
    tokenizer.padding_side = "right"
    model = CoCoOpModel.from_clip(bases["siglip2"], NAMES).eval()
    assert model.config.prompt_context_start is None
    with pytest.raises(ValueError, match=r"prompt_context_start=None \(a left-padding tokenizer\)"):
        model.set_class_names(["tench", "goldfish", "shark"], tokenizer=tokenizer)
    assert model.class_names == NAMES  # refused before anything changed


# ------------------------------------------------------------------ 5: CLIP's name rule only for CLIP


def test_from_clip_applies_the_clip_name_rule_only_to_clip(bases):
    model = CoCoOpModel.from_clip(bases["metaclip_2"], ["Tench", "tench"])  # a cased tokenizer tells them apart
    assert model.class_names == ["Tench", "tench"]
    assert not torch.equal(model.prompt_ids[0], model.prompt_ids[1])
    with pytest.raises(ValueError, match=r"duplicate class name 'tench' at index 1: the CLIP tokenizer"):
        CoCoOpModel.from_clip(bases["clip"], ["Tench", "tench"])


# ------------------------------------------------------------------ 9: no spurious warnings


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_siglip_config_checks_warn_nothing(models):
    handler = _Records()
    root = transformers.utils.logging.get_logger("transformers")
    root.addHandler(handler)
    try:
        _tower_defaults.cache_clear()
        transformers.utils.logging.warning_once.cache_clear()  # the warning is emitted once per process
        for model_type in ("siglip", "siglip2"):
            config = models[model_type].config.backbone_config
            check_backbone_config(config.to_dict())
            assert estimated_clip_parameters(config.to_dict()) > 0
    finally:
        root.removeHandler(handler)
    assert [m for m in handler.messages if "bos_token_id" in m or "eos_token_id" in m] == []


# ------------------------------------------------------------------ 10: a name that tokenises to nothing


def test_name_that_tokenises_to_nothing_is_refused(models):
    # SigLIP's tokenizer drops punctuation: '???' gives no token, the prompt would be the context alone.
    with pytest.raises(ValueError, match=r"class name '\?\?\?' \(index 1\) tokenises to nothing"):
        models["siglip"].class_prompts(["tench", "???"])
    with pytest.raises(ValueError, match=r"tokenises to nothing"):
        models["siglip"].set_class_names(["tench", "!!"])
    assert models["siglip"].class_names == NAMES
    assert models["metaclip_2"].class_prompts(["tench", "???"])["name_length"].tolist()[1] >= 1  # read as tokens


# ------------------------------------------------------------------ 11, 8: messages and defaults


def test_too_long_prompts_name_the_width(models):
    prompts = dict(models["clip"].class_prompts(NAMES))  # 77 positions
    with pytest.raises(
        ValueError, match=r"`input_ids` has 77 positions, but its text context is 64 \(SigLIP\)"
    ) as info:
        models["siglip"](image_embeds=embeds("siglip"), **prompts)
    assert "got []" not in str(info.value)


def test_siglip_n_ctx_limit_counts_no_start_token(bases):
    # 62 context tokens + a one-token name ('photo') + '</s>' = 64, SigLIP's whole context: it fits.
    model = CoCoOpModel.from_clip(bases["siglip"], ["photo"], ctx_init=None, n_ctx=62)
    assert model.config.prompt_context_start == 0 and model.eos_index.tolist() == [63]
    with pytest.raises(ValueError, match=r"needs 0 token\(s\) before the context.*use n_ctx <= 62"):
        CoCoOpModel.from_clip(bases["siglip"], ["photo"], ctx_init=None, n_ctx=63)


@pytest.mark.parametrize(("backbone_type", "length"), [(None, 77), ("clip", 77), ("siglip", 64), ("siglip2", 64)])
def test_processor_context_length_defaults_to_the_backbone(models, backbone_type, length):
    model = models[backbone_type or "clip"]
    image_processor = CLIPImageProcessor()
    processor = CoCoOpProcessor(
        image_processor, model.tokenizer, prompt_prefix="X X X X", n_ctx=4, backbone_type=backbone_type
    )
    assert processor.context_length == length
    given = CoCoOpProcessor(image_processor, model.tokenizer, context_length=20, backbone_type=backbone_type)
    assert given.context_length == 20


def test_limit_messages_name_the_backbone(models, tmp_path):
    config = models["siglip"].config.backbone_config.to_dict()
    config["text_config"]["num_hidden_layers"] = 64
    config["text_config"]["hidden_size"] = 8192
    config["text_config"]["intermediate_size"] = 32768
    config["vision_config"].update(num_hidden_layers=64, hidden_size=8192, intermediate_size=32768)
    with pytest.raises(ValueError, match=r"describes a SigLIP of [\d,]+ parameters") as info:
        check_backbone_config(config, source="backbone_config")
    assert "CLIP of" not in str(info.value)
    other, _, _ = tiny_backbone("siglip", seed=1)
    assert fingerprint_differences(clip_fingerprint(models["siglip"].clip), other)  # another SigLIP's weights
    folder = tmp_path / "adapter"
    models["siglip"].save_pretrained(folder, adapter_only=True)
    with pytest.raises(ValueError, match=r"trained on another SigLIP than the given clip_model") as info:
        CoCoOpModel.from_pretrained(folder, clip_model=other)
    assert "CLIP" not in str(info.value).replace("clip_model", "").replace("allow_other_clip", "")
