"""Conversions between Linen collection trees and trees of NNX variables.

A Linen collection is a nested container (dicts, and tuples for ``sow``) whose leaves are
arrays or ``AxisMetadata`` boxes (``nn.Partitioned``, :class:`NNXMeta`). On the NNX side the
same container holds ``nnx.Variable`` leaves of the type the registry pairs with the
collection. Writing a Linen result back reuses the variables already there, so references
held elsewhere (an optimizer, a user's ``w = model.params['w']``) stay live.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import linen as nn
from flax import nnx
from flax.core import meta

from .._flax_internals import can_update_in_place, variable_with_sharding_names
from .._keypath import path_str
from ._fast import PLAIN_VALUES, make_variable, read_value, variable_maker, write_value
from ._meta import NNXMeta
from ._registry import variable_type_from_name
from ._sharding import check_rules

__all__ = [
    "check_partition_rules",
    "to_nnx_tree",
    "in_place_writes",
    "to_linen_values",
    "is_variable",
]


def is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def _is_box(x: Any) -> bool:
    return isinstance(x, meta.AxisMetadata)


def new_variable(collection: str, leaf: Any) -> nnx.Variable:
    """An NNX variable for one Linen leaf, keeping any partition annotation."""
    if isinstance(leaf, NNXMeta):
        return leaf.to_nnx_variable()
    var_type = variable_type_from_name(collection)
    if isinstance(leaf, nn.LogicallyPartitioned):
        # As Flax's bridge did: the logical names are the variable's `sharding`, and the box's
        # rules its `sharding_rules`; both are resolved only where the arrays are laid out
        # (`nnx.get_partition_spec`, under the rules of any `nn.logical_axis_rules` context
        # then active). The rules were checked by `check_partition_rules`.
        extra = {"sharding_rules": tuple(leaf.rules)} if leaf.rules is not None else {}
        return variable_with_sharding_names(var_type, leaf.value, tuple(leaf.names), **extra)
    if isinstance(leaf, nn.Partitioned):
        return variable_with_sharding_names(var_type, leaf.value, tuple(leaf.names))
    if _is_box(leaf):
        return make_variable(var_type, meta.unbox(leaf))
    return make_variable(var_type, leaf)


def check_partition_rules(collection: str, tree: Any) -> None:
    """Raises :class:`ShardingRulesError` for a logically partitioned leaf of ``tree`` whose
    rules are malformed, naming its path, before any variable is made from the tree."""
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_box)[0]
    for path, leaf in flat:
        if isinstance(leaf, nn.LogicallyPartitioned) and leaf.rules is not None:
            check_rules(leaf.rules, path_str((collection, *path)))


def to_nnx_tree(collection: str, tree: Any, existing: Any = None) -> Any:
    """Turns one Linen collection into the same container of NNX variables.

    Leaves at a path where ``existing`` already holds a variable of the right type update that
    variable in place; other leaves become new variables.
    """
    if existing is None:
        # A new collection (every one, in `lazy_init`): no paths to match.
        leaves, treedef = jax.tree_util.tree_flatten(tree, is_leaf=_is_box)
        if any(type(leaf) is nn.LogicallyPartitioned for leaf in leaves):
            check_partition_rules(collection, tree)
        make = variable_maker(variable_type_from_name(collection))
        return jax.tree_util.tree_unflatten(
            treedef,
            [
                make(leaf) if type(leaf) in PLAIN_VALUES else new_variable(collection, leaf)
                for leaf in leaves
            ],
        )
    old = dict(jax.tree_util.tree_flatten_with_path(existing, is_leaf=is_variable)[0])
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_box)
    leaves = []
    expected_type = variable_type_from_name(collection)
    for path, leaf in flat:
        var = old.get(path)
        if var is not None and (type(var) is expected_type or isinstance(leaf, NNXMeta)):
            write_value(var, meta.unbox(leaf) if _is_box(leaf) else leaf)
        else:
            var = new_variable(collection, leaf)
        leaves.append(var)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def to_linen_values(tree: Any) -> Any:
    """The raw values of a tree of NNX variables, in the same containers."""
    # Every eager call reads every variable: walk the plain dicts directly, which costs a
    # fraction of `tree_map` with an `is_leaf` callback; other containers (a `sow` tuple) are
    # rare and go through tree_map.
    if isinstance(tree, nnx.Variable):
        return read_value(tree)
    if type(tree) is dict:
        return {key: to_linen_values(value) for key, value in tree.items()}
    return jax.tree_util.tree_map(read_value, tree, is_leaf=is_variable)


def in_place_writes(collection: str, tree: Any, existing: Any) -> list | None:
    """``(variable, new value)`` pairs that store ``tree`` into ``existing`` as it stands.

    The common write-back of an eager call (``batch_stats`` of a BatchNorm in training):
    nested dicts with exactly the keys ``existing`` has, and plain arrays for variables of the
    collection's type that may change at this trace level. Writing the pairs leaves the
    variables and their values as :func:`to_nnx_tree` would, without rebuilding the
    containers. Returns None for anything else (new or missing keys, boxes, sown tuples, a
    frozen or replaced variable), which takes the general path.
    """
    expected_type = variable_type_from_name(collection)
    writes: list[tuple[nnx.Variable, Any]] = []

    def match(new: Any, old: Any) -> bool:
        if type(new) is dict and type(old) is dict:
            return new.keys() == old.keys() and all(match(new[k], old[k]) for k in new)
        if type(old) is expected_type and can_update_in_place(old) and type(new) in PLAIN_VALUES:
            writes.append((old, new))
            return True
        return False

    return writes if match(tree, existing) else None
