"""What the two scripts share: one config-file parser, logging that shows, the random-weights note, split warnings."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cocoop_hf_training import evaluate_transfer, run_cocoop


REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "cocoop_hf_training" / "demo"
TINY_CLIP = DEMO / "tiny-clip"
TEST_FILE = DEMO / "cifar10_demo" / "test.parquet"
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


# ------------------------------------------------------------------------------------------- one parser


def test_both_scripts_read_a_config_file_with_overriding_flags(tmp_path):
    config = tmp_path / "transfer.yaml"
    config.write_text("method: zeroshot\nctx_init: a photo of a\ntargets: t.yaml\noutput_dir: out\nseed: 3\n")
    model_args, transfer_args = evaluate_transfer.parse_args([str(config), "--seed", "5"])
    assert model_args.method == "zeroshot" and transfer_args.seed == 5
    # An input path in a config file is relative to the file (here: beside it), recorded absolute.
    assert transfer_args.targets == str(tmp_path.resolve() / "t.yaml")
    config.write_text("ctx_init: none\ntargets: t.yaml\noutput_dir: out\nmethod: zeroshot\n")
    assert evaluate_transfer.parse_args([str(config)])[0].ctx_init is None
    # The same errors, worded the same, in both scripts.
    config.write_text("methd: coop\n")
    for parse in (run_cocoop.parse_args, evaluate_transfer.parse_args):
        with pytest.raises(ValueError, match=r"config file .*transfer\.yaml has unknown arguments \['methd'\]"):
            parse([str(config)])
    config.write_text("- method: coop\n")
    for parse in (run_cocoop.parse_args, evaluate_transfer.parse_args):
        with pytest.raises(ValueError, match="must hold a mapping of argument names to values, got list"):
            parse([str(config)])
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"method": "coop",}')
    for parse in (run_cocoop.parse_args, evaluate_transfer.parse_args):
        with pytest.raises(ValueError, match=r"bad\.json is not valid JSON"):
            parse([str(bad_json)])
    # --method is checked by both (evaluate_transfer accepted any word before).
    for parse in (run_cocoop.parse_args, evaluate_transfer.parse_args):
        with pytest.raises(
            ValueError,
            match=r"--method must be one of \('cocoop', 'coop', 'kgcoop', 'ivlp', 'maple', 'promptsrc', 'zeroshot'\), "
            "got 'vpt'",
        ):
            parse(["--method", "vpt", "--targets", "t.yaml", "--output_dir", "o", "--train_file", "x.parquet"])


# ------------------------------------------------------------------------------------------- logging


def test_script_prints_its_own_and_the_modules_info_lines(tmp_path):
    """Run as `python cocoop_hf_training/run_cocoop.py`, the script logs under `__main__`: those lines must show."""
    output_dir = tmp_path / "demo"
    command = [sys.executable, str(REPO / "cocoop_hf_training" / "run_cocoop.py"),
               str(REPO / "cocoop_hf_training" / "configs" / "demo_tiny_cifar10.yaml"),
               "--output_dir", str(output_dir), "--num_train_epochs", "1", "--num_shots", "1",
               "--max_eval_samples", "20", "--disable_tqdm", "true"]  # fmt: skip
    process = subprocess.run(command, env=_env(), capture_output=True, text=True, cwd=REPO, timeout=300)
    assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-3000:]
    assert "INFO - __main__ - Training on 5 images of 5 classes." in process.stdout, process.stdout[-3000:]
    assert "INFO - cocoop_hf_training.evaluation - base: {'accuracy'" in process.stdout
    assert "INFO - cocoop_hf_training.evaluation - new: {'accuracy'" in process.stdout


# ------------------------------------------------------------------------------------------- random weights


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """A CoCoOp on random CLIP weights saved as run_cocoop saves it, and the same marked as not random."""
    from transformers import CLIPImageProcessor

    from cocoop_hf import CoCoOpProcessor
    from cocoop_hf_training.cli import ModelArguments
    from cocoop_hf_training.modeling_setup import RANDOM_WEIGHTS_ATTRIBUTE, build_model

    root = tmp_path_factory.mktemp("saved")
    model = build_model(ModelArguments(clip_model_name_or_path=str(TINY_CLIP), random_init_clip=True), CIFAR10, 1)
    processor = CoCoOpProcessor(
        image_processor=CLIPImageProcessor.from_pretrained(TINY_CLIP), tokenizer=model.tokenizer
    )
    folders = {}
    for name, random_weights in (("random", True), ("pretrained", False)):
        if not random_weights:  # stands for a model trained on pretrained weights: its config has no mark
            delattr(model.config, RANDOM_WEIGHTS_ATTRIBUTE)
        folders[name] = root / name
        model.save_pretrained(folders[name])
        processor.save_pretrained(folders[name])
    assert json.loads((folders["random"] / "config.json").read_text())[RANDOM_WEIGHTS_ATTRIBUTE] is True
    return folders


def _transfer(model_dir, output_dir, tmp_path):
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps({"targets": [
        {"dataset_display_name": "cifar10", "eval_file": str(TEST_FILE), "image_column": "img", "max_eval_samples": 20}
    ]}))  # fmt: skip
    return evaluate_transfer.main(
        [
            "--model_name_or_path",
            str(model_dir),
            "--targets",
            str(targets),
            "--output_dir",
            str(output_dir),
            "--use_cpu",
            "true",
        ]  # fmt: skip
    )


def test_transfer_of_a_random_weights_model_says_so(saved_models, tmp_path):
    from cocoop_hf_training.report import RANDOM_WEIGHTS_NOTE

    content = _transfer(saved_models["random"], tmp_path / "random", tmp_path)
    assert content["note"] == RANDOM_WEIGHTS_NOTE
    assert "MACHINERY DEMO" in (tmp_path / "random" / "results.md").read_text()
    content = _transfer(saved_models["pretrained"], tmp_path / "pretrained", tmp_path)
    assert content["note"] is None
    assert "MACHINERY DEMO" not in (tmp_path / "pretrained" / "results.md").read_text()


def test_evaluating_a_saved_random_weights_model_says_so(saved_models, tmp_path):
    """run_cocoop.py --model_name_or_path without --random_init_clip: the saved config tells."""
    output_dir = tmp_path / "eval"
    content = run_cocoop.main(
        [
            "--model_name_or_path",
            str(saved_models["random"]),
            "--eval_file",
            str(TEST_FILE),
            "--image_column",
            "img",
            "--protocol",
            "all",
            "--max_eval_samples",
            "20",
            "--do_eval",
            "--output_dir",
            str(output_dir),
            "--use_cpu",
            "true",
            "--report_to",
            "none",
        ]  # fmt: skip
    )
    assert content["note"] is not None and "random" in content["note"]
    card = (output_dir / "README.md").read_text()
    assert "random-weights" in card


def test_transfer_refuses_to_overwrite_its_own_outputs_only(saved_models, tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "notes.txt").write_text("mine")
    _transfer(saved_models["pretrained"], output_dir, tmp_path)  # a folder with other files is fine
    with pytest.raises(ValueError, match=r"holds previous results \['results.json', 'results.md', 'results.png'\]"):
        _transfer(saved_models["pretrained"], output_dir, tmp_path)


# ------------------------------------------------------------------------------------------- split warnings


@pytest.mark.parametrize(
    "flags, warned",
    [
        (["--dataset_name", "d", "--train_split", "test", "--eval_split", "test"], "--train_split and --eval_split are both 'test'"),
        (["--train_file", str(TEST_FILE), "--eval_file", str(TEST_FILE)], "--train_file and --eval_file are the same file"),
        (["--dataset_name", "d", "--train_split", "train", "--eval_split", "test"], None),
        (["--train_file", "a.parquet", "--eval_file", str(TEST_FILE)], None),
    ],
)  # fmt: skip
def test_training_on_the_evaluated_split_warns(tmp_path, caplog, flags, warned):
    argv = [*flags, "--do_train", "--do_eval", "--output_dir", str(tmp_path)]
    with caplog.at_level(logging.WARNING, logger="cocoop_hf_training"):
        run_cocoop.parse_args(argv)
    if warned:
        assert warned in caplog.text and "optimistic" in caplog.text
    else:
        assert "optimistic" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cocoop_hf_training"):
        run_cocoop.parse_args([*flags, "--do_eval", "--output_dir", str(tmp_path)])  # nothing trained: no warning
    assert "optimistic" not in caplog.text


def test_bad_input_ends_with_its_message_not_a_traceback(tmp_path):
    """A refused run prints `error: <message>` and exits 2, as argparse does; COCOOP_HF_TRACEBACK=1 shows the stack."""
    (tmp_path / "mine.txt").write_text("a file of the user's")
    command = [sys.executable, str(REPO / "cocoop_hf_training" / "run_cocoop.py"),
               str(REPO / "cocoop_hf_training" / "configs" / "demo_tiny_cifar10.yaml"), "--output_dir", str(tmp_path)]  # fmt: skip
    process = subprocess.run(command, env=_env(), capture_output=True, text=True, cwd=REPO, timeout=300)
    assert process.returncode == 2, process.stderr[-2000:]
    assert "error: --output_dir" in process.stderr and "mine.txt" in process.stderr
    assert "Traceback" not in process.stderr
    process = subprocess.run(
        command, env={**_env(), "COCOOP_HF_TRACEBACK": "1"}, capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert process.returncode == 1 and "Traceback" in process.stderr
    assert (tmp_path / "mine.txt").read_text() == "a file of the user's"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("method: kgcoop\nkgcoop_weight: true\n", r"`kgcoop_weight` must be a number, got True \(bool\)"),
        ("do_train: 1\n", r"`do_train` must be true or false, got 1 \(int\)"),
        ("num_shots: 2.5\n", r"`num_shots` must be an integer, got 2.5 \(float\)"),
        ("ctx_init: 4\n", r"`ctx_init` must be text, got 4 \(int\)"),
        ("learning_rate: fast\n", r"`learning_rate`: 'fast' is not a valid float"),
    ],
)
def test_config_file_values_of_the_wrong_kind_are_refused(tmp_path, text, match):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    with pytest.raises(ValueError, match=r"config file .*run\.yaml: " + match):
        run_cocoop.parse_args([str(config), "--output_dir", str(tmp_path / "o"), "--train_file", "x.parquet"])


def test_config_file_text_is_read_as_the_command_line_reads_it(tmp_path):
    # YAML reads 1e-3 as text and "false" stays text when quoted: both mean what they say on the command line.
    config = tmp_path / "run.yaml"
    config.write_text(
        'learning_rate: 1e-3\ndo_train: "false"\nkgcoop_weight: "2"\nmethod: kgcoop\nreport_to: [none]\n'
    )
    model_args, _, training_args, _ = run_cocoop.parse_args(
        [str(config), "--output_dir", str(tmp_path / "o"), "--train_file", "x.parquet", "--do_eval"]
    )
    assert training_args.learning_rate == 1e-3 and training_args.do_train is False
    assert model_args.kgcoop_weight == 2.0
    assert training_args.report_to in ([], ["none"], "none")  # a list, as Trainer takes it
