"""What the bridge costs: native Linen, native NNX, linnx and Flax's own bridge, side by side.

Runs every row of issue 4 for every model in interleaved rounds in one process, prints one
table (median per call of each contestant, the ratios linnx / native and linnx / Flax bridge,
and met/missed against the issue's targets) and writes the results as JSON.

Usage::

    make bench                              # full run (< 5 min on 2 cores)
    make bench-quick                        # one round, no memory rows (< 1 min)
    .venv/bin/python benchmarks/bench.py --smoke --json /tmp/b.json   # the CI smoke test

Columns. ``native`` is the code the bridge stands in for: for Linen-in-NNX rows
(``ToNNX``/``lazy_init``) plain Linen, except where the row runs NNX code around the module
(``nnx.jit``, the NNX training step), where it is the same model written in NNX; for
NNX-in-Linen rows (``ToLinen``) the native NNX module, except for the Linen training step,
where it is the model written in Linen. ``flax`` is ``flax.nnx.bridge`` in the same place as
linnx, through a thin adapter (:data:`FLAX`).

Modes. Timed and memory rows run the models in train mode (dropout on, BatchNorm statistics
mutable); the compiled-program rows compare the eval-mode forward pass, whose program must be
the same with and without the bridge.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import optax
from _harness import Case, format_table, live_bytes, peak_live_bytes, run_cases
from _models import ModelSpec, model_specs, mse
from _table import report
from flax import linen as nn
from flax import nnx
from flax.nnx import bridge as flax_bridge  # the peer of the comparison; only imported here

import linnx

# -- the two bridges behind one interface ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Bridge:
    """The bridge API the benchmark uses, for linnx and for Flax's bridge."""

    name: str
    to_nnx: Callable[[nn.Module, nnx.Rngs], nnx.Module]
    lazy_init: Callable[..., nnx.Module]
    to_linen: Callable[..., nn.Module]


def _flax_lazy_init(model: nnx.Module, *args: Any) -> nnx.Module:
    # Flax's lazy_init returns `fn`, which for a module is the module itself.
    flax_bridge.lazy_init(model, *args)
    return model


LINNX = Bridge("linnx", lambda m, rngs: linnx.ToNNX(m, rngs=rngs), linnx.lazy_init, linnx.to_linen)
FLAX = Bridge(
    "flax", lambda m, rngs: flax_bridge.ToNNX(m, rngs=rngs), _flax_lazy_init, flax_bridge.to_linen
)
BRIDGES = {"linnx": LINNX, "flax": FLAX}

# -- targets (issue 4): the largest allowed ratio linnx / native -------------------------------

T_EAGER_TO_NNX = 1.05
T_EAGER_TO_LINEN = 1.3
T_MEMORY = 1.05
T_TRACE = 1.1
T_NNX_JIT = 1.0
T_SPLIT_MERGE = 1.05
T_LAZY_INIT = 1.1
T_TO_LINEN_INIT = 1.2
T_TRAIN = 1.05


def _block(tree: Any) -> Any:
    return jax.block_until_ready(tree)


def _split(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """``(graphdef, params, rest)``: the usual split for a functional NNX call."""
    return nnx.split(model, nnx.Param, ...)


def _merged(graphdef: nnx.GraphDef, call: Callable[..., Any]) -> Callable[..., Any]:
    """A fresh pure function ``(params, rest, x) -> (call(module, x), new rest)``.

    Like ``linen.apply`` with ``mutable``, it returns only what a call may change: returning
    the parameters too would make XLA copy them into new output buffers on every call, a cost
    of that calling pattern, not of the bridge.
    """

    def f(params: nnx.State, rest: nnx.State, x: jax.Array) -> tuple[Any, nnx.State]:
        module = nnx.merge(graphdef, params, rest)
        return call(module, x), nnx.state(module, nnx.Not(nnx.Param))

    return f


def _forward_only(graphdef: nnx.GraphDef) -> Callable[..., Any]:
    def f(state: nnx.State, x: jax.Array) -> Any:
        return nnx.merge(graphdef, state)(x)

    return f


def _hlo_instructions(compiled: Any) -> int:
    """Instructions in the optimized HLO text of a compiled program."""
    return sum(
        1
        for line in compiled.as_text().splitlines()
        if re.match(r"\s+(ROOT\s+)?%?[\w.\-]+ = ", line)
    )


def _flops(compiled: Any) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older JAX: one dict per device
        cost = cost[0]
    return float(cost.get("flops", 0.0))


class ModelBench:
    """The rows of one model. Objects are built lazily, on first use, and then kept."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.x = spec.x
        self.mutable: list[str] | bool = list(spec.mutable) or False
        self.init_keys = {
            "params": jax.random.key(0),
            **{s: jax.random.key(1) for s in spec.streams},
        }
        self.apply_rngs = {s: jax.random.key(2) for s in spec.streams} or None
        self.linen = spec.linen(True)

    # -- building blocks ------------------------------------------------------------------------

    def nnx_model(self, train: bool = True) -> nnx.Module:
        s = self.spec
        return s.nnx_class(*s.nnx_args, **s.nnx_kwargs(train), rngs=nnx.Rngs(0))

    def to_linen(self, bridge: Bridge, train: bool = True) -> nn.Module:
        s = self.spec
        return bridge.to_linen(s.nnx_class, *s.nnx_args, **s.nnx_kwargs(train))

    def to_nnx(
        self, bridge: Bridge, linen: nn.Module | None = None, rngs: nnx.Rngs | None = None
    ) -> nnx.Module:
        module = self.linen if linen is None else linen
        rngs = nnx.Rngs(0) if rngs is None else rngs
        return bridge.lazy_init(bridge.to_nnx(module, rngs), self.x)

    def call_to_nnx(self, model: nnx.Module, x: jax.Array) -> Any:
        return model(x, mutable=self.mutable) if self.mutable else model(x)

    def apply(
        self, module: nn.Module, variables: Any, x: jax.Array, rngs: dict[str, jax.Array] | None
    ) -> Any:
        return module.apply(variables, x, rngs=rngs, mutable=self.mutable)

    @functools.cached_property
    def linen_vars(self) -> Any:
        return self.linen.init(self.init_keys, self.x)

    @functools.cached_property
    def native_nnx(self) -> nnx.Module:
        return self.nnx_model()

    @functools.cache  # noqa: B019 - one instance per model, kept for the whole run
    def bridged_nnx(self, who: str) -> nnx.Module:
        return self.to_nnx(BRIDGES[who])

    @functools.cache  # noqa: B019
    def bridged_linen(self, who: str) -> tuple[nn.Module, Any]:
        module = self.to_linen(BRIDGES[who])
        return module, module.init(self.init_keys, self.x)

    # -- rows -----------------------------------------------------------------------------------

    def cases(self, memory: bool = True) -> list[Case]:
        m = self.spec.name
        rows = []
        if memory:
            rows += self.memory_cases()
        rows += self.program_cases()
        rows += [
            Case(
                "eager ToNNX call vs linen.apply",
                m,
                target=T_EAGER_TO_NNX,
                makers=self.eager_to_nnx(),
            ),
            Case(
                "eager ToLinen.apply vs NNX call",
                m,
                target=T_EAGER_TO_LINEN,
                makers=self.eager_to_linen(),
            ),
            Case("nnx.jit(ToNNX) vs nnx.jit(NNX)", m, target=T_NNX_JIT, makers=self.nnx_jit()),
            Case(
                "split/merge+jax.jit vs jit(linen.apply)",
                m,
                target=T_SPLIT_MERGE,
                makers=self.split_merge(),
            ),
        ]
        for direction, (native, bridged) in self.first_call_fns().items():
            rows.append(
                Case(
                    f"trace+lower {direction}",
                    m,
                    target=T_TRACE,
                    calls=1,
                    slices=4,
                    makers=_first_call(native, bridged, compile_only=False),
                )
            )
            rows.append(
                Case(
                    f"XLA compile {direction}",
                    m,
                    calls=1,
                    slices=1,
                    warmup=0,
                    makers=_first_call(native, bridged, compile_only=True),
                )
            )
        rows += [
            Case("lazy_init vs linen.init", m, target=T_LAZY_INIT, makers=self.lazy_init()),
            Case(
                "ToLinen.init vs NNX ctor", m, target=T_TO_LINEN_INIT, makers=self.to_linen_init()
            ),
            Case("train step: NNX around ToNNX", m, target=T_TRAIN, makers=self.nnx_train()),
            Case("train step: Linen around ToLinen", m, target=T_TRAIN, makers=self.linen_train()),
        ]
        return rows

    def eager_to_nnx(self) -> dict[str, Callable[[], Callable[[], Any]]]:
        def native() -> Callable[[], Any]:
            v, x, rngs = self.linen_vars, self.x, self.apply_rngs
            return lambda: _block(self.apply(self.linen, v, x, rngs))

        def bridged(who: str) -> Callable[[], Callable[[], Any]]:
            def make() -> Callable[[], Any]:
                model, x = self.bridged_nnx(who), self.x
                return lambda: _block(self.call_to_nnx(model, x))

            return make

        return {"native": native, "linnx": bridged("linnx"), "flax": bridged("flax")}

    def eager_to_linen(self) -> dict[str, Callable[[], Callable[[], Any]]]:
        def native() -> Callable[[], Any]:
            model, x = self.native_nnx, self.x
            return lambda: _block(model(x))

        def bridged(who: str) -> Callable[[], Callable[[], Any]]:
            def make() -> Callable[[], Any]:
                (module, v), x, rngs = self.bridged_linen(who), self.x, self.apply_rngs
                return lambda: _block(self.apply(module, v, x, rngs))

            return make

        return {"native": native, "linnx": bridged("linnx"), "flax": bridged("flax")}

    def nnx_jit(self) -> dict[str, Callable[[], Callable[[], Any]]]:
        def make_for(get: Callable[[], nnx.Module], call: Callable[..., Any]):
            step = nnx.jit(call)

            def make() -> Callable[[], Any]:
                model, x = get(), self.x
                return lambda: _block(step(model, x))

            return make

        return {
            "native": make_for(lambda: self.native_nnx, lambda model, x: model(x)),
            **{
                who: make_for(functools.partial(self.bridged_nnx, who), self.call_to_nnx)
                for who in BRIDGES
            },
        }

    def split_merge(self) -> dict[str, Callable[[], Callable[[], Any]]]:
        native_fn = jax.jit(functools.partial(self.apply, self.linen))

        def native() -> Callable[[], Any]:
            v, x, rngs = self.linen_vars, self.x, self.apply_rngs
            return lambda: _block(native_fn(v, x, rngs))

        def bridged(who: str) -> Callable[[], Callable[[], Any]]:
            cell: dict[str, Any] = {}

            def make() -> Callable[[], Any]:
                if not cell:
                    graphdef, cell["params"], cell["rest"] = _split(self.bridged_nnx(who))
                    cell["fn"] = jax.jit(_merged(graphdef, self.call_to_nnx))
                fn, x = cell["fn"], self.x

                def thunk() -> None:
                    _, cell["rest"] = _block(fn(cell["params"], cell["rest"], x))

                return thunk

            return make

        return {"native": native, "linnx": bridged("linnx"), "flax": bridged("flax")}

    def first_call_fns(self) -> dict[str, tuple[Callable, Callable]]:
        """Per direction, ``(native, bridged)``: ``who -> (fresh function, its arguments)``."""
        x, rngs = self.x, self.apply_rngs

        def linen_native() -> tuple[Callable, tuple]:
            return functools.partial(self.apply, self.linen), (self.linen_vars, x, rngs)

        def to_nnx(who: str) -> tuple[Callable, tuple]:
            graphdef, params, rest = _split(self.bridged_nnx(who))
            return _merged(graphdef, self.call_to_nnx), (params, rest, x)

        def nnx_native() -> tuple[Callable, tuple]:
            graphdef, params, rest = _split(self.native_nnx)
            return _merged(graphdef, lambda model, x: model(x)), (params, rest, x)

        def to_linen(who: str) -> tuple[Callable, tuple]:
            module, v = self.bridged_linen(who)
            return functools.partial(self.apply, module), (v, x, rngs)

        return {"ToNNX vs Linen": (linen_native, to_nnx), "ToLinen vs NNX": (nnx_native, to_linen)}

    def lazy_init(self) -> dict[str, Callable[[], Callable[[], Any]]]:
        def native() -> Callable[[], Any]:
            return lambda: _block(self.linen.init(self.init_keys, self.x))

        def bridged(who: str) -> Callable[[], Callable[[], Any]]:
            def make() -> Callable[[], Any]:
                # Built untimed, as native's keys are: both sides get their rng input ready.
                # Initialization reads the stream keys without advancing them, so every
                # call initializes alike.
                rngs = nnx.Rngs(0)
                # The module is what lazy_init makes, as the variables dict is linen.init's;
                # blocking on it as a pytree does not add an nnx.state graph walk.
                return lambda: _block(self.to_nnx(BRIDGES[who], rngs=rngs))

            return make

        return {"native": native, "linnx": bridged("linnx"), "flax": bridged("flax")}

    def to_linen_init(self) -> dict[str, Callable[[], Callable[[], Any]]]:
        """A top-level ``init``, which for linnx runs no forward pass (see ``ToLinen.init``)."""

        def native() -> Callable[[], Any]:
            return lambda: _block(self.nnx_model())

        def bridged(who: str) -> Callable[[], Callable[[], Any]]:
            module = self.to_linen(BRIDGES[who])
            return lambda: lambda: _block(module.init(self.init_keys, self.x))

        return {"native": native, "linnx": bridged("linnx"), "flax": bridged("flax")}

    def nnx_train(self) -> dict[str, Callable[[], Callable[[], Any]]]:
        """``nnx.jit`` step with ``nnx.value_and_grad`` and ``nnx.Optimizer`` (adam)."""
        y = self.spec.y

        def make_for(build: Callable[[], nnx.Module], call: Callable[..., Any]):
            @nnx.jit
            def step(model: nnx.Module, opt: nnx.Optimizer, x: jax.Array) -> jax.Array:
                loss, grads = nnx.value_and_grad(lambda m: mse(call(m, x), y))(model)
                opt.update(model, grads)
                return loss

            cell: list[Any] = []

            def make() -> Callable[[], Any]:
                if not cell:
                    model = build()
                    cell[:] = [model, nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)]
                model, opt = cell
                return lambda: _block(step(model, opt, self.x))

            return make

        return {
            "native": make_for(self.nnx_model, lambda model, x: model(x)),
            **{
                who: make_for(functools.partial(self.to_nnx, BRIDGES[who]), self.call_to_nnx)
                for who in BRIDGES
            },
        }

    def linen_train(self) -> dict[str, Callable[[], Callable[[], Any]]]:
        """``jax.jit`` step with ``jax.value_and_grad`` over ``apply`` and optax adam."""
        y, tx, rngs = self.spec.y, optax.adam(1e-3), self.apply_rngs

        def make_for(build: Callable[[], tuple[nn.Module, Any]]):
            cell: list[Any] = []

            def make() -> Callable[[], Any]:
                if not cell:
                    module, variables = build()
                    params = variables["params"]
                    rest = {k: v for k, v in variables.items() if k != "params"}

                    @jax.jit
                    def step(params: Any, opt_state: Any, rest: Any, x: jax.Array) -> Any:
                        def loss_fn(p: Any) -> tuple[jax.Array, Any]:
                            out = self.apply(module, {"params": p, **rest}, x, rngs)
                            out, updates = out if self.mutable else (out, {})
                            return mse(out, y), updates

                        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
                        upd, opt_state = tx.update(grads, opt_state, params)
                        new_params = optax.apply_updates(params, upd)
                        return new_params, opt_state, {**rest, **updates}, loss

                    cell[:] = [step, params, tx.init(params), rest]

                def thunk() -> None:
                    step, *state = cell
                    *state, loss = step(*state, self.x)
                    cell[1:] = state
                    _block(loss)

                return thunk

            return make

        def native() -> tuple[nn.Module, Any]:
            return self.linen, self.linen.init(self.init_keys, self.x)

        def bridged(who: str) -> Callable[[], tuple[nn.Module, Any]]:
            def build() -> tuple[nn.Module, Any]:
                module = self.to_linen(BRIDGES[who])
                return module, module.init(self.init_keys, self.x)

            return build

        return {
            "native": make_for(native),
            "linnx": make_for(bridged("linnx")),
            "flax": make_for(bridged("flax")),
        }

    # -- measured rows ------------------------------------------------------------------------

    def program_cases(self) -> list[Case]:
        """Instruction count and flops of the compiled eval-mode forward pass, both ways."""
        x = self.x
        linen_eval = self.spec.linen(False)

        @functools.cache
        def compiled(direction: str, who: str) -> Any:
            if direction == "ToNNX vs Linen":
                if who == "native":
                    v = linen_eval.init(self.init_keys, x)
                    return jax.jit(linen_eval.apply).trace(v, x).lower().compile()
                graphdef, state = nnx.split(self.to_nnx(BRIDGES[who], linen_eval))
            else:
                if who != "native":
                    module = self.to_linen(BRIDGES[who], train=False)
                    v = module.init(self.init_keys, x)
                    return jax.jit(module.apply).trace(v, x).lower().compile()
                graphdef, state = nnx.split(self.nnx_model(train=False))
            return jax.jit(_forward_only(graphdef)).trace(state, x).lower().compile()

        rows = []
        for direction in ("ToNNX vs Linen", "ToLinen vs NNX"):
            for unit, measure in (("instr", _hlo_instructions), ("flops", _flops)):
                rows.append(
                    Case(
                        f"program {unit} {direction}",
                        self.spec.name,
                        unit=unit,
                        target=1.0,
                        exact=True,
                        measures={
                            who: functools.partial(
                                lambda d, w, f: f(compiled(d, w)), direction, who, measure
                            )
                            for who in ("native", "linnx", "flax")
                        },
                    )
                )
        return rows

    def memory_cases(self) -> list[Case]:
        """Peak live device bytes: eager ToLinen.apply (with the variables it reads) and inits.

        For the apply row the figure is the bytes of the state the call reads (the NNX
        module's state, or the Linen variables) plus the peak growth of live bytes during the
        call. For the init rows it is the peak growth during init (what init creates).
        """
        x, rngs = self.x, self.apply_rngs

        def state_bytes(tree: Any) -> int:
            return sum(getattr(leaf, "nbytes", 0) for leaf in jax.tree.leaves(tree))

        def peak_growth(fn: Callable[[], Any]) -> int:
            before = live_bytes()
            peak, _ = peak_live_bytes(fn, every=8)
            return peak - before

        def apply_native() -> int:
            model = self.nnx_model()
            _block(model(x))
            return state_bytes(nnx.state(model)) + peak_growth(lambda: model(x))

        def apply_bridged(who: str) -> Callable[[], int]:
            def measure() -> int:
                module = self.to_linen(BRIDGES[who])
                v = module.init(self.init_keys, x)
                _block(self.apply(module, v, x, rngs))
                return state_bytes(v) + peak_growth(lambda: self.apply(module, v, x, rngs))

            return measure

        def lazy_init(who: str) -> Callable[[], int]:
            if who == "native":
                return lambda: peak_growth(lambda: self.linen.init(self.init_keys, x))
            return lambda: peak_growth(lambda: nnx.state(self.to_nnx(BRIDGES[who])))

        def to_linen_init(who: str) -> Callable[[], int]:
            if who == "native":
                return lambda: peak_growth(lambda: nnx.state(self.nnx_model()))
            module = self.to_linen(BRIDGES[who])
            return lambda: peak_growth(lambda: module.init(self.init_keys, x))

        m = self.spec.name
        return [
            Case(
                "peak mem eager ToLinen.apply vs NNX call",
                m,
                unit="bytes",
                target=T_MEMORY,
                measures={
                    "native": apply_native,
                    "linnx": apply_bridged("linnx"),
                    "flax": apply_bridged("flax"),
                },
            ),
            Case(
                "peak mem lazy_init vs linen.init (info)",
                m,
                unit="bytes",
                measures={w: lazy_init(w) for w in ("native", "linnx", "flax")},
            ),
            Case(
                "peak mem ToLinen.init vs NNX ctor (info)",
                m,
                unit="bytes",
                measures={w: to_linen_init(w) for w in ("native", "linnx", "flax")},
            ),
        ]


def _first_call(
    native: Callable[[], tuple[Callable, tuple]],
    bridged: Callable[[str], tuple[Callable, tuple]],
    compile_only: bool,
) -> dict[str, Callable[[], Callable[[], Any]]]:
    """Makers for a first-call row: every thunk call traces a fresh function object.

    ``compile_only``: the thunk compiles a program traced and lowered (untimed) in ``make()``.
    """

    def maker(get: Callable[[], tuple[Callable, tuple]]) -> Callable[[], Callable[[], Any]]:
        def make() -> Callable[[], Any]:
            fn, args = get()

            def lower() -> Any:
                fresh = functools.wraps(fn)(lambda *a: fn(*a))  # a new function: no jit cache
                return jax.jit(fresh).trace(*args).lower()

            if compile_only:
                lowered = lower()
                return lowered.compile
            return lower

        return make

    return {
        "native": maker(native),
        "linnx": maker(functools.partial(bridged, "linnx")),
        "flax": maker(functools.partial(bridged, "flax")),
    }


# -- main ---------------------------------------------------------------------------------------

MODES = {
    # mode: (size, rounds, min_round_s, models)
    "full": ("full", 9, 0.1, None),
    "quick": ("full", 1, 0.005, None),
    "smoke": ("smoke", 2, 0.0005, ("mlp",)),
}


def _machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": load,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": _version("flax"),
        "linnx": linnx.__version__,
        "device": str(jax.devices()[0]),
    }


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="one round, no medians, no memory rows (< 1 min)"
    )
    mode.add_argument(
        "--smoke",
        action="store_true",
        help="one tiny model, 2 rounds: checks the benchmark runs (CI)",
    )
    p.add_argument("--rounds", type=int, help="override the number of rounds")
    p.add_argument("--models", help="comma-separated subset of: mlp,transformer,convbn")
    p.add_argument("--no-memory", action="store_true", help="skip the (slow) memory rows")
    p.add_argument("--rows", help="only rows whose name contains this text (e.g. 'ToLinen.init')")
    p.add_argument("--json", default="bench-out/bench.json", help="where to write the results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    size, rounds, min_round_s, names = MODES[mode]
    rounds = args.rounds or rounds
    if args.models:
        names = tuple(args.models.split(","))
    machine = _machine()
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    # Quick mode skips the memory rows: deterministic, so one full run says all about them.
    memory = not args.no_memory and mode != "quick"
    cases = [
        case
        for spec in model_specs(size, names)
        for case in ModelBench(spec).cases(memory=memory)
        if args.rows is None or args.rows in case.row
    ]
    results = run_cases(cases, rounds, min_round_s, log)
    elapsed = time.perf_counter() - start
    title = (
        f"linnx bridge benchmark: mode={mode}, rounds={rounds}, {elapsed:.0f} s, "
        f"{machine['cpu_count']} CPUs, load at start {machine['loadavg_at_start']}, "
        f"jax {machine['jax']}, flax {machine['flax']}, {machine['device']}"
    )
    data = {
        "mode": mode,
        "rounds": rounds,
        "elapsed_s": elapsed,
        "machine": machine,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "rows": [r.to_json() for r in results],
    }
    statuses = [r.status for r in results if r.case.target is not None]
    report(title, format_table(results), statuses, args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
