"""`cocoop-hf convert --help` answers without importing the model package (its parser is a standalone file)."""

import subprocess
import sys


def test_convert_help_imports_neither_torch_nor_the_model_package():
    code = (
        "import sys\n"
        "from cocoop_hf_training import commands\n"
        "status = commands.main(['convert', '--help'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'cocoop_hf'))\n"
        "print('HEAVY', heavy)\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: cocoop-hf convert" in result.stdout and "--checkpoint" in result.stdout
    assert "HEAVY []" in result.stdout, result.stdout[-500:]


def test_the_help_shows_the_parser_the_converter_runs_with():
    from cocoop_hf import convert_official
    from cocoop_hf_training import commands

    shown = commands.convert_help_parser(prog="x")
    used = convert_official.build_parser(prog="x")
    assert [action.option_strings for action in shown._actions] == [action.option_strings for action in used._actions]
    assert shown.format_help() == used.format_help()
