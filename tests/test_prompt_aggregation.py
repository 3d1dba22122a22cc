"""PromptSRC's Gaussian prompt aggregation (GPA, cocoop_hf_training/prompt_aggregation.py): its weights are the
official formula, the final prompts are the weighted sum of each epoch's, and a run interrupted and resumed from a
checkpoint ends with the prompts of an uninterrupted one (the running sum travels in the checkpoint)."""

import json
import math

import pytest
import torch
from transformers import TrainerCallback, TrainingArguments

from cocoop_hf_training.checkpoints import COMPLETE_MARKER_NAME, latest_checkpoint
from cocoop_hf_training.model_arguments import ModelArguments
from cocoop_hf_training.modeling_setup import build_model
from cocoop_hf_training.outputs import prepare_output_dir
from cocoop_hf_training.prompt_aggregation import STATE_NAME, GaussianPromptAggregation, gpa_weights
from cocoop_hf_training.run_options import RunArguments
from cocoop_hf_training.trainer_cocoop import CoCoOpTrainer

from .conftest import TINY_CLIP


def official_weights(mean, std, epochs):
    """muzairkhattak/PromptSRC trainers/promptsrc.py, written out: gauss(a) for a = 1..N, divided by their sum."""
    gauss = [
        (1 / (std * math.sqrt(2 * math.pi))) * math.exp(-0.5 * ((a - mean) / std) ** 2) for a in range(1, epochs + 1)
    ]
    return [g / sum(gauss) for g in gauss]


@pytest.mark.parametrize(
    "mean, std, epochs", [(15, 1, 20), (6, 10, 20), (15, 1, 1), (15, 1, 3), (2, 1, 3), (1, 0.5, 2)]
)
def test_weights_are_the_official_formula(mean, std, epochs):
    weights = gpa_weights(mean, std, epochs)
    assert len(weights) == epochs
    assert weights == pytest.approx(official_weights(mean, std, epochs), rel=1e-12, abs=0)
    assert sum(weights) == pytest.approx(1.0, abs=1e-12)


def test_the_base_to_new_weights_peak_at_epoch_15():
    weights = gpa_weights(15, 1, 20)
    assert max(range(20), key=weights.__getitem__) == 14  # epoch 15
    assert weights[14] == pytest.approx(0.3989, abs=1e-4) and weights[0] < 1e-40


@pytest.mark.parametrize(
    "mean, std, epochs, message",
    [
        (1000, 0.1, 5, "every one of the 5 epochs rounds to 0"),
        (15, 0, 20, "--gpa_std must be a finite number > 0"),
        (15, -1, 20, "--gpa_std must be a finite number > 0"),
        (float("nan"), 1, 20, "--gpa_mean must be a finite number"),
        (15, 1, 0, "at least one epoch"),
    ],
)
def test_weights_that_cannot_be_are_refused(mean, std, epochs, message):
    with pytest.raises(ValueError, match=message):
        gpa_weights(mean, std, epochs)


# ---------------------------------------------------------------------------------------------- on a toy run

EPOCHS, IMAGES, BATCH = 3, 6, 2  # 3 steps an epoch
MEAN, STD = 2.0, 1.0  # weights ~ (0.27, 0.45, 0.27): the aggregate is far from the last epoch's prompts


class ToyImages(torch.utils.data.Dataset):
    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        self.pixels = torch.randn(IMAGES, 3, 32, 32, generator=generator)
        self.labels = [i % 2 for i in range(IMAGES)]

    def __len__(self):
        return IMAGES

    def __getitem__(self, index):
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}


class EpochStates(TrainerCallback):
    """The prompt learner's parameters at each epoch's end, taken before the aggregation's callback runs."""

    def __init__(self):
        self.states = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if abs(state.epoch - round(state.epoch)) < 1e-9:
            self.states.append({n: p.detach().clone() for n, p in model.prompt_learner.named_parameters()})


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def toy_trainer(output_dir, callbacks=(), aggregation=True):
    model = build_model(
        ModelArguments(clip_model_name_or_path=str(TINY_CLIP), random_init_clip=True, method="coop"), ["a", "b"], 1
    )
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=BATCH,
        num_train_epochs=EPOCHS,
        learning_rate=0.5,  # large steps: the prompts of each epoch differ clearly
        save_strategy="steps",
        save_steps=2,  # checkpoints 2, 4 (mid-epoch 2), 6, 8, 9
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        logging_steps=100,
        remove_unused_columns=False,
        seed=1,
    )
    gpa = GaussianPromptAggregation(MEAN, STD) if aggregation else None
    trainer = CoCoOpTrainer(
        model=model,
        args=args,
        train_dataset=ToyImages(),
        callbacks=list(callbacks),
        run_args=RunArguments(warmup_epochs=0),
        prompt_aggregation=gpa,
    )
    return trainer, gpa


def prompts(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.prompt_learner.named_parameters()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpa") / "run"
    prepare_output_dir(folder, overwrite=False, resume=False)
    states = EpochStates()
    trainer, gpa = toy_trainer(folder, [states])
    trainer.train()
    return folder, states.states, prompts(trainer), gpa


def test_the_final_prompts_are_the_weighted_sum_of_each_epochs(uninterrupted):
    _, states, final, gpa = uninterrupted
    weights = official_weights(MEAN, STD, EPOCHS)
    assert len(states) == EPOCHS and gpa.weights == pytest.approx(weights, rel=1e-12)
    for name, tensor in final.items():
        expected = sum(weight * state[name] for weight, state in zip(weights, states, strict=True))
        torch.testing.assert_close(tensor, expected, rtol=1e-6, atol=1e-7)
        # Not merely the last epoch's prompts (the test could not fail otherwise).
        assert (tensor - states[-1][name]).abs().max() > 1e-3
    record = gpa.record()
    assert (record["mean"], record["std"], record["epochs"], record["applied"]) == (MEAN, STD, EPOCHS, True)
    assert record["weights"] == gpa.weights and record["epochs_aggregated"] == EPOCHS


def test_each_checkpoint_holds_the_running_sum_recorded_with_its_files(uninterrupted):
    folder = uninterrupted[0]
    checkpoint = latest_checkpoint(folder)
    marker = json.loads((folder / checkpoint / COMPLETE_MARKER_NAME).read_text())
    assert STATE_NAME in marker["files"]


def test_a_resumed_run_ends_with_the_prompts_of_an_uninterrupted_one(uninterrupted, tmp_path):
    final = uninterrupted[2]
    folder = tmp_path / "run"
    prepare_output_dir(folder, overwrite=False, resume=False)
    # Interrupted at step 5 (mid-epoch 2): the newest checkpoint is checkpoint-4, after epoch 1's share was added.
    stopped, _ = toy_trainer(folder, [StopAt(5)])
    stopped.train()
    checkpoint = latest_checkpoint(folder)
    assert checkpoint.endswith("checkpoint-4")
    prepare_output_dir(folder, overwrite=False, resume=True)
    resumed, gpa = toy_trainer(folder)
    resumed.train(resume_from_checkpoint=checkpoint)
    assert gpa.applied and gpa.epochs_added == EPOCHS
    for name, tensor in prompts(resumed).items():
        torch.testing.assert_close(tensor, final[name], rtol=1e-5, atol=1e-6)


def test_a_checkpoint_without_the_running_sum_is_refused(tmp_path):
    # Written by a run without the aggregation: resuming it with GPA could not end with the aggregate of all epochs.
    folder = tmp_path / "run"
    prepare_output_dir(folder, overwrite=False, resume=False)
    stopped, _ = toy_trainer(folder, [StopAt(2)], aggregation=False)
    stopped.train()
    resumed, _ = toy_trainer(tmp_path / "other")
    with pytest.raises(ValueError, match=f"has no {STATE_NAME}"):
        resumed._load_from_checkpoint(str(folder / "checkpoint-2"))


def test_a_checkpoint_of_other_gpa_settings_is_refused(uninterrupted):
    folder = uninterrupted[0]
    other = GaussianPromptAggregation(MEAN + 1, STD)
    trainer, _ = toy_trainer(folder / "unused", aggregation=False)
    with pytest.raises(ValueError, match=r"ran with --gpa_mean 2 --gpa_std 1, this run asks for --gpa_mean 3"):
        other.load_checkpoint_files(latest_checkpoint(folder), trainer.model)
