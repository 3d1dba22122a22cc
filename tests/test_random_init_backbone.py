"""
`CoCoOpModel.from_clip(..., random_init=True)`: a backbone built from a config-only folder with random weights, the
same draw as the scripts' `--random_init_clip --random_init_seed`, for each of the four backbones; the refusals.
"""

import logging

import pytest
import torch
from transformers.utils import logging as hf_logging

from cocoop_hf import CoCoOpModel
from cocoop_hf.backbone_loading_cocoop import random_backbone
from cocoop_hf.backbones_cocoop import BACKBONES
from cocoop_hf_training.demo_assets import TINY_CLIP
from cocoop_hf_training.model_arguments import ModelArguments
from cocoop_hf_training.modeling_setup import random_clip

from .tiny_backbones import MODEL_TYPES, save_tiny_backbone


NAMES = ["cat", "dog", "fox"]


@pytest.fixture(scope="module")
def config_only_folders(tmp_path_factory):
    """Each backbone's tiny checkpoint without its weight file: what the shipped tiny CLIP is (config + tokenizer)."""
    folders = {}
    for model_type in MODEL_TYPES:
        folder = save_tiny_backbone(tmp_path_factory.mktemp(model_type), model_type, seed=1)
        (folder / "model.safetensors").unlink()
        folders[model_type] = folder
    return folders


def backbone_weights(model) -> dict:
    return {name: tensor.clone() for name, tensor in model.clip.state_dict().items()}


def equal_weights(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[name], second[name]) for name in first)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_random_init_draws_the_scripts_weights_from_the_seed(config_only_folders, model_type):
    folder = config_only_folders[model_type]
    model = CoCoOpModel.from_clip(folder, NAMES, random_init=True, random_init_seed=3, ctx_init=None)
    weights = backbone_weights(model)
    assert isinstance(model.clip, BACKBONES[model_type].model_class) and model.config.random_clip_weights
    # The script's flag (`--random_init_clip --random_init_seed 3`) gives the same backbone.
    _, scripted = random_clip(
        ModelArguments(clip_model_name_or_path=str(folder), random_init_clip=True, random_init_seed=3)
    )
    assert equal_weights(weights, scripted.state_dict())
    # What the seed means, independently of the implementation: the backbone class built right after manual_seed.
    torch.manual_seed(3)
    assert equal_weights(weights, BACKBONES[model_type].model_class(model.clip.config).state_dict())
    other = CoCoOpModel.from_clip(folder, NAMES, random_init=True, random_init_seed=4, ctx_init=None)
    name = "text_model.embeddings.token_embedding.weight"
    assert not torch.equal(weights[name], other.clip.state_dict()[name])
    default = CoCoOpModel.from_clip(folder, NAMES, random_init=True, ctx_init=None)  # seed 0, the flag's default
    _, scripted_default = random_clip(ModelArguments(clip_model_name_or_path=str(folder), random_init_clip=True))
    assert equal_weights(backbone_weights(default), scripted_default.state_dict())


def test_the_callers_random_state_is_left_alone_and_the_caller_speaks(config_only_folders, caplog):
    torch.manual_seed(11)
    expected = torch.rand(4)
    torch.manual_seed(11)
    with caplog.at_level(logging.WARNING, logger="cocoop_hf"):
        random_backbone(config_only_folders["clip"], seed=5)
    assert torch.equal(torch.rand(4), expected)
    # The scripts print their own machinery-demo note: the shared builder adds no second warning to their output.
    assert not caplog.records


def test_the_shipped_tiny_clip_runs_with_random_weights_and_says_so_once(caplog):
    hf_logging.warning_once.cache_clear()  # another test (or a rerun of this one) may have said it already
    with caplog.at_level(logging.WARNING, logger="cocoop_hf"):
        model = CoCoOpModel.from_clip(TINY_CLIP, NAMES, random_init=True, random_init_seed=3)
        CoCoOpModel.from_clip(TINY_CLIP, NAMES, random_init=True, random_init_seed=3)
    warnings = [record.getMessage() for record in caplog.records if "RANDOM weights" in record.getMessage()]
    assert len(warnings) == 1 and str(TINY_CLIP) in warnings[0] and "meaningless" in warnings[0]
    logits = model(pixel_values=torch.zeros(1, 3, 32, 32)).logits
    assert logits.shape == (1, 3) and torch.isfinite(logits).all()


def one_line_error(error_type, build, *args, **kwargs) -> str:
    with pytest.raises(error_type) as error:
        build(*args, **kwargs)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_config_only_folder_without_the_flag_names_the_flag(config_only_folders):
    for folder in (TINY_CLIP, config_only_folders["siglip"]):
        message = one_line_error(FileNotFoundError, CoCoOpModel.from_clip, folder, NAMES)
        assert str(folder) in message and "random_init=True" in message and "--random_init_clip" in message


@pytest.mark.parametrize(
    "kwargs, culprit",
    [
        ({"random_init_seed": 3}, "random_init_seed=3 without random_init=True"),
        ({"random_init": True, "clip_kwargs": {"dtype": torch.float16}}, "dtype would act on loaded weights"),
        ({"random_init": True, "clip_kwargs": {"device_map": "cpu"}}, "device_map would act on loaded weights"),
        ({"random_init": True, "random_init_seed": True}, "random_init_seed must be an integer, got True"),
        ({"random_init": True, "random_init_seed": "3"}, "random_init_seed must be an integer, got '3'"),
        ({"random_init": True, "random_clip_weights": False}, "random_clip_weights is recorded by from_clip"),
    ],
)
def test_meaningless_combinations_are_refused(kwargs, culprit):
    message = one_line_error(ValueError, CoCoOpModel.from_clip, TINY_CLIP, NAMES, **kwargs)
    assert culprit in message


def test_where_the_config_is_read_from_still_applies(tmp_path):
    model = CoCoOpModel.from_clip(
        TINY_CLIP, NAMES, random_init=True, clip_kwargs={"cache_dir": str(tmp_path), "local_files_only": True}
    )
    assert model.config.random_clip_weights
