"""Two review findings on the training side of IVLP / PromptSRC.

1. `--prompt_depth_vision 0` (the official language-only IVLP recipe, multimodal-prompt-learning
   configs/trainers/IVLP/vit_b16_c2_ep5_batch4_4ctx_language_only.yaml: PROMPT_DEPTH_VISION 0, N_CTX_VISION 0) runs:
   no vision prompt count is filled in; an explicit count with it is refused naming the flag (0 is the official way
   to say "none", and undoes a config file's count).
2. PromptSRC's Gaussian prompt aggregation records N (the epochs its weights are divided over) in each checkpoint, and
   a Trainer resumed with another N is refused: the sum would mix weights of two normalisations (not summing to 1).
"""

import json

import pytest
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import CLIPConfig, TrainerCallback

from cocoop_hf_training.checkpoints import latest_checkpoint
from cocoop_hf_training.model_arguments import ModelArguments
from cocoop_hf_training.modeling_setup import check_method_config
from cocoop_hf_training.outputs import prepare_output_dir
from cocoop_hf_training.prompt_aggregation import STATE_NAME, GaussianPromptAggregation, gpa_weights
from cocoop_hf_training.recipes import CONFIGS
from cocoop_hf_training.run_cocoop import main, parse_args

from .conftest import TINY_CLIP
from .test_benchmark_runs import make_eurosat
from .test_prompt_aggregation import EPOCHS, MEAN, STD, StopAt, toy_trainer
from .test_vl_methods_training import recipe_overrides


# ---------------------------------------------------------------------------------------------- 1. vision depth 0


@pytest.mark.parametrize("method", ["ivlp", "promptsrc"])
@pytest.mark.parametrize("n_ctx_vision", [None, 0])  # not given, or the official language-only N_CTX_VISION 0
def test_vision_depth_0_has_no_vision_prompt_count(method, n_ctx_vision):
    args = ModelArguments(method=method, prompt_depth_vision=0, n_ctx_vision=n_ctx_vision)
    options = args.method_config()
    assert (options["prompt_depth_text"], options["prompt_depth_vision"], options["n_ctx_vision"]) == (9, 0, None)
    assert "n_ctx_vision" not in args.given_method_options()  # 0 with depth 0 is "none", not a count


def test_the_official_language_only_ivlp_config_is_accepted_by_the_model_config():
    # vit_b16_c2_ep5_batch4_4ctx_language_only.yaml: N_CTX_TEXT 4, PROMPT_DEPTH_TEXT 12, PROMPT_DEPTH_VISION 0, on the
    # 12-layer towers of ViT-B/16 (CLIPConfig's defaults; read_backbone=False: no config.json is read).
    args = ModelArguments(method="ivlp", prompt_depth_text=12, prompt_depth_vision=0, n_ctx_vision=0)
    config = check_method_config(args, read_backbone=False)
    assert (config.n_ctx, config.prompt_depth_text, config.prompt_depth_vision) == (4, 12, 0)
    assert config.n_ctx_vision is None and config.method_name == "ivlp"
    assert CLIPConfig().vision_config.num_hidden_layers == 12  # the official tower depth the check ran against


def test_vision_depth_0_is_checked_on_the_backbones_own_config():
    args = ModelArguments(
        method="promptsrc", clip_model_name_or_path=str(TINY_CLIP), prompt_depth_text=2, prompt_depth_vision=0
    )
    config = check_method_config(args)
    assert (config.prompt_depth_text, config.prompt_depth_vision, config.n_ctx_vision) == (2, 0, None)
    assert config.promptsrc_text_weight == 25.0 and config.promptsrc_image_weight == 10.0


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"method": "ivlp", "prompt_depth_vision": 0, "n_ctx_vision": 4},
            r"^--n_ctx_vision 4 with --prompt_depth_vision 0: no layer of the vision tower has prompts",
        ),
        (
            {"method": "promptsrc", "prompt_depth_vision": 0, "n_ctx_vision": 2},
            r"^--n_ctx_vision 2 with --prompt_depth_vision 0: .*Drop --n_ctx_vision",
        ),
        (
            {"method": "ivlp", "prompt_depth_vision": 2, "n_ctx_vision": 0},
            r"^--n_ctx_vision must be a whole number >= 1 \(0 only with --prompt_depth_vision 0",
        ),
        (
            {"method": "ivlp", "n_ctx_vision": 0},  # the published vision depth 9
            r"^--n_ctx_vision must be a whole number >= 1 \(0 only with --prompt_depth_vision 0",
        ),
    ],
)
def test_a_vision_prompt_count_without_vision_prompts_is_refused_naming_the_flag(options, message):
    with pytest.raises(ValueError, match=message) as caught:
        ModelArguments(**options)
    assert "\n" not in str(caught.value)


def test_a_recipes_vision_prompt_count_is_undone_with_0(tmp_path):
    recipe = [str(CONFIGS / "ivlp_vit_b16_c2_ep20_batch4_4+4ctx.yaml"), "--benchmark", "eurosat"]
    recipe += ["--data_root", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--prompt_depth_vision", "0"]
    with pytest.raises(ValueError, match=r"^--n_ctx_vision 4 with --prompt_depth_vision 0: .*pass --n_ctx_vision 0"):
        parse_args(recipe)
    model_args = parse_args([*recipe, "--n_ctx_vision", "0"])[0]
    assert (model_args.method_config()["prompt_depth_vision"], model_args.method_config()["n_ctx_vision"]) == (0, None)


class PromptKeys(TrainerCallback):
    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.keys = sorted(model.prompt_learner.state_dict())


def test_a_language_only_ivlp_run_trains_text_prompts_only(tmp_path):
    """A short run_cocoop run on the miniature EuroSAT (tiny random CLIP: its accuracies are meaningless)."""
    root = tmp_path / "data"
    make_eurosat(root)
    output_dir = tmp_path / "ivlp"
    argv = recipe_overrides(root, output_dir, "language-only", "--method", "ivlp", "--do_train", "--do_eval")
    trained = PromptKeys()
    content = main([*argv, "--prompt_depth_text", "2", "--prompt_depth_vision", "0"], [trained])
    assert content["runs"][0]["method"] == "ivlp"
    assert trained.keys == ["ctx", "text_prompts.0"]  # no vision_prompts.*: the vision tower reads none
    options = content["method_options"]
    assert (options["prompt_depth_text"], options["prompt_depth_vision"], options["n_ctx_vision"]) == (2, 0, None)
    config = json.loads((output_dir / "config.json").read_text())
    assert (config["prompt_depth_vision"], config["n_ctx_vision"]) == (0, None)
    assert content["note"] and "random" in content["note"].lower()


# ---------------------------------------------------------------------------------------------- 2. GPA's N


def saved_metadata(checkpoint) -> dict:
    with safe_open(str(checkpoint / STATE_NAME), framework="pt") as file:
        return file.metadata()


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A toy GPA run of EPOCHS epochs stopped mid-epoch 2: its newest checkpoint holds epoch 1's share."""
    folder = tmp_path_factory.mktemp("gpa-n") / "run"
    prepare_output_dir(folder, overwrite=False, resume=False)
    stopped, _ = toy_trainer(folder, [StopAt(5)])
    stopped.train()
    checkpoint = folder / latest_checkpoint(folder)
    assert checkpoint.name == "checkpoint-4"
    return folder, checkpoint


def test_each_checkpoint_records_the_number_of_epochs_its_weights_are_divided_over(interrupted):
    metadata = saved_metadata(interrupted[1])
    assert (metadata["epochs"], metadata["epochs_added"]) == (str(EPOCHS), "1")


@pytest.mark.parametrize("epochs", [EPOCHS + 1, EPOCHS - 1])
def test_a_trainer_resumed_with_another_number_of_epochs_is_refused(interrupted, epochs, tmp_path):
    # Divided over another N, the weights of epochs 2.. and the restored epoch 1 would not sum to 1.
    assert sum(gpa_weights(MEAN, STD, EPOCHS)[:1] + gpa_weights(MEAN, STD, epochs)[1:]) != pytest.approx(1.0)
    folder = tmp_path / "run"
    prepare_output_dir(folder, overwrite=False, resume=False)
    resumed, gpa = toy_trainer(folder)
    resumed.args.num_train_epochs = epochs
    message = rf"^cannot resume from .*: its prompt aggregation weighs {EPOCHS} epochs .*this run has {epochs};"
    with pytest.raises(ValueError, match=rf"{message} .*Resume with --num_train_epochs {EPOCHS}") as caught:
        resumed.train(resume_from_checkpoint=str(interrupted[1]))
    assert "\n" not in str(caught.value) and str(interrupted[1]) in str(caught.value)
    assert resumed.state.global_step == 4 and gpa.epochs_added == 1  # refused before any step


def test_a_running_sum_without_its_number_of_epochs_is_refused(interrupted, tmp_path):
    # The file as written before N was recorded: the sum cannot be checked against this run's N.
    source = interrupted[1] / STATE_NAME
    with safe_open(str(source), framework="pt") as file:
        tensors = {name: file.get_tensor(name) for name in file.keys()}
        metadata = {key: value for key, value in file.metadata().items() if key != "epochs"}
    save_file(tensors, str(tmp_path / STATE_NAME), metadata)
    trainer, _ = toy_trainer(tmp_path / "unused", aggregation=False)
    with pytest.raises(ValueError, match=r"has no valid record of .*number of epochs \(KeyError: 'epochs'\)"):
        GaussianPromptAggregation(MEAN, STD).load_checkpoint_files(tmp_path, trainer.model)


def test_a_running_sum_of_more_epochs_than_its_n_is_refused(interrupted, tmp_path):
    source = interrupted[1] / STATE_NAME
    with safe_open(str(source), framework="pt") as file:
        tensors = {name: file.get_tensor(name) for name in file.keys()}
        metadata = {**file.metadata(), "epochs_added": str(EPOCHS + 1)}
    save_file(tensors, str(tmp_path / STATE_NAME), metadata)
    trainer, _ = toy_trainer(tmp_path / "unused", aggregation=False)
    with pytest.raises(ValueError, match=rf"says it holds {EPOCHS + 1} of {EPOCHS} epochs"):
        GaussianPromptAggregation(MEAN, STD).load_checkpoint_files(tmp_path, trainer.model)
