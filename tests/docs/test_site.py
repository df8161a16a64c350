"""The site builds with `mkdocs build --strict`, and the reader-view check's own logic."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from .site_check import png_is_blank

ROOT = Path(__file__).resolve().parents[2]


def test_site_builds_without_warnings(tmp_path):
    # `make docs` on a fresh clone: a docstring or link that breaks the build fails here too.
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install .[docs])")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    cli = (tmp_path / "reference" / "cli" / "index.html").read_text()
    assert "--linen MODULE:FACTORY" in cli and "linnx-cli-reference" not in cli
    api = (tmp_path / "reference" / "linnx" / "index.html").read_text()
    assert 'id="linnx.ToNNX"' in api and ":class:<code>" not in api


def _png(path: Path, rows: list[bytes]) -> Path:
    width = len(rows[0]) // 3

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + b"\0\0\0\0"

    header = struct.pack(">IIBBBBB", width, len(rows), 8, 2, 0, 0, 0)
    data = zlib.compress(b"".join(b"\0" + row for row in rows))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def test_blank_screenshots_are_recognized(tmp_path):
    white = _png(tmp_path / "white.png", [b"\xff" * 30] * 10)
    text = _png(tmp_path / "text.png", [bytes(range(i, i + 30)) for i in range(10)])
    assert png_is_blank(white)
    assert not png_is_blank(text)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert png_is_blank(tmp_path / "broken.png")
