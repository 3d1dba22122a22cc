"""
Lean, crash-safe Trainer checkpoints that resume exactly.

Who owns --output_dir (what a run wrote, recorded and hashed, and what it may delete) is cocoop_hf_training/outputs.py: a
checkpoint is recorded there once it is renamed into place.

Checkpoints (`checkpoint-N`): the prompt learner (`prompt_learner.safetensors`), optimizer, scheduler, RNG and trainer
state only (and what a callback's `CheckpointedState` adds: PromptSRC's GPA running sum): the frozen CLIP and the tokenizer are rebuilt by the script, so a checkpoint is ~300 KB at ViT-B/16
instead of ~600 MB. Each is written into `tmp-checkpoint-N`, closed with `checkpoint_complete.json` (every file and
its size, written last) and renamed to `checkpoint-N`: a process killed mid-write leaves only a `tmp-` folder, which
`--resume_from_checkpoint latest` never picks and the next run deletes.

Exact mid-epoch resume: the CoCoOp augmentation (RandomResizedCrop, flip) draws from the global RNG while a batch is
loaded, and accelerate's data loader loads one batch ahead. The RNG state at a mid-epoch save is therefore one batch
too far, and Trainer restores it only after loading the first batches of the resumed run. `RngSnapshotDataset`
records the RNG state before each batch is loaded; a checkpoint stores the state from before the first batch not yet
trained on, and a mid-epoch resume restores it right before that batch is loaded. With `dataloader_num_workers > 0`
the augmentation runs in worker processes whose RNG streams cannot be carried over mid-epoch: resume is then exact
only from checkpoints at epoch ends (`--save_strategy epoch`, the recipe's default).
"""

import json
import os
import random
import re
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from cocoop_hf_training import outputs

# Names other modules imported from here before the output-folder code moved to cocoop_hf_training/outputs.py.
from cocoop_hf_training.outputs import (  # noqa: F401
    MANIFEST_NAME,
    STAGING_PREFIX,
    finish_output_dir,
    prepare_output_dir,
    read_json,
)
from cocoop_hf_training.outputs import fsync as _fsync
from cocoop_hf_training.run_settings import RUN_SETTINGS_KEY, check_resume_settings


logger = logging.get_logger(__name__)

CHECKPOINT_WEIGHTS_NAME = "prompt_learner.safetensors"
COMPLETE_MARKER_NAME = "checkpoint_complete.json"
TRAINER_STATE_NAME = "trainer_state.json"
CHECKPOINT_PATTERN = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_FORMAT = 1


# ---------------------------------------------------------------------------------------------- checkpoints


def checkpoint_problem(path) -> str | None:
    """Why `path` is not a complete checkpoint of this script (None when it is one)."""
    path = Path(path)
    if not path.is_dir():
        return f"{path} is not a folder"
    marker = read_json(path / COMPLETE_MARKER_NAME)
    if not isinstance(marker, dict) or not isinstance(marker.get("files"), dict):
        return f"{path} has no valid {COMPLETE_MARKER_NAME}: its writing did not finish"
    for name, size in marker["files"].items():
        file = path / name
        if not file.is_file() or file.stat().st_size != size:
            return f"{path}/{name} is missing or not of the size recorded in {COMPLETE_MARKER_NAME}"
    return None


def latest_checkpoint(output_dir) -> str | None:
    """The complete `checkpoint-N` of `output_dir` with the highest N (unfinished ones are skipped, with a warning)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = sorted(
        ((int(match.group(1)), path) for path in folder.iterdir() if (match := CHECKPOINT_PATTERN.match(path.name))),
        reverse=True,
    )
    for _, path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        logger.warning("Skipping %s: %s.", path.name, problem)
    return None


def resume_requested(value) -> bool:
    """Whether --resume_from_checkpoint asks for a resume (a path, 'latest' or 'true'; not absent or 'false')."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "none", "no")
    return bool(value)


def resolve_resume_checkpoint(value, output_dir) -> str | None:
    """--resume_from_checkpoint: 'latest' / 'true' = the newest complete checkpoint in --output_dir; else a path."""
    if not resume_requested(value):
        return None
    if value is True or (isinstance(value, str) and value.strip().lower() in ("true", "latest")):
        found = latest_checkpoint(output_dir)
        if found is None:
            raise ValueError(
                f"--resume_from_checkpoint latest: no complete {PREFIX_CHECKPOINT_DIR}-* in {output_dir}: rerun with "
                "--overwrite_output_dir instead of --resume_from_checkpoint (it starts the run again)."
            )
        return found
    problem = checkpoint_problem(value)
    if problem is not None:
        raise ValueError(f"--resume_from_checkpoint {value}: {problem}. Use 'latest' for the newest complete one.")
    return str(value)


def check_checkpoint_settings(checkpoint, settings: dict) -> None:
    """`check_resume_settings` of a checkpoint folder, read from its marker (before anything of the run is written)."""
    check_resume_settings(checkpoint, read_json(Path(checkpoint) / COMPLETE_MARKER_NAME), settings)


def save_prompt_learner(model, folder) -> None:
    """The trainable tensors only: context and meta-net (`prompt_learner.*`), as safetensors."""
    from safetensors.torch import save_file

    tensors = {name: t.detach().contiguous().cpu() for name, t in model.prompt_learner.state_dict().items()}
    save_file(tensors, os.path.join(folder, CHECKPOINT_WEIGHTS_NAME), metadata={"format": "pt"})


def read_checkpoint_tensors(path) -> tuple[dict, dict]:
    """
    The tensors and metadata of a checkpoint's safetensors file. One whose header does not fit its bytes (damaged, or
    edited: a huge shape in a file of the recorded size) is one clear error, not the library's traceback.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            return {name: file.get_tensor(name) for name in file.keys()}, dict(file.metadata() or {})
    except SafetensorError as error:
        raise ValueError(
            f"cannot resume: {path} is not a readable safetensors file ({error}); resume from another checkpoint or "
            "start anew."
        ) from None


def load_prompt_learner(model, folder) -> None:
    path = os.path.join(folder, CHECKPOINT_WEIGHTS_NAME)
    model.load_prompt_learner_state(read_checkpoint_tensors(path)[0], source=path)


def commit_checkpoint(staging: Path, final: Path, metadata: dict) -> None:
    """Close `staging` with its marker (every file and its size, written last) and rename it to `final`."""
    files = {path.name: path.stat().st_size for path in sorted(staging.iterdir()) if path.is_file()}
    for name in files:
        _fsync(staging / name)
    marker = staging / COMPLETE_MARKER_NAME
    marker.write_text(json.dumps({**metadata, "files": files}, indent=1), encoding="utf-8")
    _fsync(marker)
    _fsync(staging)
    # Never over a symlink or a folder the run cannot prove its own (cocoop_hf_training/outputs.py).
    outputs.check_destination(final, "checkpoint")
    if final.exists():  # an earlier checkpoint of the same step (a resume from an older one): replace it
        outputs.delete_owned(final.parent, final.name)
    # Hashed once, now, and recorded before the rename: a later run deletes it only while unchanged.
    outputs.expect(final.parent, {final.name: outputs.describe(staging)})
    os.rename(staging, final)
    _fsync(final.parent)
    outputs.settle(final.parent, [final.name], staged_as=staging.name)


def rotate_checkpoints(run_dir, save_total_limit: int | None, keep=()) -> None:
    """Keep the newest `save_total_limit` checkpoints (and `keep`); older ones are renamed away, then deleted."""
    if not save_total_limit or save_total_limit <= 0:
        return
    folder = Path(run_dir)
    found = sorted(
        (int(match.group(1)), path) for path in folder.iterdir() if (match := CHECKPOINT_PATTERN.match(path.name))
    )
    protected = {Path(p).resolve() for p in keep if p}
    tracked = outputs.load_manifest(folder) is not None
    # In a folder with a manifest, only checkpoints this run recorded and that are unchanged count (and are deleted).
    found = [(step, path) for step, path in found if not tracked or outputs.owns(folder, path.name)]
    surplus = len(found) - max(save_total_limit, 1)
    for _, path in found[:-1]:
        if surplus <= 0:
            break
        if path.resolve() not in protected:
            logger.info("Deleting older checkpoint %s (save_total_limit=%d).", path.name, save_total_limit)
            outputs.delete_owned(folder, path.name)
            surplus -= 1


# ---------------------------------------------------------------------------------------------- RNG at batch loading


def get_rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.random.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.random.set_rng_state_all(state["cuda"])


class RngSnapshotDataset(torch.utils.data.Dataset):
    """
    A map-style dataset as it is, plus the global RNG state recorded right before each batch is loaded (in the main
    process: with worker processes nothing is recorded). `restore_before_next_load`, when set, runs once before the
    next batch is loaded: a mid-epoch resume puts the checkpoint's RNG state back there.
    """

    def __init__(self, dataset, history: int = 8):
        self.dataset = dataset
        self.loads = 0  # batches (or items, without __getitems__) loaded in this process
        self.snapshots = {}  # load number (from 1) -> RNG state before that load
        self.history = history
        self.restore_before_next_load = None

    def __len__(self):
        return len(self.dataset)

    def _before_load(self) -> None:
        if torch.utils.data.get_worker_info() is not None:
            return
        if self.restore_before_next_load is not None:
            restore, self.restore_before_next_load = self.restore_before_next_load, None
            restore()
        self.loads += 1
        self.snapshots[self.loads] = get_rng_state()
        self.snapshots.pop(self.loads - self.history, None)

    def __getitem__(self, index):
        self._before_load()
        return self.dataset[index]

    def __getitems__(self, indices):
        self._before_load()
        if hasattr(self.dataset, "__getitems__"):
            return self.dataset.__getitems__(indices)
        return [self.dataset[index] for index in indices]

    def state_before_load(self, number: int):
        """RNG state recorded before load `number`, or None if that load has not happened (or is too old)."""
        return self.snapshots.get(number)


class CheckpointedState:
    """
    State a resume needs besides the prompt learner's (PromptSRC's GPA running sum, cocoop_hf_training/
    prompt_aggregation.py), kept by a callback of a `LeanCheckpointTrainer`: its files are written into each
    checkpoint's staging folder, so that the checkpoint's marker records them with the others, and read back when a
    run resumes from it (after the prompt learner).
    """

    def save_checkpoint_files(self, folder) -> None:
        raise NotImplementedError

    def load_checkpoint_files(self, folder, model) -> None:
        raise NotImplementedError


class LeanCheckpointTrainer(Trainer):
    """
    Trainer whose checkpoints hold the prompt learner, optimizer, scheduler, RNG and trainer state only, are written
    into a `tmp-` folder renamed when complete, and resume exactly mid-epoch (see the module docstring).

    Mirrors `Trainer._save_checkpoint` of transformers 5.24 for everything but the model weights and the folder.
    """

    # The settings that define the run (cocoop_hf_training/run_settings.py), set by the script: recorded in every checkpoint's
    # marker and compared on resume. None (a Trainer used on its own): nothing recorded, nothing compared.
    run_settings = None

    def __init__(self, *args, train_dataset=None, **kwargs):
        if (
            train_dataset is not None
            and not isinstance(train_dataset, torch.utils.data.IterableDataset)
            and hasattr(train_dataset, "__len__")
        ):
            train_dataset = RngSnapshotDataset(train_dataset)
        super().__init__(*args, train_dataset=train_dataset, **kwargs)
        self._batches_trained = 0
        self._rng_restored_at_load = False

    @property
    def _rng_tracker(self):
        return self.train_dataset if isinstance(self.train_dataset, RngSnapshotDataset) else None

    # ------------------------------------------------------------------ saving

    def training_step(self, model, inputs, num_items_in_batch=None):
        self._batches_trained += 1
        return super().training_step(model, inputs, num_items_in_batch)

    def _save_checkpoint(self, model, trial) -> None:
        if self.hp_search_backend is None and trial is None:
            self.store_flos()
        run_dir = Path(self._get_output_dir(trial=trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging, final = run_dir / f"{STAGING_PREFIX}{name}", run_dir / name
        if self.args.should_save:
            # Recorded before anything goes in: a later run deletes this folder if the run is killed while writing.
            run_dir.mkdir(parents=True, exist_ok=True)
            outputs.make_staging_folder(run_dir, staging.name)
        self.accelerator.wait_for_everyone()  # every process writes its RNG state into the staging folder
        if self.args.should_save:
            save_prompt_learner(self.accelerator.unwrap_model(self.model), staging)
            for state in self._checkpointed_states():
                state.save_checkpoint_files(staging)
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(str(staging))
            self._save_scaler(str(staging))
            self._save_rng_state(str(staging))
        if self.args.should_save:
            for callback in self.callback_handler.callbacks + [self.control]:
                if isinstance(callback, ExportableState):
                    key = callback.__class__.__name__
                    if isinstance(self.state.stateful_callbacks.get(key), list):
                        self.state.stateful_callbacks[key].append(callback.state())
                    else:
                        self.state.stateful_callbacks[key] = callback.state()
            self.state.save_to_json(str(staging / TRAINER_STATE_NAME))
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            model_ = self.accelerator.unwrap_model(self.model)
            metadata = {"format": _FORMAT, "global_step": self.state.global_step}
            if self.run_settings is not None:
                metadata[RUN_SETTINGS_KEY] = self.run_settings
            if getattr(model_, "class_names", None) is not None:
                metadata["class_names"] = list(model_.class_names)
            commit_checkpoint(staging, final, metadata)
            if self.state.best_global_step:
                best = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}"
                if best.exists():
                    self.state.best_model_checkpoint = str(best)
            rotate_checkpoints(run_dir, self.args.save_total_limit, keep=[self.state.best_model_checkpoint])
        self.accelerator.wait_for_everyone()

    def _save_rng_state(self, output_dir: str) -> None:
        # The batch after this step may already be loaded (one ahead): save the RNG state from before its loading.
        tracker = self._rng_tracker
        snapshot = tracker.state_before_load(self._batches_trained + 1) if tracker is not None else None
        if snapshot is None:
            return super()._save_rng_state(output_dir)
        current = get_rng_state()
        set_rng_state(snapshot)
        try:
            super()._save_rng_state(output_dir)
        finally:
            set_rng_state(current)

    # ------------------------------------------------------------------ resuming

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None) -> None:
        problem = checkpoint_problem(resume_from_checkpoint)
        if problem is not None:
            raise ValueError(f"cannot resume: {problem}.")
        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        marker = read_json(Path(resume_from_checkpoint) / COMPLETE_MARKER_NAME)
        if self.run_settings is not None:  # another run's checkpoint would continue silently under this run's labels
            check_resume_settings(resume_from_checkpoint, marker, self.run_settings)
        saved_names = marker.get("class_names")
        if saved_names is not None and getattr(model, "class_names", None) not in (None, saved_names):
            raise ValueError(
                f"cannot resume from {resume_from_checkpoint}: it was trained on the classes {saved_names}, this run "
                f"trains on {model.class_names}. Resume with the same data and protocol."
            )
        load_prompt_learner(model, resume_from_checkpoint)
        for state in self._checkpointed_states():
            state.load_checkpoint_files(resume_from_checkpoint, model)

    def _checkpointed_states(self) -> list[CheckpointedState]:
        return [callback for callback in self.callback_handler.callbacks if isinstance(callback, CheckpointedState)]

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        logger.info("Loading the best prompt learner from %s.", best)
        load_prompt_learner(self.accelerator.unwrap_model(self.model), best)

    def _init_training_state(self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume, trial):
        epochs_trained, steps_in_epoch = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume, trial
        )
        self._rng_restored_at_load = False
        self._batches_trained = 0  # load and step counts restart together: snapshot k belongs to batch k
        tracker = self._rng_tracker
        if tracker is not None:
            tracker.loads, tracker.snapshots = 0, {}
        if resume is not None and steps_in_epoch > 0 and not self.args.ignore_data_skip:
            if tracker is not None and self.args.dataloader_num_workers == 0:
                # Trainer restores the RNG after loading the first batches; put it back before the first instead.
                tracker.restore_before_next_load = lambda: Trainer._load_rng_state(self, resume)
                self._rng_restored_at_load = True
            else:
                logger.warning(
                    "Resuming mid-epoch from %s with dataloader_num_workers=%d: the data augmentation of the rest of "
                    "this epoch differs from an uninterrupted run (worker RNG streams are not checkpointed); "
                    "checkpoints at epoch ends (--save_strategy epoch) resume exactly.",
                    resume,
                    self.args.dataloader_num_workers,
                )
        return epochs_trained, steps_in_epoch

    def _load_rng_state(self, checkpoint) -> None:
        if self._rng_restored_at_load:
            self._rng_restored_at_load = False  # done by the dataset before the first batch was loaded
            return
        super()._load_rng_state(checkpoint)
