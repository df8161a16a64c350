"""``linnx.jit``: ``nnx.jit``'s semantics for NNX train steps, at the speed of ``jax.jit``.

Per call, ``nnx.jit`` walks the module graph of its arguments in Python, builds ``nnx.State``
trees of variables for JAX to flatten node by node, and walks the graph again to apply the
updates. ``linnx.jit`` walks the graph once per structure (:mod:`._entry`), checks on later
calls that nothing changed with identity and dict comparisons (:mod:`._snapshot`), hands
``jax.jit`` the variables' values as flat lists (flattened by JAX's C++ code), and writes
the changed values straight back into the same variable objects (:mod:`._variables`).

Whatever the fast path cannot express goes to ``nnx.jit`` with the same options:

* a call under another JAX trace, or a step that changes its arguments' structure once (a
  lazily created variable, a first ``sow``): that call alone, silently, since the results
  are ``nnx.jit``'s by construction;
* a step that changes the structure on two calls in a row, returns NNX objects, or takes
  NNX objects inside containers (and the other cases of :class:`~._snapshot.Unsupported`):
  every later call, announced once with a :class:`~._errors.JitFallbackWarning`.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, ParamSpec, TypeVar, cast, overload

from flax import nnx

from .._public import public
from ._argspec import ArgSpec, resolve
from ._entry import Entry, build, is_nnx_object
from ._errors import JitFallbackWarning, JitTypeError
from ._program import StructureChanged
from ._snapshot import Unsupported

__all__ = ["jit", "JitWrapped"]

P = ParamSpec("P")
R = TypeVar("R")


@public("linnx")
class JitWrapped(Generic[P, R]):
    """A step compiled by :func:`linnx.jit`; call it like the function it wraps.

    Attributes:
        fallback_reason: why every call now runs through ``nnx.jit``, or None while the
            fast path serves the step (see :class:`linnx.JitFallbackWarning`).
        nnx_jit_calls: how many calls ran through ``nnx.jit`` instead of the fast path.

    Example:
        >>> import jax.numpy as jnp
        >>> import linnx
        >>> from flax import nnx
        >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> step = linnx.jit(lambda model, x: model(x))
        >>> y = step(model, jnp.ones((1, 2)))
        >>> step.fallback_reason is None, step.nnx_jit_calls
        (True, 0)
    """

    def __init__(
        self, fun: Callable[P, R], spec: ArgSpec, label: str, options: dict[str, Any]
    ) -> None:
        functools.update_wrapper(self, fun)
        self.fun = fun
        self._spec = spec
        self._label = label
        self._options = options
        try:
            self._params = [
                p.name
                for p in inspect.signature(fun).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
        except (TypeError, ValueError):
            self._params = []
        self._entry: Entry | None = None
        self._programs: dict[Any, Callable[..., Any]] = {}
        self._nnx_jitted: Callable[..., Any] | None = None
        self._changed_last = False
        #: Why every call goes to ``nnx.jit``, once the fast path has given up (else None).
        self.fallback_reason: str | None = None
        #: How many calls ran through ``nnx.jit`` instead of the fast path.
        self.nnx_jit_calls = 0

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        entry = self._entry
        if entry is None or not entry.matches(args, kwargs):
            if self.fallback_reason is not None:
                return self._nnx(*args, **kwargs)
            try:
                entry = build(
                    args, kwargs, self._spec, self._label, self._params, self._programs, self.fun
                )
            except Unsupported as why:
                return self._give_up(why, args, kwargs)
            self._entry = entry
            if entry is None:
                return self._nnx(*args, **kwargs)
        try:
            out = entry.call(args, kwargs)
        except StructureChanged as change:
            return self._structure_changed(change, args, kwargs)
        except Unsupported as why:
            return self._give_up(why, args, kwargs)
        self._changed_last = False
        return out

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        # As a method decorator: bind the instance as the first argument (like nnx.jit).
        if obj is None:
            return self
        return functools.partial(self, obj)

    # -- the way to nnx.jit -----------------------------------------------------------------

    def _nnx(self, *args: Any, **kwargs: Any) -> Any:
        self.nnx_jit_calls += 1
        if self._nnx_jitted is None:
            self._nnx_jitted = nnx.jit(self.fun, graph=True, graph_updates=True, **self._options)
        return self._nnx_jitted(*args, **kwargs)

    def _structure_changed(self, change: StructureChanged, args: tuple, kwargs: dict) -> Any:
        self._entry = None
        if self._changed_last:
            return self._give_up(
                Unsupported(
                    f"the step changes the structure of its NNX arguments on every call "
                    f"({change.what})",
                    "create variables and submodules before the first step (or pop sown values "
                    "inside the step, e.g. with nnx.pop or nnx.capture)",
                ),
                args,
                kwargs,
                depth=1,
            )
        # Once (a lazily created variable, a first sow): nnx.jit carries the new structure
        # back, and the next call builds an entry for it.
        self._changed_last = True
        return self._nnx(*args, **kwargs)

    def _give_up(self, why: Unsupported, args: tuple, kwargs: dict, depth: int = 0) -> Any:
        self._entry = None
        self.fallback_reason = why.reason
        warnings.warn(
            f"linnx.jit({self._label}): {why.reason}. This and every later call run through "
            f"nnx.jit (same results, without the fast path).\nFix: {why.fix}.",
            JitFallbackWarning,
            stacklevel=3 + depth,  # the caller's line
        )
        return self._nnx(*args, **kwargs)


def _is_bound_nnx_method(fun: Any) -> bool:
    return inspect.ismethod(fun) and is_nnx_object(fun.__self__)


@overload
def jit(
    fun: Callable[P, R],
    *,
    static_argnums: int | Sequence[int] | None = None,
    static_argnames: str | Iterable[str] | None = None,
    donate_argnums: int | Sequence[int] | None = None,
    donate_argnames: str | Iterable[str] | None = None,
) -> JitWrapped[P, R]: ...
@overload
def jit(
    fun: None = None,
    *,
    static_argnums: int | Sequence[int] | None = None,
    static_argnames: str | Iterable[str] | None = None,
    donate_argnums: int | Sequence[int] | None = None,
    donate_argnames: str | Iterable[str] | None = None,
) -> Callable[[Callable[P, R]], JitWrapped[P, R]]: ...
@public("linnx")
def jit(
    fun: Callable[P, R] | None = None,
    *,
    static_argnums: int | Sequence[int] | None = None,
    static_argnames: str | Iterable[str] | None = None,
    donate_argnums: int | Sequence[int] | None = None,
    donate_argnames: str | Iterable[str] | None = None,
) -> JitWrapped[P, R] | Callable[[Callable[P, R]], JitWrapped[P, R]]:
    """Compiles an NNX step like ``nnx.jit``, without ``nnx.jit``'s per-call graph walk.

    Use it where ``nnx.jit`` would go: on a train or eval step whose arguments include NNX
    modules (native, :class:`linnx.ToNNX`, :class:`linnx.Module`), an ``nnx.Optimizer``,
    ``nnx.Rngs`` or metrics, and arrays. The semantics are ``nnx.jit``'s: the step runs on
    the arguments' state inside one compiled program; what it updates (parameters, optimizer
    state, BatchNorm statistics, rng counts, sown values) is on the same Python objects
    afterwards; its outputs are returned. The first call with given objects walks their
    graph once; later calls check cheaply that they are the same objects with the same
    structure, then pass only arrays through ``jax.jit``.

    A call the fast path cannot express runs through ``nnx.jit`` instead, with the same
    options: silently for a one-off (a call inside another JAX trace, a step that creates a
    variable on its first call), and with one :class:`linnx.JitFallbackWarning` naming the
    reason when it gives up for good (NNX objects inside a container argument or in the
    output, a step that changes the structure on every call, ...). Its results are never
    different from ``nnx.jit``'s.

    Args:
        fun: the step. Omit it to use ``linnx.jit(...)`` as a decorator with options.
        static_argnums: positions of arguments that are compile-time constants (hashable).
        static_argnames: names of such arguments.
        donate_argnums: positions of arguments whose buffers the step may reuse: for an
            NNX argument, the buffers of all its variables (which hold the new values
            afterwards), as with ``nnx.jit``.
        donate_argnames: names of such arguments.

    Returns:
        The compiled step (or, without ``fun``, a decorator that makes one).

    Raises:
        JitTypeError: ``fun`` is not callable, or is a method bound to an NNX object.
        JitArgumentError: the static or donated arguments do not fit ``fun`` (at
            decoration), or an NNX object is passed as a static argument (at the call).

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import linnx
        >>> from flax import nnx
        >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        >>> optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
        >>> @linnx.jit
        ... def train_step(model, optimizer, x, y):
        ...     def loss_fn(model):
        ...         return jnp.mean((model(x) - y) ** 2)
        ...     loss, grads = nnx.value_and_grad(loss_fn)(model)
        ...     optimizer.update(model, grads)
        ...     return loss
        >>> x, y = jnp.ones((4, 2)), jnp.zeros((4, 1))
        >>> first = train_step(model, optimizer, x, y)
        >>> second = train_step(model, optimizer, x, y)
        >>> bool(second < first), int(optimizer.step[...])
        (True, 2)
    """
    options = dict(
        static_argnums=static_argnums,
        static_argnames=static_argnames,
        donate_argnums=donate_argnums,
        donate_argnames=donate_argnames,
    )
    if fun is None:
        return functools.partial(jit, **options)  # type: ignore[return-value]
    if not callable(fun):
        raise JitTypeError(
            f"linnx.jit(fun={fun!r:.60}) expects a function, got {type(fun).__name__}.\n"
            f"Fix: decorate the step function (@linnx.jit) or pass it: linnx.jit(train_step)."
        )
    label = getattr(fun, "__name__", type(fun).__name__)
    if _is_bound_nnx_method(fun):
        owner = type(cast(Any, fun).__self__).__name__
        raise JitTypeError(
            f"linnx.jit({owner}.{label}): a method bound to an NNX object would compile the "
            f"object in as a constant, and its updates would be lost.\n"
            f"Fix: pass the object as an argument: linnx.jit({owner}.{label})(obj, ...), or "
            f"decorate the method in the class body."
        )
    spec = resolve(fun, label, **options)
    return JitWrapped(fun, spec, label, {k: v for k, v in options.items() if v is not None})


# Public objects show their public module, which doctest's finder skips: list them here.
__test__ = {"jit": jit, "JitWrapped": JitWrapped}
