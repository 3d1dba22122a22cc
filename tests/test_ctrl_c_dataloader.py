"""Ctrl-C that reaches a DataLoader's workers first (one process group) ends as the one `interrupted:` line, not
torch's "DataLoader worker ... exited unexpectedly" traceback; a worker that dies on its own keeps its traceback."""

import signal

import pytest

from cocoop_hf_training import interruptions
from cocoop_hf_training.script_runner import run_script


WORKER_DIED = "DataLoader worker (pid(s) 30052) exited unexpectedly"


@pytest.fixture(autouse=True)
def fresh_flag():
    interruptions.CTRL_C_SEEN.clear()
    yield
    interruptions.CTRL_C_SEEN.clear()


def test_the_handler_raises_keyboard_interrupt_and_remembers_it():
    with pytest.raises(KeyboardInterrupt):
        interruptions.note_ctrl_c(signal.SIGINT, None)
    assert interruptions.CTRL_C_SEEN.is_set()


def test_after_ctrl_c_a_dead_worker_is_the_interruption_with_its_rerun_note():
    interruptions.CTRL_C_SEEN.set()
    with pytest.raises(interruptions.RunInterrupted, match="resume from here"):
        with interruptions.rerun_note(lambda: "resume from here"):
            raise RuntimeError(WORKER_DIED)


def test_run_script_prints_one_line_when_the_worker_died_of_the_ctrl_c(capsys):
    def main():
        interruptions.CTRL_C_SEEN.set()  # as the handler run_script installed would, on the signal
        raise RuntimeError(WORKER_DIED)

    with pytest.raises(SystemExit) as exit_info:
        run_script(main)
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip().splitlines() == ["interrupted: stopped (Ctrl-C) before it finished"]


def test_a_worker_that_died_without_ctrl_c_keeps_its_traceback():
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        run_script(lambda: (_ for _ in ()).throw(RuntimeError(WORKER_DIED)))
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        with interruptions.rerun_note(lambda: "never said"):
            raise RuntimeError(WORKER_DIED)


def test_run_script_installs_the_handler_only_for_its_call_and_clears_an_old_flag():
    seen = {}

    def main():
        seen["handler"] = signal.getsignal(signal.SIGINT)
        seen["flag"] = interruptions.CTRL_C_SEEN.is_set()

    interruptions.CTRL_C_SEEN.set()  # left over from an earlier call in this process
    # Python's default handler, as a command process has it (a test runner's worker may have its own, or ignore it).
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run_script(main)
        assert seen == {"handler": interruptions.note_ctrl_c, "flag": False}
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        # A caller's own handler is left in place: run_script installs nothing then.
        signal.signal(signal.SIGINT, lambda signum, frame: None)
        run_script(main)
        assert seen["handler"] is not interruptions.note_ctrl_c
    finally:
        signal.signal(signal.SIGINT, outer)
