"""The exceptions linnx raises for bad input.

Every error linnx raises on purpose derives from :class:`LinnxError`, so callers can catch the
whole family with one clause. Each subclass also derives from the builtin exception a Python
user would expect (``TypeError`` for a wrong kind of argument, ``KeyError`` for an unknown
path...), so existing ``except`` clauses keep working. Where a linnx error replaces an error
that Flax or JAX would raise for the same mistake, it is also an instance of that error's type
(:func:`standing_in_for`): ``except flax.errors.ScopeParamNotFoundError`` still catches a call
of a ``ToNNX`` that was never initialized for that method. Messages say what is wrong, where
(the argument name or key path) and how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from flax import errors as flax_errors

__all__ = [
    "LinnxError",
    "BridgeTypeError",
    "NotInitializedError",
    "UnknownMethodError",
    "AmbiguousNameError",
    "MutableCollectionError",
    "RegistryConflictError",
    "RngStreamError",
    "ShardingRulesError",
    "StructureMismatchError",
    "standing_in_for",
]

E = TypeVar("E", bound="LinnxError")


class LinnxError(Exception):
    """Base class of every error that linnx raises for bad input.

    Example:
        >>> import linnx
        >>> try:
        ...     linnx.register_variable_name_type_pair('params', int)
        ... except linnx.LinnxError as e:
        ...     print(type(e).__name__)
        BridgeTypeError
    """


class BridgeTypeError(LinnxError, TypeError):
    """An argument has the wrong kind: a class where an instance is expected, or vice versa.

    Example:
        >>> import linnx
        >>> from flax import linen as nn
        >>> try:
        ...     linnx.ToNNX(nn.Dense)
        ... except linnx.BridgeTypeError as e:
        ...     print(str(e).splitlines()[0])
        ToNNX(module=...) expects a Linen module instance, got the class Dense.
    """


class NotInitializedError(LinnxError, RuntimeError):
    """A bridged module was used before its variables were created.

    Example:
        >>> import jax.numpy as jnp
        >>> import linnx
        >>> from flax import linen as nn, nnx
        >>> model = linnx.ToNNX(nn.Dense(4), rngs=nnx.Rngs(0))
        >>> try:
        ...     model(jnp.ones((1, 3)))
        ... except linnx.NotInitializedError as e:
        ...     print(str(e).splitlines()[0])
        ToNNX(Dense) has no variables yet: it was called before initialization.
    """


class UnknownMethodError(LinnxError, AttributeError):
    """A method name given to a bridged module does not exist on the wrapped module.

    Example:
        >>> import jax.numpy as jnp
        >>> import linnx
        >>> from flax import linen as nn, nnx
        >>> model = linnx.ToNNX(nn.Dense(4), rngs=nnx.Rngs(0)).lazy_init(jnp.ones((1, 3)))
        >>> try:
        ...     model(jnp.ones((1, 3)), method='encode')
        ... except linnx.UnknownMethodError as e:
        ...     print(str(e).splitlines()[0])
        method='encode': Dense has no method named 'encode'.
    """


class AmbiguousNameError(LinnxError, AttributeError):
    """An attribute name of a bridged module names several variables, so it picks none.

    Example:
        >>> import jax.numpy as jnp
        >>> import linnx
        >>> from flax import linen as nn, nnx
        >>> mlp = nn.Sequential([nn.Dense(3), nn.Dense(2)])
        >>> model = linnx.ToNNX(mlp, rngs=nnx.Rngs(0)).lazy_init(jnp.ones((1, 3)))
        >>> try:
        ...     model.kernel
        ... except linnx.LinnxError as e:
        ...     print(type(e).__name__)
        ...     print(str(e).splitlines()[0])
        AmbiguousNameError
        'kernel' is ambiguous on ToNNX(Sequential): it names params/layers_0/kernel, ...
    """


class MutableCollectionError(LinnxError, flax_errors.ModifyScopeVariableError, ValueError):
    """A collection passed as ``mutable`` is never written by the module, or may not change.

    Also a ``flax.errors.ModifyScopeVariableError``, which Linen raises for a write to a
    collection that is not mutable, so Linen code that catches that keeps working.

    Example:
        >>> import jax.numpy as jnp
        >>> import linnx
        >>> from flax import linen as nn, nnx
        >>> model = linnx.ToNNX(nn.Dense(4), rngs=nnx.Rngs(0)).lazy_init(jnp.ones((1, 3)))
        >>> try:
        ...     model(jnp.ones((1, 3)), mutable=['batch_stat'])
        ... except linnx.MutableCollectionError as e:
        ...     print(str(e).splitlines()[0])
        mutable=['batch_stat']: Dense never wrote the collection 'batch_stat' during this call.
    """

    def __init__(self, message: str) -> None:
        # Flax's __init__ takes (collection, name, scope path) and appends a docs link.
        Exception.__init__(self, message)

    def __reduce__(self) -> Any:
        return (type(self), (str(self),))


class RegistryConflictError(LinnxError, ValueError):
    """A registration conflicts with an existing entry of a registry.

    Example:
        >>> import linnx
        >>> from flax import nnx
        >>> try:
        ...     linnx.register_variable_name_type_pair('params', nnx.BatchStat)
        ... except linnx.RegistryConflictError as e:
        ...     print(str(e).splitlines()[0])
        Cannot register 'params' -> BatchStat: 'params' is already paired with Param.
    """


class RngStreamError(LinnxError, ValueError):
    """A random layer needs an rng stream that nobody provided.

    Example:
        >>> import jax.numpy as jnp
        >>> import linnx
        >>> from flax import linen as nn
        >>> model = linnx.ToNNX(nn.Dense(4))  # no rngs: nothing to draw the params from
        >>> try:
        ...     model.lazy_init(jnp.ones((1, 3)))
        ... except linnx.RngStreamError as e:
        ...     print(str(e).splitlines()[0])
        ToNNX(Dense) needs the rng stream 'params', but it has no rngs (rngs=None).
    """


class ShardingRulesError(LinnxError, ValueError):
    """Logical partitioning rules are not a sequence of ``(logical name, mesh axes)`` pairs.

    Example:
        >>> import jax.numpy as jnp
        >>> import linnx
        >>> from flax import linen as nn, nnx
        >>> init = nn.with_logical_partitioning(
        ...     nn.initializers.ones, ('out-alias',), rules=('out-alias', 'out'))
        >>> model = linnx.ToNNX(nn.Dense(4, bias_init=init), rngs=nnx.Rngs(0))
        >>> try:
        ...     model.lazy_init(jnp.ones((1, 3)))
        ... except linnx.ShardingRulesError as e:
        ...     print(str(e).split(', not')[0])
        params/bias: sharding rule 0 of ('out-alias', 'out') is 'out-alias'
    """


class StructureMismatchError(LinnxError, ValueError):
    """Two trees that must have the same structure do not.

    The message lists the key paths that are missing, unexpected, or of a different shape or
    dtype, instead of a bare inequality. The lists are also available as attributes.

    Attributes:
        missing: key paths expected but absent.
        unexpected: key paths present but not expected.
        mismatched: ``(path, expected, actual)`` triples for leaves that differ in kind.

    Example:
        >>> import linnx
        >>> e = linnx.StructureMismatchError.from_paths(
        ...     'variables', missing=['params/w'], unexpected=['params/W'],
        ...     fix='Rename params/W to params/w.')
        >>> print(e)
        variables do not match the expected structure:
          missing (1): params/w
          unexpected (1): params/W
        Fix: Rename params/W to params/w.
    """

    def __init__(
        self,
        message: str,
        *,
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        mismatched: Sequence[tuple[str, str, str]] = (),
    ):
        super().__init__(message)
        self.missing = tuple(missing)
        self.unexpected = tuple(unexpected)
        self.mismatched = tuple(mismatched)

    @classmethod
    def from_paths(
        cls,
        what: str,
        *,
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
        mismatched: Iterable[tuple[str, str, str]] = (),
        fix: str,
    ) -> StructureMismatchError:
        """Builds the error with a message that lists every path, grouped by kind."""
        missing, unexpected, mismatched = list(missing), list(unexpected), list(mismatched)
        lines = [f"{what} do not match the expected structure:"]
        if missing:
            lines.append(f"  missing ({len(missing)}): " + ", ".join(missing))
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): " + ", ".join(unexpected))
        for path, expected, actual in mismatched:
            lines.append(f"  mismatched at {path}: expected {expected}, got {actual}")
        lines.append(f"Fix: {fix}")
        return cls("\n".join(lines), missing=missing, unexpected=unexpected, mismatched=mismatched)


_STAND_INS: dict[tuple[type, type], type] = {}


def standing_in_for(error_class: type[E], replaced: type[BaseException]) -> type[E]:
    """``error_class``, made also an instance of ``replaced``: the error it stands in for.

    linnx replaces some Flax and builtin errors with its own, clearer ones; callers that
    catch the original (``except flax.errors.ScopeParamNotFoundError``, ``except KeyError``)
    must still catch them. The returned class is a subclass of both with the name of
    ``error_class``, built once per pair; where ``error_class`` already is a ``replaced``,
    it is returned as it is.

    Example:
        >>> import flax
        >>> import linnx
        >>> from linnx._errors import standing_in_for
        >>> cls = standing_in_for(linnx.NotInitializedError, flax.errors.ScopeParamNotFoundError)
        >>> try:
        ...     raise cls('call lazy_init first')
        ... except flax.errors.ScopeParamNotFoundError as e:
        ...     print(type(e).__name__, isinstance(e, linnx.NotInitializedError), e)
        NotInitializedError True call lazy_init first
    """
    if issubclass(error_class, replaced):
        return error_class
    cls = _STAND_INS.get((error_class, replaced))
    if cls is None:
        original_init = error_class.__init__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            # Not `replaced.__init__`: Flax errors take other arguments and add a docs link.
            original_init(self, *args, **kwargs)

        cls = type(
            error_class.__name__,
            (error_class, replaced),
            {
                "__init__": __init__,
                # The message as linnx wrote it (a KeyError would print it quoted, as a key).
                "__str__": error_class.__str__,
                "__module__": error_class.__module__,
                "__qualname__": error_class.__qualname__,
                "__doc__": error_class.__doc__,
            },
        )
        _STAND_INS[(error_class, replaced)] = cls
    return cls
