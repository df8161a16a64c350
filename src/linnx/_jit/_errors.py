"""The errors and the warning of :func:`linnx.jit`.

Errors derive from :class:`linnx.LinnxError` and from the builtin a ``jax.jit`` user would
expect (``TypeError`` for a wrong kind of function, ``ValueError`` for bad argument numbers or
names). The warning says, once per decorated function, that ``linnx.jit`` hands every call to
``nnx.jit`` because the fast path cannot express the step.
"""

from __future__ import annotations

from .._errors import LinnxError
from .._public import public

__all__ = ["JitTypeError", "JitArgumentError", "JitFallbackWarning"]


@public("linnx")
class JitTypeError(LinnxError, TypeError):
    """:func:`linnx.jit` was given something it cannot compile: not a function, or a bound method.

    Example:
        >>> import linnx
        >>> try:
        ...     linnx.jit(42)
        ... except linnx.JitTypeError as e:
        ...     print(str(e).splitlines()[0])
        linnx.jit(fun=42) expects a function, got int.
    """


@public("linnx")
class JitArgumentError(LinnxError, ValueError):
    """The static or donated arguments (``static_argnums``...) do not fit the function or call.

    Example:
        >>> import linnx
        >>> def step(model, x):
        ...     return x
        >>> try:
        ...     linnx.jit(step, static_argnames='y')
        ... except linnx.JitArgumentError as e:
        ...     print(str(e).splitlines()[0])
        linnx.jit(step, static_argnames='y'): step has no parameter named 'y'.
    """


@public("linnx")
class JitFallbackWarning(UserWarning):
    """:func:`linnx.jit` runs a step through ``nnx.jit`` from now on, and says why.

    Raised as a warning once per decorated function, the first time its fast path meets a
    step it cannot express (an NNX object inside a container argument, an NNX object returned,
    a step that changes the module's structure on every call, ...). Results stay those of
    ``nnx.jit``; only the speed is lost. The message names the reason, where it was found and
    how to get the fast path back.

    Example:
        >>> import warnings
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> import linnx
        >>> @linnx.jit
        ... def total(layers, x):
        ...     return sum(layer(x).sum() for layer in layers)
        >>> layers = [nnx.Linear(2, 2, rngs=nnx.Rngs(0)) for _ in range(2)]
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     _ = total(layers, jnp.ones((1, 2)))
        >>> print(str(caught[0].message).split(". ")[0])
        linnx.jit(total): argument 'layers' is a list holding NNX objects
    """


# The classes show their public module, which doctest's finder skips: list them here.
__test__ = {c.__name__: c for c in (JitTypeError, JitArgumentError, JitFallbackWarning)}
