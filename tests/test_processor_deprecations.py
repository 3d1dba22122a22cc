"""
No deprecated transformers call of ours: `ProcessorMixin.from_args_and_dict` warns on every call from transformers 5.25
(for `from_dict`, which 5.24 lacks), and our adapter-only processor load used it. The old name of activation
checkpointing still works on our model (tests/test_modeling.py, mode "gc_enable", under pytest.warns).
"""

import pytest
from transformers import ProcessorMixin

from cocoop_hf import CoCoOpProcessor

from .test_processing import assert_same_processor, copy_adapter


def _deprecated(*args, **kwargs):
    raise AssertionError("ProcessorMixin.from_args_and_dict called: deprecated from transformers 5.25")


@pytest.fixture
def full_processor(shared):
    # Read before the patch: on 5.24 transformers' own from_pretrained of a full folder still goes through it.
    return CoCoOpProcessor.from_pretrained(shared.full_dir)


def test_adapter_only_processor_loads_without_from_args_and_dict(shared, full_processor, offline_cache, monkeypatch):
    monkeypatch.setattr(ProcessorMixin, "from_args_and_dict", classmethod(_deprecated))
    assert_same_processor(CoCoOpProcessor.from_pretrained(shared.adapter_dir), full_processor)


def test_adapter_only_processor_keeps_saved_settings_and_given_ones(shared, full_processor, offline_cache, tmp_path):
    """Settings passed to from_pretrained override the saved ones, as from_args_and_dict did; unknown saved keys
    (auto_map, processor_class) are returned as unused, not passed to __init__."""
    folder = copy_adapter(shared, tmp_path)
    loaded, unused = CoCoOpProcessor.from_pretrained(folder, context_length=40, return_unused_kwargs=True)
    assert (loaded.prompt_prefix, loaded.n_ctx, loaded.context_length) == (full_processor.prompt_prefix, 4, 40)
    assert "context_length" not in unused and "tokenizer" not in unused and "image_processor" not in unused
