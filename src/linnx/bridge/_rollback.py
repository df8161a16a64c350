"""Undoing a failed :func:`lazy_init`: a module tree is left exactly as it was before the call.

``lazy_init`` walks a whole NNX tree, and every ``ToNNX`` (or ``linnx.Module``) in it creates
its variables as the forward pass reaches it. When a later part of the pass fails, the earlier
parts have already stored variables and drawn rng keys; a half-initialized tree is worse than
none, since retrying would silently keep the first half. So the tree is recorded before the
pass and put back on failure: every graph node's attribute dict (which drops attributes and
submodules that the pass added) and every variable's value (which undoes in-place updates and
rng draws).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flax import nnx

__all__ = ["snapshot"]


def snapshot(root: Any) -> Callable[[], None]:
    """Records the state of the graph under ``root``; the returned function restores it."""
    if not isinstance(root, nnx.Pytree):
        return lambda: None
    nodes: list[tuple[Any, dict[str, Any]]] = []
    values: list[tuple[nnx.Variable, Any]] = []
    for _, node in nnx.iter_graph(root):
        if isinstance(node, nnx.Variable):
            values.append((node, node.get_value()))
        elif isinstance(node, nnx.Pytree):
            nodes.append((node, dict(vars(node))))

    def restore() -> None:
        for node, attributes in nodes:
            # Written directly: the attribute checks of `__setattr__` already passed when these
            # values were first set, and they would refuse some bookkeeping attributes.
            current = vars(node)
            current.clear()
            current.update(attributes)
        for var, value in values:
            var.set_value(value)

    return restore
