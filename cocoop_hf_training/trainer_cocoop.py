"""The Trainer of the training scripts: the official optimiser (Dassl SGD + its warm-up / cosine schedule) on lean,
crash-safe checkpoints (cocoop_hf_training/checkpoints.py), the regularisers' terms (KgCoOp's, PromptSRC's three)
logged beside the loss, and PromptSRC's Gaussian prompt aggregation (cocoop_hf_training/prompt_aggregation.py) where asked."""

import math

import torch
from transformers.utils import logging

from cocoop_hf_training.checkpoints import LeanCheckpointTrainer
from cocoop_hf_training.run_arguments import RunArguments


logger = logging.get_logger(__name__)

# The unweighted regulariser terms of CoCoOpOutput logged beside the loss: KgCoOp's, and PromptSRC's L1 of the text and
# image features to the frozen CLIP's and KL of the logits to its zero-shot ones (official trainers/promptsrc.py
# `loss_scl_text`, `loss_scl_image`, `L_SCL_logits`, before their weights).
LOGGED_TERMS = ("kgcoop_loss", "promptsrc_text_loss", "promptsrc_image_loss", "promptsrc_logits_loss")


def check_trainable(model) -> list[str]:
    """Only the prompt learner may train (CoCoOpModel freezes CLIP); anything else is a bug worth stopping for."""
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    stray = [name for name in trainable if not name.startswith("prompt_learner.")]
    if stray or not trainable:
        raise RuntimeError(f"expected only prompt_learner.* to be trainable, got {trainable[:10]}")
    return trainable


# ---------------------------------------------------------------------------------------------- optimisation


class DasslCosineSchedule:
    """
    LR factor per optimizer step, constant within an epoch: Dassl's ConstantWarmupScheduler (warmup epochs at
    `warmup_lr`) + CosineAnnealingLR(T_max=max_epoch), so epoch e >= W runs at base * (1 + cos(pi (e - W) / T)) / 2.
    """

    def __init__(self, base_lr: float, max_epoch: int, steps_per_epoch: int, warmup_epochs=1, warmup_lr=1e-5):
        self.base_lr, self.max_epoch, self.steps_per_epoch = base_lr, max_epoch, max(1, steps_per_epoch)
        self.warmup_epochs, self.warmup_lr = warmup_epochs, warmup_lr

    def epoch_lr(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return self.warmup_lr
        return 0.5 * self.base_lr * (1 + math.cos(math.pi * (epoch - self.warmup_epochs) / self.max_epoch))

    def __call__(self, step: int) -> float:
        return self.epoch_lr(step // self.steps_per_epoch) / self.base_lr


class CoCoOpTrainer(LeanCheckpointTrainer):
    """
    Trainer with the official optimiser: SGD (momentum, weight decay on every trainable tensor) + Dassl LR; lean,
    crash-safe checkpoints that resume exactly (cocoop_hf_training/checkpoints.py).
    """

    def __init__(self, *args, run_args: RunArguments | None = None, prompt_aggregation=None, **kwargs):
        self.run_args = run_args or RunArguments()
        super().__init__(*args, **kwargs)
        # CoCoOpModel's loss is the mean cross-entropy of its batch (as Dassl); it takes no num_items_in_batch.
        self.model_accepts_loss_kwargs = False
        self._term_sums, self._term_batches = {}, {}
        # PromptSRC's GPA (a GaussianPromptAggregation callback): the running sum is saved with every checkpoint.
        self.prompt_aggregation = prompt_aggregation
        if prompt_aggregation is not None:
            self.add_callback(prompt_aggregation)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            for name in LOGGED_TERMS:
                term = getattr(outputs, name, None)
                if term is None:
                    continue
                # Kept on the device until the next log: a .item() per step would wait for the device every step.
                term = term.detach().float()
                self._term_sums[name] = self._term_sums[name] + term if name in self._term_sums else term
                self._term_batches[name] = self._term_batches.get(name, 0) + 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs, start_time=None):
        # Beside the training loss, each regulariser's term averaged over the same batches (and processes, as the loss)
        if "loss" in logs and self._term_batches:
            for name, batches in self._term_batches.items():
                mean = (self._term_sums[name] / batches).reshape(1)
                logs[name] = self.accelerator.gather(mean).mean().item()
            self._term_sums, self._term_batches = {}, {}
        super().log(logs, start_time)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            params = [p for _, p in opt_model.named_parameters() if p.requires_grad]
            # Dassl build_optimizer('sgd'): weight decay on all parameters, dampening 0, no Nesterov.
            self.optimizer = torch.optim.SGD(
                params,
                lr=self.args.learning_rate,
                momentum=self.run_args.sgd_momentum,
                weight_decay=self.args.weight_decay,
            )
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.run_args.lr_schedule == "hf":
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            max_epoch = math.ceil(self.args.num_train_epochs)
            schedule = DasslCosineSchedule(
                self.args.learning_rate,
                max_epoch,
                num_training_steps // max_epoch,
                self.run_args.warmup_epochs,
                self.run_args.warmup_lr,
            )
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, schedule)
        return self.lr_scheduler
