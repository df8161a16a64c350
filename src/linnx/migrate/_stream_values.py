"""The values a streamed migration writes: made from the restored sources, checked, wrapped.

One group at a time: :func:`_transform` turns the restored Linen arrays into the NNX values
(copy, stack, unstack, move an axis, cast; in numpy on one device, under ``jax.jit`` with the
target's sharding on a mesh), :func:`_check_finite_group` refuses NaN/inf as
:func:`linen_to_nnx` does, and :func:`_state` makes the part of ``nnx.state(model)`` that Orbax
writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ._checkpoint_files import checksum
from ._checks import check_finite
from ._plan import Pair
from ._transfer import to_nnx_value


def _check_finite_group(
    group: Sequence[Pair], values: Mapping[str, Any], allow: Any, fn: str
) -> None:
    """Refuses NaN and inf in a group's values: a fast test first, the counts only on failure."""
    if allow is True or all(_all_finite(v) for v in values.values()):
        return
    check_finite(
        ((f"{p.linen[0]} -> {p.nnx}", values[p.nnx]) for p in group),
        allow,
        what="leaf/leaves to migrate",
        fn=fn,
    )


def _source_checksum(out: dict[str, str], leaf: str, value: Any, dtype: Any) -> None:
    if isinstance(value, np.ndarray):  # read to host: no copy unless it is cast
        out[leaf] = checksum(value.astype(dtype, copy=False))
    else:
        out[leaf] = checksum(jnp.asarray(value).astype(dtype))


def _all_finite(value: Any) -> bool:
    """A fast sufficient test: a sum of finite values is finite, and one NaN or inf makes
    the sum NaN or inf. (A sum that overflows is a false alarm, which the exact check that
    follows then clears.) One pass, no temporary the size of the array."""
    if not jnp.issubdtype(value.dtype, jnp.inexact):
        return True
    if isinstance(value, jax.Array) and len(value.sharding.device_set) > 1:
        return bool(jnp.isfinite(jnp.sum(value)))
    host = np.asarray(value)  # a CPU array's own buffer, not a copy
    wide = np.float32 if host.dtype.itemsize < 4 else None
    return bool(np.isfinite(np.sum(host, dtype=wide)))


def _first_pair(group: Sequence[Pair], leaf: str) -> Pair:
    return next(p for p in group if leaf in p.linen)


def _state(items: Sequence[tuple[tuple[Any, ...], nnx.Variable, Any]]) -> nnx.State:
    """An ``nnx.State`` holding ``value`` for each variable: a part of ``nnx.state(model)``.

    Host (numpy) values must be CPU ``jax.Array`` values already (:func:`_wrap`): Orbax's
    numpy writer copies each array before writing it.
    """
    return nnx.from_flat_state([(path, var.replace(value)) for path, var, value in items])


def _once(wrapped: dict[int, Any], value: Any) -> Any:
    """``_wrap(value)``, made once per array (``wrapped`` lives as long as the arrays)."""
    if id(value) not in wrapped:
        wrapped[id(value)] = _wrap(value)
    return wrapped[id(value)]


def _wrap(value: Any) -> Any:
    """A host array as a CPU ``jax.Array`` (no copy when its buffer is aligned as XLA wants)."""
    if isinstance(value, np.ndarray) and jax.dtypes.canonicalize_dtype(value.dtype) == value.dtype:
        return jax.device_put(value)
    return value  # a jax.Array already, or a dtype JAX would narrow (64-bit without x64)


def _transform(pair: Pair, sources: list[Any], var: nnx.Variable, sharding: Any) -> Any:
    """The NNX value of ``pair`` from its restored sources, cast and placed.

    On one device the change runs in numpy on the arrays' own buffers (a CPU array is read
    without a copy, and slicing one layer out of a scanned stack is a view): no dispatch and
    no compilation per shape, and Orbax writes numpy arrays as they are. On a mesh it runs
    under ``jax.jit`` with the target's sharding, so no array is ever whole on one device.
    """
    dtype = jnp.dtype(pair.nnx_dtype)
    if sharding is not None:
        return jax.jit(
            lambda *xs: to_nnx_value(pair, list(xs)).astype(dtype), out_shardings=sharding
        )(*sources)
    if pair.layout.kind == "copy" and sources[0].dtype == dtype:
        return sources[0]  # nothing to do: the restored array is the value
    arrays = [np.asarray(s) for s in sources]
    lay = pair.layout
    if lay.kind == "stack":
        value = np.stack(arrays, axis=lay._given("nnx_axis"))
    elif lay.kind == "unstack":
        value = arrays[0][(slice(None),) * lay._given("linen_axis") + (lay._given("index"),)]
    elif lay.kind == "moveaxis":
        value = np.moveaxis(arrays[0], lay._given("linen_axis"), lay._given("nnx_axis"))
    else:
        value = arrays[0]
    return np.ascontiguousarray(value.astype(dtype, copy=False))
