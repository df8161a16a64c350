"""How ``linnx.Module`` instances are built, named and attached to their parent.

Design. A subclass is a dataclass, as in Linen (``Block(features=4)``), and an ``nnx.Module``:
its variables and submodules are attributes (``model.Block_0.Dense_0.kernel``). Linen creates
them on the first call; here they are created during a *creation pass* (``linnx.lazy_init``,
``Module.init``) and must exist afterwards, which keeps the module a plain NNX module that
``nnx.jit``, ``nnx.split`` and ``nnx.Optimizer`` understand.

* **Naming.** The metaclass intercepts the construction of a ``linnx.Module``. Inside a compact
  method of ``parent`` it names the child ``f"{Class}_{n}"`` (``n`` counts that class name in
  the current call; explicit ``name=`` counts nothing) and, on later calls, hands back the
  existing child instead of building a new one, so the NNX state persists. Fields passed
  explicitly with a simple value (``Dropout(0.5, deterministic=not training)``) are refreshed
  on the existing child, because Linen code passes per-call flags that way. Elsewhere (top
  level, ``setup``, dataclass fields) a child is named by the attribute it is assigned to.
  NNX layers and Linen modules cannot be intercepted that way; a compact method makes them
  with :meth:`Module.submodule`, ``setup`` simply assigns them (a Linen module is wrapped in
  ``ToNNX``).
* **Per-call state** (frames, rngs, the apply binding) lives in ``ContextVar`` s, see
  ``_context.py``: nothing transient is stored on the module, whose attributes all become
  NNX graph data or static metadata.
* **init/apply** (``_linen_api.py``) run on a fresh copy built from the dataclass fields, so
  they are pure functions of their arguments, as in Linen, and work under ``jax.jit``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import flax.errors
import jax
import numpy as np
from flax import linen as nn
from flax import nnx
from flax.core import meta

from .._errors import BridgeTypeError, NotInitializedError, RngStreamError, StructureMismatchError
from .._flax_internals import override_pytree_construct
from .._public import public
from ..bridge._registry import variable_name_from_type
from ..bridge._to_nnx import ToNNX
from ..bridge._variables import new_variable
from . import _context as ctx
from . import _tree
from ._errors import ModuleDefinitionError, NameInUseError

__all__ = [
    "compact",
    "ModuleMeta",
    "prepare_class",
    "require_creation",
    "adopt",
    "build_submodule",
    "check_shape",
    "declare",
]

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from flax.nnx.module import ModuleMeta as _PytreeMeta
else:
    _PytreeMeta = type(nnx.Module)  # Flax's metaclass of nnx.Module, whatever Flax calls it
_ROOT, _PENDING, _DETACHED, _ATTACHED = "root", "pending", "detached", "attached"
_DEFAULT: Final = object()
_MISSING: Final = object()

# The Module API itself: never wrapped, never a variable or submodule name.
_API: Final = frozenset(
    {
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
        "variables",
        "perturb",
        "train",
        "eval",
        "set_attributes",
        "iter_modules",
        "iter_children",
    }
)

# (class, name, rngs, state) of the module being constructed, read once before __init__.
_CTOR: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("linnx_ctor", default=None)
# Constructor arguments of modules whose class has its own __init__, for init/apply copies.
_ctor_args: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

_NOT_INITIALIZED: Final = (
    "{path}: a plain call cannot create {what}; variables and submodules are created only "
    "in a creation pass.\n"
    "Fix: create the variables with a sample input first, as Linen's `init` would:\n"
    "  model = linnx.lazy_init(model, x)     # or model.lazy_init(x); for another method:\n"
    "  linnx.lazy_init(model.encode, x)\n"
    "or use the Linen way: variables = model.init(jax.random.key(0), x)."
)
_PENDING_CHILD: Final = (
    "{path} would create {what}, but the module belongs to no parent: it was created "
    "{how} and never assigned to an attribute, so its variables would be lost.\n"
    "Fix: create it in a @linnx.compact method (it is then named {cls}_0, {cls}_1...), or "
    "assign it in setup(): self.{attr} = {cls}(...)."
)
_PARENT: Final = (
    "{cls}(parent={parent}): parent may only be None (a module that belongs to no parent "
    "until it is assigned) or the module whose compact method is running.\n"
    "Fix: drop `parent=`; a module built in a compact method belongs to that method's module."
)
_NNX_STREAM: Final = (
    "{path}: an NNX layer built in this module needs an rng stream that is not available: "
    "{cause}\nFix: give it, e.g. Model(..., rngs=nnx.Rngs(params=0, dropout=1)), or "
    "model.apply(variables, x, rngs={{'dropout': key}}); nnx.Rngs(0) (a default stream) "
    "serves every name."
)
_LINEN_INLINE: Final = (
    "{path}: a Linen module was called inside a linnx.Module method without being attached; "
    "Linen modules cannot find their parent here.\n"
    "Fix, one of:\n"
    "  1. use the Linen-style layer of linnx: linnx.nn.Dense(features)(x)\n"
    "  2. in a compact method: self.submodule(nn.Dense(features))(x)\n"
    "  3. in setup(): self.dense = nn.Dense(features)   (wrapped in linnx.ToNNX)\n"
    "Linen said: {cause}"
)

_SUBMODULE_OUTSIDE: Final = (
    "{cls}.submodule(...) builds a child in a compact method, and no compact method of {cls} "
    "is running.\nFix: call it from the @linnx.compact method, or assign the child in "
    "setup(): self.linear = nnx.Linear(3, 4, rngs=self.rngs)."
)
_SUBMODULE_BUILT: Final = (
    "submodule() got a built {cls}: a compact method would build a new one (with new random "
    "weights) on every call.\nFix: pass the class and its arguments, e.g. "
    "self.submodule(nnx.Linear, 3, 4); or build it in setup()."
)
_TAKEN: Final = (
    "{path}: {name!r} is already {what}, so it cannot name a variable of the collection "
    "{collection!r}.\nFix: pick another name; in NNX a module's variables and submodules "
    "share one namespace (its attributes)."
)


@public("linnx.module")
def compact(fn: F) -> F:
    """Marks the method that creates submodules and variables inline, as ``nn.compact`` does.

    Inside it, ``Dense(4)(x)`` creates ``Dense_0`` on the first (initializing) call and reuses
    it on every later call; ``self.param``/``self.variable`` likewise. At most one method of a
    module may be compact. Linen's own ``nn.compact`` marker is accepted too.

    Args:
        fn: the method.

    Returns:
        ``fn``, marked.

    Example:
        >>> import jax.numpy as jnp
        >>> import linnx
        >>> import linnx.module as lm
        >>> from flax import nnx
        >>> class MLP(lm.Module):
        ...     @lm.compact
        ...     def __call__(self, x):
        ...         x = lm.nn.Dense(3)(x)
        ...         return lm.nn.Dense(2)(x)
        >>> model = linnx.lazy_init(MLP(rngs=nnx.Rngs(0)), jnp.ones((1, 4)))
        >>> model.Dense_0.kernel.shape, model.Dense_1.kernel.shape
        ((4, 3), (3, 2))
    """
    if not inspect.isfunction(fn):
        # Setting the marker on anything else fails obscurely, or marks nothing useful.
        raise ModuleDefinitionError(
            f"compact({fn!r}): expected a method (a function defined in a class body).\n"
            "Fix: use it as a decorator: `@linnx.compact` above `def __call__(self, x):`."
        )
    fn._linnx_compact = True  # type: ignore[attr-defined]
    return fn


def _is_compact(fn: Any) -> bool:
    return getattr(fn, "_linnx_compact", False) is True or getattr(fn, "compact", False) is True


def _is_linnx(x: Any) -> bool:
    return _tree.is_linnx_module(x)


def _is_simple(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, tuple) and all(_is_simple(v) for v in value)


def _has_data(value: Any) -> bool:
    leaves = jax.tree_util.tree_leaves(
        value, is_leaf=lambda x: isinstance(x, (nnx.Pytree, nnx.Variable))
    )
    return any(isinstance(x, (nnx.Pytree, nnx.Variable, jax.Array, np.ndarray)) for x in leaves)


def _state(module: Any) -> str:
    return vars(module).get("_linnx_state", _ROOT)


def _set(module: Any, name: str, value: Any) -> None:
    """Sets an attribute with NNX's own rules, skipping Module.__setattr__'s adoption logic."""
    nnx.Module.__setattr__(module, name, value)


# -- construction ---------------------------------------------------------------------------


class ModuleMeta(_PytreeMeta):
    """Routes ``Class(...)`` through :func:`_construct` to name and attach submodules."""

    # Set on every class by prepare_class (declared here for the type checker).
    _linnx_pops: frozenset[str]
    _linnx_dataclass: bool
    _linnx_field_names: frozenset[str]

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        pops = cls._linnx_pops
        parent = kwargs.pop("parent", _DEFAULT) if "parent" in pops else _DEFAULT
        name = kwargs.pop("name", None) if "name" in pops else None
        rngs = kwargs.pop("rngs", None) if "rngs" in pops else None
        return _construct(cls, args, kwargs, parent, name, rngs)

    def _linnx_meta_construct(cls, self: Any, *args: Any, **kwargs: Any) -> None:
        pre = _CTOR.get()
        _, name, rngs, state = (
            pre if pre is not None and pre[0] is cls else (cls, None, None, _ROOT)
        )
        _CTOR.set(None)
        _set(self, "name", name)
        _set(self, "_linnx_state", state)
        if rngs is not None:
            _set(self, "rngs", rngs)
        self.__init__(*args, **kwargs)
        if not cls._linnx_dataclass:
            _ctor_args[self] = (args, kwargs)


# NNX's hook between allocating a module and running its __init__ (private: _flax_internals).
override_pytree_construct(ModuleMeta, ModuleMeta._linnx_meta_construct)


def _as_module_rngs(rngs: Any, cls: type) -> nnx.Rngs | None:
    if rngs is None or isinstance(rngs, nnx.Rngs):
        return rngs
    if isinstance(rngs, (int, jax.Array, Mapping)) and not isinstance(rngs, bool):
        return nnx.Rngs(rngs)
    raise BridgeTypeError(
        f"{cls.__name__}(rngs={rngs!r}): expected an nnx.Rngs, an int seed or a key.\n"
        f"Fix: {cls.__name__}(..., rngs=nnx.Rngs(0))."
    )


def _instantiate(
    cls: type, args: tuple, kwargs: dict, name: str | None, rngs: Any, state: str
) -> Any:
    token = _CTOR.set((cls, name, rngs, state))
    try:
        return _PytreeMeta.__call__(cls, *args, **kwargs)
    finally:
        _CTOR.reset(token)


def _construct(cls: type[Any], args: tuple, kwargs: dict, parent: Any, name: Any, rngs: Any) -> Any:
    if name is not None and not isinstance(name, str):
        raise BridgeTypeError(f"{cls.__name__}(name={name!r}): a module name must be a str.")
    rngs = _as_module_rngs(rngs, cls)
    frame = ctx.top_frame()
    owner = None
    if parent is _DEFAULT:
        if frame is not None and frame.kind == ctx.COMPACT:
            owner = frame.module
    elif _is_linnx(parent):
        if frame is None or frame.kind != ctx.COMPACT or frame.module is not parent:
            raise ModuleDefinitionError(
                _PARENT.format(cls=cls.__name__, parent=type(parent).__name__)
            )
        owner = parent
    elif parent is not None:
        raise ModuleDefinitionError(_PARENT.format(cls=cls.__name__, parent=repr(parent)))
    if owner is None:
        state = _ROOT if frame is None else (_DETACHED if parent is None else _PENDING)
        return _instantiate(cls, args, kwargs, name, rngs, state)
    frame = cast(ctx.Frame, frame)  # an owner comes from a compact frame
    child_name = name if name is not None else frame.next_name(cls.__name__)
    existing = _claim(owner, frame, child_name)
    if existing is not None:
        if type(existing) is not cls:
            raise NameInUseError(
                f"{ctx.scope_path(owner)}: {child_name!r} is already "
                f"{_describe(existing)}, so it cannot name a {cls.__name__}.\n"
                f"Fix: pass another name=."
            )
        _refresh_fields(existing, args, kwargs)
        return existing
    require_creation(owner, f"the submodule {child_name!r}")
    child = _instantiate(cls, args, kwargs, child_name, rngs, _ATTACHED)
    owner._linnx_attach(child_name, child)
    return child


def _claim(owner: Any, frame: ctx.Frame, child_name: str) -> Any:
    """Reserves ``child_name`` for this call; returns the existing child of that name."""
    if child_name in frame.used:
        raise NameInUseError(
            f"{ctx.scope_path(owner)}: the name {child_name!r} is used twice in one call of a "
            f"compact method.\nFix: give each submodule its own name=, or create it once "
            f"and call it twice."
        )
    if child_name in _API or callable(getattr(type(owner), child_name, None)):
        raise NameInUseError(
            f"{ctx.scope_path(owner)}: {child_name!r} is a method of "
            f"{type(owner).__name__} and cannot name a submodule.\nFix: pass another name=."
        )
    frame.used.add(child_name)
    return vars(owner).get(child_name)


def _describe(value: Any) -> str:
    if isinstance(value, nnx.Variable):
        return f"a variable of the collection {variable_name_from_type(type(value))!r}"
    return f"a {type(value).__name__}"


@functools.cache
def _init_signature(cls: type[Any]) -> inspect.Signature:
    return inspect.signature(cls.__init__)


def _refresh_fields(module: Any, args: tuple, kwargs: dict) -> None:
    """Applies simple fields passed explicitly to an existing compact child (per-call flags)."""
    cls: Any = type(module)
    if not cls._linnx_dataclass or not (args or kwargs):
        return
    bound = _init_signature(cls).bind(module, *args, **kwargs)
    for key, value in list(bound.arguments.items())[1:]:
        current = vars(module).get(key, _MISSING)
        if (
            key in cls._linnx_field_names
            and _is_simple(value)
            and _is_simple(current)
            and current != value
        ):
            setattr(module, key, value)


def _called_from_elsewhere(module: Any) -> bool:
    return any(frame.module is not module for frame in ctx.frames())


def require_creation(module: Any, what: str) -> None:
    """Raises unless ``module`` may create ``what`` now (in a creation pass, with a parent)."""
    if ctx.mode() == "call":
        raise NotInitializedError(_NOT_INITIALIZED.format(path=ctx.scope_path(module), what=what))
    state = _state(module)
    if state in (_PENDING, _DETACHED) and _called_from_elsewhere(module):
        cls = type(module).__name__
        how = (
            "with parent=None"
            if state == _DETACHED
            else ("outside a compact method (in setup() or a plain method)")
        )
        raise ModuleDefinitionError(
            _PENDING_CHILD.format(path=cls, what=what, how=how, cls=cls, attr=cls.lower())
        )


# -- the class ------------------------------------------------------------------------------


def _wrap_method(fn: Callable) -> Callable:
    compact_method = _is_compact(fn)

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with ctx.entering(self, ctx.METHOD):
            self._linnx_ensure_setup()
            if not compact_method:
                return _run(fn, self, args, kwargs)
            with ctx.entering(self, ctx.COMPACT):
                return _run(fn, self, args, kwargs)

    wrapper._linnx_wrapped = True  # type: ignore[attr-defined]
    return wrapper


def _run(fn: Callable, module: Any, args: tuple, kwargs: dict) -> Any:
    try:
        return fn(module, *args, **kwargs)
    except (
        flax.errors.CallCompactUnboundModuleError,
        flax.errors.CallSetupUnboundModuleError,
    ) as e:
        raise ModuleDefinitionError(
            _LINEN_INLINE.format(path=ctx.scope_path(module), cause=e)
        ) from e
    except (KeyError, AttributeError) as e:
        # An NNX layer built here asked the rngs for a stream nobody provided.
        if "No RngStream named" not in str(e):
            raise
        raise RngStreamError(_NNX_STREAM.format(path=ctx.scope_path(module), cause=e)) from e


def _wrappable(attr: str) -> bool:
    dunder = attr.startswith("__") and attr.endswith("__")
    return (attr == "__call__" or not dunder) and attr not in _API


def prepare_class(cls: Any, base: type) -> None:
    """Makes a subclass a dataclass (unless it has its own ``__init__``) and wraps its methods."""
    custom_init = any(
        "__init__" in vars(c) and not getattr(vars(c)["__init__"], "_linnx_generated", False)
        for c in cls.__mro__
        if issubclass(c, base) and c is not base
    )
    if custom_init:
        cls._linnx_dataclass = False
        cls._linnx_field_names = frozenset()
    else:
        dataclasses.dataclass(cls, eq=False, repr=False)
        cls.__init__._linnx_generated = True
        cls._linnx_dataclass = True
        cls._linnx_field_names = frozenset(f.name for f in dataclasses.fields(cls))
    params = inspect.signature(cls.__init__).parameters
    cls._linnx_pops = frozenset(n for n in ("parent", "name", "rngs") if n not in params)
    fields = set(vars(cls).get("__annotations__", {}))
    for attr, value in list(vars(cls).items()):
        if (
            inspect.isfunction(value)
            and _wrappable(attr)
            and attr not in fields
            and not getattr(value, "_linnx_wrapped", False)
        ):
            setattr(cls, attr, _wrap_method(value))
    compact_names = sorted(
        attr
        for attr in dir(cls)
        if attr not in fields
        and inspect.isfunction(inspect.getattr_static(cls, attr, None))
        and _is_compact(inspect.getattr_static(cls, attr))
    )
    if len(compact_names) > 1:
        raise ModuleDefinitionError(
            f"{cls.__name__} has {len(compact_names)} compact methods "
            f"({', '.join(compact_names)}); a module may have at most one.\n"
            f"Fix: keep @linnx.compact on one method and create the submodules of the others "
            f"in setup()."
        )


def _adopt_one(child: Any, key: str) -> None:
    if _state(child) != _ATTACHED:
        _set(child, "name", key)
        _set(child, "_linnx_state", _ATTACHED)


def _adopt_inside(node: Any) -> None:
    for _, kind, child in _tree.entries(node, False):
        if kind == "linnx":
            _adopt_one(child, vars(child).get("name") or type(child).__name__)
        elif kind == "native":
            _adopt_inside(child)


def adopt(owner: Any, attr: str, value: Any) -> None:
    """Names the Linen-style modules just assigned to ``owner.attr`` after the attribute.

    A module that already belongs to a parent stays there; this is then a second reference.
    Items of a list or dict attribute ``layers`` become ``layers_0``, ``layers_1``...; modules
    inside an NNX module keep their names and just stop waiting for a parent.
    """
    for rel, kind, child in _tree.attribute_entries(attr, value, False):
        if kind == "linnx":
            key = attr if len(rel) == 1 else f"{attr}_{rel[1]}"
            _adopt_one(child, key)
        elif kind == "native":
            _adopt_inside(child)


def _with_rngs(factory: Any, kwargs: dict, rngs: nnx.Rngs | None) -> dict:
    if "rngs" in kwargs or rngs is None:
        return kwargs
    try:
        target = factory.__init__ if isinstance(factory, type) else factory  # type: ignore[misc]
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return kwargs
    if "rngs" in params:
        return {**kwargs, "rngs": rngs}
    return kwargs


def check_shape(where: str, value: Any, shape_of: Callable[[], Any]) -> None:
    """Raises if ``value`` has not the shape that ``shape_of`` (an abstract init) gives."""
    try:
        expected = meta.unbox(shape_of())
    except Exception:  # noqa: BLE001 - an initializer JAX cannot trace: skip the check.
        return
    got = np.shape(meta.unbox(value))
    want = getattr(expected, "shape", None)
    if want is not None and tuple(want) != tuple(got):
        raise StructureMismatchError.from_paths(
            "variables",
            mismatched=[(where, f"shape {tuple(want)}", f"shape {tuple(got)}")],
            fix="pass the variables that model.init returns for inputs of this shape.",
        )


def build_submodule(owner: Any, factory: Any, args: tuple, name: str | None, kwargs: dict) -> Any:
    """``owner.submodule(factory, *args, name=name, **kwargs)``; see ``Module.submodule``."""
    frame = ctx.top_frame()
    if frame is None or frame.module is not owner or frame.kind != ctx.COMPACT:
        raise ModuleDefinitionError(_SUBMODULE_OUTSIDE.format(cls=type(owner).__name__))
    if isinstance(factory, type) and getattr(factory, "_linnx_is_module", False):
        return factory(*args, **({"name": name} if name is not None else {}), **kwargs)
    if isinstance(factory, nnx.Module):
        raise BridgeTypeError(_SUBMODULE_BUILT.format(cls=type(factory).__name__))
    if factory is ToNNX and len(args) == 1 and isinstance(args[0], nn.Module):
        # `self.submodule(linnx.ToNNX, nn.Dense(4))`: named after the Linen class, like Linen.
        linen, given = args[0], kwargs.get("rngs")
        prefix = type(linen).__name__
        name = name if name is not None else (linen.name or None)

        def make() -> Any:
            if "rngs" in kwargs:
                return ToNNX(linen, rngs=given)
            return owner._linnx_wrap_linen(linen)
    elif isinstance(factory, nn.Module):
        if args or kwargs:
            raise BridgeTypeError(
                f"submodule({type(factory).__name__}(...), ...): a Linen module instance "
                f"takes no further arguments; pass its fields to its constructor."
            )
        prefix = type(factory).__name__
        name = name if name is not None else (factory.name or None)

        def make() -> Any:
            return owner._linnx_wrap_linen(factory)
    elif callable(factory):
        callable_name: str | None = getattr(factory, "__name__", None)
        if callable_name is None and name is None:
            raise BridgeTypeError(
                f"submodule({factory!r}): cannot name the child after this callable.\n"
                f"Fix: pass name=, e.g. self.submodule(factory, ..., name='proj')."
            )

        def make() -> Any:
            return factory(*args, **_with_rngs(factory, kwargs, owner._linnx_child_rngs()))

        prefix = callable_name or ""
    else:
        raise BridgeTypeError(
            f"submodule(factory={factory!r}): expected an NNX module class, a callable "
            f"returning an NNX module, or a Linen module instance."
        )
    child_name = name if name is not None else frame.next_name(prefix)
    existing = _claim(owner, frame, child_name)
    if existing is not None:
        if not isinstance(existing, nnx.Module):
            raise NameInUseError(
                f"{ctx.scope_path(owner)}: {child_name!r} is already {_describe(existing)}, "
                f"so it cannot name a submodule.\nFix: pass another name=."
            )
        return existing
    require_creation(owner, f"the submodule {child_name!r}")
    child = make()
    if not isinstance(child, nnx.Module):
        raise BridgeTypeError(
            f"submodule({prefix or name}): the factory returned a {type(child).__name__}, "
            f"not an NNX module."
        )
    adopt(owner, child_name, child)
    owner._linnx_attach(child_name, child)
    return child


def declare(
    module: Any,
    collection: str,
    name: str,
    make: Callable[[], Any],
    shape_of: Callable[[], Any] | None = None,
) -> nnx.Variable:
    """Returns the variable ``collection/name``, creating or loading it the first time."""
    existing = vars(module).get(name)
    if existing is not None:
        if isinstance(existing, nnx.Variable) and (
            variable_name_from_type(type(existing)) == collection
        ):
            return existing
        raise NameInUseError(
            _TAKEN.format(
                path=ctx.scope_path(module),
                name=name,
                collection=collection,
                what=_describe(existing),
            )
        )
    if (
        name in _API
        or callable(getattr(type(module), name, None))
        or (name in type(module)._linnx_field_names)
    ):
        raise NameInUseError(
            _TAKEN.format(
                path=ctx.scope_path(module),
                name=name,
                collection=collection,
                what=f"a field or method of {type(module).__name__}",
            )
        )
    binding = ctx.binding()
    found_scope = binding.scope_of(module) if binding is not None else None
    var = None
    if binding is not None and found_scope is not None:
        scope, path = found_scope
        found, value = _tree.lookup(scope, collection, (name,))
        where = _tree.path_text(collection, (*path, name))
        if found and isinstance(value, Mapping):
            raise StructureMismatchError.from_paths(
                "variables",
                mismatched=[(where, "an array", "a nested dict")],
                fix=f"{where} must hold the variable's value, not a dict of values.",
            )
        if found:
            if shape_of is not None:
                check_shape(where, value, shape_of)
            var = new_variable(collection, value)
            binding.record(var, collection, where)
        elif not binding.is_mutable(collection):
            raise _tree.missing_error(where, collection, binding)
    if var is None:
        require_creation(module, f"the variable {collection}/{name}")
        var = new_variable(collection, make())
        if binding is not None:
            binding.seen.add(id(var))
    _set(module, name, var)
    _set(module, "_linnx_declared", (*vars(module).get("_linnx_declared", ()), name))
    return var
