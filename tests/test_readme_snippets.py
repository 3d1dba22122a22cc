"""
Run the README's usage snippets: every ```python block right after a `<!-- tested-snippet -->` line; and check that its
two commands name what exists and are what CI runs.

Each snippet runs in a fresh, empty working folder: what it writes (`my-cocoop/`) lands there, and it may read no path
relative to the repository. Its inputs are the demo assets (`cocoop_hf_training.demo_assets`: absolute paths inside
the package, so the snippet runs as written from any folder, in a clone or an installed wheel), or, where a snippet
assigns `MODEL_DIR = ...` (a folder or Hub id) or `IMAGE = ...` (an image path) at the top level, those lines are
replaced by a saved tiny trained CoCoOp folder and a real image file, so the README can show real ids.
"""

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from .cocoop_sharing import shared_artifacts


REPO = Path(__file__).parents[1]
README = REPO / "README.md"
MARKER = "<!-- tested-snippet -->"
# The two commands of the README's first screen, each a ```bash block right after its marker.
COMMAND_MARKER = "<!-- readme-command: {} -->"
INSTALL_AND_DEMO, TESTS = "install-and-demo", "tests"


def marked_snippets() -> list[str]:
    if not README.exists():
        return []
    return re.findall(rf"^{re.escape(MARKER)}[ \t]*\n```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


SNIPPETS = marked_snippets()


def test_marked_blocks_are_python_blocks():
    """A marker that is not directly followed by a ```python block would silently skip a snippet."""
    if not README.exists():
        pytest.skip("README.md does not exist yet")
    assert README.read_text().count(MARKER) == len(SNIPPETS)


def test_the_usage_section_opens_with_a_tested_snippet_that_needs_no_substitution():
    """The first snippet of Usage runs as written: no MODEL_DIR / IMAGE line for the test to replace."""
    usage = README.read_text().split("\n## Usage\n", 1)[1]
    first_block = usage.index("```python")
    assert usage[:first_block].rstrip().endswith(MARKER)
    snippet = marked_snippets_of(usage)[0]
    assert not re.search(r"^(MODEL_DIR|IMAGE)\s*=", snippet, flags=re.M)


def marked_snippets_of(text: str) -> list[str]:
    return re.findall(rf"^{re.escape(MARKER)}[ \t]*\n```python\n(.*?)^```", text, flags=re.S | re.M)


def repl_paste_problems(snippet: str) -> list[str]:
    """Lines where pasting `snippet` into the interactive `python` prompt breaks although the script runs: there a
    top-level statement right after an indented block, with no blank line between, is a SyntaxError (Python 3.11)."""
    problems, previous = [], ""
    for number, line in enumerate(snippet.splitlines(), 1):
        if line and not line[0].isspace() and previous[:1].isspace() and not line.startswith(("else", "elif", "except", "finally")):
            problems.append(f"line {number}: {line!r} follows an indented block without a blank line")
        previous = line
    return problems


def test_the_paste_check_finds_a_block_without_its_blank_line():
    assert repl_paste_problems("with x:\n    y = 1\nz = 2\n")
    assert not repl_paste_problems("with x:\n    y = 1\n\nz = 2\n")
    assert not repl_paste_problems("try:\n    y = 1\nexcept E:\n    pass\n")


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_can_be_pasted_into_python(index):
    assert repl_paste_problems(SNIPPETS[index]) == []


@pytest.mark.skipif(not SNIPPETS, reason=f"README.md has no ```python block marked with {MARKER} yet")
@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs(index, tmp_path, tmp_path_factory, monkeypatch):
    shared = shared_artifacts(tmp_path_factory)
    values = {"MODEL_DIR": str(shared.full_dir), "IMAGE": str(shared.images["red"])}
    code = SNIPPETS[index]
    for name, value in values.items():
        code = re.sub(rf"^{name}\s*=.*$", f"{name} = {value!r}", code, flags=re.M)
    working_folder = tmp_path / "user"
    working_folder.mkdir()
    monkeypatch.chdir(working_folder)
    exec(compile(code, f"README snippet {index}", "exec"), {"__name__": "__readme__"})


def readme_command(name: str) -> str:
    marker = re.escape(COMMAND_MARKER.format(name))
    found = re.findall(rf"^{marker}[ \t]*\n```bash\n(.*?)\n```", README.read_text(), flags=re.S | re.M)
    assert len(found) == 1, f"README.md needs exactly one ```bash block after {COMMAND_MARKER.format(name)}"
    assert "\n" not in found[0], "each of the two commands is one line, to copy whole"
    return found[0]


def steps(command: str) -> list[list[str]]:
    return [shlex.split(step) for step in command.split(" && ")]


def test_ci_runs_the_readmes_two_commands_as_written():
    """`.ci/run` is the README's promise checked: it runs both commands, each verbatim as one line."""
    ci_lines = {line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()}
    for name in (INSTALL_AND_DEMO, TESTS):
        assert readme_command(name) in ci_lines, f"`.ci/run` does not run the README's {name} command as written"


def test_the_readmes_commands_name_what_the_repository_has():
    install, tests = steps(readme_command(INSTALL_AND_DEMO)), steps(readme_command(TESTS))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for step in install + tests:
        if step[:3] == ["pip", "install", "-r"]:
            assert (REPO / step[3]).is_file(), step
        if step[:3] == ["pip", "install", "-e"]:
            extra = re.fullmatch(r"\.\[(\w+)\]", step[3]).group(1)
            assert extra in project["optional-dependencies"], step
    command, subcommand, recipe = install[-1]
    assert project["scripts"][command] == "cocoop_hf_training.commands:main" and subcommand == "train"
    assert (REPO / "cocoop_hf_training" / "configs" / f"{recipe}.yaml").is_file()
    assert tests[-1][:4] == ["python", "-m", "pytest", "tests"]
