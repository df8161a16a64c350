"""Linen modules inside NNX: :class:`ToNNX` and :func:`lazy_init`.

Design. A ``ToNNX`` holds the Linen module instance (static), an ``nnx.Rngs`` and one attribute
per Linen collection: the collection's nested dict with ``nnx.Variable`` leaves. A call
rebuilds the plain Linen variables dict from those attributes (no copies: the leaves are the
same arrays), runs ``module.apply`` and, for ``mutable`` collections, writes the result back
into the existing variables. Everything that can fail runs before anything is written, and
the rng draws of a failed call are given back, so a failed call leaves the module as it was.

Initialization is lazy, as in Linen: the first call made under :func:`lazy_init` runs
``module.init`` instead of ``apply``. A wrapper that already has variables runs ``apply`` in
that pass and only adds what is missing (the params of another method), so ``lazy_init`` is
safe to repeat and works on partly initialized trees.

Under a JAX transform that closes over the module (``jax.jit(lambda x: model(x))``), NNX state
of the outer trace cannot change: streams that cannot advance are left out (a module that
needs one gets an :class:`RngStreamError`), and writing ``mutable`` collections back raises a
:class:`MutableCollectionError` before anything changes.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import flax.errors
import jax
from flax import linen as nn
from flax import nnx
from flax.core import DenyList
from flax.core.meta import AxisMetadata

from .._errors import (
    AmbiguousNameError,
    BridgeTypeError,
    MutableCollectionError,
    NotInitializedError,
    UnknownMethodError,
    standing_in_for,
)
from .._flax_internals import (
    can_update_in_place,
    collection_in,
    install_recheck_filter,
)
from .._keypath import path_str
from . import _fast, _rngs, _rollback
from . import _to_nnx_errors as errors
from ._variables import (
    in_place_writes,
    is_variable,
    to_linen_values,
    to_nnx_tree,
)

__all__ = ["ToNNX", "lazy_init"]

M = TypeVar("M")

# Attributes of ToNNX itself; a Linen collection with one of these names cannot become an
# attribute.
_RESERVED = frozenset({"module", "rngs", "linen_collections", "lazy_init"})


def _module_name(module: nn.Module) -> str:
    return type(module).__name__


class ToNNX(nnx.Module):
    """Wraps a Linen module instance as a stateful NNX module.

    The Linen variables live on the wrapper as NNX variables, one attribute per collection:
    ``model.params['w']`` is an ``nnx.Param``, ``model.batch_stats[...]`` an ``nnx.BatchStat``,
    and a custom collection gets the type registered for it (see
    :func:`register_variable_name_type_pair`). A leaf can also be reached by its name when
    that name is unambiguous (``model.kernel``), and the Linen module's methods are methods of
    the wrapper (``model.encode(x)``).

    Since Linen modules need a sample input to create their variables, call
    :func:`lazy_init` (or :meth:`lazy_init`) once before using the module.

    Args:
        module: the Linen module *instance*, e.g. ``nn.Dense(64)``.
        rngs: the ``nnx.Rngs`` the module draws from, for initialization and for random layers
            such as dropout. With ``nnx.Rngs(k)`` the variables equal those of Linen's own
            ``module.init(jax.random.key(k), x)``.

    Raises:
        BridgeTypeError: ``module`` is a class or not a Linen module, or ``rngs`` is not an
            ``nnx.Rngs``.

    Example:
        >>> import jax
        >>> import linnx
        >>> from flax import linen as nn, nnx
        >>> x = jax.numpy.ones((1, 32))
        >>> model = linnx.ToNNX(nn.Dense(features=64), rngs=nnx.Rngs(0)).lazy_init(x)
        >>> model(x).shape
        (1, 64)
        >>> model.kernel.shape, model.params['bias'].shape
        ((32, 64), (64,))
        >>> model.linen_collections
        ('params',)
    """

    def __init__(self, module: nn.Module, *, rngs: nnx.Rngs | None = None):
        if isinstance(module, type):
            if issubclass(module, nnx.Module):
                # Instantiating an NNX class would not help: it needs no wrapper at all.
                raise BridgeTypeError(
                    f"ToNNX(module=...) expects a Linen module instance, got the NNX module "
                    f"class {module.__name__}.\nFix: use {module.__name__}(..., "
                    f"rngs=nnx.Rngs(0)) directly, without ToNNX."
                )
            raise BridgeTypeError(
                f"ToNNX(module=...) expects a Linen module instance, got the class "
                f"{module.__name__}.\n"
                f"Fix: instantiate it with its fields, e.g. ToNNX({module.__name__}(...), "
                f"rngs=nnx.Rngs(0))."
            )
        if isinstance(module, nnx.Module):
            raise BridgeTypeError(
                f"ToNNX(module=...) expects a Linen module, got the NNX module "
                f"{type(module).__name__}, which is already an NNX module.\n"
                f"Fix: use it directly, without ToNNX."
            )
        if not isinstance(module, nn.Module):
            raise BridgeTypeError(
                f"ToNNX(module=...) expects a Linen module instance (a flax.linen.Module), "
                f"got {type(module).__name__}.\nFix: e.g. ToNNX(nn.Dense(4), rngs=nnx.Rngs(0))."
            )
        if rngs is not None and not isinstance(rngs, nnx.Rngs):
            raise BridgeTypeError(
                f"ToNNX(rngs=...) expects an nnx.Rngs, got {errors.kind_of(rngs)}.\n"
                f"Fix: wrap it, e.g. rngs=nnx.Rngs({errors.rngs_argument(rngs)})."
            )
        # Validated above, so NNX's per-assignment walk of each value may be skipped.
        _fast.set_attribute(self, "module", module, data=False)
        _fast.set_attribute(self, "rngs", rngs, data=rngs is not None)
        self.linen_collections: tuple[str, ...]
        _fast.set_attribute(self, "linen_collections", (), data=False)

    # -- variables -------------------------------------------------------------------------

    def _collection_tree(self, name: str) -> Any:
        """One collection's tree of variables; None when the user deleted the attribute."""
        return vars(self).get(name)

    def _linen_variables(self) -> dict[str, Any]:
        # A collection deleted by the user (`del model.intermediates`, to start sowing afresh)
        # is simply absent, as it would be from a Linen variables dict.
        return {
            c: to_linen_values(tree)
            for c in self.linen_collections
            if (tree := self._collection_tree(c)) is not None
        }

    def _check_names(self, collections: dict[str, Any]) -> None:
        for name in collections:
            if name in _RESERVED or name.startswith("__") or hasattr(ToNNX, name):
                raise BridgeTypeError(
                    f"{_module_name(self.module)} writes a Linen collection named {name!r}, "
                    f"which is the name of a ToNNX attribute or method.\n"
                    f"Fix: rename the collection in the Linen module."
                )

    def _check_writable(self, collections: dict[str, Any]) -> None:
        """Raises before anything is written if some update could not be stored."""
        self._check_names(collections)
        frozen = [
            f"{name}/{path_str(path)}"
            for name in collections
            for path, var in _flatten(self._collection_tree(name))
            if not can_update_in_place(var)
        ]
        if not can_update_in_place(self):
            frozen.insert(0, "the module itself")
        if frozen:
            # What NNX itself raises for such a write: a TraceContextError.
            raise standing_in_for(MutableCollectionError, flax.errors.TraceContextError)(
                errors.FROZEN.format(
                    name=f"ToNNX({_module_name(self.module)})",
                    what=", ".join(frozen[:3]) + (", ..." if len(frozen) > 3 else ""),
                )
            )

    def _store(self, collections: dict[str, Any]) -> None:
        """Writes Linen collections into the module, reusing existing variables."""
        self._check_names(collections)
        converted = {
            name: to_nnx_tree(name, tree, self._collection_tree(name))
            for name, tree in collections.items()
        }
        before = dict(vars(self))
        try:
            for name, tree in converted.items():
                _fast.set_attribute(self, name, tree, data=True, explicit=True)
            new = tuple(c for c in converted if c not in self.linen_collections)
            if new:
                _fast.set_attribute(
                    self, "linen_collections", self.linen_collections + new, data=False
                )
        except BaseException:
            # All or nothing, as `lazy_init` relies on for a lone wrapper. Restored directly,
            # as `_rollback` does: NNX bookkeeping attributes refuse `__setattr__`.
            vars(self).clear()
            vars(self).update(before)
            raise

    def _write_back(self, updates: dict[str, Any]) -> None:
        """Stores the collections a call updated; raises before writing if it cannot."""
        writes = self._in_place_writes(updates)
        if writes is None:
            self._check_writable(updates)
            self._store(updates)
            return
        _fast.took("to_nnx.in_place_write_back")
        for var, value in writes:
            _fast.write_value(var, value)

    def _in_place_writes(self, updates: dict[str, Any]) -> list | None:
        # The shortcut of `_write_back` (an eager BatchNorm call lands here): every updated
        # collection already exists with the same structure, so only values change.
        if not _fast.enabled() or not can_update_in_place(self):
            return None
        writes = []
        for name, tree in updates.items():
            existing = self._collection_tree(name)
            found = (
                in_place_writes(name, tree, existing)
                if existing is not None and name in self.linen_collections
                else None
            )
            if found is None:
                return None
            writes += found
        return writes

    # -- calls -----------------------------------------------------------------------------

    def _resolve_method(self, method: str | Callable | None) -> str | Callable | None:
        if method is None or callable(method):
            return method
        if not isinstance(method, str):
            raise BridgeTypeError(
                f"method={method!r}: expected the name of a method of "
                f"{_module_name(self.module)} or a function, got {type(method).__name__}.\n"
                f"Fix: e.g. model(x, method='encode'), or call model.encode(x)."
            )
        if not _is_linen_method(self.module, method):
            raise UnknownMethodError(
                f"method={method!r}: {_module_name(self.module)} has no method named "
                f"{method!r}.\nAvailable methods: {', '.join(_public_methods(self.module))}."
            )
        return method

    def __call__(
        self,
        *args: Any,
        rngs: nnx.Rngs | Any = None,
        method: str | Callable | None = None,
        mutable: bool | str | Sequence[str] = False,
        **kwargs: Any,
    ) -> Any:
        """Applies the Linen module on the current variables.

        Args:
            *args: positional arguments of the Linen method.
            rngs: keys for this call only (an ``nnx.Rngs``, a key, an int seed, or a dict of
                stream name -> key); by default keys are drawn from the module's own ``rngs``.
            method: the Linen method to run, by name or as a function; ``__call__`` if None.
            mutable: collections the call may change (``True`` for all), as in Linen's
                ``apply``. Their new values are written back into this module, including
                collections that did not exist before (a decoding ``cache``).
            **kwargs: keyword arguments of the Linen method.

        Returns:
            What the Linen method returns (without the updated collections, which are
            written back instead).

        Raises:
            NotInitializedError: the variables this call needs have not been created yet.
            UnknownMethodError: ``method`` names no method of the Linen module.
            MutableCollectionError: a collection named in ``mutable`` was never written, the
                module writes a collection missing from ``mutable``, or the new values cannot
                be stored at this trace level.
            RngStreamError: the module needs an rng stream it was not given.
        """
        method = self._resolve_method(method)
        if _rngs.in_initialization_pass():
            if not self.linen_collections:
                return self._initialize(args, kwargs, method, rngs)
            return self._complete(args, kwargs, method, rngs)
        keys = (
            _rngs.per_call_keys(rngs, init=False)
            if rngs is not None
            else _rngs.call_keys(self.rngs)
        )
        try:
            out, updates = self._apply(args, kwargs, method, keys, mutable)
            if updates:
                self._write_back(updates)
        except BaseException:
            # A failed call changes nothing: neither variables nor rng counts.
            _rngs.restore_counts(keys.drawn)
            raise
        return out

    def _apply(self, args, kwargs, method, keys: _rngs.CallKeys, mutable):
        """Runs Linen's ``apply``; returns the output and the updated collections."""
        name = f"ToNNX({_module_name(self.module)})"
        initialized = bool(self.linen_collections)
        try:
            result = self.module.apply(
                self._linen_variables(),
                *args,
                rngs=keys.keys or None,
                method=method,
                mutable=mutable,
                **kwargs,
            )
        except errors.NOT_INIT_ERRORS as e:
            # Also the Flax error: Flax's bridge let it through (issue 14, item 9).
            template = errors.MISSING_VARIABLES if initialized else errors.NOT_INITIALIZED
            raise standing_in_for(NotInitializedError, type(e))(
                template.format(name=name, cause=e, call=_call_text(method))
            ) from e
        except flax.errors.ModifyScopeVariableError as e:
            raise MutableCollectionError(
                errors.IMMUTABLE.format(
                    name=name,
                    cause=e,
                    collection=collection_in(e) or "...",
                )
            ) from e
        except flax.errors.InvalidRngError as e:
            raise errors.rngs_error(self, e, keys.frozen) from e
        except flax.errors.ScopeParamShapeError as e:
            raise errors.shape_error(name, e) from e
        except flax.errors.InvalidFilterError as e:
            raise standing_in_for(BridgeTypeError, type(e))(
                f"{name}: mutable={mutable!r} is not a collection filter.\nFix: pass True, "
                f"False, a collection name or a list of them, e.g. mutable=['batch_stats']."
            ) from e
        if mutable is False:
            return result, {}
        out, updates = result
        updates = dict(updates)
        if not initialized and "params" in updates:
            # Linen creates missing params when 'params' is mutable; only lazy_init may.
            raise NotInitializedError(
                errors.NOT_INITIALIZED.format(
                    name=name,
                    call=_call_text(method),
                    cause=f"Linen would create the params in this call (mutable={mutable!r}), "
                    f"from call keys instead of init keys.",
                )
            )
        if isinstance(mutable, (str, Sequence)):  # not True, nor a filter like DenyList
            requested = [mutable] if isinstance(mutable, str) else list(mutable)
            never = [c for c in requested if c not in updates]
            if never:
                raise MutableCollectionError(
                    f"mutable={requested!r}: {_module_name(self.module)} never wrote the "
                    f"collection {never[0]!r} during this call.\n"
                    f"Collections this module has: {list(self.linen_collections)}; written "
                    f"in this call: {sorted(updates)}.\n"
                    f"Fix: check the spelling, or leave {never[0]!r} out of `mutable`."
                )
        return out, updates

    def _initialize(self, args, kwargs, method, rngs):
        keys = (
            _rngs.per_call_keys(rngs, init=True).keys
            if rngs is not None
            else _rngs.init_keys(self.rngs)
        )
        try:
            out, variables = self.module.init_with_output(keys, *args, method=method, **kwargs)
        except flax.errors.InvalidRngError as e:
            raise errors.rngs_error(self, e, []) from e
        variables = dict(variables)
        self._check_writable(variables)
        self._store(variables)
        return out

    def _complete(self, args, kwargs, method, rngs):
        """An initialization pass met a wrapper that already has variables.

        It runs the forward pass on the stored variables and only *adds* what this call
        creates and the module lacks (params of a method not initialized yet); existing
        variables and rng counts stay as they were, so ``lazy_init`` may run again, and on a
        tree where some wrappers are initialized. Collections are mutable here as in Linen's
        ``init`` (``intermediates`` excepted), so modules that update state while running
        (BatchNorm in training, counters) do not fail; those updates are dropped.
        """
        keys = (
            _rngs.per_call_keys(rngs, init=True).keys
            if rngs is not None
            else _rngs.init_keys(self.rngs)
        )
        try:
            out, updates = self.module.apply(
                self._linen_variables(),
                *args,
                rngs=keys or None,
                method=method,
                mutable=DenyList("intermediates"),
                **kwargs,
            )
        except flax.errors.InvalidRngError as e:
            raise errors.rngs_error(self, e, []) from e
        except flax.errors.ScopeParamShapeError as e:
            raise errors.shape_error(f"ToNNX({_module_name(self.module)})", e) from e
        current = self._linen_variables()
        added = {}
        for name, tree in dict(updates).items():
            if name not in current:
                added[name] = tree
            elif _new_paths(tree, current[name]):
                # Keep every existing value; take only the leaves that are new.
                added[name] = _overlay(tree, current[name])
        if added:
            self._check_writable(added)
            self._store(added)
        return out

    def lazy_init(self: M, *args: Any, **kwargs: Any) -> M:
        """Creates the variables with a sample input; a shortcut for ``lazy_init(self, ...)``.

        Example:
            >>> import jax.numpy as jnp
            >>> import linnx
            >>> from flax import linen as nn, nnx
            >>> model = linnx.ToNNX(nn.Dense(3), rngs=nnx.Rngs(0)).lazy_init(jnp.ones((1, 2)))
            >>> model.kernel.shape
            (2, 3)
        """
        return lazy_init(self, *args, **kwargs)

    # -- attribute access -------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: Linen methods, then unambiguous leaf names.
        if name.startswith("_") or name in _RESERVED:
            raise AttributeError(name)
        try:
            module = object.__getattribute__(self, "module")
            collections = object.__getattribute__(self, "linen_collections")
        except AttributeError:
            raise AttributeError(name) from None
        if _is_linen_method(module, name):
            return types.MethodType(_bound_linen_method(name), self)
        found = []
        for collection in collections:
            tree = vars(self).get(collection)
            found += [(collection, path) for path, _ in _flatten(tree) if path[-1:] == (name,)]
        if len(found) == 1:
            collection, path = found[0]
            node = vars(self)[collection]
            for key in path:
                node = node[key]
            return node
        if found:
            where = ", ".join(path_str((c, *p)) for c, p in found)
            raise AmbiguousNameError(
                f"{name!r} is ambiguous on ToNNX({_module_name(module)}): it names {where}.\n"
                f"Fix: index the collection, e.g. model.{found[0][0]}"
                + "".join(f"[{k!r}]" for k in found[0][1])
            )
        hint = ""
        if name in _field_names(module):
            hint = f"\nIt is a field of the Linen module: read it as model.module.{name}."
        elif not collections:
            hint = (
                f"\n{_module_name(module)} has no variables yet: create them with a sample "
                f"input first, model.lazy_init(x) (or linnx.lazy_init(model, x)), then read "
                f"model.{name}."
            )
        raise UnknownMethodError(
            f"'ToNNX' object has no attribute {name!r}: it is neither a method of "
            f"{_module_name(module)} nor a variable name in {list(collections)}.{hint}"
        )


# NNX re-checks every attribute after __init__; the re-checks that cannot fail are most of a
# wrapper's construction cost, and are skipped while the shortcuts are on.
install_recheck_filter(ToNNX, _fast.recheck_can_be_skipped)


def _bound_linen_method(name: str) -> Callable[..., Any]:
    def method(self: ToNNX, *args: Any, **kwargs: Any) -> Any:
        return self(*args, method=name, **kwargs)

    method.__name__ = method.__qualname__ = name
    return method


def _field_names(module: nn.Module) -> set[str]:
    return {f.name for f in dataclasses.fields(module)}


def _is_linen_method(module: nn.Module, name: str) -> bool:
    """A method the wrapped class defines: not a field (``w_init``), not Linen's own API."""
    if name in _field_names(module) or (hasattr(nn.Module, name) and name != "__call__"):
        return False
    return callable(getattr(type(module), name, None))


def _call_text(method: str | Callable | None) -> str:
    if isinstance(method, str) and method != "__call__":
        return f"model.{method}"
    return "model"


# A sown tuple (``self.sow``) counts as one variable: a repeated initialization pass that
# sows again must not append to it as if its new entry were a missing variable.
def _new_paths(tree: Any, existing: Any) -> bool:
    have = {p for p, _ in jax.tree_util.tree_flatten_with_path(existing, is_leaf=_is_sown)[0]}
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_box_or_sown)[0]
    return any(p not in have for p, _ in flat)


def _overlay(tree: Any, existing: Any) -> Any:
    """``tree`` with the value of ``existing`` at every path that ``existing`` has."""
    have = dict(jax.tree_util.tree_flatten_with_path(existing, is_leaf=_is_sown)[0])
    return jax.tree_util.tree_map_with_path(
        lambda p, leaf: have.get(p, leaf), tree, is_leaf=_is_box_or_sown
    )


def _is_sown(x: Any) -> bool:
    return isinstance(x, tuple)


def _is_box_or_sown(x: Any) -> bool:
    return _is_box(x) or _is_sown(x)


def _is_box(x: Any) -> bool:
    return isinstance(x, AxisMetadata)


def _flatten(tree: Any) -> list[tuple[tuple, Any]]:
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_variable)[0]:
        keys = tuple(getattr(p, "key", getattr(p, "idx", p)) for p in path)
        out.append((keys, leaf))
    return out


def _public_methods(module: nn.Module) -> list[str]:
    return sorted(
        n
        for n, _ in inspect.getmembers(type(module), callable)
        if not n.startswith("_") and _is_linen_method(module, n)
    ) or ["__call__"]


def lazy_init(fn: M | Callable[..., Any], *args: Any, **kwargs: Any) -> M:
    """Creates the variables of every :class:`ToNNX` inside an NNX module with a sample input.

    This is where a Linen user would call ``module.init``. It runs one forward pass of
    ``fn`` (a module, or a bound method such as ``model.encode``); each ``ToNNX`` met on the
    way that has no variables yet runs Linen's ``init`` instead of ``apply``. Wrappers that
    already have variables keep them, so a partly initialized tree and a second call are fine.

    Args:
        fn: an NNX module (its ``__call__`` runs) or a bound method of one.
        *args: sample positional inputs.
        **kwargs: sample keyword inputs.

    Returns:
        The module (for a bound method, the module it is bound to).

    Example:
        >>> import jax
        >>> import linnx
        >>> from flax import linen as nn, nnx
        >>> class Outer(nnx.Module):
        ...     def __init__(self, rngs):
        ...         self.dense = linnx.ToNNX(nn.Dense(4), rngs=rngs)
        ...     def __call__(self, x):
        ...         return self.dense(x)
        >>> model = linnx.lazy_init(Outer(nnx.Rngs(0)), jax.numpy.ones((1, 3)))
        >>> model.dense.params['kernel'].shape
        (3, 4)
    """
    module: Any = fn.__self__ if inspect.ismethod(fn) else fn
    if isinstance(module, type):
        # Calling a class would construct a module from the sample input and drop it.
        raise BridgeTypeError(
            f"lazy_init(fn=...) expects an NNX module instance, got the class "
            f"{module.__name__}.\nFix: build the module first, e.g. "
            f"lazy_init({module.__name__}(..., rngs=nnx.Rngs(0)), x)."
        )
    if isinstance(module, nn.Module):
        raise BridgeTypeError(
            f"lazy_init(fn=...) expects an NNX module, got the Linen module "
            f"{type(module).__name__}.\nFix: wrap it first: "
            f"lazy_init(ToNNX({type(module).__name__}(...), rngs=nnx.Rngs(0)), x)."
        )
    if not callable(fn):
        raise BridgeTypeError(
            f"lazy_init(fn=...) expects an NNX module or one of its methods, got "
            f"{type(fn).__name__}.\nFix: e.g. lazy_init(model, x) or lazy_init(model.encode, x)."
        )
    if type(module) is ToNNX and fn is module and _fast.enabled():
        # A lone wrapper needs no snapshot of the tree: its initialization writes nothing
        # but its own attributes, all at the end, and `_store` undoes those itself.
        _fast.took("to_nnx.lone_lazy_init")
        with _rngs.initialization_pass():
            fn(*args, **kwargs)
        return cast(M, module)
    undo = _rollback.snapshot(module)
    try:
        with _rngs.initialization_pass():
            fn(*args, **kwargs)
    except BaseException:
        undo()  # no half-initialized tree: the parts that succeeded are undone too
        raise
    return module
