"""The output shared by ``bench.py`` and ``bench_jit.py``: an aligned table, a summary, the JSON.

Both print a one-line header (mode, machine, versions), the table, a ``targets: N met, M
missed`` line, then write every figure as JSON and print where.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["align", "report"]


def align(header: Sequence[str], lines: Iterable[Sequence[object]], left: int = 1) -> str:
    """A plain-text table: the first ``left`` columns flush left, the others flush right.

    A line of dashes separates the header from the rows; columns are two spaces apart.
    """
    rows = [list(header), *(list(line) for line in lines)]
    widths = [max(len(str(x)) for x in col) for col in zip(*rows, strict=True)]
    rows.insert(1, ["-" * w for w in widths])
    return "\n".join(
        "  ".join(
            str(x).ljust(w) if j < left else str(x).rjust(w)
            for j, (x, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def report(title: str, table: str, statuses: Sequence[str], path: str, data: Any) -> Path:
    """Prints ``title``, ``table`` and the count of met targets, and writes ``data`` as JSON.

    Args:
        title: the one-line header (mode, rounds, machine, versions).
        table: the table from :func:`align`.
        statuses: ``met`` or ``missed`` for each row that has a target.
        path: where the JSON goes (its folder is created).
        data: the JSON document.

    Returns:
        The path written.
    """
    print(title)
    print(table)
    met = sum(s == "met" for s in statuses)
    print(f"targets: {met} met, {len(statuses) - met} missed")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    print(f"wrote {out}")
    return out
