"""Uploading a run's output folder to the Hugging Face Hub (run_cocoop.py's --push_to_hub): one commit, its own card."""

from pathlib import Path

from cocoop_hf_training.outputs import MANIFEST_NAME


def push_folder_to_hub(folder, training_args, commit_message: str) -> str:
    """
    Upload model, processor, code files, results and card (never checkpoints) with one commit; returns the repo id
    (`--hub_model_id`, else the folder's name). The stock `Trainer.push_to_hub` would write its own card and upload the
    model only.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(folder)
    api = HfApi(token=training_args.hub_token)
    repo_id = training_args.hub_model_id or folder.resolve().name
    repo_id = api.create_repo(repo_id, private=training_args.hub_private_repo, exist_ok=True).repo_id
    operations = [
        CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=str(path))
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name not in ("training_args.bin", MANIFEST_NAME)  # local bookkeeping
    ]
    api.create_commit(repo_id=repo_id, operations=operations, commit_message=commit_message)
    return repo_id
