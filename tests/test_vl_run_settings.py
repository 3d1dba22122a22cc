"""A resume continues only the run that wrote the checkpoint: the deep-prompt options (IVLP / MaPLe / PromptSRC) and
PromptSRC's prompt aggregation are among the recorded settings; a CoOp-family run records none of them, so its
checkpoints written before these methods existed still resume."""

import pytest

from cocoop_hf_training.run_cocoop import parse_args
from cocoop_hf_training.run_settings import DEEP_PROMPT_SETTINGS, check_resume_settings, run_settings


BASE = ["--output_dir", "unused", "--clip_model_name_or_path", "unused-clip", "--dataset_name", "unused-data"]


def settings_of(*flags):
    return run_settings(*parse_args([*BASE, *flags]))


def test_coop_family_records_no_deep_prompt_setting():
    for method in ("coop", "cocoop", "kgcoop"):
        recorded = settings_of("--method", method)
        assert not [name for name in recorded if name.lstrip("-") in DEEP_PROMPT_SETTINGS], method
        assert "--gpa_mean" not in recorded


@pytest.mark.parametrize(
    "method, flag, value",
    [
        ("ivlp", "--prompt_depth_text", "3"),
        ("ivlp", "--prompt_depth_vision", "2"),
        ("ivlp", "--n_ctx_vision", "2"),
        ("promptsrc", "--promptsrc_text_weight", "5"),
        ("promptsrc", "--promptsrc_image_weight", "1"),
        ("promptsrc", "--gpa_mean", "3"),
        ("promptsrc", "--gpa_std", "2"),
    ],
)
def test_resume_with_another_deep_prompt_option_is_refused(method, flag, value):
    recorded = settings_of("--method", method)
    assert flag in recorded
    marker = {"run_settings": recorded}
    check_resume_settings("checkpoint-4", marker, settings_of("--method", method))  # the same run: accepted
    with pytest.raises(ValueError, match=f"{flag}: the checkpoint was trained with"):
        check_resume_settings("checkpoint-4", marker, settings_of("--method", method, flag, value))


def test_maple_records_its_coupling():
    recorded = settings_of("--method", "maple")
    assert recorded["--vision_prompts_from_text"] is True and recorded["--prompt_depth_vision"] == 9


def test_promptsrc_defaults_spelt_out_are_the_same_run():
    recorded = settings_of("--method", "promptsrc")
    assert (recorded["--gpa_mean"], recorded["--gpa_std"]) == (15.0, 1.0)
    check_resume_settings(
        "checkpoint-4", {"run_settings": recorded}, settings_of("--method", "promptsrc", "--gpa_mean", "15")
    )
