"""What a step's NNX arguments look like, recorded once and re-checked cheaply on every call.

``nnx.jit`` walks the whole module graph on every call to learn its structure (the graphdef)
and collect its variables; that walk is most of its cost on small and medium models. The fast
path walks the graph once, when it first meets the arguments, and records, per node, the
thing whose change would change the graphdef:

* a ``Pytree`` (module, optimizer, ``Rngs``...): its attribute dict, copied. Comparing the live
  dict with the copy is one C-level dict comparison: every child node and variable is compared
  by identity, every static attribute by identity first, then ``==``;
* NNX's pytree bookkeeping (``PytreeState``): its two flags, which the graphdef records;
* a list, dict or ``nnx.State`` in the graph: its items, copied;
* a variable: its metadata mapping, copied (the graphdef records it).

Tuples (named tuples such as optax states included) and ``FrozenDict``s are immutable: their
identity is checked by their parent. A pytree node of any other registered type is recorded
one level deep (its pytree structure, which holds its static data, and its children), which
is slower to re-check but sees the same changes.

What this cannot see: a static attribute *object* mutated in place (a mutable config object
whose fields change, where ``nnx.jit`` would compare a recomputed graphdef). Attributes are
usually immutable values (numbers, strings, tuples, functions, Linen modules).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import jax
from flax import nnx
from flax.core import FrozenDict
from flax.nnx import graph as nnx_graph

from .._flax_internals import pytree_state_type
from ._variables import is_plain_variable, metadata_of

__all__ = ["Snapshot", "Unsupported", "take", "path_str"]


class Unsupported(Exception):  # noqa: N818 - a reason, not an error: caught by the wrapper
    """A structure the fast path cannot express: ``reason`` names what and where, ``fix`` how."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


def path_str(names: Sequence[str], path: tuple) -> str:
    """``model.fc1.kernel`` from the flatten path ``(0, 'fc1', 'kernel')`` of the argument tuple."""
    head, *rest = path
    return names[head] + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in rest)


_pytree_flags = operator.attrgetter("initializing", "is_setup")
_raw_mapping = operator.attrgetter("raw_mapping")  # State's own dict; items() would wrap each
# NNX's per-object bookkeeping type (its flags are part of the graphdef), or None.
_PYTREE_STATE = pytree_state_type()


def _same(x: Any) -> Any:
    return x


def _one_level(node: Any) -> tuple[Any, list[Any]]:
    children, treedef = jax.tree_util.tree_flatten(node, is_leaf=lambda x: x is not node)
    return treedef, children


def _check_for(node: Any) -> tuple[Callable[[Any], Any], Any] | None:
    """``(getter, snapshot)`` such that ``getter(node) != snapshot`` after a structural change.

    None for an immutable node; raises ``LookupError`` for a node that is not a pytree.
    """
    if isinstance(node, nnx.Pytree):
        return vars, dict(vars(node))
    if _PYTREE_STATE is not None and type(node) is _PYTREE_STATE:
        return _pytree_flags, _pytree_flags(node)
    if isinstance(node, tuple | FrozenDict) or node is None:
        return None
    if type(node) is list:
        return tuple, tuple(node)
    if type(node) is dict:
        return _same, dict(node)
    if isinstance(node, nnx.State):
        return _raw_mapping, dict(node.raw_mapping)
    try:
        return _one_level, _one_level(node)
    except Exception as e:  # not a JAX pytree: an NNX graph node type of its own
        raise LookupError(type(node).__name__) from e


class Snapshot:
    """The recorded structure of a tuple of NNX objects; :meth:`unchanged` re-checks it.

    Nodes are grouped by the getter that reads them, so a check is, per group, one
    ``list(map(getter, nodes)) == snapshots``: a loop in C, not in Python.
    """

    __slots__ = ("groups",)

    def __init__(self, checks: list[tuple[Any, Callable[[Any], Any], Any]]) -> None:
        groups: dict[Any, tuple[list[Any], list[Any]]] = {}
        for node, get, snap in checks:
            nodes, snaps = groups.setdefault(get, ([], []))
            nodes.append(node)
            snaps.append(snap)
        self.groups = [(get, nodes, snaps) for get, (nodes, snaps) in groups.items()]

    def unchanged(self) -> bool:
        """Whether every node and variable still looks as recorded (no graph walk)."""
        try:
            for get, nodes, snaps in self.groups:
                if (nodes if get is _same else list(map(get, nodes))) != snaps:
                    return False
        except Exception:  # a comparison that cannot decide (arrays): treat as changed
            return False
        return True


def take(
    objs: tuple, names: Sequence[str], paths: Sequence[tuple], leaves: Sequence[Any]
) -> Snapshot:
    """Records the structure of ``objs`` (the step's NNX arguments, named ``names``).

    ``paths``/``leaves`` are the flat state of ``objs`` from ``nnx.flatten``. Raises
    :class:`Unsupported` where the fast path could not keep the Python objects in step.
    """
    for path, leaf in zip(paths, leaves, strict=True):
        if not isinstance(leaf, nnx.Variable):
            raise Unsupported(
                f"{path_str(names, path)} holds an array ({type(leaf).__name__}) directly, "
                f"not in an nnx.Variable",
                "wrap the value in a Variable (e.g. nnx.Variable(value), or nnx.BatchStat)",
            )
        if not is_plain_variable(leaf):
            raise Unsupported(
                f"{path_str(names, path)} is a hijax or array-ref variable "
                f"({type(leaf).__name__}, ref/hijax metadata set)",
                "create the variable with the default hijax=False, ref=False",
            )
    checks: list[tuple[Any, Callable[[Any], Any], Any]] = []
    for path, node in nnx.iter_graph(objs):
        if not path:
            continue  # the argument tuple itself: rebuilt from the call's arguments each time
        if isinstance(node, nnx.Variable):
            checks.append((node, metadata_of, dict(metadata_of(node))))
        elif nnx_graph.is_node(node):
            try:
                check = _check_for(node)
            except LookupError:
                raise Unsupported(
                    f"{path_str(names, path)} is a {type(node).__name__}, a graph node type "
                    f"whose changes the fast path cannot see",
                    "hold the values in an nnx.Module, nnx.List, nnx.Dict, list, dict or tuple",
                ) from None
            if check is not None:
                checks.append((node, *check))
    return Snapshot(checks)
