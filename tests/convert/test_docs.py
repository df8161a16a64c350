"""docs/convert.md shows real output: its source, converted, gives its NNX module and map."""

from __future__ import annotations

import json
import re
from pathlib import Path

from linnx import convert

DOC = Path(__file__).parents[2] / "docs" / "convert.md"


def test_the_walkthrough_output_is_what_convert_writes():
    text = DOC.read_text()
    python = re.findall(r"```python\n(.*?)```", text, re.S)
    paths = re.findall(r"```json\n(.*?)```", text, re.S)
    source, expected = python[0], python[1]
    result = convert.convert_source(
        source, ["CNN()(jnp.ones((2, 6, 6, 1)), train=False)"], path="model.py"
    )
    assert result.ok, result.report()
    assert result.code == expected
    assert result.path_map == json.loads(paths[0])
    report = result.report()
    shown = re.findall(r"```text\n(linnx convert model\.py\n.*?)```", text, re.S)[0]
    for line in shown.splitlines():
        if not line.startswith("wrote "):
            assert line in report
