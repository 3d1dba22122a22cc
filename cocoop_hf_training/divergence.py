"""
Training that diverged is refused, never saved or evaluated: a NaN prompt learner evaluates at chance, and a run that
wrote its results, model and card with exit status 0 would pass for a finished one. Two checks: the prompt learner
after training (a learning rate too large for the data), and the optimizer state of a checkpoint to resume from (a
run that diverged before it was saved continues NaN).
"""

import math
import os

from cocoop_hf.sharing_cocoop import check_finite_tensors


# transformers' trainer_utils / Trainer name for the optimizer state of a checkpoint.
OPTIMIZER_NAME = "optimizer.pt"
LOWER_LR = "nothing was saved or evaluated; train again with a lower --learning_rate (CoOp/CoCoOp use 0.002)."


def check_trained_prompt_learner(model) -> None:
    """Refuse a prompt learner with NaN or infinite values after training, before anything is saved or evaluated."""
    check_finite_tensors(model.prompt_learner.state_dict(), "training diverged: the trained prompt learner", LOWER_LR)


def check_checkpoint_optimizer(checkpoint) -> None:
    """
    Refuse a checkpoint whose optimizer state (optimizer.pt, written by Trainer) holds a NaN or infinite tensor or
    number (a momentum buffer, a learning rate): resuming from it trains NaN prompts. Read with `weights_only=True`
    (tensors and plain containers only, nothing runs) and memory-mapped; the walk is bounded in depth and in items.
    """
    path = os.path.join(checkpoint, OPTIMIZER_NAME) if checkpoint else None
    if path is None or not os.path.isfile(path):
        return  # no optimizer state: Trainer starts a fresh optimizer, nothing to check
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file: one line naming it
        raise ValueError(
            f"cannot resume: the optimizer state {path} cannot be read ({type(error).__name__})."
        ) from None
    try:
        bad = _first_non_finite(state, "", depth=8, budget=[100_000])
    except ValueError as error:
        raise ValueError(f"cannot resume: the optimizer state {path}: {error}") from None
    if bad is not None:
        raise ValueError(
            f"cannot resume: the optimizer state {path} holds non-finite values at `{bad}` (NaN or infinity): the "
            "run that wrote it diverged. Resume from an earlier checkpoint, or train again with a lower "
            "--learning_rate."
        )


def _first_non_finite(value, where: str, depth: int, budget: list) -> str | None:
    """Where in `value` (nested dicts/lists of tensors and numbers) the first non-finite one is, or None."""
    import torch

    budget[0] -= 1
    if budget[0] < 0 or depth < 0:
        raise ValueError(f"the optimizer state nests too deeply or holds too many items near `{where}`.")
    if isinstance(value, torch.Tensor):
        ok = not value.is_floating_point() or bool(torch.isfinite(value).all())
        return None if ok else where
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        shown = repr(key)[:40]  # a key of a hostile file may be long
        found = _first_non_finite(item, f"{where}[{shown}]" if where else shown, depth - 1, budget)
        if found is not None:
            return found
    return None
