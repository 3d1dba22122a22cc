"""CoCoOp (Conditional Context Optimization, Zhou et al., CVPR 2022) for Hugging Face transformers."""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, AutoProcessor

from .configuration_cocoop import CoCoOpConfig
from .modelcard_cocoop import render_model_card
from .modeling_cocoop import CoCoOpModel, CoCoOpOutput, CoCoOpPreTrainedModel, CoCoOpPromptLearner
from .pipeline_cocoop import CoCoOpZeroShotImageClassificationPipeline
from .processing_cocoop import CoCoOpProcessor, build_prompt_ids


__version__ = "0.1.0"

__all__ = [
    "CoCoOpConfig",
    "CoCoOpModel",
    "CoCoOpOutput",
    "CoCoOpPreTrainedModel",
    "CoCoOpProcessor",
    "CoCoOpPromptLearner",
    "CoCoOpZeroShotImageClassificationPipeline",
    "build_prompt_ids",
    "render_model_card",
]

AutoConfig.register(CoCoOpConfig.model_type, CoCoOpConfig)
AutoModel.register(CoCoOpConfig, CoCoOpModel)
AutoModelForImageClassification.register(CoCoOpConfig, CoCoOpModel)
AutoProcessor.register(CoCoOpConfig, CoCoOpProcessor)

# Saved folders carry the code (auto_map), so they load with trust_remote_code=True without this package.
# The zero-shot pipeline reaches users through `custom_pipelines` in each saved config, deliberately not
# PIPELINE_REGISTRY: registering here would replace the stock pipeline for plain CLIP in the whole process.
CoCoOpConfig.register_for_auto_class()
CoCoOpModel.register_for_auto_class("AutoModel")
CoCoOpProcessor.register_for_auto_class("AutoProcessor")
