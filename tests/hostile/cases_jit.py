"""Hostile inputs to linnx.jit: what it refuses (CASES) and what it hands to nnx.jit (FALLBACKS).

``CASES`` are typed errors, checked by the suite's harness like every other table. A
``FALLBACKS`` entry is a step the fast path cannot express: ``linnx.jit`` must warn once with
a :class:`linnx.JitFallbackWarning` that names the reason and the fix, and give exactly what
``nnx.jit`` gives (see ``test_jit_fallbacks.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from flax import nnx

import linnx

from ._harness import Table
from .models import Port, X

table = Table("jit")
case = table.case


def step(model, x):
    return model(x)


# -- at decoration -----------------------------------------------------------------------------


@case("fun-is-not-callable", linnx.JitTypeError, r"linnx\.jit\(fun=42\)", r"@linnx\.jit")
def _(env):
    return lambda: linnx.jit(42)


@case(
    "fun-is-a-bound-module-method",
    linnx.JitTypeError,
    r"linnx\.jit\(Port\.__call__\)",
    r"pass the object as an argument",
)
def _(env):
    model = Port()
    return lambda: linnx.jit(model.__call__), model


@case(
    "static_argnums-out-of-range",
    linnx.JitArgumentError,
    r"static_argnums=5",
    r"count positions from 0",
)
def _(env):
    return lambda: linnx.jit(step, static_argnums=5)


@case(
    "static_argnames-unknown",
    linnx.JitArgumentError,
    r"static_argnames='trian'.*no parameter named 'trian'",
    r"use one of \['model', 'x'\]",
)
def _(env):
    return lambda: linnx.jit(step, static_argnames="trian")


@case(
    "donate_argnames-unknown", linnx.JitArgumentError, r"donate_argnames='optimizer'", r"use one of"
)
def _(env):
    return lambda: linnx.jit(step, donate_argnames=("model", "optimizer"))


@case(
    "static-and-donated",
    linnx.JitArgumentError,
    r"argument 1 is both static and donated",
    r"remove it from donate_argnums",
)
def _(env):
    return lambda: linnx.jit(step, static_argnums=1, donate_argnums=(0, 1))


@case("argnums-not-ints", linnx.JitArgumentError, r"static_argnums='0'", r"static_argnums=\(0, 1\)")
def _(env):
    return lambda: linnx.jit(step, static_argnums="0")


@case("negative-argnums", linnx.JitArgumentError, r"donate_argnums=-1", r"count positions from 0")
def _(env):
    return lambda: linnx.jit(step, donate_argnums=-1)


# -- at the call -------------------------------------------------------------------------------


@case(
    "module-as-static-argnum",
    linnx.JitArgumentError,
    r"argument 'model' is an NNX Port, but static_argnums marks it static",
    r"remove 0 from static_argnums",
)
def _(env):
    model = Port()
    return lambda: linnx.jit(step, static_argnums=0)(model, X), model


@case(
    "module-as-static-argname",
    linnx.JitArgumentError,
    r"argument 'model' is an NNX Port, but static_argnames",
    r"remove 'model' from static_argnames",
)
def _(env):
    model = Port()
    fast = linnx.jit(step, static_argnames="model")
    return lambda: fast(x=X, model=model), model


CASES = table.cases


# -- fallbacks ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Fallback:
    """A step the fast path hands to nnx.jit: ``make()`` -> (step, args); the warning's text."""

    id: str
    make: Callable[[], tuple[Callable[..., Any], tuple]]
    says: str  # regex: the reason and where
    fix: str  # regex: the remedy


def _container():
    def f(models, x):
        return models[0](x) + models[1](x)

    return f, ([Port(1), Port(2)], X)


def _returns_module():
    def f(model, x):
        model(x)
        return model

    return f, (Port(), X)


class Plain(nnx.Module):
    def __init__(self):
        self.w = nnx.data(jnp.ones((3,)))

    def __call__(self, x):
        self.w = self.w + 1.0
        return x * self.w


def _plain_array():
    return (lambda m, x: m(x)), (Plain(), X)


class RefParam(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.ones((3,)), ref=True)

    def __call__(self, x):
        return x * self.w


def _array_ref():
    return (lambda m, x: m(x)), (RefParam(), X)


class Grows(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.ones(()))

    def __call__(self, x):
        setattr(self, f"seen_{len(vars(self))}", nnx.BatchStat(jnp.sum(x)))
        return x * self.w


def _grows():
    return (lambda m, x: m(x)), (Grows(), X)


FALLBACKS = (
    Fallback(
        "modules-in-a-list",
        _container,
        r"argument 'models' is a list holding NNX objects",
        r"pass each module, optimizer or Rngs as an argument of its own",
    ),
    Fallback(
        "returns-the-module",
        _returns_module,
        r"the step returns NNX objects \(Port\)",
        r"return arrays",
    ),
    Fallback(
        "array-attribute",
        _plain_array,
        r"m\.w holds an array \(ArrayImpl\) directly, not in an nnx\.Variable",
        r"wrap the value in a Variable",
    ),
    Fallback(
        "array-ref-variable",
        _array_ref,
        r"m\.w is a hijax or array-ref variable",
        r"hijax=False, ref=False",
    ),
    Fallback(
        "structure-changes-every-call",
        _grows,
        r"changes the structure of its NNX arguments on every call \(added m\.seen_",
        r"create variables and submodules before the first step",
    ),
)
