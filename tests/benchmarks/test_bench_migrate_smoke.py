"""Smoke test of ``benchmarks/bench_migrate.py`` on tiny checkpoints: every run works end to
end in its own process and lands in the table and the JSON. No timing assertions (the real
sizes are for ``make bench-migrate``, never for ``make test``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "bench_migrate.py"


def test_bench_migrate_runs_every_contestant(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(BENCH), "--sizes", "tiny", "--models", "scanned",
         "--out", str(tmp_path / "scratch"), "--json", str(tmp_path / "out.json")],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for run in ("floor", "no-verify", "verify", "stream", "stream+sums"):
        assert f"\n  {run} " in done.stdout, done.stdout
    rows = json.loads((tmp_path / "out.json").read_text())
    assert {r["run"] for r in rows} == {"floor", "no-verify", "verify", "stream", "stream+sums"}
    assert all(r["seconds"] > 0 and r["peak_rss"] > 0 for r in rows)
    assert list((tmp_path / "scratch").iterdir()) == []  # checkpoints cleaned up
