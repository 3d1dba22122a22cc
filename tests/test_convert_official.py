"""Official CoOp/CoCoOp (Dassl) checkpoints imported into CoCoOpModel: config from tensors, logits, command line."""

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from cocoop_hf import CoCoOpModel
from cocoop_hf.convert_official import from_official_checkpoint, main

from .conftest import CLASS_NAMES, NEW_CLASS_NAMES, random_pixels
from .test_official_pickle import CALLS, CallsOnLoad, official_state_dict, record_call, write_dassl_checkpoint


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: one thread is steadier


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


def test_import_cocoop_checkpoint(cocoop_checkpoint, tiny_clip_dir, caplog, tokenizer):
    path, state = cocoop_checkpoint
    with caplog.at_level(logging.INFO, logger="cocoop_hf.official_pickle"):
        model = from_official_checkpoint(path, str(tiny_clip_dir), NEW_CLASS_NAMES, tokenizer=tokenizer)
    assert "torch.optim.lr_scheduler.CosineAnnealingLR" in caplog.text  # stubbed, never built
    assert model.config.conditional and model.config.n_ctx == 4 and model.config.meta_net_reduction == 16
    assert model.class_names == NEW_CLASS_NAMES
    assert model.prompt_learner.ctx.dtype == torch.float32
    assert torch.equal(model.prompt_learner.ctx.detach(), state["ctx"].float())
    assert_same_logits(model, model_with_tensors(tiny_clip_dir, NEW_CLASS_NAMES, state, tokenizer))


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
    """A file holding only the prompt-learner state dict (no Dassl training state around it) loads too."""
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
    with caplog.at_level(logging.INFO, logger="cocoop_hf.official_pickle"):
        model = from_official_checkpoint(path, str(tiny_clip_dir), CLASS_NAMES, tokenizer=tokenizer)
    assert not marker.exists() and CALLS == []
    assert "record_call" in caplog.text and "system" in caplog.text and "eval" in caplog.text
    assert_same_logits(model, model_with_tensors(tiny_clip_dir, CLASS_NAMES, state, tokenizer))
    # Control: plain unpickling of such a file does call the named global, so the assertions above can fail.
    control = write_dassl_checkpoint(tmp_path / "control.pth.tar-1", state, recorder=CallsOnLoad(record_call, "ctl"))
    torch.load(control, weights_only=False, map_location="cpu")
    assert CALLS == [("ctl",)]
    CALLS.clear()


def test_class_specific_context_is_imported(tiny_clip_dir, tmp_path, tokenizer):
    """Official CoOp CSC=True: ctx (n_cls, n_ctx, width) -> a class-specific model for the same classes."""
    state = official_state_dict(n_ctx=16, conditional=False, seed=5)
    state["ctx"] = (torch.randn(len(CLASS_NAMES), 16, 64, generator=torch.Generator().manual_seed(6)) * 0.3).half()
    path = write_dassl_checkpoint(tmp_path / "csc.pth.tar-50", state)
    model = from_official_checkpoint(path, str(tiny_clip_dir), CLASS_NAMES, tokenizer=tokenizer)
    assert model.config.class_specific_context and not model.config.conditional and model.config.n_ctx == 16
    assert torch.equal(model.prompt_learner.ctx.detach(), state["ctx"].float())
    expected = model_with_tensors(
        tiny_clip_dir, CLASS_NAMES, state, tokenizer, conditional=False, ctx_init=None, n_ctx=16,
        class_specific_context=True,
    )  # fmt: skip
    assert_same_logits(model, expected)
    # the checkpoint's class count must match the class names; it contradicts class_specific_context=False
    with pytest.raises(ValueError, match=r"class-specific context \(CoOp CSC\) for 7 classes, but 8 class names"):
        from_official_checkpoint(path, str(tiny_clip_dir), NEW_CLASS_NAMES, tokenizer=tokenizer)
    with pytest.raises(
        ValueError, match=r"class_specific_context=False was passed, but the checkpoint's tensors imply"
    ):
        from_official_checkpoint(
            path, str(tiny_clip_dir), CLASS_NAMES, tokenizer=tokenizer, class_specific_context=False
        )


def test_class_specific_context_with_a_meta_net_is_refused(tiny_clip_dir, tmp_path, tokenizer):
    state = official_state_dict(conditional=True)
    state["ctx"] = torch.zeros(len(CLASS_NAMES), 4, 64, dtype=torch.float16)
    path = write_dassl_checkpoint(tmp_path / "odd.pth.tar-50", state)
    with pytest.raises(ValueError, match=r"'ctx' has shape \(7, 4, 64\), a class-specific context.*beside a meta-net"):
        from_official_checkpoint(path, str(tiny_clip_dir), CLASS_NAMES, tokenizer=tokenizer)


def test_command_line_class_token_position(tiny_clip_dir, tmp_path, tokenizer):
    state = official_state_dict(n_ctx=4, conditional=False, seed=7)
    path = write_dassl_checkpoint(tmp_path / "middle.pth.tar-50", state)
    names_file = tmp_path / "classnames.txt"
    names_file.write_text("\n".join(CLASS_NAMES))
    argv = ["--checkpoint", str(path), "--clip", str(tiny_clip_dir), "--class_names_file", str(names_file)]
    main(argv + ["--output_dir", str(tmp_path / "out"), "--class_token_position", "middle"])
    loaded = CoCoOpModel.from_pretrained(tmp_path / "out")
    assert loaded.config.class_token_position == "middle"
    expected = model_with_tensors(tiny_clip_dir, CLASS_NAMES, state, tokenizer, conditional=False,
                                  class_token_position="middle")  # fmt: skip
    assert_same_logits(loaded, expected)


@pytest.mark.parametrize("position", ["middle", "front"])
def test_a_cocoop_checkpoint_keeps_the_class_name_at_the_end(tiny_clip_dir, tmp_path, tokenizer, position):
    path = write_dassl_checkpoint(tmp_path / "cocoop.pth.tar-10", official_state_dict(n_ctx=4, conditional=True))
    with pytest.raises(ValueError, match=rf"a CoCoOp checkpoint.*class_token_position='{position}' was passed"):
        from_official_checkpoint(
            path, str(tiny_clip_dir), CLASS_NAMES, tokenizer=tokenizer, class_token_position=position
        )


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


# ---------------------------------------------------------------------------------------------- output folder rules


def converter_argv(checkpoint, clip_dir, names_file, output_dir, *flags):
    argv = ["--checkpoint", str(checkpoint), "--clip", str(clip_dir), "--class_names_file", str(names_file)]
    return argv + ["--output_dir", str(output_dir), *flags]


@pytest.fixture
def names_file(tmp_path):
    path = tmp_path / "classnames.txt"
    path.write_text("\n".join(NEW_CLASS_NAMES) + "\n")
    return path


def test_command_line_refuses_non_empty_output_dir(cocoop_checkpoint, tiny_clip_dir, tmp_path, names_file):
    path, _ = cocoop_checkpoint
    output_dir = tmp_path / "trained"
    output_dir.mkdir()
    (output_dir / "model.safetensors").write_bytes(b"a trained model")
    (output_dir / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"not empty \(model\.safetensors, notes\.txt\).*--overwrite_output_dir"):
        main(converter_argv(path, tiny_clip_dir, names_file, output_dir))
    assert (output_dir / "model.safetensors").read_bytes() == b"a trained model"
    assert sorted(p.name for p in output_dir.iterdir()) == ["model.safetensors", "notes.txt"]
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"a-file' is a file, not a folder"):
        main(converter_argv(path, tiny_clip_dir, names_file, tmp_path / "a-file", "--overwrite_output_dir"))
    empty = tmp_path / "empty"
    empty.mkdir()
    main(converter_argv(path, tiny_clip_dir, names_file, empty, "--adapter_only"))  # an empty folder is fine
    assert (empty / "prompt_learner.safetensors").is_file() and not (empty / "convert_official.py").exists()


@pytest.mark.parametrize("first, second", [("full", "adapter"), ("adapter", "full")])
def test_command_line_overwrite_replaces_the_other_layout(
    cocoop_checkpoint, tiny_clip_dir, tmp_path, names_file, caplog, tokenizer, first, second
):
    path, state = cocoop_checkpoint
    output_dir = tmp_path / "out"
    flag = {"full": [], "adapter": ["--adapter_only"]}
    main(converter_argv(path, tiny_clip_dir, names_file, output_dir, *flag[first]))
    (output_dir / "notes.txt").write_text("mine")
    before = {p.name for p in output_dir.iterdir()}
    with caplog.at_level(logging.INFO, logger="cocoop_hf.convert_official"):
        main(converter_argv(path, tiny_clip_dir, names_file, output_dir, "--overwrite_output_dir", *flag[second]))
    after = {p.name for p in output_dir.iterdir()}
    fresh = tmp_path / "fresh"
    main(converter_argv(path, tiny_clip_dir, names_file, fresh, *flag[second]))
    assert after == {p.name for p in fresh.iterdir()} | {"notes.txt"}  # exactly a fresh save + the user's file
    stale = {"full": "model.safetensors", "adapter": "prompt_learner.safetensors"}[first]
    assert stale in before and stale not in after
    assert (output_dir / "notes.txt").read_text() == "mine" and "left alone: notes.txt" in caplog.text
    assert not [p for p in tmp_path.iterdir() if ".converting-" in p.name]
    assert json.loads((output_dir / "config.json").read_text()).get("adapter_only", False) == (second == "adapter")
    loaded = CoCoOpModel.from_pretrained(output_dir)
    assert_same_logits(loaded, model_with_tensors(tiny_clip_dir, NEW_CLASS_NAMES, state, tokenizer))


def test_command_line_crash_leaves_output_untouched(
    cocoop_checkpoint, tiny_clip_dir, tmp_path, names_file, monkeypatch
):
    path, _ = cocoop_checkpoint
    output_dir = tmp_path / "out"
    main(converter_argv(path, tiny_clip_dir, names_file, output_dir))
    snapshot = {p.name: p.read_bytes() for p in output_dir.iterdir()}

    def crash(self, save_directory, **kwargs):
        (Path(save_directory) / "model.safetensors").write_bytes(b"half-written")
        raise RuntimeError("disk full")

    monkeypatch.setattr(CoCoOpModel, "save_pretrained", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        main(converter_argv(path, tiny_clip_dir, names_file, output_dir, "--overwrite_output_dir", "--adapter_only"))
    assert {p.name: p.read_bytes() for p in output_dir.iterdir()} == snapshot
    with pytest.raises(RuntimeError, match="disk full"):
        main(converter_argv(path, tiny_clip_dir, names_file, tmp_path / "new"))
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classnames.txt", "out"]


def test_model_does_not_import_the_converter():
    """The converter imports the model, never the reverse (a saved folder would ship the converter)."""
    import cocoop_hf.modeling_cocoop as modeling

    assert "convert_official" not in Path(modeling.__file__).read_text()
    assert not hasattr(CoCoOpModel, "from_official_checkpoint")


def test_command_line_refusal_is_one_line(tiny_clip_dir, tmp_path):
    """python -m cocoop_hf.convert_official ends refused input with 'error: <message>' and status 2, no traceback."""
    import subprocess
    import sys

    path = write_dassl_checkpoint(tmp_path / "cocoop.pth.tar-10", official_state_dict(n_ctx=4, conditional=True))
    names_file = tmp_path / "classnames.txt"
    names_file.write_text("\n".join(CLASS_NAMES))
    argv = ["--checkpoint", str(path), "--clip", str(tiny_clip_dir), "--class_names_file", str(names_file)]
    argv += ["--output_dir", str(tmp_path / "out"), "--class_token_position", "middle"]
    done = subprocess.run(
        [sys.executable, "-m", "cocoop_hf.convert_official", *argv], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in done.stderr
    assert "class_token_position='middle' was passed" in done.stderr
