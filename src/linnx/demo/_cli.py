"""``linnx demo``: train a Linen CNN on the bundled digits, then move it into NNX."""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the demo's options to its subcommand parser."""
    parser.add_argument("--steps", type=int, default=300, help="training steps per stage")
    parser.add_argument("--seed", type=int, default=0, help="seed for data, init and dropout")
    parser.add_argument("--out", default="demo-out", help="folder for the plot and results")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Runs the demo; returns 0 when every handover is exact and the accuracy target is met."""
    from . import _data, _stages
    from ._report import report

    train_set, test_set = _data.load_digits_split(args.seed)
    train = _data.batches(train_set, 64, args.seed)
    stage1, variables, opt_state, tx = _stages.linen_stage(
        train, test_set, args.steps, args.seed, args.quiet
    )
    x, y = next(train)
    model, optimizer = _stages.to_nnx_handover(variables, opt_state, tx, x, args.seed)
    gap = _stages.handover_gap(variables, model, x, y)
    stage2 = _stages.nnx_stage(model, optimizer, train, test_set, args.steps, args.quiet)
    os.makedirs(args.out, exist_ok=True)
    ok = report([stage1, stage2], {"Linen -> ToNNX": gap}, args.out)
    return 0 if ok else 1
