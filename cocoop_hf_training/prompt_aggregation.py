"""
PromptSRC's Gaussian prompt aggregation (GPA; Khattak et al., ICCV 2023, Sec. 3.2.2), as the official
muzairkhattak/PromptSRC trainers/promptsrc.py runs it:

- weights: `gauss(x) = exp(-((x - GPA_MEAN) / GPA_STD)^2 / 2) / (GPA_STD sqrt(2 pi))` for the epochs x = 1..N
  (N = OPTIM.MAX_EPOCH), divided by their sum (`build_model`: `self.gauss`);
- after the last step of epoch e (`forward_backward`, `(self.batch_idx + 1) == self.num_batches`, after the optimizer
  step): running sum += w_e x the weights of that moment (`state_dict_weighting`, `state_dict_add`: previous + new);
- after the last epoch (`self.step_counter == self.model.total_epochs + 1`): the model gets the sum, and is what is
  evaluated and saved.

The official code weighs the whole state dict of the model, frozen CLIP included. The frozen tensors do not change
during training and the weights sum to 1, so their sum is themselves up to rounding (in fp16 there: a rounding of every
frozen weight, which no paper result depends on); only the trainable prompt-learner tensors are aggregated here, and
the frozen backbone stays exactly as loaded.

The running sum is part of the training state: each checkpoint holds it (`gpa_running_sum.safetensors`, with the
number of epochs it holds and the N its weights were divided over), and a resumed run restores it, so that it ends
with the weights of an uninterrupted run. A resume with another N is refused: its sum would mix weights normalised over
two different N, which do not add up to 1. (The official trainer keeps the sum in memory only: its resumed runs
restart it.)
"""

import math
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.utils import logging

from cocoop_hf_training.checkpoints import CheckpointedState, read_checkpoint_tensors
from cocoop_hf_training.run_options import GPA_DEFAULT_MEAN, GPA_DEFAULT_STD


logger = logging.get_logger(__name__)

STATE_NAME = "gpa_running_sum.safetensors"
# A completed epoch: the Trainer sets state.epoch = epoch + (step + 1) / steps_in_epoch, exactly epoch + 1 at its end.
_WHOLE = 1e-9


def gpa_weights(mean: float, std: float, epochs: int) -> list[float]:
    """GPA's weight of each epoch 1..`epochs`: the official formula (see the module docstring), in float64."""
    if not (isinstance(mean, (int, float)) and math.isfinite(mean)):
        raise ValueError(f"--gpa_mean must be a finite number (official GPA_MEAN, e.g. 15), got {mean!r}.")
    if not (isinstance(std, (int, float)) and math.isfinite(std) and std > 0):
        raise ValueError(f"--gpa_std must be a finite number > 0 (official GPA_STD, e.g. 1), got {std!r}.")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"Gaussian prompt aggregation needs at least one epoch, got {epochs!r}.")
    scale = 1 / (std * math.sqrt(2 * math.pi))
    values = [scale * math.exp(-0.5 * ((x - mean) / std) ** 2) for x in range(1, epochs + 1)]
    total = sum(values)
    if not total > 0:
        # The official code would divide by 0 and load NaN prompts.
        raise ValueError(
            f"--gpa_mean {mean:g} --gpa_std {std:g}: the Gaussian weight of every one of the {epochs} epochs rounds "
            "to 0, so the aggregated prompts would be NaN. Put the mean within (or near) the epochs, or widen the std."
        )
    return [value / total for value in values]


def gpa_outside_epochs_note(mean: float, std: float, epochs: int) -> str | None:
    """
    A warning when the Gaussian lies more than 3 std beyond the run's epochs 1..N (the official mean 15 on a 4-epoch
    run: weights ~[0, 0, 1e-5, 0.99999]): the aggregate is then ~one end epoch's prompts, not an average. None when
    the mean is within reach of the epochs.
    """
    if mean > epochs + 3 * std:
        end = f"the last epoch's ({epochs})"
    elif mean < 1 - 3 * std:
        end = "the first epoch's"
    else:
        return None
    return (
        f"--gpa_mean {mean:g} (--gpa_std {std:g}) lies outside the run's {epochs} epochs: the Gaussian prompt "
        f"aggregation is then ~{end} prompts, not an average of several. Set --gpa_mean within the epochs (1 to "
        f"{epochs}; the official base-to-new recipe: 15 of 20 epochs)."
    )


def _unwrapped(model):
    # The callback handler holds the model as the Trainer wraps it (DistributedDataParallel: `.module`).
    while hasattr(model, "module"):
        model = model.module
    return model


def _trainable(model) -> dict[str, torch.nn.Parameter]:
    """The aggregated tensors: the prompt learner's trainable parameters, named as in prompt_learner.state_dict()."""
    return {name: p for name, p in _unwrapped(model).prompt_learner.named_parameters() if p.requires_grad}


class GaussianPromptAggregation(TrainerCallback, CheckpointedState):
    """
    GPA over a Trainer run (a callback of `CoCoOpTrainer`): adds each completed epoch's prompt-learner parameters,
    weighted, to a running sum, and loads the sum into the model at the end of the last epoch. N is the run's number
    of epochs (`TrainerState.num_train_epochs`). A run that stops before its last epoch ends (--max_steps) keeps its
    last prompts, as the official trainer would (it aggregates at the end of the last epoch only), and says so.
    """

    def __init__(self, mean: float = GPA_DEFAULT_MEAN, std: float = GPA_DEFAULT_STD):
        gpa_weights(mean, std, 1)  # the mean and std checked at once
        self.mean, self.std = float(mean), float(std)
        self.weights: list[float] | None = None  # set when training begins (N known)
        self.running_sum: dict[str, torch.Tensor] = {}
        self.epochs_added = 0
        self.applied = False
        # (checkpoint folder, its N) of a restored running sum: compared with this run's N once the Trainer knows it.
        self.restored_from: tuple[str, int] | None = None

    # ------------------------------------------------------------------ training

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        epochs = int(state.num_train_epochs)
        if self.restored_from is not None and self.restored_from[1] != epochs:
            folder, saved = self.restored_from
            raise ValueError(
                f"cannot resume from {folder}: its prompt aggregation weighs {saved} epochs (weights divided over "
                f"{saved}), this run has {epochs}; the sum would mix the two normalisations. Resume with "
                f"--num_train_epochs {saved}, or start anew."
            )
        self.weights = gpa_weights(self.mean, self.std, epochs)
        note = gpa_outside_epochs_note(self.mean, self.std, epochs)
        if note is not None:
            logger.warning(note)
        # Resumed from the checkpoint of the last epoch: its prompt learner is already the aggregate.
        self.applied = self.epochs_added == epochs
        logger.info(
            "Gaussian prompt aggregation (mean %g, std %g) over %d epochs, weights %s.",
            self.mean,
            self.std,
            epochs,
            [f"{weight:.3g}" for weight in self.weights],
        )

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # After the optimizer step of the epoch's last batch, before that step's checkpoint is written (a checkpoint
        # saved then holds this epoch's share; one saved mid-epoch, the shares of the epochs before).
        completed = round(state.epoch)
        if abs(state.epoch - completed) > _WHOLE or completed == 0:
            return
        if completed != self.epochs_added + 1:
            raise RuntimeError(
                f"prompt aggregation: epoch {completed} ended, but the running sum holds {self.epochs_added} epochs."
            )
        weight = self.weights[completed - 1]
        with torch.no_grad():
            for name, param in _trainable(model).items():
                share = param.detach().float() * weight
                # Previous + new, in this order, as the official state_dict_add.
                self.running_sum[name] = self.running_sum[name] + share if name in self.running_sum else share.clone()
        self.epochs_added = completed
        if completed == len(self.weights):
            self.load_into(model)

    def load_into(self, model) -> None:
        """The prompt learner becomes the aggregate (official: `model.load_state_dict(self.previous_model_gpa)`)."""
        with torch.no_grad():
            for name, param in _trainable(model).items():
                param.copy_(self.running_sum[name].to(param.dtype))
        self.applied = True
        logger.info(
            "Gaussian prompt aggregation: the prompts are now the weighted sum of %d epochs.", self.epochs_added
        )

    def on_train_end(self, args, state, control, **kwargs):
        if not self.applied and self.weights is not None:
            logger.warning(
                "Gaussian prompt aggregation not applied: training stopped after %d of %d epochs, and the official "
                "trainer aggregates at the end of the last one; the model keeps its last step's prompts.",
                self.epochs_added,
                len(self.weights),
            )

    def record(self) -> dict:
        """What results.json says of it."""
        return {
            "mean": self.mean,
            "std": self.std,
            "epochs": len(self.weights) if self.weights is not None else None,
            "weights": self.weights,
            "epochs_aggregated": self.epochs_added,
            "applied": self.applied,
            "source": "official PromptSRC trainers/promptsrc.py (GPA over the prompt learner's trainable tensors)",
        }

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint_files(self, folder) -> None:
        from safetensors.torch import save_file

        tensors = {name: tensor.contiguous().cpu() for name, tensor in self.running_sum.items()}
        metadata = {"format": "pt", "epochs_added": str(self.epochs_added), "mean": repr(self.mean)}
        # N: the weights of the sum are divided by the sum over N epochs (written during training: weights are set).
        metadata.update(std=repr(self.std), epochs=str(len(self.weights)))
        save_file(tensors, str(Path(folder) / STATE_NAME), metadata)

    def load_checkpoint_files(self, folder, model) -> None:
        path = Path(folder) / STATE_NAME
        if not path.is_file():
            raise ValueError(
                f"cannot resume from {folder}: it has no {STATE_NAME} (the running sum of PromptSRC's prompt "
                "aggregation), so the resumed run could not end with the aggregate of all its epochs. Start anew."
            )
        tensors, metadata = read_checkpoint_tensors(path)
        try:
            epochs_added = int(metadata["epochs_added"])
            saved = (float(metadata["mean"]), float(metadata["std"]))
            # Refused when missing (a file written before N was recorded): its sum cannot be checked against this
            # run's N, and only this project's own early test runs wrote such files.
            epochs = int(metadata["epochs"])
        except (KeyError, ValueError) as error:
            raise ValueError(
                f"cannot resume: {path} has no valid record of its epochs aggregated, mean, std and number of epochs "
                f"({type(error).__name__}: {error}); start anew."
            ) from None
        if saved != (self.mean, self.std):
            raise ValueError(
                f"cannot resume from {folder}: its prompt aggregation ran with --gpa_mean {saved[0]:g} --gpa_std "
                f"{saved[1]:g}, this run asks for --gpa_mean {self.mean:g} --gpa_std {self.std:g}."
            )
        expected = {name: tuple(param.shape) for name, param in _trainable(model).items()}
        found = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
        if not 0 <= epochs_added <= epochs:
            raise ValueError(f"cannot resume: {path} says it holds {epochs_added} of {epochs} epochs.")
        if (epochs_added > 0 and found != expected) or (epochs_added == 0 and found):
            raise ValueError(
                f"cannot resume: {path} holds {found} after {epochs_added} epochs; this model's prompt learner has "
                f"{expected}."
            )
        for name, tensor in tensors.items():
            if not torch.isfinite(tensor).all():
                raise ValueError(f"cannot resume: {path} holds non-finite values in {name}.")
        self.running_sum, self.epochs_added = {name: tensor.float() for name, tensor in tensors.items()}, epochs_added
        self.restored_from = (str(folder), epochs)
