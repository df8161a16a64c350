"""The HTML report of ``linnx convert --html``: its structure (parsed with ``html.parser``),
escaping, the plain-text fallback without Pygments, the CLI flag, and how headless Chromium
renders it (skipped where ``chromium`` is not installed)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from linnx import convert
from linnx._cli import main

CORPUS = Path(__file__).parent / "corpus"
VOID = {"meta", "col", "br", "img", "link", "hr", "input"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find_all(self, tag: str, cls: str | None = None) -> list[Node]:
        out = []
        for c in self.children:
            if isinstance(c, Node):
                if c.tag == tag and (cls is None or cls in c.classes):
                    out.append(c)
                out += c.find_all(tag, cls)
        return out

    def kids(self, tag: str) -> list[Node]:
        return [c for c in self.children if isinstance(c, Node) and c.tag == tag]


class Tree(HTMLParser):
    """A strict little DOM: every non-void element must be closed by its own end tag."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#root", {}, None)
        self.feed(text)
        self.close()
        assert self.cur is self.root, f"unclosed <{self.cur.tag}>"

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_endtag(self, tag):
        assert self.cur.tag == tag, f"</{tag}> closes <{self.cur.tag}>"
        self.cur = self.cur.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def corpus_result(name: str) -> convert.ConversionResult:
    path = CORPUS / f"{name}.py"
    source = path.read_text()
    examples = re.findall(r"^# example: (.*)$", source, re.M)
    return convert.convert_source(source, examples, path=path.name)


@pytest.fixture(scope="module")
def wrapped() -> convert.ConversionResult:
    return corpus_result("wrapped_sequential")


def class_span(source: str, name: str) -> list[int]:
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == name)
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return list(range(first, node.end_lineno + 1))


def line_numbers(cell: Node) -> list[int]:
    return [int(a.text()) for a in cell.find_all("a", "ln")]


def rows(table: Node) -> list[Node]:
    (tbody,) = table.kids("tbody")
    return tbody.kids("tr")


def test_report_structure_of_a_corpus_case(wrapped):
    result = wrapped
    page = convert.render_html(result)
    doc = Tree(page).root
    # Self-contained: no scripts, no stylesheets or images fetched from anywhere.
    assert not doc.find_all("script") and not doc.find_all("link") and not doc.find_all("img")
    assert "http://" not in page and "https://" not in page
    # One section per converted class, each with both columns holding the whole class, in order.
    sections = doc.find_all("section", "class")
    assert [s.attrs["data-class"] for s in sections] == [c.name for c in result.converted]
    for section in sections:
        name = section.attrs["data-class"]
        (table,) = section.find_all("table", "sbs")
        left, right = [], []
        for tr in rows(table):
            cells = tr.kids("td")
            assert [("linen" in c.classes, "nnx" in c.classes) for c in cells] == [
                (True, False),
                (False, False),
                (False, True),
            ]
            left += line_numbers(cells[0])
            right += line_numbers(cells[2])
        assert left == class_span(result.source, name)
        assert right == class_span(result.code, name)
        # The line numbers carry the text of those lines.
        first = section.find_all("td", "linen")[0].find_all("div", "l")[0]
        assert first.text().endswith(result.source.splitlines()[left[0] - 1])
    # The Linen Dense call sits on the same row as the NNX call of the attribute it became.
    linear = result.path_map["Dense_0/kernel"].split("/")[0]
    (model,) = [s for s in sections if s.attrs["data-class"] == "Model"]
    paired = [
        tr
        for tr in rows(model.find_all("table", "sbs")[0])
        if "nn.Dense(self.hidden)(x)" in tr.kids("td")[0].text()
    ]
    assert len(paired) == 1 and f"self.{linear}(x)" in paired[0].kids("td")[2].text()
    assert "paired" in paired[0].classes
    # Its construction in __init__ links back to the Linen line.
    back = [a for a in model.find_all("a", "tag") if a.text() == f"\u2190 {linear}"]
    lines = result.source.splitlines()
    dense_line = next(i for i, s in enumerate(lines, 1) if "x = nn.Dense(self.hidden)(x)" in s)
    assert [a.attrs["href"] for a in back] == [f"#L{dense_line}"]
    # The tables: one row per path-map entry, per example, per kept class.
    (weights,) = doc.find_all("table", "weights")
    cells = [[td.text() for td in tr.kids("td")] for tr in rows(weights)]
    assert [c[:2] for c in cells] == [list(kv) for kv in result.path_map.items()]
    shapes = {c[0]: c[2] for c in cells}
    assert shapes["Dense_0/kernel"] == "(4, 8) float32"  # Dense(hidden=8) on 4 features
    assert shapes["head/Dense_1/bias"] == "(2,) float32"
    assert {c[3] for c in cells} == {"none"}
    (checks,) = doc.find_all("table", "checks")
    (row,) = rows(checks)
    example, moved, compared, diff, state = (td.text() for td in row.kids("td"))
    assert example == "Model(hidden=8)(jnp.ones((2, 4)))"
    assert (moved, compared, state) == ("6", "eval: output", "ok")
    assert float(diff) == 0.0
    (kept,) = doc.find_all("table", "kept")
    assert [[td.text() for td in tr.kids("td")] for tr in rows(kept)] == [
        ["Head", str(result.kept[0].line), result.kept[0].reason]
    ]
    assert "nn.Sequential" in result.kept[0].reason
    (counts,) = doc.find_all("p", "counts")
    assert "1 classes converted, 1 classes wrapped" in counts.text()
    assert "6 weights mapped" in counts.text()


ESCAPES = '''\
import flax.linen as nn
import jax.numpy as jnp


class Clip(nn.Module):
    """Keeps x < limit; <b>not bold</b> & no <script>."""

    limit: float = 1.0

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(3)(x)
        seen = self.variable("counter", "seen", lambda: jnp.zeros((), jnp.int32))
        seen.value += 1
        if x.shape[-1] < 4:  # a <comment> with & in it
            x = x * (x < self.limit)
        return x
'''


@pytest.fixture(scope="module")
def escapes() -> convert.ConversionResult:
    return convert.convert_source(ESCAPES, ["Clip()(jnp.ones((1, 2)))"], verify=False)


@pytest.mark.parametrize("pygments", [True, False], ids=["pygments", "plain"])
def test_code_is_escaped(escapes, pygments, monkeypatch):
    result = escapes
    if not pygments:
        monkeypatch.setitem(sys.modules, "pygments", None)  # import raises ImportError
    page = convert.render_html(result)
    assert ('<span class="k">class</span>' in page) is pygments  # Pygments keyword markup
    doc = Tree(page).root
    (section,) = doc.find_all("section", "class")
    for side, text in (("linen", result.source), ("nnx", result.code)):
        cells = section.find_all("td", side)
        # Only the report's own markup inside code cells: no <b>, <script> or <comment>.
        assert {n.tag for c in cells for n in c.find_all("div") + c.find_all("a")} <= {"div", "a"}
        assert not any(c.find_all(t) for c in cells for t in ("b", "script", "comment"))
        lines = [
            div.text()[len(div.find_all("a", "ln")[0].text()) :]
            for c in cells
            for div in c.find_all("div", "l")
        ]
        assert lines == [text.splitlines()[i - 1] for i in class_span(text, "Clip")]
        assert any("x < self.limit" in line for line in lines)
    assert "Not verified" in page
    # The variable type the NNX file defines for the 'counter' collection is shown on its own.
    new = [n.name for n in ast.parse(result.code).body if isinstance(n, ast.ClassDef)]
    new = [n for n in new if f"class {n}(" not in result.source]
    assert new and [s.attrs["data-class"] for s in doc.find_all("section", "added")] == new


def test_write_html_refuses_the_source_and_reports_unwritable_paths(tmp_path):
    src = tmp_path / "model.py"
    src.write_text(ESCAPES)
    result = convert.convert_source(
        ESCAPES, ["Clip()(jnp.ones((1, 2)))"], path=str(src), verify=False
    )
    with pytest.raises(convert.OutputPathError, match=r"--html .*model\.py is .*model\.py"):
        convert.write_html(result, src)
    assert src.read_text() == ESCAPES
    with pytest.raises(convert.ConvertError, match=r"(?s)cannot write the report.*existing"):
        convert.write_html(result, tmp_path / "missing" / "r.html")
    assert result.to_html() == convert.render_html(result)


SMALL = """\
import flax.linen as nn


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.relu(nn.Dense(4)(x)))
"""


def test_cli_html_flag(tmp_path, capsys):
    src, dst, rep = tmp_path / "mlp.py", tmp_path / "mlp_nnx.py", tmp_path / "mlp.html"
    src.write_text(SMALL)
    args = ["convert", str(src), "-o", str(dst), "--example", "MLP()(jnp.ones((1, 3)))"]
    assert main([*args, "--html", str(rep)]) == 0
    assert f"wrote the report {rep}" in capsys.readouterr().out
    doc = Tree(rep.read_text()).root
    assert [s.attrs["data-class"] for s in doc.find_all("section", "class")] == ["MLP"]
    assert len(rows(doc.find_all("table", "weights")[0])) == 4
    # A failed verification still writes the report (that is when it helps most): here the
    # check fails on a tolerance verify() refuses, and the row shows the error.
    dst.unlink()
    failed = tmp_path / "failed.html"
    assert main([*args, "--atol", "-1", "--html", str(failed)]) == 1
    assert not dst.exists()
    (row,) = rows(Tree(failed.read_text()).root.find_all("table", "checks")[0])
    state = row.kids("td")[-1]
    assert state.text().startswith("failed") and "atol=-1" in state.text()
    assert "verification FAILED" in failed.read_text()
    # A report path that is the source or the output: exit 2 and nothing written.
    for bad in (src, dst):
        assert main([*args, "--html", str(bad)]) == 2
        assert "a file the conversion reads or writes" in capsys.readouterr().err
    assert src.read_text() == SMALL and not dst.exists()


# -- rendered by a browser ----------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-extensions",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_chromium_renders_both_columns_and_the_tables(wrapped, tmp_path):
    image = pytest.importorskip("PIL.Image")
    report = convert.write_html(wrapped, tmp_path / "report.html")
    # The DOM Chromium built: a browser re-parents misnested table content, so the same
    # structure as html.parser's proves the markup is well formed for it too.
    dom = chromium("--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr
    doc = Tree(dom.stdout).root
    (section,) = doc.find_all("section", "class")
    assert len(section.find_all("td", "linen")) == len(section.find_all("td", "nnx")) > 5
    counts = [len(rows(doc.find_all("table", t)[0])) for t in ("weights", "checks", "kept")]
    assert counts == [len(wrapped.path_map), 1, 1]
    shot = tmp_path / "report.png"
    done = chromium("--window-size=1400,2600", f"--screenshot={shot}", report.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr
    img = image.open(shot).convert("RGB")
    width, height = img.size
    px = img.load()
    paired_rows = [
        y
        for y in range(height)
        if px[width // 8, y] == (243, 248, 255) and px[width * 7 // 8, y] == (243, 248, 255)
    ]
    assert paired_rows, "no paired row spans both columns"
    # Text in both columns on the paired rows (dark pixels left and right of the middle).
    dark = [[x for x in range(width) if sum(px[x, y]) < 300] for y in paired_rows]
    assert any(x < width * 0.4 for xs in dark for x in xs)
    assert any(x > width * 0.6 for xs in dark for x in xs)
    # The three data tables: three separate bands of their header colour.
    header = [y for y in range(height) if px[24, y] == (238, 242, 246)]
    bands = sum(1 for i, y in enumerate(header) if i == 0 or header[i - 1] != y - 1)
    assert bands == 3


TRICKY = '''\
class A:
    x = (1,  # a comment inside brackets

         2)
    y = 1 + \\
        2
    s = """two
    lines"""

    # alone
    def f(self): return [
        1]
'''


@pytest.mark.parametrize(
    "text", [TRICKY, "x = (1,\n", "def f(:\n  pass\n"], ids=["tricky", "unclosed", "bad-syntax"]
)
def test_statements_cover_every_line_once(text):
    from linnx.convert._html import _logical_units

    spans = _logical_units(text)
    covered = [i for a, b in spans for i in range(a, b + 1)]
    assert covered == list(range(1, len(text.splitlines()) + 1))
    if text is TRICKY:  # one row per statement: the bracket, the continuation, the string
        assert (2, 4) in spans and (5, 6) in spans and (7, 8) in spans and (11, 12) in spans
