"""
Hostile names (quotes, `|`, line breaks, backslashes, HTML, Markdown syntax, unicode) in every Markdown table and code
snippet we write: the model card, results.md, Table 1 and the transfer tables. Tables keep their rows and columns and
show each name as written; the card's Python parses and gives the names back; its YAML front matter stays valid.
"""

import ast
import re
from html.parser import HTMLParser

import pytest
import yaml

from cocoop_hf import render_model_card
from cocoop_hf_training import run_benchmark, run_transfer_benchmark
from cocoop_hf_training.report import markdown_table


HOSTILE = [
    "farmer's field",
    'say "cheese"',
    "pipe | name",
    "line\nbreak",
    "carriage\rreturn",
    "back\\slash\\",
    'triple """ quotes',
    "ünïcödé 🐟 名前",
    "<!-- html <script>x</script>",
    "`code` *em* _u_ [link](http://x) ![img](http://y) &#124; ~s~",
    "sep\u2028arator\x85",
    "tab\there",
    "- [ ] # ---",
]


def shown(name: str) -> str:
    """What a reader must see for `name`: itself, with line breaks and controls as their escapes (`\\n`)."""
    return "".join(
        c.encode("unicode_escape").decode() if c in "\n\r\u2028\u2029\x85" or (ord(c) < 32 and c != "\t") else c
        for c in name
    )


def table_rows(markdown: str, header_start: str) -> list[list[str]]:
    """
    The cells of the GFM table whose header line starts with `header_start`, split as GFM does: at each `|` not
    escaped by a backslash; the table ends at the first line that does not start with `|`.
    """
    lines = markdown.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells, cell, i = [], "", 0
        while i < len(line):
            if line[i] == "\\" and i + 1 < len(line):
                cell += line[i : i + 2]
                i += 2
                continue
            if line[i] == "|":
                cells.append(cell)
                cell = ""
            else:
                cell += line[i]
            i += 1
        cells.append(cell)
        rows.append(cells[1:-1])  # outside the leading and trailing pipes
    return rows


class _Cells(HTMLParser):
    """Text of every <td> of rendered HTML, and whether any tag came from the content."""

    def __init__(self):
        super().__init__()
        self.cells, self.tags, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "td":
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "td":
            self.cells.append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def rendered_cells(markdown: str) -> tuple[list[str], set[str]]:
    """Render with a CommonMark + GFM-tables renderer: the text of each table cell and the set of tags used."""
    markdown_it = pytest.importorskip("markdown_it")
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(markdown)
    parser = _Cells()
    parser.feed(html)
    parser.close()
    return parser.cells, set(parser.tags)


def assert_table(markdown: str, header_start: str, rows: int, columns: int) -> list[list[str]]:
    table = table_rows(markdown, header_start)
    assert len(table) == rows + 2, table  # header, delimiter, rows
    assert [len(row) for row in table] == [columns] * (rows + 2), table
    return table


def test_markdown_cell_shows_each_name_as_written():
    from cocoop_hf.markdown_cocoop import markdown_cell, markdown_code  # (imported here: new with the escaping)

    for name in HOSTILE:
        cell = markdown_cell(name)
        assert "\n" not in cell and "\r" not in cell and "\u2028" not in cell and "\x85" not in cell
        assert re.search(r"(?<!\\)(\\\\)*[|<\[`*_&]", cell) is None, cell  # every special character escaped
    markdown = "| Name | Other |\n|---|---|\n" + "".join(f"| {markdown_cell(n)} | x |\n" for n in HOSTILE)
    assert_table(markdown, "| Name", len(HOSTILE), 2)
    cells, tags = rendered_cells(markdown)
    assert cells[0::2] == [shown(name) for name in HOSTILE]
    assert tags <= {"table", "thead", "tbody", "tr", "th", "td"}  # no link, image, code, emphasis or HTML
    assert markdown_code("a photo of a {}.") == "`a photo of a {}.`"
    assert markdown_code("a `b`\nc") == markdown_cell("a `b`\nc")


def test_results_table_keeps_its_rows_with_hostile_names():
    stat = {"mean": 50.0, "std": 1.0, "n": 2}
    rows = [
        {"dataset": name, "method": "cocoop", "label": f"CoCoOp {name}", "seeds": [1, 2], "scores": {"base": stat}}
        for name in HOSTILE
    ]
    markdown = markdown_table(rows, note="note | with\nbreak")
    table = assert_table(markdown, "| Dataset", len(HOSTILE), 4)
    assert all(row[3].strip() == "50.00 ± 1.00" for row in table[2:])
    assert markdown.startswith("> **note \\| with\\nbreak**\n\n")
    cells, _ = rendered_cells(markdown)
    assert cells[0::4] == [shown(name).strip() for name in HOSTILE]
    assert cells[1::4] == [shown(f"CoCoOp {name}").strip() for name in HOSTILE]


def test_table1_keeps_its_rows_with_hostile_titles():
    stat = {"mean": 60.0, "std": 0.0, "n": 1}
    table = {
        "note": "random | weights",
        "average": {
            "x": {
                "title": "Co|Op\nvariant",
                "n": 2,
                "base": 1.0,
                "new": 2.0,
                "H": 1.33,
                "paper_datasets": False,
                "published": False,
            },  # fmt: skip
        },
        "paper_average": {},
        "rows": [
            {"dataset": name, "title": "Co|Op\nvariant", "seeds": [1], "base": stat, "new": stat, "H": 60.0}
            for name in HOSTILE
        ],
    }
    markdown = run_benchmark.table1_markdown(table)
    assert_table(markdown, "| Method | Datasets", 1, 8)
    assert_table(markdown, "| Dataset | Method", len(HOSTILE), 6)
    assert "Co\\|Op\\nvariant: not the method as published" in markdown
    cells, _ = rendered_cells(markdown)
    assert cells[0] == "Co|Op\\nvariant" and cells[8::6] == [shown(name).strip() for name in HOSTILE]


def test_transfer_table_keeps_its_rows_with_hostile_labels():
    stat = {"mean": 40.0, "std": 0.0, "n": 1}
    labels = {f"m{i}": {"title": name, "published": i > 0} for i, name in enumerate(HOSTILE)}
    tables = {
        "note": None,
        "shots": [],
        "labels": labels,
        "tables": {
            "cross_dataset": {
                "columns": ["ImageNet", "target | with\nbreak"],
                "rows": {label: {"ImageNet": stat, "target | with\nbreak": stat} for label in labels},
                "paper": {"m1": {"ImageNet": 70.0}},
                "average_is_papers": True,
            }
        },
    }
    markdown = run_transfer_benchmark.transfer_markdown(tables)
    table = assert_table(markdown, "| Method |", len(HOSTILE) + 1, 3)  # and one (paper) row
    assert table[0][2].strip() == "target \\| with\\nbreak"
    cells, _ = rendered_cells(markdown)
    titles = [shown(name).strip() for name in HOSTILE]
    assert cells[0::3] == [*titles[:2], f"{titles[1]} (paper)", *titles[2:]]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


def list_literals(tree: ast.AST, call: str, keyword: str | None = None) -> list:
    """`ast.literal_eval` of the list passed to each call of `call` (as `keyword`, or as its first argument)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == call:
            values = [k.value for k in node.keywords if k.arg == keyword] if keyword else node.args[:1]
            found += [ast.literal_eval(value) for value in values]
    return found


@pytest.mark.parametrize("start", range(0, len(HOSTILE), 3))
def test_card_snippets_tables_and_front_matter_with_hostile_names(start):
    names = HOSTILE[start:] + HOSTILE[:start]  # each hostile name is among the snippet's three examples once
    datasets = ["cifar | 10", "a: b\n- c", "'quoted' \"name\""]
    card = render_model_card(
        base_model="openai/clip-vit-base-patch16",
        datasets=datasets,
        results=[{"dataset": name, "base": 70.0, "new": 60.0} for name in datasets],
        recipe={"shots": 16, "odd | key": "value\nwith | break", "lr": 0.002},
        repo_id='me/farmer\'s "field"',
        class_names=names,
        n_ctx=4,
        kgcoop_weight=8.0,
        kgcoop_template="a `photo`\nof a {}.",
    )
    text = str(card)
    blocks = python_blocks(card.text)
    assert len(blocks) == 2
    trees = [ast.parse(block) for block in blocks]  # a SyntaxError fails the test
    assert list_literals(trees[0], "classifier", "candidate_labels") == [names[:3]]
    assert list_literals(trees[1], "set_class_names") == [names[:3]]
    assert list_literals(trees[0], "pipeline", "model") == ['me/farmer\'s "field"']
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["datasets"] == datasets
    assert [result["dataset"]["name"] for result in meta["model-index"][0]["results"]] == datasets
    assert_table(card.text, "| Setting |", 3, 2)
    assert_table(card.text, "| Dataset |", len(datasets), 4)
    cells, _ = rendered_cells(card.text)
    assert ["Shots per class", "16", "odd | key", "value\\nwith | break"] == cells[:4]
    assert [cell for cell in cells if cell.startswith(("cifar", "a:", "'quoted'"))] == [shown(d) for d in datasets]
    trained = [line for line in card.text.split("\n") if line.startswith("Trained classes")]
    assert len(trained) == 1 and "\n" not in shown(trained[0])  # the list stays on its line
    assert "a \\`photo\\`\\nof a {}." in card.text  # the KgCoOp template stays on its line, as written
