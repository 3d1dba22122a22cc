"""
Every expected failure of a command ends with ONE line (cocoop_hf_training/script_runner.run_script): `error: <culprit
and fix>` and exit status 2, or after Ctrl-C `interrupted: <what a rerun does>` and status 130, the checkpoint it names
being the one a rerun really resumes from; and every command ends by saying where its outputs are.
"""

import json
import os
import re
import shlex
import sys
from pathlib import Path

import huggingface_hub
import pytest
from transformers import TrainerCallback

from cocoop_hf_training import grid as training_grid
from cocoop_hf_training import run_benchmark, run_cocoop, run_transfer_benchmark
from cocoop_hf_training.benchmarks import get_benchmark, load_benchmark
from cocoop_hf_training.checkpoints import latest_checkpoint
from cocoop_hf_training.script_runner import run_script

from .conftest import DEMO, TINY_CLIP
from .test_run_benchmark import METHOD_INDEX, FakeRunCocoop, grid_argv
from .test_training import argv


def failed_line(capsys, call, status=2) -> str:
    """Run `call` through run_script: the exit status and the single stderr line it ends with."""
    with pytest.raises(SystemExit) as exit_info:
        run_script(call, "cocoop-hf train")
    assert exit_info.value.code == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines, "nothing on stderr"
    return lines[-1]


# ---------------------------------------------------------------------------------------------- file exists


def test_converter_into_a_non_empty_folder_is_one_line_naming_the_path_and_the_flag(tmp_path, capsys):
    from cocoop_hf.convert_official import main as convert

    output_dir = tmp_path / "converted"
    output_dir.mkdir()
    (output_dir / "notes.txt").write_text("mine")
    argv_ = ["--checkpoint", str(tmp_path / "model.pth.tar-10"), "--clip", str(TINY_CLIP)]
    argv_ += ["--class_names_file", str(tmp_path / "names.txt"), "--output_dir", str(output_dir)]
    line = failed_line(capsys, lambda: convert(argv_))
    assert line.startswith(f"error: --output_dir '{output_dir}' is not empty (notes.txt)")
    assert "--overwrite_output_dir" in line
    assert (output_dir / "notes.txt").read_text() == "mine"


def test_a_system_file_exists_error_names_the_path(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    line = failed_line(capsys, lambda: os.mkdir(tmp_path / "taken"))
    assert line.startswith(f"error: {tmp_path / 'taken'} already exists")
    # No flag of ours replaces a leftover of the system's (a staging folder): the overwrite advice would mislead.
    assert "--overwrite_output_dir" not in line


def test_converter_says_where_the_model_is(cocoop_checkpoint, tiny_clip_dir, tmp_path, caplog):
    import logging

    from cocoop_hf.convert_official import main as convert

    from .conftest import NEW_CLASS_NAMES

    names = tmp_path / "names.txt"
    names.write_text("\n".join(NEW_CLASS_NAMES))
    output_dir = tmp_path / "converted"
    argv_ = ["--checkpoint", str(cocoop_checkpoint[0]), "--clip", str(tiny_clip_dir)]
    argv_ += ["--class_names_file", str(names), "--output_dir", str(output_dir), "--adapter_only"]
    with caplog.at_level(logging.INFO, logger="cocoop_hf.convert_official"):
        convert(argv_)
    last = caplog.records[-1].getMessage()
    assert last == f"Saved the adapter-only CoCoOpModel in {output_dir.resolve()}."


# ---------------------------------------------------------------------------------------------- the Hub


def test_offline_hub_id_is_one_line_naming_it_and_the_fix(tmp_path, capsys, monkeypatch):
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: its constant is what transformers asks.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    made_up = "made-up-org/no-such-clip-0451"
    line = failed_line(capsys, lambda: run_cocoop.main(argv(tmp_path / "out", "--clip_model_name_or_path", made_up)))
    assert line.startswith(f"error: cannot load {made_up!r}: HF_HUB_OFFLINE is set and it is not in the local")
    assert "local folder" in line and "HF_HUB_OFFLINE=0" in line
    assert not (tmp_path / "out").exists()


def test_offline_hub_dataset_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    import datasets

    from .conftest import tiny_run_argv

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # datasets too reads it once, at import
    run_argv = tiny_run_argv(tmp_path / "out", ["--dataset_name", "made-up-org/no-such-dataset-0451"])
    line = failed_line(capsys, lambda: run_cocoop.main(run_argv))
    assert line.startswith("error: cannot load 'made-up-org/no-such-dataset-0451': HF_HUB_OFFLINE is set")


def test_unreachable_hub_is_told_from_offline_mode(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError
    from transformers import AutoConfig

    from cocoop_hf_training.command_errors import hub_error_message

    # What huggingface_hub raises when the Hub does not answer and the file is not cached, without HF_HUB_OFFLINE.
    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub ...")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("transformers.utils.hub.hf_hub_download", unreachable)
    with pytest.raises(OSError) as error:
        AutoConfig.from_pretrained("made-up-org/unreachable-clip")
    message = hub_error_message(error.value)
    assert message.startswith("cannot load 'made-up-org/unreachable-clip': the Hugging Face Hub could not be reached")
    assert hub_error_message(OSError("some other failure")) is None


def test_a_folder_that_does_not_exist_is_one_line(tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "clip"
    line = failed_line(
        capsys, lambda: run_cocoop.main(argv(tmp_path / "out", "--clip_model_name_or_path", str(missing)))
    )
    why = "there is no such folder, and it is not a Hub id (namespace/name). Check the path."
    assert line == f"error: cannot load {str(missing)!r}: {why}"


# ---------------------------------------------------------------------------------------------- the [train] extra


@pytest.mark.parametrize("module", ["datasets", "yaml"])
def test_missing_train_extra_is_one_line(module, tmp_path, capsys, monkeypatch):
    config = tmp_path / "run.yaml"
    config.write_text("seed: 1\n")
    monkeypatch.setitem(sys.modules, module, None)  # `import <module>` now raises ModuleNotFoundError
    line = failed_line(capsys, lambda: run_cocoop.main([str(config), *argv(tmp_path / "out")]))
    distribution = {"datasets": "datasets", "yaml": "pyyaml"}[module]
    expected = (
        f'error: cocoop-hf train needs the training extras: pip install "cocoop-hf[train]" (missing: {distribution})'
    )
    assert line == expected


def test_transformers_asking_for_accelerate_is_one_line(tmp_path, capsys, monkeypatch):
    import transformers.training_args

    monkeypatch.setattr(transformers.training_args, "is_accelerate_available", lambda *args: False)
    line = failed_line(capsys, lambda: run_cocoop.main(argv(tmp_path / "out")))
    assert line.endswith('needs the training extras: pip install "cocoop-hf[train]" (missing: accelerate)')


def test_other_import_errors_keep_their_traceback(capsys):
    def broken():
        raise ImportError("cannot import name 'x' from 'somewhere'")

    with pytest.raises(ImportError, match="cannot import name"):
        run_script(broken)


# ---------------------------------------------------------------------------------------------- split files


def test_missing_split_file_names_the_command_that_generates_it(tmp_path, capsys):
    bench = get_benchmark("OxfordPets")
    (tmp_path / bench.folder / bench.image_subdir).mkdir(parents=True)
    line = failed_line(capsys, lambda: load_benchmark("OxfordPets", tmp_path))
    assert "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md" in line
    command = re.search(r"(cocoop-hf generate-split .*?) \(", line).group(1)
    words = shlex.split(command)
    assert words[:4] == ["cocoop-hf", "generate-split", "--benchmark", "OxfordPets"] and words[4] == "--data_root"
    assert Path(words[5]) / bench.folder == tmp_path / bench.folder  # the folder generate_split_file writes into
    (tmp_path / get_benchmark("StanfordCars").folder).mkdir()
    line = failed_line(capsys, lambda: load_benchmark("StanfordCars", tmp_path))
    assert "generate-split" not in line and "generating it from the original annotations is not supported" in line


# ---------------------------------------------------------------------------------------------- Ctrl-C in a run


def test_ctrl_c_while_a_checkpoint_is_written_names_the_complete_one_a_rerun_resumes_from(
    tmp_path, capsys, monkeypatch
):
    output_dir = tmp_path / "out"
    # 5 steps: checkpoints 2 and 4
    run_argv = argv(output_dir, "--save_strategy", "steps", "--save_steps", "2", "--max_eval_samples", "20")
    real_save_rng_state = run_cocoop.CoCoOpTrainer._save_rng_state

    def interrupted_at_step_4(self, folder):
        if self.state.global_step == 4:  # checkpoint-4 half written: weights and optimizer, no marker
            raise KeyboardInterrupt
        real_save_rng_state(self, folder)

    monkeypatch.setattr(run_cocoop.CoCoOpTrainer, "_save_rng_state", interrupted_at_step_4)
    line = failed_line(capsys, lambda: run_cocoop.main(run_argv), status=130)
    checkpoint = str(output_dir / "checkpoint-2")
    assert line == (
        f"interrupted: {checkpoint} is saved; run the same command with --resume_from_checkpoint latest added to "
        f"resume from {checkpoint}"
    )
    assert [p.name for p in output_dir.iterdir() if "checkpoint-4" in p.name] == ["tmp-checkpoint-4"]
    # Interrupted again after a resume from 'latest', the same command is what resumes.
    from cocoop_hf_training.interruptions import training_rerun_note

    assert training_rerun_note(output_dir, "latest", "steps").endswith(
        f"run the same command again to resume from {checkpoint}"
    )

    monkeypatch.setattr(run_cocoop.CoCoOpTrainer, "_save_rng_state", real_save_rng_state)
    real_train, resumed = run_cocoop.CoCoOpTrainer.train, []

    def train(self, *args, **kwargs):
        resumed.append(kwargs.get("resume_from_checkpoint"))
        return real_train(self, *args, **kwargs)

    monkeypatch.setattr(run_cocoop.CoCoOpTrainer, "train", train)
    run_script(lambda: run_cocoop.main([*run_argv, "--resume_from_checkpoint", "latest"]))
    assert resumed == [checkpoint]  # the very checkpoint the line named
    out = capsys.readouterr().out
    assert (
        f"Done: the outputs are in {output_dir.resolve()} (results table: {output_dir.resolve() / 'results.md'})"
        in out
    )
    assert (output_dir / "results.md").is_file()


class InterruptAtStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        raise KeyboardInterrupt


def test_ctrl_c_before_any_checkpoint_says_a_rerun_starts_again(tmp_path, capsys, monkeypatch):
    output_dir = tmp_path / "out"
    run_argv = argv(output_dir, evaluate=False)  # --save_strategy no
    line = failed_line(capsys, lambda: run_cocoop.main(run_argv, callbacks=[InterruptAtStep()]), status=130)
    assert line == (
        "interrupted: no checkpoint was saved yet (--save_strategy no); a rerun will start again from the beginning: "
        "run the same command with --overwrite_output_dir (without --resume_from_checkpoint)"
    )
    with pytest.raises(ValueError, match="holds a previous run"):  # why the line names the flag
        run_cocoop.main(run_argv)

    class Started(Exception):
        pass

    def train(self, *args, **kwargs):
        raise Started(kwargs.get("resume_from_checkpoint"))

    monkeypatch.setattr(run_cocoop.CoCoOpTrainer, "train", train)
    with pytest.raises(Started) as started:
        run_cocoop.main([*run_argv, "--overwrite_output_dir"])
    assert started.value.args == (None,)  # from the beginning


def test_ctrl_c_outside_a_run_is_one_line(capsys):
    def interrupted():
        raise KeyboardInterrupt

    assert failed_line(capsys, interrupted, status=130) == "interrupted: stopped (Ctrl-C) before it finished"


def test_traceback_on_request(monkeypatch):
    monkeypatch.setenv("COCOOP_HF_TRACEBACK", "1")

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_script(interrupted)


# ---------------------------------------------------------------------------------------------- grids


@pytest.fixture
def fake_grid(monkeypatch, tmp_path):
    """cocoop_hf_training/run_benchmark.py with a stand-in for run_cocoop.main (tests/test_run_benchmark.py)."""
    fake = FakeRunCocoop()
    monkeypatch.setattr(run_cocoop, "main", fake)
    recipes = {}
    for method in METHOD_INDEX:
        path = tmp_path / "recipes" / f"{method}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"method: {method}\n" + ("" if method == "zeroshot" else "num_shots: 16\n"))
        recipes[method] = path
    monkeypatch.setattr(training_grid, "RECIPES", recipes)
    monkeypatch.setattr(training_grid, "RECIPE_OVERRIDES", {})
    monkeypatch.setattr(run_benchmark, "check_layouts", lambda datasets, data_root: None)
    return fake


def test_ctrl_c_in_a_grid_names_the_cell_what_is_kept_and_where_it_resumes(fake_grid, tmp_path, capsys):
    grid_args = grid_argv(tmp_path, datasets=("eurosat",))  # cells: coop seed 1, 2, cocoop seed 1, 2
    fake_grid.fail[("EuroSAT", "cocoop", 1)] = False  # interrupted before a checkpoint
    line = failed_line(capsys, lambda: run_benchmark.main(grid_args), status=130)
    assert line == (
        "interrupted: cell 3/4 (EuroSAT / cocoop / seed 1) was running; 2 finished cell(s) are kept and are skipped "
        "by a rerun. Run the same command again to continue: this cell starts again from the beginning (it saved no "
        "checkpoint)"
    )
    fake_grid.calls.clear()
    fake_grid.fail[("EuroSAT", "cocoop", 2)] = True  # interrupted after a checkpoint
    line = failed_line(capsys, lambda: run_benchmark.main(grid_args), status=130)
    cell = tmp_path / "grid" / "EuroSAT" / "cocoop" / "seed2"
    assert line == (
        "interrupted: cell 4/4 (EuroSAT / cocoop / seed 2) was running; 3 finished cell(s) are kept and "
        f"are skipped by a rerun. Run the same command again to continue: this cell resumes from {cell}/checkpoint-3"
    )
    assert fake_grid.calls[0]["--overwrite_output_dir"] is True  # the restart the first line announced

    fake_grid.calls.clear()
    run_script(lambda: run_benchmark.main(grid_args))
    assert (
        fake_grid.calls[0]["--output_dir"] == str(cell) and fake_grid.calls[0]["--resume_from_checkpoint"] == "latest"
    )
    assert latest_checkpoint(cell) == f"{cell}/checkpoint-3"  # what --resume_from_checkpoint latest resumes from
    grid = (tmp_path / "grid").resolve()
    out = capsys.readouterr().out
    assert f"Done: the table is {grid / 'table1.md'} (also .json, .png)" in out and (grid / "table1.md").is_file()


def test_transfer_grid_says_where_its_tables_are(tmp_path, capsys, monkeypatch):
    """main's last step, on tables as run_grid and transfer_tables would give them (the whole grid: see
    tests/test_run_transfer_benchmark.py)."""
    monkeypatch.setattr(run_transfer_benchmark, "run_grid", lambda args: {})
    monkeypatch.setattr(run_transfer_benchmark, "transfer_tables", lambda results, methods, targets: {"tables": {}})
    monkeypatch.setattr(run_transfer_benchmark, "transfer_markdown", lambda tables: "the tables")

    def write_tables(output_dir, tables):
        Path(output_dir).mkdir(parents=True)
        (Path(output_dir) / "transfer.md").write_text("the tables")

    monkeypatch.setattr(run_transfer_benchmark, "write_tables", write_tables)
    grid = tmp_path / "grid"
    run_transfer_benchmark.main(["--data_root", str(tmp_path), "--output_dir", str(grid), "--targets", "eurosat"])
    out = capsys.readouterr().out
    assert f"Done: the tables are {grid.resolve() / 'transfer.md'} (also .json, .png)" in out


# ---------------------------------------------------------------------------------------------- evaluate


def test_evaluate_transfer_says_where_its_outputs_are(tmp_path, capsys):
    from cocoop_hf_training.evaluate_transfer import main as evaluate

    targets = tmp_path / "targets.json"
    test_file = str(DEMO / "cifar10_demo" / "test.parquet")
    targets.write_text(
        json.dumps(
            {
                "targets": [
                    {
                        "dataset_display_name": "c",
                        "eval_file": test_file,
                        "image_column": "img",
                        "max_eval_samples": 10,
                    }
                ]
            }
        )  # fmt: skip
    )
    output_dir = tmp_path / "t"
    evaluate(
        ["--clip_model_name_or_path", str(TINY_CLIP), "--random_init_clip", "true", "--method", "zeroshot"]
        + ["--targets", str(targets), "--output_dir", str(output_dir), "--use_cpu", "true"]
    )
    folder = output_dir.resolve()
    assert f"Done: the outputs are in {folder} (results table: {folder / 'results.md'})." in capsys.readouterr().out
