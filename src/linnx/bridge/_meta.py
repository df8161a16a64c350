"""``NNXMeta``: an NNX variable as a Linen ``AxisMetadata`` box.

``ToLinen`` boxes every NNX variable it exposes to Linen in an ``NNXMeta`` that remembers the
variable type and its metadata, so the variable comes back unchanged on the way in, and so
Linen's metadata machinery (``nn.unbox``, ``nn.get_partition_spec``, the axis bookkeeping of
``nn.vmap``/``nn.scan``) works on it.

Unlike Flax's own version, :meth:`NNXMeta.add_axis` and :meth:`NNXMeta.remove_axis` update the
partition names when a lifted transform adds or removes an axis (Flax issue #5589), the same
way ``nn.Partitioned`` does, so stacked parameters shard correctly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import jax
from flax import nnx, struct
from flax.core import meta

from .._errors import BridgeTypeError
from .._flax_internals import variable_with_sharding_names

__all__ = ["NNXMeta"]

A = TypeVar("A")

# Keys under which NNX keeps partition names; `out_sharding` is today's, `sharding` the
# guide's. Both are kept in step.
_NAME_KEYS = ("out_sharding", "sharding")


# Variable types already validated (a handful per program).
_CHECKED_TYPES: set[Any] = set()


def _names_of(metadata: dict[str, Any]) -> tuple | None:
    for key in _NAME_KEYS:
        if metadata.get(key) is not None:
            return tuple(metadata[key])
    return None


class NNXMeta(struct.PyTreeNode, meta.AxisMetadata[A], Generic[A]):
    """A Linen metadata box around the value of an NNX variable.

    Attributes:
        var_type: the ``nnx.Variable`` subclass the value came from.
        value: the array (the only pytree leaf of the box).
        metadata: the variable's metadata, e.g. ``{'sharding': ('in', 'out')}``.

    Example:
        >>> import jax.numpy as jnp
        >>> import linnx
        >>> from flax import linen as nn, nnx
        >>> box = linnx.NNXMeta(nnx.Param, jnp.ones((2, 3)), {'sharding': ('in', 'out')})
        >>> box.unbox().shape, box.shape
        ((2, 3), (2, 3))
        >>> box.get_partition_spec()
        P('in', 'out')
        >>> box.add_axis(0, {nn.PARTITION_NAME: 'layers'}).metadata['sharding']
        ('layers', 'in', 'out')
        >>> type(box.to_nnx_variable()).__name__
        'Param'
    """

    var_type: type[nnx.Variable] = struct.field(pytree_node=False)
    value: Any = struct.field(pytree_node=True)
    metadata: dict[str, Any] = struct.field(pytree_node=False)

    def __post_init__(self) -> None:
        # A bad box is refused where it is built, not later deep inside Linen or NNX. Boxes
        # are built on every apply, so the common case costs one set lookup and one type test.
        if not isinstance(self.var_type, type) or self.var_type not in _CHECKED_TYPES:
            if not (isinstance(self.var_type, type) and issubclass(self.var_type, nnx.Variable)):
                raise BridgeTypeError(
                    f"NNXMeta(var_type={self.var_type!r}): expected a subclass of "
                    f"nnx.Variable.\nFix: pass the variable's type, e.g. "
                    f"NNXMeta(nnx.Param, value, {{}})."
                )
            _CHECKED_TYPES.add(self.var_type)
        if type(self.metadata) is not dict and not isinstance(self.metadata, Mapping):
            raise BridgeTypeError(
                f"NNXMeta(metadata={self.metadata!r}): expected a dict of variable metadata.\n"
                f"Fix: pass {{}} for none, e.g. NNXMeta(nnx.Param, value, {{}})."
            )
        # NNX 0.12 keeps partition names under `out_sharding` only (`nnx.with_partitioning`);
        # the guide reads them as `metadata['sharding']`, so both keys are kept in step.
        try:
            names = _names_of(self.metadata)
        except TypeError:
            raise BridgeTypeError(
                f"NNXMeta(metadata={dict(self.metadata)!r}): partition names must be a tuple "
                f"with one mesh axis name (or None) per array axis.\n"
                f"Fix: e.g. metadata={{'sharding': ('embed', None)}}."
            ) from None
        if names is not None and any(self.metadata.get(k) != names for k in _NAME_KEYS):
            metadata = dict(self.metadata)
            metadata["sharding"] = names
            if "out_sharding" in metadata:
                metadata["out_sharding"] = names
            object.__setattr__(self, "metadata", metadata)

    def unbox(self) -> A:
        """Returns the boxed value itself (no recursive unboxing)."""
        return self.value

    def replace_boxed(self, val: Any) -> NNXMeta:
        """Returns a box of the same type and metadata around ``val``."""
        return self.replace(value=val)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the boxed array, so ``variables['params']['kernel'].shape`` works."""
        return jax.numpy.shape(self.value)

    @property
    def dtype(self) -> Any:
        """The dtype of the boxed array."""
        return jax.numpy.result_type(self.value)

    def _with_names(self, names: list) -> NNXMeta:
        metadata = dict(self.metadata)
        for key in _NAME_KEYS:
            if key in metadata or key == "sharding":
                metadata[key] = tuple(names)
        return self.replace(metadata=metadata)

    def add_axis(self, index: int, params: dict[Any, Any]) -> NNXMeta:
        """Inserts the transform's partition name (or None) at ``index`` of the names.

        Args:
            index: where the new axis goes.
            params: the ``metadata_params`` of the transform; ``nn.PARTITION_NAME`` in it
                names the new axis on the mesh (``None`` leaves it replicated).

        Returns:
            The box with updated names; a box without names is returned unchanged.
        """
        names = _names_of(self.metadata)
        if names is None:
            return self
        names = list(names)
        while len(names) < index:
            names.append(None)
        names.insert(index, (params or {}).get(meta.PARTITION_NAME))
        return self._with_names(names)

    def remove_axis(self, index: int, params: dict[Any, Any]) -> NNXMeta:
        """Removes the name at ``index``: the inverse of :meth:`add_axis`."""
        names = _names_of(self.metadata)
        if names is None or index >= len(names):
            return self
        names = list(names)
        names.pop(index)
        return self._with_names(names)

    def get_partition_spec(self) -> jax.sharding.PartitionSpec:
        """The ``PartitionSpec`` of the value: its names, or fully replicated without any."""
        names = _names_of(self.metadata)
        if names is None:
            return jax.sharding.PartitionSpec()
        return jax.sharding.PartitionSpec(*names)

    def get_sharding(self, mesh: jax.sharding.Mesh) -> jax.sharding.Sharding:
        """The ``NamedSharding`` of the value on ``mesh``."""
        return jax.sharding.NamedSharding(mesh, self.get_partition_spec())

    def to_nnx_variable(self) -> nnx.Variable:
        """Rebuilds the NNX variable this box was made from."""
        metadata = dict(self.metadata)
        names = _names_of(metadata)
        for key in _NAME_KEYS:
            metadata.pop(key, None)
        if names is not None:
            return variable_with_sharding_names(self.var_type, self.value, names, **metadata)
        return self.var_type(self.value, **metadata)
