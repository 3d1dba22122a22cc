"""cocoop_hf_training/run_cocoop.py end to end on a tiny random CLIP and real CIFAR-10 JPEGs (cocoop_hf_training/demo), offline."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from cocoop_hf_training import run_cocoop
from cocoop_hf_training.run_cocoop import CoCoOpTrainer, DasslCosineSchedule, RunArguments, build_model, main

from .conftest import DEMO, TINY_CLIP, tiny_run_argv


REPO = Path(__file__).resolve().parent.parent
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# Dassl's per-epoch LR (cosine, 10 epochs, 1 constant warmup epoch at 1e-5), recomputed with Dassl's own classes.
DASSL_LRS = [1e-5, 0.002, 0.00195106, 0.00180902, 0.00158779, 0.00130902, 0.001, 0.000690983, 0.000412215, 0.000190983]


CIFAR_DATA_ARGS = [
    "--train_file", str(DEMO / "cifar10_demo" / "train.parquet"),
    "--eval_file", str(DEMO / "cifar10_demo" / "test.parquet"),
    "--image_column", "img",
    "--dataset_display_name", "cifar10-demo",
]  # fmt: skip


def argv(output_dir, *extra, train=True, evaluate=True):
    return tiny_run_argv(output_dir, CIFAR_DATA_ARGS, *extra, eval_batch_size=50, train=train, evaluate=evaluate)


def prompt_learner_state(folder):
    state = load_file(str(Path(folder) / "model.safetensors"))
    return {k: v for k, v in state.items() if k.startswith("prompt_learner.")}


@pytest.fixture(scope="module")
def e2e_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("e2e")
    return output_dir, main(argv(output_dir))


# ------------------------------------------------------------------------------------------- end to end


def test_base_to_new_run_writes_results_table_plot_and_card(e2e_run):
    output_dir, content = e2e_run
    for name in (
        "results.json",
        "results.md",
        "results.png",
        "README.md",
        "model.safetensors",
        "fewshot_indices.json",
    ):
        assert (output_dir / name).is_file(), name
    results = json.loads((output_dir / "results.json").read_text())
    assert results == json.loads(json.dumps(content, default=str))
    run = results["runs"][0]
    base, new = run["metrics"]["base"], run["metrics"]["new"]
    # CIFAR-10: base = first 5 classes, new = last 5; 20 test images per class.
    assert results["classes"] == {"base": CIFAR10[:5], "new": CIFAR10[5:]}
    assert base["num_samples"] == new["num_samples"] == 100 and base["num_classes"] == new["num_classes"] == 5
    assert 0 <= base["accuracy"] <= 100 and 0 <= base["macro_f1"] <= 100
    assert run["H"] == pytest.approx(2 * base["accuracy"] * new["accuracy"] / (base["accuracy"] + new["accuracy"]))
    assert results["world_size"] == 1 and "random" in results["note"]
    table = (output_dir / "results.md").read_text()
    assert "| cifar10-demo | cocoop | 1 |" in table and f"{run['H']:.2f}" in table and "MACHINERY DEMO" in table
    assert (output_dir / "results.png").read_bytes()[:4] == b"\x89PNG"
    card = (output_dir / "README.md").read_text()
    assert (
        "random weights" in card.lower()
        and "base_model:" not in card
        and f"{100 * base['accuracy'] / 100:.2f}" in card
    )
    # Few-shot: 2 shots of each of the 10 classes drawn (Dassl samples before subsampling); 5 base classes trained.
    saved = json.loads((output_dir / "fewshot_indices.json").read_text())
    assert len(saved["indices"]) == 20 and saved["num_shots"] == 2 and saved["seed"] == 1
    # What was trained on: the drawn base-class rows, in the drawn order, with their labels and the run's classes.
    trained = saved["trained"]
    assert trained["task"] == "base" and trained["classes"] == results["classes"]
    base_rows = [[row, label] for row, label in saved["items"] if label < 5]
    assert [item[:2] for item in trained["items"]] == base_rows and len(base_rows) == 10
    assert all(item[2] == item[1] for item in trained["items"])  # the base labels 0-4 keep their numbers


def test_trained_folder_loads_and_reproduces_base_accuracy(e2e_run, tmp_path):
    output_dir, content = e2e_run
    from cocoop_hf import CoCoOpModel, CoCoOpProcessor

    model = CoCoOpModel.from_pretrained(output_dir)
    assert model.class_names == CIFAR10[:5]
    assert CoCoOpProcessor.from_pretrained(output_dir).image_processor.crop_size["height"] == 32
    # Evaluate the saved model in a fresh run: same accuracies as the training run's evaluation.
    again = main(argv(tmp_path / "eval", "--model_name_or_path", str(output_dir), train=False))
    assert again["runs"][0]["metrics"] == content["runs"][0]["metrics"]


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--method", "coop"], r"is a cocoop model; --method coop asks for another: drop --method"),
        (["--method", "zeroshot"], r"is a cocoop model; --method zeroshot asks for another"),
        # Given explicitly (true or false), an option is compared with the saved one, whatever --method says.
        (
            ["--class_specific_context", "true", "--protocol", "all"],
            r"was saved with \{'class_specific_context': False\}",
        ),
        (["--class_token_position", "front"], r"was saved with \{'class_token_position': 'end'\}"),
        (["--n_ctx", "8", "--ctx_init", "none"], r"was saved with \{'n_ctx': 4, 'ctx_init': 'a photo of a'\}"),
    ],
)
def test_a_saved_model_keeps_its_method_and_options(e2e_run, tmp_path, no_training, flags, match):
    output_dir, _ = e2e_run
    with pytest.raises(ValueError, match=match):
        main(argv(tmp_path / "eval", "--model_name_or_path", str(output_dir), *flags, train=False))
    assert not (tmp_path / "eval").exists()  # refused before anything is written


def test_only_prompt_learner_is_optimised_with_dassl_sgd(tmp_path):
    from transformers import TrainingArguments

    model = build_model(
        run_cocoop.ModelArguments(clip_model_name_or_path=str(TINY_CLIP), random_init_clip=True), CIFAR10[:5], 1
    )
    args = TrainingArguments(
        output_dir=str(tmp_path), learning_rate=0.002, weight_decay=5e-4, num_train_epochs=10, use_cpu=True
    )
    trainer = CoCoOpTrainer(model=model, args=args, run_args=RunArguments())
    optimizer = trainer.create_optimizer()
    params = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert params == {id(p) for p in model.prompt_learner.parameters()}
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["weight_decay"] == 5e-4
    assert not any(p.requires_grad for p in model.clip.parameters())
    # 3 optimizer steps per epoch: the LR is constant within an epoch and follows Dassl from epoch to epoch.
    scheduler = trainer.create_scheduler(num_training_steps=30, optimizer=optimizer)
    lrs = []
    for _ in range(30):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    per_epoch = [lrs[3 * e : 3 * e + 3] for e in range(10)]
    assert all(len(set(epoch)) == 1 for epoch in per_epoch)
    assert [epoch[0] for epoch in per_epoch] == pytest.approx(DASSL_LRS, rel=1e-5)


def test_dassl_schedule_formula():
    schedule = DasslCosineSchedule(0.002, max_epoch=10, steps_per_epoch=1)
    assert [schedule.epoch_lr(e) for e in range(10)] == pytest.approx(DASSL_LRS, rel=1e-5)
    assert schedule.epoch_lr(1) == 0.002 and schedule.epoch_lr(6) == pytest.approx(0.001)
    assert [schedule(step) * 0.002 for step in range(10)] == pytest.approx(DASSL_LRS, rel=1e-5)


def test_zero_shot_equals_plain_clip_and_push_to_hub_uploads_everything(tmp_path, monkeypatch):
    from huggingface_hub import HfApi, ModelCard
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, set_seed

    commits = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: SimpleNamespace(repo_id=repo_id))
    monkeypatch.setattr(HfApi, "create_commit", lambda self, **kw: commits.append(kw))
    monkeypatch.setattr(ModelCard, "load", lambda *a, **kw: pytest.fail("ModelCard.load must not be called"))
    output_dir = tmp_path / "zeroshot"
    content = main(
        argv(output_dir, "--method", "zeroshot", "--push_to_hub", "true", "--hub_model_id", "me/zs", train=False)
    )
    assert content["repo_id"] == "me/zs"
    (commit,) = commits
    uploaded = {op.path_in_repo for op in commit["operations"]}
    for name in ("config.json", "model.safetensors", "modeling_cocoop.py", "configuration_cocoop.py",
                 "processing_cocoop.py", "processor_config.json", "tokenizer_config.json", "README.md",
                 "results.json", "results.png"):  # fmt: skip
        assert name in uploaded, name
    card = next(op for op in commit["operations"] if op.path_in_repo == "README.md")
    assert "me/zs" in Path(card.path_or_fileobj).read_text()

    # Plain CLIP with "a photo of a {}." on the same random weights gives the same accuracy on the new classes.
    from datasets import load_dataset

    from cocoop_hf_training.data import build_transforms

    set_seed(0)
    clip = CLIPModel(CLIPConfig.from_pretrained(TINY_CLIP)).eval()
    tokenizer = CLIPTokenizer.from_pretrained(TINY_CLIP)
    data = load_dataset("parquet", data_files=str(DEMO / "cifar10_demo" / "test.parquet"), split="train")
    data = data.filter(lambda row: row["label"] >= 5)
    from transformers import CLIPImageProcessor

    _, transform = build_transforms(CLIPImageProcessor.from_pretrained(TINY_CLIP))
    pixels = torch.stack([transform(image.convert("RGB")) for image in data["img"]])
    text = tokenizer([f"a photo of a {name}." for name in CIFAR10[5:]], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = clip(pixel_values=pixels, **text).logits_per_image
    accuracy = 100 * (logits.argmax(-1) == torch.tensor(data["label"]) - 5).float().mean().item()
    assert content["runs"][0]["metrics"]["new"]["accuracy"] == pytest.approx(accuracy)


def test_coop_trains_through_the_same_script(tmp_path):
    content = main(argv(tmp_path / "coop", "--method", "coop"))
    assert content["runs"][0]["method"] == "coop"
    assert not any("meta_net" in key for key in prompt_learner_state(tmp_path / "coop"))


def test_clip_dtype_trains_an_fp32_prompt_learner_on_a_bf16_clip(tmp_path):
    content = main(argv(tmp_path / "half", "--method", "coop", "--clip_dtype", "bf16"))
    assert content["recipe"]["CLIP weights"] == "bfloat16"
    assert content["arguments"]["model"]["clip_dtype"] == "bf16"
    saved = load_file(tmp_path / "half" / "model.safetensors")
    assert saved["prompt_learner.ctx"].dtype == torch.float32
    clip_dtypes = {
        tensor.dtype for key, tensor in saved.items() if key.startswith("clip.") and tensor.is_floating_point()
    }
    assert clip_dtypes == {torch.bfloat16}
    # Trained: the context moved away from the words it started from (the token embeddings of "a photo of a").
    start = main(argv(tmp_path / "start", "--method", "coop", "--clip_dtype", "bf16", train=False))
    assert start["recipe"]["epochs"] == 0
    assert not torch.equal(
        saved["prompt_learner.ctx"], load_file(tmp_path / "start" / "model.safetensors")["prompt_learner.ctx"]
    )


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--optim", "adamw_torch"], r"--optim is not used by this script: the optimizer is always SGD"),
        (["--lr_scheduler_type", "cosine"], r"--lr_scheduler_type is not used.*pass --lr_schedule hf"),
        (["--warmup_steps", "2"], r"--warmup_steps is not used.*--warmup_epochs"),
    ],
)
def test_trainer_options_the_script_does_not_use_are_refused(tmp_path, no_training, flags, match):
    with pytest.raises(ValueError, match=match):
        main(argv(tmp_path / "unused", *flags))


@pytest.mark.parametrize("epochs", ["0", "-1"])
def test_training_for_no_epoch_is_refused(tmp_path, no_training, epochs):
    with pytest.raises(ValueError, match=f"--num_train_epochs {float(epochs)} trains nothing"):
        main(argv(tmp_path / "none", "--num_train_epochs", epochs))


def test_clip_dtype_is_checked(tmp_path):
    with pytest.raises(ValueError, match=r"--clip_dtype must be one of \('fp32', 'bf16', 'fp16'\), got 'int8'"):
        main(argv(tmp_path / "bad", "--clip_dtype", "int8"))


def test_config_file_with_overriding_flags(tmp_path):
    config = tmp_path / "recipe.json"
    config.write_text(json.dumps({"method": "coop", "num_shots": 3, "learning_rate": 0.5}))
    model_args, data_args, training_args, run_args = run_cocoop.parse_args(
        [str(config), "--num_shots", "1", "--output_dir", str(tmp_path), "--train_file", "x.parquet"]
    )
    assert model_args.method == "coop" and data_args.num_shots == 1 and training_args.learning_rate == 0.5
    # Unset values come from the official recipe.
    assert training_args.weight_decay == 5e-4 and training_args.num_train_epochs == 10
    assert training_args.per_device_train_batch_size == 1 and run_args.warmup_lr == 1e-5
    config.write_text(json.dumps({"methd": "coop"}))
    with pytest.raises(ValueError, match=r"unknown arguments \['methd'\]"):
        run_cocoop.parse_args([str(config)])
    for recipe in (REPO / "cocoop_hf_training" / "configs").glob("*.yaml"):
        run_cocoop.parse_args([str(recipe), "--output_dir", str(tmp_path), "--train_file", "x.parquet"])


def test_seed_aggregation_mean_and_std(tmp_path):
    from cocoop_hf_training.report import main as report_main

    folders = []
    for seed, (base, new) in enumerate([(80.0, 60.0), (70.0, 50.0)], start=1):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        run = {"dataset": "d", "method": "cocoop", "seed": seed, "H": 2 * base * new / (base + new),
               "metrics": {"base": {"accuracy": base}, "new": {"accuracy": new}}}  # fmt: skip
        (folder / "results.json").write_text(json.dumps({"runs": [run]}))
        folders.append(str(folder))
    content = report_main([*folders, "--output_dir", str(tmp_path / "summary")])
    scores = content["aggregate"][0]["scores"]
    assert scores["base"]["mean"] == 75.0 and scores["base"]["std"] == pytest.approx(math.sqrt(50))
    table = (tmp_path / "summary" / "results.md").read_text()
    assert "| d | cocoop | 1, 2 | 75.00 ± 7.07 | 55.00 ± 7.07 |" in table
    assert (tmp_path / "summary" / "results.png").is_file()


def test_transfer_evaluation_over_several_class_sets(e2e_run, tmp_path):
    from cocoop_hf_training.evaluate_transfer import main as transfer_main

    output_dir, _ = e2e_run
    names = tmp_path / "animals.txt"
    names.write_text("\n".join(CIFAR10))
    targets = tmp_path / "targets.json"
    test_file = str(DEMO / "cifar10_demo" / "test.parquet")
    targets.write_text(json.dumps({"targets": [
        {"dataset_display_name": "cifar10", "eval_file": test_file, "image_column": "img"},
        {"dataset_display_name": "cifar10-renamed", "eval_file": test_file, "image_column": "img",
         "class_names_file": str(names), "max_eval_samples": 30},
    ]}))  # fmt: skip
    content = transfer_main(
        [
            "--model_name_or_path",
            str(output_dir),
            "--targets",
            str(targets),
            "--output_dir",
            str(tmp_path / "t"),
            "--use_cpu",
            "true",
            "--per_device_eval_batch_size",
            "64",
        ]  # fmt: skip
    )
    runs = {run["dataset"]: run for run in content["runs"]}
    assert runs["cifar10"]["metrics"]["all"]["num_samples"] == 200
    assert runs["cifar10"]["metrics"]["all"]["num_classes"] == 10
    assert runs["cifar10-renamed"]["metrics"]["all"]["num_samples"] == 30
    assert runs["cifar10"]["method"] == "cocoop"
    assert "| cifar10 | cocoop |" in (tmp_path / "t" / "results.md").read_text()


# ------------------------------------------------------------------------------------------- bad input


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(CoCoOpTrainer, "train", lambda *a, **kw: pytest.fail("training started before the error"))


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--image_column", "picture"],
            r"image column 'picture' is not in split 'train'; its columns are \['img', 'label'\]",
        ),
        (["--label_column", "y"], r"label column 'y'.*\['img', 'label'\]"),
        (["--num_shots", "0"], "--num_shots must be a positive number"),
        (["--method", "zeroshot"], "nothing to train"),
        (["--split_file", "missing.json", "--image_root", "."], "missing.json does not exist"),
    ],
)
def test_bad_input_fails_before_training(tmp_path, no_training, extra, message):
    with pytest.raises(ValueError, match=message):
        main(argv(tmp_path / "out", *extra))
    assert not (tmp_path / "out" / "trainer_state.json").exists()


def test_previous_run_needs_overwrite(e2e_run, no_training, tmp_path):
    output_dir, _ = e2e_run
    with pytest.raises(ValueError, match="holds a previous run.*--overwrite_output_dir"):
        main(argv(output_dir))


def test_corrupt_training_image_is_named_or_skipped(tmp_path, no_training, monkeypatch):
    import pyarrow.parquet as pq

    table = pq.read_table(DEMO / "cifar10_demo" / "train.parquet")
    rows = table.to_pylist()
    rows[0]["img"] = {"bytes": rows[0]["img"]["bytes"][:50], "path": "broken_cat.jpg"}
    import pyarrow as pa

    path = tmp_path / "corrupt.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    args = argv(tmp_path / "out", "--train_file", str(path), "--num_shots", "20")
    with pytest.raises(ValueError, match=r"1 corrupt image\(s\) in train: broken_cat\.jpg.*--skip_corrupt_images"):
        main(args)
    monkeypatch.setattr(CoCoOpTrainer, "train", lambda *a, **kw: None)  # the check is what matters here
    content = main(args + ["--skip_corrupt_images", "true", "--overwrite_output_dir", "true"])
    assert content["skipped_corrupt_images"] == {"train": 1}


# ------------------------------------------------------------------------------------------- faults and scale

KILL_AFTER_FIRST_SAVE = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from transformers import TrainerCallback
from cocoop_hf_training.run_cocoop import main

class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

main(sys.argv[1:], callbacks=[KillAfterSave()])
"""


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def test_resume_after_sigkill_gives_the_same_prompt_learner(tmp_path):
    """Killed after a checkpoint in the middle of an epoch (5 steps an epoch, saves every 3), then resumed."""
    common = ["--num_train_epochs", "2", "--save_strategy", "steps", "--save_steps", "3"]
    main(argv(tmp_path / "straight", *common, evaluate=False))
    killed = tmp_path / "killed"
    script = tmp_path / "kill.py"
    script.write_text(KILL_AFTER_FIRST_SAVE.format(repo=str(REPO)))
    process = subprocess.run(
        [sys.executable, str(script), *argv(killed, *common, evaluate=False)],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},  # the same torch threads
        capture_output=True,
        text=True,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr[-3000:]
    assert [p.name for p in killed.glob("checkpoint-*")] == ["checkpoint-3"]
    assert not (killed / "model.safetensors").exists()
    main(argv(killed, *common, "--resume_from_checkpoint", "latest", evaluate=False))
    straight, resumed = prompt_learner_state(tmp_path / "straight"), prompt_learner_state(killed)
    assert straight.keys() == resumed.keys() and len(straight) == 5
    # Not bit-identical: another process may sum in another order with 2 threads (seen: 3e-8). A resume that
    # mistimes the augmentation RNG or the data order ends ~2e-3 away.
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], atol=1e-6, rtol=0, msg=key)
    # Not trivially equal: training moved the weights away from the checkpoint's.
    initial = load_file(str(killed / "checkpoint-3" / "prompt_learner.safetensors"))
    moved = resumed["prompt_learner.meta_net.linear2.weight"] - initial["meta_net.linear2.weight"]
    assert moved.abs().max() > 1e-4


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_run_matches_single_process_files(tmp_path, e2e_run):
    torchrun = Path(sys.executable).parent / "torchrun"
    output_dir = tmp_path / "ddp"
    command = [str(torchrun), "--nnodes", "1", "--nproc_per_node", "2", "--master_port", str(_free_port()),
               str(REPO / "cocoop_hf_training" / "run_cocoop.py"), *argv(output_dir)]  # fmt: skip
    process = subprocess.run(command, env=_env(), capture_output=True, text=True, cwd=REPO)
    assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-3000:]
    results = json.loads((output_dir / "results.json").read_text())
    assert results["world_size"] == 2
    single_dir, single = e2e_run
    assert sorted(p.name for p in output_dir.iterdir()) == sorted(p.name for p in single_dir.iterdir())
    assert results.keys() == single.keys()
    for task in ("base", "new"):  # every test image evaluated exactly once across the 2 processes
        assert results["runs"][0]["metrics"][task]["num_samples"] == 100
    # The distributed evaluation equals a single-process evaluation of the same weights.
    again = main(argv(tmp_path / "eval", "--model_name_or_path", str(output_dir), train=False))
    assert again["runs"][0]["metrics"] == results["runs"][0]["metrics"]


def test_classification_metric_values():
    """The shipped evaluate module: accuracy and Dassl's macro-F1 (over classes present in the references)."""
    from cocoop_hf_training.run_cocoop import load_metrics

    (metric,) = load_metrics()
    scores = metric.compute(predictions=[0, 1, 1, 1, 0, 3], references=[0, 0, 1, 1, 2, 2])
    assert scores["accuracy"] == pytest.approx(100 * 3 / 6)
    # F1 per class: 0 -> 2*1/(2+1+1) = 0.5, 1 -> 2*2/(4+1+0) = 0.8, 2 -> 0 (class 3 is absent from the references)
    assert scores["macro_f1"] == pytest.approx(100 * (0.5 + 0.8 + 0.0) / 3)
    with pytest.raises(ValueError, match="empty evaluation set"):
        metric.compute(predictions=[], references=[])


# ------------------------------------------------------------------------------------------- per-epoch evaluation


def test_eval_each_epoch_logs_base_new_and_h_without_changing_training(tmp_path):
    """Per-epoch base/new accuracy and H go through Trainer.log; training is the same as without them."""
    logged = []

    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logged.append(dict(logs or {}))

    plain = main(argv(tmp_path / "plain", "--num_train_epochs", "2"))
    with_eval = main(argv(tmp_path / "each", "--num_train_epochs", "2", "--eval_each_epoch", "true"), [Recorder()])
    epochs = with_eval["runs"][0]["per_epoch"]
    assert [entry["epoch"] for entry in epochs] == [1.0, 2.0]
    for entry in epochs:
        assert set(entry) == {"epoch", "eval_base_accuracy", "eval_new_accuracy", "eval_H"}
        assert 0 <= entry["eval_base_accuracy"] <= 100 and 0 <= entry["eval_new_accuracy"] <= 100
    reported = [log for log in logged if "eval_H" in log]
    assert [log["eval_H"] for log in reported] == [entry["eval_H"] for entry in epochs]
    # The last epoch's figures are the final evaluation's (same model, same images).
    final = with_eval["runs"][0]
    assert epochs[-1]["eval_H"] == pytest.approx(final["H"], abs=1e-9)
    # Evaluation consumed no random numbers of the training: same prompt learner (same seed), stated tolerance.
    ours, theirs = prompt_learner_state(tmp_path / "each"), prompt_learner_state(tmp_path / "plain")
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor, rtol=0, atol=1e-6)
    assert "per_epoch" not in plain["runs"][0]
