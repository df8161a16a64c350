"""``linnx.Module``: Linen's authoring API on a stateful NNX module.

The class itself is thin: construction and naming are in ``_construction.py``, per-call state
in ``_context.py``, the Linen variables dict in ``_tree.py`` and ``init``/``apply`` in
``_linen_api.py``. What is here is the surface a Linen module author uses: ``param``,
``variable``, ``make_rng``, ``sow``, ``setup``... and how attribute assignment attaches
submodules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

import jax
from flax import linen as nn
from flax import nnx

from .._errors import BridgeTypeError, RngStreamError, StructureMismatchError
from .._public import public
from ..bridge._registry import variable_name_from_type, variable_type_from_name
from ..bridge._to_nnx import ToNNX
from ..bridge._to_nnx import lazy_init as _lazy_init
from . import _context as ctx
from . import _linen_api, _tree
from ._construction import (
    _TAKEN,
    ModuleMeta,
    _describe,
    _has_data,
    _set,
    adopt,
    build_submodule,
    declare,
    prepare_class,
    require_creation,
)
from ._errors import NameInUseError

__all__ = ["Module"]

M = TypeVar("M", bound="Module")

_NO_RNGS: Final = (
    "{path}.make_rng({name!r}): no rngs are available to this module.\n"
    "Fix: give the top module its streams, e.g. Model(..., rngs=nnx.Rngs(0)) (a default "
    "stream serves every name), call the submodule through its parent (whose rngs it "
    "uses), or pass rngs to init/apply: model.apply(variables, x, rngs={{'dropout': key}})."
)
_NO_STREAM: Final = (
    "{path}.make_rng({name!r}): there is no {name!r} stream (nor 'params' or 'default' to "
    "fall back to). Streams available: {have}.\n"
    "Fix: add it, e.g. nnx.Rngs(params=0, {name}=1), or "
    "model.apply(variables, x, rngs={{{name!r}: jax.random.key(1)}})."
)


def _tuple_init() -> tuple:
    return ()


def _tuple_reduce(xs: tuple, x: Any) -> tuple:
    return (*xs, x)


@public("linnx.module")
class Module(nnx.Module, metaclass=ModuleMeta):
    """An NNX module written like a Linen module.

    Subclass it as you would ``nn.Module``: fields are dataclass fields, ``@compact``
    methods create submodules and variables inline (auto-named ``Dense_0``, ``Dense_1``...),
    ``setup()`` creates them eagerly, ``self.param``/``self.variable``/``self.make_rng``/
    ``self.sow`` work as in Linen. Two ways to use the result:

    * **Linen style**: ``variables = model.init(key, x)`` and ``model.apply(variables, x,
      rngs=..., mutable=...)``, pure functions of the variables dict Linen would produce.
    * **NNX style**: build with ``rngs=nnx.Rngs(0)``, create the variables once with
      ``linnx.lazy_init(model, x)``, then ``model(x)``, ``nnx.jit``, ``nnx.split``,
      ``nnx.Optimizer``... as with any NNX module. Variables are attributes:
      ``model.Dense_0.kernel`` is an ``nnx.Param``.

    Every subclass also accepts the keyword arguments ``name=`` (its attribute name in the
    parent), ``parent=None`` (belong to no parent until assigned to an attribute) and
    ``rngs=`` (the ``nnx.Rngs`` its subtree draws from; a submodule without its own uses its
    parent's while the parent runs).

    NNX layers and Linen modules are children too: assign them in ``setup`` (a Linen module
    is wrapped in :class:`linnx.ToNNX`), or create them in a compact method with
    :meth:`submodule`. The Linen-style layers of ``linnx.module.nn`` need no input size.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import linnx
        >>> import linnx.module as lm
        >>> from flax import nnx
        >>> class Block(lm.Module):
        ...     features: int
        ...     @lm.compact
        ...     def __call__(self, x):
        ...         return jax.nn.relu(lm.nn.Dense(self.features)(x))
        >>> x = jnp.ones((1, 3))
        >>> variables = Block(4).init(jax.random.key(0), x)
        >>> variables['params']['Dense_0']['kernel'].shape
        (3, 4)
        >>> Block(4).apply(variables, x).shape
        (1, 4)
        >>> model = linnx.lazy_init(Block(4, rngs=nnx.Rngs(0)), x)
        >>> type(model.Dense_0.kernel).__name__, model(x).shape
        ('Param', (1, 4))
    """

    _linnx_is_module = True
    _linnx_dataclass = False
    _linnx_field_names: frozenset[str] = frozenset()
    _linnx_pops: frozenset[str] = frozenset({"parent", "name", "rngs"})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        prepare_class(cls, Module)

    def setup(self) -> None:
        """Creates submodules and variables eagerly; override it as in Linen.

        It runs once, in the creation pass, before the first method call (or attribute
        lookup) that needs it. Submodules assigned here are named after their attribute.

        Example:
            >>> import jax.numpy as jnp
            >>> import linnx
            >>> import linnx.module as lm
            >>> from flax import nnx
            >>> class AutoEncoder(lm.Module):
            ...     def setup(self):
            ...         self.encoder = lm.nn.Dense(2)
            ...         self.decoder = lm.nn.Dense(3)
            ...     def __call__(self, x):
            ...         return self.decoder(self.encoder(x))
            >>> model = linnx.lazy_init(AutoEncoder(rngs=nnx.Rngs(0)), jnp.ones((1, 3)))
            >>> model.encoder.kernel.shape
            (3, 2)
        """

    # -- attributes -------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: `rngs` of a module without its own, and
        # attributes that setup() creates, when setup may still run.
        if name.startswith("_"):
            raise AttributeError(name)
        if name == "rngs":
            return ctx.construction_rngs()
        pending_setup = type(self).setup is not Module.setup and not vars(self).get(
            "_linnx_setup_done"
        )
        if pending_setup and ctx.mode() != "call":
            with ctx.entering(self, ctx.METHOD):
                self._linnx_ensure_setup()
            if name in vars(self):
                return vars(self)[name]
        hint = (
            " It may be created by setup(), which runs in the creation pass: "
            "linnx.lazy_init(model, x)."
            if pending_setup
            else ""
        )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}.{hint}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith(_tree._SKIPPED_PREFIXES) or name == "__captures__":
            super().__setattr__(name, value)
            return
        value = self._linnx_prepare(value)
        super().__setattr__(name, value)
        stored = vars(self)[name]
        adopt(self, name, stored)
        binding = ctx.binding()
        if binding is not None:
            _tree.bind_attribute(binding, self, name, stored)

    def _linnx_child_rngs(self) -> nnx.Rngs | None:
        own = vars(self).get("rngs")
        return own if isinstance(own, nnx.Rngs) else ctx.construction_rngs()

    def _linnx_wrap_linen(self, module: nn.Module) -> ToNNX:
        # A fork, so that no two modules hold the same Rngs object (NNX tree mode refuses
        # shared references).
        rngs = self._linnx_child_rngs()
        return ToNNX(module, rngs=rngs.fork() if rngs is not None else None)

    def _linnx_prepare(self, value: Any) -> Any:
        """Wraps Linen modules, keeps declared variables, marks containers of data as data."""
        if isinstance(value, nn.Module):
            return self._linnx_wrap_linen(value)
        if isinstance(value, jax.Array):
            for declared in vars(self).get("_linnx_declared", ()):
                var = vars(self).get(declared)
                if isinstance(var, nnx.Variable) and var.get_raw_value() is value:
                    # `self.w = self.param(...)` in setup: keep the variable, not its value.
                    return var
            return value
        if type(value) in (list, tuple):
            value = type(value)(
                self._linnx_wrap_linen(v) if isinstance(v, nn.Module) else v for v in value
            )
        elif type(value) is dict:
            value = {
                k: self._linnx_wrap_linen(v) if isinstance(v, nn.Module) else v
                for k, v in value.items()
            }
        else:
            return value
        return nnx.data(value) if _has_data(value) else value

    def _linnx_attach(self, child_name: str, child: Any) -> None:
        """Stores a child created by a compact method and, under ``apply``, fills it."""
        _set(self, child_name, child)
        binding = ctx.binding()
        if binding is not None:
            _tree.bind_attribute(binding, self, child_name, child)

    def _linnx_ensure_setup(self) -> None:
        if type(self).setup is Module.setup or vars(self).get("_linnx_setup_done"):
            return
        require_creation(self, "the submodules and variables of setup()")
        _set(self, "_linnx_setup_done", True)
        try:
            with ctx.entering(self, ctx.SETUP):
                self.setup()
        except BaseException:
            _set(self, "_linnx_setup_done", False)
            raise

    @property
    def variables(self) -> dict[str, Any]:
        """The current variables in Linen's layout: ``{collection: nested dict of arrays}``.

        Paths are relative to this module, as for a bound Linen module's ``variables``; the
        dict is what :meth:`init` returns and what :meth:`apply` (and Linen's ``apply`` on the
        original Linen model) accepts, so a model trained the NNX way can be handed back to
        Linen code or saved as a Linen checkpoint. Rng state is left out.

        Example:
            >>> import jax.numpy as jnp
            >>> import linnx.module as lm
            >>> from flax import nnx
            >>> model = lm.nn.Dense(2, rngs=nnx.Rngs(0)).lazy_init(jnp.ones((1, 3)))
            >>> {k: v.shape for k, v in model.variables['params'].items()}
            {'kernel': (3, 2), 'bias': (2,)}
        """
        return _tree.export(self)

    # -- the Linen API ----------------------------------------------------------------------

    def param(
        self,
        name: str,
        init_fn: Callable[..., Any],
        *init_args: Any,
        unbox: bool = True,
        **init_kwargs: Any,
    ) -> Any:
        """Declares a parameter and returns its value, as Linen's ``self.param``.

        The first time (in a creation pass) it calls ``init_fn(self.make_rng('params'),
        *init_args, **init_kwargs)`` and stores the result as an ``nnx.Param`` attribute
        ``name``; later it returns the stored value. Under :meth:`apply` the value comes from
        the variables dict, whose shape is checked against ``init_fn``'s.

        Args:
            name: the parameter's name (and attribute name).
            init_fn: an initializer ``init_fn(key, *init_args)``, e.g.
                ``nnx.initializers.lecun_normal()``; may return a Linen partitioned box.
            *init_args: passed on, typically the shape.
            unbox: accepted for compatibility with Linen; values are always returned unboxed.
            **init_kwargs: passed on.

        Returns:
            The parameter's current value.

        Raises:
            NotInitializedError: a plain call reached a parameter that does not exist yet.
            NameInUseError: ``name`` is already a submodule, another collection's variable
                or a method.
            StructureMismatchError: under ``apply``, the variables lack it or have another
                shape.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> import linnx.module as lm
            >>> from flax import nnx
            >>> class Scale(lm.Module):
            ...     @lm.compact
            ...     def __call__(self, x):
            ...         w = self.param('w', nnx.initializers.ones, (x.shape[-1],))
            ...         return x * w
            >>> Scale().init(jax.random.key(0), jnp.ones((2, 3)))['params']['w']
            Array([1., 1., 1.], dtype=float32)
        """
        del unbox

        def shape_of() -> Any:
            key = ctx.dummy_key()
            return jax.eval_shape(lambda k: init_fn(k, *init_args, **init_kwargs), key)

        var = declare(
            self,
            "params",
            name,
            lambda: init_fn(self.make_rng("params"), *init_args, **init_kwargs),
            shape_of=shape_of,
        )
        return var.get_value()

    def variable(
        self,
        col: str,
        name: str,
        init_fn: Callable[..., Any] | None = None,
        *init_args: Any,
        unbox: bool = True,
        **init_kwargs: Any,
    ) -> nnx.Variable:
        """Declares a variable of collection ``col``, as Linen's ``self.variable``.

        The variable's type is the one the registry pairs with ``col``
        (``'batch_stats'`` -> ``nnx.BatchStat``; an unregistered name gets a type of its own,
        see :func:`linnx.variable_type_from_name`). It is returned, so ``v[...]`` (or Linen's
        ``v.value``, which Flax 0.12 still accepts with a ``DeprecationWarning``) reads and
        writes it.

        Args:
            col: the Linen collection name.
            name: the variable's name (and attribute name).
            init_fn: called as ``init_fn(*init_args, **init_kwargs)`` to create it.
            *init_args: passed on.
            unbox: accepted for compatibility with Linen.
            **init_kwargs: passed on.

        Returns:
            The ``nnx.Variable``.

        Raises:
            NotInitializedError: the variable does not exist yet and cannot be created now.
            NameInUseError: ``name`` is already taken on this module.
            StructureMismatchError: under ``apply``, the variables lack it and ``col`` is not
                mutable.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> import linnx.module as lm
            >>> class Counter(lm.Module):
            ...     @lm.compact
            ...     def __call__(self):
            ...         count = self.variable('counter', 'count', jnp.zeros, (), jnp.int32)
            ...         count[...] += 1
            ...         return count[...]
            >>> variables = Counter().init(jax.random.key(0))
            >>> variables['counter']['count']
            Array(1, dtype=int32)
            >>> Counter().apply(variables, mutable=['counter'])[1]['counter']['count']
            Array(2, dtype=int32)
        """
        del unbox

        def make() -> Any:
            if init_fn is None:
                raise StructureMismatchError.from_paths(
                    "variables",
                    missing=[f"{col}/{name}"],
                    fix=f"pass an init_fn: self.variable({col!r}, {name!r}, init_fn, ...).",
                )
            return init_fn(*init_args, **init_kwargs)

        return declare(self, col, name, make)

    def has_variable(self, col: str, name: str) -> bool:
        """Whether the variable ``col/name`` exists on this module (or in ``apply``'s dict).

        Example:
            >>> import linnx.module as lm
            >>> lm.nn.Dense(3).has_variable('params', 'kernel')
            False
        """
        existing = vars(self).get(name)
        if isinstance(existing, nnx.Variable):
            return variable_name_from_type(type(existing)) == col
        binding = ctx.binding()
        found_scope = binding.scope_of(self) if binding is not None else None
        if found_scope is None:
            return False
        found, value = _tree.lookup(found_scope[0], col, (name,))
        return found and not isinstance(value, Mapping)

    def _linnx_rngs(self) -> nnx.Rngs | None:
        own = vars(self).get("rngs")
        return own if isinstance(own, nnx.Rngs) else ctx.current_rngs()

    def make_rng(self, name: str = "params") -> jax.Array:
        """Returns a fresh key from the stream ``name``, as Linen's ``self.make_rng``.

        Streams come from the module's own ``rngs=`` or, for a submodule, its parent's while
        the parent runs; under ``init``/``apply`` from their ``rngs`` argument. As in Linen a
        missing stream falls back to ``'params'`` (and then to NNX's ``'default'``).

        Args:
            name: the stream, e.g. ``'dropout'``.

        Returns:
            A new PRNG key; each call advances the stream.

        Raises:
            RngStreamError: no rngs are available, or none of the streams fits.

        Example:
            >>> import linnx.module as lm
            >>> from flax import nnx
            >>> class Noise(lm.Module):
            ...     def __call__(self):
            ...         return self.make_rng('noise')
            >>> module = Noise(rngs=nnx.Rngs(noise=0))
            >>> bool((module() != module()).any())
            True
        """
        rngs = self._linnx_rngs()
        path = ctx.scope_path(self)
        if rngs is None:
            raise RngStreamError(_NO_RNGS.format(path=path, name=name))
        streams = dict(rngs.items())
        for candidate in (name, "params", "default"):
            if candidate in streams:
                return streams[candidate]()
        raise RngStreamError(
            _NO_STREAM.format(path=path, name=name, have=sorted(streams) or "none")
        )

    def has_rng(self, name: str) -> bool:
        """Whether :meth:`make_rng` can draw from the stream ``name`` right now.

        Example:
            >>> import linnx.module as lm
            >>> from flax import nnx
            >>> lm.nn.Dropout(0.5, rngs=nnx.Rngs(dropout=0)).has_rng('dropout')
            True
        """
        rngs = self._linnx_rngs()
        return rngs is not None and any(n in (name, "default") for n, _ in rngs.items())

    def is_initializing(self) -> bool:
        """True during ``init`` and ``lazy_init`` (the creation pass), as in Linen.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> import linnx.module as lm
            >>> class Probe(lm.Module):
            ...     def __call__(self, x):
            ...         return self.is_initializing()
            >>> Probe().init_with_output(jax.random.key(0), 1.0)[0], Probe().apply({}, 1.0)
            (True, False)
        """
        return ctx.mode() == "init"

    def is_mutable_collection(self, col: str) -> bool:
        """Whether writes to ``col`` are kept: always in NNX style, per ``mutable`` in apply.

        Example:
            >>> import linnx.module as lm
            >>> lm.nn.Dense(3).is_mutable_collection('params')
            True
        """
        binding = ctx.binding()
        return binding is None or binding.is_mutable(col)

    def sow(
        self,
        col: str | type[nnx.Variable],
        name: str,
        value: Any,
        reduce_fn: Callable[[Any, Any], Any] = _tuple_reduce,
        init_fn: Callable[[], Any] = _tuple_init,
    ) -> bool:
        """Stores an intermediate value, as Linen's ``self.sow`` (values append to a tuple).

        Under :meth:`apply` it stores only when ``col`` is mutable, and :meth:`init` skips
        ``'intermediates'`` unless asked, as in Linen. A plain NNX call stores into the
        variable attribute ``name`` (of the type registered for ``col``, e.g.
        ``nnx.Intermediate``; take it out with ``nnx.pop``), or into ``nnx.capture``'s
        collections while that runs.

        Args:
            col: the collection name, or an ``nnx.Variable`` subclass.
            name: the variable's name.
            value: the value to store.
            reduce_fn: combines the stored value with the new one.
            init_fn: the stored value before the first ``sow``.

        Returns:
            Whether the value was stored.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> import linnx.module as lm
            >>> class Tap(lm.Module):
            ...     def __call__(self, x):
            ...         self.sow('intermediates', 'x2', x * 2)
            ...         return x
            >>> _, state = Tap().apply({}, jnp.ones(2), mutable=['intermediates'])
            >>> state['intermediates']['x2']
            (Array([2., 2.], dtype=float32),)
        """
        if isinstance(col, str):
            var_type, collection = variable_type_from_name(col), col
        elif isinstance(col, type) and issubclass(col, nnx.Variable):
            var_type, collection = col, variable_name_from_type(col)
        else:
            raise BridgeTypeError(
                f"sow(col={col!r}): expected a collection name or an nnx.Variable subclass."
            )
        mode = ctx.mode()
        binding = ctx.binding()
        if binding is not None and not binding.is_mutable(collection):
            return False
        if mode == "init" and not ctx.init_may_sow(collection):
            return False
        captures = vars(self).get("__captures__")
        if mode == "call" and captures is not None:
            # nnx.capture is collecting: write into its per-type collections.
            for var in captures:
                if type(var) is var_type:
                    var[name] = reduce_fn(var[name] if name in var else init_fn(), value)
                    return True
            return False
        existing = vars(self).get(name)
        if existing is None:
            _set(self, name, var_type(reduce_fn(init_fn(), value)))
            _set(self, "_linnx_declared", (*vars(self).get("_linnx_declared", ()), name))
        elif type(existing) is var_type:
            existing.set_value(reduce_fn(existing.get_value(), value))
        else:
            raise NameInUseError(
                _TAKEN.format(
                    path=ctx.scope_path(self),
                    name=name,
                    collection=collection,
                    what=_describe(existing),
                )
            )
        return True

    def submodule(self, factory: Any, *args: Any, name: str | None = None, **kwargs: Any) -> Any:
        """Creates an NNX layer or a Linen module as a child, from a compact method.

        A compact method cannot intercept ``nnx.Linear(...)`` the way it intercepts a
        ``linnx.Module``, so it would build a new layer (and draw new random weights) on every
        call. ``submodule`` builds it once, in the creation pass, names it like Linen would
        (``Linear_0``, or ``Dense_0`` for a Linen ``nn.Dense``) and returns the same child on
        every later call.

        Args:
            factory: an NNX module class (or any callable returning an NNX module), built as
                ``factory(*args, rngs=..., **kwargs)`` (``rngs`` is filled in from this
                module's streams when ``factory`` takes it and you did not pass it); or a
                Linen module instance, wrapped in :class:`linnx.ToNNX`.
            *args: constructor arguments.
            name: the child's name; by default ``f"{Class}_{n}"``.
            **kwargs: constructor keyword arguments.

        Returns:
            The child module.

        Raises:
            ModuleDefinitionError: not called from this module's compact method.
            BridgeTypeError: ``factory`` is an already built NNX module, or returns none.
            NameInUseError: ``name`` is taken.

        Example:
            >>> import jax.numpy as jnp
            >>> import linnx
            >>> import linnx.module as lm
            >>> from flax import linen as nn, nnx
            >>> class Mixed(lm.Module):
            ...     @lm.compact
            ...     def __call__(self, x):
            ...         x = self.submodule(nnx.Linear, x.shape[-1], 4)(x)
            ...         return self.submodule(nn.Dense(2))(x)
            >>> model = linnx.lazy_init(Mixed(rngs=nnx.Rngs(0)), jnp.ones((1, 3)))
            >>> model.Linear_0.kernel.shape, model.Dense_0.params['kernel'].shape
            ((3, 4), (4, 2))
        """
        return build_submodule(self, factory, args, name, kwargs)

    def init(
        self,
        rngs: Any,
        *args: Any,
        method: str | Callable | None = None,
        mutable: bool | str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Creates the variables as Linen's ``init`` does, and returns them as a dict.

        It runs ``method`` (``__call__`` by default) once on a fresh copy of this module, so
        the module itself is unchanged and the call is a pure function of its arguments
        (``jax.jit(model.init)`` works).

        Args:
            rngs: a key, an int seed, a dict of stream name -> key, or an ``nnx.Rngs``; a
                single key is the ``'params'`` stream, which other streams fall back to.
            *args: sample inputs of ``method``.
            method: the method to run, by name or as a function ``f(module, *args)``.
            mutable: the collections to return, as Linen's ``init``: by default all but
                ``'intermediates'`` (which ``sow`` then skips); ``True`` for all.
            **kwargs: sample keyword inputs.

        Returns:
            ``{collection: nested dict of arrays}``, with Linen's paths, e.g.
            ``variables['params']['Block_0']['Dense_0']['kernel']``.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> import linnx.module as lm
            >>> variables = lm.nn.BatchNorm(use_running_average=False).init(
            ...     jax.random.key(0), jnp.ones((2, 3)))
            >>> jax.tree.map(jnp.shape, variables)
            {'batch_stats': {'mean': (3,), 'var': (3,)}, 'params': {'bias': (3,), 'scale': (3,)}}
        """
        return _linen_api.init_with_output(self, rngs, args, kwargs, method, mutable)[1]

    def init_with_output(
        self,
        rngs: Any,
        *args: Any,
        method: str | Callable | None = None,
        mutable: bool | str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> tuple[Any, dict[str, Any]]:
        """Like :meth:`init`, and also returns the output: ``(output, variables)``.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> import linnx.module as lm
            >>> y, variables = lm.nn.Dense(2).init_with_output(jax.random.key(0), jnp.ones(3))
            >>> y.shape, sorted(variables['params'])
            ((2,), ['bias', 'kernel'])
        """
        return _linen_api.init_with_output(self, rngs, args, kwargs, method, mutable)

    def apply(
        self,
        variables: Mapping[str, Any],
        *args: Any,
        rngs: Any = None,
        method: str | Callable | None = None,
        mutable: bool | str | Sequence[str] = False,
        **kwargs: Any,
    ) -> Any:
        """Runs a method with the given variables, as Linen's ``apply``; a pure function.

        The variables dict is the one :meth:`init` returns (or a Linen model's, when the
        structure is the same). The module itself is unchanged, so this works under
        ``jax.jit`` and ``jax.grad`` exactly like Linen's ``apply``.

        Args:
            variables: ``{collection: nested dict of arrays}``.
            *args: inputs of ``method``.
            rngs: keys for this call, e.g. ``{'dropout': key}`` (also a key, an int seed or an
                ``nnx.Rngs``).
            method: the method to run, by name or as a function ``f(module, *args)``;
                ``__call__`` by default.
            mutable: the collections the call may change (``True`` for all); their new values
                are returned.
            **kwargs: keyword inputs of ``method``.

        Returns:
            The output, or ``(output, {collection: new values})`` when ``mutable`` is set.

        Raises:
            StructureMismatchError: ``variables`` lack a variable, or one has another shape.
            MutableCollectionError: the call wrote a collection missing from ``mutable``, or a
                collection named in ``mutable`` does not exist.
            UnknownMethodError: ``method`` names no method of the module.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> import linnx.module as lm
            >>> model = lm.nn.Dense(2)
            >>> variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
            >>> model.apply(variables, jnp.ones((1, 3))).shape
            (1, 2)
        """
        return _linen_api.apply(self, variables, args, kwargs, rngs, method, mutable)

    def lazy_init(self: M, *args: Any, **kwargs: Any) -> M:
        """Creates the variables in place with a sample input; ``linnx.lazy_init(self, ...)``.

        Example:
            >>> import jax.numpy as jnp
            >>> import linnx.module as lm
            >>> from flax import nnx
            >>> model = lm.nn.Dense(2, rngs=nnx.Rngs(0)).lazy_init(jnp.ones((1, 3)))
            >>> model.kernel.shape
            (3, 2)
        """
        return _lazy_init(self, *args, **kwargs)


# `Module.__module__` is the public path, so doctest would skip the methods' examples; list
# them here (the doctest protocol's `__test__`) so that `--doctest-modules` runs them.
__test__ = {"Module.variables": Module.variables.__doc__} | {
    f"Module.{name}": getattr(Module, name)
    for name in (
        "setup",
        "param",
        "variable",
        "has_variable",
        "make_rng",
        "has_rng",
        "is_initializing",
        "is_mutable_collection",
        "sow",
        "submodule",
        "init",
        "init_with_output",
        "apply",
        "lazy_init",
    )
}
