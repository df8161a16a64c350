"""Laying bridged variables out on the active device mesh.

NNX variables made by the bridge carry partition names as metadata only (see
``linnx._compat.variable_with_sharding_names``); this module turns names into layouts when a
mesh is active, given either as ``with mesh:`` or as ``jax.set_mesh(mesh)``. With no mesh,
arrays stay where they are and the names stay as metadata.

Names may be logical (``nn.with_logical_partitioning``, or NNX ``sharding_rules``): they are
mapped to mesh axes with the rules of ``nn.logical_axis_rules`` and the variable's own
``sharding_rules``, as ``nnx.get_partition_spec`` does. A box whose names still are not axes
of the mesh is left where it is (its names stay as metadata), rather than failing the init.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import linen as nn
from flax.core import meta
from flax.core import spmd as core_spmd

__all__ = ["active_mesh", "constrain_to_mesh", "logical_to_mesh_names"]


def active_mesh() -> jax.sharding.Mesh | jax.sharding.AbstractMesh | None:
    """The mesh of ``jax.set_mesh`` or, failing that, of a ``with mesh:`` block."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is not None and not mesh.empty:
        return mesh
    from jax._src import mesh as mesh_lib  # the only accessor of `with mesh:` contexts

    physical = mesh_lib.thread_resources.env.physical_mesh
    return None if physical.empty else physical


def logical_to_mesh_names(names: tuple, rules: Any = None) -> tuple:
    """Maps logical partition names to mesh axes, as Linen does for ``LogicallyPartitioned``.

    ``rules`` are the box's own rules, else those of the ``nn.logical_axis_rules`` context.
    Without any rules the names are returned unchanged (they may already be mesh axes).
    Logical names that no rule assigns become ``None`` (replicated), as in Linen.
    """
    rules = tuple(rules) if rules else tuple(core_spmd.get_logical_axis_rules() or ())
    if not rules:
        return tuple(names)
    return tuple(nn.logical_to_mesh_axes(tuple(names), rules))


def _axes_of(spec: jax.sharding.PartitionSpec) -> set[str]:
    axes: set[str] = set()
    for entry in spec:
        if isinstance(entry, str):
            axes.add(entry)
        elif isinstance(entry, tuple):
            axes.update(a for a in entry if isinstance(a, str))
    return axes


def _mesh_spec(leaf: meta.AxisMetadata, mesh: Any) -> jax.sharding.PartitionSpec | None:
    """The spec ``leaf`` takes on ``mesh``, or None where it cannot or need not be placed."""
    spec = leaf.get_partition_spec()
    metadata = getattr(leaf, "metadata", None)
    context_rules = core_spmd.get_logical_axis_rules()
    local_rules = metadata.get("sharding_rules") if isinstance(metadata, dict) else None
    local_rules = local_rules or getattr(leaf, "rules", None)
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
        target = spec if isinstance(mesh, jax.sharding.AbstractMesh) else (
            jax.sharding.NamedSharding(mesh, spec)
        )
        return jax.sharding.reshard(value, target)
    if isinstance(mesh, jax.sharding.AbstractMesh):
        return jax.lax.with_sharding_constraint(value, spec)
    sharding = jax.sharding.NamedSharding(mesh, spec)
    if isinstance(value, jax.core.Tracer):
        return jax.lax.with_sharding_constraint(value, sharding)
    return jax.device_put(value, sharding)


def constrain_to_mesh(tree: Any) -> Any:
    """Lays out every box with partition names in ``tree`` on the active mesh, if any."""
    mesh = active_mesh()
    if mesh is None:
        return tree

    def place(leaf: Any) -> Any:
        if not isinstance(leaf, meta.AxisMetadata) or not hasattr(leaf, "get_partition_spec"):
            return leaf
        spec = _mesh_spec(leaf, mesh)
        if spec is None:
            return leaf
        return leaf.replace_boxed(_place(leaf.unbox(), spec, mesh))

    return jax.tree_util.tree_map(
        place, tree, is_leaf=lambda x: isinstance(x, meta.AxisMetadata)
    )
