"""The ``linnx`` command line: ``linnx demo``, ``linnx migrate-weights`` and ``linnx convert``.

Subcommands live next to the code they drive and are imported only when chosen, so
``linnx --help`` starts without importing jax.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module that defines `add_arguments(parser)` and `run(args) -> int`, help line)
_SUBCOMMANDS = {
    "demo": ("linnx.demo._cli", "migrate a Linen classifier to NNX step by step while it trains"),
    "migrate-weights": (
        "linnx.migrate._cli",
        "copy a Linen checkpoint into a hand-ported NNX model and verify it",
    ),
    "convert": (
        "linnx.convert._cli",
        "rewrite Linen modules as NNX modules (source to source) and verify them",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``linnx`` command line and returns its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="linnx", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = argv[0] if argv and argv[0] in _SUBCOMMANDS else None
    for name, (module_name, help_line) in _SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_line, description=help_line)
        if name == chosen:
            importlib.import_module(module_name).add_arguments(p)
    args = parser.parse_args(argv)
    return int(importlib.import_module(_SUBCOMMANDS[args.command][0]).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
