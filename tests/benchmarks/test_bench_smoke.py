"""Smoke test of ``benchmarks/bench.py``: it runs, prints every row, writes the JSON.

No timing assertions: only that the benchmark works end to end (in a subprocess, so Flax's
bridge, the benchmark's peer, is never imported into the test process) and that the compiled
programs with and without the bridge are the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "bench.py"

ROWS = {
    "peak mem eager ToLinen.apply vs NNX call",
    "peak mem lazy_init vs linen.init (info)",
    "peak mem ToLinen.init vs NNX ctor (info)",
    "program instr ToNNX vs Linen",
    "program flops ToNNX vs Linen",
    "program instr ToLinen vs NNX",
    "program flops ToLinen vs NNX",
    "eager ToNNX call vs linen.apply",
    "eager ToLinen.apply vs NNX call",
    "nnx.jit(ToNNX) vs nnx.jit(NNX)",
    "split/merge+jax.jit vs jit(linen.apply)",
    "trace+lower ToNNX vs Linen",
    "XLA compile ToNNX vs Linen",
    "trace+lower ToLinen vs NNX",
    "XLA compile ToLinen vs NNX",
    "lazy_init vs linen.init",
    "ToLinen.init vs NNX ctor",
    "train step: NNX around ToNNX",
    "train step: Linen around ToLinen",
}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_table_has_every_row(smoke_run: tuple[str, dict]) -> None:
    stdout, _ = smoke_run
    for row in ROWS:
        assert row in stdout, row
    assert "targets:" in stdout


def test_json_has_every_row_with_all_contestants(smoke_run: tuple[str, dict]) -> None:
    _, data = smoke_run
    rows = data["rows"]
    assert {r["row"] for r in rows} == ROWS
    for r in rows:
        assert set(r["median"]) == {"native", "linnx", "flax"}, r["row"]
        assert all(v is not None and v >= 0 for v in r["median"].values()), r["row"]
        if r["target"] is not None:
            assert r["status"] in ("met", "missed"), r["row"]


def test_compiled_programs_are_equal(smoke_run: tuple[str, dict]) -> None:
    _, data = smoke_run
    programs = [r for r in data["rows"] if r["row"].startswith("program ")]
    assert len(programs) == 4
    for r in programs:
        assert r["median"]["linnx"] == r["median"]["native"], r
        assert r["status"] == "met", r


def test_the_convert_benchmark_file_is_a_thousand_lines_of_python():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "benchmarks" / "bench_convert.py"
    spec = importlib.util.spec_from_file_location("bench_convert", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    source = bench.make_source()
    compile(source, "zoo.py", "exec")
    assert source.count("\n") >= 1000
    assert len(bench.EXAMPLES) == 5
