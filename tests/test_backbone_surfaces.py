"""Every training surface on the other backbones (tests/tiny_backbones.py checkpoints, offline): run_cocoop training
(`--backbone`), evaluate_transfer, the zero-shot baseline with the backbone's own text and logit rule, the grids' flag
checks, `--random_init_clip`, the image transforms and the model card."""

import json
import math

import pytest
import torch
import yaml

from cocoop_hf.backbones_cocoop import BACKBONES
from cocoop_hf_training import evaluate_transfer, grid, run_cocoop
from cocoop_hf_training.cli import ModelArguments
from cocoop_hf_training.image_transforms import build_transforms
from cocoop_hf_training.modeling_setup import build_model, build_zero_shot_clip
from cocoop_hf_training.run_arguments import parse_args

from .conftest import DEMO
from .tiny_backbones import save_tiny_backbone, tiny_image_processor


CIFAR_DATA_ARGS = [
    "--train_file", str(DEMO / "cifar10_demo" / "train.parquet"),
    "--eval_file", str(DEMO / "cifar10_demo" / "test.parquet"),
    "--image_column", "img",
    "--dataset_display_name", "cifar10-demo",
]  # fmt: skip
NAMES = ["airplane", "automobile", "bird", "cat", "deer"]


def run_argv(backbone_dir, output_dir, *extra, train=True):
    """A seconds-long run_cocoop run on the demo data, the backbone given with --backbone."""
    argv = [
        "--backbone", str(backbone_dir), *CIFAR_DATA_ARGS,
        "--per_device_eval_batch_size", "50",
        "--output_dir", str(output_dir),
        "--use_cpu", "true", "--save_strategy", "no", "--disable_tqdm", "true", "--logging_steps", "100",
        "--do_eval",
    ]  # fmt: skip
    if train:
        argv += ["--do_train", "--num_shots", "2", "--num_train_epochs", "1", "--per_device_train_batch_size", "2"]
    return argv + list(extra)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("backbones")
    return {model_type: save_tiny_backbone(root / model_type, model_type) for model_type in ("siglip", "metaclip_2")}


@pytest.fixture(scope="module")
def trained(checkpoints, tmp_path_factory):
    """A 1-epoch CoOp run on each backbone: (output folder, results.json content)."""
    runs = {}
    for model_type, folder in checkpoints.items():
        output_dir = tmp_path_factory.mktemp(f"run-{model_type}") / "out"
        runs[model_type] = output_dir, run_cocoop.main(run_argv(folder, output_dir, "--method", "coop"))
    return runs


def front_matter(readme) -> dict:
    return yaml.safe_load(readme.read_text().split("---")[1])


@pytest.mark.parametrize("model_type", ["siglip", "metaclip_2"])
def test_a_training_run_on_the_backbone_trains_saves_and_evaluates(trained, model_type):
    from cocoop_hf import CoCoOpModel

    output_dir, content = trained[model_type]
    assert content["recipe"]["backbone"] == model_type and content["runs"][0]["method"] == "coop"
    metrics = content["runs"][0]["metrics"]
    assert metrics["base"]["num_samples"] == 100 and metrics["new"]["num_samples"] == 100
    saved = json.loads((output_dir / "config.json").read_text())
    assert saved["backbone_config"]["model_type"] == model_type
    model = CoCoOpModel.from_pretrained(output_dir)
    assert isinstance(model.clip, BACKBONES[model_type].model_class)
    # The image processor saved is the backbone's own (SigLIP: resize to the square, mean/std 0.5; no crop).
    processor = json.loads((output_dir / "processor_config.json").read_text())["image_processor"]
    expected = "SiglipImageProcessor" if model_type == "siglip" else "CLIPImageProcessor"
    assert processor["image_processor_type"].removesuffix("Fast") == expected


def test_a_siglip2_run_feeds_its_patches_through_training_and_evaluation(tmp_path):
    """SigLIP 2's images are patches with a mask and shapes (its processor's own); its tokenizer pads on the left."""
    folder = save_tiny_backbone(tmp_path / "siglip2", "siglip2")
    content = run_cocoop.main(run_argv(folder, tmp_path / "out", "--method", "cocoop"))
    metrics = content["runs"][0]["metrics"]
    assert content["recipe"]["backbone"] == "siglip2" and metrics["new"]["num_samples"] == 100
    # A local base folder: not a known publisher's release, so its licence is the base checkpoint's to say.
    assert front_matter(tmp_path / "out" / "README.md")["license"] == "other"


@pytest.mark.parametrize("model_type", ["siglip", "metaclip_2"])
def test_the_card_names_the_backbone_and_its_weights_licence(trained, model_type):
    output_dir, _ = trained[model_type]
    row = BACKBONES[model_type]
    readme = output_dir / "README.md"
    meta, text = front_matter(readme), readme.read_text()
    # Trained from a local folder (no publisher's Hub id): `license: other`, the base checkpoint's card decides.
    assert meta["license"] == "other" and model_type in meta["tags"] and "clip" not in meta["tags"]
    assert f"for the frozen {row.display_name}\n" in text
    assert "their licence: `other` above; see the base\n  checkpoint's card for its terms." in text
    # The sigmoid-trained backbone's scores under cross-entropy, said on its card only.
    assert ("pretrained with a sigmoid loss" in text) == row.has_logit_bias


def test_a_clip_card_is_as_before():
    from cocoop_hf.modelcard_cocoop import render_model_card

    card = str(render_model_card(base_model="openai/clip-vit-base-patch16", n_ctx=4, class_names=NAMES))
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["license"] == "mit" and meta["tags"] == ["cocoop", "prompt-learning", "clip"]
    assert "for the frozen CLIP\n" in card and "pretrained with a sigmoid loss" not in card


def test_evaluate_transfer_takes_a_model_on_another_backbone(trained, tmp_path):
    model_dir, _ = trained["siglip"]
    targets = tmp_path / "targets.yaml"
    target = {"eval_file": CIFAR_DATA_ARGS[3], "image_column": "img", "dataset_display_name": "cifar-target"}
    targets.write_text(yaml.safe_dump({"targets": [target]}))
    content = evaluate_transfer.main(
        ["--model_name_or_path", str(model_dir), "--targets", str(targets), "--output_dir", str(tmp_path / "x")]
        + ["--use_cpu", "true"]
    )
    assert content["runs"][0]["method"] == "coop" and content["runs"][0]["metrics"]["all"]["num_samples"] == 200
    assert content["clip"]["name_or_path"] == str(
        json.loads((model_dir / "config.json").read_text())["clip_name_or_path"]
    )


# ---------------------------------------------------------------------------------------------- zero-shot


def test_the_siglip_zero_shot_baseline_uses_its_template_and_bias(checkpoints, tmp_path):
    content = run_cocoop.main(run_argv(checkpoints["siglip"], tmp_path / "zs", "--method", "zeroshot", train=False))
    assert (
        content["zero_shot"]["prompt_template"] == BACKBONES["siglip"].zero_shot_template == "This is a photo of {}."
    )
    assert content["runs"][0]["metrics"]["base"]["num_samples"] == 100


@pytest.mark.parametrize("model_type", ["siglip", "metaclip_2"])
def test_zero_shot_logits_equal_the_backbones_own(checkpoints, model_type):
    """The zero-shot baseline's logits equal the backbone's own `logits_per_image` (transformers' forward, with the
    prompts tokenised as its zero-shot pipeline does), 1e-5; the reference fails on a planted mistake."""
    from transformers import AutoTokenizer

    folder, row = checkpoints[model_type], BACKBONES[model_type]
    template = row.zero_shot_template
    model = build_zero_shot_clip(
        ModelArguments(clip_model_name_or_path=str(folder), method="zeroshot"), template, NAMES
    )
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
        backbone = row.model_class.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        prompts = [template.format(name) for name in NAMES]

        def reference(**tokenizer_kwargs):
            text = tokenizer(prompts, return_tensors="pt", truncation=True, **tokenizer_kwargs)
            return backbone(**text, pixel_values=pixels).logits_per_image

        padding = {"padding": "max_length", "max_length": 64} if not row.causal_text else {"padding": True}
        expected = reference(**padding)
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
        # Planted mistakes the reference catches: SigLIP's prompts padded to the longest only (it pools at the last
        # position, so padding changes the feature) and its logit bias left out; the CLIP family's specials dropped.
        if row.has_logit_bias:
            assert not torch.allclose(logits, reference(padding=True), atol=1e-3)
            assert not torch.allclose(logits, expected - backbone.logit_bias, atol=1e-3)
        else:
            assert not torch.allclose(logits, reference(padding=True, add_special_tokens=False), atol=1e-3)


# ---------------------------------------------------------------------------------------------- options


@pytest.mark.parametrize("model_type", ["siglip", "metaclip_2", "siglip2"])
def test_random_init_clip_builds_the_checkpoints_backbone_class(tmp_path, model_type):
    folder = save_tiny_backbone(tmp_path / model_type, model_type, seed=1)  # --random_init_seed 0 draws others
    args = ModelArguments(clip_model_name_or_path=str(folder), random_init_clip=True, method="coop")
    model = build_model(args, NAMES, seed=1)
    again = build_model(args, NAMES, seed=1)
    assert isinstance(model.clip, BACKBONES[model_type].model_class) and model.config.random_clip_weights
    # Where the context starts, read off the checkpoint's tokenizer: after the CLIP family's BOS; first in SigLIP's
    # prompts (no BOS); per class with SigLIP 2's left-padding tokenizer (None: the prompts carry it).
    assert model.config.prompt_context_start == {"metaclip_2": 1, "siglip": 0, "siglip2": None}[model_type]
    pretrained = BACKBONES[model_type].model_class.from_pretrained(folder).state_dict()
    weights = model.clip.state_dict()
    name = "text_model.embeddings.token_embedding.weight"
    assert not torch.equal(weights[name], pretrained[name])  # random, not the checkpoint's
    assert torch.equal(weights[name], again.clip.state_dict()[name])  # the same draw for --random_init_seed 0


def test_backbone_is_another_name_of_clip_model_name_or_path(tmp_path):
    base = ["--dataset_name", "x", "--output_dir", str(tmp_path / "o")]
    assert parse_args(["--backbone", "google/siglip-base-patch16-224", *base])[0].clip_model_name_or_path == (
        "google/siglip-base-patch16-224"
    )
    with pytest.raises(ValueError, match=r"--clip_model_name_or_path and --backbone name the same option"):
        parse_args(["--backbone", "a/b", "--clip_model_name_or_path", "c/d", *base])
    config = tmp_path / "run.yaml"
    config.write_text("backbone: a/b\nclip_model_name_or_path: c/d\n")
    with pytest.raises(ValueError, match=r"`backbone`, `clip_model_name_or_path` name the same option"):
        parse_args([str(config), *base])


def test_the_grids_pass_the_backbone_to_run_cocoop(checkpoints, tmp_path):
    argv = ["--backbone", str(checkpoints["siglip"]), "--dataset_name", "x", "--output_dir", str(tmp_path / "cell")]
    model_args, *_ = grid.check_run_cocoop_flags("a cell", [*argv, "--method", "zeroshot"])
    assert model_args.clip_model_name_or_path == str(checkpoints["siglip"])


@pytest.mark.parametrize("model_type", ["siglip", "siglip2"])
def test_eval_images_are_prepared_as_the_backbones_processor_does(model_type):
    """SigLIP: resized to the square without a crop; SigLIP 2: the processor's own patches, mask and shapes."""
    from PIL import Image

    image = Image.fromarray((torch.rand(40, 60, 3, generator=torch.Generator().manual_seed(1)) * 255).byte().numpy())
    processor = tiny_image_processor(model_type)
    _, evaluation = build_transforms(processor)
    expected = processor(images=[image], return_tensors="pt")
    got = evaluation(image)
    if model_type == "siglip2":
        assert set(got) == {"pixel_values", "pixel_attention_mask", "spatial_shapes"}
        for key, value in got.items():
            assert torch.equal(value, expected[key][0]), key
    else:
        assert got.shape == expected["pixel_values"][0].shape == (3, 32, 32)
        # torchvision's bicubic vs PIL's: a few 8-bit levels after normalising by 0.5 (2/255 = 0.0078).
        assert (got - expected["pixel_values"][0]).abs().max() < 0.05
        assert math.isclose(float(got.mean()), float(expected["pixel_values"][0].mean()), abs_tol=0.01)
