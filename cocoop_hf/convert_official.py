"""
Import an official CoOp / CoCoOp prompt-learner checkpoint (Dassl `prompt_learner/model.pth.tar-N`) into
[`CoCoOpModel`], and the command line that writes the result as a model folder. Official IVLP / MaPLe / PromptSRC
checkpoints (the whole CustomCLIP's state dict: `prompt_learner.ctx`, `image_encoder.*`, ...) are told apart by their
keys and imported by `convert_vl_official.py`, through the same entry points.

The checkpoint is read by `official_pickle.load_official_state_dict`, as data: nothing in the file is imported,
called or written, and memory stays bounded by the file's size (see that module). This module only maps the
tensors onto a model: `n_ctx`, `conditional` and `meta_net_reduction` come from their shapes, and the model checks
every name and shape when it loads them. `load_official_state_dict` and `load_official_fewshot_split` stay
importable from here.

Command line:

    python -m cocoop_hf.convert_official --checkpoint output/.../prompt_learner/model.pth.tar-10 \\
        --clip openai/clip-vit-base-patch16 --class_names_file classnames.txt --output_dir my-cocoop [--adapter_only]
"""

import json
import logging as std_logging
import os
import re
import secrets
import shutil
import sys
from pathlib import Path

from transformers.dynamic_module_utils import get_relative_import_files
from transformers.utils import logging

from .convert_arguments import build_parser
from .convert_vl_official import (
    clip_base_config,
    from_official_vl_checkpoint,
    is_official_vl_checkpoint,
    merge_inferred_options,
)
from .modeling_cocoop import CoCoOpModel
from .official_pickle import load_official_fewshot_split, load_official_state_dict
from .output_folder import finish_output_dir, prepare_output_dir, survey_output_dir
from .output_records import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    describe,
    publish_folder,
    register_outputs,
    write_json_atomic,
)


__all__ = [
    "build_parser",
    "check_output_dir",
    "from_official_checkpoint",
    "from_official_vl_checkpoint",
    "infer_config_kwargs",
    "load_official_fewshot_split",
    "load_official_state_dict",
    "main",
    "read_class_names",
    "save_converted",
]

logger = logging.get_logger(__name__)

# Official trainers/cocoop.py PromptLearner: only CoCoOp has a meta-net; CoOp checkpoints hold `ctx` alone.
META_NET_PREFIX = "meta_net."


def infer_config_kwargs(state_dict: dict, source: str = "checkpoint") -> dict:
    """
    `n_ctx`, `conditional`, `meta_net_reduction` and `class_specific_context` as the tensors of an official checkpoint
    imply them: official CoOp trainers/coop.py with `CSC=True` stores `ctx` as (n_cls, n_ctx, width).
    """
    ctx = state_dict["ctx"]
    conditional = any(key.startswith(META_NET_PREFIX) for key in state_dict)
    if ctx.dim() == 3:
        if conditional:
            raise ValueError(
                f"{source}: 'ctx' has shape {tuple(ctx.shape)}, a class-specific context (CoOp CSC), beside a "
                "meta-net: no official trainer writes that combination, so the file is not a CoOp or CoCoOp "
                "checkpoint."
            )
        return {"n_ctx": int(ctx.shape[1]), "conditional": False, "class_specific_context": True}
    if ctx.dim() != 2:
        raise ValueError(
            f"{source}: 'ctx' must be (n_ctx, text width), or (classes, n_ctx, text width) for a class-specific "
            f"context, got shape {tuple(ctx.shape)}."
        )
    kwargs = {"n_ctx": int(ctx.shape[0]), "conditional": conditional, "class_specific_context": False}
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
    method=None,
    **config_kwargs,
):
    """
    Build a [`CoCoOpModel`] (or `model_class`) on `clip_name_or_path` for `class_names` with the context (and, for
    CoCoOp, the meta-net) of an official checkpoint. An official IVLP / MaPLe / PromptSRC checkpoint is imported by
    [`~convert_vl_official.from_official_vl_checkpoint`] (`method`: "ivlp" | "maple" | "promptsrc", needed only where
    its keys cannot tell; refused for a CoOp/CoCoOp file). `n_ctx`, `conditional` (meta-net present or not) and
    `meta_net_reduction` come from the tensors; a value in `config_kwargs` that contradicts them is an error. A CoOp
    checkpoint with a class-specific context (`ctx` of shape (classes, n_ctx, width), official `CSC=True`) becomes a
    model with `class_specific_context=True`: `class_names` must then be the classes it was trained on, in its
    label order (the model refuses any other class set). `class_token_position` is not stored in a checkpoint: pass
    the official run's `CLASS_TOKEN_POSITION` when it was not "end".
    `ctx_init` only fixes the placeholder words of the prompt (the checkpoint's context replaces their embeddings):
    it defaults to "a photo of a" for 4 context tokens and to "X X ... X" otherwise.
    The official code runs on OpenAI's CLIP only: `clip_name_or_path` must be a CLIP checkpoint (`CLIPModel`); another
    backbone (MetaCLIP 2, SigLIP, SigLIP 2) is refused before anything is read or built.
    """
    if is_official_vl_checkpoint(checkpoint_path):
        return from_official_vl_checkpoint(
            checkpoint_path,
            clip_name_or_path,
            class_names,
            method=method,
            revision=revision,
            tokenizer=tokenizer,
            clip_kwargs=clip_kwargs,
            model_class=model_class,
            **config_kwargs,
        )
    if method is not None:
        raise ValueError(
            f"{checkpoint_path}: method={method!r} was passed, but the file is laid out like a CoOp/CoCoOp prompt "
            "learner (no 'prompt_learner.*' keys of an IVLP / MaPLe / PromptSRC CustomCLIP): drop the argument."
        )
    model_class = CoCoOpModel if model_class is None else model_class
    source = str(checkpoint_path)
    clip_base_config(clip_name_or_path, revision, clip_kwargs, methods="CoOp/CoCoOp")  # a CLIP, checked first
    state_dict = load_official_state_dict(checkpoint_path)
    inferred = infer_config_kwargs(state_dict, source=source)
    merge_inferred_options(config_kwargs, inferred, source)
    if inferred["class_specific_context"]:
        class_count = int(state_dict["ctx"].shape[0])
        if isinstance(class_names, (list, tuple)) and len(class_names) != class_count:
            raise ValueError(
                f"{source}: 'ctx' has shape {tuple(state_dict['ctx'].shape)}, a class-specific context (CoOp CSC) for "
                f"{class_count} classes, but {len(class_names)} class names were given: pass the {class_count} "
                "classes it was trained on, in the training label order."
            )
    position = config_kwargs.get("class_token_position", "end")
    if inferred["conditional"] and position != "end":
        # Official trainers/cocoop.py builds "[SOS] ctx {name}." only; CLASS_TOKEN_POSITION is a CoOp option.
        raise ValueError(
            f"{source}: a CoCoOp checkpoint (it has a meta-net) was trained with the class name at the end of the "
            f"prompt (the official CoCoOp trainer has no other position), but class_token_position={position!r} was "
            "passed: drop it."
        )
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
        "CoCoOp"
        if inferred["conditional"]
        else ("CoOp, class-specific context" if inferred["class_specific_context"] else "CoOp"),
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


# ---------------------------------------------------------------------------------------------- command line

# What `save_pretrained` writes in either layout (full or adapter-only). The converter records what it writes in the
# folder's output_manifest.json (cocoop_hf/output_records.py, as the training scripts do): with --overwrite_output_dir
# it replaces the files an earlier conversion recorded there, unchanged, as a whole (no stale weights of the other
# layout stay beside the new ones); a file of such a name it did not write (or that changed since), or a symlink,
# is the user's and refused, never replaced; other files are left alone.
_OWN_FILE_NAMES = {
    "config.json",
    "generation_config.json",
    "prompt_learner.safetensors",
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
}
# The code files a saved folder ships: the modeling file and every sibling it imports (what custom_object_save copies,
# e.g. text_encoder_causal.py), whatever their names; `*_cocoop.py` also covers those of earlier versions.
_MODELING_FILE = sys.modules[CoCoOpModel.__module__].__file__
_OWN_FILE_NAMES |= {Path(path).name for path in [_MODELING_FILE, *get_relative_import_files(_MODELING_FILE)]}
_OWN_FILE_PATTERN = re.compile(
    r"(model|pytorch_model)(-\d{5}-of-\d{5})?\.(safetensors|bin)(\.index\.json)?|[A-Za-z0-9_]+_cocoop\.py"
)
_OUTPUTS = re.compile(
    "^(" + "|".join(re.escape(name) for name in sorted(_OWN_FILE_NAMES)) + f"|{_OWN_FILE_PATTERN.pattern}|tmp-.*)$"
)
_PRODUCER = "convert_official"
register_outputs(_PRODUCER, _OUTPUTS)  # no other name recorded in its manifest is ever its own


def check_output_dir(output_dir, overwrite: bool) -> None:
    """
    Refuse a folder that holds anything, unless `overwrite`; with it, refuse one holding a file of the name of a
    model file that this converter did not write there (or that changed since), or a symlink of such a name. The
    error names what is there. Changes nothing.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"--output_dir {str(output_dir)!r} is a file, not a folder.")
    if not output_dir.exists():
        return
    present = sorted(entry.name for entry in output_dir.iterdir())
    if present and not overwrite:
        shown = ", ".join(present[:10]) + (f" and {len(present) - 10} more" if len(present) > 10 else "")
        raise FileExistsError(
            f"--output_dir {str(output_dir)!r} is not empty ({shown}): choose an empty or new folder, or pass "
            "--overwrite_output_dir to replace the model files an earlier conversion wrote there (other files are "
            "left alone; a file it did not write is never replaced)."
        )
    if present:
        survey_output_dir(output_dir, True, False, _OUTPUTS, _PRODUCER)


def save_converted(model, output_dir, adapter_only: bool = False, overwrite: bool = False) -> None:
    """
    Save `model` into `output_dir` without ever leaving a half-written model: it is written to a temporary sibling
    folder first, with the record of its files (output_manifest.json). A new or empty `output_dir` is then replaced
    by that folder in one rename. A non-empty one is refused unless `overwrite`; with it, the files an earlier
    conversion recorded there and that are unchanged are removed (either layout: no stale weights stay beside the new
    ones) and the new files are moved in; a file of a model file's name the converter did not write is refused, never
    replaced; other files are left alone and logged.
    """
    output_dir = Path(output_dir)
    check_output_dir(output_dir, overwrite)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = output_dir.parent / f".{output_dir.name}.converting-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()  # not tempfile.mkdtemp: its 0o700 mode would become the output folder's
    try:
        model.save_pretrained(staging, adapter_only=adapter_only)
        if output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()
        if not output_dir.exists():
            entries = {entry.name: describe(entry) for entry in staging.iterdir()}
            manifest = {"format": MANIFEST_FORMAT, "producer": _PRODUCER, "complete": True, "entries": entries}
            write_json_atomic(staging / MANIFEST_NAME, {**manifest, "staging": {}, "pending": {}, "growing": {}})
            os.replace(staging, output_dir)  # the files and their record appear together
            return
        _, stale, unknown = survey_output_dir(output_dir, True, False, _OUTPUTS, _PRODUCER)
        # The earlier conversion's files go first: a crash in between leaves a folder that fails to load, never a mix
        # of old and new weights that loads.
        prepare_output_dir(output_dir, True, False, _OUTPUTS, _PRODUCER, name_others=False)
        publish_folder(staging, output_dir)
        finish_output_dir(output_dir)
        if stale:
            logger.info("Replaced in %s: %s.", output_dir, ", ".join(sorted(stale)))
        if unknown:
            logger.warning(
                "%s also holds files the converter did not write; left alone: %s.",
                output_dir,
                ", ".join(sorted(unknown)),
            )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv=None):
    args = build_parser().parse_args(argv)
    std_logging.basicConfig(level=std_logging.INFO, format="%(message)s")  # a script: show this module's progress
    check_output_dir(args.output_dir, args.overwrite_output_dir)  # before the slow part
    config_kwargs = {} if args.ctx_init is None else {"ctx_init": args.ctx_init}
    config_kwargs["class_token_position"] = args.class_token_position
    model = from_official_checkpoint(
        args.checkpoint,
        args.clip,
        read_class_names(args.class_names_file),
        revision=args.revision,
        method=args.method,
        **config_kwargs,
    )
    save_converted(model, args.output_dir, adapter_only=args.adapter_only, overwrite=args.overwrite_output_dir)
    # Where the output is, as the last line (CoCoOpModel.from_pretrained loads the folder).
    kind = "adapter-only" if args.adapter_only else "full"
    logger.info("Saved the %s CoCoOpModel in %s.", kind, Path(args.output_dir).resolve())
    return model


if __name__ == "__main__":
    # The commands' one runner (one-line errors, the offline and Ctrl-C lines), as `cocoop-hf convert` runs it. An
    # absolute import, inside this branch: the library never imports the training package when it is imported, and
    # save_pretrained's code copy (custom_object_save) follows relative imports only.
    from cocoop_hf_training.script_runner import run_script

    run_script(main, "python -m cocoop_hf.convert_official")
