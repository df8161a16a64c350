"""Laying bridged variables out on the active device mesh.

NNX variables made by the bridge carry partition names as metadata only (see
``linnx._compat.variable_with_sharding_names``); this module turns names into layouts when a
mesh is active, given either as ``with mesh:`` or as ``jax.set_mesh(mesh)``. With no mesh,
arrays stay where they are and the names stay as metadata.
"""

from __future__ import annotations

from typing import Any

import jax
from flax.core import meta

__all__ = ["active_mesh", "constrain_to_mesh"]


def active_mesh() -> jax.sharding.Mesh | jax.sharding.AbstractMesh | None:
    """The mesh of ``jax.set_mesh`` or, failing that, of a ``with mesh:`` block."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is not None and not mesh.empty:
        return mesh
    from jax._src import mesh as mesh_lib  # the only accessor of `with mesh:` contexts

    physical = mesh_lib.thread_resources.env.physical_mesh
    return None if physical.empty else physical


def _place(value: Any, spec: jax.sharding.PartitionSpec, mesh: Any) -> Any:
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
        spec = leaf.get_partition_spec()
        if all(name is None for name in spec):
            return leaf
        return leaf.replace_boxed(_place(leaf.unbox(), spec, mesh))

    return jax.tree_util.tree_map(
        place, tree, is_leaf=lambda x: isinstance(x, meta.AxisMetadata)
    )
