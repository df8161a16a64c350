"""Every ```python block of README.md and docs/**/*.md runs, and shown outputs match.

One test per page: its blocks run in order in one fresh module namespace (as a reader pasting
them into one Python session), and each ```text title="Output"``` block is compared with what
the python block before it printed. A traceback points at the page and line of the failing
statement. The conventions are in ``_markdown_blocks.py``; the count of blocks run is printed
at the end of the session (see ``conftest.py``).
"""

from __future__ import annotations

import contextlib
import doctest
import io
import re
import sys
import types
from pathlib import Path

import jax
import pytest

from ._markdown_blocks import Block, PageFormatError, read_blocks
from .conftest import DOCS_COUNTS

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
_CHECKER = doctest.OutputChecker()
_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _page_id(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


@contextlib.contextmanager
def _global_state_restored():
    # Pages register collection <-> variable type pairs and may flip JAX config flags, as the
    # guide does; neither may leak into the next page or the rest of the suite.
    from linnx.bridge import _registry

    saved = (
        dict(_registry._name_to_type),
        dict(_registry._type_to_name),
        set(_registry._implicit_names),
    )
    threefry = jax.config.jax_threefry_partitionable
    try:
        yield
    finally:
        jax.config.update("jax_threefry_partitionable", threefry)
        with _registry._lock:
            for live, old in zip(
                (_registry._name_to_type, _registry._type_to_name, _registry._implicit_names),
                saved,
                strict=True,
            ):
                live.clear()
                live.update(old)


def run_page(path: Path) -> dict[str, int]:
    """Runs the python blocks of one page; returns how many ran, were skipped, were checked."""
    blocks = read_blocks(path)
    name = "docs_page_" + "".join(c if c.isalnum() else "_" for c in _page_id(path))
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module  # dataclasses (Linen modules) look their module up
    counts = {"run": 0, "skipped": 0, "checked": 0}
    printed = ""
    try:
        with _global_state_restored():
            for block in blocks:
                if block.kind == "python":
                    printed = _run_block(path, block, module)
                    counts["run"] += 1
                elif block.kind == "skip":
                    counts["skipped"] += 1
                elif block.kind == "output":
                    _check_output(path, block, printed)
                    counts["checked"] += 1
    finally:
        del sys.modules[name]
    return counts


def _run_block(path: Path, block: Block, module: types.ModuleType) -> str:
    # Leading newlines put each statement on its line of the page, so a traceback (and
    # linecache, which reads the .md file) shows the page's own line.
    code = compile("\n" * block.line + block.code, str(path), "exec")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, module.__dict__)
    sys.stdout.write(out.getvalue())
    return out.getvalue()


def _check_output(path: Path, block: Block, printed: str) -> None:
    if not _CHECKER.check_output(block.code, printed, _FLAGS):
        example = doctest.Example(source="", want=block.code)
        diff = _CHECKER.output_difference(example, printed, _FLAGS)
        raise AssertionError(
            f"{_page_id(path)}:{block.line}: the output shown on the page is not what the "
            f"python block above it printed.\n{diff}"
        )


@pytest.mark.parametrize("path", PAGES, ids=_page_id)
def test_page_examples_run(path: Path) -> None:
    counts = run_page(path)
    DOCS_COUNTS["pages"] += 1
    for key, value in counts.items():
        DOCS_COUNTS[key] += value


def test_every_page_with_code_has_python_blocks_that_run() -> None:
    # A typo in a fence (```pyhton, ```Python) would silently stop a block from running.
    for path in PAGES:
        for block in read_blocks(path):
            if block.kind == "other":
                assert not block.code.lstrip().startswith(("import ", "from ")), (
                    f"{_page_id(path)}:{block.line}: this block looks like Python but is not "
                    "fenced ```python, so it never runs; fence it ```python (or mark it "
                    "<!-- docs-test: skip REASON -->)"
                )


# -- the runner itself --------------------------------------------------------------------------


def _page(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "page.md"
    path.write_text(text)
    return path


def test_runner_shares_one_namespace_and_checks_outputs(tmp_path):
    page = _page(
        tmp_path,
        "# t\n\n```python\nx = 2\n```\n\ntext\n\n```python\nprint(x * 21, [0] * 30)\n```\n\n"
        '```text title="Output"\n42 [0, 0, ...]\n```\n',
    )
    assert run_page(page) == {"run": 2, "skipped": 0, "checked": 1}


def test_runner_fails_on_a_wrong_output(tmp_path):
    page = _page(tmp_path, '```python\nprint(41)\n```\n```text title="Output"\n42\n```\n')
    with pytest.raises(AssertionError, match=r"page.md:4: the output shown on the page"):
        run_page(page)


def test_runner_reports_the_page_line_of_a_failing_statement(tmp_path):
    page = _page(tmp_path, "intro\n\n```python\nx = 1\ny = 1 / 0\n```\n")
    with pytest.raises(ZeroDivisionError) as info:
        run_page(page)
    assert info.traceback[-1].lineno + 1 == 5  # pytest's lineno is 0-based
    assert str(info.traceback[-1].path) == str(page)


def test_runner_skips_only_marked_blocks_with_a_reason(tmp_path):
    page = _page(
        tmp_path,
        "<!-- docs-test: skip needs a TPU pod -->\n```python\nraise SystemExit\n```\n",
    )
    assert run_page(page) == {"run": 0, "skipped": 1, "checked": 0}
    no_reason = _page(tmp_path, "<!-- docs-test: skip -->\n```python\npass\n```\n")
    with pytest.raises(PageFormatError, match="needs a reason"):
        run_page(no_reason)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("```python\nx = 1\n", "never closed"),
        ('```text title="Output"\n1\n```\n', "must come right after the python block"),
        ("<!-- docs-test: skip why -->\n```bash\nls\n```\n", "only ```python blocks run"),
        ("<!-- docs-test: skip why -->\n\nprose\n```python\n```\n", "just before a ```python"),
        ("<!-- docs-test: raises -->\n", "unknown docs-test marker"),
    ],
)
def test_runner_refuses_malformed_pages(tmp_path, text, message):
    with pytest.raises(PageFormatError, match=message):
        read_blocks(_page(tmp_path, text))


def test_runner_runs_indented_blocks_in_lists(tmp_path):
    page = _page(tmp_path, "- item:\n\n    ```python\n    print('in a list')\n    ```\n")
    assert run_page(page)["run"] == 1


def test_readme_links_to_pages_that_exist():
    links = re.findall(r"\]\((docs/[^)#]+)", (ROOT / "README.md").read_text())
    assert len(links) >= 10
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert not missing, f"README.md links to pages that do not exist: {missing}"
