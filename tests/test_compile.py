"""The opt-in torch.compile text path equals the per-image reference (fp32), forward and gradients."""

import json
from pathlib import Path

import pytest
import torch

from cocoop_hf import CoCoOpModel

from .conftest import CLASS_NAMES, random_pixels
from .reference_cocoop import held_prompts, reference_logits
from .test_modeling import randomize_prompt_learner


RTOL = 1e-5  # fp32, relative to the largest reference logit


@pytest.mark.parametrize("conditional", [True])
def test_compiled_text_path_equals_reference(tiny_clip_dir, tokenizer, conditional):
    model = CoCoOpModel.from_clip(str(tiny_clip_dir), CLASS_NAMES, conditional=conditional, tokenizer=tokenizer)
    randomize_prompt_learner(model, seed=3)
    pixels, labels = random_pixels(2), torch.tensor([0, 3])

    reference = reference_logits(model, *held_prompts(model), pixel_values=pixels)
    torch.nn.functional.cross_entropy(reference, labels).backward()
    expected_grads = {name: p.grad.clone() for name, p in model.prompt_learner.named_parameters()}
    model.zero_grad()

    model.compile_text_path()
    assert model.text_encoder._suffix_encoder is not model.text_encoder._encode_suffix
    output = model(pixel_values=pixels, labels=labels)
    output.loss.backward()

    scale = reference.abs().max().item()
    assert (output.logits - reference).abs().max().item() <= RTOL * scale
    for name, parameter in model.prompt_learner.named_parameters():
        expected = expected_grads[name]
        assert (parameter.grad - expected).abs().max().item() <= 1e-4 * expected.abs().max().item(), name


# Names of 1 to 9 tokens, so the class suffixes fall into several buckets.
BUCKET_NAMES = ["a", "tench", "red fox", "x_y_z", "great white shark", "very long class name with many words", "b c"]


def bucketed_model(tiny_clip_dir, tokenizer, names):
    return randomize_prompt_learner(CoCoOpModel.from_clip(str(tiny_clip_dir), names, tokenizer=tokenizer), seed=5)


def test_fixed_shape_buckets_change_no_number(tiny_clip_dir, tokenizer):
    model = bucketed_model(tiny_clip_dir, tokenizer, BUCKET_NAMES)
    pixels, labels = random_pixels(3), torch.tensor([0, 5, 6])
    reference = reference_logits(model, *held_prompts(model), pixel_values=pixels)
    torch.nn.functional.cross_entropy(reference, labels).backward()
    expected_grads = {name: p.grad.clone() for name, p in model.prompt_learner.named_parameters()}
    model.zero_grad()

    # The eager backend: the padding and the dropped repeats are what is tested here, not a code generator.
    model.compile_text_path(length_buckets=(4, 8), backend="eager")
    output = model(pixel_values=pixels, labels=labels)
    output.loss.backward()
    scale = reference.abs().max().item()
    assert (output.logits - reference).abs().max().item() <= RTOL * scale
    for name, parameter in model.prompt_learner.named_parameters():
        expected = expected_grads[name]
        assert (parameter.grad - expected).abs().max().item() <= 1e-4 * expected.abs().max().item(), name


def test_fixed_shape_buckets_bound_the_shapes_compiled(tiny_clip_dir, tokenizer):
    """After a few class sets, new ones of other sizes reuse the compiled shapes; without buckets each brings its own."""
    pool = json.loads((Path(__file__).parents[1] / "benchmarks" / "imagenet_classnames.json").read_text())
    first = [pool[start : start + size] for start, size in ((0, 3), (50, 6), (100, 12), (150, 20), (200, 40))]
    second = [pool[start : start + size] for start, size in ((400, 5), (450, 9), (500, 15), (600, 27), (700, 35))]
    embeds = torch.nn.functional.normalize(torch.randn(2, 48, generator=torch.Generator().manual_seed(0)), dim=-1)

    def shapes_compiled(**compile_kwargs):
        """Distinct graphs compiled after the first five class sets, and after five more."""
        seen, counts = [], []

        def counting_backend(graph_module, example_inputs):
            seen.append(tuple(tuple(x.shape) for x in example_inputs if isinstance(x, torch.Tensor)))
            return graph_module.forward

        model = bucketed_model(tiny_clip_dir, tokenizer, first[0])
        model.compile_text_path(backend=counting_backend, **compile_kwargs)
        with torch._dynamo.config.patch(recompile_limit=64), torch.no_grad():
            for class_sets in (first, second):
                for names in class_sets:
                    logits = model(image_embeds=embeds, **model.class_prompts(names)).logits
                    assert logits.shape == (2, len(names))
                counts.append(len(seen))
        torch._dynamo.reset()
        return counts

    bucketed = shapes_compiled(length_buckets=(4, 8, 16))
    unbucketed = shapes_compiled(dynamic=False)
    # Bucketed: at most 3 buckets x 7 class counts (powers of two, 1..64), whatever the sets; the second five sets,
    # of sizes between the first ones', add fewer new shapes than unbucketed, whose shapes follow each set's own
    # counts and lengths (measured: 6 then 9 bucketed, 6 then 13 unbucketed).
    assert bucketed[1] <= 3 * 7
    assert bucketed[1] - bucketed[0] < unbucketed[1] - unbucketed[0]


@pytest.mark.parametrize("buckets", [(), (1, 8), "8", (8.0,), (True,)])
def test_length_buckets_are_checked(tiny_clip_dir, tokenizer, buckets):
    model = bucketed_model(tiny_clip_dir, tokenizer, BUCKET_NAMES[:2])
    with pytest.raises(ValueError, match="`length_buckets` must be suffix lengths in tokens"):
        model.compile_text_path(length_buckets=buckets)
    assert model.text_encoder._suffix_encoder == model.text_encoder._encode_suffix  # nothing compiled, nothing changed
