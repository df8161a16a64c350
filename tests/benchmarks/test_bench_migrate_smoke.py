"""Smoke test of ``benchmarks/bench_migrate.py`` on tiny checkpoints: every run works end to
end in its own process and lands in the table and the JSON. No timing assertions (the real
sizes are for ``make bench-migrate``, never for ``make test``)."""

from __future__ import annotations

import json

from _smoke import run_bench


def test_bench_migrate_runs_every_contestant(tmp_path):
    done = run_bench(
        "bench_migrate.py",
        *("--sizes", "tiny", "--models", "scanned"),
        *("--out", str(tmp_path / "scratch"), "--json", str(tmp_path / "out.json")),
        timeout=900,
    )
    for run in ("floor", "no-verify", "verify", "stream", "stream+sums"):
        assert f"\n  {run} " in done.stdout, done.stdout
    rows = json.loads((tmp_path / "out.json").read_text())
    assert {r["run"] for r in rows} == {"floor", "no-verify", "verify", "stream", "stream+sums"}
    assert all(r["seconds"] > 0 and r["peak_rss"] > 0 for r in rows)
    assert list((tmp_path / "scratch").iterdir()) == []  # checkpoints cleaned up
