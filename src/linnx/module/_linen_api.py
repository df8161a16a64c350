"""Linen's ``init`` and ``apply`` for ``linnx.Module``: pure functions on a fresh copy.

Both build a new module tree from the dataclass fields of the one they are called on (so that
module is never touched, and a traced call leaks nothing), run one method on it, and read the
result back as a Linen variables dict (``_tree.export``). ``init`` runs as a creation pass with
the given keys. ``apply`` runs with a :class:`~._context.Binding`: every variable a module
declares, or that a submodule built on the way already holds, takes its value from the given
dict instead of being initialized. Writes are checked afterwards: a collection that was not
``mutable`` must come out as it went in, as Linen enforces.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import jax
from flax import nnx

from .._errors import BridgeTypeError, MutableCollectionError, UnknownMethodError
from ..bridge import _rngs as bridge_rngs
from ..bridge._to_nnx import ToNNX
from . import _context as ctx
from . import _tree
from ._construction import _API, _ROOT, _ctor_args, _instantiate
from ._errors import ModuleDefinitionError

__all__ = ["init_with_output", "apply", "fresh_clone", "to_rngs"]

_NO_ARGS: Final = (
    "{cls} defines its own __init__ and this instance was not built by calling the class "
    "(it comes from nnx.merge or a copy), so init/apply cannot build a fresh copy of it.\n"
    "Fix: call init/apply on a module built as {cls}(...), or use lazy_init and the module "
    "itself."
)
_IMMUTABLE: Final = (
    "apply(mutable={mutable!r}): the call changed {where}, but the collection {collection!r} "
    "is not mutable.\nFix: pass mutable=[{collection!r}] (or mutable=True) to get the new "
    "values back, as in Linen: y, updates = model.apply(variables, x, mutable=[{collection!r}])."
)
_NEVER: Final = (
    "apply(mutable={mutable!r}): the collection {collection!r} is neither in the variables nor "
    "written by this call. Collections after the call: {have}.\n"
    "Fix: check the spelling, or leave {collection!r} out of `mutable`."
)


def to_rngs(rngs: Any, argname: str = "rngs") -> nnx.Rngs:
    """An ``nnx.Rngs`` from Linen-style keys; a single key or seed is the ``params`` stream.

    As in Linen, other streams fall back to ``params``: it also serves as NNX's ``default``
    stream, which NNX layers built inside the module (``nnx.Dropout``) fall back to.
    """
    if isinstance(rngs, nnx.Rngs):
        return rngs
    if rngs is None:
        return nnx.Rngs()
    if isinstance(rngs, Mapping):
        out = nnx.Rngs(**{str(k): v for k, v in rngs.items()})
    elif isinstance(rngs, (int, jax.Array)) and not isinstance(rngs, bool):
        out = nnx.Rngs(params=rngs)
    else:
        raise BridgeTypeError(
            f"{argname}={rngs!r}: expected a jax.random.key, an int seed, a dict of stream "
            f"name -> key, or an nnx.Rngs, e.g. {argname}={{'params': jax.random.key(0)}}."
        )
    streams = dict(out.items())
    if "params" in streams and "default" not in streams:
        setattr(out, "default", streams["params"])  # noqa: B010 (a stream, not a declared attribute)
    return out


def _collections(mutable: Any, argname: str) -> frozenset[str] | bool:
    if isinstance(mutable, bool):
        return mutable
    if isinstance(mutable, str):
        return frozenset({mutable})
    if isinstance(mutable, Sequence | frozenset | set) and all(isinstance(c, str) for c in mutable):
        return frozenset(mutable)
    raise BridgeTypeError(
        f"{argname}={mutable!r}: expected True, False, a collection name or a list of them, "
        f"e.g. {argname}=['batch_stats']."
    )


def _clone_value(value: Any) -> Any:
    if _tree.is_linnx_module(value):
        return fresh_clone(value)
    if isinstance(value, ToNNX):
        return value.module
    if isinstance(value, nnx.Rngs):
        rngs = ctx.construction_rngs()
        return value if rngs is None else rngs
    if isinstance(value, nnx.Pytree):
        return nnx.clone(value)
    if type(value) in (list, tuple):
        return type(value)(_clone_value(v) for v in value)
    if type(value) is dict:
        return {k: _clone_value(v) for k, v in value.items()}
    return value


def fresh_clone(module: Any) -> Any:
    """A new module of the same class and fields, with no variables and no parent."""
    cls = type(module)
    if cls._linnx_dataclass:
        args: tuple = ()
        kwargs = {
            f.name: _clone_value(getattr(module, f.name)) for f in dataclasses.fields(cls) if f.init
        }
    else:
        recorded = _ctor_args.get(module)
        if recorded is None:
            raise ModuleDefinitionError(_NO_ARGS.format(cls=cls.__name__))
        args = tuple(_clone_value(a) for a in recorded[0])
        kwargs = {k: _clone_value(v) for k, v in recorded[1].items()}
    return _instantiate(cls, args, kwargs, vars(module).get("name"), None, _ROOT)


def _find(cls: type, name: str) -> Any:
    return next((vars(c)[name] for c in cls.__mro__ if name in vars(c)), None)


def _methods(cls: type) -> list[str]:
    names = {
        n
        for c in cls.__mro__
        if getattr(c, "_linnx_is_module", False) and "_linnx_is_module" not in vars(c)
        for n, v in vars(c).items()
        if inspect.isfunction(v) and (n == "__call__" or not n.startswith("_"))
    }
    return sorted(names - _API)


def resolve_method(root: Any, method: str | Callable | None) -> Callable[..., Any]:
    cls = type(root)
    if method is None:
        method = "__call__"
    if isinstance(method, str):
        if method in _API or not inspect.isfunction(_find(cls, method)):
            raise UnknownMethodError(
                f"method={method!r}: {cls.__name__} has no method named {method!r}.\n"
                f"Available methods: {', '.join(_methods(cls)) or 'none'}."
            )
        return getattr(root, method)
    if callable(method):
        return functools.partial(method, root)
    raise BridgeTypeError(
        f"method={method!r}: expected the name of a method of {cls.__name__} or a function "
        f"f(module, *args)."
    )


def init_with_output(
    module: Any,
    rngs: Any,
    args: tuple,
    kwargs: dict,
    method: Any,
    mutable: Any,
) -> tuple[Any, dict[str, Any]]:
    init_rngs = to_rngs(rngs)
    policy = None if mutable is None else _collections(mutable, "mutable")
    if policy is False:
        raise BridgeTypeError(
            "init(mutable=False) would return no variables.\nFix: leave `mutable` out (all "
            "collections but 'intermediates'), or name the collections to return."
        )
    with (
        ctx.isolated(init_rngs),
        ctx.init_sow_policy(policy),
        bridge_rngs.initialization_pass(),
    ):
        root = fresh_clone(module)
        out = resolve_method(root, method)(*args, **kwargs)
    variables = _tree.export(root)
    if policy is None:
        variables.pop("intermediates", None)
    elif policy is not True:
        variables = {c: v for c, v in variables.items() if c in policy}
    return out, variables


def _construction_rngs(user: nnx.Rngs) -> nnx.Rngs:
    """``user`` plus a ``params`` stream for building NNX layers whose values get replaced."""
    streams = dict(user.items())
    if "params" in streams or "default" in streams:
        return user
    rngs = nnx.Rngs(params=ctx.dummy_key())
    for name, stream in streams.items():
        setattr(rngs, name, stream)
    return rngs


def _plain(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _plain(v) for k, v in tree.items()}
    return tree


def _merge(base: Any, new: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(new, Mapping):
        out = _plain(base)
        for key, value in new.items():
            out[key] = _merge(out.get(key), value)
        return out
    return _plain(new) if new is not None else _plain(base)


def _check_variables(variables: Any) -> None:
    if not isinstance(variables, Mapping):
        raise BridgeTypeError(
            f"apply(variables=...): expected the dict that init returns, "
            f"{{collection: {{...}}}}, got {type(variables).__name__}."
        )
    for collection, tree in variables.items():
        if not isinstance(tree, Mapping):
            raise BridgeTypeError(
                f"apply(variables=...): variables[{collection!r}] is a "
                f"{type(tree).__name__}, not a dict. Did you pass variables['params'] instead "
                f"of the whole dict?\nFix: model.apply({{'params': params}}, x)."
            )


def apply(
    module: Any,
    variables: Mapping[str, Any],
    args: tuple,
    kwargs: dict,
    rngs: Any,
    method: Any,
    mutable: Any,
) -> Any:
    _check_variables(variables)
    collections = _collections(mutable, "mutable")
    user_rngs = to_rngs(rngs)
    binding = ctx.Binding(None, variables, collections, _construction_rngs(user_rngs))
    with ctx.isolated(user_rngs), ctx.bound(binding):
        root = fresh_clone(module)
        binding.root = root
        _tree.bind(binding, root, dict(variables), ())
        out = resolve_method(root, method)(*args, **kwargs)
    writes = binding.immutable_writes()
    if writes:
        collection, where = writes[0]
        raise MutableCollectionError(
            _IMMUTABLE.format(mutable=mutable, where=where, collection=collection)
        )
    if collections is False:
        return out
    exported = _tree.export(root)
    names = set(variables) | set(exported) if collections is True else collections
    updates = {
        c: _merge(variables.get(c), exported.get(c))
        for c in sorted(names)
        if c in variables or c in exported
    }
    if collections is not True:
        for collection in sorted(collections):
            if collection not in updates:
                raise MutableCollectionError(
                    _NEVER.format(
                        mutable=mutable,
                        collection=collection,
                        have=sorted(exported) or "none",
                    )
                )
    return out, updates
