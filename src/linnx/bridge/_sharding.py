"""Laying bridged variables out on the active device mesh.

NNX variables made by the bridge carry partition names as metadata only (see
``linnx._flax_internals.variable_with_sharding_names``); this module turns names into layouts
when a mesh is active, given either as ``with mesh:`` or as ``jax.set_mesh(mesh)``. With no mesh,
arrays stay where they are and the names stay as metadata.

Names may be logical (``nn.with_logical_partitioning``, or NNX ``sharding_rules``): they are
kept as given and mapped to mesh axes only here, with the rules of ``nn.logical_axis_rules``
and the variable's own ``sharding_rules``, as ``nnx.get_partition_spec`` does. A box whose
names still are not axes of the mesh is left where it is (its names stay as metadata), rather
than failing the init. Malformed rules raise :class:`~linnx.ShardingRulesError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from flax.core import meta
from flax.core import spmd as core_spmd

from .._errors import ShardingRulesError
from .._flax_internals import legacy_mesh
from .._keypath import path_str

__all__ = ["active_mesh", "check_rules", "constrain_to_mesh"]


def active_mesh() -> jax.sharding.Mesh | jax.sharding.AbstractMesh | None:
    """The mesh of ``jax.set_mesh`` or, failing that, of a ``with mesh:`` block."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is not None and not mesh.empty:
        return mesh
    return legacy_mesh()


def check_rules(rules: Any, where: str) -> tuple:
    """``rules`` as a tuple, if it is a sequence of ``(logical name, mesh axes)`` pairs.

    Flax's resolvers unpack each rule as a pair and fail with a bare ``ValueError`` (or map
    wrongly) on anything else, such as a flat ``('embed', 'data')``; this names the rule.
    """

    def malformed(what: str) -> ShardingRulesError:
        return ShardingRulesError(
            f"{where}: {what}, not a (logical name, mesh axes) pair.\n"
            f"Fix: give the rules as a tuple of pairs, e.g. rules=(('embed', 'data'), "
            f"('mlp', 'model'), ('kv', None)); a single rule is (('embed', 'data'),)."
        )

    if isinstance(rules, (str, bytes)) or not isinstance(rules, Sequence):
        raise malformed(f"the sharding rules {rules!r} are not a sequence of rules")
    for i, rule in enumerate(rules):
        if isinstance(rule, (str, bytes)) or not isinstance(rule, Sequence) or len(rule) != 2:
            raise malformed(f"sharding rule {i} of {tuple(rules)!r} is {rule!r}")
        name, axes = rule
        axes_ok = (
            axes is None
            or isinstance(axes, str)
            or (isinstance(axes, Sequence) and all(isinstance(a, str) for a in axes))
        )
        if not isinstance(name, str) or not axes_ok:
            raise malformed(f"sharding rule {i} of {tuple(rules)!r} is {rule!r}")
    return tuple(rules)


def _axes_of(spec: jax.sharding.PartitionSpec) -> set[str]:
    axes: set[str] = set()
    for entry in spec:
        if isinstance(entry, str):
            axes.add(entry)
        elif isinstance(entry, tuple):
            axes.update(a for a in entry if isinstance(a, str))
    return axes


def _mesh_spec(leaf: Any, mesh: Any, where: str) -> jax.sharding.PartitionSpec | None:
    """The spec ``leaf`` takes on ``mesh``, or None where it cannot or need not be placed."""
    spec = leaf.get_partition_spec()
    metadata = getattr(leaf, "metadata", None)
    context_rules = core_spmd.get_logical_axis_rules()
    local_rules = metadata.get("sharding_rules") if isinstance(metadata, dict) else None
    local_rules = local_rules or getattr(leaf, "rules", None)
    if local_rules:
        local_rules = check_rules(local_rules, where)
    if context_rules or local_rules:
        # NNX semantics (`nnx.get_partition_spec`): names with a rule are mapped, others kept.
        rules = core_spmd.composite_rules(context_rules, local_rules)
        spec = jax.sharding.PartitionSpec(*core_spmd.from_sharding_rules(tuple(spec), rules))
    axes = _axes_of(spec)
    if not axes or not axes <= set(mesh.axis_names):
        return None
    return spec


def _place(value: Any, spec: jax.sharding.PartitionSpec, mesh: Any) -> Any:
    explicit = jax.sharding.AxisType.Explicit
    axis_types = dict(zip(mesh.axis_names, getattr(mesh, "axis_types", ()), strict=False))
    if any(axis_types.get(axis) == explicit for axis in _axes_of(spec)):
        # Explicit axes: sharding is part of the type; with_sharding_constraint only asserts.
        target = (
            spec
            if isinstance(mesh, jax.sharding.AbstractMesh)
            else (jax.sharding.NamedSharding(mesh, spec))
        )
        return jax.sharding.reshard(value, target)
    if isinstance(mesh, jax.sharding.AbstractMesh):
        return jax.lax.with_sharding_constraint(value, spec)
    sharding = jax.sharding.NamedSharding(mesh, spec)
    if isinstance(value, jax.core.Tracer):
        return jax.lax.with_sharding_constraint(value, sharding)
    return jax.device_put(value, sharding)


def constrain_to_mesh(tree: Any, where: str = "") -> Any:
    """Lays out every box with partition names in ``tree`` on the active mesh, if any;
    ``where`` (``'params/layer'``) prefixes the key paths named in errors."""
    mesh = active_mesh()
    if mesh is None:
        return tree

    def place(path: Any, leaf: Any) -> Any:
        if not isinstance(leaf, meta.AxisMetadata) or not hasattr(leaf, "get_partition_spec"):
            return leaf
        inside = path_str(path)
        spec = _mesh_spec(leaf, mesh, "/".join(p for p in (where, inside) if p))
        if spec is None:
            return leaf
        return leaf.replace_boxed(_place(leaf.unbox(), spec, mesh))

    return jax.tree_util.tree_map_with_path(
        place, tree, is_leaf=lambda x: isinstance(x, meta.AxisMetadata)
    )
