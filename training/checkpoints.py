"""
Who owns --output_dir, and lean, crash-safe Trainer checkpoints that resume exactly.

Output folder: the script records in `output_manifest.json` which entries of the folder were there before it started
(the user's) and, once a run is finished, which ones it wrote. A folder holding anything the script did not write is
refused (the files are named) unless --overwrite_output_dir; with the flag, everything an earlier run wrote is deleted
first, so no stale file of that run lies beside the new ones, and the user's own files are left alone (same-named
ones are written over: the flag says so).

Checkpoints (`checkpoint-N`): the prompt learner (`prompt_learner.safetensors`), optimizer, scheduler, RNG and trainer
state only: the frozen CLIP and the tokenizer are rebuilt by the script, so a checkpoint is ~300 KB at ViT-B/16
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
import shutil
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging


logger = logging.get_logger(__name__)

MANIFEST_NAME = "output_manifest.json"
CHECKPOINT_WEIGHTS_NAME = "prompt_learner.safetensors"
COMPLETE_MARKER_NAME = "checkpoint_complete.json"
TRAINER_STATE_NAME = "trainer_state.json"
STAGING_PREFIX = "tmp-"  # never matches Trainer's `checkpoint-*` globs nor the `checkpoint-N` pattern below
CHECKPOINT_PATTERN = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_FORMAT = 1


# ---------------------------------------------------------------------------------------------- small file tools


def _fsync(path) -> None:
    """Flush a file or folder to disk, so that a rename after it never publishes data still in the page cache."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # some file systems do not open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json_atomic(path: Path, content) -> None:
    """Write JSON to `path` through a temporary file and a rename: readers see the old or the new file, never half."""
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(json.dumps(content, indent=1, sort_keys=True), encoding="utf-8")
    _fsync(staging)
    os.replace(staging, path)
    _fsync(path.parent)


def read_json(path: Path):
    """A JSON file's content, or None when it is missing or not valid JSON (a crash mid-write, a user's edit)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _remove(path: Path) -> None:
    """Delete a file or folder; a folder is first renamed so that a crash mid-delete never leaves a partial one."""
    if path.is_dir() and not path.is_symlink():
        doomed = path.with_name(f"{STAGING_PREFIX}deleting-{path.name}")
        if doomed.exists():
            shutil.rmtree(doomed)
        os.rename(path, doomed)
        shutil.rmtree(doomed)
    else:
        path.unlink()


# ---------------------------------------------------------------------------------------------- the output folder


def _signature(path: Path) -> list:
    """What tells a user's entry from one this script replaced: inode for folders, inode + size + mtime for files."""
    stat = path.lstat()
    if path.is_dir() and not path.is_symlink():
        return ["dir", stat.st_ino]
    return ["file", stat.st_ino, stat.st_size, stat.st_mtime_ns]


def _entries(folder: Path) -> dict[str, Path]:
    return {
        path.name: path
        for path in folder.iterdir()
        if path.name != MANIFEST_NAME and path.name != MANIFEST_NAME + ".tmp"
    }


def _owned_entries(folder: Path, entries: dict[str, Path]) -> set[str]:
    """Names in `folder` written by this script, as `output_manifest.json` records them (none without a manifest)."""
    manifest = read_json(folder / MANIFEST_NAME)
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        return set()
    if manifest.get("complete"):
        return set(manifest.get("written", [])) & set(entries)
    # A run that did not finish: everything but what was there before it started, unchanged.
    before = manifest.get("preexisting", {})
    return {name for name, path in entries.items() if before.get(name) != _signature(path)}


def _shown(names, limit=8) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def prepare_output_dir(output_dir, overwrite: bool, resume: bool) -> None:
    """
    Check --output_dir before anything is written to it, and record what is in it (call on one process only).

    Refuses a folder holding files this script did not write (naming them) and, unless resuming, a previous run;
    with `overwrite` deletes every output of an earlier run (checkpoints included) and keeps the user's files. When
    resuming, only the unfinished checkpoint folders of the interrupted run are deleted.
    """
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--output_dir {folder} is a file, not a folder.")
    folder.mkdir(parents=True, exist_ok=True)
    entries = _entries(folder)
    owned = _owned_entries(folder, entries)
    foreign = set(entries) - owned
    if foreign and not overwrite:
        raise ValueError(
            f"--output_dir {folder} holds {len(foreign)} file(s) this script did not write: {_shown(foreign)}. "
            "Choose another --output_dir, or pass --overwrite_output_dir to write into it anyway (files of the same "
            "name as the run's outputs, e.g. README.md or results.md, are then replaced; the others are kept)."
        )
    if owned and not resume:
        if not overwrite:
            raise ValueError(
                f"--output_dir {folder} holds a previous run ({_shown(owned)}): pass --overwrite_output_dir to "
                "replace it, --resume_from_checkpoint to continue it, or another --output_dir."
            )
        for name in sorted(owned):
            _remove(entries[name])
        logger.warning(
            "--overwrite_output_dir: deleted the %d output(s) of the previous run in %s.", len(owned), folder
        )
    elif owned:
        for name in sorted(owned):
            if name.startswith(STAGING_PREFIX):
                logger.warning("Deleting %s: a checkpoint the interrupted run did not finish writing.", name)
                _remove(entries[name])
    if foreign:
        logger.warning("--overwrite_output_dir: writing into %s, which also holds %s.", folder, _shown(foreign))
    preexisting = {name: _signature(entries[name]) for name in sorted(foreign)}
    _write_json_atomic(folder / MANIFEST_NAME, {"format": _FORMAT, "complete": False, "preexisting": preexisting})


def finish_output_dir(output_dir) -> list[str]:
    """Record the finished run's outputs in the manifest (call on one process, after the last write); returns them."""
    folder = Path(output_dir)
    entries = _entries(folder)
    written = sorted(_owned_entries(folder, entries))
    _write_json_atomic(folder / MANIFEST_NAME, {"format": _FORMAT, "complete": True, "written": written})
    return written


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
                f"--resume_from_checkpoint latest: no complete {PREFIX_CHECKPOINT_DIR}-* in {output_dir}; start "
                "without --resume_from_checkpoint."
            )
        return found
    problem = checkpoint_problem(value)
    if problem is not None:
        raise ValueError(f"--resume_from_checkpoint {value}: {problem}. Use 'latest' for the newest complete one.")
    return str(value)


def save_prompt_learner(model, folder) -> None:
    """The trainable tensors only: context and meta-net (`prompt_learner.*`), as safetensors."""
    from safetensors.torch import save_file

    tensors = {name: t.detach().contiguous().cpu() for name, t in model.prompt_learner.state_dict().items()}
    save_file(tensors, os.path.join(folder, CHECKPOINT_WEIGHTS_NAME), metadata={"format": "pt"})


def load_prompt_learner(model, folder) -> None:
    from safetensors.torch import load_file

    path = os.path.join(folder, CHECKPOINT_WEIGHTS_NAME)
    model.load_prompt_learner_state(load_file(path), source=path)


def commit_checkpoint(staging: Path, final: Path, metadata: dict) -> None:
    """Close `staging` with its marker (every file and its size, written last) and rename it to `final`."""
    files = {path.name: path.stat().st_size for path in sorted(staging.iterdir()) if path.is_file()}
    for name in files:
        _fsync(staging / name)
    marker = staging / COMPLETE_MARKER_NAME
    marker.write_text(json.dumps({**metadata, "files": files}, indent=1), encoding="utf-8")
    _fsync(marker)
    _fsync(staging)
    if final.exists():  # an earlier checkpoint of the same step (a resume from an older one): replace it
        _remove(final)
    os.rename(staging, final)
    _fsync(final.parent)


def rotate_checkpoints(run_dir, save_total_limit: int | None, keep=()) -> None:
    """Keep the newest `save_total_limit` checkpoints (and `keep`); older ones are renamed away, then deleted."""
    if not save_total_limit or save_total_limit <= 0:
        return
    folder = Path(run_dir)
    found = sorted(
        (int(match.group(1)), path) for path in folder.iterdir() if (match := CHECKPOINT_PATTERN.match(path.name))
    )
    protected = {Path(p).resolve() for p in keep if p}
    surplus = len(found) - max(save_total_limit, 1)
    for _, path in found[:-1]:
        if surplus <= 0:
            break
        if path.resolve() not in protected:
            logger.info("Deleting older checkpoint %s (save_total_limit=%d).", path.name, save_total_limit)
            _remove(path)
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


class LeanCheckpointTrainer(Trainer):
    """
    Trainer whose checkpoints hold the prompt learner, optimizer, scheduler, RNG and trainer state only, are written
    into a `tmp-` folder renamed when complete, and resume exactly mid-epoch (see the module docstring).

    Mirrors `Trainer._save_checkpoint` of transformers 5.24 for everything but the model weights and the folder.
    """

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
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir(parents=True)
        self.accelerator.wait_for_everyone()  # every process writes its RNG state into the staging folder
        if self.args.should_save:
            save_prompt_learner(self.accelerator.unwrap_model(self.model), staging)
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
        saved_names = marker.get("class_names")
        if saved_names is not None and getattr(model, "class_names", None) not in (None, saved_names):
            raise ValueError(
                f"cannot resume from {resume_from_checkpoint}: it was trained on the classes {saved_names}, this run "
                f"trains on {model.class_names}. Resume with the same data and protocol."
            )
        load_prompt_learner(model, resume_from_checkpoint)

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
