"""``linnx.functional``: an NNX module class seen as two pure functions, ``init`` and ``apply``.

For code built around ``jax.jit``/``jax.grad`` and explicit state (a Linen-era training loop,
``optax`` on raw pytrees), this gives an NNX module the shape of a Linen module:
``state = f.init(rngs=...)`` then ``out, new_state = f.apply(state)(x)``. It is a thin layer
over ``nnx.split``/``nnx.merge``: ``init`` builds the module once and keeps its ``GraphDef``
(the static structure); ``apply`` merges the given state into a new module, runs it and splits
it again, so nothing outside the call changes and the function can be traced.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Final, Generic, TypeVar

import jax
from flax import linen as nn
from flax import nnx

from .._errors import (
    BridgeTypeError,
    NotInitializedError,
    StructureMismatchError,
    UnknownMethodError,
)
from .._keypath import path_str
from .._public import public
from ..bridge._to_nnx import lazy_init

__all__ = ["Functional", "functional"]

M = TypeVar("M", bound=nnx.Module)

_NOT_INITIALIZED: Final = (
    "functional({cls}).apply(...) was called before init: there is no GraphDef to merge the "
    "state into.\nFix: state = f.init(rngs=nnx.Rngs(0)) first (with sample inputs for a "
    "module that infers shapes: f.init(x, rngs=nnx.Rngs(0)))."
)


def _check_constructor(module_type: type[Any], args: tuple, kwargs: dict[str, Any]) -> None:
    """Refuses arguments that do not fit ``module_type``, naming its signature."""
    try:
        signature = inspect.signature(module_type.__init__)
    except (TypeError, ValueError):
        return
    # A linnx.Module's metaclass takes `rngs`/`name`/`parent` itself.
    popped = getattr(module_type, "_linnx_pops", ())
    try:
        signature.bind(None, *args, **{k: v for k, v in kwargs.items() if k not in popped})
    except TypeError as e:
        name = module_type.__name__
        shown = {k: v for k, v in kwargs.items() if k != "rngs"}
        raise BridgeTypeError(
            f"functional({name})(*{args!r}, **{shown!r}): these arguments do not fit "
            f"{name}.__init__: {e}.\nFix: pass {name}'s constructor arguments, e.g. "
            f"functional({name})(3, 4) for {name}(3, 4, rngs=...); `rngs` goes to init()."
        ) from None


def _flat_paths(tree: Any) -> set[str]:
    flat = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )[0]
    return {path_str(p) for p, _ in flat}


def _accepts_rngs(module_type: type[Any]) -> bool:
    if "rngs" in getattr(module_type, "_linnx_pops", ()):
        return True
    try:
        params = inspect.signature(module_type.__init__).parameters
    except (TypeError, ValueError):
        return True
    return "rngs" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


@public("linnx.module")
class Functional(Generic[M]):
    """An NNX module class with its constructor arguments, used through pure functions.

    Made by :func:`functional`; see there.

    Attributes:
        module_type: the NNX module class.
        args: its positional constructor arguments.
        kwargs: its keyword constructor arguments.
        graphdef: the module's ``nnx.GraphDef``, set by :meth:`init`.

    Example:
        >>> import linnx.module as lm
        >>> from flax import nnx
        >>> f = lm.functional(nnx.Linear)(3, 4)
        >>> f.module_type.__name__, f.args, f.graphdef is None
        ('Linear', (3, 4), True)
    """

    def __init__(self, module_type: type[M], args: tuple, kwargs: dict[str, Any]):
        self.module_type = module_type
        self.args = args
        self.kwargs = kwargs
        self.graphdef: nnx.GraphDef[M] | None = None
        self._paths: set[str] = set()  # the variable paths of the state init returned

    def __repr__(self) -> str:
        return f"functional({self.module_type.__name__})(*{self.args!r}, **{self.kwargs!r})"

    def init(self, *sample_args: Any, rngs: Any = None, **sample_kwargs: Any) -> nnx.State:
        """Builds the module and returns its state; the structure is kept for :meth:`apply`.

        Args:
            *sample_args: sample inputs, for modules that create their variables lazily
                (``linnx.Module``, ``linnx.ToNNX``); they run one ``linnx.lazy_init`` pass.
            rngs: passed to the constructor as ``rngs=`` (an ``nnx.Rngs``, or a seed or key
                that is wrapped in one).
            **sample_kwargs: sample keyword inputs.

        Returns:
            The module's whole ``nnx.State`` (parameters and all other variables).

        Example:
            >>> import linnx.module as lm
            >>> from flax import nnx
            >>> state = lm.functional(nnx.Linear)(3, 4).init(rngs=nnx.Rngs(0))
            >>> state['kernel'].shape
            (3, 4)
        """
        kwargs = dict(self.kwargs)
        if rngs is not None:
            if not _accepts_rngs(self.module_type):
                raise BridgeTypeError(
                    f"functional({self.module_type.__name__}).init(rngs=...): "
                    f"{self.module_type.__name__} takes no `rngs` argument.\n"
                    f"Fix: call init() without rngs."
                )
            if not isinstance(rngs, nnx.Rngs | int | jax.Array) or isinstance(rngs, bool):
                raise BridgeTypeError(
                    f"functional({self.module_type.__name__}).init(rngs={rngs!r}): expected an "
                    f"nnx.Rngs, an int seed or a jax.random.key.\nFix: e.g. "
                    f"init(rngs=nnx.Rngs(0))."
                )
            kwargs["rngs"] = rngs if isinstance(rngs, nnx.Rngs) else nnx.Rngs(rngs)
        _check_constructor(self.module_type, self.args, kwargs)
        module = self.module_type(*self.args, **kwargs)
        if sample_args or sample_kwargs:
            lazy_init(module, *sample_args, **sample_kwargs)
        self.graphdef, state = nnx.split(module)
        self._paths = _flat_paths(state)
        return state

    def apply(
        self, *states: nnx.State, method: str | None = None
    ) -> Callable[..., tuple[Any, nnx.State]]:
        """Returns a pure function that runs the module on ``states``.

        Args:
            *states: the module's state, whole or split in parts (``nnx.split`` filters);
                together they must cover every variable.
            method: the method to run; ``__call__`` by default.

        Returns:
            ``call(*args, **kwargs) -> (output, new_state)``, where ``new_state`` is the whole
            state after the call (updated batch statistics, rng counts...).

        Raises:
            NotInitializedError: :meth:`init` has not run, so the structure is unknown.
            UnknownMethodError: ``method`` names no method of the module class.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> import linnx.module as lm
            >>> from flax import nnx
            >>> f = lm.functional(nnx.Linear)(3, 4)
            >>> params = f.init(rngs=nnx.Rngs(0))
            >>> loss = lambda p, x: f.apply(p)(x)[0].sum()
            >>> grads = jax.jit(jax.grad(loss))(params, jnp.ones((2, 3)))
            >>> grads['bias'][...]
            Array([2., 2., 2., 2.], dtype=float32)
        """
        if self.graphdef is None:
            raise NotInitializedError(_NOT_INITIALIZED.format(cls=self.module_type.__name__))
        if method is not None and not callable(getattr(self.module_type, method, None)):
            raise UnknownMethodError(
                f"method={method!r}: {self.module_type.__name__} has no method named {method!r}."
            )
        cls = self.module_type.__name__
        for i, state in enumerate(states):
            if not isinstance(state, Mapping):
                raise BridgeTypeError(
                    f"functional({cls}).apply(states[{i}]={state!r}): expected the nnx.State "
                    f"that init returned (or a part of it from nnx.split).\nFix: "
                    f"state = f.init(...); f.apply(state)(x)."
                )
        graphdef, expected = self.graphdef, self._paths

        def call(*args: Any, **kwargs: Any) -> tuple[Any, nnx.State]:
            try:
                module = nnx.merge(graphdef, *states)
            except (ValueError, KeyError, TypeError) as e:
                given = set().union(*(_flat_paths(s) for s in states))
                raise StructureMismatchError.from_paths(
                    f"The states given to functional({cls}).apply",
                    missing=sorted(expected - given),
                    unexpected=sorted(given - expected),
                    fix="pass the state that init returned, whole or split with nnx.split "
                    "into parts that together cover every variable.",
                ) from e
            fn = module if method is None else getattr(module, method)
            out = fn(*args, **kwargs)
            return out, nnx.state(module)

        return call


@public("linnx.module")
def functional(module_type: type[M]) -> Callable[..., Functional[M]]:
    """Turns an NNX module class into Linen-like pure ``init``/``apply`` functions.

    ``functional(Cls)(*args, **kwargs)`` records the constructor arguments;
    ``.init(rngs=...)`` builds the module and returns its state; ``.apply(*states)(*inputs)``
    runs it purely and returns ``(output, new_state)``. Use it where plain JAX transforms and
    explicit state are wanted (``jax.jit``, ``jax.grad``, ``optax`` on pytrees); elsewhere
    prefer the module itself with ``nnx.jit``/``nnx.grad``.

    Args:
        module_type: an ``nnx.Module`` subclass (``linnx.Module`` subclasses included).

    Returns:
        A function taking the constructor arguments and returning a :class:`Functional`.

    Raises:
        BridgeTypeError: ``module_type`` is not an NNX module class.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import linnx.module as lm
        >>> from flax import nnx
        >>> f = lm.functional(nnx.BatchNorm)(3)
        >>> state = f.init(rngs=nnx.Rngs(0))
        >>> y, new_state = f.apply(state)(jnp.arange(6.0).reshape(2, 3))
        >>> y.shape, new_state['mean'][...]
        ((2, 3), Array([0.015, 0.025, 0.035], dtype=float32))
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nnx.Module)):
        if isinstance(module_type, type) and issubclass(module_type, nn.Module):
            fix = (
                f"a Linen module is functional already ({module_type.__name__}(...).init / "
                f".apply); or wrap it: functional(linnx.ToNNX)({module_type.__name__}(...))."
            )
        elif isinstance(module_type, nnx.Module):
            name = type(module_type).__name__
            fix = (
                f"pass the class and its arguments, e.g. functional({name})(...); init() "
                f"builds the module."
            )
            module_type = f"<an instance of {name}>"
        else:
            fix = "pass the class, e.g. functional(nnx.Linear)(3, 4)."
        raise BridgeTypeError(
            f"functional(module_type={module_type!s}): expected an nnx.Module subclass.\nFix: {fix}"
        )

    def make(*args: Any, **kwargs: Any) -> Functional[M]:
        return Functional(module_type, args, kwargs)

    make.__name__ = make.__qualname__ = f"functional({module_type.__name__})"
    return make


# The public `__module__` hides the methods from doctest; run their examples anyway.
__test__ = {"Functional.init": Functional.init, "Functional.apply": Functional.apply}
