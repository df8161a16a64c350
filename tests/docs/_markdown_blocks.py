"""Reads the fenced code blocks of a Markdown page, for the docs example tests.

The conventions a page follows (also written in ``docs/contributing_docs.md``):

- A ```` ```python ```` block is run. The blocks of one page run in order in one namespace, as
  a reader who pastes them one after another into a Python session would.
- A block that must not run is preceded by the line ``<!-- docs-test: skip REASON -->``
  (an HTML comment: the site does not show it). The reason is required.
- A block fenced ```` ```text title="Output" ```` shows what the python block just before it
  prints; the test compares them (``...`` matches anything, runs of whitespace compare equal).
- Any other block (```` ```diff ````, ```` ```bash ````, ```` ```text ```` without the title, a
  bare ```` ``` ````) is prose for the reader and is not run.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\b(?P<reason>.*?)-->\s*$")
_OTHER_MARKER = re.compile(r"^\s*<!--\s*docs-test:")
_OUTPUT_INFO = re.compile(r'^text\s+title="Output"$')


class PageFormatError(ValueError):
    """A page breaks the conventions above (an unclosed fence, a skip without a reason...)."""


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced block: where it starts (1-based line of the fence), its kind and its code."""

    line: int
    kind: str  # "python", "skip", "output" or "other"
    code: str
    skip_reason: str = ""


def read_blocks(path: Path) -> list[Block]:
    """Returns the fenced blocks of the Markdown file at ``path``, in page order.

    Raises:
        PageFormatError: an unclosed fence, a ``docs-test`` marker that is not ``skip REASON``
            or stands before no python block, or an output block that follows no python block.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending_skip: tuple[int, str] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        skip = _SKIP.match(line)
        if skip:
            reason = skip.group("reason").strip()
            if not reason:
                raise PageFormatError(
                    f"{path}:{i + 1}: a skip marker needs a reason: <!-- docs-test: skip REASON -->"
                )
            pending_skip = (i + 1, reason)
            i += 1
            continue
        if _OTHER_MARKER.match(line):
            raise PageFormatError(
                f"{path}:{i + 1}: unknown docs-test marker {line.strip()!r}; the only one is "
                "<!-- docs-test: skip REASON -->"
            )
        opening = _FENCE.match(line)
        if not opening:
            if pending_skip and line.strip():
                raise PageFormatError(
                    f"{path}:{pending_skip[0]}: the skip marker must stand on the line just "
                    "before a ```python block"
                )
            i += 1
            continue
        indent, fence, info = opening.group("indent"), opening.group("fence"), opening["info"]
        body: list[str] = []
        j = i + 1
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        while j < len(lines) and not closing.match(lines[j]):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        if j == len(lines):
            raise PageFormatError(f"{path}:{i + 1}: the code fence {fence!r} is never closed")
        code = textwrap.dedent("\n".join(body)) + "\n"
        info = info.strip()
        if info == "python":
            if pending_skip:
                blocks.append(Block(i + 1, "skip", code, pending_skip[1]))
            else:
                blocks.append(Block(i + 1, "python", code))
        elif pending_skip:
            raise PageFormatError(
                f"{path}:{pending_skip[0]}: the skip marker stands before a {info or 'bare'!r} "
                "block; only ```python blocks run, so it is not needed"
            )
        elif _OUTPUT_INFO.match(info):
            if not blocks or blocks[-1].kind != "python":
                raise PageFormatError(
                    f"{path}:{i + 1}: an output block must come right after the python block "
                    "whose output it shows"
                )
            blocks.append(Block(i + 1, "output", code))
        else:
            blocks.append(Block(i + 1, "other", code))
        pending_skip = None
        i = j + 1
    return blocks
