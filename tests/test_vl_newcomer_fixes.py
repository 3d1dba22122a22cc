"""What a newcomer met running IVLP / MaPLe / PromptSRC: refusals known from the arguments made before --output_dir is
touched (a refused run must not block its own corrected rerun); a depth beyond the backbone's layers named for both
towers at once, in flags; the model card's prompt of text-only IVLP and of MaPLe's partly learned words; resume advice
that then works; a warning where GPA's Gaussian lies beyond the run's epochs; help texts and messages in flags."""

import logging
from types import SimpleNamespace

import pytest
from transformers import CLIPConfig

from cocoop_hf import CoCoOpConfig
from cocoop_hf.modelcard_cocoop import render_model_card
from cocoop_hf_training import run_cocoop
from cocoop_hf_training.model_arguments import ModelArguments
from cocoop_hf_training.modeling_setup import check_adapter_only
from cocoop_hf_training.prompt_aggregation import GaussianPromptAggregation, gpa_outside_epochs_note, gpa_weights
from cocoop_hf_training.recipes import CONFIGS
from cocoop_hf_training.run_options import RunArguments
from cocoop_hf_training.run_settings import check_resume_settings


DEMO = str(CONFIGS / "demo_tiny_cifar10.yaml")  # the 2-layer tiny CLIP with --random_init_clip
TINY_CLIP = (CONFIGS / ".." / "demo" / "tiny-clip").resolve()


def no_data_reading(monkeypatch):
    def read(*args, **kwargs):
        raise AssertionError("the data was read before the refusal")

    for loader in ("load_data", "load_splits", "load_image_processor"):
        monkeypatch.setattr(run_cocoop, loader, read)


# ------------------------------------------------------------------------------ 1. refusals before anything is written


def test_adapter_only_on_random_weights_is_refused_before_the_data_and_does_not_block_the_rerun(tmp_path, monkeypatch):
    """Before: refused after the data loaded, fewshot_indices.json and output_manifest.json already written, and the
    rerun without the flag then refused as "holds a previous run, not finished"."""
    output_dir = tmp_path / "m"
    with monkeypatch.context() as patch:
        no_data_reading(patch)
        with pytest.raises(ValueError, match=r"^--save_adapter_only: this model's CLIP has random weights"):
            run_cocoop.main([DEMO, "--output_dir", str(output_dir), "--save_adapter_only", "true"])
    assert not output_dir.exists()
    run = run_cocoop.start_run([DEMO, "--output_dir", str(output_dir)])  # the corrected rerun is not blocked
    assert run.random_note is not None


def test_adapter_only_of_a_saved_model_on_random_weights_is_refused_from_its_config():
    args = ModelArguments(model_name_or_path="trained", clip_model_name_or_path="openai/clip-vit-base-patch16")
    saved = SimpleNamespace(random_clip_weights=True, clip_name_or_path="some/clip")
    with pytest.raises(ValueError, match=r"adapter-only folder would load the CLIP some/clip instead"):
        check_adapter_only(args, True, saved)
    check_adapter_only(args, False, saved)  # without the flag: nothing to refuse
    check_adapter_only(args, True, SimpleNamespace(random_clip_weights=False, clip_name_or_path="some/clip"))


def test_zero_shot_without_words_is_refused_before_the_data(tmp_path, monkeypatch):
    """Before: refused when the model was built, after --output_dir had been prepared (output_manifest.json)."""
    output_dir = tmp_path / "z"
    no_data_reading(monkeypatch)
    with pytest.raises(ValueError, match=r"^--method zeroshot needs the prompt words: pass --ctx_init"):
        run_cocoop.main(
            [
                DEMO,
                "--output_dir",
                str(output_dir),
                "--method",
                "zeroshot",
                "--ctx_init",
                "none",
                "--do_train",
                "false",
            ]
        )
    assert not output_dir.exists()


# ------------------------------------------------------------------------------ 2. depth beyond the layers, in flags


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--method", "ivlp"],
            "--method ivlp on {clip}: prompt depths 9 (text) and 9 (vision) exceed the backbone's 2 text / 2 vision "
            "layers: pass --prompt_depth_text 2 --prompt_depth_vision 2 (or less).",
        ),
        (
            ["--method", "promptsrc", "--prompt_depth_text", "2"],
            "--method promptsrc on {clip}: prompt depth 9 (vision) exceeds the backbone's 2 vision layers: pass "
            "--prompt_depth_vision 2 (or less).",
        ),
        (
            ["--method", "maple"],
            "--method maple on {clip}: prompt depths 9 (text) and 9 (vision) exceed the backbone's 2 text / 2 vision "
            "layers: pass --prompt_depth_text 2 (or less).",
        ),
    ],
)
def test_a_depth_beyond_the_layers_names_both_towers_and_the_flags_that_run(tmp_path, monkeypatch, flags, message):
    output_dir = tmp_path / "d"
    no_data_reading(monkeypatch)
    with pytest.raises(ValueError) as caught:
        run_cocoop.main([DEMO, "--output_dir", str(output_dir), *flags])
    assert str(caught.value) == message.format(clip=TINY_CLIP)
    assert not output_dir.exists()


def test_the_suggested_depths_then_run(tmp_path):
    argv = [DEMO, "--output_dir", str(tmp_path / "d"), "--method", "ivlp"]
    run = run_cocoop.start_run([*argv, "--prompt_depth_text", "2", "--prompt_depth_vision", "2"])
    assert (run.method.config.prompt_depth_text, run.method.config.prompt_depth_vision) == (2, 2)


def test_the_config_names_both_towers_at_once():
    backbone = CLIPConfig(text_config={"num_hidden_layers": 3}, vision_config={"num_hidden_layers": 3})
    with pytest.raises(ValueError) as caught:
        CoCoOpConfig(
            clip_config=backbone,
            conditional=False,
            n_ctx=4,
            n_ctx_vision=4,
            prompt_depth_text=4,
            prompt_depth_vision=5,
            id2label={0: "class"},
        )
    text = str(caught.value)
    assert "`prompt_depth_text`=4 exceeds the 3 layers of the backbone's text tower" in text
    assert "`prompt_depth_vision`=5 exceeds the 3 layers of the backbone's vision tower" in text


def test_a_config_refusal_names_only_the_options_it_is_about(tmp_path, monkeypatch):
    """Before: every refusal ended with the four option names, whichever it was about."""
    no_data_reading(monkeypatch)
    argv = [DEMO, "--output_dir", str(tmp_path / "v"), "--method", "ivlp", "--prompt_depth_text", "2"]
    with pytest.raises(ValueError) as caught:
        run_cocoop.main([*argv, "--prompt_depth_vision", "2", "--n_ctx_vision", "500"])
    text = str(caught.value)
    assert "`n_ctx_vision` must be an integer in [1, 17]" in text and "(n_ctx tokens)" in text
    assert text.endswith("Each field named is the option of the same name (--n_ctx, --n_ctx_vision).")


def test_n_ctx_against_the_words_is_refused_in_flags(tmp_path, monkeypatch):
    """Before: the library's Python keywords ("pass n_ctx=4 or n_ctx=None, or ctx_init=None") on the command line."""
    no_data_reading(monkeypatch)
    for method in ("coop", "ivlp"):
        with pytest.raises(ValueError) as caught:
            run_cocoop.main([DEMO, "--output_dir", str(tmp_path / method), "--method", method, "--n_ctx", "6"])
        assert str(caught.value) == (
            "--n_ctx 6 does not match --ctx_init 'a photo of a', which has 4 words: pass --n_ctx 4 (or leave it "
            "out), or --ctx_init none for a random context of 6 tokens."
        )
    with pytest.raises(ValueError, match=r"pass n_ctx=4 or n_ctx=None"):  # the library keeps its own wording
        CoCoOpConfig(n_ctx=6, ctx_init="a photo of a", id2label={0: "class"})


# ------------------------------------------------------------------------------ 3. the model card's prompt


def card_detail(**kwargs) -> str:
    text = render_model_card(base_model="openai/clip-vit-base-patch16", **kwargs).text
    return next(line for line in text.splitlines() if "learned context vectors" in line)


def test_card_of_text_only_ivlp_says_text_prompts_only():
    text_only = card_detail(method="ivlp", n_ctx=4, prompt_depth_vision=0)
    assert "text prompts only" in text_only and "vision prompts" not in text_only
    assert "learned vision prompts of their own join the image tokens" in card_detail(method="ivlp", n_ctx=4)
    promptsrc = card_detail(method="promptsrc", n_ctx=4, prompt_depth_vision=0)
    assert "text prompts only" in promptsrc and "self-regularising" in promptsrc


def test_card_of_maple_shows_the_words_that_stay_fixed():
    detail = card_detail(method="maple", n_ctx=2, ctx_init="a photo of a")
    assert (
        'form the prompt `[context] of a {class name}.` (the first 2 words of "a photo of a" learned, the rest fixed)'
        in detail
    )
    assert "form the prompt `[context] {class name}.` and" in card_detail(
        method="ivlp", n_ctx=4, ctx_init="a photo of a"
    )


# ------------------------------------------------------------------------------ 4. resume advice that works


def test_resume_latest_without_a_complete_checkpoint_advises_overwriting(tmp_path, monkeypatch):
    """Before: "start without --resume_from_checkpoint", which is then refused as "holds a previous run"."""
    output_dir = tmp_path / "r"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while the first checkpoint was being written")

    with monkeypatch.context() as patch:  # a run interrupted once --output_dir had been prepared
        patch.setattr(run_cocoop, "build_run_model", killed)
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            run_cocoop.main([DEMO, "--output_dir", str(output_dir), "--save_strategy", "epoch"])
    (output_dir / "tmp-checkpoint-5").mkdir()  # an unfinished checkpoint, as Trainer leaves it
    no_data_reading(monkeypatch)
    argv = [DEMO, "--output_dir", str(output_dir), "--save_strategy", "epoch"]
    with pytest.raises(ValueError) as caught:
        run_cocoop.main([*argv, "--resume_from_checkpoint", "latest"])
    assert "no complete checkpoint-* in" in str(caught.value)
    assert str(caught.value).endswith(
        "rerun with --overwrite_output_dir instead of --resume_from_checkpoint (it starts the run again)."
    )
    with pytest.raises(ValueError, match="holds a previous run, not finished"):  # what the old advice led to
        run_cocoop.start_run(argv)
    run_cocoop.start_run([*argv, "--overwrite_output_dir", "true"])  # what the new advice says: refused no more


# ------------------------------------------------------------------------------ 5. GPA beyond the epochs


def test_gpa_mean_beyond_the_epochs_warns_once(caplog):
    """The official mean 15 on a 4-epoch run: weights ~[0, 0, 1e-5, 0.99999], i.e. the last epoch's prompts."""
    assert gpa_weights(15, 1, 4)[-1] > 0.9999
    aggregation = GaussianPromptAggregation(15, 1)
    state = SimpleNamespace(num_train_epochs=4)
    with caplog.at_level(logging.WARNING, logger="cocoop_hf_training.prompt_aggregation"):
        aggregation.on_train_begin(None, state, None)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "--gpa_mean 15 (--gpa_std 1) lies outside the run's 4 epochs" in warnings[0]
    assert "Set --gpa_mean within the epochs" in warnings[0]
    assert gpa_outside_epochs_note(15, 1, 20) is None  # the official 20-epoch recipe
    assert gpa_outside_epochs_note(7, 1, 4) is None  # within 3 std of the last epoch
    assert gpa_outside_epochs_note(7.5, 1, 4) is not None


# ------------------------------------------------------------------------------ 6. and 7. help texts and wording


def help_of(name: str) -> str:
    import dataclasses

    fields = {item.name: item for item in dataclasses.fields(RunArguments) + dataclasses.fields(ModelArguments)}
    return fields[name].metadata["help"]


def test_help_texts_name_the_new_methods():
    assert "again after every epoch with vision prompts (ivlp, maple, promptsrc)" in help_of("eval_each_epoch")
    adapter = help_of("save_adapter_only")
    assert "~470 KB for CoCoOp" in adapter and "~510 KB for IVLP" in adapter and "240 KB" not in adapter
    assert "CoCoOp/CoOp folder" not in help_of("model_name_or_path") and "maple" in help_of("model_name_or_path")


def test_resume_refusal_reads_as_one_choice():
    marker = {"run_settings": {"seed": 1}}
    with pytest.raises(ValueError) as caught:
        check_resume_settings("checkpoint-5", marker, {"seed": 2})
    assert "Resume with the checkpoint's settings, or start a new run: another --output_dir" in str(caught.value)


def test_a_runs_card_shows_maples_fixed_words_and_text_only_ivlp():
    """The training scripts' card (report.model_card) passes the model's ctx_init and vision depth to the renderer."""
    from cocoop_hf_training.report import model_card

    maple = str(model_card([], base_model="x", recipe={}, method="maple", n_ctx=2, options={"prompt_depth_vision": 9},
                           ctx_init="a photo of a"))  # fmt: skip
    assert "`[context] of a {class name}.`" in maple
    ivlp = str(model_card([], base_model="x", recipe={}, method="ivlp", n_ctx=4, options={"prompt_depth_vision": 0},
                          ctx_init="a photo of a"))  # fmt: skip
    assert "text prompts only" in ivlp and "vision prompts of their own" not in ivlp
