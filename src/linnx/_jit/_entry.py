"""One cached call shape of a step: its NNX arguments, their variables and the program.

An :class:`Entry` is built once for a set of NNX arguments (the slow part, a graph walk like
``nnx.jit``'s) and then reused while :meth:`Entry.matches` holds: the same objects in the
same argument slots, the other arguments free of NNX objects, and the recorded structure
unchanged. :func:`build` raises :class:`~._snapshot.Unsupported` for what the fast path cannot
express, and returns None for a call the fast path should leave to ``nnx.jit`` this once
(objects that may not be updated at the current trace level).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import jax
import jax.extend
import numpy as np
from flax import nnx

from .._flax_internals import can_update_in_place
from ._argspec import ArgSpec
from ._errors import JitArgumentError
from ._program import DONATED, KEPT, Layout, make_program
from ._snapshot import Snapshot, Unsupported, take
from ._variables import get_raw, set_raw

__all__ = ["Entry", "build", "is_nnx_object", "free_of_nnx"]


def current_trace() -> Any:
    """An opaque token of the current JAX trace level (what ``nnx.Variable`` records)."""
    return jax.extend.core.get_opaque_trace_state(convention="nnx")


_NNX_TYPES: dict[type, bool] = {}


def is_nnx_object(x: Any) -> bool:
    """Whether ``x`` is an NNX object (module, optimizer, ``Rngs``, variable), by type."""
    t = type(x)
    known = _NNX_TYPES.get(t)
    if known is None:
        known = _NNX_TYPES[t] = issubclass(t, nnx.Pytree) or isinstance(x, nnx.Variable)
    return known


# Argument types that cannot hold NNX objects, checked by type alone.
_LEAF_TYPES = frozenset(
    {
        type(jax.numpy.zeros(())),
        np.ndarray,
        int,
        float,
        bool,
        complex,
        str,
        type(None),
        np.float32,
        np.float64,
        np.int32,
        np.int64,
        np.bool_,
    }
)
# Pytree structures of other arguments (batches as dicts or tuples): True when they hold no
# NNX object. Bounded, so a stream of ever-new structures cannot grow it without limit.
_FREE_TREEDEFS: dict[Any, bool] = {}
_MAX_TREEDEFS = 512


def free_of_nnx(x: Any) -> bool:
    """Whether an argument holds no NNX object (a leaf type, or a cached pytree structure)."""
    if type(x) in _LEAF_TYPES:
        return True
    treedef = jax.tree.structure(x)
    try:
        free = _FREE_TREEDEFS.get(treedef)
    except TypeError:  # a pytree node with unhashable static data: look, do not cache
        return not any(map(is_nnx_object, jax.tree.leaves(x, is_leaf=is_nnx_object)))
    if free is None:
        free = not any(map(is_nnx_object, jax.tree.leaves(x, is_leaf=is_nnx_object)))
        if len(_FREE_TREEDEFS) >= _MAX_TREEDEFS:
            _FREE_TREEDEFS.clear()
        _FREE_TREEDEFS[treedef] = free
    return free


class Entry:
    """A built call shape; see the module docstring."""

    __slots__ = (
        "nargs",
        "kwnames",
        "graph_args",
        "graph_kwargs",
        "plain_pos",
        "plain_kw",
        "placeholders",
        "snapshot",
        "donated",
        "kept",
        "order",
        "program",
        "trace",
    )

    nargs: int
    kwnames: frozenset[str]
    graph_args: tuple[tuple[int, Any], ...]
    graph_kwargs: tuple[tuple[str, Any], ...]
    plain_pos: tuple[int, ...]
    plain_kw: tuple[str, ...]
    placeholders: tuple[int, ...]
    snapshot: Snapshot
    donated: list[nnx.Variable]
    kept: list[nnx.Variable]
    order: list[nnx.Variable]
    program: Callable[..., Any]
    trace: Any

    def __init__(self, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self, name, value)

    def matches(self, args: tuple, kwargs: dict) -> bool:
        """Whether a call's arguments fit this entry (identity and structure checks only)."""
        if len(args) != self.nargs or kwargs.keys() != self.kwnames:
            return False
        for i, obj in self.graph_args:
            if args[i] is not obj:
                return False
        for name, obj in self.graph_kwargs:
            if kwargs[name] is not obj:
                return False
        for i in self.plain_pos:
            if not free_of_nnx(args[i]):
                return False
        for name in self.plain_kw:
            if not free_of_nnx(kwargs[name]):
                return False
        return self.snapshot.unchanged() and current_trace() == self.trace

    def call(self, args: tuple | list, kwargs: dict) -> Any:
        """Runs the program and writes the changed values back into the variables."""
        if self.placeholders:
            args = list(args)
            for i in self.placeholders:
                args[i] = None
        if self.graph_kwargs:
            kwargs = {**kwargs, **dict.fromkeys(name for name, _ in self.graph_kwargs)}
        out, updates = self.program(
            *args,
            **kwargs,
            **{DONATED: list(map(get_raw, self.donated)), KEPT: list(map(get_raw, self.kept))},
        )
        for var, value in zip(self.order, updates, strict=True):
            if value is not None:
                set_raw(var, value)
        return out


def _arg_name(params: list[str], i: int) -> str:
    return params[i] if i < len(params) else f"args[{i}]"


def build(
    args: tuple,
    kwargs: dict,
    spec: ArgSpec,
    label: str,
    param_names: list[str],
    programs: dict[Any, Callable[..., Any]],
    fun: Callable[..., Any],
) -> Entry | None:
    """Walks a call's NNX arguments once and returns the entry that serves calls like it."""
    graph_pos: list[int] = []
    plain_pos: list[int] = []
    graph_kw: list[str] = []
    plain_kw: list[str] = []
    names: list[str] = []
    for key, x in [*enumerate(args), *sorted(kwargs.items())]:
        name = _arg_name(param_names, key) if isinstance(key, int) else key
        if is_nnx_object(x):
            if spec.is_static(key):
                which = "static_argnums" if isinstance(key, int) else "static_argnames"
                raise JitArgumentError(
                    f"linnx.jit({label}): argument {name!r} is an NNX "
                    f"{type(x).__name__}, but {which} marks it static. NNX objects carry "
                    f"arrays and are updated in place, so they cannot be static.\n"
                    f"Fix: remove {key!r} from {which}."
                )
            (graph_pos if isinstance(key, int) else graph_kw).append(key)
            names.append(name)
        elif free_of_nnx(x):
            (plain_pos if isinstance(key, int) else plain_kw).append(key)
        else:
            raise Unsupported(
                f"argument {name!r} is a {type(x).__name__} holding NNX objects",
                "pass each module, optimizer or Rngs as an argument of its own",
            )
    objs = tuple(args[i] for i in graph_pos) + tuple(kwargs[k] for k in graph_kw)
    graphdef, flat = nnx.flatten(objs)
    paths, variables = list(flat.paths), list(flat.leaves)
    snapshot: Snapshot = take(objs, names, paths, variables)
    if not all(can_update_in_place(v) for v in variables) or any(
        isinstance(leaf, jax.core.Tracer) for v in variables for leaf in jax.tree.leaves(get_raw(v))
    ):
        return None  # inside another trace: nnx.jit handles (or refuses) this call
    donated_ids: set[int] = set()
    for i, key in enumerate(cast("list[int | str]", [*graph_pos, *graph_kw])):
        if spec.is_donated(key):
            donated_ids.update(
                id(n) for _, n in nnx.iter_graph(objs[i]) if isinstance(n, nnx.Variable)
            )
    donated = [j for j, v in enumerate(variables) if id(v) in donated_ids]
    kept = [j for j, v in enumerate(variables) if id(v) not in donated_ids]
    layout = Layout(
        tuple(graph_pos), tuple(graph_kw), tuple(names), (*donated, *kept), len(donated)
    )
    key = (graphdef, layout)
    program = programs.get(key)
    if program is None:
        program = programs[key] = make_program(fun, graphdef, paths, layout, spec)
    return Entry(
        nargs=len(args),
        kwnames=frozenset(kwargs),
        graph_args=tuple((i, args[i]) for i in graph_pos),
        graph_kwargs=tuple((k, kwargs[k]) for k in graph_kw),
        plain_pos=tuple(plain_pos),
        plain_kw=tuple(plain_kw),
        placeholders=tuple(graph_pos),
        snapshot=snapshot,
        donated=[variables[j] for j in donated],
        kept=[variables[j] for j in kept],
        order=[variables[j] for j in (*donated, *kept)],
        program=program,
        trace=current_trace(),
    )
