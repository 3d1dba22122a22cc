"""
Official IVLP / MaPLe / PromptSRC checkpoints (Dassl files of muzairkhattak/multimodal-prompt-learning and
muzairkhattak/PromptSRC) imported into a deep-prompt CoCoOpModel: the method and sizes read from keys and shapes, the
tensors mapped onto DeepPromptLearner's keys, the frozen CLIP dropped, inconsistent and hostile files refused.

The synthetic files are laid out as the official trainers save them (read in their code): Dassl's `save_model`
writes `{"state_dict": CustomCLIP.state_dict(), "epoch", "optimizer", "scheduler"}` (the whole CustomCLIP is
registered: trainers/maple.py, independentVL.py, promptsrc.py), in the dtypes of PREC fp16: `prompt_learner.ctx`
and MaPLe's `proj` fp16 (`clip_model.token_embedding(...).type(dtype)`, `self.proj.half()`), the `VPT` /
`VPT_shallow` parameters, MaPLe's `compound_prompts_text` and `compound_prompt_projections` fp32 (created in fp32,
untouched by clip/model.py `convert_weights`), the frozen CLIP's Linear / conv weights fp16.
"""

import logging
import math
import pickle
from collections import OrderedDict

import pytest
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

from cocoop_hf import CoCoOpModel
from cocoop_hf.convert_official import from_official_checkpoint, main
from cocoop_hf.convert_vl_official import (
    convert_vl_state_dict,
    from_official_vl_checkpoint,
    is_official_vl_checkpoint,
    read_official_vl_checkpoint,
)

from . import hostile_pickles as hostile
from .conftest import CLASS_NAMES, TOKENIZER_DIR, random_pixels, tiny_clip_config
from .test_official_pickle import CALLS, CallsOnLoad, official_state_dict, record_call, write_dassl_checkpoint


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: one thread is steadier

TEXT_WIDTH, VISION_WIDTH, LAYERS = 64, 32, 3  # widths differ: a width read from the wrong tower fails


@pytest.fixture(scope="module")
def vl_clip_dir(tmp_path_factory):
    """A tiny random CLIP with 3 layers per tower and text width 64, vision width 32 (+ the real tokenizer)."""
    config = tiny_clip_config(layers=LAYERS).to_dict()
    config["vision_config"].update(hidden_size=VISION_WIDTH, intermediate_size=2 * VISION_WIDTH)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig.from_dict(config)).eval()
    path = tmp_path_factory.mktemp("vl-clip")
    model.save_pretrained(path)
    CLIPTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def vl_tokenizer():
    return CLIPTokenizer.from_pretrained(TOKENIZER_DIR)


def frozen_tower(prefix: str, width: int, layers: int, randn, vpt_shallow: dict) -> dict:
    """Some of a frozen official tower's keys (clip/model.py names), with `VPT_shallow` in the blocks that have it."""
    state = {}
    for index in range(layers):
        block = f"{prefix}.transformer.resblocks.{index}"
        if index in vpt_shallow:  # registered in __init__ before attn: first in the block's state dict
            state[f"{block}.VPT_shallow"] = vpt_shallow[index]
        state[f"{block}.attn.in_proj_weight"] = randn(3 * width, width).half()
        state[f"{block}.attn.in_proj_bias"] = randn(3 * width).half()
        state[f"{block}.ln_1.weight"] = randn(width)
        state[f"{block}.mlp.c_fc.weight"] = randn(4 * width, width).half()
    return state


def official_vl_state(
    method: str,
    n_ctx: int = 2,
    n_ctx_vision: int = 3,
    depth_text: int = 3,
    depth_vision: int = 2,
    text_width: int = TEXT_WIDTH,
    vision_width: int = VISION_WIDTH,
    layers: int = LAYERS,
    frozen: bool = True,
    seed: int = 0,
) -> tuple[OrderedDict, dict]:
    """
    An official CustomCLIP state dict (trainers/independentVL.py, maple.py, promptsrc.py + clip/model.py key names)
    and the DeepPromptLearner tensors it must become (the official key each comes from, written out here).
    MaPLe: one PROMPT_DEPTH (`depth_text`) for both towers, no `n_ctx_vision`.
    """
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator) * 0.3

    state, expected = OrderedDict(), {}
    # `ctx_vectors = embedding[0, 1 : 1 + n_ctx, :]`: a view, saved with the whole (1, 77, width) storage at an offset
    state["prompt_learner.ctx"] = randn(1, 77, text_width).half()[0, 1 : 1 + n_ctx, :]
    expected["ctx"] = "prompt_learner.ctx"
    text_vpt, vision_vpt = {}, {}
    if method == "maple":
        state["prompt_learner.proj.weight"] = randn(vision_width, text_width).half()
        state["prompt_learner.proj.bias"] = randn(vision_width).half()
        expected["vision_projections.0.weight"] = "prompt_learner.proj.weight"
        expected["vision_projections.0.bias"] = "prompt_learner.proj.bias"
        for i in range(depth_text - 1):
            state[f"prompt_learner.compound_prompts_text.{i}"] = randn(n_ctx, text_width)
            expected[f"text_prompts.{i}"] = f"prompt_learner.compound_prompts_text.{i}"
        for i in range(depth_text - 1):
            for part, shape in (("weight", (vision_width, text_width)), ("bias", (vision_width,))):
                state[f"prompt_learner.compound_prompt_projections.{i}.{part}"] = randn(*shape)
                expected[f"vision_projections.{i + 1}.{part}"] = (
                    f"prompt_learner.compound_prompt_projections.{i}.{part}"
                )
    else:
        for layer in range(1, depth_text):
            text_vpt[layer] = randn(n_ctx, text_width)
            expected[f"text_prompts.{layer - 1}"] = f"text_encoder.transformer.resblocks.{layer}.VPT_shallow"
        for layer in range(1, depth_vision):
            vision_vpt[layer] = randn(n_ctx_vision, vision_width)
            expected[f"vision_prompts.{layer}"] = f"image_encoder.transformer.resblocks.{layer}.VPT_shallow"
    class_embedding = randn(5, 77, text_width).half()  # both buffers are views of one storage, as registered
    state["prompt_learner.token_prefix"] = class_embedding[:, :1, :]
    state["prompt_learner.token_suffix"] = class_embedding[:, 1 + n_ctx :, :]
    if method == "promptsrc" and frozen:  # VLPromptLearner.ZS_image_encoder: the frozen teacher
        state["prompt_learner.ZS_image_encoder.class_embedding"] = randn(vision_width).half()
        state.update(frozen_tower("prompt_learner.ZS_image_encoder", vision_width, layers, randn, {}))
    vision = {}
    if frozen:
        vision["image_encoder.conv1.weight"] = randn(vision_width, 3, 8, 8).half()
        vision["image_encoder.class_embedding"] = randn(vision_width).half()
    if method != "maple" and depth_vision > 0:
        vision["image_encoder.VPT"] = randn(n_ctx_vision, vision_width)
        expected["vision_prompts.0"] = "image_encoder.VPT"
    if frozen:
        vision.update(frozen_tower("image_encoder", vision_width, layers, randn, vision_vpt))
        vision["image_encoder.proj"] = randn(vision_width, 48).half()
        state.update(vision)
        state["text_encoder.positional_embedding"] = randn(77, text_width).half()
        state.update(frozen_tower("text_encoder", text_width, layers, randn, text_vpt))
        state["text_encoder.text_projection"] = randn(text_width, 48).half()
        state["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    else:  # only the learned prompts kept
        state.update(vision)
        for layer, value in text_vpt.items():
            state[f"text_encoder.transformer.resblocks.{layer}.VPT_shallow"] = value
        for layer, value in vision_vpt.items():
            state[f"image_encoder.transformer.resblocks.{layer}.VPT_shallow"] = value
    state._metadata = OrderedDict({"": {"version": 1}})  # as Module.state_dict() returns it
    return state, expected


def assert_mapped(checkpoint, state, expected):
    assert set(checkpoint.prompt_learner_state) == set(expected)
    for key, official_key in expected.items():
        tensor = checkpoint.prompt_learner_state[key]
        assert tensor.dtype == torch.float32, key
        assert torch.equal(tensor, state[official_key].float()), (key, official_key)
    assert checkpoint.source_keys == expected


def frozen_keys(state):
    return {key for key in state if not key.startswith("prompt_learner.") or "ZS_image_encoder" in key} - {
        key for key in state if "VPT" in key
    }


# ---------------------------------------------------------------------------------------------- keys -> layout

CASES = {
    "ivlp": dict(n_ctx=2, n_ctx_vision=3, depth_text=3, depth_vision=2),
    "promptsrc": dict(n_ctx=4, n_ctx_vision=1, depth_text=2, depth_vision=3),
    "maple": dict(n_ctx=2, depth_text=3),
}
IMPLIED = {
    "ivlp": dict(prompt_depth_text=3, prompt_depth_vision=2, n_ctx=2, n_ctx_vision=3, vision_prompts_from_text=False),
    "promptsrc": dict(
        prompt_depth_text=2, prompt_depth_vision=3, n_ctx=4, n_ctx_vision=1, vision_prompts_from_text=False
    ),
    "maple": dict(
        prompt_depth_text=3, prompt_depth_vision=3, n_ctx=2, n_ctx_vision=None, vision_prompts_from_text=True
    ),
}


@pytest.mark.parametrize("method", ["ivlp", "promptsrc", "maple"])
def test_dassl_file_is_mapped_onto_the_deep_prompt_learner(tmp_path, method, caplog):
    state, expected = official_vl_state(method, **CASES[method])
    path = write_dassl_checkpoint(tmp_path / "model.pth.tar-5", state)
    assert is_official_vl_checkpoint(path)
    with caplog.at_level(logging.INFO, logger="cocoop_hf.convert_vl_official"):
        checkpoint = read_official_vl_checkpoint(path)
    assert checkpoint.method == method
    assert checkpoint.config_kwargs == {**IMPLIED[method], "conditional": False, "class_specific_context": False}
    assert_mapped(checkpoint, state, expected)
    assert set(checkpoint.dropped) == frozen_keys(state)  # the frozen CLIP (and PromptSRC's teacher), not read
    assert checkpoint.class_buffers == ("prompt_learner.token_prefix", "prompt_learner.token_suffix")
    assert "torch.optim.lr_scheduler.CosineAnnealingLR" in caplog.text  # Dassl's pickled scheduler: never built


def test_legacy_torch_save_layout(tmp_path):
    state, expected = official_vl_state("ivlp", seed=3)
    path = write_dassl_checkpoint(tmp_path / "zip.pth.tar-5", state)
    legacy = tmp_path / "legacy.pth.tar-5"
    torch.save(torch.load(path, weights_only=False), legacy, _use_new_zipfile_serialization=False)
    assert_mapped(read_official_vl_checkpoint(legacy), state, expected)


def test_language_only_ivlp(tmp_path):
    """Official IVLP vit_b16_c2_ep5_batch4_4ctx_language_only.yaml: N_CTX_VISION 0, PROMPT_DEPTH_VISION 0."""
    state, expected = official_vl_state("ivlp", n_ctx=4, depth_text=3, depth_vision=0)
    checkpoint = read_official_vl_checkpoint(write_dassl_checkpoint(tmp_path / "model.pth.tar-5", state))
    assert checkpoint.config_kwargs["prompt_depth_vision"] == 0 and checkpoint.config_kwargs["n_ctx_vision"] is None
    assert_mapped(checkpoint, state, expected)


def test_prompts_only_file_needs_the_method(tmp_path):
    """With the frozen CLIP stripped, IVLP and PromptSRC files have the same keys: never guessed."""
    state, expected = official_vl_state("ivlp", frozen=False)
    path = write_dassl_checkpoint(tmp_path / "stripped.pth.tar-5", state)
    with pytest.raises(ValueError, match=r"holds only the learned prompts.*pass method='ivlp' or method='promptsrc'"):
        read_official_vl_checkpoint(path)
    for method in ("ivlp", "promptsrc"):
        checkpoint = read_official_vl_checkpoint(path, method=method)
        assert checkpoint.method == method and checkpoint.dropped == ()
        assert_mapped(checkpoint, state, expected)
    with pytest.raises(ValueError, match=r"method='maple' was passed, but the file has no 'prompt_learner\.proj"):
        read_official_vl_checkpoint(path, method="maple")
    with pytest.raises(ValueError, match=r"method='coop'.*one of ivlp, maple, promptsrc"):
        read_official_vl_checkpoint(path, method="coop")


@pytest.mark.parametrize(
    "method, given, message",
    [
        (
            "ivlp",
            "promptsrc",
            r"an IVLP checkpoint \(told by the frozen CLIP saved without PromptSRC's frozen teacher",
        ),
        ("promptsrc", "ivlp", r"a PromptSRC checkpoint \(told by PromptSRC's frozen teacher"),
        ("maple", "ivlp", r"a MaPLe checkpoint \(told by MaPLe's projections"),
    ],
)
def test_a_method_that_contradicts_the_file_is_refused(tmp_path, method, given, message):
    state, _ = official_vl_state(method)
    path = write_dassl_checkpoint(tmp_path / "model.pth.tar-5", state)
    with pytest.raises(ValueError, match=rf"method='{given}' was passed, but the file is {message}"):
        read_official_vl_checkpoint(path, method=given)


def edited(method, edit, **kwargs):
    state, _ = official_vl_state(method, **kwargs)
    edit(state)
    return state


def _replace(state, key, value):
    state[key] = value


INCONSISTENT = {
    "text-layer-gap": (
        lambda: edited("ivlp", lambda s: s.pop("text_encoder.transformer.resblocks.1.VPT_shallow")),
        r"'text_encoder\.transformer\.resblocks\.1\.VPT_shallow' is missing, but "
        r"'text_encoder\.transformer\.resblocks\.2\.VPT_shallow' is there",
    ),
    "vision-layer-gap": (
        lambda: edited("ivlp", lambda s: s.pop("image_encoder.transformer.resblocks.1.VPT_shallow"), depth_vision=3),
        r"'image_encoder\.transformer\.resblocks\.1\.VPT_shallow' is missing, but .*resblocks\.2\.VPT_shallow",
    ),
    "maple-text-gap": (
        lambda: edited("maple", lambda s: s.pop("prompt_learner.compound_prompts_text.0")),
        r"'prompt_learner\.compound_prompts_text\.0' is missing, but 'prompt_learner\.compound_prompts_text\.1'",
    ),
    "maple-projection-missing": (
        lambda: edited(
            "maple",
            lambda s: [s.pop(f"prompt_learner.compound_prompt_projections.1.{p}") for p in ("weight", "bias")],
        ),
        r"2 'prompt_learner\.compound_prompts_text\.<i>' but 1 'prompt_learner\.compound_prompt_projections\.<i>'",
    ),
    "maple-bias-missing": (
        lambda: edited("maple", lambda s: s.pop("prompt_learner.compound_prompt_projections.0.bias")),
        r"'prompt_learner\.compound_prompt_projections\.0\.bias' is missing",
    ),
    "maple-proj-missing": (
        lambda: edited("maple", lambda s: s.pop("prompt_learner.proj.weight")),
        r"'prompt_learner\.proj\.weight' is missing",
    ),
    "vpt-shallow-without-vpt": (
        lambda: edited("ivlp", lambda s: s.pop("image_encoder.VPT")),
        r"'image_encoder\.VPT' is missing, but 'image_encoder\.transformer\.resblocks\.1\.VPT_shallow' is there",
    ),
    "vpt-shallow-in-block-0": (
        lambda: edited(
            "ivlp", lambda s: _replace(s, "text_encoder.transformer.resblocks.0.VPT_shallow", torch.zeros(2, 64))
        ),
        r"'text_encoder\.transformer\.resblocks\.0\.VPT_shallow': block 0 of the official text tower has no",
    ),
    "text-width-mixed": (
        lambda: edited(
            "ivlp", lambda s: _replace(s, "text_encoder.transformer.resblocks.2.VPT_shallow", torch.zeros(2, 48))
        ),
        r"'text_encoder\.transformer\.resblocks\.2\.VPT_shallow' has shape \(2, 48\) where \(2, 64\) is needed",
    ),
    "text-tokens-mixed": (
        lambda: edited(
            "ivlp", lambda s: _replace(s, "text_encoder.transformer.resblocks.1.VPT_shallow", torch.zeros(3, 64))
        ),
        r"'text_encoder\.transformer\.resblocks\.1\.VPT_shallow' has shape \(3, 64\) where \(2, 64\) is needed",
    ),
    "vision-tokens-mixed": (
        lambda: edited(
            "ivlp", lambda s: _replace(s, "image_encoder.transformer.resblocks.1.VPT_shallow", torch.zeros(4, 32))
        ),
        r"'image_encoder\.transformer\.resblocks\.1\.VPT_shallow' has shape \(4, 32\) where \(3, 32\) is needed",
    ),
    "maple-projection-width-mixed": (
        lambda: edited(
            "maple",
            lambda s: _replace(s, "prompt_learner.compound_prompt_projections.1.weight", torch.zeros(16, 64)),
        ),
        r"'prompt_learner\.compound_prompt_projections\.1\.weight' has shape \(16, 64\) where \(32, 64\) is needed",
    ),
    "maple-projection-reads-other-width": (
        lambda: edited("maple", lambda s: _replace(s, "prompt_learner.proj.weight", torch.zeros(32, 48))),
        r"'prompt_learner\.proj\.weight' has shape \(32, 48\) where \(vision width, 64\) is needed",
    ),
    "maple-and-ivlp-keys": (
        lambda: edited("maple", lambda s: _replace(s, "image_encoder.VPT", torch.zeros(2, 32))),
        r"both MaPLe's 'prompt_learner\.compound_prompt_projections\.0\.bias' and IVLP's 'image_encoder\.VPT'",
    ),
    "depth-beyond-the-files-tower": (
        lambda: edited(
            "ivlp", lambda s: _replace(s, "text_encoder.transformer.resblocks.3.VPT_shallow", torch.zeros(2, 64))
        ),
        r"'text_encoder\.transformer\.resblocks\.3\.VPT_shallow' prompts text layer 3, but the file's own text tower "
        r"has 3 text layers",
    ),
    "class-specific-ctx": (
        lambda: edited("ivlp", lambda s: _replace(s, "prompt_learner.ctx", torch.zeros(5, 2, 64))),
        r"'prompt_learner\.ctx' has shape \(5, 2, 64\), a class-specific context",
    ),
    "no-ctx": (
        lambda: edited("ivlp", lambda s: s.pop("prompt_learner.ctx")),
        r"no 'prompt_learner\.ctx'",
    ),
    "another-methods-module": (
        lambda: edited("ivlp", lambda s: _replace(s, "prompt_learner.meta_net.linear1.weight", torch.zeros(3, 48))),
        r"has 'prompt_learner\.meta_net\.linear1\.weight', which no official IVLP / MaPLe / PromptSRC trainer saves",
    ),
    "index-with-leading-zero": (
        lambda: edited(
            "ivlp", lambda s: _replace(s, "image_encoder.transformer.resblocks.01.VPT_shallow", torch.zeros(3, 32))
        ),
        r"has 'image_encoder\.transformer\.resblocks\.01\.VPT_shallow', which no official",
    ),
}


@pytest.mark.parametrize("case", sorted(INCONSISTENT))
def test_inconsistent_files_are_refused_naming_the_key(tmp_path, case):
    build, message = INCONSISTENT[case]
    path = write_dassl_checkpoint(tmp_path / "model.pth.tar-5", build())
    with pytest.raises(ValueError, match=message):
        read_official_vl_checkpoint(path)


def test_bounded_work_on_huge_layer_indices():
    """A layer index of 9999 fails at the first missing layer (no range over it); longer ones are no official key."""
    state = {"prompt_learner.ctx": torch.zeros(2, 64)}
    state["text_encoder.transformer.resblocks.9999.VPT_shallow"] = torch.zeros(2, 64)
    with pytest.raises(ValueError, match=r"resblocks\.1\.VPT_shallow' is missing, but .*resblocks\.9999\.VPT_shallow"):
        convert_vl_state_dict(state, method="ivlp")
    del state["text_encoder.transformer.resblocks.9999.VPT_shallow"]
    state["text_encoder.transformer.resblocks." + "9" * 5000 + ".VPT_shallow"] = torch.zeros(2, 64)
    with pytest.raises(ValueError, match=r"which no official IVLP / MaPLe / PromptSRC trainer saves"):
        convert_vl_state_dict(state, method="ivlp")


# ---------------------------------------------------------------------------------------------- hostile files


def hostile_vl_file(path, ctx_record: bytes, frozen_record: bytes, storages: dict) -> None:
    items = (
        hostile.text("prompt_learner.ctx") + ctx_record + hostile.text("text_encoder.ln_final.weight") + frozen_record
    )
    data_pkl = hostile.proto(2) + hostile.checkpoint_object(items) + pickle.STOP
    hostile.write_zip_file(path, data_pkl, storages)


def test_huge_declared_prompt_is_refused(tmp_path):
    """A prompt record claiming 2^40 elements over a 4-byte storage: refused by the reader, nothing allocated."""
    path = tmp_path / "huge.pth"
    ctx = hostile.half_tensor("0", 2, (2**40, 64), (0, 1))
    frozen = hostile.half_tensor("1", 4, (4,), (1,))
    hostile_vl_file(path, ctx, frozen, {"0": bytes(4), "1": bytes(8)})
    assert is_official_vl_checkpoint(path)
    with pytest.raises(OSError, match=r"cannot read official checkpoint .*huge\.pth.*more elements than its storage"):
        read_official_vl_checkpoint(path, method="ivlp")


def test_frozen_tensors_are_never_read(tmp_path):
    """
    A frozen-CLIP record whose storage claims 2^40 bytes in a tiny file: had it been built, the reader would refuse
    it ("more than the whole file"); it is dropped unread, and the prompts convert.
    """
    path = tmp_path / "frozen.pth"
    ctx = hostile.half_tensor("0", 2 * 64, (2, 64), (64, 1))
    frozen = hostile.half_tensor("1", 2**40, (4,), (1,))
    hostile_vl_file(path, ctx, frozen, {"0": bytes(2 * 2 * 64), "1": bytes(8)})
    checkpoint = read_official_vl_checkpoint(path)  # the frozen text tower says: IVLP
    assert checkpoint.method == "ivlp" and checkpoint.dropped == ("text_encoder.ln_final.weight",)
    assert torch.equal(checkpoint.prompt_learner_state["ctx"], torch.zeros(2, 64))


def test_malicious_globals_are_not_called(tmp_path):
    state, expected = official_vl_state("maple", seed=5)
    path = write_dassl_checkpoint(tmp_path / "evil.pth.tar-5", state, recorder=CallsOnLoad(record_call, "pwned"))
    CALLS.clear()
    assert_mapped(read_official_vl_checkpoint(path), state, expected)
    assert CALLS == []


def test_a_non_tensor_prompt_is_refused(tmp_path):
    state, _ = official_vl_state("ivlp")
    state["image_encoder.VPT"] = CallsOnLoad(record_call, "in state_dict")
    path = tmp_path / "evil-state.pth.tar-1"
    torch.save({"state_dict": state, "epoch": 1}, path)
    CALLS.clear()
    with pytest.raises(ValueError, match=r"'image_encoder\.VPT' is <not loaded: .*record_call>, not a tensor"):
        read_official_vl_checkpoint(path)
    assert CALLS == []


def test_coop_files_are_not_taken_for_multimodal_ones(tmp_path):
    coop = write_dassl_checkpoint(tmp_path / "coop.pth.tar-10", official_state_dict(conditional=False))
    assert not is_official_vl_checkpoint(coop)
    (tmp_path / "garbage.pth").write_bytes(b"\x80garbage")
    assert not is_official_vl_checkpoint(tmp_path / "garbage.pth")
    assert not is_official_vl_checkpoint(tmp_path / "nowhere.pth")


# ---------------------------------------------------------------------------------------------- the model


def model_with_tensors(clip_dir, tokenizer, state_dict, **config_kwargs):
    """The expected result: a model built in memory with the same config, the same tensors copied in by key."""
    model = CoCoOpModel.from_clip(str(clip_dir), CLASS_NAMES, tokenizer=tokenizer, **config_kwargs)
    with torch.no_grad():
        for name, parameter in model.prompt_learner.named_parameters():
            parameter.copy_(state_dict[name])
    return model


def assert_same_logits(model, expected):
    pixel_values = random_pixels(3, seed=2)
    with torch.no_grad():
        assert torch.equal(model(pixel_values=pixel_values).logits, expected(pixel_values=pixel_values).logits)


def expected_config(method):
    kwargs = {**IMPLIED[method], "conditional": False, "ctx_init": "a photo of a"}
    if method == "promptsrc":  # the official loss weights (configs/trainers/PromptSRC/vit_b16_c2_ep20_...yaml)
        kwargs.update(promptsrc_text_weight=25.0, promptsrc_image_weight=10.0, promptsrc_logits_weight=1.0)
    return kwargs


@pytest.mark.parametrize("method", ["ivlp", "promptsrc", "maple"])
def test_imported_model_equals_the_model_built_in_memory(vl_clip_dir, vl_tokenizer, tmp_path, method, caplog):
    state, expected = official_vl_state(method, **CASES[method], seed=7)
    path = write_dassl_checkpoint(tmp_path / "model.pth.tar-5", state)
    with caplog.at_level(logging.INFO, logger="cocoop_hf.convert_vl_official"):
        model = from_official_checkpoint(path, str(vl_clip_dir), CLASS_NAMES, tokenizer=vl_tokenizer)
    assert model.config.method_name == method
    for key, value in expected_config(method).items():
        assert getattr(model.config, key) == value, key
    learned = model.prompt_learner.state_dict()
    assert set(learned) == set(expected)
    for key, official_key in expected.items():
        assert torch.equal(learned[key], state[official_key].float()), key
    assert f"not imported: {len(frozen_keys(state))} tensors of the frozen CLIP" in caplog.text
    assert (
        "not imported: prompt_learner.token_prefix, prompt_learner.token_suffix (the training classes'" in caplog.text
    )
    in_memory = model_with_tensors(vl_clip_dir, vl_tokenizer, learned, **expected_config(method))
    assert_same_logits(model, in_memory)


def vl_argv(checkpoint, clip_dir, names_file, output_dir, *flags):
    argv = ["--checkpoint", str(checkpoint), "--clip", str(clip_dir), "--class_names_file", str(names_file)]
    return argv + ["--output_dir", str(output_dir), *flags]


@pytest.fixture
def names_file(tmp_path):
    path = tmp_path / "classnames.txt"
    path.write_text("\n".join(CLASS_NAMES) + "\n")
    return path


@pytest.mark.parametrize(
    "method, frozen, flags",
    [
        ("maple", True, []),
        ("ivlp", True, ["--adapter_only"]),
        ("promptsrc", False, ["--method", "promptsrc"]),
        ("promptsrc", True, ["--adapter_only", "--method", "promptsrc"]),
    ],
    ids=["maple-full", "ivlp-adapter", "promptsrc-stripped-method", "promptsrc-adapter-method-agrees"],
)
def test_command_line_writes_a_folder_that_loads_to_the_same_logits(
    vl_clip_dir, vl_tokenizer, tmp_path, names_file, method, frozen, flags
):
    state, _ = official_vl_state(method, **CASES[method], frozen=frozen, seed=9)
    path = write_dassl_checkpoint(tmp_path / "model.pth.tar-5", state)
    output_dir = tmp_path / "converted"
    in_memory = main(vl_argv(path, vl_clip_dir, names_file, output_dir, *flags))
    adapter_only = "--adapter_only" in flags
    assert (output_dir / ("prompt_learner.safetensors" if adapter_only else "model.safetensors")).is_file()
    assert not (output_dir / "convert_vl_official.py").exists()  # the folder ships the model's code, not this
    loaded = CoCoOpModel.from_pretrained(output_dir)
    assert loaded.config.method_name == method and loaded.class_names == CLASS_NAMES
    for key, value in expected_config(method).items():
        assert getattr(loaded.config, key) == value, key
    assert_same_logits(loaded, in_memory)
    built = model_with_tensors(
        vl_clip_dir, vl_tokenizer, in_memory.prompt_learner.state_dict(), **expected_config(method)
    )
    assert_same_logits(loaded, built)


def test_command_line_method_for_a_coop_file_is_refused(tmp_path, tiny_clip_dir, names_file):
    coop = write_dassl_checkpoint(tmp_path / "coop.pth.tar-10", official_state_dict(conditional=False))
    with pytest.raises(ValueError, match=r"method='ivlp' was passed, but the file is laid out like a CoOp/CoCoOp"):
        main(vl_argv(coop, tiny_clip_dir, names_file, tmp_path / "out", "--method", "ivlp"))
    assert not (tmp_path / "out").exists()


def test_options_the_official_trainers_do_not_have_are_refused(vl_clip_dir, vl_tokenizer, tmp_path):
    path = write_dassl_checkpoint(tmp_path / "ivlp.pth.tar-5", official_vl_state("ivlp")[0])
    with pytest.raises(ValueError, match=r"an IVLP checkpoint was trained with the class name at the end"):
        from_official_vl_checkpoint(
            path, str(vl_clip_dir), CLASS_NAMES, tokenizer=vl_tokenizer, class_token_position="middle"
        )
    with pytest.raises(ValueError, match=r"n_ctx=4 was passed, but the checkpoint's tensors imply n_ctx=2"):
        from_official_vl_checkpoint(path, str(vl_clip_dir), CLASS_NAMES, tokenizer=vl_tokenizer, n_ctx=4)
    wide = write_dassl_checkpoint(tmp_path / "wide.pth.tar-5", official_vl_state("ivlp", n_ctx=8)[0])
    with pytest.raises(ValueError, match=r"ctx_init='a photo of a' was passed, but the checkpoint has 8 context"):
        from_official_vl_checkpoint(
            wide, str(vl_clip_dir), CLASS_NAMES, tokenizer=vl_tokenizer, ctx_init="a photo of a"
        )
    model = from_official_vl_checkpoint(wide, str(vl_clip_dir), CLASS_NAMES, tokenizer=vl_tokenizer)
    assert model.config.ctx_init is None and model.config.prompt_prefix == " ".join(["X"] * 8)


def test_files_that_do_not_fit_the_clip_are_refused(vl_clip_dir, vl_tokenizer, tmp_path):
    """Checked against the CLIP's config before its weights load, naming the file's key."""
    deep = official_vl_state("ivlp", depth_text=4, frozen=False)[0]  # 4 text layers prompted, the CLIP has 3
    path = write_dassl_checkpoint(tmp_path / "deep.pth.tar-5", deep)
    with pytest.raises(ValueError, match=r"'text_encoder\.transformer\.resblocks\.3\.VPT_shallow' prompts text layer 3, "
                       r"but the CLIP given has 3 text layers"):  # fmt: skip
        from_official_vl_checkpoint(path, str(vl_clip_dir), CLASS_NAMES, tokenizer=vl_tokenizer, method="ivlp")
    vit_b16 = official_vl_state("maple", text_width=512, vision_width=768, frozen=False)[0]
    path = write_dassl_checkpoint(tmp_path / "vitb16.pth.tar-5", vit_b16)
    with pytest.raises(ValueError, match=r"'prompt_learner\.ctx' has text width 512, but the CLIP given has text "
                       r"width 64"):  # fmt: skip
        from_official_vl_checkpoint(path, str(vl_clip_dir), CLASS_NAMES, tokenizer=vl_tokenizer)
    vision = official_vl_state("ivlp", vision_width=768)[0]
    for key in [key for key in vision if key.startswith("image_encoder.") and "VPT" not in key]:
        del vision[key]  # a stripped vision tower: the text tower still says IVLP
    path = write_dassl_checkpoint(tmp_path / "vision.pth.tar-5", vision)
    with pytest.raises(ValueError, match=r"'image_encoder\.transformer\.resblocks\.1\.VPT_shallow' has vision width "
                       r"768, but the CLIP given has vision width 32"):  # fmt: skip
        from_official_vl_checkpoint(path, str(vl_clip_dir), CLASS_NAMES, tokenizer=vl_tokenizer)


def test_another_backbone_is_refused(tmp_path):
    from transformers import SiglipConfig

    SiglipConfig().save_pretrained(tmp_path / "siglip")
    path = write_dassl_checkpoint(tmp_path / "ivlp.pth.tar-5", official_vl_state("ivlp")[0])
    with pytest.raises(ValueError, match=r"is a 'siglip' checkpoint, but official IVLP / MaPLe / PromptSRC"):
        from_official_vl_checkpoint(path, str(tmp_path / "siglip"), CLASS_NAMES)
