"""Boxed Linen parameters (``nn.with_partitioning``, ``nn.with_logical_partitioning``) on disk.

A box is a pytree node whose only child is its array, so Orbax stores a boxed kernel as
``params/Dense_0/kernel/value`` and drops the box itself: its axis names are static fields,
not leaves. Read back without a target, the checkpoint then has one level too many, and every
leaf is missing to a migration plan that expects ``params/Dense_0/kernel``.

So :func:`box_record` writes the boxes' kinds and names into ``linnx.json`` next to a Linen
checkpoint that linnx saves, and :func:`unwrap` reads a restored tree back as the boxes they
were: a recorded box is rebuilt (``nn.Partitioned`` / ``nn.LogicallyPartitioned`` with its
names and rules), and an Orbax-only checkpoint's ``{'value': array}`` level, which only a box
leaves behind, is folded away with its names unknown (``None``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
from flax import linen as nn
from flax.core import meta

from .._keypath import path_str
from ._paths import unboxed

__all__ = ["box_record", "unwrap", "rebox", "names_after"]

_KINDS: dict[str, type] = {
    "Partitioned": nn.Partitioned,
    "LogicallyPartitioned": nn.LogicallyPartitioned,
}


def _key(k: Any) -> str:
    return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))


def _tuples(x: Any) -> Any:
    """JSON turns the names' tuples into lists; a box wants its tuples back."""
    return tuple(_tuples(i) for i in x) if isinstance(x, list | tuple) else x


def box_record(tree: Any) -> dict[str, dict[str, Any]]:
    """``{'params/Dense_0/kernel': {'kind': 'Partitioned', 'names': [...]}}`` for a tree."""
    out: dict[str, dict[str, Any]] = {}
    leaves = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: isinstance(x, meta.AxisMetadata)
    )[0]
    for path, leaf in leaves:
        if not isinstance(leaf, meta.AxisMetadata):
            continue
        entry: dict[str, Any] = {"kind": type(leaf).__name__}
        if isinstance(leaf, nn.Partitioned):
            entry["names"] = leaf.names
        if isinstance(leaf, nn.LogicallyPartitioned) and leaf.rules is not None:
            entry["rules"] = leaf.rules
        out["/".join(_key(k) for k in path)] = entry
    return out


def _is_box_level(node: Any) -> bool:
    """A ``{'value': array}`` mapping: what Orbax leaves of a box."""
    return (
        isinstance(node, Mapping)
        and len(node) == 1
        and "value" in node
        and not isinstance(node["value"], Mapping)
    )


def unwrap(
    tree: Any, record: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> tuple[Any, dict[str, tuple[Any, ...] | None]]:
    """Folds each box level of ``tree`` back into its box; returns the tree and the boxes.

    The boxes map a path to its axis names (``None`` when the checkpoint does not record them).
    A recorded box becomes the Flax box it was; an unrecorded one its bare array.
    """
    boxes: dict[str, tuple[Any, ...] | None] = {}

    def walk(node: Any, path: tuple[str, ...]) -> Any:
        if _is_box_level(node):
            where = path_str(path)
            found = record.get(where)
            entry: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
            value = node["value"]
            kind = _KINDS.get(str(entry.get("kind")))
            if kind is None or "names" not in entry:
                boxes[where] = None
                return value
            names = _tuples(entry["names"])
            boxes[where] = names
            if kind is nn.LogicallyPartitioned:
                return nn.LogicallyPartitioned(value, names, rules=_tuples(entry.get("rules")))
            return nn.Partitioned(value, names)
        if isinstance(node, Mapping):
            return {k: walk(v, (*path, str(k))) for k, v in node.items()}
        if isinstance(node, list | tuple) and not hasattr(node, "_fields"):
            return type(node)(walk(v, (*path, str(i))) for i, v in enumerate(node))
        return node

    return walk(tree, prefix), boxes


def rebox(variables: Mapping[str, Any], boxes: Mapping[str, Any], wanted: set[str]) -> Any:
    """Puts the ``value`` level back where a plan reads ``.../value`` itself.

    A Linen module may own a submodule whose only parameter is called ``value``; Orbax stores
    it exactly as it stores a box. The plan, which knows the module, decides.
    """
    back = {p for p in boxes if f"{p}/value" in wanted and p not in wanted}
    if not back:
        return variables

    def walk(node: Any, path: tuple[str, ...]) -> Any:
        where = path_str(path)
        if where in back:
            return {"value": unboxed(node)}
        if isinstance(node, Mapping):
            return {k: walk(v, (*path, str(k))) for k, v in node.items()}
        return node

    return walk(variables, ())


def names_after(names: tuple[Any, ...] | None, layout: Any, count: int) -> tuple[Any, ...] | None:
    """The axis names of an NNX value made from Linen leaves named ``names`` by ``layout``."""
    if names is None:
        return None
    names = tuple(names)
    if layout.kind == "stack":
        return (*names[: layout.nnx_axis], None, *names[layout.nnx_axis :])
    if layout.kind == "unstack":
        return names[: layout.linen_axis] + names[layout.linen_axis + 1 :]
    if layout.kind == "moveaxis":
        moved = list(names)
        moved.insert(layout.nnx_axis, moved.pop(layout.linen_axis))
        return tuple(moved)
    return names if count == 1 else None
