"""Smoke test of ``benchmarks/bench_jit.py``: it runs, prints every contestant, writes the JSON.

No timing assertions (speed is the benchmark's business, not a unit test's): only that every
contestant's train step runs, and that ``linnx.jit`` stayed on its fast path (a fallback to
``nnx.jit`` would print a ``JitFallbackWarning`` on stderr).
"""

from __future__ import annotations

import json

from _smoke import run_bench

CONTESTANTS = ("linen", "nnx.jit", "cached_partial", "split/merge", "linnx.jit", "linnx.jit(ToNNX)")


def test_bench_jit_smoke_run(tmp_path):
    out = tmp_path / "bench_jit.json"
    proc = run_bench("bench_jit.py", "--smoke", "--json", str(out), timeout=600)
    assert "JitFallbackWarning" not in proc.stderr, proc.stderr[-3000:]
    header = proc.stdout.splitlines()[1]
    for who in CONTESTANTS:
        assert who in header, who
    assert "targets:" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == ["mlp"]
    assert set(rows[0]["median_s"]) == set(CONTESTANTS)
    assert rows[0]["ratio_to_linen"]["linen"] == 1.0
