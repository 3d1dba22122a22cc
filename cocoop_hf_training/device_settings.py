"""
What this machine can run, checked once per command before anything is built: the data-loader workers capped to the
cores this process may use, and fp16 turned off where the device cannot run it. Each change is said in one warning
(once per process: a grid's cells re-parse the same recipe) and the arguments are changed in place, so that what a
run records (results.json, the run settings of its checkpoints) is what ran.

The official recipes ask for 8 workers and fp16 (Dassl `DATALOADER.NUM_WORKERS: 8`, `PREC: fp16`), written for a
GPU server. On a laptop, workers beyond the cores only wait for a core and cost memory, and fp16 would train in fp32
under an fp16 label: accelerate 1.15 makes no scaler and no autocast for fp16 on CPU (`Accelerator.native_amp` stays
False). Capping the workers is not free in training: each worker draws the augmentation (random crops and flips) from
its own RNG stream (worker i is seeded with a base seed drawn from the run's RNG, plus i; with 0 workers the main
process draws), and which worker loads a batch depends on the count, so a capped run trains on other crops than a run
with the recipe's count under the same seed (the demo, 1 epoch, 0 vs 2 workers: other trained weights). The warning
says so; evaluation draws nothing at random, so there only the speed changes.
"""

import os

from transformers.utils import logging


logger = logging.get_logger(__name__)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one, e.g. under taskset or a container's
    cpuset), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# What a capped worker count changes, said after the numbers.
TRAINING_CONSEQUENCE = (
    "Each worker draws the training augmentation (random crops and flips) from its own RNG stream, so this run's "
    "draws, and its trained weights, differ from a run with {requested} workers under the same seed."
)
EVALUATION_CONSEQUENCE = "Evaluation draws nothing at random: only the speed differs from {requested} workers."


def capped_workers(
    requested: int, flag: str = "--dataloader_num_workers", consequence: str = EVALUATION_CONSEQUENCE
) -> int:
    """`requested` data-loader workers, at most one per usable core (more only wait for a core and cost memory).
    `consequence` says what the cap changes besides the speed (`TRAINING_CONSEQUENCE` for a training run)."""
    cores = usable_cores()
    if requested <= cores:
        return requested
    logger.warning_once(
        "%s %d: this machine has %d usable cores, so %d data-loader workers are used (and recorded in results.json). "
        "%s",
        flag,
        requested,
        cores,
        cores,
        consequence.format(requested=requested),
    )
    return cores


def fp16_runs_on(device_type: str) -> bool:
    """Whether fp16 mixed precision runs on a device: accelerate 1.15 makes no scaler and no autocast on CPU (it
    would train in fp32 under an fp16 label)."""
    return device_type != "cpu"


def warn_fp16_off(flag: str, device_type: str) -> None:
    logger.warning_once(
        "%s: fp16 mixed precision does not run on %s (accelerate would run fp32 under an fp16 label), so this run "
        "uses fp32 and records it; pass --bf16 for half precision on CPU.",
        flag,
        device_type.upper(),
    )


def fit_training_arguments(training_args) -> None:
    """`TrainingArguments` fitted to this machine, in place: workers capped to the cores, fp16 off on CPU, no pinned
    memory on CPU (it only speeds copies to an accelerator; without one torch warns at every DataLoader it builds:
    four lines per epoch in every grid cell)."""
    if training_args.device.type == "cpu":
        training_args.dataloader_pin_memory = False
    training_args.dataloader_num_workers = capped_workers(
        training_args.dataloader_num_workers, consequence=TRAINING_CONSEQUENCE
    )
    # TrainingArguments also takes fp16 from ACCELERATE_MIXED_PRECISION (what `accelerate launch` sets).
    asked = training_args.fp16 or getattr(training_args, "mixed_precision", None) == "fp16"
    if asked and not fp16_runs_on(training_args.device.type):
        warn_fp16_off("--fp16" if training_args.fp16 else "ACCELERATE_MIXED_PRECISION=fp16", training_args.device.type)
        # Trainer builds its Accelerator from `mixed_precision` (set from fp16 in TrainingArguments.__post_init__).
        training_args.fp16 = False
        training_args.mixed_precision = "no"


def fit_mixed_precision(mixed_precision: str, use_cpu: bool) -> str:
    """The --mixed_precision of evaluate_transfer fitted to the device accelerate would pick: 'fp16' becomes 'no' on
    CPU. The device is read from accelerate's `PartialState`, which the Accelerator built after this reuses."""
    if mixed_precision != "fp16":
        return mixed_precision
    from accelerate import PartialState

    device_type = PartialState(cpu=use_cpu).device.type
    if fp16_runs_on(device_type):
        return mixed_precision
    warn_fp16_off("--mixed_precision fp16", device_type)
    return "no"
