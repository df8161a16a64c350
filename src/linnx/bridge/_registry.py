"""The registry that pairs Linen collection names with NNX variable types.

Linen groups variables into named collections (``'params'``, ``'batch_stats'``...); NNX groups
them by ``nnx.Variable`` subclass. Crossing the bridge needs a one-to-one map between the two.

Policy (read this before changing anything here):

* **Keys.** A pair is ``(collection name, variable type)``. Lookups go both ways:
  :func:`variable_type_from_name` and :func:`variable_name_from_type`. Lookup by type is exact
  (no MRO walk): ``class MyParam(nnx.Param)`` is its own type, so a round trip through Linen
  gives back ``MyParam`` and not ``Param``.
* **Built-ins.** Every collection that Flax itself writes is registered at import time.
* **Explicit registration** (:func:`register_variable_name_type_pair`) refuses to change an
  existing pair unless ``overwrite=True``.
* **Implicit pairs.** A Linen collection with no registered type gets a new ``nnx.Variable``
  subclass named after it (``'counter'`` -> ``type(v).__name__ == 'counter'``), created once and
  reused. An NNX type with no registered name goes to the collection named after the class
  (``Count`` -> ``'Count'``), which is how Flax names ``LoRAParam`` and ``RngKey``. Both are
  recorded as *implicit*: a later explicit registration may replace them without
  ``overwrite=True``, and the implicit type still maps back to its collection so variables
  created before the registration keep their collection.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from flax import nnx

from .._errors import BridgeTypeError, RegistryConflictError

__all__ = [
    "register_variable_name_type_pair",
    "register_variable_name",
    "variable_type_from_name",
    "variable_name_from_type",
    "registered_pairs",
    "registered_name",
    "builtin_collections",
    "scoped",
]

V = TypeVar("V", bound=nnx.Variable)

_lock = threading.RLock()
_name_to_type: dict[str, type[nnx.Variable]] = {}
_type_to_name: dict[type[nnx.Variable], str] = {}
_implicit_names: set[str] = set()

_BUILTIN_PAIRS: tuple[tuple[str, type[nnx.Variable]], ...] = (
    ("params", nnx.Param),
    ("batch_stats", nnx.BatchStat),
    ("intermediates", nnx.Intermediate),
    ("cache", nnx.Cache),
    # Linen's `Module.perturb` writes to 'perturbations' (the name Flax's NNX registers too).
    ("perturbations", nnx.Perturbation),
    ("LoRAParam", nnx.LoRAParam),
    ("RngKey", nnx.RngKey),
    ("RngCount", nnx.RngCount),
    ("RngState", nnx.RngState),
    ("OptState", nnx.OptState),
)


_BAD_NAME = (
    "name={name!r}: a Linen collection name must be a non-empty string.\n"
    "Fix: pass the collection's name as Linen spells it, e.g. 'batch_stats'."
)


def _check_pair(name: object, typ: object) -> None:
    if not isinstance(name, str) or not name:
        raise BridgeTypeError(_BAD_NAME.format(name=name))
    if not (isinstance(typ, type) and issubclass(typ, nnx.Variable)):
        got = f"the class {typ.__name__}" if isinstance(typ, type) else repr(typ)
        raise BridgeTypeError(
            f"type={got}: expected a subclass of nnx.Variable.\n"
            f"Fix: define one, e.g. `class {name.capitalize()}(nnx.Variable): pass`, and "
            f"register it with register_variable_name_type_pair({name!r}, "
            f"{name.capitalize()})."
        )


def register_variable_name_type_pair(
    name: str, typ: type[nnx.Variable], overwrite: bool = False
) -> None:
    """Pairs a Linen collection name with an NNX variable type, in both directions.

    After registration, ``ToNNX`` turns the leaves of collection ``name`` into ``typ``
    variables, and ``ToLinen`` puts ``typ`` variables into collection ``name``.

    Args:
        name: the Linen collection name, e.g. ``'counts'``.
        typ: the ``nnx.Variable`` subclass, e.g. ``Count``.
        overwrite: replace an existing explicit pair for ``name`` or ``typ``. Without it a
            conflicting registration raises. Re-registering the same pair is always fine.

    Raises:
        RegistryConflictError: ``name`` or ``typ`` is already paired with something else
            and ``overwrite`` is False.
        BridgeTypeError: ``name`` is not a string or ``typ`` not an ``nnx.Variable`` class.

    Example:
        >>> import linnx
        >>> from flax import nnx
        >>> class Count(nnx.Variable): pass
        >>> linnx.register_variable_name_type_pair('counts', Count, overwrite=True)
        >>> linnx.variable_type_from_name('counts') is Count
        True
        >>> linnx.variable_name_from_type(Count)
        'counts'
    """
    _check_pair(name, typ)
    with _lock:
        old_type = _name_to_type.get(name)
        old_name = _type_to_name.get(typ)
        if old_type is typ and old_name == name:
            _implicit_names.discard(name)
            return
        if not overwrite:
            if old_type is not None and old_type is not typ and name not in _implicit_names:
                raise RegistryConflictError(
                    f"Cannot register {name!r} -> {typ.__name__}: {name!r} is already paired "
                    f"with {old_type.__name__}.\n"
                    f"Fix: pass overwrite=True to replace it, or pick another collection name."
                )
            if old_name is not None and old_name != name and old_name not in _implicit_names:
                raise RegistryConflictError(
                    f"Cannot register {name!r} -> {typ.__name__}: {typ.__name__} is already "
                    f"paired with the collection {old_name!r}.\n"
                    f"Fix: pass overwrite=True to move it, or register a subclass of "
                    f"{typ.__name__} under {name!r}."
                )
        if old_name is not None and old_name != name:
            # The type moves to the new collection; its old collection forgets it.
            if _name_to_type.get(old_name) is typ:
                del _name_to_type[old_name]
        _name_to_type[name] = typ
        _type_to_name[typ] = name
        _implicit_names.discard(name)


def register_variable_name(
    name: str, typ: type[V] | None = None, *, overwrite: bool = False
) -> type[V] | Callable[[type[V]], type[V]]:
    """:func:`register_variable_name_type_pair` under the name Flax's NNX uses today.

    As in Flax, it returns the type, and without ``typ`` it is a class decorator.

    Args:
        name: the Linen collection name.
        typ: the ``nnx.Variable`` subclass; omit it to decorate the class instead.
        overwrite: as for :func:`register_variable_name_type_pair`.

    Returns:
        ``typ``, or a decorator that registers the class it decorates and returns it.

    Raises:
        RegistryConflictError: as for :func:`register_variable_name_type_pair`.

    Example:
        >>> import linnx
        >>> from flax import nnx
        >>> @linnx.register_variable_name('temperatures', overwrite=True)
        ... class Temperature(nnx.Variable): pass
        >>> linnx.variable_type_from_name('temperatures') is Temperature
        True
    """
    if typ is None:

        def decorator(cls: type[V]) -> type[V]:
            register_variable_name_type_pair(name, cls, overwrite=overwrite)
            return cls

        return decorator
    register_variable_name_type_pair(name, typ, overwrite=overwrite)
    return typ


def variable_type_from_name(name: str) -> type[nnx.Variable]:
    """Returns the NNX variable type of a Linen collection, creating one if none is registered.

    An unregistered collection gets a new ``nnx.Variable`` subclass with the collection's
    name, created once and returned on every later lookup.

    Args:
        name: the Linen collection name.

    Returns:
        The ``nnx.Variable`` subclass for ``name``.

    Example:
        >>> import linnx
        >>> from flax import nnx
        >>> linnx.variable_type_from_name('params') is nnx.Param
        True
        >>> t = linnx.variable_type_from_name('my_counter')
        >>> t.__name__, issubclass(t, nnx.Variable), t is linnx.variable_type_from_name(
        ...     'my_counter')
        ('my_counter', True, True)
    """
    # Validate before the lookup: an unhashable name (a list) would fail inside dict.get.
    if not isinstance(name, str) or not name:
        raise BridgeTypeError(_BAD_NAME.format(name=name))
    typ = _name_to_type.get(name)
    if typ is not None:
        return typ
    with _lock:
        typ = _name_to_type.get(name)
        if typ is None:
            typ = type(name, (nnx.Variable,), {"__module__": __name__})
            _name_to_type[name] = typ
            _type_to_name[typ] = name
            _implicit_names.add(name)
        return typ


def variable_name_from_type(typ: type[nnx.Variable]) -> str:
    """Returns the Linen collection name of an NNX variable type.

    An unregistered type goes to the collection named after the class, and that pair is
    recorded (implicitly) so the reverse lookup returns the same type.

    Args:
        typ: an ``nnx.Variable`` subclass.

    Returns:
        The collection name.

    Raises:
        RegistryConflictError: the class name is already the collection of another type;
            register ``typ`` explicitly under a free name.

    Example:
        >>> import linnx
        >>> from flax import nnx
        >>> linnx.variable_name_from_type(nnx.BatchStat)
        'batch_stats'
        >>> class Temperature(nnx.Variable): pass
        >>> linnx.variable_name_from_type(Temperature)
        'Temperature'
    """
    # An instance (`nnx.Param(x)`) is unhashable: check the kind before the dict lookup.
    if not isinstance(typ, type):
        _check_pair("variable", typ)
    name = _type_to_name.get(typ)
    if name is not None:
        return name
    _check_pair(getattr(typ, "__name__", "variable"), typ)
    with _lock:
        name = _type_to_name.get(typ)
        if name is not None:
            return name
        name = typ.__name__
        other = _name_to_type.get(name)
        if other is not None and other is not typ:
            raise RegistryConflictError(
                f"{typ.__module__}.{typ.__qualname__} has no registered collection, and its "
                f"class name {name!r} is already the collection of "
                f"{other.__module__}.{other.__qualname__}.\n"
                f"Fix: register it under a free name, e.g. "
                f"linnx.register_variable_name_type_pair('{name.lower()}_vars', {name})."
            )
        _name_to_type[name] = typ
        _type_to_name[typ] = name
        _implicit_names.add(name)
        return name


def registered_pairs() -> dict[str, type[nnx.Variable]]:
    """Returns a snapshot of every ``collection name -> variable type`` pair, implicit ones too.

    Example:
        >>> import linnx
        >>> from flax import nnx
        >>> linnx.registered_pairs()['batch_stats'] is nnx.BatchStat
        True
    """
    with _lock:
        return dict(_name_to_type)


def registered_name(typ: type) -> str | None:
    """The collection registered for ``typ`` (implicitly too), or None; registers nothing.

    :func:`variable_name_from_type` would pair an unknown type with its class name; a reader
    that only looks (the migration's model recording) must leave the registry as it was.

    Example:
        >>> from flax import nnx
        >>> from linnx.bridge._registry import registered_name
        >>> class Unseen(nnx.Variable): pass
        >>> registered_name(nnx.BatchStat), registered_name(Unseen)
        ('batch_stats', None)
    """
    with _lock:
        return _type_to_name.get(typ)


def builtin_collections() -> frozenset[str]:
    """The collections that Flax itself writes, registered at import and protected.

    Example:
        >>> from linnx.bridge._registry import builtin_collections
        >>> sorted({'params', 'batch_stats'} & builtin_collections())
        ['batch_stats', 'params']
    """
    return frozenset(name for name, _ in _BUILTIN_PAIRS)


@contextlib.contextmanager
def scoped() -> Iterator[None]:
    """Undoes, when the block ends, every pair registered inside it (explicit or implicit).

    For tests and for documents that register pairs of their own: the registry is global, and
    what one registers must not leak into the next.

    Example:
        >>> import linnx
        >>> from flax import nnx
        >>> from linnx.bridge._registry import scoped
        >>> class Ema(nnx.Variable): pass
        >>> with scoped():
        ...     _ = linnx.register_variable_name_type_pair('ema', Ema)
        ...     'ema' in linnx.registered_pairs()
        True
        >>> 'ema' in linnx.registered_pairs()
        False
    """
    with _lock:
        names, types, implicit = dict(_name_to_type), dict(_type_to_name), set(_implicit_names)
    try:
        yield
    finally:
        with _lock:
            _name_to_type.clear()
            _name_to_type.update(names)
            _type_to_name.clear()
            _type_to_name.update(types)
            _implicit_names.clear()
            _implicit_names.update(implicit)


for _name, _typ in _BUILTIN_PAIRS:
    register_variable_name_type_pair(_name, _typ)
del _name, _typ
