"""A run that --output_dir would refuse (the same command run twice) is refused at once: before any data is read,
and with the refusal as the only thing it says (no random-weights banner before the `error:` line)."""

import pytest

from cocoop_hf_training import outputs, run_cocoop
from cocoop_hf_training.recipes import CONFIGS
from cocoop_hf_training.script_runner import run_script


DEMO = str(CONFIGS / "demo_tiny_cifar10.yaml")
BANNER = "MACHINERY DEMO: the CLIP weights are random"


def no_data_reading(monkeypatch):
    def read(*args, **kwargs):
        raise AssertionError("the data was read before --output_dir was checked")

    for loader in ("load_data", "load_splits", "load_image_processor"):
        monkeypatch.setattr(run_cocoop, loader, read)


def contents(folder) -> dict:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def refusal(capsys, argv) -> tuple[str, str]:
    """(the `error:` line, everything the run printed before it)."""
    with pytest.raises(SystemExit) as exit_info:
        run_script(lambda: run_cocoop.main(argv), "cocoop-hf train")
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    return lines[-1], captured.out + "\n".join(lines[:-1])


def test_a_second_run_is_refused_before_the_data_and_the_banner(tmp_path, monkeypatch, capsys):
    output_dir = tmp_path / "out"
    outputs.prepare_output_dir(output_dir, False, False)  # a finished previous run: its results.json recorded
    (output_dir / "results.json").write_text("{}")
    outputs.finish_output_dir(output_dir, also=["results.json"])
    before = contents(output_dir)
    no_data_reading(monkeypatch)
    line, said = refusal(capsys, [DEMO, "--output_dir", str(output_dir)])
    assert line.startswith(f"error: --output_dir {output_dir} holds a previous run, finished (results.json)")
    assert "--overwrite_output_dir" in line
    assert BANNER not in said
    assert contents(output_dir) == before  # untouched


def test_an_output_dir_that_is_the_model_folder_is_refused_before_the_data(tmp_path, monkeypatch, capsys):
    clip_folder = (CONFIGS / ".." / "demo" / "tiny-clip").resolve()
    before = contents(clip_folder)
    no_data_reading(monkeypatch)
    line, said = refusal(capsys, [DEMO, "--output_dir", str(clip_folder)])
    assert line.startswith(f"error: --output_dir {clip_folder} is the folder --clip_model_name_or_path")
    assert BANNER not in said
    assert contents(clip_folder) == before


def test_a_run_that_may_write_still_shows_the_banner_and_has_written_nothing(tmp_path, capsys):
    output_dir = tmp_path / "new"
    run = run_cocoop.start_run([DEMO, "--output_dir", str(output_dir)])
    assert run.random_note is not None and run.random_note in capsys.readouterr().out
    assert not output_dir.exists()
