"""Runs a benchmark script in its own process, as the smoke tests do.

Its own process: Flax's bridge (the peer of ``bench.py``) is never imported into the test
process, the benchmark sees one host device (its usual setting, not the suite's
``XLA_FLAGS``), and it imports this checkout's ``src/linnx``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bench(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Runs ``benchmarks/<script> <args>`` from the repository root; asserts that it exits 0."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    # This checkout's linnx, whichever one the environment has installed.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
