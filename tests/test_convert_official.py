"""Official CoOp/CoCoOp (Dassl) checkpoints: safe loading, import, shape checks, the command line."""

import collections
import logging
import os
import pickle

import pytest
import torch

from cocoop_hf import CoCoOpModel
from cocoop_hf.convert_official import from_official_checkpoint, load_official_state_dict, main

from .conftest import CLASS_NAMES, NEW_CLASS_NAMES, random_pixels
from .test_modeling import single_thread  # noqa: F401  (autouse fixture)


CALLS = []


def record_call(*args):
    """A global a malicious pickle could name; plain unpickling would call it."""
    CALLS.append(args)
    return args


class CallsOnLoad:
    """Pickles as `function(*args)`: unpickling calls `function`."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def official_state_dict(n_ctx=4, width=64, projection=48, hidden=3, conditional=True, n_train_classes=5, seed=0):
    """Tensors as the official PromptLearner names them, in fp16 (Dassl's default PREC for CoCoOp)."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return (torch.randn(*shape, generator=generator) * 0.3).half()

    state = {"ctx": randn(n_ctx, width)}
    if conditional:
        state.update(
            {
                "meta_net.linear1.weight": randn(hidden, projection),
                "meta_net.linear1.bias": randn(hidden),
                "meta_net.linear2.weight": randn(width, hidden),
                "meta_net.linear2.bias": randn(width),
            }
        )
    # Class-dependent buffers of the training class set: ignored on import.
    state["token_prefix"] = randn(n_train_classes, 1, width)
    state["token_suffix"] = randn(n_train_classes, 77 - 1 - n_ctx, width)
    # Like Module.state_dict(): an OrderedDict carrying `_metadata`.
    state = collections.OrderedDict(state)
    state._metadata = collections.OrderedDict({"": {"version": 1}})
    return state


def write_dassl_checkpoint(path, state_dict, **extra):
    """What Dassl's save_checkpoint writes: the training state with a pickled CosineAnnealingLR object."""
    parameters = [torch.nn.Parameter(t.float().clone()) for key, t in state_dict.items() if "token_" not in key]
    optimizer = torch.optim.SGD(parameters, lr=0.002, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    sum(p.sum() for p in parameters).backward()
    optimizer.step()
    scheduler.step()
    checkpoint = {
        "state_dict": state_dict,
        "epoch": 10,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler,
        "val_result": 71.3,
        **extra,
    }
    torch.save(checkpoint, path)
    return path


def model_with_tensors(clip_dir, class_names, state_dict, tokenizer, **config_kwargs):
    """The expected result: the same tensors copied straight into a fresh model."""
    model = CoCoOpModel.from_clip(str(clip_dir), class_names, tokenizer=tokenizer, **config_kwargs)
    with torch.no_grad():
        for name, parameter in model.prompt_learner.named_parameters():
            parameter.copy_(state_dict[name].float())
    return model


def assert_same_logits(model, expected):
    pixel_values = random_pixels(3, seed=2)
    with torch.no_grad():
        assert torch.equal(model(pixel_values=pixel_values).logits, expected(pixel_values=pixel_values).logits)


@pytest.fixture(scope="module")
def cocoop_checkpoint(tmp_path_factory):
    state = official_state_dict()
    path = tmp_path_factory.mktemp("dassl") / "prompt_learner" / "model.pth.tar-10"
    path.parent.mkdir()
    return write_dassl_checkpoint(path, state), state


def test_weights_only_refuses_real_dassl_file(cocoop_checkpoint):
    """The premise (TRAPS.md): a real file is not weights-only loadable, so the restricted path is exercised."""
    path, _ = cocoop_checkpoint
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_import_cocoop_checkpoint(cocoop_checkpoint, tiny_clip_dir, caplog, tokenizer):
    path, state = cocoop_checkpoint
    with caplog.at_level(logging.INFO, logger="cocoop_hf.convert_official"):
        model = CoCoOpModel.from_official_checkpoint(path, str(tiny_clip_dir), NEW_CLASS_NAMES, tokenizer=tokenizer)
    assert "torch.optim.lr_scheduler.CosineAnnealingLR" in caplog.text  # stubbed, never built
    assert model.config.conditional and model.config.n_ctx == 4 and model.config.meta_net_reduction == 16
    assert model.class_names == NEW_CLASS_NAMES
    assert model.prompt_learner.ctx.dtype == torch.float32
    assert torch.equal(model.prompt_learner.ctx.detach(), state["ctx"].float())
    assert_same_logits(model, model_with_tensors(tiny_clip_dir, NEW_CLASS_NAMES, state, tokenizer))


def test_load_official_state_dict_keeps_only_prompt_learner(cocoop_checkpoint):
    path, state = cocoop_checkpoint
    tensors = load_official_state_dict(path)
    assert set(tensors) == {key for key in state if not key.startswith("token_")}
    for key, tensor in tensors.items():
        assert tensor.dtype == torch.float16 and torch.equal(tensor, state[key])


def test_import_coop_checkpoint(tiny_clip_dir, tmp_path, tokenizer):
    """Official CoOp recipe: 16 context tokens from random init, no meta-net."""
    state = official_state_dict(n_ctx=16, conditional=False, seed=4)
    path = write_dassl_checkpoint(tmp_path / "model.pth.tar-50", state)
    model = from_official_checkpoint(path, str(tiny_clip_dir), CLASS_NAMES, tokenizer=tokenizer)
    assert not model.config.conditional and model.prompt_learner.meta_net is None
    assert model.config.n_ctx == 16 and model.config.prompt_prefix == " ".join(["X"] * 16)
    expected = model_with_tensors(
        tiny_clip_dir, CLASS_NAMES, state, tokenizer, conditional=False, ctx_init=None, n_ctx=16
    )
    assert_same_logits(model, expected)


def test_import_bare_state_dict(tiny_clip_dir, tmp_path, tokenizer):
    """A file holding only tensors loads through plain weights_only loading."""
    state = official_state_dict(seed=6)
    torch.save(state, tmp_path / "bare.pth")
    model = from_official_checkpoint(tmp_path / "bare.pth", str(tiny_clip_dir), CLASS_NAMES, tokenizer=tokenizer)
    assert_same_logits(model, model_with_tensors(tiny_clip_dir, CLASS_NAMES, state, tokenizer))


def test_malicious_pickle_is_not_executed(tiny_clip_dir, tmp_path, caplog, tokenizer):
    marker = tmp_path / "executed"
    state = official_state_dict(seed=7)
    path = write_dassl_checkpoint(
        tmp_path / "evil.pth.tar-1",
        state,
        system=CallsOnLoad(os.system, f"touch {marker}"),
        eval=CallsOnLoad(eval, f"open({str(marker)!r}, 'w')"),
        recorder=CallsOnLoad(record_call, "pwned"),
    )
    CALLS.clear()
    with caplog.at_level(logging.INFO, logger="cocoop_hf.convert_official"):
        model = from_official_checkpoint(path, str(tiny_clip_dir), CLASS_NAMES, tokenizer=tokenizer)
    assert not marker.exists() and CALLS == []
    assert "record_call" in caplog.text and "system" in caplog.text and "eval" in caplog.text
    assert_same_logits(model, model_with_tensors(tiny_clip_dir, CLASS_NAMES, state, tokenizer))
    # Control: plain unpickling of such a file does call the named global, so the assertions above can fail.
    control = write_dassl_checkpoint(tmp_path / "control.pth.tar-1", state, recorder=CallsOnLoad(record_call, "ctl"))
    torch.load(control, weights_only=False, map_location="cpu")
    assert CALLS == [("ctl",)]
    CALLS.clear()


def test_class_specific_context_unsupported(tiny_clip_dir, tmp_path, tokenizer):
    state = official_state_dict(conditional=False)
    state["ctx"] = torch.zeros(len(CLASS_NAMES), 16, 64, dtype=torch.float16)
    path = write_dassl_checkpoint(tmp_path / "csc.pth.tar-50", state)
    with pytest.raises(ValueError, match=r"'ctx' has shape \(7, 16, 64\), a class-specific context.*not supported"):
        from_official_checkpoint(path, str(tiny_clip_dir), CLASS_NAMES, tokenizer=tokenizer)


def test_width_mismatch(tiny_clip_dir, tmp_path, tokenizer):
    """A ViT-B/16 checkpoint (text width 512) on a CLIP of text width 64."""
    state = official_state_dict(width=512, projection=512, hidden=32)
    path = write_dassl_checkpoint(tmp_path / "vitb16.pth.tar-10", state)
    with pytest.raises(ValueError, match=r"vitb16\.pth\.tar-10: tensor 'ctx' has shape \(4, 512\).*\(4, 64\)"):
        from_official_checkpoint(path, str(tiny_clip_dir), CLASS_NAMES, tokenizer=tokenizer)


def test_partial_meta_net(tiny_clip_dir, tmp_path, tokenizer):
    state = official_state_dict()
    del state["meta_net.linear2.bias"]
    path = write_dassl_checkpoint(tmp_path / "partial.pth.tar-10", state)
    with pytest.raises(ValueError, match=r"missing \['meta_net\.linear2\.bias'\]"):
        from_official_checkpoint(path, str(tiny_clip_dir), CLASS_NAMES, tokenizer=tokenizer)


def test_contradicting_arguments(cocoop_checkpoint, tiny_clip_dir, tokenizer):
    path, _ = cocoop_checkpoint
    with pytest.raises(ValueError, match=r"conditional=False was passed, but the checkpoint's tensors imply"):
        from_official_checkpoint(path, str(tiny_clip_dir), CLASS_NAMES, conditional=False, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"n_ctx=8 was passed"):
        from_official_checkpoint(path, str(tiny_clip_dir), CLASS_NAMES, n_ctx=8, tokenizer=tokenizer)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_official_state_dict(tmp_path / "nowhere.pth")
    (tmp_path / "garbage.pth").write_bytes(os.urandom(2048))
    with pytest.raises(OSError, match="cannot read official checkpoint.*garbage.pth"):
        load_official_state_dict(tmp_path / "garbage.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="not a CoOp/CoCoOp prompt-learner checkpoint"):
        load_official_state_dict(tmp_path / "list.pth")
    torch.save({"state_dict": {"ctx": torch.zeros(4, 8), "epoch_note": "x"}}, tmp_path / "str.pth")
    with pytest.raises(ValueError, match="'epoch_note'.*not a tensor"):
        load_official_state_dict(tmp_path / "str.pth")
    torch.save({"state_dict": {"meta_net.linear1.weight": torch.zeros(3, 48)}}, tmp_path / "noctx.pth")
    with pytest.raises(ValueError, match="no 'ctx' tensor"):
        load_official_state_dict(tmp_path / "noctx.pth")


@pytest.mark.parametrize("adapter_only", [False, True], ids=["full", "adapter"])
def test_command_line(cocoop_checkpoint, tiny_clip_dir, tmp_path, adapter_only, tokenizer):
    path, state = cocoop_checkpoint
    names_file = tmp_path / "classnames.txt"
    names_file.write_text("\n".join(NEW_CLASS_NAMES) + "\n\n")
    output_dir = tmp_path / "converted"
    argv = ["--checkpoint", str(path), "--clip", str(tiny_clip_dir), "--class_names_file", str(names_file)]
    argv += ["--output_dir", str(output_dir)] + (["--adapter_only"] if adapter_only else [])
    main(argv)
    assert (output_dir / ("prompt_learner.safetensors" if adapter_only else "model.safetensors")).exists()
    loaded = CoCoOpModel.from_pretrained(output_dir)
    assert loaded.class_names == NEW_CLASS_NAMES
    assert_same_logits(loaded, model_with_tensors(tiny_clip_dir, NEW_CLASS_NAMES, state, tokenizer))


def test_command_line_json_class_names_and_help(cocoop_checkpoint, tiny_clip_dir, tmp_path, capsys):
    path, _ = cocoop_checkpoint
    (tmp_path / "names.json").write_text('["tench", "great_white_shark"]')
    argv = [
        "--checkpoint",
        str(path),
        "--clip",
        str(tiny_clip_dir),
        "--class_names_file",
        str(tmp_path / "names.json"),
    ]
    model = main(argv + ["--output_dir", str(tmp_path / "out")])
    assert model.class_names == ["tench", "great_white_shark"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--adapter_only" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(path)])  # missing required arguments


def test_malicious_object_inside_state_dict(tmp_path):
    """A global planted among the tensors is neither called nor accepted as a tensor."""
    state = official_state_dict(seed=8)
    state["ctx"] = CallsOnLoad(record_call, "in state_dict")
    path = tmp_path / "evil-state.pth.tar-1"
    torch.save({"state_dict": state, "epoch": 1}, path)
    CALLS.clear()
    with pytest.raises(ValueError, match=r"state_dict entry 'ctx' is <not loaded: .*record_call>, not a tensor"):
        load_official_state_dict(path)
    assert CALLS == []
