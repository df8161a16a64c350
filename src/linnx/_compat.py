"""Version-specific workarounds for today's Flax and JAX, kept in one place.

Each function here papers over a difference between the bridge documents (written for older
Flax) and Flax 0.12, and says why.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = [
    "variable_with_sharding_names",
    "sharding_names_of",
    "can_update_in_place",
    "read_value",
]


def variable_with_sharding_names(
    var_type: type[nnx.Variable], value: Any, names: tuple, **metadata: Any
) -> nnx.Variable:
    """Creates ``var_type(value)`` annotated with partition names, without sharding it.

    Flax 0.12 reads partition names from the ``out_sharding`` metadata, and only warns about
    the older ``sharding`` key, which it renames. The bridge guide reads them back as
    ``variable.sharding``, so both keys are kept. ``sharding`` is written directly into the
    metadata dict because every public setter renames it. ``eager_sharding=False``: the
    variable carries the annotation only, whether or not a mesh is active; arrays are laid out
    by ``jax.jit`` with a sharding constraint, as the guide does (and as FLIP 4844 advises).

    Two consequences of today's Flax: NNX code that rebuilds a variable from its metadata
    through the constructor (``nnx.Optimizer`` does, for its state) gets Flax's
    DeprecationWarning about the ``sharding`` key; and NNX's own axis transforms
    (``nnx.vmap``/``nnx.scan`` with ``transform_metadata``) update ``out_sharding`` only, so
    after them ``out_sharding`` (what ``nnx.get_partition_spec`` reads) is authoritative.
    Following them would need metadata hooks, which Flax 0.12 deprecates.
    """
    metadata.setdefault("eager_sharding", False)
    var = var_type(value, out_sharding=tuple(names), **metadata)
    var._var_metadata["sharding"] = tuple(names)
    return var


def sharding_names_of(var: nnx.Variable) -> tuple | None:
    """The partition names of a variable, from either metadata key."""
    metadata = var.get_metadata()
    names = metadata.get("out_sharding")
    if names is None:
        names = metadata.get("sharding")
    return tuple(names) if names is not None else None


def can_update_in_place(obj: nnx.Variable | nnx.Pytree) -> bool:
    """Whether a variable or NNX module may be mutated at the current JAX trace level.

    NNX refuses to mutate state created outside the innermost ``jax`` transform (for example
    an ``nnx.Rngs`` count inside ``jax.jit(lambda x: model(x))``) and raises
    ``TraceContextError``. The bridge checks first, so it can skip work it does not need or
    raise a linnx error that says what to do. Flax 0.12 exposes the check only privately
    (``Variable._can_update``, ``Pytree._pytree__state``); where they are missing, assume yes.
    """
    if isinstance(obj, nnx.Variable):
        return bool(getattr(obj, "_can_update", True))
    state = getattr(obj, "_pytree__state", None)
    trace_state = getattr(state, "trace_state", None)
    return trace_state is None or bool(trace_state.is_valid())


# The stored types `read_value` may return as they are: concrete arrays, immutable in JAX.
# (get_value does not copy a numpy array either: `jax.tree.map(lambda x: x, ...)` keeps leaves.)
_PLAIN_VALUES = (type(jnp.zeros(())), np.ndarray)


def read_value(var: nnx.Variable) -> Any:
    """``var.get_value()`` without its per-read copy of the value.

    Flax 0.12's ``get_value`` copies the value tree with ``jax.tree.map`` on every read
    (about 6 us), which adds up when the bridge reads every variable on every eager call. A
    concrete array without ``on_get_value`` hooks is returned as stored (a JAX array is
    immutable, so the copy protects nothing); anything else (array refs, tracers, hooks) goes
    through ``get_value``.
    """
    value = var.get_raw_value()
    if type(value) in _PLAIN_VALUES and var.get_metadata("on_get_value", None) is None:
        return value
    return var.get_value()
