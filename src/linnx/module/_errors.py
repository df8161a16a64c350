"""The errors specific to Linen-style modules.

Both derive from :class:`linnx.LinnxError` (and from the builtin a Python user would expect), so
``except linnx.LinnxError`` catches them with the rest of the family. :class:`NameInUseError`
stands in for Linen's error of the same name, so it is also a ``flax.errors.NameInUseError``:
code ported from Linen keeps its ``except`` clauses.
"""

from __future__ import annotations

import flax.errors

from .._errors import LinnxError
from .._public import public

__all__ = ["NameInUseError", "ModuleDefinitionError"]


@public("linnx.module")
class NameInUseError(LinnxError, flax.errors.NameInUseError, ValueError):
    """Two submodules or variables of one module claim the same name.

    Example:
        >>> import jax.numpy as jnp
        >>> import linnx.module as lm
        >>> class Twice(lm.Module):
        ...     @lm.compact
        ...     def __call__(self, x):
        ...         x = lm.nn.Dense(3, name='proj')(x)
        ...         return lm.nn.Dense(3, name='proj')(x)
        >>> try:
        ...     Twice().init(0, jnp.ones((1, 2)))
        ... except lm.NameInUseError as e:
        ...     print(str(e).splitlines()[0])
        Twice: the name 'proj' is used twice in one call of a compact method.
    """

    # Linen's error builds its message from (key_type, value, module_name); linnx passes the
    # message it wrote.
    def __init__(self, *args: object) -> None:
        Exception.__init__(self, *args)


@public("linnx.module")
class ModuleDefinitionError(LinnxError, TypeError):
    """A ``linnx.Module`` is defined or used in a way the Linen-style API does not allow.

    Example:
        >>> import linnx.module as lm
        >>> try:
        ...     class TwoCompact(lm.Module):
        ...         @lm.compact
        ...         def encode(self, x): return x
        ...         @lm.compact
        ...         def decode(self, x): return x
        ... except lm.ModuleDefinitionError as e:
        ...     print(str(e).splitlines()[0])
        TwoCompact has 2 compact methods (decode, encode); a module may have at most one.
    """
