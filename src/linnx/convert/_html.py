"""The conversion report as one self-contained HTML page (``linnx convert --html``).

Each converted class is shown with its Linen source on the left and its NNX source on the
right, the way the migration guide sets the two side by side. Within a class the Linen
``setup``/fields line up with the NNX ``__init__`` and each method with its namesake; inside
those blocks, statements are paired by the layers they build or call (the converter knows
which Linen call site became which NNX attribute) and otherwise by equal text. A layer whose
two halves sit in different blocks (a compact ``nn.Dense(...)(x)`` line becomes a
construction in ``__init__`` and a call in ``__call__``) gets a coloured tag on both sides
that links to its other half. Then come the weight map, the verification table and the
classes kept as Linen. The page needs no JavaScript and loads nothing: the CSS is inline and
code is coloured with Pygments when it is installed (escaped plain text otherwise).
"""

from __future__ import annotations

import ast
import html
import io
import os
import re
import tokenize
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._public import public
from ._errors import ConvertError, OutputPathError

if TYPE_CHECKING:
    from ..migrate import Pair
    from ._api import ConversionResult, ConvertedClass

__all__ = ["render_html", "write_html", "check_report_path"]

_PALETTE = 8  # tag colours, cycled per class


# -- source structure ---------------------------------------------------------------------------


@dataclass
class _Unit:
    """One logical line (a statement, possibly over several physical lines)."""

    first: int
    last: int
    anchors: frozenset[str] = frozenset()
    key: str = ""


def _logical_units(text: str) -> list[tuple[int, int]]:
    """(first, last) physical line of every logical line; each physical line in exactly one."""
    n = len(text.splitlines())
    spans: list[tuple[int, int]] = []
    start, depth = None, 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type in (tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
                continue
            if start is None:
                start = tok.start[0]
            if tok.type == tokenize.OP and tok.string in "([{":
                depth += 1
            elif tok.type == tokenize.OP and tok.string in ")]}":
                depth = max(depth - 1, 0)
            elif tok.type == tokenize.NEWLINE or (tok.type == tokenize.NL and depth == 0):
                spans.append((start, tok.start[0]))
                start = None
    except (tokenize.TokenError, SyntaxError):  # a fragment that does not tokenize: by line
        return [(i, i) for i in range(1, n + 1)]
    covered = {i for a, b in spans for i in range(a, b + 1)}
    spans += [(i, i) for i in range(1, n + 1) if i not in covered]
    return sorted(spans)


def _class_nodes(text: str) -> dict[str, ast.ClassDef]:
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return {}
    return {s.name: s for s in tree.body if isinstance(s, ast.ClassDef)}


def _first_line(node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    return min([node.lineno, *(d.lineno for d in node.decorator_list)])


def _blocks(
    node: ast.ClassDef, spans: Sequence[tuple[int, int]], *, linen: bool
) -> dict[str, list[tuple[int, int]]]:
    """Logical lines of a class grouped as: ``__init__`` (header, fields, setup), methods."""
    methods = [
        (("__init__" if linen and m.name == "setup" else m.name), _first_line(m), m.end_lineno)
        for m in node.body
        if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    out: dict[str, list[tuple[int, int]]] = {"__init__": []}
    current = "__init__"
    for first, last in spans:
        if first < _first_line(node) or first > (node.end_lineno or 0):
            continue
        for name, a, b in methods:
            if a <= first <= (b or a):
                current = name
                break
        out.setdefault(current, []).append((first, last))
    return out


def _norm(text: str) -> str:
    """The text two sides share when they say the same thing (a Linen field ``name: int``
    and the NNX ``self.name = name`` that keeps it count as the same)."""
    text = " ".join(text.split()).rstrip(",").replace("nnx.", "nn.")
    field = re.fullmatch(r"(\w+)\s*:[^=]+(=.*)?", text) or re.fullmatch(r"self\.(\w+) = \1", text)
    if field:
        return f"field {field.group(1)}"
    method = re.match(r"(async )?def (\w+)\(", text)  # a signature that lost its flags
    return f"def {method.group(2)}" if method else text


def _units(
    spans: Iterable[tuple[int, int]],
    lines: Sequence[str],
    anchor_of: dict[int, set[str]],
    attrs: set[str],
    var_names: dict[str, str],
) -> list[_Unit]:
    out = []
    for first, last in spans:
        text = "\n".join(lines[first - 1 : last])
        found = set(re.findall(r"\bself\.(\w+)", text)) & attrs
        for i in range(first, last + 1):
            found |= anchor_of.get(i, set())
        if re.search(r"self\.(param|variable)\(", text):
            for name, attr in var_names.items():
                if re.search(rf"""['"]{re.escape(name)}['"]""", text):
                    found.add(attr)
        out.append(_Unit(first, last, frozenset(found), _norm(text)))
    return out


def _score(a: _Unit, b: _Unit) -> float:
    if a.anchors & b.anchors:
        return 3.0
    if a.key and a.key == b.key:
        return 2.0
    if not a.key and not b.key:
        return 0.1  # blank lines: keep method separators level
    return 0.0


def _align(a: Sequence[_Unit], b: Sequence[_Unit]) -> list[tuple[_Unit | None, _Unit | None]]:
    """Rows of a monotone best pairing; unpaired runs between pairs share rows in order."""
    n, m = len(a), len(b)
    best = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            s = _score(a[i], b[j])
            v = max(best[i + 1][j], best[i][j + 1])
            best[i][j] = max(v, s + best[i + 1][j + 1]) if s else v
    rows: list[tuple[_Unit | None, _Unit | None]] = []
    left: list[_Unit] = []
    right: list[_Unit] = []

    def flush() -> None:
        for k in range(max(len(left), len(right))):
            rows.append((left[k] if k < len(left) else None, right[k] if k < len(right) else None))
        left.clear()
        right.clear()

    i = j = 0
    while i < n and j < m:
        s = _score(a[i], b[j])
        if s and best[i][j] == s + best[i + 1][j + 1]:
            flush()
            rows.append((a[i], b[j]))
            i, j = i + 1, j + 1
        elif best[i][j] == best[i + 1][j]:
            left.append(a[i])
            i += 1
        else:
            right.append(b[j])
            j += 1
    left += a[i:]
    right += b[j:]
    flush()
    return rows


# -- highlighting -------------------------------------------------------------------------------


def _highlighter():
    """(lines -> HTML lines, CSS) with Pygments, or plain escaping when it is missing."""
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer
    except ImportError:
        return (lambda text: [html.escape(x) for x in text.split("\n")]), ""
    fmt = HtmlFormatter(nowrap=True, style="default")
    lexer = PythonLexer(stripnl=False, ensurenl=False)

    def render(text: str) -> list[str]:
        # HtmlFormatter closes and reopens its spans at every newline: lines stay balanced.
        return highlight(text, lexer, fmt).split("\n")

    return render, fmt.get_style_defs(".code")


# -- the page -----------------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em; color: #1f2328; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 1.8em; }
h3 { font-size: 1.1em; margin: 1.4em 0 .3em; } h3 small { color: #656d76; font-weight: 400; }
.counts { font-size: 1.05em; padding: .5em .8em; background: #f6f8fa; border-radius: 6px; }
.ok { color: #1a7f37; font-weight: 600; } .failed { color: #cf222e; font-weight: 600; }
.meta { color: #57606a; margin: .2em 0 .5em; }
table { border-collapse: collapse; }
table.sbs { width: 100%; table-layout: fixed; border: 1px solid #d0d7de; }
table.sbs th { background: #f6f8fa; text-align: left; padding: .3em .6em; }
table.sbs td { vertical-align: top; padding: 0 .4em; border-top: 1px solid #eaeef2; }
table.sbs td.mid { width: 9em; text-align: center; background: #fafbfc; font-size: 12px; }
table.sbs tr.paired td.linen, table.sbs tr.paired td.nnx { background: #f3f8ff; }
.code { font: 12.5px/1.5 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.code .l { white-space: pre-wrap; overflow-wrap: anywhere; padding-left: 3.4em;
           text-indent: -3.4em; }
.code .l:target { background: #fff8c5; }
.code a.ln { display: inline-block; width: 3em; text-indent: 0; color: #8c959f;
             text-decoration: none; text-align: right; margin-right: .4em; }
.tag { display: inline-block; margin: 1px 2px; padding: 0 .45em; border-radius: 8px;
       text-decoration: none; color: #1f2328; white-space: nowrap; }
.c0 { background: #ddf4ff; } .c1 { background: #dafbe1; } .c2 { background: #fff8c5; }
.c3 { background: #ffebe9; } .c4 { background: #fbefff; } .c5 { background: #ffefdb; }
.c6 { background: #d8f3f0; } .c7 { background: #eaeef2; }
table.data th, table.data td { border: 1px solid #d0d7de; padding: .25em .6em;
                               text-align: left; vertical-align: top; }
table.data th { background: #eef2f6; }  /* distinct: the browser test finds the tables by it */
table.data td.mono { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12.5px; }
.err { white-space: pre-wrap; color: #cf222e; font-size: 12.5px; }
details { margin: .3em 0 1em; } summary { cursor: pointer; color: #0969da; }
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _shape(shape: Sequence[int], dtype: str) -> str:
    return f"({', '.join(map(str, shape))}{',' if len(shape) == 1 else ''}) {dtype}"


class _Page:
    def __init__(self, result: ConversionResult):
        self.r = result
        self.render, self.style = _highlighter()
        self.src_lines = result.source.splitlines()
        self.dst_lines = result.code.splitlines()
        self.html: dict[str, dict[int, str]] = {"L": {}, "N": {}}  # side -> line -> HTML
        self.src_classes = _class_nodes(result.source)
        self.dst_classes = _class_nodes(result.code)
        self.src_spans = _logical_units(result.source) if result.source else []
        self.dst_spans = _logical_units(result.code)

    def lines(self, side: str, unit: _Unit | None) -> str:
        if unit is None:
            return ""
        out = []
        for n in range(unit.first, unit.last + 1):
            code = self.coloured(side, n)
            out.append(
                f'<div class="l" id="{side}{n}"><a class="ln" href="#{side}{n}">{n}</a>{code}</div>'
            )
        return "".join(out)

    def coloured(self, side: str, n: int) -> str:
        """Line ``n`` as HTML; the whole top-level class around it is highlighted at once (a
        class is lexically self-contained, and a file's other code is never shown)."""
        done = self.html[side]
        if n not in done:
            lines = self.src_lines if side == "L" else self.dst_lines
            nodes = (self.src_classes if side == "L" else self.dst_classes).values()
            first, last = next(
                (
                    (_first_line(c), c.end_lineno or n)
                    for c in nodes
                    if _first_line(c) <= n <= (c.end_lineno or n)
                ),
                (n, n),
            )
            text = "\n".join(lines[first - 1 : last])
            done.update(zip(range(first, last + 1), self.render(text), strict=False))
        return done.get(n, "")

    def class_section(self, c: ConvertedClass) -> str:
        lnode, nnode = self.src_classes.get(c.name), self.dst_classes.get(c.name)
        meta = []
        if c.size_args:
            meta.append("input sizes as arguments: " + ", ".join(c.size_args))
        if c.dropped_flags:
            meta.append(", ".join(c.dropped_flags) + " became model.train()/model.eval()")
        head = (
            f'<section class="class" id="class-{_e(c.name)}" data-class="{_e(c.name)}">'
            f"<h3>{_e(c.name)} <small>Linen line {c.line}</small></h3>"
            + "".join(f'<p class="meta">{_e(m)}</p>' for m in meta)
        )
        attrs = {a for _, a in c.layers} | {a for _, a in c.variables}
        anchor_of: dict[int, set[str]] = {}
        for line, attr in c.layers:
            anchor_of.setdefault(line, set()).add(attr)
        var_names = dict(c.variables)
        lblocks = _blocks(lnode, self.src_spans, linen=True) if lnode else {"__init__": []}
        nblocks = _blocks(nnode, self.dst_spans, linen=False) if nnode else {"__init__": []}
        rows: list[tuple[_Unit | None, _Unit | None]] = []
        for key in [*nblocks, *(k for k in lblocks if k not in nblocks)]:
            lu = _units(lblocks.get(key, []), self.src_lines, anchor_of, attrs, var_names)
            nu = _units(nblocks.get(key, []), self.dst_lines, {}, attrs, var_names)
            rows += _align(lu, nu)
        colour = {a: i % _PALETTE for i, a in enumerate(sorted(attrs))}
        first_l: dict[str, int] = {}
        first_n: dict[str, int] = {}
        for lu_, nu_ in rows:
            for u, d in ((lu_, first_l), (nu_, first_n)):
                for a in u.anchors if u else ():
                    d.setdefault(a, u.first)  # type: ignore[union-attr]
        body = []
        for lu_, nu_ in rows:
            la = lu_.anchors if lu_ else frozenset()
            na = nu_.anchors if nu_ else frozenset()
            tags = [
                # a paired call links to its construction when that is on another row
                f'<a class="tag c{colour[a]}" href="#N{first_n[a]}" title="its construction">'
                f"{_e(a)}</a>"
                if nu_ is not None and not nu_.first <= first_n[a] <= nu_.last
                else f'<span class="tag c{colour[a]}" title="paired">{_e(a)}</span>'
                for a in sorted(la & na)
            ]
            tags += [
                f'<a class="tag c{colour[a]}" href="#N{first_n[a]}" title="its NNX '
                f'line">{_e(a)} &#8594;</a>'
                for a in sorted(la - na)
                if a in first_n
            ]
            tags += [
                f'<a class="tag c{colour[a]}" href="#L{first_l[a]}" title="its Linen '
                f'line">&#8592; {_e(a)}</a>'
                for a in sorted(na - la)
                if a in first_l
            ]
            cls = ' class="paired"' if la & na else ""
            body.append(
                f'<tr{cls}><td class="code linen">{self.lines("L", lu_)}</td>'
                f'<td class="mid">{"".join(tags)}</td>'
                f'<td class="code nnx">{self.lines("N", nu_)}</td></tr>'
            )
        return (
            head + '<table class="sbs"><colgroup><col><col style="width:9em"><col>'
            "</colgroup><thead><tr><th>Linen</th><th></th><th>NNX</th></tr></thead><tbody>"
            + "".join(body)
            + "</tbody></table></section>"
        )

    def weight_table(self) -> str:
        pairs: dict[str, Pair] = {}
        for check in self.r.checks:
            for p in getattr(check.plan, "pairs", ()):
                for leaf in p.linen:
                    pairs.setdefault(leaf.split("/", 1)[-1], p)
        rows = []
        for lpath, npath in self.r.path_map.items():
            p = pairs.get(lpath)
            if p is None:
                shape, layout = "&#8212;", "&#8212;"
            else:
                shape = _e(_shape(p.linen_shape, p.linen_dtype))
                if (p.nnx_shape, p.nnx_dtype) != (p.linen_shape, p.linen_dtype):
                    shape += " &#8594; " + _e(_shape(p.nnx_shape, p.nnx_dtype))
                layout = _e(p.layout)
                if p.layout.kind == "copy":
                    layout = "none" if p.nnx_shape == p.linen_shape else "reshape"
            rows.append(
                f'<tr><td class="mono">{_e(lpath)}</td><td class="mono">{_e(npath)}'
                f'</td><td class="mono">{shape}</td><td>{layout}</td></tr>'
            )
        return (
            '<table class="data weights"><thead><tr><th>Linen path</th><th>NNX path</th>'
            "<th>shape</th><th>layout change</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table>"
        )

    def check_table(self) -> str:
        if not self.r.checks:
            return '<p class="meta">Not verified (the conversion ran with verify=False).</p>'
        rows = []
        for c in self.r.checks:
            diffs = getattr(c.report, "differences", ())
            compared = ", ".join(f"{d.mode}: {d.name}" for d in diffs) or "&#8212;"
            compared = _e(compared) if diffs else compared
            mx = f"{c.report.max_abs:.3g}" if c.report is not None else "&#8212;"
            state = '<span class="ok">ok</span>' if c.ok else '<span class="failed">failed</span>'
            bad = [f"{d.mode}: {d.name} ({d.max_abs:.3g})" for d in diffs if not d.ok]
            detail = c.error or (", ".join(bad) if bad else "")
            if detail:
                state += f'<div class="err">{_e(detail)}</div>'
            rows.append(
                f'<tr><td class="mono">{_e(c.example)}</td><td>{c.weights}</td>'
                f"<td>{compared}</td><td>{mx}</td><td>{state}</td></tr>"
            )
        return (
            '<table class="data checks"><thead><tr><th>example</th><th>weights moved</th>'
            "<th>outputs compared</th><th>max abs diff</th><th>result</th></tr></thead>"
            "<tbody>" + "".join(rows) + "</tbody></table>"
        )

    def kept_table(self) -> str:
        if not self.r.kept:
            return '<p class="meta">None: every reached class was converted.</p>'
        rows, sources = [], []
        for k in self.r.kept:
            rows.append(
                f'<tr><td class="mono">{_e(k.name)}</td><td>{k.line or "&#8212;"}</td>'
                f"<td>{_e(k.reason)}</td></tr>"
            )
            node = self.src_classes.get(k.name)
            if node is not None:
                unit = _Unit(_first_line(node), node.end_lineno or node.lineno)
                sources.append(
                    f"<details><summary>Linen source of {_e(k.name)}</summary>"
                    f'<div class="code linen">{self.lines("L", unit)}</div>'
                    "</details>"
                )
        return (
            '<table class="data kept"><thead><tr><th>class</th><th>line</th><th>reason'
            "</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>" + "".join(sources)
        )

    def page(self) -> str:
        r = self.r
        status = "not verified"
        if r.checks:
            status = '<span class="ok">verified</span>'
            if not r.ok:
                status = '<span class="failed">verification FAILED</span>'
        counts = (
            f'<p class="counts"><b>{_e(r.path)}</b>: {len(r.converted)} classes '
            f"converted, {len(r.kept)} classes wrapped (kept as Linen, used through "
            f"linnx.ToNNX), {len(r.path_map)} weights mapped; {status}</p>"
        )
        classes = sorted(r.converted, key=lambda c: c.line)
        toc = " &#183; ".join(f'<a href="#class-{_e(c.name)}">{_e(c.name)}</a>' for c in classes)
        notes = "".join(f'<p class="meta">{_e(n)}</p>' for n in r.notes)
        notes += "".join(
            f'<p class="meta">example <code>{_e(layer.example)}</code>: the model is a Flax '
            f"layer, no class to rewrite; in NNX: <code>{_e(layer.nnx)}</code></p>"
            for layer in r.layers
        )
        nav = " &#183; ".join(
            f'<a href="#{k}">{v}</a>'
            for k, v in (
                ("verification", "Verification"),
                ("classes", "Converted classes"),
                ("kept", "Kept as Linen"),
                ("weights", "Weight map"),
            )
        )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>linnx convert {_e(r.path)}</title><style>{_CSS}{self.style}</style>"
            f"</head><body><h1>linnx convert {_e(r.path)}</h1>{counts}{notes}"
            f'<p class="meta">{nav}</p>'
            '<h2 id="verification">Verification</h2>'
            + self.check_table()
            + f'<h2 id="classes">Converted classes</h2><p class="meta">{toc}</p>'
            + "".join(self.class_section(c) for c in classes)
            + self.added()
            + '<h2 id="kept">Kept as Linen (wrapped with linnx.ToNNX)</h2>'
            + self.kept_table()
            + '<h2 id="weights">Weight map</h2>'
            + self.weight_table()
            + "</body></html>\n"
        )

    def added(self) -> str:
        """Classes of the NNX file with no Linen counterpart (the variable types it defines)."""
        out = []
        for name, node in self.dst_classes.items():
            if name in self.src_classes:
                continue
            unit = _Unit(_first_line(node), node.end_lineno or node.lineno)
            code = self.lines("N", unit)
            out.append(
                f'<section class="added" data-class="{_e(name)}"><h3>{_e(name)} '
                "<small>new in the NNX file</small></h3>"
                f'<div class="code nnx">{code}</div></section>'
            )
        return "".join(out)


@public("linnx.convert")
def render_html(result: ConversionResult) -> str:
    """The conversion report as one self-contained HTML page (no scripts, no external files).

    Example:
        >>> from linnx import convert
        >>> src = '''
        ... import flax.linen as nn
        ...
        ... class MLP(nn.Module):
        ...     @nn.compact
        ...     def __call__(self, x):
        ...         return nn.Dense(2)(x)  # x < 0 is fine
        ... '''
        >>> result = convert.convert_source(src, ['MLP()(jnp.ones((1, 3)))'], verify=False)
        >>> page = convert.render_html(result)
        >>> page.startswith('<!DOCTYPE html>'), '&lt; 0' in page, '<script' in page
        (True, True, False)
    """
    return _Page(result).page()


def check_report_path(report: str | os.PathLike, *protected: str | os.PathLike) -> Path:
    """The report path, refused when it is one of ``protected`` (the source, the output).

    Raises:
        OutputPathError: the report would overwrite one of the protected files.

    Example:
        >>> from linnx.convert._html import check_report_path
        >>> check_report_path('report.html', 'model.py').name
        'report.html'
    """
    p = Path(report)
    for other in protected:
        if p.resolve() == Path(other).resolve():
            raise OutputPathError(
                f"--html {report} is {other}, a file the conversion reads or writes.\n"
                f"Fix: write the report to its own file, e.g. --html {Path(other).stem}.html.",
                path=str(other),
            )
    return p


@public("linnx.convert")
def write_html(result: ConversionResult, path: str | os.PathLike) -> Path:
    """Writes :func:`render_html`'s page to ``path`` (written whether or not it verified).

    Raises:
        OutputPathError: ``path`` is the converted source file itself.
        ConvertError: the file cannot be written.

    Example:
        >>> import os, tempfile
        >>> from linnx import convert
        >>> result = convert.convert_source(
        ...     'import flax.linen as nn\\n\\nclass M(nn.Module):\\n    @nn.compact\\n'
        ...     '    def __call__(self, x):\\n        return nn.Dense(2)(x)\\n',
        ...     ['M()(jnp.ones((1, 3)))'])
        >>> out = convert.write_html(result, os.path.join(tempfile.mkdtemp(), 'report.html'))
        >>> '<table class="data weights">' in out.read_text()
        True
    """
    p = check_report_path(path, result.path) if result.path != "<source>" else Path(path)
    try:
        p.write_text(render_html(result), encoding="utf-8")
    except OSError as e:
        raise ConvertError(
            f"--html {path}: cannot write the report: {e.strerror}.\n"
            "Fix: pass a path in an existing, writable directory.",
            path=str(path),
        ) from None
    return p
