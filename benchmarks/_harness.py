"""A small harness: interleaved timing rounds, one-shot measurements, the table and the JSON.

A :class:`Case` is one table row for one model. It has one entry per contestant (``native``,
``linnx``, ``flax``). A *timed* case gives, per contestant, a ``make()`` that is run untimed and
returns the thunk to time (so a first-call row can build a fresh function each round and an
eager row can return the same closure). A *measured* case gives, per contestant, a function
returning a number (bytes, instructions, flops), measured once.

Rounds are interleaved: every round runs every case, and within a case the contestants take
turns in short *slices*, in an order that alternates within a round (``A B C C B A ...``) and
rotates from round to round, so drift of the machine (other processes, a neighbour on the same
host, thermal state) hits all contestants alike. Each slice is one sample; the reported figure
is the median over all of a contestant's samples of the per-call time in a slice. On a small
shared VM, bursts of noise last tens of milliseconds: many short slices let the median drop
them, where one long sample per round would carry them.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
from _table import align

__all__ = [
    "CONTESTANTS",
    "Case",
    "Result",
    "run_cases",
    "time_thunk",
    "format_table",
    "live_bytes",
    "peak_live_bytes",
]

#: The columns, in table order. ``native`` is the baseline of the ratios.
CONTESTANTS = ("native", "linnx", "flax")


@dataclasses.dataclass
class Case:
    """One row of the table for one model.

    Attributes:
        row: the row's label, e.g. ``"eager ToNNX call vs linen.apply"``.
        model: the model's name.
        unit: ``"s"`` for timed rows, ``"bytes"``, ``"instr"`` or ``"flops"`` otherwise.
        target: the largest allowed ratio linnx / native, or None for an informative row.
        makers: for a timed row, contestant -> ``make()`` -> thunk to time.
        measures: for a measured row, contestant -> function returning the figure.
        calls: thunk calls per slice for a timed row (0: choose from ``min_round_s``).
        slices: samples per contestant per round (turns taken in alternating order); fewer
            for a thunk too slow to fill that many slices in ``min_round_s``.
        warmup: untimed thunk calls before the first round's timing (a first-call row's
            thunk traces a fresh function on every call, so this only warms global caches).
        exact: the target is equality (program size and flops).
    """

    row: str
    model: str
    unit: str = "s"
    target: float | None = None
    makers: dict[str, Callable[[], Callable[[], Any]]] = dataclasses.field(default_factory=dict)
    measures: dict[str, Callable[[], float]] = dataclasses.field(default_factory=dict)
    calls: int = 0
    slices: int = 8
    warmup: int = 1
    exact: bool = False

    @property
    def timed(self) -> bool:
        return bool(self.makers)


@dataclasses.dataclass
class Result:
    """A case's figures: per contestant, the samples (one per slice) and their median."""

    case: Case
    samples: dict[str, list[float]]

    def median(self, who: str) -> float | None:
        values = self.samples.get(who)
        return statistics.median(values) if values else None

    def ratio(self, who: str) -> float | None:
        """linnx / ``who``."""
        mine, theirs = self.median("linnx"), self.median(who)
        if mine is None or theirs is None or theirs == 0:
            return None
        return mine / theirs

    @property
    def status(self) -> str:
        """``met``, ``missed``, or ``-`` for an informative row."""
        target, ratio = self.case.target, self.ratio("native")
        if target is None:
            return "-"
        if ratio is None:
            return "missed"
        ok = math.isclose(ratio, target, rel_tol=1e-9) if self.case.exact else ratio <= target
        return "met" if ok else "missed"

    def to_json(self) -> dict[str, Any]:
        c = self.case
        return {
            "row": c.row,
            "model": c.model,
            "unit": c.unit,
            "target": c.target,
            "exact": c.exact,
            "status": self.status,
            "median": {who: self.median(who) for who in self.samples},
            "ratio_native": self.ratio("native"),
            "ratio_flax": self.ratio("flax"),
            "samples": self.samples,
        }


def time_thunk(thunk: Callable[[], Any], calls: int) -> float:
    """Seconds per call of ``thunk``, over ``calls`` calls in a row."""
    start = time.perf_counter()
    for _ in range(calls):
        thunk()
    return (time.perf_counter() - start) / calls


def _plan(
    case: Case, thunks: dict[str, Callable[[], Any]], round_s: float
) -> tuple[int, dict[str, int]]:
    """Slices per round and calls per slice for each contestant, from one call of each.

    A contestant gets about ``round_s`` per round; a thunk slower than ``round_s / slices``
    gets fewer slices rather than a longer round (the full run must stay under 5 minutes).
    """
    if case.calls:
        return case.slices, dict.fromkeys(thunks, case.calls)
    one = {who: max(time_thunk(thunk, 1), 1e-6) for who, thunk in thunks.items()}
    slices = max(1, min(case.slices, int(round_s / max(one.values()))))
    return slices, {who: max(1, min(200, int(round_s / slices / t))) for who, t in one.items()}


def run_cases(
    cases: list[Case],
    rounds: int,
    min_round_s: float,
    log: Callable[[str], None] = lambda msg: None,
) -> list[Result]:
    """Measures every measured case once, then runs the timed cases in interleaved rounds."""
    results = {id(c): Result(c, {w: [] for w in c.makers or c.measures}) for c in cases}
    for case in cases:
        if case.timed:
            continue
        log(f"measuring {case.model}: {case.row}")
        for who, measure in case.measures.items():
            gc.collect()
            results[id(case)].samples[who].append(float(measure()))
    timed = [c for c in cases if c.timed]
    plan: dict[int, tuple[int, dict[str, int]]] = {}
    for r in range(rounds):
        log(f"round {r + 1}/{rounds}")
        for case in timed:
            t0 = time.perf_counter()
            order = [w for w in CONTESTANTS if w in case.makers]
            shift = r % len(order)
            order = order[shift:] + order[:shift]
            thunks = {}
            for who in order:
                thunks[who] = case.makers[who]()
                for _ in range(case.warmup if r == 0 else 0):
                    thunks[who]()
            if id(case) not in plan:
                plan[id(case)] = _plan(case, thunks, min_round_s)
            slices, calls = plan[id(case)]
            for s in range(slices):
                for who in order if s % 2 == 0 else order[::-1]:
                    samples = results[id(case)].samples[who]
                    samples.append(time_thunk(thunks[who], calls[who]))
            log(f"  {case.model}: {case.row} ({time.perf_counter() - t0:.1f} s)")
    return [results[id(c)] for c in cases]


# -- memory -------------------------------------------------------------------------------------


def live_bytes() -> int:
    """Bytes held by live JAX arrays (on CPU no two live arrays share a buffer in eager use)."""
    total = 0
    for arr in jax.live_arrays():
        try:
            total += arr.nbytes
        except Exception:  # deleted or donated in the meantime
            continue
    return total


def peak_live_bytes(fn: Callable[[], Any], every: int = 1) -> tuple[int, Any]:
    """Runs ``fn`` and returns the peak of :func:`live_bytes` during it, and its result.

    Host-device ``memory_stats()`` is None on CPU and ``tracemalloc`` does not see device
    buffers, so the live arrays are summed at every ``every``-th Python function return while
    ``fn`` runs (slow, but only used for the memory rows). The result of ``fn`` is kept alive
    until the end, so it is part of the peak as it would be for a caller.
    """
    gc.collect()
    peak = live_bytes()
    events = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal peak, events
        if event == "return":
            events += 1
            if events % every == 0:
                peak = max(peak, live_bytes())

    sys.setprofile(profile)
    try:
        out = fn()
        jax.block_until_ready(out)
    finally:
        sys.setprofile(None)
    peak = max(peak, live_bytes())
    return peak, out


# -- output -------------------------------------------------------------------------------------


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "s":
        if value >= 1:
            return f"{value:.2f} s"
        if value >= 1e-3:
            return f"{value * 1e3:.2f} ms"
        return f"{value * 1e6:.0f} us"
    if unit == "bytes":
        return f"{value / 2**20:.2f} MiB" if value >= 2**20 else f"{value / 2**10:.1f} KiB"
    if unit == "flops":
        return f"{value / 1e6:.2f} MF" if value >= 1e6 else f"{value:.0f} F"
    return f"{value:.0f}"


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def format_table(results: Iterable[Result]) -> str:
    """A plain-text table: one line per (row, model)."""
    header = (
        "row",
        "model",
        "native",
        "linnx",
        "flax bridge",
        "linnx/native",
        "linnx/flax",
        "target",
        "status",
    )
    lines = []
    for res in results:
        c = res.case
        target = "-" if c.target is None else ("== 1.00" if c.exact else f"<= {c.target:.2f}x")
        lines.append(
            (
                c.row,
                c.model,
                *(_fmt(res.median(w), c.unit) for w in CONTESTANTS),
                _fmt_ratio(res.ratio("native")),
                _fmt_ratio(res.ratio("flax")),
                target,
                res.status,
            )
        )
    return align(header, lines, left=2)
