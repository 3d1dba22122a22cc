"""cocoop_hf_training/run_cocoop.py on the paper's benchmarks by name (`--benchmark NAME --data_root DIR`) and zero-shot CLIP
with a prompt template (cocoop_hf_training/zeroshot.py), on miniature official layouts with real tiny images and the tiny
random CLIP of cocoop_hf_training/demo."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from cocoop_hf_training.benchmarks import get_benchmark
from cocoop_hf_training.run_cocoop import CoCoOpTrainer, main
from cocoop_hf_training.zeroshot import ZeroShotCLIP, check_template

from .conftest import TINY_CLIP, tiny_run_argv


REPO = Path(__file__).resolve().parent.parent
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# Four EuroSAT classes as the published split_zhou_EuroSAT.json names them (folder, official class name).
EUROSAT = [
    ("AnnualCrop", "Annual Crop Land"),
    ("Forest", "Forest"),
    ("HerbaceousVegetation", "Herbaceous Vegetation Land"),
    ("SeaLake", "Sea or Lake"),
]
COUNTS = {"train": 3, "val": 1, "test": 2}  # images per class and split


def write_image(path: Path, label: int, index: int) -> None:
    """A real 40x40 image, a colour per class with a per-image shade; JPEG or PNG by the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = ((70 * label + 9 * index) % 256, (40 * label + 30) % 256, (255 - 50 * label - 7 * index) % 256)
    Image.new("RGB", (40, 40), colour).save(path)


def make_eurosat(root: Path) -> dict:
    """eurosat/split_zhou_EuroSAT.json + eurosat/2750/<Folder>/<Folder>_<n>.jpg, as the official DATASETS.md lays
    them out; class 3 is listed first in every split, so the label order cannot come from file order."""
    dataset_dir = root / "eurosat"
    split, n = {}, 0
    for split_name, count in COUNTS.items():
        entries = []
        for label in (3, 0, 1, 2):
            folder, name = EUROSAT[label]
            for _ in range(count):
                suffix = "png" if n % 2 else "jpg"
                rel = f"{folder}/{folder}_{n}.{suffix}"
                write_image(dataset_dir / "2750" / rel, label, n)
                entries.append([rel, label, name])
                n += 1
        split[split_name] = entries
    (dataset_dir / "split_zhou_EuroSAT.json").write_text(json.dumps(split))
    return split


def make_imagenet_v2(root: Path, num_classes=2) -> None:
    dataset_dir = root / "imagenetv2"
    dataset_dir.mkdir(parents=True)
    (dataset_dir / "classnames.txt").write_text("".join(f"n{i:08d} class_{i}\n" for i in range(num_classes)))
    for label in range(num_classes):
        for index in range(2):
            write_image(
                dataset_dir / "imagenetv2-matched-frequency-format-val" / str(label) / f"{index}.jpeg", label, index
            )


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    make_eurosat(root)
    make_imagenet_v2(root)
    return root


def argv(output_dir, *extra, train=True, evaluate=True):
    return tiny_run_argv(output_dir, [], *extra, eval_batch_size=4, train=train, evaluate=evaluate)


def benchmark(data_root, name="EuroSAT"):
    return ["--benchmark", name, "--data_root", str(data_root)]


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(CoCoOpTrainer, "train", lambda *a, **kw: pytest.fail("training started before the error"))


# ------------------------------------------------------------------------------------------- runs


def test_benchmark_run_trains_on_base_and_evaluates_base_and_new_with_official_names(data_root, tmp_path):
    output_dir = tmp_path / "cocoop"
    content = main(argv(output_dir, *benchmark(data_root, "eurosat"), "--method", "coop"))

    results = json.loads((output_dir / "results.json").read_text())
    names = [name for _, name in EUROSAT]
    assert results["classes"] == {"base": names[:2], "new": names[2:]}
    (run,) = results["runs"]
    assert run["dataset"] == "EuroSAT" and run["method"] == "coop" and "prompt_template" not in run
    # evaluated on the benchmark's test split: 2 test images per class
    assert run["metrics"]["base"]["num_samples"] == 4 and run["metrics"]["new"]["num_samples"] == 4
    assert run["metrics"]["base"]["num_classes"] == 2 and "H" in run
    assert content["runs"] == results["runs"]
    assert (output_dir / "model.safetensors").is_file()

    # few-shot: 2 of the 3 training images of each base class, drawn from the benchmark's train split
    indices = json.loads((output_dir / "fewshot_indices.json").read_text())
    assert indices["dataset"] == {"benchmark": "EuroSAT", "data_root": str(data_root.resolve())}
    assert indices["split"] == "train" and indices["num_rows"] == 4 * COUNTS["train"]
    trained = indices["trained"]["items"]
    assert len(trained) == 4
    train_dir = data_root / "eurosat" / "2750"
    assert {Path(path).parent.name for *_, path in trained} == {"AnnualCrop", "Forest"}
    assert all(Path(path).parent.parent == train_dir for *_, path in trained)


def test_zeroshot_uses_the_official_benchmark_template(data_root, tmp_path):
    output_dir = tmp_path / "zs"
    main(argv(output_dir, *benchmark(data_root), "--method", "zeroshot", train=False))

    template = get_benchmark("EuroSAT").template
    assert template == "a centered satellite photo of {}."
    results = json.loads((output_dir / "results.json").read_text())
    assert results["runs"][0]["prompt_template"] == template
    assert results["zero_shot"]["prompt_template"] == template and "EuroSAT" in results["zero_shot"]["source"]
    assert results["recipe"]["prompt template"] == template
    assert template in (output_dir / "README.md").read_text()
    assert results["runs"][0]["metrics"]["new"]["num_samples"] == 4
    assert not (output_dir / "model.safetensors").exists()  # nothing learned, nothing saved


def test_zeroshot_prompt_template_overrides_the_benchmark_template(data_root, tmp_path):
    main(argv(tmp_path / "zs", *benchmark(data_root), "--method", "zeroshot", "--prompt_template", "{} land.",
              train=False))  # fmt: skip
    results = json.loads((tmp_path / "zs" / "results.json").read_text())
    assert results["runs"][0]["prompt_template"] == "{} land."
    assert results["zero_shot"]["source"] == "--prompt_template"


def test_template_zeroshot_equals_the_coop_packaged_zeroshot_for_the_same_prompt(tmp_path):
    """Plain CLIP + "a photo of a {}." and the CoOp model with the context "a photo of a" are the same classifier:
    same accuracy and macro-F1 on the CIFAR-10 demo images (same random weights)."""
    from .test_training import CIFAR_DATA_ARGS

    data = [*CIFAR_DATA_ARGS, "--method", "zeroshot"]
    packaged = main(argv(tmp_path / "packaged", *data, "--per_device_eval_batch_size", "50", train=False))
    plain = main(
        argv(tmp_path / "plain", *data, "--prompt_template", "a photo of a {}.", "--per_device_eval_batch_size", "50",
             train=False)
    )  # fmt: skip
    assert "prompt_template" not in packaged["runs"][0]
    assert plain["runs"][0]["prompt_template"] == "a photo of a {}."
    for task in ("base", "new"):
        ours, theirs = plain["runs"][0]["metrics"][task], packaged["runs"][0]["metrics"][task]
        assert ours["num_samples"] == theirs["num_samples"] == 100
        # Predictions are argmaxes of logits equal to ~1e-5: any tie-breaking difference would show here.
        assert ours["accuracy"] == pytest.approx(theirs["accuracy"], abs=1e-9)
        assert ours["macro_f1"] == pytest.approx(theirs["macro_f1"], abs=1e-9)


def test_test_only_benchmark_evaluates_zeroshot_and_refuses_training(data_root, tmp_path, no_training):
    main(argv(tmp_path / "v2", *benchmark(data_root, "ImageNet-V2"), "--method", "zeroshot", "--protocol", "all",
              train=False))  # fmt: skip
    results = json.loads((tmp_path / "v2" / "results.json").read_text())
    assert results["runs"][0]["dataset"] == "ImageNetV2"
    assert results["classes"] == {"all": ["class_0", "class_1"]}
    assert results["runs"][0]["metrics"]["all"]["num_samples"] == 4
    assert results["runs"][0]["prompt_template"] == "a photo of a {}."

    with pytest.raises(ValueError, match="ImageNetV2 is a test-only dataset.*drop --do_train"):
        main(argv(tmp_path / "v2-train", *benchmark(data_root, "ImageNetV2"), "--method", "coop", "--protocol", "all"))
    assert not (tmp_path / "v2-train" / "fewshot_indices.json").exists()
    with pytest.raises(ValueError, match=r"only the split 'test', not \['val'\]"):
        main(argv(tmp_path / "v2-val", *benchmark(data_root, "ImageNetV2"), "--method", "zeroshot",
                  "--eval_split", "val", "--protocol", "all", train=False))  # fmt: skip
    # Domain-generalisation targets are scored on all their classes, never split into base and new.
    with pytest.raises(ValueError, match="ImageNetV2 is a test-only target.*pass --protocol all"):
        main(argv(tmp_path / "v2-b2n", *benchmark(data_root, "ImageNetV2"), "--method", "zeroshot", train=False))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--benchmark", "EuroSAT"], "--benchmark EuroSAT needs --data_root"),
        (["--data_root", "somewhere"], "--data_root somewhere is only read with --benchmark"),
        (["--benchmark", "Cifar", "--data_root", "x"], r"Unknown benchmark 'Cifar'; choose one of \["),
        (["--benchmark", "EuroSAT", "--data_root", "x", "--train_file", "t.csv"], "drop --train_file"),
        (["--benchmark", "EuroSAT", "--data_root", "x", "--dataset_name", "d"], "drop --dataset_name"),
        (
            ["--benchmark", "EuroSAT", "--data_root", "x", "--split_file", "s.json", "--image_root", "."],
            "drop --split_file, --image_root",
        ),
        (["--benchmark", "EuroSAT", "--data_root", "x", "--train_split", "training"], "--train_split 'training'"),
        (["--benchmark", "EuroSAT", "--data_root", "x", "--image_column", "img"], "drop --image_column"),
        (
            ["--benchmark", "EuroSAT", "--data_root", "DATA", "--prompt_template", "{} land.", "--method", "coop"],
            r"--prompt_template is the .*prompt of a zero-shot backbone.*--method zeroshot",
        ),
    ],
)
def test_bad_combinations_give_clear_errors(data_root, tmp_path, no_training, extra, message):
    extra = [str(data_root) if value == "DATA" else value for value in extra]
    with pytest.raises(ValueError, match=message):
        main(argv(tmp_path / "out", *extra))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--prompt_template", "a photo of a"], "must hold exactly one '{}'"),
        (["--prompt_template", "{} and {}"], "must hold exactly one '{}'"),
        (["--prompt_template", "{} {name}"], "not a valid format string"),
        (["--model_name_or_path", "trained"], "drop --model_name_or_path trained"),
        (["--push_to_hub", "true"], "--push_to_hub: .* saves no model"),
        (["--save_adapter_only", "true"], "--save_adapter_only: .* saves no model"),
    ],
)
def test_bad_zeroshot_template_options(data_root, tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        main(argv(tmp_path / "out", *benchmark(data_root), "--method", "zeroshot", *extra, train=False))
    assert not (tmp_path / "out").exists()


def test_benchmark_split_names_are_the_official_ones(data_root, tmp_path, no_training):
    with pytest.raises(ValueError, match=r"--eval_split 'validation'.*\['train', 'val', 'test'\]"):
        main(argv(tmp_path / "out", *benchmark(data_root), "--eval_split", "validation"))


# ------------------------------------------------------------------------------------------- the model


def tiny_zero_shot(template="a photo of a {}, a type of pet.", class_names=("great_pyrenees", "pug", "beagle")):
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig.from_pretrained(TINY_CLIP)).eval()
    # A logit scale other than the init value, so a missing or doubled exp() would show.
    with torch.no_grad():
        clip.logit_scale.fill_(2.5)
    tokenizer = CLIPTokenizer.from_pretrained(TINY_CLIP)
    return ZeroShotCLIP(clip, tokenizer, template, class_names), clip, tokenizer


def test_zero_shot_logits_equal_clip_logits_per_image():
    """fp32, atol 1e-5 on logits of size ~10: the same computation as CLIPModel, so only rounding may differ."""
    model, clip, tokenizer = tiny_zero_shot()
    names = ["great_pyrenees", "pug", "beagle"]
    prompts = ["a photo of a great pyrenees, a type of pet.", "a photo of a pug, a type of pet.",
               "a photo of a beagle, a type of pet."]  # fmt: skip
    assert model.prompts(names) == prompts
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    text = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = clip(input_ids=text["input_ids"], attention_mask=text["attention_mask"], pixel_values=pixels)
        expected = expected.logits_per_image
        encoded = model.class_prompts(names)
        from_pixels = model(pixel_values=pixels, **encoded).logits
        from_embeds = model(image_embeds=model.get_image_features(pixels), **encoded).logits
        default_set = model(pixel_values=pixels).logits  # the class set given at construction
    assert torch.equal(encoded["input_ids"], text["input_ids"])
    for logits in (from_pixels, from_embeds, default_set):
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    assert expected.std() > 0.01  # the test compares distinct logits, not constants


def test_zero_shot_class_prompts_leave_the_model_unchanged_and_it_has_nothing_to_train():
    model, _, _ = tiny_zero_shot()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        other = model(pixel_values=pixels, **model.class_prompts(["cat", "dog"])).logits
    assert other.shape == (2, 2)
    assert model.class_names == ["great_pyrenees", "pug", "beagle"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(p.requires_grad for p in model.parameters())
    model.eval()
    assert not model.training
    model.train()
    assert model.training


@pytest.mark.parametrize("template", ["{} texture.", "a photo of {}, a type of food.", "a {{braced}} {}."])
def test_templates_with_one_placeholder_are_accepted(template):
    assert check_template(template) == template


def test_coop_base_to_new_recipe_is_the_official_vit_b16_ctxv1(tmp_path):
    """configs/trainers/CoOp/vit_b16_ctxv1.yaml of KaiyangZhou/CoOp, as scripts/cocoop/base2new_train.sh runs it."""
    from cocoop_hf_training.run_cocoop import parse_args

    config = REPO / "cocoop_hf_training" / "configs" / "coop_vit_b16_ctxv1.yaml"
    model_args, data_args, training_args, run_args = parse_args(
        [str(config), "--benchmark", "dtd", "--data_root", str(tmp_path), "--output_dir", str(tmp_path / "out")]
    )
    assert (model_args.method, model_args.ctx_init, model_args.n_ctx) == ("coop", "a photo of a", 4)
    assert (data_args.benchmark, data_args.num_shots, data_args.protocol) == ("DescribableTextures", 16, "base_to_new")
    assert training_args.num_train_epochs == 200 and training_args.per_device_train_batch_size == 32
    assert training_args.learning_rate == 0.002 and training_args.weight_decay == 5e-4 and training_args.fp16
    assert (run_args.lr_schedule, run_args.warmup_epochs, run_args.warmup_lr) == ("dassl_cosine", 1, 1e-5)
    assert run_args.sgd_momentum == 0.9


def test_base_to_new_transfer_target_gets_base_new_and_h(data_root, tmp_path):
    """A target with protocol base_to_new is scored on its two halves; results.json and results.md get H."""
    from cocoop_hf_training.evaluate_transfer import main as transfer_main
    from cocoop_hf_training.evaluation import harmonic_mean
    from cocoop_hf_training.report import COLUMN_TITLES

    targets = tmp_path / "targets.json"
    entries = [
        {"benchmark": "EuroSAT", "data_root": str(data_root), "protocol": "base_to_new"},
        {"benchmark": "imagenet-v2", "data_root": str(data_root)},
    ]
    targets.write_text(json.dumps({"targets": entries}))
    content = transfer_main(
        ["--clip_model_name_or_path", str(TINY_CLIP), "--random_init_clip", "true", "--method", "zeroshot",
         "--targets", str(targets), "--output_dir", str(tmp_path / "out"), "--use_cpu", "true"]
    )  # fmt: skip
    eurosat, v2 = content["runs"]
    assert sorted(eurosat["metrics"]) == ["base", "new"] and sorted(v2["metrics"]) == ["all"]
    for task in ("base", "new"):  # 4 classes: 2 base, 2 new, each with COUNTS["test"] images
        assert eurosat["metrics"][task]["num_classes"] == 2
        assert eurosat["metrics"][task]["num_samples"] == 2 * COUNTS["test"]
    base, new = eurosat["metrics"]["base"]["accuracy"], eurosat["metrics"]["new"]["accuracy"]
    assert eurosat["H"] == pytest.approx(harmonic_mean(base, new), abs=1e-9) and "H" not in v2
    table = (tmp_path / "out" / "results.md").read_text()
    assert COLUMN_TITLES["H"] in table.splitlines()[2]  # the header row, after the random-weights note


def test_benchmarks_as_transfer_targets(data_root, tmp_path):
    """evaluate_transfer.py reads the same data options: a target may be a benchmark by name (all classes)."""
    from cocoop_hf_training.evaluate_transfer import main as transfer_main

    targets = tmp_path / "targets.json"
    entries = [{"benchmark": name, "data_root": str(data_root)} for name in ("EuroSAT", "imagenet-v2")]
    targets.write_text(json.dumps({"targets": entries}))
    content = transfer_main(
        ["--clip_model_name_or_path", str(TINY_CLIP), "--random_init_clip", "true", "--method", "zeroshot",
         "--targets", str(targets), "--output_dir", str(tmp_path / "out"), "--use_cpu", "true"]
    )  # fmt: skip
    samples = {run["dataset"]: run["metrics"]["all"]["num_samples"] for run in content["runs"]}
    classes = {run["dataset"]: run["metrics"]["all"]["num_classes"] for run in content["runs"]}
    assert samples == {"EuroSAT": 4 * COUNTS["test"], "ImageNetV2": 4}
    assert classes == {"EuroSAT": 4, "ImageNetV2": 2}
