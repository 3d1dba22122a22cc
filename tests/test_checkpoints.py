"""cocoop_hf_training/checkpoints.py: who owns --output_dir, lean checkpoints, crash-safe writing, exact resume, few-shot reuse.

Trained weights are compared with atol 1e-6: a resumed run and an uninterrupted one may run with different torch
thread counts (a subprocess, another process), and the order of float reductions then differs in the last bits
(seen: 3e-8 after 10 steps). Everything else is compared exactly.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file

from cocoop_hf_training.checkpoints import (
    CHECKPOINT_WEIGHTS_NAME,
    COMPLETE_MARKER_NAME,
    MANIFEST_NAME,
    finish_output_dir,
    latest_checkpoint,
    prepare_output_dir,
    resolve_resume_checkpoint,
    save_prompt_learner,
)
from cocoop_hf_training.data import FEWSHOT_INDICES_NAME, few_shot_indices, label_fingerprint, select_few_shot
from cocoop_hf_training.run_cocoop import CoCoOpTrainer, main

from .test_training import DEMO, REPO, argv, prompt_learner_state


ATOL = 1e-6  # see the module docstring
LEAN_FILES = {
    CHECKPOINT_WEIGHTS_NAME,
    "optimizer.pt",
    "scheduler.pt",
    "rng_state.pth",
    "trainer_state.json",
    COMPLETE_MARKER_NAME,
}


def assert_same_prompt_learner(expected: dict, actual: dict):
    assert expected.keys() == actual.keys() and len(expected) == 5
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=ATOL, rtol=0, msg=key)


def run_killed(script_body: str, args, tmp_path):
    """Run the training script in a subprocess (env inherited: same thread settings) that kills itself."""
    script = tmp_path / "killed_run.py"
    script.write_text(f"import os, signal, sys\nsys.path.insert(0, {str(REPO)!r})\n{script_body}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    process = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True)
    assert process.returncode == -signal.SIGKILL, process.stdout[-2000:] + process.stderr[-3000:]


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(CoCoOpTrainer, "train", lambda *a, **kw: pytest.fail("training started before the error"))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 2-epoch run (5 steps an epoch) with a checkpoint at each epoch end."""
    output_dir = tmp_path_factory.mktemp("straight")
    main(argv(output_dir, "--num_train_epochs", "2", "--save_strategy", "epoch", evaluate=False))
    return output_dir


# ------------------------------------------------------------------------------------------- the output folder


def test_output_dir_with_the_users_files_is_refused_naming_them(tmp_path, no_training):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"did not write .*: keep\.txt\..*--overwrite_output_dir"):
        main(argv(output_dir))
    # Files named as the run's outputs are refused even with the flag: they would be replaced.
    (output_dir / "README.md").write_text("my notes")
    (output_dir / "results.md").write_text("my table")
    with pytest.raises(ValueError, match=r"holds README\.md, results\.md, of the same name .* never replaced"):
        main(argv(output_dir, "--overwrite_output_dir", "true"))
    assert (output_dir / "README.md").read_text() == "my notes"
    assert (output_dir / "results.md").read_text() == "my table"
    assert sorted(p.name for p in output_dir.iterdir()) == ["README.md", "keep.txt", "results.md"]


def test_overwrite_keeps_the_users_other_files_and_a_later_run_names_them(tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "keep.txt").write_text("mine")
    main(argv(output_dir, "--overwrite_output_dir", "true", evaluate=False))
    assert (output_dir / "keep.txt").read_text() == "mine"
    manifest = json.loads((output_dir / MANIFEST_NAME).read_text())
    assert manifest["complete"] and "README.md" in manifest["entries"] and "keep.txt" not in manifest["entries"]
    # keep.txt is still the user's: a later run names it, even though the rest is a previous run of the script.
    with pytest.raises(ValueError, match=r"did not write .*: keep\.txt\."):
        main(argv(output_dir, evaluate=False))


def test_overwrite_leaves_no_stale_output_of_the_previous_run(finished_run, tmp_path):
    output_dir = tmp_path / "out"
    shutil.copytree(finished_run, output_dir)
    for name in ("results.md", "results.png", "checkpoint-5", FEWSHOT_INDICES_NAME):
        assert (output_dir / name).exists(), name
    with pytest.raises(ValueError, match="holds a previous run.*--overwrite_output_dir"):
        main(argv(output_dir, "--save_strategy", "no", evaluate=False))
    # Train only, no checkpoints: none of the previous run's results, plot or checkpoints may remain beside it.
    main(argv(output_dir, "--save_strategy", "no", "--overwrite_output_dir", "true", evaluate=False))
    names = {path.name for path in output_dir.iterdir()}
    assert not {"results.md", "results.png", "checkpoint-5"} & names, names
    assert {"model.safetensors", "config.json", "results.json", "README.md", FEWSHOT_INDICES_NAME} <= names


def test_interrupted_run_owns_what_it_recorded_and_not_what_was_there(tmp_path):
    from cocoop_hf_training.outputs import make_staging_folder, write_output

    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    prepare_output_dir(folder, overwrite=True, resume=False)
    write_output(folder / "fewshot_indices.json", "{}")  # written (and recorded) by the run, which then crashed
    make_staging_folder(folder, "tmp-checkpoint-3")
    (folder / "tmp-checkpoint-3" / "optimizer.pt").write_bytes(b"half")
    with pytest.raises(ValueError, match=r"did not write .*: notes\.txt\."):
        prepare_output_dir(folder, overwrite=False, resume=True)
    prepare_output_dir(folder, overwrite=True, resume=True)  # resuming keeps the run's files, drops the staging
    assert sorted(p.name for p in folder.iterdir()) == sorted(["fewshot_indices.json", MANIFEST_NAME, "notes.txt"])
    prepare_output_dir(folder, overwrite=True, resume=False)
    assert sorted(p.name for p in folder.iterdir()) == sorted([MANIFEST_NAME, "notes.txt"])
    write_output(folder / "model.safetensors", b"x")
    (folder / "late.txt").write_text("the user's, made while the run ran")
    assert finish_output_dir(folder) == ["model.safetensors"]


# ------------------------------------------------------------------------------------------- few-shot indices


def test_few_shot_indices_of_other_labels_are_never_reused(tmp_path, caplog):
    labels = [i % 4 for i in range(40)]
    shuffled = list(labels)
    random.Random(0).shuffle(shuffled)  # same size, same classes, other rows
    indices = few_shot_indices(labels, 2, 1, tmp_path, "train", overwrite=False)
    saved = json.loads((tmp_path / FEWSHOT_INDICES_NAME).read_text())
    assert saved["labels_sha256"] == label_fingerprint(labels) and saved["num_rows"] == 40
    assert Counter(shuffled[i] for i in indices) != Counter({0: 2, 1: 2, 2: 2, 3: 2})  # reuse would be wrong
    with pytest.raises(ValueError, match=r"labels_sha256 .*--overwrite_output_dir"):
        few_shot_indices(shuffled, 2, 1, tmp_path, "train", overwrite=False)
    redrawn = few_shot_indices(shuffled, 2, 1, tmp_path, "train", overwrite=True)
    assert redrawn == select_few_shot(shuffled, 2, 1) and "drawing the few-shot images again" in caplog.text
    assert few_shot_indices(shuffled, 2, 1, tmp_path, "train", overwrite=False) == redrawn  # now it matches
    with pytest.raises(ValueError, match=r"dataset None there, \{'train_file': 'b.parquet'\} here"):
        few_shot_indices(shuffled, 2, 1, tmp_path, "train", overwrite=False, dataset={"train_file": "b.parquet"})


def test_overwrite_draws_few_shot_images_from_a_reshuffled_dataset(finished_run, tmp_path):
    import pyarrow.parquet as pq

    output_dir = tmp_path / "out"
    shutil.copytree(finished_run, output_dir)
    table = pq.read_table(DEMO / "cifar10_demo" / "train.parquet")
    order = torch.randperm(table.num_rows, generator=torch.Generator().manual_seed(0)).tolist()
    reshuffled = tmp_path / "train.parquet"
    pq.write_table(table.take(order), reshuffled)
    labels = table.take(order).column("label").to_pylist()
    old = json.loads((output_dir / FEWSHOT_INDICES_NAME).read_text())["indices"]
    assert set(Counter(labels[i] for i in old).values()) != {2}  # the old indices on the new rows: not 2 a class
    main(argv(output_dir, "--train_file", str(reshuffled), "--overwrite_output_dir", "true", evaluate=False))
    new = json.loads((output_dir / FEWSHOT_INDICES_NAME).read_text())["indices"]
    assert Counter(labels[i] for i in new) == Counter({label: 2 for label in range(10)})


# ------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_holds_the_prompt_learner_not_clip(straight):
    checkpoint = straight / "checkpoint-5"
    assert {path.name for path in checkpoint.iterdir()} == LEAN_FILES
    tensors = load_file(checkpoint / CHECKPOINT_WEIGHTS_NAME)
    final = prompt_learner_state(straight)  # the full model: CLIP + prompt learner
    assert {f"prompt_learner.{name}" for name in tensors} == set(final)
    clip_bytes = sum(t.numel() * t.element_size() for name, t in load_file(straight / "model.safetensors").items())
    size = sum(path.stat().st_size for path in checkpoint.iterdir())
    assert size < 40_000 < clip_bytes, (size, clip_bytes)  # measured: ~25 KB (was 17 MB with CLIP and tokenizer)
    marker = json.loads((checkpoint / COMPLETE_MARKER_NAME).read_text())
    assert marker["global_step"] == 5 and marker["class_names"] == ["airplane", "automobile", "bird", "cat", "deer"]


def test_lean_checkpoint_size_at_vit_b16(tmp_path):
    """ViT-B/16: prompt learner 4 x 512 context + meta-net 512 -> 32 -> 512 in fp32, plus SGD momentum."""
    from transformers import CLIPConfig

    from cocoop_hf import CoCoOpConfig, CoCoOpModel

    clip_config = CLIPConfig.from_pretrained(REPO / "tests" / "fixtures" / "clip-vit-base-patch16")
    config = CoCoOpConfig(clip_config=clip_config.to_dict(), id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1})
    with torch.device("meta"):  # the 150M CLIP parameters are never allocated
        model = CoCoOpModel(config)
    clip_params = sum(p.numel() for p in model.clip.parameters())
    model.prompt_learner.to_empty(device="cpu")
    for parameter in model.prompt_learner.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
        parameter.grad = torch.ones_like(parameter)
    learner_params = sum(p.numel() for p in model.prompt_learner.parameters())
    assert learner_params == 4 * 512 + (512 * 32 + 32) + (32 * 512 + 512) == 35_360
    optimizer = torch.optim.SGD(model.prompt_learner.parameters(), lr=0.002, momentum=0.9, weight_decay=5e-4)
    optimizer.step()  # creates the momentum buffers
    save_prompt_learner(model, tmp_path)
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")
    weights, momentum = ((tmp_path / name).stat().st_size for name in (CHECKPOINT_WEIGHTS_NAME, "optimizer.pt"))
    assert 4 * learner_params <= weights < 4 * learner_params + 2_000  # 141 KB
    assert 4 * learner_params <= momentum < 4 * learner_params + 4_000  # 142 KB
    # Scheduler, RNG, trainer state and marker add ~20 KB: ~300 KB in all, instead of ~600 MB of CLIP weights.
    assert clip_params > 149_000_000 and 4 * clip_params > 1_500 * (weights + momentum + 20_000)


KILL_WHILE_WRITING = """
from cocoop_hf_training.run_cocoop import CoCoOpTrainer, main

save_rng_state = CoCoOpTrainer._save_rng_state

def save_rng_state_then_die(self, output_dir):
    # Weights, optimizer and scheduler of checkpoint-10 are written; the RNG and trainer state are not.
    if self.state.global_step == 10:
        os.kill(os.getpid(), signal.SIGKILL)
    save_rng_state(self, output_dir)

CoCoOpTrainer._save_rng_state = save_rng_state_then_die
main(sys.argv[1:])
"""


def test_resume_latest_skips_a_checkpoint_killed_while_being_written(straight, tmp_path):
    common = ["--num_train_epochs", "2", "--save_strategy", "epoch"]
    killed = tmp_path / "killed"
    run_killed(KILL_WHILE_WRITING, argv(killed, *common, evaluate=False), tmp_path)
    assert (killed / "checkpoint-5" / COMPLETE_MARKER_NAME).is_file()
    assert not (killed / "checkpoint-10").exists() and (killed / "tmp-checkpoint-10").is_dir()
    assert latest_checkpoint(killed) == str(killed / "checkpoint-5")
    with pytest.raises(ValueError, match="no valid checkpoint_complete.json"):
        resolve_resume_checkpoint(str(killed / "tmp-checkpoint-10"), killed)
    main(argv(killed, *common, "--resume_from_checkpoint", "latest", evaluate=False))
    assert not (killed / "tmp-checkpoint-10").exists()
    assert_same_prompt_learner(prompt_learner_state(straight), prompt_learner_state(killed))


def test_resume_refuses_a_checkpoint_of_other_classes(straight, tmp_path):
    from transformers import TrainingArguments

    from cocoop_hf import CoCoOpModel

    checkpoint = tmp_path / "checkpoint-5"
    shutil.copytree(straight / "checkpoint-5", checkpoint)
    marker = json.loads((checkpoint / COMPLETE_MARKER_NAME).read_text())
    marker["class_names"] = ["cat", "dog"]
    (checkpoint / COMPLETE_MARKER_NAME).write_text(json.dumps(marker))
    args = TrainingArguments(output_dir=str(tmp_path / "run"), use_cpu=True, report_to="none")
    trainer = CoCoOpTrainer(model=CoCoOpModel.from_pretrained(straight), args=args)
    with pytest.raises(ValueError, match=r"trained on the classes \['cat', 'dog'\], this run trains on \['airplane'"):
        trainer._load_from_checkpoint(str(checkpoint))
