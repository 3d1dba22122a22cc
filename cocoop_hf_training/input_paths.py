"""
Where a relative input path is, and what a run records of it.

A relative path in a config file (or a --targets file) is relative to that file's folder, so that a recipe runs from
any folder, the shipped ones from the installed package too; a relative path given as a flag is relative to the
current folder, as on any command line. After parsing, an input path that names an existing local file or folder is
made absolute, so that what a run records (results.json, the settings a resume compares, the model card) does not
depend on the folder it ran from. Recorded, not resolved: `~` is expanded and `.`/`..` are normalised, but links are
kept (a Hugging Face cache file `snapshots/<sha>/train.parquet` is a link to an extension-less blob, and its name is
what says the file's format).

Outputs (`output_dir`, `logging_dir`, `resume_from_checkpoint`, which lies in an output folder, and `cache_dir`) stay
relative to the current folder, in a config file too: a shipped recipe must never write into the installed package.
"""

import os
from pathlib import Path


# Options that name a local file or folder the run reads.
LOCAL_INPUTS = (
    "train_file",
    "eval_file",
    "class_names_file",
    "split_file",
    "image_root",
    "data_root",
    "fewshot_file",
    "imagenet_classnames",
    "targets",  # evaluate_transfer's --targets file
)
# Options that name a local folder (or file) or else a Hub repo id.
# `backbone` is the other name of clip_model_name_or_path (a config file may use either).
LOCAL_OR_HUB_INPUTS = ("clip_model_name_or_path", "backbone", "model_name_or_path", "dataset_name")


def resolve_file_paths(values: dict, file_path, where: str, known=None) -> dict:
    """
    `values` (option name -> value, read from the file `file_path`) with each relative input path made absolute
    against the file's folder. A Hub-or-local option (`LOCAL_OR_HUB_INPUTS`) is taken as a path where it exists beside
    the file, else kept as given (a Hub id) unless it can only be a path. Refused, in one line naming `where` (e.g.
    "config file x.yaml") and the option: a path that exists only relative to the current folder (a file written
    before paths became relative to it: which one was meant is not guessed), and a Hub-or-local value that can only be
    a path and exists in neither place. `known`: the names the reader takes (others are left to its own check).
    """
    folder = Path(file_path).resolve().parent  # the file's real folder: a link to a recipe reads paths beside it
    resolved = dict(values)
    for name, value in values.items():
        if name not in LOCAL_INPUTS + LOCAL_OR_HUB_INPUTS or (known is not None and name not in known):
            continue
        if not isinstance(value, str) or not value:
            continue
        if value.startswith("~"):
            # `~` is the user's home in a file as on a command line (no shell expands it in a file).
            value = os.path.expanduser(value)
            resolved[name] = value
        if os.path.isabs(value):
            continue
        # os.path.exists, not Path.exists: a name too long for the file system is "not there", not an OSError.
        beside, here = os.path.join(folder, value), os.path.join(os.getcwd(), value)
        if os.path.exists(beside):
            resolved[name] = os.path.abspath(beside)
            continue
        shown = f"`{name}: {_describe(value)}`"
        if os.path.exists(here) and (name in LOCAL_INPUTS or not _can_be_hub_id(value)):
            raise ValueError(
                f"{where}: {shown} names a path relative to the current folder ({here}), but relative paths in a "
                f"file are relative to its folder ({folder}): write it relative to that folder, or absolute."
            )
        if name in LOCAL_INPUTS:
            # Absolute, so that the check that reads it names the very place looked in.
            resolved[name] = os.path.normpath(beside)
        elif not _can_be_hub_id(value):
            raise ValueError(
                f"{where}: {shown} is not a Hub repo id and no such local path exists (looked for "
                f"{_describe(os.path.normpath(beside))}, relative paths in a file being relative to its folder, and "
                f"{_describe(os.path.normpath(here))}): write the path relative to the file's folder, or absolute."
            )
    return resolved


def make_input_paths_absolute(parsed, from_file=()) -> None:
    """
    Each input path of the parsed argument dataclasses that names an existing local file or folder, made absolute
    (in place): the recorded runs and cards then name it whatever the current folder. A Hub id, or a path that does
    not exist (refused by the check that reads it, in its own words), is left as given; `~` is expanded either way.
    `from_file`: the names whose value came from a config file (no flag gave them), left as `resolve_file_paths` made
    them: a Hub id kept there is not rebound to a folder of the same name that happens to be in the current folder.
    """
    for arguments in parsed:
        for name in LOCAL_INPUTS + LOCAL_OR_HUB_INPUTS:
            value = getattr(arguments, name, None)
            if name in from_file or not isinstance(value, str) or not value:
                continue
            setattr(arguments, name, local_path_absolute(value))


def local_path_absolute(value: str) -> str:
    """
    `value` (an input path, or a Hub id, given relative to the current folder) as it is recorded: `~` expanded, and
    absolute where it names an existing local file or folder. Links are not followed: the name is kept (a Hugging Face
    cache file is a link to a blob without an extension).
    """
    expanded = os.path.expanduser(value) if value.startswith("~") else value
    # os.path.exists: False for a name the file system refuses (too long, NUL), which its reader reports.
    return os.path.abspath(expanded) if os.path.exists(expanded) else expanded


def _can_be_hub_id(value: str) -> bool:
    """Whether `value` has the form of a Hub repo id (`name` or `owner/name`); `./x`, `../x`, `a/b/c` do not."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def _describe(value: str) -> str:
    """A value for an error line, bounded (a config file may hold a megabyte-long one)."""
    from cocoop_hf.limits_cocoop import describe_value

    return describe_value(value, 200, typed=False).strip("'\"")
