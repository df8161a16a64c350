"""Train-step time: the Linen step, every NNX way to compile a step, and ``linnx.jit``.

Issue 17: moving a train step from ``jax.jit`` over ``linen.apply`` to ``nnx.jit`` makes small
and medium models several times slower. This prints, for each model of ``_models.py`` (the
MLP, the transformer, the conv + BatchNorm block), the median time of one Adam train step of:

* ``linen``: ``jax.jit`` over ``linen.apply`` + optax, on plain dicts, with a step counter
  for fresh dropout keys (the baseline);
* ``nnx.jit``: the same model written in NNX, with ``nnx.Optimizer``;
* ``cached_partial``: ``nnx.cached_partial`` over that ``nnx.jit`` step;
* ``split/merge``: ``nnx.split`` once, ``jax.jit`` over merge + step + ``nnx.state``;
* ``linnx.jit``: the ``nnx.jit`` step's function under ``linnx.jit``;
* ``linnx.jit(ToNNX)``: ``linnx.jit`` around the Linen model in ``linnx.ToNNX`` (informative);

and each one's ratio to ``linen``, side by side from one run. Target: ``linnx.jit`` at most
1.1x ``linen`` on every model. Contestants take turns in short slices (``A B C ... C B A``,
order rotating from round to round) and the median is over all slices, as in ``bench.py``.

Usage::

    python benchmarks/bench_jit.py            # full: 9 rounds (about 2 min on 2 cores)
    python benchmarks/bench_jit.py --quick    # 1 round
    python benchmarks/bench_jit.py --smoke    # the tiny MLP: checks that it runs (CI)
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import optax
from _harness import time_thunk
from _models import ModelSpec, model_specs, mse
from _table import align, report
from flax import nnx

import linnx

CONTESTANTS = ("linen", "nnx.jit", "cached_partial", "split/merge", "linnx.jit", "linnx.jit(ToNNX)")
BASELINE = "linen"
TARGET = ("linnx.jit", 1.1)  # issue 17: linnx.jit <= 1.1x the Linen step


def _tx() -> optax.GradientTransformation:
    return optax.adam(1e-3)


class StepBench:
    """The contestants' train steps for one model; objects are built on first use."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.x, self.y = spec.x, spec.y
        self.mutable = list(spec.mutable)

    def nnx_objects(self) -> tuple[nnx.Module, nnx.Optimizer]:
        s = self.spec
        model = s.nnx_class(*s.nnx_args, **s.nnx_kwargs(True), rngs=nnx.Rngs(0))
        return model, nnx.Optimizer(model, _tx(), wrt=nnx.Param)

    def step_body(self, model: nnx.Module, opt: nnx.Optimizer, x: jax.Array) -> jax.Array:
        y = self.y

        def loss_fn(model: nnx.Module) -> jax.Array:
            out = (
                model(x, mutable=self.mutable)
                if self.mutable and isinstance(model, linnx.ToNNX)
                else model(x)
            )
            return mse(out, y)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    # -- contestants: each returns the thunk to time (one train step, blocked on) ------------

    def linen(self) -> Callable[[], Any]:
        module, tx, x, y = self.spec.linen(True), _tx(), self.x, self.y
        streams = self.spec.streams
        variables = module.init(
            {"params": jax.random.key(0), **{s: jax.random.key(1) for s in self.spec.streams}}, x
        )
        params = variables["params"]
        rest = {k: v for k, v in variables.items() if k != "params"}
        mutable = self.mutable

        # A Linen loop draws new dropout keys every step (here: fold in the step number), as
        # the NNX steps do with their Rngs streams. A constant key would let XLA fold the
        # dropout masks into the program, which no training loop gets.
        @jax.jit
        def step(params: Any, opt_state: Any, rest: Any, n: jax.Array, x: jax.Array) -> Any:
            rngs = {
                s: jax.random.fold_in(jax.random.key(2 + i), n) for i, s in enumerate(streams)
            } or None

            def loss_fn(p: Any) -> tuple[jax.Array, Any]:
                out = module.apply({"params": p, **rest}, x, rngs=rngs, mutable=mutable or False)
                out, updates = out if mutable else (out, {})
                return mse(out, y), updates

            (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            upd, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, upd), opt_state, {**rest, **updates}, n + 1, loss

        cell = [params, tx.init(params), rest, jax.numpy.zeros((), jax.numpy.uint32)]

        def thunk() -> Any:
            *cell[:], loss = step(*cell, x)
            return jax.block_until_ready(loss)

        return thunk

    def nnx_jit(self) -> Callable[[], Any]:
        model, opt = self.nnx_objects()
        step, x = nnx.jit(self.step_body), self.x
        return lambda: jax.block_until_ready(step(model, opt, x))

    def cached_partial(self) -> Callable[[], Any]:
        model, opt = self.nnx_objects()
        step, x = nnx.cached_partial(nnx.jit(self.step_body), model, opt), self.x
        return lambda: jax.block_until_ready(step(x))

    def split_merge(self) -> Callable[[], Any]:
        graphdef, state = nnx.split(self.nnx_objects())
        body, x = self.step_body, self.x

        @jax.jit
        def step(state: nnx.State, x: jax.Array) -> tuple[jax.Array, nnx.State]:
            model, opt = nnx.merge(graphdef, state)
            loss = body(model, opt, x)
            return loss, nnx.state((model, opt))

        cell = [state]

        def thunk() -> Any:
            loss, cell[0] = step(cell[0], x)
            return jax.block_until_ready(loss)

        return thunk

    def linnx_jit(self) -> Callable[[], Any]:
        model, opt = self.nnx_objects()
        step, x = linnx.jit(self.step_body), self.x
        return lambda: jax.block_until_ready(step(model, opt, x))

    def linnx_jit_to_nnx(self) -> Callable[[], Any]:
        model = linnx.lazy_init(linnx.ToNNX(self.spec.linen(True), rngs=nnx.Rngs(0)), self.x)
        opt = nnx.Optimizer(model, _tx(), wrt=nnx.Param)
        step, x = linnx.jit(self.step_body), self.x
        return lambda: jax.block_until_ready(step(model, opt, x))

    def makers(self) -> dict[str, Callable[[], Callable[[], Any]]]:
        return dict(
            zip(
                CONTESTANTS,
                (
                    self.linen,
                    self.nnx_jit,
                    self.cached_partial,
                    self.split_merge,
                    self.linnx_jit,
                    self.linnx_jit_to_nnx,
                ),
                strict=True,
            )
        )


# -- timing ---------------------------------------------------------------------------------------


def run(
    specs: list[ModelSpec], rounds: int, round_s: float, slices: int, log: Callable[[str], None]
) -> dict[str, dict[str, list[float]]]:
    """Samples (seconds per step, one per slice) per model and contestant, interleaved."""
    thunks: dict[str, dict[str, Callable[[], Any]]] = {}
    for spec in specs:
        log(f"building and compiling {spec.name}")
        thunks[spec.name] = {who: make() for who, make in StepBench(spec).makers().items()}
        for thunk in thunks[spec.name].values():
            for _ in range(3):  # compile, then warm
                thunk()
    samples = {name: {who: [] for who in CONTESTANTS} for name in thunks}
    plan: dict[str, tuple[int, dict[str, int]]] = {}
    for r in range(rounds):
        log(f"round {r + 1}/{rounds}")
        for name, by_who in thunks.items():
            order = list(CONTESTANTS[r % len(CONTESTANTS) :] + CONTESTANTS[: r % len(CONTESTANTS)])
            if name not in plan:
                one = {who: max(time_thunk(by_who[who], 1), 1e-6) for who in order}
                # At least 3 slices of at least one call each: a step slower than the round
                # budget (the transformer) still gets several samples per round.
                n = max(min(3, slices), min(slices, int(round_s / max(one.values()))))
                plan[name] = n, {w: max(1, min(200, int(round_s / n / t))) for w, t in one.items()}
            n, calls = plan[name]
            for s in range(n):
                for who in order if s % 2 == 0 else order[::-1]:
                    samples[name][who].append(time_thunk(by_who[who], calls[who]))
    return samples


def _fmt(t: float) -> str:
    return f"{t * 1e3:.2f} ms" if t >= 1e-3 else f"{t * 1e6:.0f} us"


def table(samples: dict[str, dict[str, list[float]]]) -> tuple[str, list[dict[str, Any]]]:
    """The printed table (time and ratio to the Linen step per contestant) and the JSON rows."""
    header = ["model", *CONTESTANTS, "target", "status"]
    lines, rows = [], []
    who, limit = TARGET
    for name, by_who in samples.items():
        med = {w: statistics.median(v) for w, v in by_who.items()}
        ratio = {w: med[w] / med[BASELINE] for w in CONTESTANTS}
        status = "met" if ratio[who] <= limit else "missed"
        lines.append(
            [
                name,
                *(f"{_fmt(med[w])} {ratio[w]:.2f}x" for w in CONTESTANTS),
                f"{who} <= {limit:.2f}x",
                status,
            ]
        )
        rows.append(
            {
                "model": name,
                "median_s": med,
                "ratio_to_linen": ratio,
                "target": {who: limit},
                "status": status,
                "samples": by_who,
            }
        )
    return align(header, lines), rows


MODES = {
    "full": ("full", 9, 0.1, 8, None),
    "quick": ("full", 1, 0.05, 4, None),
    "smoke": ("smoke", 1, 0.002, 2, ("mlp",)),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="one round (< 1 min)")
    mode.add_argument("--smoke", action="store_true", help="tiny models: checks that it runs")
    p.add_argument("--rounds", type=int, help="override the number of rounds")
    p.add_argument("--models", help="comma-separated subset of: mlp,transformer,convbn")
    p.add_argument("--json", default="bench-out/bench_jit.json", help="where to write results")
    args = p.parse_args(argv)
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    size, rounds, round_s, slices, models = MODES[name]
    rounds = args.rounds or rounds
    if args.models:
        models = tuple(args.models.split(","))
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    samples = run(model_specs(size, models), rounds, round_s, slices, log)
    text, rows = table(samples)
    elapsed = time.perf_counter() - start
    title = (
        f"linnx.jit train-step benchmark: mode={name}, rounds={rounds}, {elapsed:.0f} s, "
        f"{os.cpu_count()} CPUs, load at start {load}, jax {jax.__version__}, "
        f"{jax.devices()[0]}; each cell: median step time, ratio to the Linen step"
    )
    data = {
        "mode": name,
        "rounds": rounds,
        "elapsed_s": elapsed,
        "load_at_start": load,
        "platform": platform.platform(),
        "jax": jax.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "rows": rows,
    }
    report(title, text, [r["status"] for r in rows], args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
