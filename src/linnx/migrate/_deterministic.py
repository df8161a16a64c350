"""Train mode without dropout, on both sides, and proof that nothing random is left.

Linen and NNX cannot draw the same dropout masks, so :func:`verify` compares train mode with
every dropout it knows of switched off:

* Linen, through :func:`flax.linen.intercept_methods`: an ``nn.Dropout`` call returns its
  input, and an attention module (``nn.MultiHeadDotProductAttention`` and its subclasses)
  runs with ``dropout_rate`` 0 for the duration of its call (its ``deterministic`` field or
  argument cannot be overridden: Flax refuses both at once).
* NNX: on the clone that verify runs, ``nnx.Dropout`` and ``nnx.MultiHeadAttention`` get
  ``deterministic=True`` and a zero rate, so a ``deterministic=False`` call argument cannot
  switch them back on.

What the switches miss (a custom module that calls ``make_rng`` or ``nn.dot_product_attention``
with a dropout rate, an NNX module that draws from its own ``nnx.Rngs``) is found by checking,
not assumed: Linen's train call runs twice with different ``dropout`` keys and every module's
output is compared; NNX's RNG counters are read before and after its call. The report then
names the module instead of claiming that dropout was off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
from flax import linen as nn
from flax import nnx

from ._paths import path_str

__all__ = ["LinenCalls", "linen_without_dropout", "nnx_without_dropout", "first_random_call",
           "rng_counts", "drawn_streams"]  # fmt: skip


@dataclass
class LinenCalls:
    """What one Linen run did: the dropout layers it bypassed, and each call's outputs."""

    bypassed: set[str] = field(default_factory=set)
    #: (module path, class name, output leaves as host arrays) in order of completion.
    outputs: list[tuple[str, str, list[np.ndarray]]] = field(default_factory=list)


def _concrete_leaves(tree: Any) -> list[np.ndarray] | None:
    leaves = jax.tree.leaves(tree)
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        return None  # inside a lifted transform: compared through the enclosing call
    return [np.asarray(x) for x in leaves if hasattr(x, "shape")]


@contextlib.contextmanager
def linen_without_dropout(calls: LinenCalls) -> Iterator[None]:
    """Switches off Linen dropout (layers and attention) and records every call's outputs."""

    def interceptor(next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
        module, method = context.module, context.method_name
        try:
            where = path_str(module.path)
        except Exception:  # an unbound helper module
            where = "?"
        if isinstance(module, nn.Dropout) and method == "__call__":
            calls.bypassed.add(where)
            return args[0] if args else kwargs["inputs"]
        rate = getattr(module, "dropout_rate", 0.0)
        attention = isinstance(module, nn.MultiHeadDotProductAttention) and method == "__call__"
        if attention and isinstance(rate, int | float) and rate > 0:
            calls.bypassed.add(where)
            # The module is the bound copy of this apply, never the caller's own instance.
            object.__setattr__(module, "dropout_rate", 0.0)
            try:
                out = next_fun(*args, **kwargs)
            finally:
                object.__setattr__(module, "dropout_rate", rate)
        else:
            out = next_fun(*args, **kwargs)
        leaves = _concrete_leaves(out)
        if leaves is not None:
            calls.outputs.append((where, type(module).__name__, leaves))
        return out

    with nn.intercept_methods(interceptor):
        yield


def first_random_call(a: LinenCalls, b: LinenCalls) -> tuple[str, str] | None:
    """The first call (innermost first) whose outputs differ between two runs, or None."""
    for (path, cls, xs), (_, _, ys) in zip(a.outputs, b.outputs, strict=False):
        if len(xs) != len(ys) or any(
            x.shape != y.shape or not np.array_equal(x, y) for x, y in zip(xs, ys, strict=True)
        ):
            return path or "<root>", cls
    return None


def nnx_without_dropout(model: nnx.Module) -> list[str]:
    """Makes every ``nnx.Dropout`` and ``nnx.MultiHeadAttention`` of ``model`` deterministic
    (in place: ``model`` is verify's clone); returns their paths."""
    done = []
    for path, module in nnx.iter_modules(model):
        if isinstance(module, nnx.Dropout):
            module.deterministic, module.rate = True, 0.0
        elif isinstance(module, nnx.MultiHeadAttention):
            module.deterministic, module.dropout_rate = True, 0.0
        else:
            continue
        done.append(path_str(path))
    return done


def rng_counts(model: nnx.Module) -> dict[str, np.ndarray]:
    """Every ``RngCount`` of ``model`` by path (stacked under ``nnx.vmap``: an array): a count
    that moves means numbers were drawn."""
    return {
        path_str(p): np.array(v.get_value())
        for p, v in nnx.to_flat_state(nnx.state(model, nnx.RngCount))
    }


def drawn_streams(
    model: nnx.Module, before: dict[str, np.ndarray], after: dict[str, np.ndarray]
) -> Sequence[tuple[str, str]]:
    """``(stream path, owning module path and class)`` for each RNG stream that was used."""
    modules = {path_str(p): type(m).__name__ for p, m in nnx.iter_modules(model)}
    out = []
    for path, count in after.items():
        if path in before and np.array_equal(before[path], count):
            continue
        stream = path.rsplit("/", 1)[0]
        owner = max((m for m in modules if m == "" or stream.startswith(m + "/")), key=len)
        out.append((stream, f"{owner or '<root>'} ({modules[owner]})"))
    return out

