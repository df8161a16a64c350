"""MkDocs hooks for the linnx site (named in mkdocs.yml; not a page: excluded from the docs).

- ``<!-- linnx-cli-reference -->`` on a page is replaced by the ``--help`` of ``linnx`` and of
  each of its subcommands, generated from the argparse parsers the command line itself uses
  (``linnx._cli``), so the reference cannot drift from the code.
- The docstrings are written for Sphinx as well (``:class:`ToNNX```); mkdocstrings renders the
  role literally, so the role prefix is dropped from the rendered HTML and the name stays as
  code (``~a.b.C`` shown as ``C``, as Sphinx does).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

# Document the linnx of this checkout, also when another one is installed.
_SRC = str(Path(__file__).resolve().parents[2] / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

CLI_MARKER = "<!-- linnx-cli-reference -->"
_WIDTH = 96
_SPHINX_ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|mod|attr|exc|data|obj|const):"
    r"<code>(?P<tilde>~)?(?P<name>[^<]*)</code>"
)


def _formatter(prog: str) -> argparse.HelpFormatter:
    # A fixed width: the page must not depend on the terminal of whoever builds the site.
    return argparse.HelpFormatter(prog, width=_WIDTH)


def cli_parsers() -> dict[str, argparse.ArgumentParser]:
    """The ``linnx`` parser and one per subcommand, with every subcommand's arguments added.

    ``linnx._cli.main`` adds the arguments of the chosen subcommand only (so ``--help`` stays
    light); the reference needs all of them, from the same ``add_arguments`` functions.
    """
    from linnx import _cli

    top = argparse.ArgumentParser(
        prog="linnx", description=_cli.__doc__.splitlines()[0], formatter_class=_formatter
    )
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parsers = {"linnx": top}
    for name, (module_name, help_line) in _cli._SUBCOMMANDS.items():
        parser = sub.add_parser(
            name, help=help_line, description=help_line, formatter_class=_formatter
        )
        importlib.import_module(module_name).add_arguments(parser)
        parsers[f"linnx {name}"] = parser
    return parsers


def cli_reference_markdown() -> str:
    """The CLI reference as Markdown: one section per command with its ``--help`` text."""
    sections = []
    for prog, parser in cli_parsers().items():
        anchor = prog.replace(" ", "-")
        sections.append(f"## `{prog}` {{#{anchor}}}\n\n```text\n{parser.format_help()}```\n")
    return "\n".join(sections)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (hook API)
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference_markdown())
    return markdown


def _plain_code(match: re.Match[str]) -> str:
    # Sphinx shows `~a.b.C` as `C`.
    name = match["name"].rsplit(".", 1)[-1] if match["tilde"] else match["name"]
    return f"<code>{name}</code>"


def on_page_content(html: str, page, config, files) -> str:  # noqa: ARG001 (hook API)
    return _SPHINX_ROLE.sub(_plain_code, html)
