"""The one switch for the bridge's speed shortcuts, and the shortcuts on NNX variables.

What the bridge *does* is written once, in the general code of each module; where Flax's
general route costs more per call than the bridge can afford, a *shortcut* takes a cheaper
route to the same result. Every shortcut consults :func:`enabled` and, switched off, takes
the general route, so one switch gives a reference run of the whole bridge:

* ``LINNX_FAST=0`` in the environment (read at import) starts with the shortcuts off, which is
  how ``make test`` runs the bridge and spec tests a second time;
* :func:`switched_off` turns them off for a block, for tests that compare both routes.

The shortcuts, by module: here, reads and writes of variable values without Flax's per-call
copy, and variable creation without the constructor; ``_flax_internals``, attribute writes
and re-checks without NNX's walk (the accessors refuse to run while the switch is off, so a
shortcut that forgets to consult it fails the switch-off run); ``_to_nnx``, the in-place
write-back of an eager call and a lone ``lazy_init`` without a rollback snapshot;
``_to_linen``, cached constructor signatures, skipped re-validation of a bound clone, and
reuse of the constructed module's structure between inits (``_layout.KnownStructure``);
``_layout``, rebuilding and re-reading a module as a JAX pytree (``TreeView``) instead of
walking its graph; ``_rngs``, a compiled key draw; ``_root_scope``, a top-level
``ToLinen.init``/``apply`` without Linen's scope machinery.
"""

from __future__ import annotations

import collections
import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import _flax_internals

__all__ = [
    "enabled",
    "set_enabled",
    "switched_off",
    "taken",
    "took",
    "PLAIN_VALUES",
    "read_value",
    "write_value",
    "make_variable",
    "variable_maker",
    "set_attribute",
]

_enabled = os.environ.get("LINNX_FAST", "1").strip().lower() not in ("0", "false", "off", "no")
_flax_internals.allow_shortcuts(_enabled)


def enabled() -> bool:
    """Whether the speed shortcuts are on (the default)."""
    return _enabled


def set_enabled(on: bool) -> None:
    """Turns every speed shortcut on or off."""
    global _enabled
    _enabled = bool(on)
    _flax_internals.allow_shortcuts(_enabled)
    _plain_metadata.clear()


@contextlib.contextmanager
def switched_off() -> Iterator[None]:
    """Runs a block with every speed shortcut off: the general route, for reference."""
    before = _enabled
    set_enabled(False)
    try:
        yield
    finally:
        set_enabled(before)


#: How often each coarse-grained shortcut was taken, by name; tests read it to check that a
#: comparison of the two routes is not vacuous.
taken: collections.Counter[str] = collections.Counter()


def took(name: str) -> None:
    """Records that the shortcut ``name`` was taken; refuses while the switch is off."""
    if not _enabled:
        raise _flax_internals.ShortcutWhileSwitchedOff(
            f"the shortcut {name!r} ran while linnx.bridge._fast is switched off"
        )
    taken[name] += 1


# -- variable values -------------------------------------------------------------------------

# The stored types `read_value` may return as they are: concrete arrays (typed rng keys
# included), immutable in JAX. (get_value does not copy a numpy array either:
# `jax.tree.map(lambda x: x, ...)` keeps leaves.)
PLAIN_VALUES = (type(jnp.zeros(())), type(jax.random.key(0)), np.ndarray)
_BASE_GET_VALUE = nnx.Variable.get_value
_BASE_SET_VALUE = nnx.Variable.set_value


def read_value(var: nnx.Variable) -> Any:
    """``var.get_value()``, without its per-read copy of the value where that is safe.

    Flax 0.12's ``get_value`` copies the value tree with ``jax.tree.map`` on every read
    (about 6 us), which adds up when the bridge reads every variable on every eager call. A
    concrete array without ``on_get_value`` hooks is returned as stored (a JAX array is
    immutable, so the copy protects nothing); anything else (array refs, tracers, hooks, a
    Variable type that overrides ``get_value``, as Flax advises instead of hooks) goes through
    ``get_value``.
    """
    if _enabled:
        value = var.get_raw_value()
        if (
            type(value) in PLAIN_VALUES
            and type(var).get_value is _BASE_GET_VALUE
            and var.get_metadata("on_get_value", None) is None
        ):
            return value
    return var.get_value()


def write_value(var: nnx.Variable, value: Any) -> None:
    """``var.set_value(value)``, without its per-write copy of the value where that is safe.

    The counterpart of :func:`read_value`, for the writes of every eager call (rng counts,
    mutable collections): when both the stored and the new value are concrete arrays and
    neither a hook nor an overridden ``set_value`` could change what is stored, ``set_value``
    would store ``value`` as it is, so ``set_raw_value`` (which keeps the trace-level check)
    does the same for a fraction of the cost.
    """
    if (
        _enabled
        and type(value) in PLAIN_VALUES
        and type(var.get_raw_value()) in PLAIN_VALUES
        and type(var).set_value is _BASE_SET_VALUE
        and var.get_metadata("on_set_value", None) is None
    ):
        var.set_raw_value(value)
    else:
        var.set_value(value)


# -- variable creation -----------------------------------------------------------------------


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
    if not _enabled:
        return var_type
    defaults = nnx.var_defaults()
    key = (var_type, defaults.hijax, defaults.ref, nnx.using_eager_sharding())
    metadata = _plain_metadata.get(key, _UNKNOWN)
    if metadata is _UNKNOWN:
        metadata = _plain_metadata[key] = _learn_plain_metadata(var_type)
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
_plain_metadata: dict[tuple, dict[str, Any] | None] = {}
_PLAIN_KEYS = frozenset({"hijax", "ref", "eager_sharding"})


def _learn_plain_metadata(var_type: type[nnx.Variable]) -> dict[str, Any] | None:
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


# -- attributes of NNX modules -----------------------------------------------------------------


def set_attribute(
    node: nnx.Pytree, name: str, value: Any, *, data: bool, explicit: bool = False
) -> None:
    """``setattr(node, name, value)`` of an attribute the caller has validated: with the
    shortcuts on, without NNX's walk of the value (``_flax_internals.set_checked_attribute``).

    ``data`` is the attribute's status; ``explicit`` marks a value NNX must hold as data
    (``nnx.data``) or static (``nnx.static``) whatever it contains.
    """
    if _enabled:
        _flax_internals.set_checked_attribute(node, name, value, data=data, explicit=explicit)
        return
    if explicit:
        value = nnx.data(value) if data else nnx.static(value)
    setattr(node, name, value)


def recheck_can_be_skipped(node: nnx.Pytree, key: str, value: Any) -> bool:
    """Whether NNX's re-check of an attribute after ``__init__`` may be skipped: the shortcuts
    are on and it cannot fail (``_flax_internals.recheck_cannot_fail``)."""
    return _enabled and _flax_internals.recheck_cannot_fail(node, key, value)
