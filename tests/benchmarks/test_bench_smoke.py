"""Smoke test of ``benchmarks/bench.py``: it runs, and its table and JSON say what it measured.

No timing assertions: only that the benchmark works end to end (in a subprocess, so Flax's
bridge, the benchmark's peer, is never imported into the test process) and that the compiled
programs with and without the bridge are the same.
"""

from __future__ import annotations

import json
import statistics

import pytest
from _smoke import run_bench


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = run_bench("bench.py", "--smoke", "--json", str(out), timeout=300)
    return proc.stdout, json.loads(out.read_text())


def test_table_and_json_report_the_same_rows(smoke_run: tuple[str, dict]) -> None:
    stdout, data = smoke_run
    names = [r["row"] for r in data["rows"]]
    assert names and len(names) == len(set(names))
    for name in names:
        assert name in stdout, name
    # Both directions of the bridge are measured.
    assert any("ToNNX" in n for n in names) and any("ToLinen" in n for n in names)
    with_target = [r for r in data["rows"] if r["target"] is not None]
    met = sum(r["status"] == "met" for r in with_target)
    assert f"targets: {met} met, {len(with_target) - met} missed" in stdout
    # The table: a header, a rule of dashes and one line per row, all as wide as each other.
    lines = stdout.splitlines()
    table = lines[1 : lines.index(next(x for x in lines if x.startswith("targets:")))]
    assert len(table) == 2 + len(names)
    assert set(table[1]) == {"-", " "}
    assert len({len(line) for line in table}) == 1, table


def test_each_row_summarises_its_samples(smoke_run: tuple[str, dict]) -> None:
    _, data = smoke_run
    for r in data["rows"]:
        samples = r["samples"]
        assert set(samples) == {"native", "linnx", "flax"}, r["row"]
        for who, values in samples.items():
            assert values and all(v >= 0 for v in values), (r["row"], who)
            assert r["median"][who] == statistics.median(values), (r["row"], who)
        native, linnx, flax = (r["median"][w] for w in ("native", "linnx", "flax"))
        if native:
            assert r["ratio_native"] == pytest.approx(linnx / native), r["row"]
        if flax:
            assert r["ratio_flax"] == pytest.approx(linnx / flax), r["row"]


def test_status_follows_target_and_ratio(smoke_run: tuple[str, dict]) -> None:
    _, data = smoke_run
    for r in data["rows"]:
        target, ratio = r["target"], r["ratio_native"]
        if target is None:
            expected = "-"
        elif ratio is None:
            expected = "missed"
        elif r["exact"]:
            expected = "met" if ratio == pytest.approx(target, rel=1e-9) else "missed"
        else:
            expected = "met" if ratio <= target else "missed"
        assert r["status"] == expected, r["row"]


def test_compiled_programs_are_equal(smoke_run: tuple[str, dict]) -> None:
    _, data = smoke_run
    programs = [r for r in data["rows"] if r["exact"]]
    assert programs
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
