"""CoCoOp (Conditional Context Optimization, Zhou et al., CVPR 2022) for Hugging Face transformers."""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, AutoProcessor

from .configuration_cocoop import CoCoOpConfig
from .modeling_cocoop import CoCoOpModel, CoCoOpOutput, CoCoOpPreTrainedModel, CoCoOpPromptLearner
from .processing_cocoop import CoCoOpProcessor, build_prompt_ids


__version__ = "0.1.0"

__all__ = [
    "CoCoOpConfig",
    "CoCoOpModel",
    "CoCoOpOutput",
    "CoCoOpPreTrainedModel",
    "CoCoOpProcessor",
    "CoCoOpPromptLearner",
    "build_prompt_ids",
]

AutoConfig.register(CoCoOpConfig.model_type, CoCoOpConfig)
AutoModel.register(CoCoOpConfig, CoCoOpModel)
AutoModelForImageClassification.register(CoCoOpConfig, CoCoOpModel)
AutoProcessor.register(CoCoOpConfig, CoCoOpProcessor)

# Saved folders carry the code (auto_map), so they load with trust_remote_code=True without this package.
CoCoOpConfig.register_for_auto_class()
CoCoOpModel.register_for_auto_class("AutoModel")
CoCoOpProcessor.register_for_auto_class("AutoProcessor")
