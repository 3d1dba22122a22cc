"""
Expected failures of a command that libraries report as OSError or ImportError, each as one line naming the culprit
and the fix (shown by cocoop_hf_training/script_runner.run_script as `error: <line>`): a model id the Hub cannot give
(offline, unreachable, unknown, or a folder that does not exist), a missing `[train]` extra, an output that already
exists. Anything not recognised here returns None and keeps its traceback.
"""

import importlib.util
import os
import sys

from cocoop_hf_training.hub_reachability import UNREACHABLE_MARKER


# The `[train]` extra of pyproject.toml, by import name (what ModuleNotFoundError.name says) -> distribution name.
TRAIN_EXTRA_MODULES = {
    "datasets": "datasets",
    "accelerate": "accelerate",
    "evaluate": "evaluate",
    "torchvision": "torchvision",
    "matplotlib": "matplotlib",
    "yaml": "pyyaml",
    "tqdm": "tqdm",
}
# transformers' own check that Trainer / TrainingArguments can run (transformers.training_args): an ImportError
# that asks for `transformers[torch]` when accelerate is missing or too old.
_TRANSFORMERS_ACCELERATE_HINT = "transformers[torch]"

# Functions of transformers / huggingface_hub that fetch a model's files, and the argument naming the model: the
# innermost one in the traceback names what could not be loaded (their messages do not always name it).
_LOADERS = {
    "cached_files": "path_or_repo_id",
    "hf_hub_download": "repo_id",
    "snapshot_download": "repo_id",
    "get_config_dict": "pretrained_model_name_or_path",
    "from_pretrained": "pretrained_model_name_or_path",
    "dataset_module_factory": "path",  # datasets.load_dataset
}
_OFFLINE_FIX = (
    "give a local folder instead, or connect to the internet (and unset HF_HUB_OFFLINE, or set HF_HUB_OFFLINE=0) so "
    "that it can be downloaded once"
)


def _causes(error: BaseException):
    """`error` and the exceptions it was raised from or while handling, outermost first."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def loaded_id(error: BaseException) -> str | None:
    """The model id or path the innermost Hub loader in `error`'s traceback was asked for (None if none ran)."""
    found = None
    for cause in _causes(error):
        traceback = cause.__traceback__
        while traceback is not None:
            argument = _LOADERS.get(traceback.tb_frame.f_code.co_name)
            if argument is not None:
                value = traceback.tb_frame.f_locals.get(argument)
                if isinstance(value, (str, os.PathLike)):
                    found = os.fspath(value)
            traceback = traceback.tb_next
        if found is not None:
            return found
    return None


def raising_frame(error: BaseException):
    """The innermost frame of `error`'s traceback: where it was raised (None without a traceback)."""
    traceback = error.__traceback__
    if traceback is None:
        return None
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback.tb_frame


def _raised_by_datasets_hub_lookup(error: BaseException) -> bool:
    """datasets.load_dataset's ConnectionError "Couldn't reach '<id>' on the Hub": offline, or no network."""
    frame = raising_frame(error) if isinstance(error, ConnectionError) else None
    if frame is None:
        return False
    return frame.f_globals.get("__name__") == "datasets.load" and frame.f_code.co_name == "dataset_module_factory"


def _offline_mode() -> bool:
    from huggingface_hub import constants

    datasets_config = sys.modules.get("datasets.config")  # datasets reads HF_HUB_OFFLINE / HF_DATASETS_OFFLINE itself
    return bool(constants.HF_HUB_OFFLINE or getattr(datasets_config, "HF_HUB_OFFLINE", False))


def hub_error_message(error: BaseException) -> str | None:
    """
    One line for a model or dataset that neither a local folder nor the Hub could give: huggingface_hub's
    LocalEntryNotFoundError (not in the local cache, and the Hub offline or unreachable) or OfflineModeIsEnabled
    (datasets asks the Hub even for a cached dataset), RepositoryNotFoundError (no such model on the Hub) or
    HFValidationError (neither an existing folder nor a valid Hub id), alone or wrapped in the OSError transformers or
    the ConnectionError datasets raises from them. None for any other error.
    """
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    causes = list(_causes(error))
    what = loaded_id(error)
    name = repr(what) if what is not None else "a model"
    offline = (LocalEntryNotFoundError, OfflineModeIsEnabled)
    if any(isinstance(cause, offline) for cause in causes) or _raised_by_datasets_hub_lookup(error):
        unreachable_host = os.environ.get(UNREACHABLE_MARKER)  # offline because the command found no route
        if unreachable_host:
            return (
                f"cannot load {name}: the Hugging Face Hub ({unreachable_host}) cannot be reached from here and it is "
                "not in the local Hugging Face cache; give a local folder instead, or connect to the internet so "
                "that it can be downloaded once."
            )
        why = "HF_HUB_OFFLINE is set" if _offline_mode() else "the Hugging Face Hub could not be reached"
        return f"cannot load {name}: {why} and it is not in the local Hugging Face cache; {_OFFLINE_FIX}."
    if any(isinstance(cause, RepositoryNotFoundError) for cause in causes):
        return (
            f"cannot load {name}: it is not a local folder, and the Hugging Face Hub has no model of that id (or it "
            "is private: log in with `hf auth login`). Check the spelling, or give the path of a local folder."
        )
    if any(isinstance(cause, HFValidationError) for cause in causes):
        if what is not None and not os.path.exists(what):
            return f"cannot load {name}: there is no such folder, and it is not a Hub id (namespace/name). Check the path."
        return str(error)  # huggingface_hub's refusal of an id it was given names that id (a ValueError of a library)
    return None


def missing_extra_message(error: ImportError, job: str = "this command") -> str | None:
    """
    One line for an import that fails because the `[train]` extra is not installed: a ModuleNotFoundError naming one
    of its modules (also as the cause of transformers' lazy-import error, whose own has no name), or transformers'
    request for `transformers[torch]` (accelerate missing or too old). None for other errors.
    """
    for cause in _causes(error):
        top = (cause.name or "").split(".")[0] if isinstance(cause, ModuleNotFoundError) else ""
        # `datasets.x` missing while `datasets` is installed is a wrong version or a broken install, not the extra.
        if top in TRAIN_EXTRA_MODULES and (cause.name == top or importlib.util.find_spec(top) is None):
            missing = TRAIN_EXTRA_MODULES[top]
            break
        if (
            isinstance(cause, ImportError)
            and _TRANSFORMERS_ACCELERATE_HINT in str(cause)
            and "accelerate" in str(cause)
        ):
            missing = "accelerate"
            break
    else:
        return None
    return f'{job} needs the training extras: pip install "cocoop-hf[train]" (missing: {missing})'


def file_exists_message(error: FileExistsError) -> str:
    """
    One line for an output that already exists: the message of our own refusal (the converter's, a generated split's),
    which names the path and what to do, as it is; an OSError of the system (`[Errno 17] File exists: 'x'`, e.g. a
    leftover temporary folder) rephrased to name the path only, since no flag of ours would replace it.
    """
    if error.filename is None:
        return str(error)
    return f"{error.filename} already exists: move it away (it is never replaced), then run the command again."
