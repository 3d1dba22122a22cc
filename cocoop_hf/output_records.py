"""
A folder's record of what a script wrote into it (`output_manifest.json`), and the writes that keep it true: the
mechanism shared by the training scripts (cocoop_hf_training/outputs.py) and the checkpoint converter
(cocoop_hf/convert_official.py). Never imported by the model's own files: a saved model folder does not ship it.

`output_manifest.json` lists every entry the script writes, recorded as it is written (the manifest is rewritten
atomically each time): a file with its size and SHA-256, a folder (a checkpoint, a log folder) with each of its files
so. Staging entries (`tmp-...`: a file or checkpoint being written, a folder being deleted) are recorded with their
inode when created, before anything goes in, and so is a folder a library keeps writing into while the script runs
(Trainer's TensorBoard logs: "growing"); an entry's content is recorded as "pending" before it is renamed into place:
a script killed at any point owns exactly what it recorded, and a later run deletes its leftovers and nothing else.
An entry that is not recorded, or changed since, is the user's. Outputs are written as new files renamed into place,
never through a symlink (a symlink where an output goes is refused).

The manifest is a file anyone can edit, so it never proves more than the producer could have written: only names
its producer declares (`register_outputs`) are ever its own, staging names only with `tmp-`; a staging entry is
recorded before it is created (a kill right after leaves it recorded, and an empty one is recognised without its
inode, e.g. after `cp -a`); anything not a regular file, folder or symlink (a pipe) is never opened and never the run's.
"""

import hashlib
import json
import os
import re
import shutil
import stat
from pathlib import Path


MANIFEST_NAME = "output_manifest.json"
STAGING_PREFIX = "tmp-"  # never matches Trainer's `checkpoint-*` globs
MANIFEST_FORMAT = 2
_CHUNK = 1 << 20
# name -> what the manifest records of it: "entries" (name -> content), "staging" and "growing" (name -> inode),
# "pending" (name -> content about to be renamed into place, see `expect`)
_RECORD_KEYS = ("entries", "staging", "pending", "growing")
# producer -> the names it writes (see `register_outputs`): a manifest proves nothing of any other name
_PRODUCER_OUTPUTS: dict[str, re.Pattern] = {}


def register_outputs(producer: str, outputs: re.Pattern, only_if_new: bool = False) -> None:
    """
    Declare the names `producer` writes into its folder (its `tmp-` staging names included). A manifest is a file
    anyone can edit: an entry it records under another name (`notes.txt`) is never the producer's, so never deleted.
    A producer declared by no one owns nothing.
    """
    if not (only_if_new and producer in _PRODUCER_OUTPUTS):
        _PRODUCER_OUTPUTS[producer] = outputs


# ---------------------------------------------------------------------------------------------- small file tools


def fsync(path) -> None:
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


def _write_bytes_atomic(path: Path, data: bytes, staging: Path, created=None) -> None:
    """
    `data` into `path` through the new file `staging` renamed into place: `path` holds the old or the new bytes, never
    half. `created()` runs once `staging` exists, before any byte goes in (to record it).
    """
    made = False
    try:
        with open(staging, "xb") as handle:  # "x": never through an existing file or a link someone left there
            made = True  # from here `staging` is this process's file, and only then may it be deleted
            if created is not None:
                created()
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, path)
    except BaseException as error:
        if made:
            staging.unlink(missing_ok=True)  # never a half-written file left behind
        if isinstance(error, OSError) and error.filename is None:  # write() on a full disk names no file
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    fsync(path.parent)


def write_json_atomic(path: Path, content) -> None:
    """
    Write JSON to `path` (the manifest) through a temporary file and a rename: readers see the old or the new file,
    never half. The temporary file is created new under a name of this process (`manifest_staging_name`), never one
    that is there already (it may be a user's); one left by a process killed mid-write is never deleted.
    """
    path = Path(path)
    if path.is_symlink():
        raise ValueError(f"{path} is a symbolic link: refusing to write through it or replace it; remove it first.")
    if path.exists() and not path.is_file():
        raise ValueError(f"{path} is not a file (a folder, a pipe or a device): refusing to replace it; move it away.")
    data = json.dumps(content, indent=1, sort_keys=True).encode("utf-8")
    for attempt in range(100):  # a name left by a killed process of the same id is skipped, never reused
        staging = path.with_name(manifest_staging_name(path.name, attempt))
        try:
            _write_bytes_atomic(path, data, staging)
            return
        except FileExistsError as error:
            if error.filename is not None and Path(error.filename).name != staging.name:
                raise
    raise ValueError(f"{path.parent} holds 100 leftover files {manifest_staging_name(path.name, 0)}...: move them away.")


def manifest_staging_name(name: str, attempt: int = 0) -> str:
    """The temporary name through which this process writes `name` (the manifest): see `write_json_atomic`."""
    return f"{STAGING_PREFIX}write-{os.getpid()}-{attempt}-{name}"


# a temporary manifest left by a process killed mid-write: never deleted, never in the way (never written again)
MANIFEST_STAGING = re.compile(rf"^{STAGING_PREFIX}write-\d+-\d+-{re.escape(MANIFEST_NAME)}$")


def read_json(path: Path):
    """
    A JSON file's content, or None when it is missing, not a regular file (never read through a link, never a pipe
    that would block) or not valid JSON (a crash mid-write, a user's edit).
    """
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def remove(path: Path) -> None:
    """
    Delete a file or folder the caller proved its own. In a folder with a manifest use `delete_owned`, which also
    records the folder renamed for deletion (`tmp-deleting-...`), so that one left by a kill mid-delete is the run's.
    """
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        doomed = path.with_name(f"{STAGING_PREFIX}deleting-{path.name}")
        if doomed.exists() or doomed.is_symlink():
            raise ValueError(f"{doomed} is in the way of deleting {path}: move it away.")
        os.rename(path, doomed)  # a crash mid-delete never leaves a partial folder under the name
        shutil.rmtree(doomed)
    else:
        path.unlink()


def shown(names, limit=8) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# ---------------------------------------------------------------------------------------------- what is recorded


def _bytes_record(data: bytes) -> list:
    return [len(data), hashlib.sha256(data).hexdigest()]


def _special(path) -> bool:
    """Neither a regular file, a folder nor a symlink (a pipe, a socket, a device): the user's, never opened."""
    mode = os.lstat(path).st_mode
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode))


def _file_record(path: Path) -> list | None:
    """Size and SHA-256 of a regular file; None for anything else (a pipe would block the run forever: not opened)."""
    try:  # O_NONBLOCK: a pipe swapped in after the check is opened without waiting, and refused below
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    digest = hashlib.sha256()
    size = 0
    with open(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return [size, digest.hexdigest()]


def describe(path: Path) -> dict | None:
    """
    What recognises an entry again: size + SHA-256 of a file; of each file of a folder (symlinks as their target).
    None for an entry holding anything else (a pipe, a socket, a device: never opened), which is then never the run's.
    """
    path = Path(path)
    if path.is_symlink():
        return {"kind": "link", "target": os.readlink(path)}
    if _special(path):
        return None
    if path.is_dir():
        files = {}
        for root, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names) + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                item = Path(root) / name
                key = item.relative_to(path).as_posix()
                files[key] = ["link", os.readlink(item)] if item.is_symlink() else _file_record(item)
                if files[key] is None:
                    return None
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        return {"kind": "dir", "files": files}
    content = _file_record(path)
    return None if content is None else {"kind": "file", "record": content}


def _producers_name(name, outputs: re.Pattern | None, staging: bool) -> bool:
    """Whether the producer can write `name` (`outputs`): a plain name; a staging one starts with `tmp-`."""
    plain = isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\0")
    if not plain or outputs is None or not outputs.match(name):
        return False
    return name.startswith(STAGING_PREFIX) or not staging


def load_manifest(folder) -> dict | None:
    """
    The folder's manifest (this format), or None: no manifest, an older format or a damaged one owns nothing. Of its
    records only the names its producer writes (`register_outputs`) are kept: any other name is the user's.
    """
    manifest = read_json(Path(folder) / MANIFEST_NAME)
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return None
    if not all(isinstance(manifest.get(key, {}), dict) for key in _RECORD_KEYS):
        return None
    outputs = _PRODUCER_OUTPUTS.get(manifest.get("producer"))
    for key in _RECORD_KEYS:  # "growing" is absent from manifests written before it existed
        records = manifest.setdefault(key, {})
        staging = key == "staging"
        manifest[key] = {name: value for name, value in records.items() if _producers_name(name, outputs, staging)}
    return manifest


def save_manifest(folder: Path, manifest: dict) -> None:
    write_json_atomic(folder / MANIFEST_NAME, manifest)


def matches(folder: Path, name: str, manifest: dict) -> bool:
    """Whether `folder/name` is provably the run's: recorded, and its content (a staging folder: inode) unchanged."""
    path = folder / name
    if not (path.exists() or path.is_symlink()):
        return False
    if _special(path):  # a pipe, a socket, a device: never made by a run, never opened
        return False
    for key in ("staging", "growing"):  # recognised by the inode, whatever went in since
        if name in manifest[key]:
            if path.is_symlink():
                return False
            # Recorded before it was made (inode None), or copied (`cp -a` gives new inodes): an empty staging entry
            # holds nothing anyone could lose.
            return path.lstat().st_ino == manifest[key][name] or (key == "staging" and _empty(path))
    recorded = [manifest[key][name] for key in ("entries", "pending") if name in manifest[key]]
    content = describe(path)
    return bool(recorded) and content is not None and content in recorded


def _empty(path: Path) -> bool:
    if path.is_dir():
        return not any(path.iterdir())
    return path.is_file() and path.lstat().st_size == 0


def owns(folder, name: str) -> bool:
    """Whether `folder/name` was written by the run recorded in the folder's manifest and is unchanged since."""
    manifest = load_manifest(folder)
    return manifest is not None and matches(Path(folder), name, manifest)


def record(folder, name: str, staged_as: str | None = None) -> None:
    """
    Record `folder/name` (just written) as the run's, with its content, in place of the staging entry `staged_as` it
    was renamed from (one manifest write: never both or neither); no-op in a folder without a manifest.
    """
    folder = Path(folder)
    manifest = load_manifest(folder)
    if manifest is None:
        return
    manifest["staging"].pop(name, None)
    if staged_as is not None:
        manifest["staging"].pop(staged_as, None)
    manifest["entries"][name] = describe(folder / name)
    save_manifest(folder, manifest)


def expect(folder, contents: dict, staging: dict | None = None) -> None:
    """
    Record, before they are renamed into place, the names and contents (`describe`) about to appear, and any staging
    entries (name -> inode) just made, in one manifest write: a kill right after the rename leaves nothing of the
    run unrecorded. Until `settle`, a name matches its earlier content or this one.
    """
    folder = Path(folder)
    manifest = load_manifest(folder)
    if manifest is None:
        return
    manifest["pending"].update(contents)
    manifest["staging"].update(staging or {})
    save_manifest(folder, manifest)


def settle(folder, names, staged_as: str | None = None) -> None:
    """The `expect`ed `names` are in place: recorded as they are; the staging entry `staged_as` is gone."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    if manifest is None:
        return
    for name in names:
        manifest["pending"].pop(name, None)
        manifest["entries"][name] = describe(folder / name)
    if staged_as is not None:
        manifest["staging"].pop(staged_as, None)
    save_manifest(folder, manifest)


def forget(folder, name: str) -> None:
    """Drop `name` from the manifest (the run deleted it)."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    if manifest is None:
        return
    dropped = [manifest[key].pop(name, None) for key in _RECORD_KEYS]
    if any(entry is not None for entry in dropped):
        save_manifest(folder, manifest)


def delete_owned(folder, name: str) -> None:
    """Delete `folder/name` (proved the run's by the caller) and drop it from the manifest, crash-safe (see remove)."""
    folder = Path(folder)
    path = folder / name
    manifest = load_manifest(folder)
    if manifest is not None:
        doomed = f"{STAGING_PREFIX}deleting-{name}"
        if path.is_dir() and not path.is_symlink():
            if (folder / doomed).exists() and owns(folder, doomed):  # left by a kill mid-delete
                remove(folder / doomed)
                manifest = load_manifest(folder)
            manifest["staging"][doomed] = path.lstat().st_ino  # the inode stays with the renamed folder
        manifest["entries"].pop(name, None)
        save_manifest(folder, manifest)
    remove(path)
    forget(folder, name)
    forget(folder, f"{STAGING_PREFIX}deleting-{name}")


def make_staging_folder(folder, name: str) -> Path:
    """
    Create the empty staging folder `folder/name` (a `tmp-` name) and record it before anything goes in. A leftover
    of a killed run of ours is deleted first; an entry of that name the run cannot prove its own is refused.
    """
    folder = Path(folder)
    path = folder / name
    if path.exists() or path.is_symlink():
        if load_manifest(folder) is not None and not owns(folder, name):
            raise ValueError(
                f"{path} is in the way of this run's staging folder and was not made by it: move it away."
            )
        delete_owned(folder, name)
    _record_staging(folder, name, None)  # before it exists: a kill right after mkdir leaves a recorded, empty folder
    path.mkdir(parents=True)  # exclusive: fails if anything appeared there since
    _record_staging(folder, name, path.lstat().st_ino)
    return path


def _record_staging(folder: Path, name: str, inode: int | None) -> None:
    """Record the staging entry `name` by its inode; None: about to be created (see `matches`)."""
    manifest = load_manifest(folder)
    if manifest is not None:
        manifest["staging"][name] = inode
        save_manifest(folder, manifest)


def start_growing_folder(folder, name: str) -> None:
    """
    Create `folder/name` (if missing) and record it by its inode, before a library that records nothing starts
    writing into it (Trainer's TensorBoard logs): a run killed while it grows still owns it. A folder already there
    was checked by the caller (the run's own, kept when resuming, or refused); `finish_output_dir(also=...)`
    (cocoop_hf/output_folder.py) records its files when the run ends.
    """
    folder = Path(folder)
    manifest = load_manifest(folder)
    path = folder / name
    if manifest is None:
        return
    if (path.exists() or path.is_symlink()) and not matches(folder, name, manifest):
        raise ValueError(f"{path} was not made by this run: refusing to write logs into it; move it away.")
    path.mkdir(exist_ok=True)
    if path.is_symlink() or not path.is_dir():
        raise ValueError(f"{path} is not a folder of this run: refusing to write logs into it; move it away.")
    manifest["entries"].pop(name, None)  # a resumed run's logs grow again: recognised by the inode until settled
    manifest["growing"][name] = path.lstat().st_ino
    save_manifest(folder, manifest)


def check_destination(path, what: str = "output") -> None:
    """
    Refuse to write `path` when a symlink is there (writing through it would change a file elsewhere; replacing it
    would drop the user's link), or, in a folder with a manifest, an entry the run cannot prove its own.
    """
    path = Path(path)
    if path.is_symlink():
        raise ValueError(
            f"{path} is a symbolic link where this script writes its {what}: refusing to write through it or "
            "replace it. Remove the link, or choose another --output_dir."
        )
    if path.exists() and load_manifest(path.parent) is not None and not owns(path.parent, path.name):
        raise ValueError(
            f"{path} was not written by this run (or changed since): refusing to replace it. Move it away, or "
            "choose another --output_dir."
        )


def write_output(path, data: bytes | str, what: str = "output") -> None:
    """
    Write `data` to `path` atomically (a new file renamed into place), refusing a symlink or someone else's file at
    `path` (see `check_destination`). In a folder with a manifest the new file is recorded as staging before a byte
    goes in (a kill leaves nothing unaccounted for) and `path` is recorded with its content once in place.
    """
    path = Path(path)
    data = data.encode("utf-8") if isinstance(data, str) else data
    check_destination(path, what)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    if load_manifest(folder) is None:  # no run owns this folder: a staging name of this process alone
        _write_bytes_atomic(path, data, folder / f"{STAGING_PREFIX}write-{os.getpid()}-{path.name}")
        return
    staging = folder / f"{STAGING_PREFIX}write-{path.name}"
    if staging.exists() or staging.is_symlink():
        if not owns(folder, staging.name):
            raise ValueError(f"{staging} is in the way of writing {path} and was not made by this run: move it away.")
        delete_owned(folder, staging.name)
    _record_staging(folder, staging.name, None)  # before it exists: a kill right after creating it leaves it recorded

    def record_staging():
        content = {"kind": "file", "record": _bytes_record(data)}
        expect(folder, {path.name: content}, {staging.name: staging.lstat().st_ino})

    _write_bytes_atomic(path, data, staging, record_staging)
    settle(folder, [path.name], staged_as=staging.name)


def publish_folder(staging: Path, folder) -> list[str]:
    """
    Move every entry of `staging` (a folder made by `make_staging_folder`) into `folder`, recording each. Every
    destination is checked first, so that a refused one leaves the folder as it was (the files stay in `staging`).
    """
    folder = Path(folder)
    names = sorted(path.name for path in staging.iterdir())
    for name in names:
        check_destination(folder / name)
    expect(folder, {name: describe(staging / name) for name in names})  # hashed once, before the moves
    for name in names:
        destination = folder / name
        if destination.is_dir():  # a folder of an earlier, resumed run of ours (os.replace cannot replace a folder)
            delete_owned(folder, name)
        os.replace(staging / name, destination)
    fsync(folder)
    staging.rmdir()
    manifest = load_manifest(folder)
    if manifest is not None:
        for name in names:  # as expected: the moves do not change a byte
            if name in manifest["pending"]:  # not there: a name the producer does not write, never recorded
                manifest["entries"][name] = manifest["pending"].pop(name)
        manifest["staging"].pop(staging.name, None)
        save_manifest(folder, manifest)
    return names
