"""The CoOp family through the training scripts: KgCoOp, class-specific context (CSC) and the class-token position,
end to end on the tiny random CLIP and the CIFAR-10 demo images; their recipes, results, bad flags and the grid."""

import json
import math
import re

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from cocoop_hf_training import cli, run_benchmark, run_cocoop
from cocoop_hf_training.modeling_setup import DEFAULT_KGCOOP_TEMPLATE, build_model, kgcoop_template_for
from cocoop_hf_training.report import aggregate, method_label, write_report
from cocoop_hf_training.run_cocoop import CoCoOpTrainer, main

from .conftest import TINY_CLIP, tiny_run_argv
from .test_training import CIFAR10, REPO, argv


CONFIGS = REPO / "cocoop_hf_training" / "configs"


class Recorder(TrainerCallback):
    """What Trainer hands to its loggers (the --report_to integrations are callbacks fed by the same on_log)."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


def prompt_learner_state(folder):
    state = load_file(str(folder / "model.safetensors"))
    return {k: v for k, v in state.items() if k.startswith("prompt_learner.")}


# A random context (not the template's words) so that the learned prompt is measurably away from the hand-crafted one.
RANDOM_CONTEXT = ("--ctx_init", "none", "--n_ctx", "4")


@pytest.fixture(scope="module")
def kgcoop_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("kgcoop")
    recorder = Recorder()
    content = main(
        argv(output_dir, "--method", "kgcoop", *RANDOM_CONTEXT, "--logging_steps", "1", "--num_train_epochs", "2"),
        [recorder],
    )
    return output_dir, content, recorder.logs


# ------------------------------------------------------------------------------------------- KgCoOp


def test_kgcoop_run_records_its_options_and_the_saved_model_keeps_them(kgcoop_run):
    output_dir, content, _ = kgcoop_run
    from cocoop_hf import CoCoOpModel

    run = content["runs"][0]
    assert run["method"] == "kgcoop" and "base" in run["metrics"] and "new" in run["metrics"]
    options = content["method_options"]
    assert options == run["method_options"]
    assert options["kgcoop_weight"] == 8.0 and options["conditional"] is False
    assert options["kgcoop_template"] == DEFAULT_KGCOOP_TEMPLATE == "a photo of a {}."
    assert "no --benchmark" in options["kgcoop_template_source"]
    assert options["class_token_position"] == "end" and options["class_specific_context"] is False
    assert content["recipe"]["KgCoOp weight"] == 8.0 and content["recipe"]["KgCoOp template"] == "a photo of a {}."
    saved = json.loads((output_dir / "results.json").read_text())
    assert saved["method_options"] == options

    table = (output_dir / "results.md").read_text()
    assert "| cifar10-demo | kgcoop | 1 |" in table
    assert "KgCoOp regulariser w = 8 towards 'a photo of a {}.'" in table
    card = (output_dir / "README.md").read_text().lower()  # the card names the method and the regulariser
    assert "kgcoop" in card and "kgcoop regulariser" in card and "w = 8" in card and "a photo of a {}." in card

    model = CoCoOpModel.from_pretrained(output_dir)
    assert model.config.kgcoop_weight == 8.0 and model.config.kgcoop_template == "a photo of a {}."
    assert model.config.conditional is False and model.class_names == CIFAR10[:5]
    assert not any("meta_net" in key for key in prompt_learner_state(output_dir))


def test_kgcoop_term_is_logged_beside_the_loss(kgcoop_run):
    _, _, logs = kgcoop_run
    training_logs = [log for log in logs if "loss" in log]
    assert len(training_logs) == 10  # 5 steps per epoch (10 images, batch 2), logged every step, 2 epochs
    for log in training_logs:
        # 1 - mean cosine lies in [0, 2]; a random context is far from "a photo of a {}." (tiny CLIP: ~0.3)
        assert 0.01 < log["kgcoop_loss"] <= 2 and math.isfinite(log["loss"])
    assert not any("kgcoop_loss" in log for log in logs if "loss" not in log)  # not on the final summary


def test_logged_kgcoop_term_is_the_regulariser_of_the_model(kgcoop_run):
    """The first log covers one batch of the untrained model: 1 - mean cosine(learned, zero-shot) of its classes."""
    _, _, logs = kgcoop_run
    model_args = cli.ModelArguments(
        clip_model_name_or_path=str(TINY_CLIP), random_init_clip=True, method="kgcoop", ctx_init=None, n_ctx=4
    )
    model = build_model(model_args, CIFAR10[:5], seed=1).eval()  # the run's seed (the script's default)
    with torch.no_grad():
        learned = model.get_text_features(torch.zeros(1, model.config.clip_config.projection_dim))[0]
        zero_shot = model.zero_shot_text_features(CIFAR10[:5])
        cosine = torch.nn.functional.cosine_similarity(learned, zero_shot, dim=-1)  # (classes,)
    expected = 1 - cosine.mean().item()
    assert expected > 0.01
    first = next(log for log in logs if "loss" in log)
    assert first["kgcoop_loss"] == pytest.approx(expected, abs=1e-5)  # fp32, same weights, another batch layout


def test_kgcoop_weight_reaches_training(kgcoop_run, tmp_path):
    """The same run without the regulariser (CoOp) ends elsewhere: the weight changes the gradients."""
    output_dir, _, _ = kgcoop_run
    logged = Recorder()
    main(argv(tmp_path / "coop", "--method", "coop", *RANDOM_CONTEXT, "--num_train_epochs", "2"), [logged])
    assert not any("kgcoop_loss" in log for log in logged.logs)  # no term without the regulariser
    kg, coop = prompt_learner_state(output_dir), prompt_learner_state(tmp_path / "coop")
    assert kg.keys() == coop.keys() == {"prompt_learner.ctx"}
    assert (kg["prompt_learner.ctx"] - coop["prompt_learner.ctx"]).abs().max() > 1e-4


def test_kgcoop_weight_with_cocoop_and_own_template(tmp_path):
    """--kgcoop_weight with --method cocoop (ours, not the paper's); --prompt_template as the hand-crafted prompt."""
    recorder = Recorder()
    content = main(
        argv(
            tmp_path / "out",
            "--kgcoop_weight",
            "2.5",
            "--prompt_template",
            "a blurry photo of a {}.",
            "--logging_steps",
            "1",
            evaluate=False,
        ),
        [recorder],
    )
    options = content["method_options"]
    assert (options["conditional"], options["kgcoop_weight"]) == (True, 2.5)
    assert options["kgcoop_template"] == "a blurry photo of a {}."
    assert options["kgcoop_template_source"] == "--prompt_template"
    assert all("kgcoop_loss" in log for log in recorder.logs if "loss" in log)
    assert method_label({"method": "cocoop", "method_options": options}) == "cocoop (+KgCoOp w=2.5)"


def test_kgcoop_template_per_benchmark():
    """Official KgCoOp trainers/kgcoop.py CUSTOM_TEMPLATES: CoOp's zero-shot templates, except DTD's."""
    assert kgcoop_template_for("dtd")[0] == "a photo of a {}, a type of texture."
    assert kgcoop_template_for("eurosat")[0] == "a centered satellite photo of {}."
    assert kgcoop_template_for("OxfordPets")[0] == "a photo of a {}, a type of pet."
    assert kgcoop_template_for("ucf101")[0] == "a photo of a person doing {}."
    assert kgcoop_template_for("imagenet")[0] == "a photo of a {}."
    assert kgcoop_template_for(None) == (DEFAULT_KGCOOP_TEMPLATE, "the default hand-crafted prompt (no --benchmark)")
    assert kgcoop_template_for("dtd", "x {} y")[0] == "x {} y"


# ------------------------------------------------------------------------------------------- CSC and middle


def test_class_specific_context_trains_on_all_classes_and_loads(tmp_path):
    from cocoop_hf import CoCoOpModel

    output_dir = tmp_path / "csc"
    content = main(
        argv(output_dir, "--method", "coop", "--class_specific_context", *RANDOM_CONTEXT, "--protocol", "all")
    )
    run = content["runs"][0]
    assert run["metrics"]["all"]["num_classes"] == 10 and run["method_options"]["class_specific_context"] is True
    assert content["recipe"]["class-specific context"] is True
    assert "| cifar10-demo | coop (CSC) | 1 |" in (output_dir / "results.md").read_text()
    assert "class-specific context" in (output_dir / "README.md").read_text().lower()
    model = CoCoOpModel.from_pretrained(output_dir)
    assert model.config.class_specific_context is True and model.class_names == CIFAR10
    hidden = model.config.clip_config.text_config.hidden_size
    assert tuple(prompt_learner_state(output_dir)["prompt_learner.ctx"].shape) == (10, 4, hidden)
    # Evaluating the saved model in a fresh run gives the training run's figures.
    again = main(argv(tmp_path / "eval", "--model_name_or_path", str(output_dir), "--protocol", "all", train=False))
    assert again["runs"][0]["metrics"] == run["metrics"]
    assert again["method_options"]["class_specific_context"] is True
    assert again["runs"][0]["method"] == "coop"  # what the saved model is, not the default --method cocoop
    # Its base-to-new evaluation could not score the new classes: refused before anything is written.
    with pytest.raises(ValueError, match=r"\(class-specific context\) learns one context per training class"):
        main(argv(tmp_path / "b2n", "--model_name_or_path", str(output_dir), train=False))
    assert not (tmp_path / "b2n").exists()
    # On another dataset's classes: refused from the saved config, naming the classes, before any file is written
    # (a few-shot list or a manifest would make the rerun into that folder a "previous run").
    other = _imagefolder(tmp_path / "other", ["airplane", "bird", "whale"])
    for _ in range(2):
        with pytest.raises(
            ValueError, match=r"no context for: \['whale'\]; its classes this run lacks: \['automobile'"
        ):
            main(
                tiny_run_argv(tmp_path / "out", ["--dataset_name", str(other)], "--model_name_or_path",
                              str(output_dir), "--protocol", "all", "--cache_dir", str(tmp_path / "cache"))
            )  # fmt: skip
        assert not (tmp_path / "out").exists()


def _imagefolder(folder, classes):
    """train/ and test/ with two tiny images per class folder."""
    from PIL import Image

    for split in ("train", "test"):
        for index, name in enumerate(classes):
            for shot in range(2):
                path = folder / split / name / f"{shot}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (4, 4), (40 * index, 90 * shot, 7)).save(path)
    return folder


def test_saved_class_specific_context_names_the_classes_it_lacks():
    from types import SimpleNamespace

    config = SimpleNamespace(class_names=["cat", "dog", "sea lake"])
    run_cocoop.check_saved_class_set("m", config, ["Cat", "dog", "sea_lake"])  # the same prompts: accepted
    with pytest.raises(ValueError, match=r"same classes in another order: it has \['cat', 'dog', 'sea lake'\]"):
        run_cocoop.check_saved_class_set("m", config, ["dog", "cat", "sea lake"])
    with pytest.raises(
        ValueError, match=r"m has a class-specific context .* 3 training classes only, and this run has 2"
    ):
        run_cocoop.check_saved_class_set("m", config, ["cat", "fish"])


def test_middle_class_token_position_runs_base_to_new(tmp_path):
    from cocoop_hf import CoCoOpModel

    output_dir = tmp_path / "middle"
    content = main(argv(output_dir, "--method", "coop", "--class_token_position", "middle"))
    run = content["runs"][0]
    assert run["method_options"]["class_token_position"] == "middle" and "H" in run
    assert content["recipe"]["class token position"] == "middle"
    assert "| cifar10-demo | coop (class token middle) | 1 |" in (output_dir / "results.md").read_text()
    assert "class-token position **middle**" in (output_dir / "README.md").read_text().lower()
    assert CoCoOpModel.from_pretrained(output_dir).config.class_token_position == "middle"


# ------------------------------------------------------------------------------------------- bad flags


@pytest.fixture
def nothing_built(monkeypatch):
    def refuse(*args, **kwargs):
        pytest.fail("a model was built before the error")

    monkeypatch.setattr(run_cocoop, "build_model", refuse)
    monkeypatch.setattr(CoCoOpTrainer, "train", refuse)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "cocoop", "--class_specific_context"], "--class_specific_context is a CoOp option"),
        (["--method", "coop", "--class_token_position", "middle", "--ctx_init", "none", "--n_ctx", "1"],
         "--class_token_position middle needs at least 2 context tokens, got 1"),
        (["--method", "coop", "--class_token_position", "middle", "--ctx_init", "photo"],
         "--class_token_position middle needs at least 2 context tokens, got 1"),
        (["--method", "kgcoop", "--kgcoop_weight", "-1"], "--kgcoop_weight must be a finite number >= 0.*got -1"),
        (["--method", "kgcoop", "--kgcoop_weight", "nan"], "--kgcoop_weight must be a finite number >= 0"),
        (["--method", "coop", "--kgcoop_weight", "2"], "pass --method kgcoop"),
        (["--method", "kgcoop", "--kgcoop_weight", "0"], "plain CoOp: pass --method coop"),
        (["--method", "coop", "--class_token_position", "side"], "--class_token_position must be one of"),
        (["--method", "coop", "--class_specific_context"], "cannot score the new classes.*--protocol all"),
        (["--method", "coop", "--prompt_template", "a {}."], "--prompt_template is the hand-crafted prompt"),
        (["--method", "kgcoop", "--prompt_template", "a photo."], r"\{\}"),
        # refused by the model config itself (CoCoOpConfig), checked before any model is built
        (["--method", "kgcoop", "--n_ctx", "3"], "--n_ctx 3 does not match --ctx_init 'a photo of a'"),
    ],
)  # fmt: skip
def test_bad_flags_exit_2_with_error_before_any_model(tmp_path, capsys, nothing_built, extra, message):
    output_dir = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        cli.run_script(lambda: main(argv(output_dir, *extra)))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ")
    assert re.search(message, error), error
    assert not output_dir.exists() or not any(output_dir.iterdir())


def test_zero_shot_refuses_prompt_options(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run_script(lambda: main(argv(tmp_path, "--method", "zeroshot", "--class_token_position", "front")))
    assert exit_info.value.code == 2 and "--method zeroshot scores the plain backbone" in capsys.readouterr().err


def test_saved_model_refuses_other_options(kgcoop_run, tmp_path, capsys):
    output_dir, _, _ = kgcoop_run
    args = argv(tmp_path / "eval", "--model_name_or_path", str(output_dir), "--kgcoop_weight", "1", train=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.run_script(lambda: main(args))
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "was saved with {'kgcoop_weight': 8.0}" in error
    assert "{'kgcoop_weight': 1.0}" in error
    assert not (tmp_path / "eval").exists()  # refused from the saved config.json, before the output folder


# ------------------------------------------------------------------------------------------- recipes and reports


def test_recipes_of_the_family():
    def parse(name):
        return run_cocoop.parse_args([str(CONFIGS / name), "--output_dir", "o", "--train_file", "x.parquet"])

    model_args, data_args, training_args, _ = parse("kgcoop_vit_b16_ep100_ctxv1.yaml")
    assert model_args.method == "kgcoop" and model_args.ctx_init == "a photo of a" and model_args.n_ctx == 4
    assert model_args.method_config() == {
        "conditional": False,
        "class_token_position": "end",
        "class_specific_context": False,
        "kgcoop_weight": 8.0,
    }
    assert (training_args.num_train_epochs, training_args.per_device_train_batch_size) == (100, 128)
    assert (training_args.learning_rate, data_args.protocol, data_args.num_shots) == (0.002, "base_to_new", 16)

    model_args, data_args, training_args, _ = parse("coop_vit_b16_16shots_nctx16_cscTrue_ctpend.yaml")
    assert model_args.method_config()["class_specific_context"] is True and model_args.ctx_init is None
    assert (model_args.n_ctx, data_args.protocol, training_args.num_train_epochs) == (16, "all", 200)

    model_args, data_args, _, _ = parse("coop_vit_b16_16shots_nctx16_cscFalse_ctpmiddle.yaml")
    assert model_args.method_config()["class_token_position"] == "middle" and model_args.n_ctx == 16
    assert data_args.protocol == "all"


def test_report_keeps_variants_apart(tmp_path):
    """Runs of CoOp with and without CSC are two rows, each labelled with its options."""

    def run(seed, csc, accuracy):
        options = {"conditional": False, "n_ctx": 4, "class_token_position": "end", "class_specific_context": csc,
                   "kgcoop_weight": 0.0}  # fmt: skip
        return {"dataset": "d", "method": "coop", "seed": seed, "method_options": options,
                "metrics": {"all": {"accuracy": accuracy}}}  # fmt: skip

    runs = [run(1, False, 50.0), run(2, False, 60.0), run(1, True, 70.0)]
    rows = aggregate(runs)
    assert [(row["method"], row["label"], row["scores"]["all"]["mean"]) for row in rows] == [
        ("coop", "coop", 55.0),
        ("coop", "coop (CSC)", 70.0),
    ]
    write_report(tmp_path, runs)
    table = (tmp_path / "results.md").read_text()
    assert "| d | coop | 1, 2 | 55.00 ± 7.07 |" in table and "| d | coop (CSC) | 1 | 70.00 |" in table
    assert "- coop (CSC): 4 context tokens, one context per class (CSC)" in table
    assert method_label({"method": "kgcoop", "method_options": {"kgcoop_weight": 8.0}}) == "kgcoop"
    assert method_label({"method": "kgcoop", "method_options": {"kgcoop_weight": 4.0}}) == "kgcoop (w=4)"
    assert method_label({"method": "coop"}) == "coop"  # results written before the options were recorded


# ------------------------------------------------------------------------------------------- benchmark grid

# A published recipe shrunk to seconds: the tiny random CLIP, 1 shot, 1 epoch, batch 2, fp32 on the CPU.
SHRUNK = [
    "--clip_model_name_or_path", str(TINY_CLIP), "--random_init_clip", "true",
    "--num_train_epochs", "1", "--num_shots", "1", "--per_device_train_batch_size", "2",
    "--per_device_eval_batch_size", "4", "--use_cpu", "true", "--fp16", "false", "--dataloader_num_workers", "0",
    "--disable_tqdm", "true",
]  # fmt: skip


def test_kgcoop_in_the_grid_with_the_papers_average(tmp_path):
    """run_cocoop itself runs the KgCoOp cell on a miniature EuroSAT; Table 1 shows the KgCoOp paper's average."""
    from .test_benchmark_runs import make_eurosat

    assert run_benchmark.recipe_for("kgcoop", "ImageNet").name == "kgcoop_vit_b16_ep100_ctxv1.yaml"
    default_methods = run_benchmark.parse_args(
        ["--benchmark", "eurosat", "--data_root", "d", "--output_dir", "o"]
    ).method
    # Table 1 of the newer papers: the four of the CoCoOp / KgCoOp papers, then IVLP, MaPLe and PromptSRC.
    assert default_methods == ["zeroshot", "coop", "cocoop", "kgcoop", "ivlp", "maple", "promptsrc"]
    make_eurosat(tmp_path / "data")
    argv = ["--benchmark", "eurosat", "--data_root", str(tmp_path / "data"), "--output_dir", str(tmp_path / "grid"),
            "--method", "kgcoop", "--seeds", "1", "--", *SHRUNK]  # fmt: skip
    table = run_benchmark.main(argv)

    (row,) = table["rows"]
    assert (row["dataset"], row["method"], row["seeds"]) == ("EuroSAT", "kgcoop", [1])
    assert table["paper_average"] == {"kgcoop": {"base": 80.73, "new": 73.60, "H": 77.00}}
    results = json.loads((tmp_path / "grid" / "EuroSAT" / "kgcoop" / "seed1" / "results.json").read_text())
    # the dataset's official KgCoOp template, and the recipe's weight
    options = results["method_options"]
    assert options["kgcoop_template"] == "a centered satellite photo of {}." and options["kgcoop_weight"] == 8.0
    assert "official KgCoOp EuroSAT template" in options["kgcoop_template_source"]
    assert row["base"]["mean"] == results["runs"][0]["metrics"]["base"]["accuracy"]
    markdown = (tmp_path / "grid" / "table1.md").read_text()
    average = table["average"]["kgcoop"]
    assert (
        f"| KgCoOp | 1 | {average['base']:.2f} | {average['new']:.2f} | {average['H']:.2f} | 80.73 | 73.60 | 77.00 |"
        in markdown
    )
    assert "| EuroSAT | KgCoOp | 1 |" in markdown


@pytest.mark.parametrize(
    "recipe, method, tasks, options",
    [
        ("kgcoop_vit_b16_ep100_ctxv1.yaml", "kgcoop", {"base", "new"},
         {"kgcoop_weight": 8.0, "kgcoop_template": "a centered satellite photo of {}.", "n_ctx": 4}),
        ("coop_vit_b16_16shots_nctx16_cscTrue_ctpend.yaml", "coop", {"all"},
         {"class_specific_context": True, "class_token_position": "end", "n_ctx": 16}),
        ("coop_vit_b16_16shots_nctx16_cscFalse_ctpmiddle.yaml", "coop", {"all"},
         {"class_specific_context": False, "class_token_position": "middle", "n_ctx": 16}),
    ],
)  # fmt: skip
def test_family_recipes_run_on_an_official_layout(tmp_path, recipe, method, tasks, options):
    """Each recipe, shrunk (tiny random CLIP, 1 shot, 1 epoch), on a miniature EuroSAT in the official layout."""
    from .test_benchmark_runs import make_eurosat

    make_eurosat(tmp_path / "data")
    layout = ["--benchmark", "eurosat", "--data_root", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out")]
    content = main([str(CONFIGS / recipe), *layout, *SHRUNK])
    run = content["runs"][0]
    assert run["method"] == method and set(run["metrics"]) == tasks
    assert options.items() <= run["method_options"].items()
