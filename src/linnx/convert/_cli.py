"""``linnx convert SRC.py -o DST.py --example "EXPR"``: Linen source in, verified NNX source out.

Exit codes: 0 when every example verified (DST and its path map are written), 1 when a
verification failed (nothing written), 2 for bad input (a typed error naming file, line and
fix; nothing written). JAX and Flax are imported inside :func:`run`, so
``linnx convert --help`` stays light.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_arguments", "run"]

EXIT_OK, EXIT_VERIFY_FAILED, EXIT_ERROR = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declares the options of ``linnx convert``."""
    parser.add_argument("src", metavar="SRC.py", help="the Python file with Linen modules")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="DST.py",
        help="the NNX module to write (its path map goes to DST.linen_paths.json)",
    )
    parser.add_argument(
        "--example",
        required=True,
        action="append",
        metavar="EXPR",
        help='a construction and call, e.g. "CNN()(jnp.ones((1, 28, 28, 1)))" (repeatable); '
        "evaluated with SRC's globals plus jax, jnp, np and nn",
    )
    parser.add_argument(
        "--keep-signatures",
        action="store_true",
        help="keep flags such as train= as call arguments (no model.train()/model.eval())",
    )
    parser.add_argument(
        "--wrap-unknown",
        action="store_true",
        help="keep a class that uses a layer without a rule as Linen, inside linnx.ToNNX",
    )
    parser.add_argument(
        "--html",
        metavar="REPORT.html",
        help="also write the report as a page: Linen and NNX code side by side, weight map, "
        "verification (written even when verification fails)",
    )
    parser.add_argument("--atol", type=float, default=1e-5, help="verification tolerance")
    parser.add_argument("--rtol", type=float, default=1e-5, help="verification tolerance")


def run(args: argparse.Namespace) -> int:
    """Runs ``linnx convert``; returns the exit code."""
    from .._errors import LinnxError
    from ._api import convert_file, paths_file

    try:
        if args.html:
            from ._html import check_report_path

            check_report_path(args.html, args.src, args.output, paths_file(args.output))
        result = convert_file(
            args.src,
            args.output,
            examples=args.example,
            keep_signatures=args.keep_signatures,
            wrap_unknown=args.wrap_unknown,
            atol=args.atol,
            rtol=args.rtol,
        )
        if args.html:
            from ._html import write_html

            write_html(result, args.html)
    except LinnxError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    print(result.report())
    if args.html:
        print(f"wrote the report {args.html}")
    if not result.ok:
        print(f"error: verification failed; {args.output!r} was not written.", file=sys.stderr)
        return EXIT_VERIFY_FAILED
    print(f"wrote {args.output} and {paths_file(args.output)}")
    return EXIT_OK
