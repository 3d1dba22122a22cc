"""
What a training script wrote into its --output_dir, recorded and hashed when written, and therefore what it may delete
or replace: nothing else. The mechanism (`output_manifest.json`, writes renamed into place, never through a symlink)
is cocoop_hf/output_records.py and cocoop_hf/output_folder.py, shared with the checkpoint converter; this module adds
what the training scripts write (`RUN_OUTPUTS`), the grid folder's own files (`prepare_grid_folder`), Trainer's
TensorBoard logs (`start_log_folders`) and the check that the output folder is not the one a model is read from.
"""

import os
import re
from pathlib import Path

from transformers.utils import logging

from cocoop_hf.output_folder import finish_output_dir, survey_output_dir  # noqa: F401
from cocoop_hf.output_folder import prepare_output_dir as _prepare_output_dir
from cocoop_hf.output_records import (  # noqa: F401  (the names the training scripts and tests import from here)
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    STAGING_PREFIX,
    check_destination,
    delete_owned,
    describe,
    expect,
    forget,
    fsync,
    load_manifest,
    make_staging_folder,
    owns,
    publish_folder,
    read_json,
    record,
    register_outputs,
    remove,
    save_manifest,
    settle,
    shown,
    start_growing_folder,
    write_json_atomic,
    write_output,
)


logger = logging.get_logger(__name__)

# What run_cocoop.py writes into --output_dir (its own files, the saved model with the code files it loads with, the
# processor with any backbone's tokenizer files, Trainer's checkpoints and logs): a user's entry of such a name is in
# the way of the run and refused, never replaced.
RUN_OUTPUTS = re.compile(
    r"^(README\.md|results\.(json|md|png)|fewshot_indices\.json|config\.json|.*\.safetensors(\.index\.json)?|"
    r"[a-z_]+_cocoop\.py|text_encoder_[a-z]+\.py|prompt_learner_[a-z]+\.py|vision_encoder_[a-z]+\.py|(pre)?processor_config\.json|tokenizer.*|special_tokens_map\.json|"
    r"vocab\.json|merges\.txt|sentencepiece\.bpe\.model|spiece\.model|added_tokens\.json|chat_template\..*|"
    r"generation_config\.json|training_args\.bin|checkpoint-\d+|runs|tmp-.*)$"
)
# Entries a finished run of run_cocoop.py or a grid leaves: a folder holding one is a run's (report.py refuses it).
RUN_MARKERS = re.compile(
    r"^(results\.json|fewshot_indices\.json|model\.safetensors|prompt_learner\.safetensors|checkpoint-\d+|"
    r"grid_cells\.json|table1\.json|transfer\.json)$"
)

# What a grid (run_benchmark.py, run_transfer_benchmark.py) writes at the top of its folder. Its cells' folders are
# run_cocoop / evaluate_transfer output folders with manifests of their own: the grid never records them.
GRID_OUTPUTS = re.compile(r"^(grid_cells\.json|table1\.(json|md|png)|transfer\.(json|md|png)|tmp-.*)$")
GRID_PRODUCER = "grid"
# Only these names are ever the scripts' own, whatever a (hand-edited) manifest records (see register_outputs).
register_outputs("run_cocoop", RUN_OUTPUTS)
register_outputs(GRID_PRODUCER, GRID_OUTPUTS)


def prepare_output_dir(
    output_dir,
    overwrite: bool,
    resume: bool,
    outputs: re.Pattern = RUN_OUTPUTS,
    producer="run_cocoop",
    reading=(),
    name_others=True,
    resumable=None,
) -> None:
    """cocoop_hf.output_folder.prepare_output_dir, for run_cocoop.py's outputs unless told otherwise; `resumable`
    (output_dir -> the checkpoint a resume would continue from, or None) lets a refusal offer the resume."""
    _prepare_output_dir(output_dir, overwrite, resume, outputs, producer, reading, name_others, resumable)


def check_separate_folders(output_dir, sources: dict) -> None:
    """
    Refuse an --output_dir that is, contains or lies inside a folder the run reads a model or checkpoint from
    (`sources`: flag -> path; Hub ids and missing paths are skipped): preparing the output folder could delete it,
    and writing the outputs would mix them with it. Called before anything is written.
    """
    output = Path(output_dir).resolve()
    for flag, source in sources.items():
        if not source or not os.path.exists(source):
            continue
        read_from = Path(source).resolve()
        if read_from.is_file():
            read_from = read_from.parent
        if output == read_from or read_from in output.parents or output in read_from.parents:
            relation = "is" if output == read_from else "lies inside" if read_from in output.parents else "contains"
            raise ValueError(
                f"--output_dir {output_dir} {relation} the folder {flag} {source} is read from: the run would write "
                "over (or delete) what it loads. Choose an --output_dir outside it."
            )


# ---------------------------------------------------------------------------------------------- a grid's folder


def check_grid_folder(output_dir) -> None:
    """
    Refuse a grid folder where the grid's own files (grid_cells.json, the tables) could not be told from a user's
    files of the same name, changing nothing: one the grid did not record (or that changed since), or a grid folder
    written before the grid recorded its files. Other entries (the cells' folders, the user's notes) are left alone.
    """
    folder = Path(output_dir)
    if folder.is_dir() and not (folder / MANIFEST_NAME).exists():
        older = sorted(path.name for path in folder.iterdir() if GRID_OUTPUTS.match(path.name))
        if older:
            raise ValueError(
                f"{folder} holds {shown(older)} but no {MANIFEST_NAME}: written by a grid from before the grid "
                "recorded its own files, or by someone else; the grid cannot tell, and never replaces a file it cannot "
                f"prove its own. If they are this grid's, move them out of {folder} and re-run the same command (the "
                "cells keep their runs: finished cells are skipped, interrupted ones resume; only the check that "
                "earlier cells ran with the same flags starts afresh). Otherwise choose another --output_dir."
            )
    survey_output_dir(folder, overwrite=True, resume=True, outputs=GRID_OUTPUTS, producer=GRID_PRODUCER)


def prepare_grid_folder(output_dir) -> None:
    """
    After `check_grid_folder`, before the grid writes: start (or keep) the grid folder's manifest, so that every file
    the grid writes there is recorded (cocoop_hf_training.outputs.write_output) and a later run can prove it its own.
    """
    check_grid_folder(output_dir)
    _prepare_output_dir(
        output_dir,
        overwrite=True,
        resume=True,
        outputs=GRID_OUTPUTS,
        producer=GRID_PRODUCER,
        name_others=False,
    )


# ---------------------------------------------------------------------------------------------- Trainer's logs


def start_log_folders(output_dir, names) -> None:
    """
    Create and record (by inode) the folders of --output_dir that Trainer writes logs into (`runs`, see
    run_cocoop.trainer_log_entries) before it starts: a run interrupted while logging owns its logs, and its rerun
    deletes them rather than refusing them as the user's. Recorded with their files by `finish_output_dir(also=)`.
    """
    for name in names:
        start_growing_folder(output_dir, name)
