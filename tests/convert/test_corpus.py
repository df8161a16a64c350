"""The corpus: Linen modules written the way real projects write them (Flax's examples,
big_vision, BERT-style encoders) convert, verify on their examples, and pass ruff.

Each file names its examples in ``# example: EXPR`` comments. The conversion result must
also keep what is not a converted class as written (module docstring, comments, helpers).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from linnx import convert

from ._util import ruff

CORPUS = sorted((Path(__file__).parent / "corpus").glob("*.py"))


def examples(source: str) -> list[str]:
    return re.findall(r"^# example: (.*)$", source, re.M)


def test_the_corpus_is_big_enough():
    assert len(CORPUS) >= 15


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_module_converts_and_verifies(path, tmp_path):
    source = path.read_text()
    result = convert.convert_source(source, examples(source), path=path.name)
    assert result.ok, result.report()
    assert ruff(result.code, tmp_path) == ""
    # What is not a converted class is kept as written: the docstring and example comments.
    docstring = source.split('"""')[1]
    assert docstring in result.code
    for line in source.splitlines():
        if line.startswith("# example:"):
            assert line in result.code
    converted = {c.name for c in result.converted}
    bases = "|".join(["nnx\\.Module", *converted])  # a converted mixin is a base too
    for name in converted:
        assert re.search(rf"^class {name}\(({bases})\):", result.code, re.M), name
    if path.stem == "wrapped_sequential":
        assert [k.name for k in result.kept] == ["Head"]
        assert "# TODO(linnx convert): Head stays Linen" in result.code
    else:
        assert result.kept == []
    # Nothing of Linen's module API is left in a converted class.
    for name in converted:
        body = result.code.split(f"class {name}(", 1)[1].split("\nclass ", 1)[0]
        assert not re.search(r"nn\.compact|self\.param\(|self\.variable\(|\bnn\.Module\b", body)
