"""``linnx demo``: train a Linen CNN on the bundled digits, then move it into NNX step by step."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the demo's options to its subcommand parser."""
    parser.add_argument("--steps", type=int, default=300, help="training steps per stage")
    parser.add_argument("--seed", type=int, default=0, help="seed for data, init and dropout")
    parser.add_argument(
        "--out", default="demo-out", help="folder for the plot, results and checkpoint"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Runs the demo; returns 0 when every handover is exact and the accuracy target is met."""
    if args.steps < 1:
        print("linnx demo: --steps must be at least 1")
        return 2
    from . import _pipeline
    from ._report import report

    outcome = _pipeline.run(args.steps, args.seed, args.out, args.quiet)
    return 0 if report(outcome, args.out) else 1
