"""How NNX rng state feeds Linen rng streams, in both directions.

Linen takes a dict of keys per call; NNX keeps ``nnx.Rngs`` streams that count their draws.

* **Initialization** uses each stream's key as it stands, without folding in the count and
  without advancing it. A fresh ``ToNNX(m, rngs=nnx.Rngs(k))`` therefore creates exactly the
  variables of ``m.init(jax.random.key(k), x)``, and initialization does not consume
  randomness that later calls would see. A stream that has been drawn from before uses the
  key folded with its count, so a wrapper that shares ``rngs`` with NNX layers built before it
  still gets fresh keys. Wrappers initialized in the same ``lazy_init`` pass from one stream
  get distinct keys (see :class:`InitKeys`).
* **Calls** draw one fresh key per stream (``stream()``), so two dropout calls differ and
  ``nnx.reseed`` reproduces a call. Linen falls back to the ``'params'`` stream for a name it
  was not given, so the NNX ``default`` stream serves as ``'params'`` and thereby as every
  stream the user did not name.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from .._flax_internals import can_update_in_place
from . import _fast
from ._fast import read_value, write_value

__all__ = [
    "CallKeys",
    "InitKeys",
    "init_keys",
    "call_keys",
    "restore_counts",
    "per_call_keys",
]

# An arbitrary constant folded into keys that a stream hands to a second wrapper during the
# same initialization pass; it only needs to differ from the small counts NNX uses.
_SIBLING_SALT = 0x6C696E6E


def _linen_streams(rngs: nnx.Rngs) -> Iterator[tuple[str, nnx.RngStream]]:
    """The streams Linen should see, by Linen name: ``default`` serves as ``params``."""
    for name, stream in rngs.items():
        if name == "default":
            if "params" in rngs:
                continue
            name = "params"
        yield name, stream


class InitKeys:
    """Per-initialization-pass bookkeeping of which streams already handed out an init key."""

    def __init__(self) -> None:
        self._uses: dict[int, int] = {}

    def take(self, stream: nnx.RngStream) -> jax.Array:
        key, count = read_value(stream.key), read_value(stream.count)
        uses = self._uses.get(id(stream), 0)
        self._uses[id(stream)] = uses + 1
        key = _unconsumed_or_folded(key, count)
        if uses:
            key = jax.random.fold_in(key, _SIBLING_SALT + uses)
        return key


def _unconsumed_or_folded(key: jax.Array, count: jax.Array) -> jax.Array:
    """The raw key while the stream has never been drawn from, else ``fold_in(key, count)``."""
    if isinstance(count, jax.core.Tracer):
        # Under nnx.vmap/scan the count is traced: select without Python control flow.
        folded = jax.random.fold_in(key, count)
        data = jnp.where(
            (count == 0)[..., None], jax.random.key_data(key), jax.random.key_data(folded)
        )
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(key))
    return key if int(count) == 0 else jax.random.fold_in(key, count)


_init_pass: contextvars.ContextVar[InitKeys | None] = contextvars.ContextVar(
    "linnx_init_pass", default=None
)


@contextlib.contextmanager
def initialization_pass() -> Iterator[InitKeys]:
    """Marks a ``lazy_init`` pass; nested passes share the outer one's bookkeeping."""
    current = _init_pass.get()
    if current is not None:
        yield current
        return
    keys = InitKeys()
    token = _init_pass.set(keys)
    try:
        yield keys
    finally:
        _init_pass.reset(token)


def in_initialization_pass() -> bool:
    return _init_pass.get() is not None


def init_keys(rngs: nnx.Rngs | None) -> dict[str, jax.Array]:
    """Linen init rngs from NNX streams: ``params`` (or ``default``) plus every named stream."""
    if rngs is None:
        return {}
    with initialization_pass() as bookkeeping:
        return {linen_name: bookkeeping.take(stream) for linen_name, stream in _linen_streams(rngs)}


class CallKeys(NamedTuple):
    """The Linen keys of one call, and what is needed to undo or explain them."""

    keys: dict[str, jax.Array]
    #: ``(count variable, count before)`` pairs, for :func:`restore_counts`.
    drawn: list[tuple[nnx.Variable, jax.Array]]
    #: Linen names of streams that could not advance at this trace level (see call_keys).
    frozen: list[str]


def call_keys(rngs: nnx.Rngs | None) -> CallKeys:
    """Draws one key per stream for a Linen call.

    A stream whose count cannot change at the current trace level (the module is used inside
    ``jax.jit``/``jax.eval_shape``... of a function that closes over it, instead of an NNX
    transform it is passed to) is left out instead of failing: most modules need no keys
    at all, and a module that does gets a :class:`RngStreamError` that says so, rather than
    a key that silently repeats on every call (pitfalls #5 and #11).
    """
    keys: dict[str, jax.Array] = {}
    drawn: list[tuple[nnx.Variable, jax.Array]] = []
    frozen: list[str] = []
    if rngs is None:
        return CallKeys(keys, drawn, frozen)
    streams = []
    for linen_name, stream in _linen_streams(rngs):
        if not can_update_in_place(stream.count):
            frozen.append(linen_name)
            continue
        streams.append((linen_name, stream))
    if not streams:
        return CallKeys(keys, drawn, frozen)
    counts = [read_value(stream.count) for _, stream in streams]
    keys_now = [read_value(stream.key) for _, stream in streams]
    # Eagerly, one compiled dispatch; under a trace, plain ops (a nested jit would add a
    # function to trace and lower for every program that calls the module).
    concrete = not any(isinstance(x, jax.core.Tracer) for x in (*counts, *keys_now))
    draw = _draw_jit if concrete and _fast.enabled() else _draw
    new_keys, new_counts = draw(keys_now, counts)
    for (linen_name, stream), count, key, new_count in zip(
        streams, counts, new_keys, new_counts, strict=True
    ):
        drawn.append((stream.count, count))
        write_value(stream.count, new_count)
        keys[linen_name] = key
    return CallKeys(keys, drawn, frozen)


def _draw(
    keys: list[jax.Array], counts: list[jax.Array]
) -> tuple[list[jax.Array], list[jax.Array]]:
    """``stream()`` for several streams: the same keys and counts as NNX's
    ``RngStream.__call__`` (``fold_in(key, count)``, then ``count + 1``)."""
    return (
        [jax.random.fold_in(key, count) for key, count in zip(keys, counts, strict=True)],
        [count + 1 for count in counts],
    )


# NNX's own draw costs two eager dispatches per stream, most of an eager call of a small
# module; compiled, all streams take one.
_draw_jit = jax.jit(_draw)


def restore_counts(drawn: list) -> None:
    """Puts the counts drawn by :func:`call_keys` back as they were."""
    for count_var, value in drawn:
        count_var[...] = value


def per_call_keys(rngs: object, *, init: bool, argname: str = "rngs") -> CallKeys:
    """Normalizes a per-call ``rngs=`` argument: ``nnx.Rngs``, a key, an int seed, or a dict.

    An ``nnx.Rngs`` is read like the module's own (raw keys for initialization, fresh draws
    for a call); a dict's ``'default'`` entry serves as ``'params'`` as for ``nnx.Rngs``.
    """
    from .._errors import BridgeTypeError

    if isinstance(rngs, nnx.Rngs):
        return CallKeys(init_keys(rngs), [], []) if init else call_keys(rngs)
    if isinstance(rngs, Mapping):
        keys = {name: jax.random.key(v) if isinstance(v, int) else v for name, v in rngs.items()}
        if "default" in keys and "params" not in keys:
            keys["params"] = keys.pop("default")
        return CallKeys(keys, [], [])
    if isinstance(rngs, int) and not isinstance(rngs, bool):
        return CallKeys({"params": jax.random.key(rngs)}, [], [])
    if isinstance(rngs, jax.Array):
        return CallKeys({"params": rngs}, [], [])
    raise BridgeTypeError(
        f"{argname}={rngs!r}: expected an nnx.Rngs, a jax.random.key, an int seed, or a dict "
        f"of stream name -> key, e.g. {argname}={{'dropout': jax.random.key(1)}}."
    )
