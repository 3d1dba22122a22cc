"""
Import an official CoOp / CoCoOp prompt-learner checkpoint (Dassl `prompt_learner/model.pth.tar-N`) into
[`CoCoOpModel`].

Dassl writes `{"state_dict", "epoch", "optimizer", "scheduler", "val_result"}`; `"scheduler"` is a pickled torch
`CosineAnnealingLR` object, so `torch.load(weights_only=True)` refuses a real file. Such files are read with a
restricted unpickler instead: it resolves only the globals of torch's weights-only allow-list and replaces every
other global by an inert stand-in that is never imported, called or built. Only `state_dict` is kept.

Command line:

    python -m cocoop_hf.convert_official --checkpoint output/.../prompt_learner/model.pth.tar-10 \
        --clip openai/clip-vit-base-patch16 --class_names_file classnames.txt --output_dir my-cocoop [--adapter_only]
"""

import _compat_pickle
import argparse
import io
import json
import logging as std_logging
import pickle
import types
from pathlib import Path

import torch
from transformers.utils import logging


logger = logging.get_logger(__name__)

# Class-dependent buffers of the official PromptLearner (token embeddings of SOS and of "{name}.[EOS]..."): the
# model rebuilds them from its own class names, so they are not imported.
IGNORED_KEYS = ("token_prefix", "token_suffix")
META_NET_PREFIX = "meta_net."


class _InertGlobal:
    """Stands for a global outside the allow-list: whatever the pickle does with it, nothing runs."""

    qualified_name = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, item):
        pass

    def extend(self, items):
        pass

    def __repr__(self):
        return f"<not loaded: {self.qualified_name}>"


def _allowed_globals() -> dict:
    """The globals `torch.load(weights_only=True)` resolves: torch's built-in allow-list + `add_safe_globals`."""
    from torch import _weights_only_unpickler

    allowed = dict(_weights_only_unpickler._get_allowed_globals())
    for entry in torch.serialization.get_safe_globals():
        if isinstance(entry, tuple):
            allowed[entry[1]] = entry[0]
        else:
            allowed[f"{entry.__module__}.{entry.__qualname__}"] = entry
    return allowed


def _restricted_pickle_module(replaced: set) -> types.SimpleNamespace:
    """A `pickle_module` for `torch.load` whose unpickler never imports a global outside the allow-list."""
    allowed = _allowed_globals()

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            # torch.save writes protocol 2, which spells Python 3 names the Python 2 way (`__builtin__.set`).
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
            qualified_name = f"{module}.{name}"
            if qualified_name in allowed:
                return allowed[qualified_name]
            replaced.add(qualified_name)
            return type(f"Inert[{qualified_name}]", (_InertGlobal,), {"qualified_name": qualified_name})

    def load(file, **kwargs):
        return Unpickler(file, **kwargs).load()

    def loads(data, **kwargs):
        return Unpickler(io.BytesIO(data), **kwargs).load()

    return types.SimpleNamespace(__name__="cocoop_hf_restricted_pickle", Unpickler=Unpickler, load=load, loads=loads)


def load_official_state_dict(checkpoint_path) -> dict[str, torch.Tensor]:
    """
    Read a Dassl checkpoint (or a bare state dict) safely and return its prompt-learner tensors, with
    `token_prefix`/`token_suffix` dropped. Nothing in the file other than tensors is ever constructed.
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"official checkpoint {str(path)!r} does not exist (expected prompt_learner/model.pth.tar-N)."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # A real Dassl file pickles its LR scheduler object; read it with the restricted unpickler instead.
        replaced = set()
        try:
            checkpoint = torch.load(
                path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle_module(replaced)
            )
        except Exception as error:
            raise OSError(f"cannot read official checkpoint {str(path)!r}: {error}") from error
        logger.info("%s: not loaded (non-tensor objects of the training state): %s", path, sorted(replaced))
    except Exception as error:
        raise OSError(f"cannot read official checkpoint {str(path)!r}: {error}") from error

    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        state_dict = checkpoint["state_dict"]
    elif isinstance(checkpoint, dict) and "ctx" in checkpoint:
        state_dict = checkpoint  # a bare prompt-learner state dict
    else:
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(
            f"{str(path)!r} is not a CoOp/CoCoOp prompt-learner checkpoint: expected a dict with 'state_dict' "
            f"(Dassl's model.pth.tar-N) or with 'ctx', found {found}."
        )
    if not isinstance(state_dict, dict):
        raise ValueError(f"{str(path)!r}: 'state_dict' is a {type(state_dict).__name__}, not a dict of tensors.")
    tensors = {}
    for key, value in state_dict.items():
        if key in IGNORED_KEYS:
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{str(path)!r}: state_dict entry {key!r} is {value!r}, not a tensor.")
        tensors[key] = value
    if "ctx" not in tensors:
        raise ValueError(f"{str(path)!r}: the state_dict has no 'ctx' tensor (found {sorted(tensors)}).")
    return tensors


def infer_config_kwargs(state_dict: dict, source: str = "checkpoint") -> dict:
    """`n_ctx`, `conditional` and `meta_net_reduction` as the tensors of an official checkpoint imply them."""
    ctx = state_dict["ctx"]
    if ctx.dim() == 3:
        raise ValueError(
            f"{source}: 'ctx' has shape {tuple(ctx.shape)}, a class-specific context (CoOp CSC=True, one context "
            "per class), which is not supported: CoCoOpModel learns one context shared by all classes."
        )
    if ctx.dim() != 2:
        raise ValueError(f"{source}: 'ctx' must be (n_ctx, text width), got shape {tuple(ctx.shape)}.")
    kwargs = {"n_ctx": int(ctx.shape[0]), "conditional": any(key.startswith(META_NET_PREFIX) for key in state_dict)}
    linear1 = state_dict.get("meta_net.linear1.weight")
    if (
        linear1 is not None
        and linear1.dim() == 2
        and linear1.shape[0] > 0
        and linear1.shape[1] % linear1.shape[0] == 0
    ):
        kwargs["meta_net_reduction"] = int(linear1.shape[1] // linear1.shape[0])
    return kwargs


def from_official_checkpoint(
    checkpoint_path,
    clip_name_or_path,
    class_names,
    revision=None,
    tokenizer=None,
    clip_kwargs=None,
    model_class=None,
    **config_kwargs,
):
    """
    Build a [`CoCoOpModel`] on `clip_name_or_path` for `class_names` with the context (and, for CoCoOp, the
    meta-net) of an official checkpoint. `n_ctx`, `conditional` (meta-net present or not) and
    `meta_net_reduction` come from the tensors; a value in `config_kwargs` that contradicts them is an error.
    `ctx_init` only fixes the placeholder words of the prompt (the checkpoint's context replaces their embeddings):
    it defaults to "a photo of a" for 4 context tokens and to "X X ... X" otherwise.
    """
    if model_class is None:
        from .modeling_cocoop import CoCoOpModel as model_class
    source = str(checkpoint_path)
    state_dict = load_official_state_dict(checkpoint_path)
    inferred = infer_config_kwargs(state_dict, source=source)
    for key, value in inferred.items():
        if key in config_kwargs and config_kwargs[key] != value:
            raise ValueError(
                f"{source}: {key}={config_kwargs[key]!r} was passed, but the checkpoint's tensors imply "
                f"{key}={value!r}: drop the argument or use the matching checkpoint."
            )
        config_kwargs[key] = value
    if "ctx_init" not in config_kwargs:
        config_kwargs["ctx_init"] = "a photo of a" if inferred["n_ctx"] == 4 else None
    model = model_class.from_clip(
        clip_name_or_path,
        class_names,
        revision=revision,
        tokenizer=tokenizer,
        clip_kwargs=clip_kwargs,
        **config_kwargs,
    )
    model.load_prompt_learner_state(state_dict, source=source)
    logger.info(
        "Imported %s (%s, n_ctx=%d) onto %s for %d classes.",
        source,
        "CoCoOp" if inferred["conditional"] else "CoOp",
        inferred["n_ctx"],
        clip_name_or_path,
        len(model.class_names),
    )
    return model


def read_class_names(path) -> list[str]:
    """Class names from a JSON list or a text file with one name per line (blank lines skipped)."""
    text = Path(path).read_text(encoding="utf-8")
    if str(path).endswith(".json"):
        names = json.loads(text)
        if not isinstance(names, list):
            raise ValueError(f"{path}: a JSON class-name file must hold a list of names, got {type(names).__name__}.")
        return names
    return [line.strip() for line in text.splitlines() if line.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cocoop_hf.convert_official",
        description="Convert an official CoOp/CoCoOp (Dassl) prompt-learner checkpoint into a CoCoOpModel folder.",
    )
    parser.add_argument("--checkpoint", required=True, help="Dassl prompt_learner/model.pth.tar-N file.")
    parser.add_argument("--clip", required=True, help="Hub id or local folder of the CLIP it was trained on.")
    parser.add_argument("--revision", default=None, help="Revision (commit) of --clip.")
    parser.add_argument(
        "--class_names_file", required=True, help="Class names: a JSON list, or a text file with one name per line."
    )
    parser.add_argument("--output_dir", required=True, help="Folder to write the CoCoOpModel to.")
    parser.add_argument(
        "--adapter_only", action="store_true", help="Write only config + prompt-learner tensors (names the base CLIP)."
    )
    parser.add_argument(
        "--ctx_init", default=None, help="Placeholder context words (default: see from_official_checkpoint)."
    )
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    std_logging.basicConfig(level=std_logging.INFO, format="%(message)s")  # a script: show this module's progress
    config_kwargs = {} if args.ctx_init is None else {"ctx_init": args.ctx_init}
    model = from_official_checkpoint(
        args.checkpoint, args.clip, read_class_names(args.class_names_file), revision=args.revision, **config_kwargs
    )
    model.save_pretrained(args.output_dir, adapter_only=args.adapter_only)
    logger.info("Saved %s CoCoOpModel to %s.", "adapter-only" if args.adapter_only else "full", args.output_dir)
    return model


if __name__ == "__main__":
    main()
