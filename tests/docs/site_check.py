"""`make docs-check`: the built site as a reader sees it, in headless Chromium.

Serves the built site (``make docs`` writes ``site/``) on 127.0.0.1, opens the home page and
the ``linnx`` API page in headless Chromium, saves a screenshot of each, and checks in the
rendered DOM that the navigation lists the site's sections, that a code block is rendered
with syntax highlighting, and (on the API page) that the reference of ``linnx.ToNNX`` is there.
Screenshots that are blank count as failures.

Usage: ``python tests/docs/site_check.py SITE_DIR OUT_DIR``. Needs Chromium (Debian:
``apt-get install chromium``); not part of ``make test``.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

# page -> things its rendered DOM must contain (name, regex)
PAGES = {
    "index.html": [
        (
            "navigation with the guide",
            r'class="md-nav__link[^"]*"[^>]*>\s*(<[^>]+>\s*)*'
            r"Linen inside NNX",
        ),
        ("navigation with the reference", r"md-nav__link[^>]*>\s*(<[^>]+>\s*)*Command line"),
        (
            "a highlighted python code block",
            r'<div class="[^"]*highlight[^"]*"><pre[^>]*>.*?<span class="kn">import</span>',
        ),
    ],
    "reference/linnx/index.html": [
        ("navigation", r'<nav class="md-nav md-nav--primary"'),
        ("the heading of linnx.ToNNX", r'id="linnx.ToNNX"'),
        ("its signature", r'<span class="nf">ToNNX</span><span class="p">\(</span>'),
        ("a highlighted example", r'<span class="gp">&gt;&gt;&gt; ?</span><span class="kn">'),
    ],
}
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    sys.exit("docs-check needs headless Chromium: apt-get install chromium")


def _serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def _chromium(browser: str, *args: str) -> str:
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1280,1600",
        "--virtual-time-budget=5000",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def png_is_blank(path: Path) -> bool:
    """True when the PNG at ``path`` has a single colour (or is not a PNG at all)."""
    data = path.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return True
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    pixels = zlib.decompress(idat)
    width, _, _, colour_type = struct.unpack(">IIBB", data[16:26])
    row = width * {0: 1, 2: 3, 4: 2, 6: 4}.get(colour_type, 4) + 1
    # Each row starts with its filter byte; a page with text has many distinct byte values,
    # a blank one (filtered) a handful.
    values = {b for i in range(0, len(pixels), row) for b in pixels[i + 1 : i + row]}
    return len(values) < 16


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.exit(__doc__.split("\n\n")[2])
    site, out = Path(argv[0]), Path(argv[1])
    if not (site / "index.html").is_file():
        sys.exit(f"{site}/index.html not found: build the site first (make docs)")
    out.mkdir(parents=True, exist_ok=True)
    browser = _browser()
    server, base = _serve(site)
    failures = []
    try:
        for page, checks in PAGES.items():
            shot = out / (page.replace("/", "_").removesuffix(".html") + ".png")
            _chromium(browser, f"--screenshot={shot}", base + page)
            if not shot.is_file() or png_is_blank(shot):
                failures.append(f"{page}: the screenshot {shot} is missing or blank")
            dom = _chromium(browser, "--dump-dom", base + page)
            for what, pattern in checks:
                found = re.search(pattern, dom, re.DOTALL)
                print(f"{'ok  ' if found else 'FAIL'} {page}: {what}")
                if not found:
                    failures.append(f"{page}: no {what} in the rendered page")
            print(f"     screenshot: {shot}")
    finally:
        server.shutdown()
    if failures:
        print("docs-check failed:\n  " + "\n  ".join(failures))
        return 1
    print(f"docs-check: {len(PAGES)} pages rendered and checked in headless Chromium")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
