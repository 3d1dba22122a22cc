"""
The output folder of one run (`cocoop-hf train`): what the run reads from it or beside it, the refusals checked before
the data loads (a previous run, another's files, the folder a model is read from), and its preparation just before
the first write (cocoop_hf_training/outputs.py does the recording and the deleting).
"""

import os
from pathlib import Path

from cocoop_hf_training import outputs
from cocoop_hf_training.checkpoints import latest_checkpoint, resolve_resume_checkpoint, resume_requested
from cocoop_hf_training.outputs import prepare_output_dir


def output_dir_reads(training_args, model_args=None) -> tuple[bool, dict, tuple]:
    """(resuming, flag -> folder the run reads a model or checkpoint from, entries of --output_dir the run reads)."""
    resume = resume_requested(training_args.resume_from_checkpoint)
    sources = {}
    if model_args is not None:
        sources["--model_name_or_path"] = model_args.model_name_or_path
        sources["--clip_model_name_or_path"] = model_args.clip_model_name_or_path
    reading = ()
    if resume and training_args.do_train:
        checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
        if Path(checkpoint).resolve().parent == Path(training_args.output_dir).resolve():
            # An entry of --output_dir: resuming keeps it (a user's copy too: read, never deleted nor replaced).
            reading = (Path(checkpoint).name,)
        else:
            sources["--resume_from_checkpoint"] = checkpoint
    return resume, sources, reading


def refuse_output_dir_early(training_args, run_args, model_args=None) -> None:
    """
    The refusals of `check_output_dir`, changing nothing: run by `start_run` before the data is read, so that a folder
    that would be refused (a previous run, another's files, the folder a model is read from) is refused in a moment,
    not after the data has loaded. `check_output_dir` checks again just before writing (the folder may change).
    """
    resume, sources, reading = output_dir_reads(training_args, model_args)
    outputs.check_separate_folders(training_args.output_dir, sources)
    if training_args.should_save:
        outputs.survey_output_dir(
            training_args.output_dir,
            run_args.overwrite_output_dir,
            resume,
            outputs.RUN_OUTPUTS,
            "run_cocoop",
            reading,
            resumable=latest_checkpoint,
        )


def check_output_dir(training_args, run_args, model_args=None) -> None:
    """
    Refuse an --output_dir holding files this script did not write, or (unless resuming) a previous run, or that is,
    contains or lies inside a folder a model or checkpoint is read from, before anything is written; with
    --overwrite_output_dir delete the previous run's outputs (see cocoop_hf_training/outputs.py).
    """
    resume, sources, reading = output_dir_reads(training_args, model_args)
    outputs.check_separate_folders(training_args.output_dir, sources)
    # One process checks and cleans the folder; the others wait for it (the Trainer writes from process 0 too).
    with training_args.main_process_first(local=training_args.save_on_each_node, desc="checking --output_dir"):
        if training_args.should_save:
            prepare_output_dir(
                training_args.output_dir,
                run_args.overwrite_output_dir,
                resume,
                reading=reading,
                resumable=latest_checkpoint,  # the function --resume_from_checkpoint latest uses: advice that works
            )
            # Recorded before Trainer writes into it: an interrupted run's logs are its own, not the user's.
            outputs.start_log_folders(training_args.output_dir, trainer_log_entries(training_args))


def trainer_log_entries(training_args) -> list[str]:
    """The entry of --output_dir holding Trainer's TensorBoard logs (`runs/<time>_<host>`) when it writes them."""
    report_to = training_args.report_to or []
    if "tensorboard" in report_to and not os.environ.get("TENSORBOARD_LOGGING_DIR"):
        return ["runs"]
    return []
