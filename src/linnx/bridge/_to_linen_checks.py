"""What ``ToLinen`` checks before it runs, and the errors it raises, with their messages.

Arguments are checked where the user writes them (the NNX class, its constructor arguments,
the Linen rngs), so a mistake is reported in those terms rather than deep inside Linen's init;
the errors of a call (missing graphdef, lost updates, missing rng streams) are built here so
that :mod:`._to_linen` reads as what the bridge does.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import flax.errors
import jax
import numpy as np
from flax import linen as nn
from flax import nnx

from .._errors import (
    BridgeTypeError,
    LinnxError,
    MutableCollectionError,
    RngStreamError,
    StructureMismatchError,
    standing_in_for,
)
from .._flax_internals import nnx_rng_failure
from . import _fast, _layout, _root_scope

__all__ = [
    "check_nnx_class",
    "check_arguments",
    "check_constructor_call",
    "check_linen_rngs",
    "signature",
    "missing_graphdef",
    "structure_changed",
    "lost_changes",
    "immutable_write",
    "rng_errors",
    "class_name",
]

GRAPHDEF = "graphdef"


def check_nnx_class(nnx_class: Any, skip_rng: bool, where: str) -> None:
    if isinstance(nnx_class, nnx.Module):
        name = type(nnx_class).__name__
        raise BridgeTypeError(
            f"{where} expects an NNX module class, got an instance of {name}.\n"
            f"An NNX module creates its variables eagerly, so the bridge must construct it "
            f"itself, once, at Linen init.\n"
            f"Fix: pass the class and its arguments instead of the instance:\n"
            f"  linnx.to_linen({name}, *args, **kwargs)   # not to_linen({name}(..., rngs=...))"
        )
    if isinstance(nnx_class, nn.Module) or (
        isinstance(nnx_class, type) and issubclass(nnx_class, nn.Module)
    ):
        raise BridgeTypeError(
            f"{where} expects an NNX module class, got the Linen module "
            f"{getattr(nnx_class, '__name__', type(nnx_class).__name__)}.\n"
            f"Fix: use the Linen module directly inside Linen, or linnx.ToNNX to use it in NNX."
        )
    if not callable(nnx_class):
        raise BridgeTypeError(
            f"{where} expects an NNX module class (or a function returning an NNX module), "
            f"got {type(nnx_class).__name__}.\nFix: e.g. linnx.ToLinen(nnx.Linear, args=(3, 4))."
        )
    if skip_rng:
        return
    # For a class, read `__init__`: `inspect.signature(cls)` reports the `(*args, **kwargs)`
    # of NNX's metaclass `__call__`, which would hide a missing `rngs`.
    found = signature(nnx_class.__init__ if isinstance(nnx_class, type) else nnx_class)  # type: ignore[misc]
    if found is None:
        return
    params = found.parameters
    takes_rngs = "rngs" in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
    )
    if not takes_rngs:
        name = getattr(nnx_class, "__name__", repr(nnx_class))
        raise BridgeTypeError(
            f"{where}: {name}.__init__ takes no `rngs` argument, but the bridge passes "
            f"rngs=nnx.Rngs(...) to it.\n"
            f"Fix: pass skip_rng=True, e.g. linnx.ToLinen({name}, skip_rng=True), or add "
            f"an `rngs: nnx.Rngs` parameter to {name}.__init__."
        )


def signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    """``inspect.signature(fn)``, None where Python cannot tell; with the shortcuts on, cached
    for hashable ``fn`` (reading a signature costs about as much as a small module's init)."""
    if not _fast.enabled():
        return read_signature(fn)
    try:
        return cached_signature(fn)
    except TypeError:  # an unhashable callable object
        return read_signature(fn)


def read_signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


cached_signature = functools.lru_cache(maxsize=256)(read_signature)


def check_arguments(args: Any, kwargs: Any, where: str) -> None:
    if not isinstance(args, Sequence) or isinstance(args, str):
        raise BridgeTypeError(
            f"{where}(args={args!r}): expected a tuple of positional constructor arguments.\n"
            f"Fix: e.g. args=(32, 64), or args=({args!r},) for a single argument."
        )
    if not isinstance(kwargs, Mapping):
        raise BridgeTypeError(
            f"{where}(kwargs={kwargs!r}): expected a dict of keyword constructor arguments.\n"
            f"Fix: e.g. kwargs={{'use_bias': False}}."
        )


def check_constructor_call(nnx_class: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
    """Refuses arguments that do not fit the constructor, before it runs deep inside init."""
    is_class = isinstance(nnx_class, type)
    found = signature(nnx_class.__init__ if is_class else nnx_class)
    if found is None:
        return
    # A linnx.Module's metaclass takes `rngs`/`name`/`parent` itself (`_linnx_pops`).
    popped = getattr(nnx_class, "_linnx_pops", ())
    bound_kwargs = {k: v for k, v in kwargs.items() if k not in popped}
    try:
        found.bind(*((None,) if is_class else ()), *args, **bound_kwargs)
    except TypeError as e:
        name = getattr(nnx_class, "__name__", repr(nnx_class))
        given = {k: v for k, v in kwargs.items() if k != "rngs"}
        raise BridgeTypeError(
            f"ToLinen(nnx_class={name}, args={tuple(args)!r}, kwargs={given!r}): these "
            f"arguments do not fit {name}.__init__: {e}.\n"
            f"Fix: pass {name}'s constructor arguments, e.g. linnx.to_linen({name}, *args, "
            f"**kwargs) or ToLinen({name}, args=(...), kwargs={{...}}); `rngs` is passed by the "
            f"bridge."
        ) from None


def is_linen_key(x: Any) -> bool:
    """A key Linen accepts: a typed PRNG key, or a raw uint32 key of shape (..., 2)."""
    if not isinstance(x, (jax.Array, np.ndarray)):
        return False
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return True
    return x.dtype == np.uint32 and x.shape[-1:] == (2,)


def check_linen_rngs(rngs: Any, where: str) -> None:
    if isinstance(rngs, Mapping):
        bad = [name for name, key in rngs.items() if not is_linen_key(key)]
        if not bad:
            return
        what = f"the stream {bad[0]!r} is {rngs[bad[0]]!r}"
    elif is_linen_key(rngs):
        return
    else:
        what = f"got {rngs!r}"
    # Linen itself refuses such rngs with an InvalidRngError.
    raise standing_in_for(BridgeTypeError, flax.errors.InvalidRngError)(
        f"{where}: expected a jax.random.key or a dict of stream name -> key; {what}.\n"
        f"Fix: e.g. model.init(jax.random.key(0), x), or model.init({{'params': "
        f"jax.random.key(0), 'dropout': jax.random.key(1)}}, x); for apply, "
        f"rngs={{'dropout': jax.random.key(2)}}."
    )


def missing_graphdef(wrapper: Any, got: Any = None) -> LinnxError:
    return StructureMismatchError.from_paths(
        f"The variables of {type(wrapper).__name__}({class_name(wrapper)})",
        missing=[f"nnx/{GRAPHDEF}"] if got is None else [],
        mismatched=[]
        if got is None
        else [(f"nnx/{GRAPHDEF}", "an nnx.GraphDef", type(got).__name__)],
        fix="pass the whole variables dict that `init` returned (including its 'nnx' "
        "collection), e.g. model.apply(variables, x) rather than "
        "model.apply({'params': variables['params']}, x).",
    )


def structure_changed(wrapper: Any) -> LinnxError:
    return StructureMismatchError(
        f"{class_name(wrapper)} changed its structure (added or removed variables or "
        f"submodules) during apply, and the 'nnx' collection is not mutable, so the change "
        f"would be lost.\nFix: pass mutable=['nnx', ...] (or mutable=True) to apply and keep "
        f"the returned 'nnx' collection. If the module creates variables on its first call, "
        f"create them with init_with_output(...) instead of init(...), which runs no forward "
        f"pass for a top-level ToLinen."
    )


def lost_changes(
    layout: Sequence[_layout.Slot],
    values: Sequence[Any],
    before: list[Any] | dict[tuple, Any],
    mutable: set[str],
    keep_rng_state: bool,
) -> list[_layout.Slot]:
    """The slots of immutable collections whose value the call changed (or created)."""
    lost = []
    for i, (slot, value) in enumerate(zip(layout, values, strict=True)):
        if slot.collection in mutable or (slot.stream is not None and not keep_rng_state):
            continue
        if isinstance(before, list):
            old = before[i]
        else:
            old = before.get((slot.collection, slot.path), _layout.MISSING)
        if value is not old:
            lost.append(slot)
    return lost


def immutable_write(
    wrapper: Any,
    lost: list[_layout.Slot],
    layout: Sequence[_layout.Slot],
    requested: list[str] | None,
) -> MutableCollectionError:
    """The error for updates to collections that are not mutable; ``requested`` are the names
    the call's ``mutable`` gave, to point out one the module does not have (a typo)."""
    collections = list(dict.fromkeys(s.collection for s in lost))
    unknown = [c for c in requested or () if c not in _layout.collections_of(layout)]
    typo = (
        f" (mutable={requested!r} names {unknown[0]!r}, which is not a collection of "
        f"{class_name(wrapper)}: its collections are {_layout.collections_of(layout)})"
        if unknown
        else ""
    )
    paths = ["/".join((s.collection, *s.path)) for s in lost]
    shown = ", ".join(paths[:4]) + (f", ... ({len(paths)} in all)" if len(paths) > 4 else "")
    streams = sorted({s.stream for s in lost if s.stream is not None})
    rng_hint = (
        f"\nFor rng state, or: give this call fresh keys, the Linen style, e.g. "
        f"rngs={{{streams[0]!r}: jax.random.key(1)}}; such a call does not keep rng state."
        if streams
        else ""
    )
    return MutableCollectionError(
        f"{class_name(wrapper)} updated {shown} during apply, but the "
        f"collection{'s' if len(collections) > 1 else ''} {collections} "
        f"{'are' if len(collections) > 1 else 'is'} not mutable in this call{typo}, so the "
        f"update would be lost.\nFix: pass mutable={collections!r} (or mutable=True) to apply and "
        f"keep what it returns: y, updates = model.apply(variables, x, "
        f"mutable={collections!r}); variables = {{**variables, **updates}}." + rng_hint
    )


@contextlib.contextmanager
def rng_errors(wrapper: Any, host: _root_scope.Host, *, at_apply: bool) -> Iterator[None]:
    """NNX's errors for a missing rng stream, as an :class:`RngStreamError` with the fix that
    applies: it is also the error NNX raised (a ``KeyError``, ``ValueError``...)."""
    try:
        yield
    except (KeyError, AttributeError, ValueError) as e:
        failure = nnx_rng_failure(e)
        if failure is None:
            raise
        given = host.linen_rng_names()
        name = class_name(wrapper)
        if failure == "no-rngs":
            # Linen keys cannot help: they re-key the streams of the module's own nnx.Rngs,
            # and this layer was built without one.
            fix = (
                f"Fix: give the layer the constructor's rngs, e.g. self.dropout = "
                f"nnx.Dropout(0.5, rngs=rngs) in {name}.__init__: ToLinen builds the module "
                f"with an nnx.Rngs of the streams passed to init (model.init({{'params': "
                f"key1, 'dropout': key2}}, x)), and apply(..., rngs={{'dropout': key}}) "
                f"re-keys those streams. Or pass the key to the layer's own call."
            )
        elif at_apply:
            fix = (
                "Fix: the module was built without this stream, so a key at apply cannot "
                "reach it: pass the stream to init, e.g. model.init({'params': key1, "
                "'dropout': key2}, x), and use the variables it returns."
            )
        else:
            fix = (
                "Fix: pass the stream to init, e.g. model.init({'params': key1, "
                "'dropout': key2}, x)."
            )
        raise standing_in_for(RngStreamError, type(e))(
            f"{name} needs an rng stream that it does not have (Linen rngs given to this "
            f"call: {given or 'none'}). NNX said: {e}\n{fix}"
        ) from e


def class_name(wrapper: Any) -> str:
    return getattr(wrapper.nnx_class, "__name__", repr(wrapper.nnx_class))
