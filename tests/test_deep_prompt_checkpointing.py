"""Gradient checkpointing of a deep-prompt model (IVLP, MaPLe, PromptSRC): `activation_checkpointing_enable()` reaches
both prompted towers and gives the loss and every prompt gradient of the plain path (fp32, 1e-6 relative)."""

import pytest
import torch

from .conftest import CLASS_NAMES, random_pixels
from .test_deep_prompt_model import LAYERS, METHODS, build, deep_clip_dir, tok  # noqa: F401  (fixtures)


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_checkpointed_loss_and_gradients_equal_the_plain_ones(deep_clip_dir, tok, method):  # noqa: F811
    model = build(deep_clip_dir, tok, method)
    model.train()
    pixels = random_pixels(2, seed=5)
    labels = torch.tensor([0, len(CLASS_NAMES) - 1])

    def loss_and_grads():
        model.zero_grad()
        loss = model(pixel_values=pixels, labels=labels).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.prompt_learner.named_parameters()}

    plain_loss, plain = loss_and_grads()
    model.activation_checkpointing_enable()
    assert model.gradient_checkpointing
    checkpointed_loss, checkpointed = loss_and_grads()
    torch.testing.assert_close(checkpointed_loss, plain_loss, rtol=1e-6, atol=0)
    assert plain.keys() == checkpointed.keys() and plain
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-6, atol=1e-9, msg=name)
