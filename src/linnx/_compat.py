"""Version-specific workarounds for today's Flax and JAX, kept in one place.

Each function here either papers over a difference between the bridge documents (written for
older Flax) and Flax 0.12, or takes a cheaper route around a per-call cost of Flax 0.12 that
the bridge would otherwise pay on every variable (reads, writes, construction, attribute
checks), and says why. The cheap routes lean on Flax 0.12 internals where they must, check
that those look as expected, and fall back to the public API when they do not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import nnx

__all__ = [
    "variable_with_sharding_names",
    "sharding_names_of",
    "can_update_in_place",
    "read_value",
    "write_value",
    "make_variable",
    "variable_maker",
    "PLAIN_VALUES",
    "set_checked_attribute",
    "recheck_cannot_fail",
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
    # Modules first: `isinstance(module, nnx.Variable)` takes Flax's slow path for non-variables.
    if not isinstance(obj, nnx.Pytree) and isinstance(obj, nnx.Variable):
        return bool(getattr(obj, "_can_update", True))
    state = getattr(obj, "_pytree__state", None)
    trace_state = getattr(state, "trace_state", None)
    return trace_state is None or bool(trace_state.is_valid())


# The stored types `read_value` may return as they are: concrete arrays (typed rng keys
# included), immutable in JAX. (get_value does not copy a numpy array either:
# `jax.tree.map(lambda x: x, ...)` keeps leaves.)
PLAIN_VALUES = (type(jnp.zeros(())), type(jax.random.key(0)), np.ndarray)
_BASE_GET_VALUE = nnx.Variable.get_value
_BASE_SET_VALUE = nnx.Variable.set_value


def read_value(var: nnx.Variable) -> Any:
    """``var.get_value()`` without its per-read copy of the value.

    Flax 0.12's ``get_value`` copies the value tree with ``jax.tree.map`` on every read
    (about 6 us), which adds up when the bridge reads every variable on every eager call. A
    concrete array without ``on_get_value`` hooks is returned as stored (a JAX array is
    immutable, so the copy protects nothing); anything else (array refs, tracers, hooks, a
    Variable type that overrides ``get_value``, as Flax advises instead of hooks) goes through
    ``get_value``.
    """
    value = var.get_raw_value()
    if (
        type(value) in PLAIN_VALUES
        and type(var).get_value is _BASE_GET_VALUE
        and var.get_metadata("on_get_value", None) is None
    ):
        return value
    return var.get_value()


def write_value(var: nnx.Variable, value: Any) -> None:
    """``var.set_value(value)`` without its per-write copy of the value.

    The counterpart of :func:`read_value`, for the writes of every eager call (rng counts,
    mutable collections): when both the stored and the new value are concrete arrays and
    neither a hook nor an overridden ``set_value`` could change what is stored, ``set_value``
    would store ``value`` as it is, so ``set_raw_value`` (which keeps the trace-level check)
    does the same for a fraction of the cost.
    """
    if (
        type(value) in PLAIN_VALUES
        and type(var.get_raw_value()) in PLAIN_VALUES
        and type(var).set_value is _BASE_SET_VALUE
        and var.get_metadata("on_set_value", None) is None
    ):
        var.set_raw_value(value)
    else:
        var.set_value(value)


def make_variable(var_type: type[nnx.Variable], value: Any) -> nnx.Variable:
    """``var_type(value)``, for the many variables that Linen's ``init`` hands the bridge."""
    return variable_maker(var_type)(value)


def variable_maker(var_type: type[nnx.Variable]) -> Callable[[Any], nnx.Variable]:
    """A function that does what ``var_type(value)`` does, for many values of one type.

    The constructor costs about 8 us in Flax 0.12 (metadata defaults, hook lookups, a scan for
    array refs, sharding checks), most of ``lazy_init``'s own cost on a small model. For a
    concrete array, and a type whose constructor would only record the current defaults, the
    result is the same as the public ``from_metadata`` with those defaults, which this
    function learns once per type and defaults by running the constructor itself. Anything
    else (tracers, hooks, a type that customizes construction, hijax or ref variables) is
    built by the constructor.
    """
    defaults = nnx.var_defaults()
    key = (var_type, defaults.hijax, defaults.ref, nnx.using_eager_sharding())
    metadata = _PLAIN_METADATA.get(key, _UNKNOWN)
    if metadata is _UNKNOWN:
        metadata = _PLAIN_METADATA[key] = _plain_metadata(var_type)
    if metadata is None:
        return var_type
    from_metadata = var_type.from_metadata

    def make(value: Any) -> nnx.Variable:
        if type(value) in PLAIN_VALUES:
            return from_metadata(value, metadata)
        return var_type(value)

    return make


_UNKNOWN = object()
# (type, hijax default, ref default, eager sharding) -> the constructor's metadata for a plain
# array, or None where the constructor must run.
_PLAIN_METADATA: dict[tuple, dict[str, Any] | None] = {}
_PLAIN_KEYS = frozenset({"hijax", "ref", "eager_sharding"})


def _plain_metadata(var_type: type[nnx.Variable]) -> dict[str, Any] | None:
    base = nnx.Variable
    if (
        type(var_type) is not type(base)
        or var_type.__init__ is not base.__init__
        or var_type.create_value is not base.create_value
        or var_type.from_metadata.__func__ is not base.from_metadata.__func__
    ):
        return None
    probe = var_type(np.zeros((), np.float32))
    if type(probe) is not var_type:  # a hijax variable
        return None
    metadata = probe.get_metadata()
    if set(metadata) != _PLAIN_KEYS or metadata["hijax"] or metadata["ref"]:
        return None
    return metadata


def set_checked_attribute(
    node: nnx.Pytree, name: str, value: Any, *, data: bool, explicit: bool = False
) -> None:
    """``setattr(node, name, value)`` for a value the caller has already validated.

    Flax 0.12's ``Pytree.__setattr__`` walks every assigned value to check its data/static
    status (about 20 us per attribute), and ``ToNNX`` assigns a handful per ``lazy_init``
    (a quarter of its own cost on a small model). The bridge's own attributes cannot fail that
    check: the Linen module and the collection names are static, ``rngs`` and the collections
    (``nnx.data`` trees of variables) are data. So this records the status exactly as
    ``__setattr__`` would (``data``; ``explicit`` for a value wrapped in ``nnx.data``) and
    stores the value. Where the bookkeeping is not what this expects (another Flax version)
    or the node may not change at this trace level, it falls back to ``setattr``.
    """
    nodes = vars(node).get("_pytree__nodes")
    if (
        type(nodes) is not _NODES_TYPE
        or type(node).__setattr__ is not _PYTREE_SETATTR  # a subclass that intercepts writes
        or not getattr(type(node), "_pytree__is_pytree", False)
        or not can_update_in_place(node)
    ):
        if explicit:
            value = nnx.data(value) if data else nnx.static(value)
        setattr(node, name, value)
        return
    if name not in nodes or (explicit and nodes[name] != data):
        object.__setattr__(node, "_pytree__nodes", nodes.update({name: data}))
    object.__setattr__(node, name, value)


_NODES_TYPE = type(getattr(nnx.Module, "_pytree__nodes", None))
_PYTREE_SETATTR = nnx.Module.__setattr__


def recheck_cannot_fail(node: nnx.Pytree, key: str, value: Any) -> bool:
    """Whether NNX's re-check of an attribute after ``__init__`` cannot raise.

    After every ``__init__`` NNX re-checks each attribute (``Pytree._check_value`` with no new
    status), which walks the value looking for arrays; that is most of the cost of building a
    ``ToNNX``. The re-check raises only for data found in an attribute registered as static.
    So it cannot fail for an attribute registered as data, nor for a value that holds no data:
    ``None``, a tuple of strings, a Linen module (neither a JAX pytree nor an NNX data type),
    or NNX's own status mapping.
    """
    nodes = vars(node).get("_pytree__nodes")
    if type(nodes) is not _NODES_TYPE:
        return False
    if nodes.get(key) is True:
        return True
    return (
        value is None
        or type(value) is _NODES_TYPE
        or (type(value) is tuple and all(type(v) is str for v in value))
        or isinstance(value, nn.Module)
    )
