"""A command goes offline at once when the Hub's host does not resolve, instead of ~30 s of retries; it leaves a
user's own offline setting and a reachable Hub alone."""

import socket
import subprocess
import sys
import time

from cocoop_hf_training import commands
from cocoop_hf_training.hub_reachability import (
    UNREACHABLE_MARKER,
    host_does_not_resolve,
    work_offline_if_hub_unreachable,
)


def fails(host, port):
    raise socket.gaierror(-2, "Name or service not known")


def resolves(host, port):
    return [("addr",)]


def test_an_unresolvable_hub_turns_offline_mode_on_and_says_so():
    environ = {}
    note = work_offline_if_hub_unreachable(environ, resolve=fails)
    assert environ["HF_HUB_OFFLINE"] == "1" and environ[UNREACHABLE_MARKER] == "huggingface.co"
    assert note.startswith("note: the Hugging Face Hub (huggingface.co) cannot be reached") and "\n" not in note


def test_a_resolvable_hub_and_a_users_own_setting_are_left_alone():
    environ = {}
    assert work_offline_if_hub_unreachable(environ, resolve=resolves) is None and environ == {}
    for name, value in (("HF_HUB_OFFLINE", "0"), ("TRANSFORMERS_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "0")):
        environ = {name: value}
        assert work_offline_if_hub_unreachable(environ, resolve=fails) is None and environ == {name: value}


def test_the_endpoint_variable_names_the_host_checked():
    seen = []

    def record(host, port):
        seen.append(host)
        raise socket.gaierror(-2, "no")

    environ = {"HF_ENDPOINT": "https://hub.example.org/mirror"}
    work_offline_if_hub_unreachable(environ, resolve=record)
    assert seen == ["hub.example.org"] and environ[UNREACHABLE_MARKER] == "hub.example.org"


def test_a_slow_answer_is_not_taken_for_an_unreachable_hub():
    def slow(host, port):
        time.sleep(2)
        raise socket.gaierror(-2, "late")

    assert host_does_not_resolve("huggingface.co", slow, timeout=0.1) is False


def test_recipes_and_help_do_not_look_for_the_hub(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(
        "cocoop_hf_training.hub_reachability.work_offline_if_hub_unreachable", lambda *a, **k: calls.append(1)
    )
    assert commands.main(["recipes"]) == 0
    assert not commands.COMMANDS["generate-split"].may_use_the_hub and commands.COMMANDS["train"].may_use_the_hub
    assert calls == []


def test_a_hub_id_without_network_fails_fast_with_one_line(tmp_path):
    """The real thing, in a fresh process (the variables are read at import): this machine has no route to the Hub.
    Skipped nowhere: if the Hub resolved here, the command would go on to retries, and the bound below fails."""
    if not host_does_not_resolve("huggingface.co"):
        import pytest

        pytest.skip("huggingface.co resolves on this machine: the offline path cannot be shown here")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "cocoop_hf_training.commands", "train", "demo_tiny_cifar10",
         "--backbone", "openai/clip-vit-base-patch16", "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Retrying" not in result.stderr and "Name or service not known" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "openai/clip-vit-base-patch16" in lines[0], result.stderr[-2000:]
    # Says why (the Hub cannot be reached), not "HF_HUB_OFFLINE is set": the user set nothing.
    assert "(huggingface.co) cannot be reached from here" in lines[0] and "HF_HUB_OFFLINE is set" not in lines[0]
    assert "note: the Hugging Face Hub (huggingface.co) cannot be reached" in result.stderr
    print(f"failed in {seconds:.1f} s")
