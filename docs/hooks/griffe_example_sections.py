"""A Griffe extension for the API reference (named in mkdocs.yml, excluded from the pages).

linnx's docstrings head their doctested examples ``Example:`` (the style of the package), which
Griffe's Google parser does not know as a section: it would render the ``>>>`` lines as prose,
reading ``x['params']['kernel']`` as a Markdown link. Renaming the heading to ``Examples:``
while the docstring is loaded makes them code, as written.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_HEADING = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Reads an ``Example:`` docstring section as Google's ``Examples:``."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE_HEADING.sub(r"\1Examples:", obj.docstring.value)
