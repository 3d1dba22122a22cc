"""What the training scripts share on the command line, gathered under one name for their imports: the model options
(model_arguments), a config file with flags overriding it (config_flags), the logging set-up and error handling
(script_runner)."""

from cocoop_hf_training.config_files import read_structured_file
from cocoop_hf_training.config_flags import CONFIG_SUFFIXES, check_finite_numbers, parse_config_and_flags
from cocoop_hf_training.model_arguments import (
    CLASS_TOKEN_POSITIONS,
    CLIP_DTYPES,
    KGCOOP_DEFAULT_WEIGHT,
    METHODS,
    ModelArguments,
)
from cocoop_hf_training.script_runner import run_script, setup_logging


__all__ = [
    "CLASS_TOKEN_POSITIONS",
    "CLIP_DTYPES",
    "CONFIG_SUFFIXES",
    "KGCOOP_DEFAULT_WEIGHT",
    "METHODS",
    "ModelArguments",
    "check_finite_numbers",
    "parse_config_and_flags",
    "read_structured_file",
    "run_script",
    "setup_logging",
]
