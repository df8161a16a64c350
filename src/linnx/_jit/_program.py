"""The pure function that ``jax.jit`` compiles for one structure of a step's NNX arguments.

Given the graphdef of the arguments (fixed per program) and their variables' stored values as
flat lists, the program rebuilds fresh NNX objects with ``nnx.unflatten`` (as ``nnx.jit`` does
inside its trace), runs the step on them, flattens them again, and returns the step's output
and, per variable, its new value, or ``None`` where the step left it as it came in (decided
while tracing, so it costs nothing per call, and ``None`` leaves carry no buffers). Donated
variables are always returned: their old buffers are gone after the call.

Two things can only be known while tracing, and abort the trace (nothing has been written to
the caller's objects at that point):

* the step changed the arguments' structure (added or removed a variable, replaced a
  submodule, changed a static attribute): :class:`StructureChanged`; the wrapper then runs
  this call through ``nnx.jit``, which carries structural updates back;
* the step returns NNX objects, or sets a variable to ``None``: :class:`~._snapshot.Unsupported`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
from flax import nnx

from ._argspec import ArgSpec
from ._snapshot import Unsupported, path_str

__all__ = ["Layout", "StructureChanged", "make_program", "DONATED", "KEPT"]

#: The keyword arguments that carry the variables' values into the program.
DONATED = "_linnx_donated"
KEPT = "_linnx_kept"


class StructureChanged(Exception):  # noqa: N818 - a signal to the wrapper, never shown as is
    """The step changed the structure of its NNX arguments; ``what`` says how."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a call's NNX objects sit, and how their variables are ordered for the program.

    Attributes:
        graph_pos: positional indices holding NNX objects.
        graph_kw: keyword names holding NNX objects (after the positional ones in ``objs``).
        names: the display name of each NNX argument, for messages.
        order: for each variable in program order (donated first, then kept), its index in
            ``nnx.flatten`` order.
        n_donated: how many variables lead ``order`` as donated.
    """

    graph_pos: tuple[int, ...]
    graph_kw: tuple[str, ...]
    names: tuple[str, ...]
    order: tuple[int, ...]
    n_donated: int


def _is_nnx_object(x: Any) -> bool:
    return isinstance(x, nnx.Pytree | nnx.Variable)


def _same_value(old: Any, new: Any) -> bool:
    """Whether the step left a variable's value as it came in (tracers, by identity)."""
    if old is new:
        return True
    old_leaves, old_tree = jax.tree.flatten(old)
    new_leaves, new_tree = jax.tree.flatten(new)
    same_tree = old_tree == new_tree  # type: ignore[operator]  # jaxlib stub: PyTreeDef unresolved
    return same_tree and all(a is b for a, b in zip(old_leaves, new_leaves, strict=True))


def _describe_change(names: Sequence[str], before: Sequence[tuple], objs: tuple) -> str:
    after = nnx.flatten(objs)[1].paths
    added = [path_str(names, p) for p in after if p not in set(before)]
    removed = [path_str(names, p) for p in before if p not in set(after)]
    parts = []
    if added:
        parts.append("added " + ", ".join(added))
    if removed:
        parts.append("removed " + ", ".join(removed))
    return "; ".join(parts) or "changed a submodule, a static attribute or variable metadata"


def make_program(
    fun: Callable[..., Any],
    graphdef: nnx.GraphDef,
    paths: Sequence[tuple],
    layout: Layout,
    spec: ArgSpec,
) -> Callable[..., Any]:
    """``jax.jit`` of the pure step for one graphdef and layout (see the module docstring)."""
    n_vars = len(layout.order)
    positional = dict(zip(layout.graph_pos, range(len(layout.graph_pos)), strict=True))
    keyword = {name: len(positional) + k for k, name in enumerate(layout.graph_kw)}

    def pure(*args: Any, **kwargs: Any) -> tuple[Any, list[Any]]:
        given = [*kwargs.pop(DONATED), *kwargs.pop(KEPT)]
        raws: list[Any] = [None] * n_vars
        for j, i in enumerate(layout.order):
            raws[i] = given[j]
        objs = nnx.unflatten(graphdef, raws)
        args = tuple(objs[positional[i]] if i in positional else a for i, a in enumerate(args))
        for name, k in keyword.items():
            kwargs[name] = objs[k]
        out = fun(*args, **kwargs)
        returned = [x for x in jax.tree.leaves(out, is_leaf=_is_nnx_object) if _is_nnx_object(x)]
        if returned:
            raise Unsupported(
                f"the step returns NNX objects ({type(returned[0]).__name__})",
                "return arrays (e.g. nnx.state(model) values, or the loss) and read the "
                "updated objects you passed in",
            )
        new_graphdef, new_raws = nnx.flatten(objs, with_paths=False)
        if new_graphdef != graphdef:
            raise StructureChanged(_describe_change(layout.names, paths, objs))
        updates: list[Any] = []
        for j, i in enumerate(layout.order):
            old, new = raws[i], new_raws[i]
            if j >= layout.n_donated and _same_value(old, new):
                updates.append(None)
            elif new is None:
                raise Unsupported(
                    f"the step sets {path_str(layout.names, paths[i])} to None",
                    "keep an array in the variable (or delete it outside the step)",
                )
            else:
                updates.append(new)
        return out, updates

    pure.__name__ = getattr(fun, "__name__", "step")
    pure.__qualname__ = getattr(fun, "__qualname__", pure.__name__)
    graph_pos, graph_kw = set(layout.graph_pos), set(layout.graph_kw)
    return jax.jit(
        pure,
        static_argnums=spec.static_argnums,
        static_argnames=spec.static_argnames,
        donate_argnums=tuple(i for i in spec.donate_argnums if i not in graph_pos),
        donate_argnames=(*(n for n in spec.donate_argnames if n not in graph_kw), DONATED),
    )
