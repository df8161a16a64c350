"""Prints how many docs code blocks ran, so a page whose blocks stopped running shows."""

from __future__ import annotations

import collections

# Filled by test_docs_examples.py: pages tested, python blocks run, skipped, outputs checked.
DOCS_COUNTS: collections.Counter[str] = collections.Counter()


def pytest_terminal_summary(terminalreporter) -> None:
    if DOCS_COUNTS["pages"]:
        terminalreporter.write_line(
            f"docs examples: {DOCS_COUNTS['run']} python blocks run on {DOCS_COUNTS['pages']} "
            f"pages ({DOCS_COUNTS['checked']} shown outputs checked, "
            f"{DOCS_COUNTS['skipped']} blocks skipped with a reason)"
        )
