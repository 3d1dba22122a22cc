"""The opt-in torch.compile text path equals the per-image reference (fp32), forward and gradients."""

import pytest
import torch

from cocoop_hf import CoCoOpModel

from .conftest import CLASS_NAMES, random_pixels
from .reference_cocoop import held_prompts, reference_logits


RTOL = 1e-5  # fp32, relative to the largest reference logit


@pytest.mark.parametrize("conditional", [True])
def test_compiled_text_path_equals_reference(tiny_clip_dir, tokenizer, conditional):
    model = CoCoOpModel.from_clip(str(tiny_clip_dir), CLASS_NAMES, conditional=conditional, tokenizer=tokenizer)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in model.prompt_learner.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    pixels, labels = random_pixels(2), torch.tensor([0, 3])

    reference = reference_logits(model, *held_prompts(model), pixel_values=pixels)
    torch.nn.functional.cross_entropy(reference, labels).backward()
    expected_grads = {name: p.grad.clone() for name, p in model.prompt_learner.named_parameters()}
    model.zero_grad()

    model.compile_text_path()
    assert model._suffix_encoder is not model._encode_suffix
    output = model(pixel_values=pixels, labels=labels)
    output.loss.backward()

    scale = reference.abs().max().item()
    assert (output.logits - reference).abs().max().item() <= RTOL * scale
    for name, parameter in model.prompt_learner.named_parameters():
        expected = expected_grads[name]
        assert (parameter.grad - expected).abs().max().item() <= 1e-4 * expected.abs().max().item(), name
