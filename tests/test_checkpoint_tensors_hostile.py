"""A checkpoint's safetensors file whose header does not fit its bytes (a huge shape in a file of the recorded size,
as an edited file can have) is one clear error on resume, for the prompt learner's weights and PromptSRC's running
sum alike: no traceback of the library, nothing allocated for the declared shape."""

import json
import struct

import pytest

from cocoop_hf_training.checkpoints import read_checkpoint_tensors
from cocoop_hf_training.prompt_aggregation import STATE_NAME, GaussianPromptAggregation


def write_hostile(path):
    header = {"ctx": {"dtype": "F32", "shape": [65536, 65536], "data_offsets": [0, 16]}}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(16))
    return path


def test_a_header_that_does_not_fit_its_bytes_is_one_clear_error(tmp_path):
    path = write_hostile(tmp_path / "weights.safetensors")
    with pytest.raises(ValueError, match=r"^cannot resume: .*weights\.safetensors is not a readable safetensors file"):
        read_checkpoint_tensors(path)


def test_prompt_aggregation_refuses_such_a_running_sum(tmp_path):
    write_hostile(tmp_path / STATE_NAME)
    with pytest.raises(ValueError, match=rf"{STATE_NAME} is not a readable safetensors file"):
        GaussianPromptAggregation().load_checkpoint_files(tmp_path, model=None)
