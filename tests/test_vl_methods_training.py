"""IVLP, MaPLe and PromptSRC through the training scripts: `--method ivlp|maple|promptsrc` gives the published config
fields (flags over them where the official config has the option), the CoOp-family options that do not fit are refused
one clear line each, the shipped recipes are the official configs, `cocoop-hf train <recipe>` of each method runs on
the miniature EuroSAT layout (tiny random CLIP: every accuracy is meaningless), PromptSRC logs its three terms and records
its Gaussian prompt aggregation, a saved model brings its method, and the grids list the methods with the papers'
averages."""

import json

import pytest
from transformers import TrainerCallback

from cocoop_hf_training import commands, grid, grid_arguments, run_benchmark
from cocoop_hf_training.model_arguments import ModelArguments
from cocoop_hf_training.prompt_aggregation import gpa_weights
from cocoop_hf_training.recipes import CONFIGS
from cocoop_hf_training.run_cocoop import main, parse_args

from .conftest import TINY_CLIP
from .test_benchmark_runs import benchmark, make_eurosat


class Recorder(TrainerCallback):
    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    make_eurosat(root)
    return root


# The tiny CLIP has 2 layers per tower: the published depth 9 is refused there (CoCoOpConfig), so depth 2.
TINY_DEPTH = {
    "ivlp": ["--prompt_depth_text", "2", "--prompt_depth_vision", "2"],
    "maple": ["--prompt_depth_text", "2"],
    "promptsrc": ["--prompt_depth_text", "2", "--prompt_depth_vision", "2"],
}
RECIPES = {
    "ivlp": "ivlp_vit_b16_c2_ep20_batch4_4+4ctx",
    "maple": "maple_vit_b16_c2_ep5_batch4_2ctx",
    "promptsrc": "promptsrc_vit_b16_c2_ep20_batch4_4+4ctx",
}


def recipe_overrides(data_root, output_dir, method, *extra):
    """A shipped recipe made seconds-long: the tiny random CLIP, 2 shots, 1 epoch, CPU, no checkpoints."""
    return [
        "--clip_model_name_or_path", str(TINY_CLIP), "--random_init_clip", "true", *benchmark(data_root),
        "--num_shots", "2", "--num_train_epochs", "1", "--per_device_train_batch_size", "2",
        "--per_device_eval_batch_size", "4", "--dataloader_num_workers", "0", "--fp16", "false",
        "--save_strategy", "no", "--use_cpu", "true", "--disable_tqdm", "true", "--output_dir", str(output_dir),
        *TINY_DEPTH.get(method, []), *extra,
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------- method options


def test_each_method_gives_its_published_config_fields():
    base = {"conditional": False, "class_token_position": "end", "class_specific_context": False, "kgcoop_weight": 0.0}
    ivlp = ModelArguments(method="ivlp")
    assert ivlp.n_ctx == 4 and ivlp.ctx_init == "a photo of a"
    deep = {"prompt_depth_text": 9, "prompt_depth_vision": 9, "n_ctx_vision": 4, "vision_prompts_from_text": False}
    assert ivlp.method_config() == {**base, **deep}
    maple = ModelArguments(method="maple")
    assert maple.n_ctx == 2 and maple.ctx_init == "a photo of a"  # learns "a photo" of "a photo of a"
    assert maple.method_config() == {
        **base, "prompt_depth_text": 9, "prompt_depth_vision": 9, "n_ctx_vision": None, "vision_prompts_from_text": True
    }  # fmt: skip
    promptsrc = ModelArguments(method="promptsrc")
    assert promptsrc.n_ctx == 4
    weights = {"promptsrc_text_weight": 25.0, "promptsrc_image_weight": 10.0, "promptsrc_logits_weight": 1.0}
    assert promptsrc.method_config() == {**base, **deep, **weights}
    # The CoOp family keeps its fields as they were (the config's defaults: no deep prompts).
    assert ModelArguments(method="coop").method_config() == base


def test_flags_override_the_published_values_where_the_official_config_has_the_option():
    options = ModelArguments(
        method="promptsrc", n_ctx=2, n_ctx_vision=3, prompt_depth_text=3, prompt_depth_vision=1,
        promptsrc_text_weight=5.0, promptsrc_image_weight=0.0,
    ).method_config()  # fmt: skip
    assert (options["prompt_depth_text"], options["prompt_depth_vision"], options["n_ctx_vision"]) == (3, 1, 3)
    assert (options["promptsrc_text_weight"], options["promptsrc_image_weight"]) == (5.0, 0.0)
    maple = ModelArguments(method="maple", n_ctx=3, prompt_depth_text=5).method_config()
    assert (maple["prompt_depth_text"], maple["prompt_depth_vision"], maple["n_ctx_vision"]) == (5, 5, None)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"method": "ivlp", "class_specific_context": True}, r"^--class_specific_context is a CoOp option"),
        ({"method": "maple", "class_token_position": "middle"}, r"^--class_token_position middle: --method maple"),
        ({"method": "promptsrc", "kgcoop_weight": 8.0}, r"^--kgcoop_weight 8.0 is the KgCoOp regulariser"),
        ({"method": "coop", "prompt_depth_text": 3}, r"^--prompt_depth_text: options of the deep vision-language"),
        ({"method": "cocoop", "n_ctx_vision": 4}, r"^--n_ctx_vision: options of the deep vision-language"),
        ({"method": "kgcoop", "promptsrc_text_weight": 1.0}, r"^--promptsrc_text_weight: options of the deep"),
        ({"method": "zeroshot", "prompt_depth_vision": 2}, r"^--prompt_depth_vision: options of a learned prompt"),
        ({"method": "ivlp", "promptsrc_image_weight": 1.0}, r"^--promptsrc_image_weight: weights of PromptSRC's"),
        ({"method": "maple", "n_ctx_vision": 4}, r"^--n_ctx_vision 4: MaPLe's vision prompts are projections"),
        ({"method": "maple", "prompt_depth_vision": 3}, r"^--prompt_depth_vision 3: MaPLe has one prompt depth"),
        ({"method": "ivlp", "prompt_depth_text": 0}, r"^--prompt_depth_text must be a whole number >= 1"),
        ({"method": "ivlp", "prompt_depth_vision": -1}, r"^--prompt_depth_vision must be a whole number >= 0"),
        (
            {"method": "promptsrc", "promptsrc_text_weight": float("inf")},
            r"^--promptsrc_text_weight must be a finite number >= 0",
        ),
    ],
)
def test_options_that_do_not_fit_the_method_are_one_clear_error_each(options, message):
    with pytest.raises(ValueError, match=message) as caught:
        ModelArguments(**options)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "method, flags, message",
    [
        ("coop", ["--gpa_mean", "15"], r"^--gpa_mean: PromptSRC's Gaussian prompt aggregation"),
        ("ivlp", ["--gpa_std", "2"], r"^--gpa_std: PromptSRC's Gaussian prompt aggregation"),
        ("promptsrc", ["--gpa_mean", "1000", "--gpa_std", "0.1"], r"every one of the 1 epochs rounds to 0"),
        ("promptsrc", ["--gpa_std", "0"], r"^--gpa_std must be a finite number > 0"),
        ("promptsrc", ["--num_train_epochs", "1.5"], r"^--num_train_epochs 1.5 with --method promptsrc: .* whole"),
        ("promptsrc", ["--load_best_model_at_end", "true", "--eval_strategy", "epoch"], r"^--load_best_model_at_end"),
    ],
)
def test_gpa_options_are_refused_where_they_do_not_fit_before_anything_is_written(
    method, flags, message, data_root, tmp_path
):
    output_dir = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        main(recipe_overrides(data_root, output_dir, method, "--method", method, "--do_train", "--do_eval", *flags))
    assert not output_dir.exists()


def test_a_depth_beyond_the_backbones_layers_is_refused_before_anything_is_written(data_root, tmp_path):
    output_dir = tmp_path / "out"
    argv = recipe_overrides(data_root, output_dir, "ivlp", "--method", "ivlp", "--do_train", "--do_eval")
    at = argv.index("--prompt_depth_text")  # the published text depth 9 on the 2-layer tiny CLIP
    del argv[at : at + 2]
    with pytest.raises(ValueError, match=r"^--method ivlp on .*tiny-clip: prompt depth 9 \(text\) exceeds the backbone's 2 text layers: pass --prompt_depth_text 2 \(or less\)\.$"):
        main(argv)
    assert not output_dir.exists()


# ---------------------------------------------------------------------------------------------- recipes


@pytest.mark.parametrize(
    "name, method, epochs, lr, depths, ctx, protocol, gpa",
    [
        ("ivlp_vit_b16_c2_ep20_batch4_4+4ctx", "ivlp", 20, 0.0025, (9, 9), (4, 4), "base_to_new", None),
        ("maple_vit_b16_c2_ep5_batch4_2ctx", "maple", 5, 0.0035, (9, 9), (2, None), "base_to_new", None),
        ("maple_vit_b16_c2_ep5_batch4_2ctx_cross_datasets", "maple", 2, 0.0026, (3, 3), (2, None), "all", None),
        ("promptsrc_vit_b16_c2_ep20_batch4_4+4ctx", "promptsrc", 20, 0.0025, (9, 9), (4, 4), "base_to_new", (15, 1)),
        (
            "promptsrc_vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets",
            "promptsrc", 20, 0.0025, (3, 3), (4, 4), "all", (6, 10),
        ),
    ],
)  # fmt: skip
def test_each_recipe_is_its_official_config(name, method, epochs, lr, depths, ctx, protocol, gpa, tmp_path):
    """muzairkhattak/PromptSRC configs/trainers/{IVLP,PromptSRC}/*.yaml; multimodal-prompt-learning MaPLe/*.yaml."""
    path = CONFIGS / f"{name}.yaml"
    assert path.read_text().startswith("#") and "official" in path.read_text().split("\n\n")[0]
    model_args, data_args, training_args, run_args = parse_args(
        [str(path), "--benchmark", "eurosat", "--data_root", str(tmp_path), "--output_dir", str(tmp_path / "out")]
    )
    config = model_args.method_config()
    assert model_args.method == method and model_args.ctx_init == "a photo of a"
    assert (model_args.n_ctx, config["n_ctx_vision"]) == ctx
    assert (config["prompt_depth_text"], config["prompt_depth_vision"]) == depths
    assert (data_args.num_shots, data_args.protocol) == (16, protocol)
    assert training_args.num_train_epochs == epochs and training_args.learning_rate == lr
    assert training_args.per_device_train_batch_size == 4 and training_args.per_device_eval_batch_size == 100
    assert training_args.weight_decay == 5e-4 and training_args.fp16 and run_args.sgd_momentum == 0.9
    assert (run_args.lr_schedule, run_args.warmup_epochs, run_args.warmup_lr) == ("dassl_cosine", 1, 1e-5)
    assert (run_args.gpa_mean, run_args.gpa_std) == (gpa if gpa else (None, None))
    if method == "promptsrc":
        assert (config["promptsrc_text_weight"], config["promptsrc_image_weight"]) == (25.0, 10.0)


def test_recipes_lists_the_new_recipes(capsys):
    assert commands.main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in [*RECIPES.values(), "maple_vit_b16_c2_ep5_batch4_2ctx_cross_datasets"]:
        assert f"  {name}" in lines, name


# ---------------------------------------------------------------------------------------------- runs


@pytest.mark.parametrize("method", ["ivlp", "maple"])
def test_cocoop_hf_train_runs_each_recipe_and_results_name_the_method(method, data_root, tmp_path):
    output_dir = tmp_path / method
    assert commands.main(["train", RECIPES[method], *recipe_overrides(data_root, output_dir, method)]) == 0
    content = json.loads((output_dir / "results.json").read_text())
    (run,) = content["runs"]
    assert run["method"] == method and content["recipe"]["method"] == method
    assert sorted(run["metrics"]) == ["base", "new"]
    options = content["method_options"]
    assert options["prompt_depth_text"] == 2 and options["vision_prompts_from_text"] == (method == "maple")
    assert options["n_ctx"] == (2 if method == "maple" else 4)
    assert "prompt_aggregation" not in content and "Gaussian prompt aggregation" not in content["recipe"]
    assert content["note"] and "random" in content["note"].lower()  # random weights: meaningless accuracies, said

    # A saved model brings its method: evaluated without --method it is labelled so; another --method is refused.
    evaluated = main(
        ["--model_name_or_path", str(output_dir), *benchmark(data_root), "--do_eval", "--use_cpu", "true",
         "--per_device_eval_batch_size", "4", "--output_dir", str(tmp_path / "eval"), "--disable_tqdm", "true"]
    )  # fmt: skip
    assert evaluated["runs"][0]["method"] == method
    other = "ivlp" if method == "maple" else "maple"
    with pytest.raises(ValueError, match=f"is a {method} model; --method {other} asks for another"):
        main(["--model_name_or_path", str(output_dir), "--method", other, *benchmark(data_root), "--do_eval",
              "--use_cpu", "true", "--output_dir", str(tmp_path / "eval2")])  # fmt: skip


def test_promptsrc_recipe_logs_its_three_terms_and_records_its_prompt_aggregation(data_root, tmp_path):
    output_dir = tmp_path / "promptsrc"
    recorder = Recorder()
    argv = [str(CONFIGS / f"{RECIPES['promptsrc']}.yaml"), *recipe_overrides(data_root, output_dir, "promptsrc")]
    content = main([*argv, "--num_train_epochs", "2", "--logging_steps", "1"], [recorder])
    assert content["runs"][0]["method"] == "promptsrc"
    terms = ("promptsrc_text_loss", "promptsrc_image_loss", "promptsrc_logits_loss")
    logged = [entry for entry in recorder.logs if "loss" in entry]
    assert logged and all(all(term in entry for term in terms) for entry in logged)
    assert all(entry[term] >= 0 for entry in logged for term in terms) and "kgcoop_loss" not in logged[0]

    record = content["prompt_aggregation"]
    assert (record["mean"], record["std"], record["epochs"]) == (15.0, 1.0, 2)
    assert record["weights"] == pytest.approx(gpa_weights(15, 1, 2)) and record["applied"] is True
    assert content["recipe"]["Gaussian prompt aggregation"] == "mean 15, std 1"
    assert content["method_options"]["promptsrc_text_weight"] == 25.0
    saved = json.loads((output_dir / "results.json").read_text())
    assert saved["prompt_aggregation"] == record


# ---------------------------------------------------------------------------------------------- grids


def test_the_grids_list_the_methods_with_their_recipes_titles_and_the_papers_averages():
    for method, recipe in RECIPES.items():
        assert method in grid_arguments.BENCHMARK_METHODS
        assert grid.RECIPES[method] == CONFIGS / f"{recipe}.yaml" and grid.RECIPES[method].is_file()
    assert (grid.METHOD_TITLES["ivlp"], grid.METHOD_TITLES["maple"], grid.METHOD_TITLES["promptsrc"]) == (
        "IVLP", "MaPLe", "PromptSRC",
    )  # fmt: skip
    papers = run_benchmark.PAPER_AVERAGES
    assert papers["maple"] == {"base": 82.28, "new": 75.14, "H": 78.55}  # MaPLe paper Table 1
    assert papers["promptsrc"] == {"base": 84.26, "new": 76.10, "H": 79.97}  # PromptSRC paper Table 1
    assert papers["ivlp"] == {"base": 84.21, "new": 71.79, "H": 77.51}  # PromptSRC paper / README


def test_a_run_is_labelled_by_what_differs_from_its_methods_published_recipe():
    from cocoop_hf_training.report import is_published_form, method_label

    def run(method, **changes):
        options = {"n_ctx": 4, "n_ctx_vision": 4, "prompt_depth_text": 9, "prompt_depth_vision": 9}
        if method == "maple":
            options.update(n_ctx=2, n_ctx_vision=None, vision_prompts_from_text=True)
        if method == "promptsrc":
            options.update(promptsrc_text_weight=25.0, promptsrc_image_weight=10.0, promptsrc_logits_weight=1.0)
        return {"method": method, "method_options": {**options, **changes}}

    for method in ("ivlp", "maple", "promptsrc"):
        assert method_label(run(method)) == method and is_published_form(run(method))
    assert method_label(run("promptsrc", prompt_depth_text=3, prompt_depth_vision=3)) == "promptsrc (depth 3/3)"
    assert method_label(run("maple", n_ctx=3, prompt_depth_text=5, prompt_depth_vision=5)) == "maple (3 ctx, depth 5)"
    assert method_label(run("ivlp", n_ctx_vision=2), grid.METHOD_TITLES) == "IVLP (2 vision ctx)"
    assert method_label(run("promptsrc", promptsrc_text_weight=5.0)) == "promptsrc (text weight 5)"
    assert not is_published_form(run("ivlp", prompt_depth_vision=0))
