"""NNX modules inside Linen: :class:`ToLinen`, :func:`to_linen`, :func:`to_linen_class`.

Design. ``init`` constructs the NNX module once, with an ``nnx.Rngs`` fed by the Linen rng
streams, and splits it: the static ``GraphDef`` goes to the ``'nnx'`` collection, and every
variable goes, boxed as :class:`NNXMeta`, to the collection the registry pairs with its type.
``apply`` never calls the constructor: it lays the Linen leaves out in the graphdef's leaf
order (:mod:`._layout`) and unflattens them into a module that shares the arrays, runs the
method, and writes back the collections Linen marked mutable. An update to a collection that
is not mutable raises :class:`MutableCollectionError`, as Linen does, before anything is
written (rng state in a call given Linen keys excepted; see docs/guarantees.md).

The variables and keys come from a :class:`~._root_scope.Host`: the bound module's own Linen
scope, or, for a top-level ``init``/``apply`` (no Linen parent, the plain arguments, the speed
shortcuts on), a stand-in for Linen's root scope that skips Linen's scope machinery, which
would cost as much as the call itself on a small model (:mod:`._root_scope`). Argument checks
and the messages of errors live in :mod:`._to_linen_checks`.

RNG state of the NNX module (``RngKey``/``RngCount`` collections) supports both documented
styles: with ``mutable=['RngCount']`` and no Linen rngs the module's own streams advance;
with ``apply(..., rngs={'dropout': key})`` each stream named in the Linen rngs is re-keyed
from Linen for this call only, so the same key gives the same output, and the call keeps no
rng state. No seed is ever
invented: a random layer without any stream raises :class:`RngStreamError`.
"""

from __future__ import annotations

import contextvars
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import jax
from flax import linen as nn
from flax import nnx
from flax.core import FrozenDict, meta
from flax.core.scope import Scope

from .._errors import (
    BridgeTypeError,
    UnknownMethodError,
)
from .._flax_internals import outside_linen
from . import _fast, _layout, _rngs, _root_scope
from . import _to_linen_checks as checks
from ._fast import read_value
from ._meta import NNXMeta
from ._sharding import constrain_to_mesh
from ._to_nnx import ToNNX

__all__ = ["ToLinen", "to_linen", "to_linen_class"]

_GRAPHDEF = checks.GRAPHDEF


class ToLinen(nn.Module):
    """Wraps an NNX module class as a Linen module.

    ``init`` constructs the NNX module once and returns its state as Linen variables: the
    ``'nnx'`` collection holds ``{'graphdef': ...}`` (the static structure), and each variable
    type gets its collection (``'params'`` for ``nnx.Param``...), every leaf boxed in an
    :class:`NNXMeta`. ``apply`` rebuilds the module from those variables without calling its
    constructor.

    Attributes:
        nnx_class: the NNX module class (not an instance), or a function returning a module.
        args: positional arguments for ``nnx_class``.
        kwargs: keyword arguments for ``nnx_class``.
        skip_rng: True if ``nnx_class`` takes no ``rngs`` argument.
        metadata_type: the ``AxisMetadata`` box for the variables, :class:`NNXMeta` by default.

    Call keyword ``nnx_method`` runs another method of the NNX module; ``apply(...,
    method='encode')`` does the same.

    Example:
        >>> import jax
        >>> import linnx
        >>> from flax import nnx
        >>> model = linnx.ToLinen(nnx.Linear, args=(32, 64))
        >>> x = jax.numpy.ones((1, 32))
        >>> y, variables = model.init_with_output(jax.random.key(0), x)
        >>> y.shape
        (1, 64)
        >>> variables['params']['kernel'].shape
        (32, 64)
        >>> list(variables.keys())
        ['nnx', 'params']
    """

    nnx_class: Callable[..., nnx.Module]
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = FrozenDict()
    skip_rng: bool = False
    metadata_type: type[meta.AxisMetadata] = NNXMeta

    def __post_init__(self) -> None:
        # Linen re-runs __post_init__ on the clone it binds to a scope in every init/apply;
        # the fields were checked when the user built the module, and the signature checks
        # would cost a tenth of a small eager apply.
        if not isinstance(self.parent, Scope) or not _fast.enabled():
            checks.check_arguments(self.args, self.kwargs, f"{type(self).__name__}")
            checks.check_nnx_class(
                self.nnx_class, self.skip_rng, f"{type(self).__name__}(nnx_class=...)"
            )
        # Frozen containers keep the module hashable, like every Linen module (flax #4156).
        if not isinstance(self.args, tuple):
            object.__setattr__(self, "args", tuple(self.args))
        if not isinstance(self.kwargs, FrozenDict):
            object.__setattr__(self, "kwargs", FrozenDict(self.kwargs))
        super().__post_init__()

    @nn.compact
    def __call__(self, *args: Any, nnx_method: str | None = None, **kwargs: Any) -> Any:
        host = _root_scope.BoundModuleHost(self)
        if self.has_variable("nnx", _GRAPHDEF) and not self._scan_init():
            return self._call_nnx(host, args, kwargs, nnx_method)
        if not self.is_mutable_collection("nnx"):
            raise checks.missing_graphdef(self)
        # Only the top-level wrapper may skip the pass: Linen modules created by the forward
        # pass (inside a ToNNX) are top-level for their own init.
        output_unused = _OUTPUT_UNUSED.get() and cast(Scope, self.scope).parent is None
        _OUTPUT_UNUSED.set(False)
        return self._initialize(host, args, kwargs, nnx_method, output_unused)

    @nn.nowrap
    def __getattr__(self, name: str) -> Any:
        # `apply(variables, x, method='encode')` and `model.encode(x)` reach NNX methods.
        # A bound method, not a closure over `self`: Linen's `apply` unbinds a method given
        # by name (`__func__`) and calls it on the bound clone of this module.
        if not name.startswith("_") and callable(getattr(self.nnx_class, name, None)):

            def method(module: ToLinen, *args: Any, **kwargs: Any) -> Any:
                return module(*args, nnx_method=name, **kwargs)

            return types.MethodType(method, self)
        try:
            return super().__getattr__(name)
        except AttributeError as e:
            if name.startswith("_") or isinstance(e, UnknownMethodError):
                raise
            # `apply(variables, x, method='nope')` ends here: name the NNX class too.
            wrapped = getattr(vars(self).get("nnx_class", type(self)), "__name__", "?")
            raise UnknownMethodError(
                f"method or attribute {name!r}: neither {type(self).__name__} nor the NNX "
                f"module {wrapped} has it.\nFix: check the spelling; NNX methods are reached "
                f"by name, e.g. model.apply(variables, x, method='encode')."
            ) from None

    @nn.nowrap
    def _scan_init(self) -> bool:
        """Init under ``nn.scan(..., variable_broadcast='nnx')``: Linen's broadcast pre-pass
        stored the graphdef, but the scanned collections are still empty and mutable."""
        if not self.is_initializing():
            return False
        layout = _layout.layout_of(self.get_variable("nnx", _GRAPHDEF))
        missing = [
            s for s in layout if s.stream is None and not self.has_variable(s.collection, s.path[0])
        ]
        return bool(missing) and all(self.is_mutable_collection(s.collection) for s in missing)

    # -- init --------------------------------------------------------------------------------

    # Linen wraps every method of a Module subclass to set up its scope on each call (tens of
    # microseconds each); the helpers below run inside `__call__`, or are Linen's own API.
    @nn.nowrap
    def init(self, *args: Any, **kwargs: Any) -> Any:
        """Linen's ``init``; when this wrapper is the top-level module, no forward pass.

        NNX modules create their variables in the constructor, and a top-level ``init``
        throws the output away, so the pass would only cost time: ``init`` returns the state
        the constructor built, at the cost of the constructor alone. The pass still runs when
        the module has parts created by their first call (an uninitialized ``ToNNX``), under
        ``capture_intermediates``, and when ``method`` is a function. ``init_with_output``
        and a ``ToLinen`` inside a Linen parent always run it; the variables are the same.

        Example:
            >>> import jax
            >>> import linnx
            >>> from flax import nnx
            >>> model = linnx.to_linen(nnx.Linear, 3, 2)
            >>> variables = model.init(jax.random.key(0), jax.numpy.ones((1, 3)))
            >>> _, same = model.init_with_output(jax.random.key(0), jax.numpy.ones((1, 3)))
            >>> bool((variables['params']['kernel'].value == same['params']['kernel'].value).all())
            True
        """
        checks.check_linen_rngs(args[0] if args else kwargs.get("rngs"), "init(rngs=...)")
        variables = _root_scope.fast_init(self, ToLinen.__call__, args, kwargs)
        if variables is not _root_scope.NOT_TAKEN:
            return variables
        method = kwargs.get("method")
        plain = (
            type(self).__call__ is ToLinen.__call__  # not wrapped by nn.scan, nn.vmap...
            and (method is None or isinstance(method, str))
            and not kwargs.get("capture_intermediates")
        )
        token = _OUTPUT_UNUSED.set(plain)
        try:
            return super().init(*args, **kwargs)
        finally:
            _OUTPUT_UNUSED.reset(token)

    @nn.nowrap
    def init_with_output(self, *args: Any, **kwargs: Any) -> Any:
        """Linen's ``init_with_output``, with the rngs checked before Linen reads them.

        Example:
            >>> import jax
            >>> import linnx
            >>> from flax import nnx
            >>> model = linnx.to_linen(nnx.Linear, 3, 2)
            >>> y, variables = model.init_with_output(jax.random.key(0), jax.numpy.ones((1, 3)))
            >>> y.shape
            (1, 2)
        """
        checks.check_linen_rngs(
            args[0] if args else kwargs.get("rngs"), "init_with_output(rngs=...)"
        )
        return super().init_with_output(*args, **kwargs)

    @nn.nowrap
    def apply(self, variables: Any, *args: Any, **kwargs: Any) -> Any:
        """Linen's ``apply``, with the variables and rngs checked before Linen reads them.

        Example:
            >>> import jax
            >>> import linnx
            >>> from flax import nnx
            >>> model = linnx.to_linen(nnx.Linear, 3, 2)
            >>> x = jax.numpy.ones((1, 3))
            >>> model.apply(model.init(jax.random.key(0), x), x).shape
            (1, 2)
        """
        if not isinstance(variables, Mapping):
            raise BridgeTypeError(
                f"apply(variables={variables!r}): expected the variables dict that init "
                f"returned, got {type(variables).__name__}.\nFix: variables = "
                f"model.init(jax.random.key(0), x), then model.apply(variables, x)."
            )
        if kwargs.get("rngs") is not None:
            checks.check_linen_rngs(kwargs["rngs"], "apply(rngs=...)")
        out = _root_scope.fast_apply(self, ToLinen.__call__, variables, args, kwargs)
        if out is not _root_scope.NOT_TAKEN:
            return out
        return super().apply(variables, *args, **kwargs)

    @nn.nowrap
    def _initialize(
        self,
        host: _root_scope.Host,
        args: tuple,
        kwargs: dict,
        nnx_method: str | None,
        output_unused: bool,
    ) -> Any:
        """Constructs the module and stores its state; runs the forward pass when needed.

        The stored state is the constructor's, as a native NNX model starts from, so training
        through the bridge follows the native model step for step. Only variables the pass
        *creates* (a ``ToNNX`` inside, initialized by its first call as a ``lazy_init`` pass)
        are stored with the values the pass gave them.
        """
        module = self._construct(host)
        if output_unused:
            # An unbound wrapper (the fast path's) is initialized again and again with the
            # same constructor arguments: it keeps its module's structure between inits.
            reused = self.scope is None and _fast.enabled()
            known = _layout.known_structure(self) if reused else None
            graphdef, layout, values, learned = _layout.split_values(module, known, reused)
            # (A module read under a trace teaches nothing: keep what eager inits learned.)
            if reused and learned is not None and learned is not known:
                _layout.remember_structure(self, learned)
            may_grow = learned is None or any(issubclass(t, ToNNX) for t in learned.node_types)
            if not (may_grow and _created_by_first_call(module)):
                self._store(host, graphdef, layout, values)
                return None
        flat = nnx.to_flat_state(nnx.state(module))
        built = {path: read_value(var) for path, var in flat}
        with (
            nnx.use_eager_sharding(False),
            checks.rng_errors(self, host, at_apply=False),
            _rngs.initialization_pass(),
            outside_linen(),
        ):
            out = _resolve_method(module, nnx_method)(*args, **kwargs)
        after_graphdef, after_state = nnx.split(module)
        after_flat = nnx.to_flat_state(after_state)
        values = [built[path] if path in built else read_value(var) for path, var in after_flat]
        graphdef = _layout.GraphDef.of(after_graphdef)
        self._store(host, graphdef, _layout.new_layout(graphdef, after_state), values)
        return out

    @nn.nowrap
    def _construct(self, host: _root_scope.Host) -> nnx.Module:
        kwargs = dict(self.kwargs)
        if not self.skip_rng:
            names = host.linen_rng_names()
            kwargs["rngs"] = nnx.Rngs(**{name: host.make_rng(name) for name in names})
        checks.check_constructor_call(self.nnx_class, self.args, kwargs)
        with (
            nnx.use_eager_sharding(False),
            checks.rng_errors(self, host, at_apply=False),
            outside_linen(),
        ):
            module = self.nnx_class(*self.args, **kwargs)
        if not isinstance(module, nnx.Module):
            raise BridgeTypeError(
                f"ToLinen(nnx_class={checks.class_name(self)}) returned {type(module).__name__}, "
                f"not an nnx.Module."
            )
        return module

    @nn.nowrap
    def _store(
        self,
        host: _root_scope.Host,
        graphdef: _layout.GraphDef,
        layout: tuple[_layout.Slot, ...],
        values: list[Any],
    ) -> None:
        if not host.has_variable("nnx", _GRAPHDEF) or (
            host.get_variable("nnx", _GRAPHDEF) != graphdef
        ):
            host.put_variable("nnx", _GRAPHDEF, graphdef)
        puts = list(_layout.to_collections(layout, values, self.metadata_type))
        # Parameters first (the guide's order: ['nnx', 'LoRAParam', 'params', 'counts']), then
        # the other state; graph order within each group (the sort is stable).
        params = {s.collection for s in layout if issubclass(s.var_type, nnx.Param)}
        puts.sort(key=lambda put: put[0] not in params)
        for collection, name, tree in puts:
            host.put_variable(collection, name, constrain_to_mesh(tree, f"{collection}/{name}"))

    # -- apply -------------------------------------------------------------------------------

    @nn.nowrap
    def _call_nnx(
        self, host: _root_scope.Host, args: tuple, kwargs: dict, nnx_method: str | None
    ) -> Any:
        """An apply-time call: rebuild the module, run the method, write back."""
        graphdef, layout, view, leaves, module = self._rebuild(host)
        with checks.rng_errors(self, host, at_apply=True), outside_linen():
            out = _resolve_method(module, nnx_method)(*args, **kwargs)
        self._write_back(host, module, graphdef, layout, view, leaves)
        return out

    @nn.nowrap
    def _rebuild(
        self, host: _root_scope.Host
    ) -> tuple[
        nnx.GraphDef, tuple[_layout.Slot, ...], _layout.TreeView | None, list[Any], nnx.Module
    ]:
        """The module, unflattened from the stored graphdef and this call's variables (also
        returned, in graph order, to tell afterwards which ones the call changed)."""
        graphdef = host.get_variable("nnx", _GRAPHDEF)
        if not isinstance(graphdef, nnx.GraphDef):
            raise checks.missing_graphdef(self, got=graphdef)
        layout = _layout.layout_of(graphdef)
        view = _layout.tree_view_of(graphdef)

        def linen_key(stream: str) -> jax.Array | None:
            # A Linen key for an NNX stream named in this call's rngs, else None.
            return host.make_rng(stream) if host.has_linen_rng(stream) else None

        leaves = _layout.gather(layout, host.variables, linen_key)
        with nnx.use_eager_sharding(False):
            if view is not None:
                return graphdef, layout, view, leaves, view.unflatten(leaves)
            return graphdef, layout, view, leaves, nnx.unflatten(graphdef, leaves)

    @nn.nowrap
    def _write_back(
        self,
        host: _root_scope.Host,
        module: nnx.Module,
        graphdef: nnx.GraphDef,
        layout: tuple[_layout.Slot, ...],
        view: _layout.TreeView | None,
        leaves: list[Any],
    ) -> None:
        """Stores the collections Linen marked mutable; refuses a change that would be lost.

        A change is a variable whose value is no longer the array this call passed in (NNX
        writes replace the array; a variable left alone keeps it), or a new variable. As in
        Linen, writing a collection that is not mutable raises, with one exception: a call
        given Linen ``rngs`` (the guide's "Linen style") does not keep the module's rng state
        (``RngKey``/``RngCount``) unless it is mutable; that state is dropped by design.
        """
        # The usual case, an unchanged structure, is told by the module's pytree structure
        # alone; only a changed (or graph-only) module pays for a full split.
        values = view.graph_leaves(module) if view is not None else None
        before: list[Any] | dict[tuple, Any] = leaves
        if values is None:
            new_graphdef, state = nnx.split(module)
            if new_graphdef != graphdef:
                if not host.is_mutable_collection("nnx"):
                    raise checks.structure_changed(self)
                new_graphdef = _layout.GraphDef.of(new_graphdef)
                host.put_variable("nnx", _GRAPHDEF, new_graphdef)
                before = {
                    (s.collection, s.path): leaf for s, leaf in zip(layout, leaves, strict=True)
                }
            layout = _layout.layout_of(new_graphdef, state)
            values = [read_value(var) for var in nnx.to_flat_state(state).leaves]
        overridden = {s for s in _layout.streams_of(layout) if host.has_linen_rng(s)}
        mutable = {c for c in _layout.collections_of(layout) if host.is_mutable_collection(c)}
        linen_style = bool(host.linen_rng_names())
        lost = checks.lost_changes(layout, values, before, mutable, keep_rng_state=not linen_style)
        if lost:
            raise checks.immutable_write(self, lost, layout, host.mutable_names())
        if not mutable:
            return
        for collection, name, tree in _layout.to_collections(
            layout,
            values,
            self.metadata_type,
            skip_streams=overridden,
            only=mutable.__contains__,
        ):
            host.put_variable(collection, name, tree)


# Set by a top-level `ToLinen.init`, whose output Linen discards; read once by `_initialize`.
_OUTPUT_UNUSED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "linnx_to_linen_output_unused", default=False
)


def _created_by_first_call(module: nnx.Module) -> bool:
    """Whether part of ``module`` creates its variables on its first call."""
    # With the shortcuts on, JAX flattens the module in C++, several times faster than
    # `nnx.iter_graph`; the few modules JAX cannot flatten (graph-only nodes) take the walk.
    nodes = None
    if _fast.enabled():
        try:
            nodes = jax.tree_util.tree_leaves(module, is_leaf=lambda n: isinstance(n, ToNNX))
        except Exception:  # noqa: BLE001
            nodes = None
    if nodes is None:
        nodes = [node for _, node in nnx.iter_graph(module)]
    return any(isinstance(node, ToNNX) and not node.linen_collections for node in nodes)


def _resolve_method(module: nnx.Module, name: str | None) -> Callable[..., Any]:
    if name is None:
        return module
    method = getattr(module, name, None)
    if not callable(method):
        raise UnknownMethodError(
            f"method={name!r}: {type(module).__name__} has no method named {name!r}.\n"
            f"Fix: check the spelling; it must be a method of the NNX module."
        )
    return method


def to_linen(
    nnx_class: Callable[..., nnx.Module], *args: Any, name: str | None = None, **kwargs: Any
) -> ToLinen:
    """Shortcut for ``ToLinen(nnx_class, args=args, kwargs=kwargs, name=name)``.

    Args:
        nnx_class: the NNX module class (not an instance).
        *args: positional arguments for ``nnx_class``.
        name: the Linen name of the module inside a parent (auto-named ``ToLinen_0`` if None).
        **kwargs: keyword arguments for ``nnx_class``.

    Returns:
        A :class:`ToLinen` Linen module.

    Example:
        >>> import jax
        >>> import linnx
        >>> from flax import nnx
        >>> model = linnx.to_linen(nnx.Linear, 4, out_features=2)
        >>> model == linnx.ToLinen(nnx.Linear, args=(4,), kwargs={'out_features': 2})
        True
        >>> variables = model.init(jax.random.key(0), jax.numpy.ones((1, 4)))
        >>> variables['params']['kernel'].value.shape
        (4, 2)
    """
    return ToLinen(nnx_class, args=args, kwargs=FrozenDict(kwargs), name=name)


def to_linen_class(
    nnx_class: Callable[..., nnx.Module], base_skip_rng: bool = False, **defaults: Any
) -> type[ToLinen]:
    """Returns a Linen module *class* wrapping ``nnx_class``, with default keyword arguments.

    The class is a :class:`ToLinen` named after ``nnx_class`` (so a Linen parent auto-names
    its instances ``Linear_0``...). Its instances take the NNX constructor's keyword
    arguments directly, as in Flax 0.12 (``Linear(in_features=3, out_features=2)``), as well
    as ``ToLinen``'s own ``args=``, ``kwargs=``, ``skip_rng=``, ``metadata_type=`` and
    ``name=``; constructor keywords are merged over ``defaults``, ``kwargs=`` first.

    Args:
        nnx_class: the NNX module class.
        base_skip_rng: the default ``skip_rng`` of the instances (not passed to
            ``nnx_class``).
        **defaults: keyword arguments passed to every instance's ``nnx_class``.

    Returns:
        A subclass of :class:`ToLinen`.

    Example:
        >>> import jax
        >>> import linnx
        >>> from flax import nnx
        >>> Linear = linnx.to_linen_class(nnx.Linear, use_bias=False)
        >>> layer = Linear(in_features=3, out_features=2)
        >>> layer == Linear(args=(3, 2))
        False
        >>> sorted(layer.init(jax.random.key(0), jax.numpy.ones((1, 3)))['params'])
        ['kernel']
        >>> dict(Linear(args=(3,), out_features=2).kwargs)
        {'use_bias': False, 'out_features': 2}
    """
    # The rngs check waits for the instance, which may set skip_rng=True.
    checks.check_nnx_class(nnx_class, True, "to_linen_class(nnx_class=...)")
    if not isinstance(base_skip_rng, bool):
        raise BridgeTypeError(
            f"to_linen_class(base_skip_rng={base_skip_rng!r}): expected True or False.\n"
            f"Fix: base_skip_rng=True for an NNX class whose constructor takes no `rngs`."
        )
    frozen_defaults: FrozenDict[str, Any] = FrozenDict(defaults)
    wrapped_class = nnx_class

    class _Wrapped(ToLinen):
        nnx_class: Callable[..., nnx.Module] = wrapped_class
        skip_rng: bool = base_skip_rng

    dataclass_init = _Wrapped.__init__

    def __init__(
        self: ToLinen,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        nnx_class: Callable[..., nnx.Module] = wrapped_class,
        skip_rng: bool = base_skip_rng,
        metadata_type: type[meta.AxisMetadata] = NNXMeta,
        parent: Any = _UNSET,
        name: Any = _UNSET,
        **constructor_kwargs: Any,
    ) -> None:
        # Linen's own keywords only where given: a clone passes them, a user rarely does.
        linen = {k: v for k, v in (("parent", parent), ("name", name)) if v is not _UNSET}
        if kwargs is not None and not isinstance(kwargs, Mapping):
            checks.check_arguments(args, kwargs, type(self).__name__)
        merged: FrozenDict[str, Any] = FrozenDict(
            {**frozen_defaults, **(kwargs or {}), **constructor_kwargs}
        )
        dataclass_init(
            self,  # type: ignore[arg-type]
            nnx_class=nnx_class,
            args=args,
            kwargs=merged,
            skip_rng=skip_rng,
            metadata_type=metadata_type,
            **linen,
        )

    _Wrapped.__init__ = __init__  # type: ignore[method-assign,assignment]
    _Wrapped.__name__ = _Wrapped.__qualname__ = getattr(nnx_class, "__name__", "ToLinen")
    return _Wrapped


_UNSET: Any = object()
