"""
The output folder of a script that records what it writes (cocoop_hf/output_records.py): checked before anything is
written to it, its previous outputs deleted only when provably the script's own, marked finished after the last write.
Shared by the training scripts (cocoop_hf_training/outputs.py) and the checkpoint converter (cocoop_hf/convert_official.py).

A later run with --overwrite_output_dir deletes only recorded entries whose content still matches the record. An
entry that is not recorded, or changed since, is the user's: it is kept, and if it has the name of one of the
script's outputs the run is refused naming it, before anything is written: a user's file is never replaced.
"""

import re
from collections.abc import Callable
from pathlib import Path

from transformers.utils import logging

from .output_records import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_STAGING,
    STAGING_PREFIX,
    delete_owned,
    describe,
    load_manifest,
    matches,
    read_json,
    register_outputs,
    save_manifest,
    shown,
)


logger = logging.get_logger(__name__)

# What a refusal of a previous run names first, of its (often thirty) entries: what tells a user which run it was.
_KEY_ENTRIES = (
    re.compile(r"^results\.json$"),
    re.compile(r"^config\.json$"),
    re.compile(r"^checkpoint-\d+$"),
    re.compile(r"^(model|prompt_learner)\.safetensors$"),
)
_KEY_SHOWN = 3


def _entries(folder: Path) -> dict[str, Path]:
    entries = {path.name: path for path in folder.iterdir() if path.name != MANIFEST_NAME}
    # A temporary manifest left by a process killed mid-write (or a user's file of such a name): never deleted, and
    # never in the way (each write creates a new name), so not a reason to refuse the run; named, not ignored.
    leftovers = {name for name in entries if MANIFEST_STAGING.match(name)}
    if leftovers:
        logger.warning("%s holds %s (left by a run killed while writing %s): kept.", folder, shown(leftovers), MANIFEST_NAME)
    return {name: path for name, path in entries.items() if name not in leftovers}


def _empty_staging(folder: Path, entries) -> set:
    """
    Empty `tmp-` folders: left by a run killed right after creating one, before it was recorded (a version that
    recorded it after). Holding nothing, they are removed with rmdir (which never removes anything that went in).
    """
    return {
        name
        for name in entries
        if name.startswith(STAGING_PREFIX)
        and (folder / name).is_dir()
        and not (folder / name).is_symlink()
        and not any((folder / name).iterdir())
    }


def _check_manifest_file(folder: Path) -> None:
    """Refuse a manifest that is a link (never read or replaced through it), a folder, a pipe or a device."""
    path = folder / MANIFEST_NAME
    if path.is_symlink() or (path.exists() and not path.is_file()):
        what = "a symbolic link" if path.is_symlink() else "not a file"
        raise ValueError(
            f"{path} is {what}: this script records its outputs in a file of that name and never reads or replaces "
            "anything else there. Move it away, or choose another --output_dir."
        )
    # Written atomically, a manifest is never half: one that is not a JSON object with a format is someone's file.
    content = read_json(path) if path.exists() else {"format": MANIFEST_FORMAT}
    if not (isinstance(content, dict) and isinstance(content.get("format"), int)):
        raise ValueError(
            f"{path} is not a record of this script (not a JSON object with a \"format\"): it is never replaced. "
            "Move it away, or choose another --output_dir."
        )


def _key_names(owned) -> str:
    """A previous run's entries for a refusal: its key ones (results, config, newest checkpoint), then a count."""

    def newest_first(name):  # checkpoint-20 before checkpoint-5
        number = re.search(r"\d+$", name)
        return (-int(number.group()) if number else 0, name)

    key = []
    for pattern in _KEY_ENTRIES:
        key += sorted((name for name in owned if pattern.match(name)), key=newest_first)[:1]
    key = key[:_KEY_SHOWN] or sorted(owned)[:_KEY_SHOWN]
    more = len(owned) - len(key)
    return ", ".join(key) + (f" and {more} more" if more else "")


def _previous_run(folder: Path, manifest: dict, owned: set, resumable) -> str:
    """
    The refusal of a previous run, advising only what then works: continuing it where `resumable` (the script's own
    finder of what a resume would start from) finds something, replacing it, or another folder.
    """
    finished = manifest.get("complete") is True
    what = "a previous run, finished" if finished else "a previous run, not finished (interrupted, or still running)"
    advice = "pass --overwrite_output_dir to replace it"
    if not finished and resumable is not None:
        start = resumable(folder)
        if start is not None:
            advice += f", --resume_from_checkpoint latest to continue it (from {Path(start).name})"
        else:
            what += ", with no complete checkpoint to continue from"
    return f"--output_dir {folder} holds {what} ({_key_names(owned)}): {advice}, or choose another --output_dir."


def survey_output_dir(
    output_dir,
    overwrite: bool,
    resume: bool,
    outputs: re.Pattern,
    producer: str,
    reading=(),
    resumable: Callable[[Path], str | None] | None = None,
) -> tuple[dict | None, set, set]:
    """
    The checks of `prepare_output_dir`, changing nothing: (manifest or None, names provably the script's, names that
    are not). Raises when the folder is not the script's to write into (see `prepare_output_dir`).
    """
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--output_dir {folder} is a file, not a folder.")
    if not folder.is_dir():
        return None, set(), set()
    register_outputs(producer, outputs, only_if_new=True)  # where the producer's module declared none
    _check_manifest_file(folder)
    manifest = load_manifest(folder)
    if manifest is not None and manifest.get("producer", producer) != producer:
        raise ValueError(
            f"--output_dir {folder} holds the outputs of {manifest['producer']}, not of {producer}: choose another "
            "--output_dir."
        )
    entries = _entries(folder)
    owned = {name for name in entries if manifest is not None and matches(folder, name, manifest)}
    # What the run reads (the checkpoint it resumes from, the targets file a grid put there) is kept as it is: never
    # in the way, never deleted, not a stray file that needs --overwrite_output_dir.
    foreign = set(entries) - owned - set(reading) - _empty_staging(folder, entries)
    in_the_way = {name for name in foreign if outputs.match(name)}
    unreadable = manifest is None and (folder / MANIFEST_NAME).exists()
    why = f" ({MANIFEST_NAME} is damaged or of an older version: it proves nothing)" if unreadable else ""
    copied = {name for name in in_the_way if manifest is not None and name in manifest["staging"]}
    if copied:  # recorded by inode, and the inode changed: the folder was copied (`cp -a`) after a run was killed
        why += (
            f" ({shown(copied)}: left by an interrupted run, in a folder copied since; if you want to resume that "
            "run, delete them and re-run)"
        )
    if in_the_way:  # with or without --overwrite_output_dir
        raise ValueError(
            f"--output_dir {folder} holds {shown(in_the_way)}, of the same name as this script's outputs, not written "
            f"by it (or changed since){why}: they are never replaced. Move them away, or choose another --output_dir."
        )
    if foreign and not overwrite:
        raise ValueError(
            f"--output_dir {folder} holds {len(foreign)} file(s) this script did not write (or that changed since it "
            f"wrote them): {shown(foreign)}. Choose another --output_dir, or pass --overwrite_output_dir to write "
            "into it anyway (they are kept)."
        )
    if owned - set(reading) and not resume and not overwrite:
        raise ValueError(_previous_run(folder, manifest, owned - set(reading), resumable))
    return manifest, owned, foreign


def prepare_output_dir(
    output_dir,
    overwrite: bool,
    resume: bool,
    outputs: re.Pattern,
    producer: str,
    reading=(),
    name_others=True,
    resumable: Callable[[Path], str | None] | None = None,
) -> None:
    """
    Check --output_dir before anything is written to it and start its manifest (call on one process only).

    Refuses a folder holding entries the script cannot prove it wrote (naming them) unless `overwrite`, and always
    when one of them has the name of an output (`outputs`): it would be replaced. Refuses a previous run unless
    resuming or `overwrite`; with `overwrite` (not resuming) deletes the previous run's recorded, unchanged outputs.
    When resuming, the run's recorded entries stay recorded and only its staging leftovers are deleted. `reading`:
    names the run reads (the checkpoint it resumes from): kept, never in the way, even when they are not the run's.
    `name_others`: log the entries that are not the script's (False where they are expected: a grid's cell folders).
    `resumable`: for a script that resumes (--resume_from_checkpoint latest), its finder of the checkpoint a resume of
    the folder would start from (None when there is none): the refusal of a previous run offers a resume only then.
    A script without one is never told to resume.
    """
    folder = Path(output_dir)
    manifest, owned, foreign = survey_output_dir(folder, overwrite, resume, outputs, producer, reading, resumable)
    for name in sorted(_empty_staging(folder, _entries(folder)) - owned) if folder.is_dir() else ():
        try:
            (folder / name).rmdir()  # refuses a folder something went into since: nothing of anyone's is lost
        except OSError:
            pass
    folder.mkdir(parents=True, exist_ok=True)
    kept = {key: {} for key in ("entries", "growing")}
    deleted = 0
    for name in sorted(owned):
        if name in reading or (resume and name not in manifest["staging"]):
            for key in kept:  # recorded as it was: a log folder still growing stays recognised by its inode
                if name in manifest[key]:
                    kept[key][name] = manifest[key][name]
            if name not in manifest["entries"] and name not in manifest["growing"]:  # renamed into place, unsettled
                kept["entries"][name] = describe(folder / name)
            continue
        if resume:
            logger.warning("Deleting %s: left by the interrupted run before it was finished.", name)
        else:
            deleted += 1
        delete_owned(folder, name)
    if deleted:
        logger.warning("--overwrite_output_dir: deleted the %d output(s) of the previous run in %s.", deleted, folder)
    if foreign and name_others:
        logger.warning("--overwrite_output_dir: writing into %s, which also holds %s.", folder, shown(foreign))
    content = {"format": MANIFEST_FORMAT, "producer": producer, "complete": False, "staging": {}, "pending": {}}
    save_manifest(folder, {**content, **kept})


def finish_output_dir(output_dir, also=()) -> list[str]:
    """
    Mark the run finished (call on one process, after the last write), recording `also` (names of entries written by
    code that records nothing itself, e.g. Trainer's log folder) if present; returns the recorded names.
    """
    folder = Path(output_dir)
    manifest = load_manifest(folder)
    if manifest is None:
        raise ValueError(f"{folder / MANIFEST_NAME} is missing or damaged: the run's outputs cannot be recorded.")
    for name in also:  # a name of the script's outputs: a user's entry of that name was refused at the start
        if (folder / name).exists():
            manifest["growing"].pop(name, None)
            manifest["entries"][name] = describe(folder / name)
    manifest["complete"] = True
    save_manifest(folder, manifest)
    return sorted(manifest["entries"])
