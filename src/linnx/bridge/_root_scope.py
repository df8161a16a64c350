"""Where ``ToLinen`` keeps its Linen variables and draws its keys: the :class:`Host` interface.

``ToLinen.__call__`` needs a handful of Linen's scope operations: read and write variables,
test mutability, draw rng keys, and tell which rng streams this call's Linen ``rngs`` name.
:class:`Host` is that interface, with two implementations:

* :class:`BoundModuleHost`, the general one: a bound ``ToLinen`` module's own scope, in any
  Linen context (a parent module, a lifted transform, ``nn.tabulate``...);
* :class:`TopLevelScope`, a speed shortcut: a stand-in for Linen's *root* scope over plain
  dicts, with Linen's semantics, for a top-level ``init``/``apply`` (:func:`fast_apply`,
  :func:`fast_init`).

Why the stand-in exists. Linen's ``Module.apply``/``init`` bind a ``Scope``, clone the module
onto it, re-run ``__post_init__`` (which registers and freezes every field), set up the method
wrapper and read the variables back through the scope: about 0.2 ms per call, as much as an
eager call of a small NNX model, and all of it spent on the one module a top-level ``ToLinen``
is. Only the plain case is taken, checked before anything runs: the shortcuts are on
(``_fast``), an unbound module, not wrapped by a Linen transform, ``method`` None, no
``capture_intermediates``, no interceptors or ``nn.tabulate`` in progress, variables and rngs
of the types Linen accepts without conversion (typed keys), and a ``mutable`` filter of the
usual kinds. Everything else, including every input Linen would refuse, goes through Linen, so
errors are Linen's (or linnx's) own.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import numpy as np
from flax import config as flax_config
from flax import errors as flax_errors
from flax import linen as nn
from flax.core import FrozenDict, freeze, unfreeze
from flax.core.scope import DenyList, LazyRng, in_filter

from .._flax_internals import linen_context_is_plain, linen_named_call
from . import _fast

__all__ = [
    "Host",
    "BoundModuleHost",
    "TopLevelScope",
    "NOT_TAKEN",
    "fast_apply",
    "fast_init",
]

#: Returned by :func:`fast_apply`/:func:`fast_init` when the call must go through Linen.
NOT_TAKEN: Any = object()

_LINEN_APPLY_OPTIONS = ("rngs", "method", "mutable", "capture_intermediates")
_INIT_MUTABLE = DenyList("intermediates")  # what Linen's `init` makes mutable by default


class Host(Protocol):
    """The scope operations ``ToLinen`` uses to keep its variables and draw its keys."""

    @property
    def variables(self) -> Mapping[str, Any]: ...

    def has_variable(self, col: str, name: str) -> bool: ...

    def get_variable(self, col: str, name: str, default: Any = None) -> Any: ...

    def put_variable(self, col: str, name: str, value: Any) -> None: ...

    def is_mutable_collection(self, col: str) -> bool: ...

    def make_rng(self, name: str = "params") -> jax.Array: ...

    def has_linen_rng(self, stream: str) -> bool:
        """Whether this call's Linen ``rngs`` name ``stream``."""
        ...

    def linen_rng_names(self) -> list[str]:
        """The streams this call's Linen ``rngs`` name, sorted."""
        ...

    def mutable_names(self) -> list[str] | None:
        """The collections this call's ``mutable`` names, where it is a name or a list of
        names (None for ``True``, ``False`` or another kind of filter)."""
        ...


class BoundModuleHost:
    """:class:`Host` over a bound Linen module: its scope's operations, through Linen."""

    __slots__ = ("_module",)

    def __init__(self, module: nn.Module) -> None:
        self._module = module

    @property
    def _scope(self) -> Any:
        # A bound module always has its scope (Module.scope is Optional for unbound ones).
        return self._module.scope

    @property
    def variables(self) -> Mapping[str, Any]:
        return self._module.variables

    def has_variable(self, col: str, name: str) -> bool:
        return self._module.has_variable(col, name)

    def get_variable(self, col: str, name: str, default: Any = None) -> Any:
        return self._module.get_variable(col, name, default)

    def put_variable(self, col: str, name: str, value: Any) -> None:
        self._module.put_variable(col, name, value)

    def is_mutable_collection(self, col: str) -> bool:
        return self._module.is_mutable_collection(col)

    def make_rng(self, name: str = "params") -> jax.Array:
        return self._module.make_rng(name)

    def has_linen_rng(self, stream: str) -> bool:
        rngs = self._scope.rngs
        return bool(rngs) and stream in rngs

    def linen_rng_names(self) -> list[str]:
        rngs = self._scope.rngs
        return sorted(rngs) if rngs else []

    def mutable_names(self) -> list[str] | None:
        return _names_in(self._scope.mutable)


class TopLevelScope:
    """:class:`Host` standing in for the root scope of a top-level Linen ``apply``/``init``.

    Same semantics as Linen's root ``Scope``: mutable collections are copied (unfrozen) on
    entry and nested writes merge into them; a write to an immutable collection raises
    Linen's ``ModifyScopeVariableError``; ``make_rng`` folds a per-stream count into the
    stream's key exactly as Linen does (through Linen's own ``LazyRng``), falling back to
    ``'params'`` for a stream not given.
    """

    def __init__(
        self, variables: Mapping[str, Any], rngs: dict[str, jax.Array], mutable: Any
    ) -> None:
        self._mutable = mutable
        self._variables: dict[str, Any] = {
            col: unfreeze(tree) if in_filter(mutable, col) else tree
            for col, tree in variables.items()
        }
        self._rngs = rngs
        self._counts = dict.fromkeys(rngs, 0)

    @property
    def variables(self) -> Mapping[str, Any]:
        return freeze(self._variables) if flax_config.flax_return_frozendict else self._variables

    def has_variable(self, col: str, name: str) -> bool:
        return name in self._variables.get(col, ())

    def get_variable(self, col: str, name: str, default: Any = None) -> Any:
        collection = self._variables.get(col)
        if collection is None or name not in collection:
            return default
        return collection[name]

    def put_variable(self, col: str, name: str, value: Any) -> None:
        if not in_filter(self._mutable, col):
            raise flax_errors.ModifyScopeVariableError(col, name, "/")
        _merge(self._variables.setdefault(col, {}), name, value)

    def is_mutable_collection(self, col: str) -> bool:
        return in_filter(self._mutable, col)

    def make_rng(self, name: str = "params") -> jax.Array:
        if name not in self._rngs:
            if "params" not in self._rngs:
                raise flax_errors.InvalidRngError(f'None needs PRNG for "{name}"')
            name = "params"
        self._counts[name] += 1
        return _derive_key(self._rngs[name], self._counts[name])

    def has_linen_rng(self, stream: str) -> bool:
        return stream in self._rngs

    def linen_rng_names(self) -> list[str]:
        return sorted(self._rngs)

    def mutable_names(self) -> list[str] | None:
        return _names_in(self._mutable)

    def mutable_variables(self) -> dict[str, Any]:
        """What Linen returns for the mutable collections: in the scope's collection order."""
        out = {col: tree for col, tree in self._variables.items() if in_filter(self._mutable, col)}
        # A FrozenDict is a Mapping as Linen returns it; typed as the dict it stands for.
        return freeze(out) if flax_config.flax_return_frozendict else out  # type: ignore[return-value]


def _names_in(mutable: Any) -> list[str] | None:
    if isinstance(mutable, str):
        return [mutable]
    if isinstance(mutable, (list, tuple, set, frozenset)):
        return [c for c in mutable if isinstance(c, str)]
    return None


def _merge(target: dict[str, Any], name: str, value: Any) -> None:
    # Linen merges a written dict into the dict already stored under the name, key by key
    # (flax #2022: other references to the stored dict must see the write).
    current = target.get(name)
    if isinstance(current, dict) and isinstance(value, Mapping):
        for key, item in value.items():
            _merge(current, key, item)
    else:
        target[name] = value


def _fold_count(key: jax.Array, count: int, fix_separator: bool) -> jax.Array:
    del fix_separator  # only part of the jit cache key: Linen reads the flag while folding
    return LazyRng.create(key, count).as_jax_rng()


# Linen's fold of a count into a key is a hash and an eager `fold_in` (two dispatches, ~80 us);
# compiled, with the (static) count folded in at trace time, one dispatch of a few us.
_fold_count_jit = jax.jit(_fold_count, static_argnums=(1, 2))


def _derive_key(key: jax.Array, count: int) -> jax.Array:
    fix_separator = bool(flax_config.flax_fix_rng_separator)
    if isinstance(key, jax.core.Tracer):
        return _fold_count(key, count, fix_separator)
    return _fold_count_jit(key, count, fix_separator)


# -- when the fast path applies --------------------------------------------------------------


def _plain_top_level(wrapper: nn.Module, call: Callable[..., Any]) -> bool:
    """An unbound wrapper whose class keeps ToLinen's call, outside any Linen machinery."""
    if wrapper.scope is not None or wrapper.parent is not None:
        return False
    if "_id" not in vars(wrapper):  # a subclass __post_init__ that skipped Linen's: its error
        return False
    cls = type(wrapper)
    if cls.__call__ is not call or cls.setup is not nn.Module.setup:
        return False
    return linen_context_is_plain()


def _is_typed_key(x: Any) -> bool:
    return (
        isinstance(x, jax.Array)
        and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
        and x.shape == ()
    )


def _plain_rngs(rngs: Any) -> dict[str, jax.Array] | None:
    """The rngs as Linen's root scope holds them, or None where Linen must read them."""
    if rngs is None:
        return {}
    if type(rngs) is dict:
        if all(type(name) is str and _is_typed_key(key) for name, key in rngs.items()):
            return dict(rngs)
        return None
    return {"params": rngs} if _is_typed_key(rngs) else None


def _plain_variables(variables: Any) -> bool:
    if type(variables) not in (dict, FrozenDict):
        return False
    for col, tree in variables.items():
        if type(col) is not str or type(tree) not in (dict, FrozenDict):
            return False
        if not all(type(name) is str for name in tree):
            return False
    # Linen refuses {'params': {'params': ...}} (a doubly wrapped dict) with its own error.
    params = variables.get("params")
    return params is None or "params" not in params


def _plain_filter(mutable: Any) -> bool:
    if mutable is True or mutable is False or type(mutable) is str:
        return True
    return type(mutable) in (list, tuple, set, frozenset) and all(
        type(col) is str for col in mutable
    )


# Constructor arguments Linen's field registration (`_freeze_attr` and its search for
# submodules) hands over unchanged: anything else (lists, dicts, dataclasses, Linen modules)
# it rebuilds, so those calls go through Linen.
_PLAIN_ATOMS = (int, float, complex, str, bytes, bool, type(None), type(Ellipsis))
_PLAIN_CALLABLES = (
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    functools.partial,
    np.dtype,
)


def _unchanged_by_linen(value: Any) -> bool:
    if type(value) in _PLAIN_ATOMS or isinstance(value, _PLAIN_CALLABLES):
        return True
    if type(value) is tuple:
        return all(_unchanged_by_linen(item) for item in value)
    return False


def _plain_arguments(wrapper: Any) -> bool:
    kwargs = wrapper.kwargs
    return (
        type(wrapper.args) is tuple
        and _unchanged_by_linen(wrapper.args)
        and type(kwargs) is FrozenDict
        and all(type(k) is str and _unchanged_by_linen(v) for k, v in kwargs.items())
    )


def _named_call(wrapper: nn.Module) -> Any:
    """The ``jax.named_scope`` Linen puts around a module's ``__call__`` (if enabled)."""
    if linen_named_call():
        return jax.named_scope(wrapper.name or type(wrapper).__name__)
    return _NO_SCOPE


class _NoScope:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SCOPE = _NoScope()


# -- the two entry points --------------------------------------------------------------------


def fast_apply(
    wrapper: Any,
    call: Callable[..., Any],
    variables: Any,
    args: tuple,
    kwargs: dict[str, Any],
) -> Any:
    """``wrapper.apply(variables, *args, **kwargs)`` for a plain top-level call, else
    :data:`NOT_TAKEN`. ``call`` is ``ToLinen.__call__``, to tell a transformed subclass."""
    if (
        not _fast.enabled()
        or kwargs.get("method") is not None
        or kwargs.get("capture_intermediates")
    ):
        return NOT_TAKEN
    mutable = kwargs.get("mutable", False)
    rngs = _plain_rngs(kwargs.get("rngs"))
    if (
        rngs is None
        or not _plain_filter(mutable)
        or not _plain_variables(variables)
        or not _plain_top_level(wrapper, call)
    ):
        return NOT_TAKEN
    stored = variables.get("nnx")
    if stored is None or "graphdef" not in stored:
        return NOT_TAKEN  # Linen's path initializes (mutable 'nnx') or says what is missing
    call_kwargs = {k: v for k, v in kwargs.items() if k not in _LINEN_APPLY_OPTIONS}
    nnx_method = call_kwargs.pop("nnx_method", None)
    _fast.took("root_scope.apply")
    scope = TopLevelScope(variables, rngs, mutable)
    with _named_call(wrapper):
        out = wrapper._call_nnx(scope, args, call_kwargs, nnx_method)
    if mutable is False:
        return out
    return out, scope.mutable_variables()


def fast_init(wrapper: Any, call: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
    """``wrapper.init(*args, **kwargs)`` for a plain top-level call, else :data:`NOT_TAKEN`.

    Returns the variables of the constructed module, without the forward pass a top-level
    ``init`` skips anyway (see ``ToLinen.init``).
    """
    if (
        not _fast.enabled()
        or "mutable" in kwargs
        or kwargs.get("method") is not None
        or kwargs.get("capture_intermediates")
    ):
        return NOT_TAKEN
    if args and "rngs" in kwargs:
        return NOT_TAKEN  # Linen's own TypeError (two values for `rngs`)
    if args:
        rngs, args = args[0], args[1:]
    elif "rngs" in kwargs:
        rngs = kwargs["rngs"]
    else:
        return NOT_TAKEN
    if type(rngs) is not dict and not _is_typed_key(rngs):
        return NOT_TAKEN  # (Linen reads anything but a dict as one key)
    linen_rngs = _plain_rngs(rngs)
    if linen_rngs is None or not _plain_top_level(wrapper, call) or not _plain_arguments(wrapper):
        return NOT_TAKEN
    call_kwargs = {k: v for k, v in kwargs.items() if k not in _LINEN_APPLY_OPTIONS}
    nnx_method = call_kwargs.pop("nnx_method", None)
    _fast.took("root_scope.init")
    scope = TopLevelScope({}, linen_rngs, _INIT_MUTABLE)
    with _named_call(wrapper):
        wrapper._initialize(scope, args, call_kwargs, nnx_method, output_unused=True)
    return scope.mutable_variables()
