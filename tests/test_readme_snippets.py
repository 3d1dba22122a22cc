"""
Run the README's usage snippets: every ```python block right after a `<!-- tested-snippet -->` line.

A snippet may assign `MODEL_DIR = ...` (a folder or Hub id) and `IMAGE = ...` (an image path) at the top level;
those lines are replaced by a saved tiny CoCoOp folder and a real image file, so the README can show real ids.
"""

import re
from pathlib import Path

import pytest

from .cocoop_sharing import shared_artifacts


README = Path(__file__).parents[1] / "README.md"
MARKER = "<!-- tested-snippet -->"


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


@pytest.mark.skipif(not SNIPPETS, reason=f"README.md has no ```python block marked with {MARKER} yet")
@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs(index, tmp_path_factory, monkeypatch):
    shared = shared_artifacts(tmp_path_factory)
    values = {"MODEL_DIR": str(shared.full_dir), "IMAGE": str(shared.images["red"])}
    code = SNIPPETS[index]
    for name, value in values.items():
        code = re.sub(rf"^{name}\s*=.*$", f"{name} = {value!r}", code, flags=re.M)
    monkeypatch.chdir(shared.root)
    exec(compile(code, f"README snippet {index}", "exec"), dict(values))
