"""Abstract tracing of a Linen module and an NNX model: what each calls, in which order.

Both models run under :func:`jax.eval_shape` on the sample inputs, so nothing is computed or
allocated. The result, a :class:`ModelRecord`, lists every *unit*: a module together with the
variables it owns directly (not through a child module), the class of the module, the index of
its first call, and, for each variable, the shape seen *inside* that call. That inner shape
differs from the stored one when the module runs under a lifted transform (``nn.scan``,
``nnx.vmap`` + ``nnx.scan``): a stored ``(5, 64, 64)`` kernel seen as ``(64, 64)`` is a stack
of 5 layers along axis 0.

Linen calls come from :func:`flax.linen.intercept_methods`. NNX has no interceptor, so the
methods of the model's own module classes are wrapped for the duration of the trace, and each
module of the traced copy is tagged with its graph path. Tags are static attributes, so they
survive the split/merge that NNX transforms do; the wrapper reads the tag to know which module
of the original model is running. The wrappers record only in the thread that traces and are
removed afterwards.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
from flax import linen as nn
from flax import nnx
from flax.linen.partitioning import AxisMetadata

from .._keypath import path_str
from ..bridge import ToNNX, registered_pairs
from ..bridge._registry import registered_name
from ._errors import TraceError
from ._paths import Path, flatten_mapping, unboxed

__all__ = [
    "VarInfo",
    "Unit",
    "ModelRecord",
    "record_linen",
    "record_nnx",
    "EXCLUDED_NNX_TYPES",
    "RNG_STATE_TYPES",
    "split_dynamic",
    "dtype_of",
    "dtype_name",
    "non_weight_leaf",
    "sown_paths",
    "axes_target",
]

#: NNX-only state that no Linen variable fills: never reported as unfilled. RNG state
#: (``RngKey``/``RngCount``) still pairs when the Linen variables hold it (a ``to_linen``
#: module whose ``nnx.Dropout`` keeps its rngs); the rest is never paired.
RNG_STATE_TYPES: tuple[type[nnx.Variable], ...] = (nnx.RngState,)
EXCLUDED_NNX_TYPES: tuple[type[nnx.Variable], ...] = (
    nnx.RngState,
    nnx.Intermediate,
    nnx.Cache,
    nnx.Perturbation,
)

# Flax layers that exist in both libraries, by class name -> a shared kind.
_LINEN_KINDS = {
    "Dense": "linear",
    "DenseGeneral": "linear_general",
    "Conv": "conv",
    "ConvTranspose": "conv_transpose",
    "BatchNorm": "batch_norm",
    "LayerNorm": "layer_norm",
    "RMSNorm": "rms_norm",
    "GroupNorm": "group_norm",
    "InstanceNorm": "instance_norm",
    "Embed": "embed",
    "Einsum": "einsum",
    "PReLU": "prelu",
}
_NNX_KINDS = {
    "Linear": "linear",
    "LinearGeneral": "linear_general",
    "Conv": "conv",
    "ConvTranspose": "conv_transpose",
    "BatchNorm": "batch_norm",
    "LayerNorm": "layer_norm",
    "RMSNorm": "rms_norm",
    "GroupNorm": "group_norm",
    "InstanceNorm": "instance_norm",
    "Embed": "embed",
    "Einsum": "einsum",
    "PReLU": "prelu",
}


@dataclass
class VarInfo:
    """One variable of one side.

    ``path`` is the full string path (Linen: with the collection first); ``bare`` drops the
    Linen collection (NNX: the collection attribute of a ``ToNNX``, if any); ``rel`` is the
    path below the owning module.
    """

    path: str
    bare: str
    rel: str
    collection: str
    var_type: type | None
    shape: tuple[int, ...]
    dtype: Any  # a numpy dtype, or an extended one (typed PRNG keys): see dtype_of
    call_shape: tuple[int, ...] | None = None

    def per_call_shape(self) -> tuple[int, ...]:
        return self.shape if self.call_shape is None else self.call_shape


@dataclass
class Unit:
    """A module and the variables it owns directly."""

    side: str
    path: Path
    cls_name: str
    kind: str | None
    vars: list[VarInfo]
    order: int | None = None
    inputs: str = ""
    outputs: str = ""
    stack: tuple[int, int] | None = None  # (length, axis) when run sliced under a transform
    alias: str = ""  # Linen: module path after the user's rename rule

    @property
    def name(self) -> str:
        return path_str(self.path) or "<root>"


@dataclass
class ModelRecord:
    """Everything :func:`match` needs to know about one model."""

    side: str
    units: list[Unit]
    vars: dict[str, VarInfo]
    output: Any = None
    excluded: tuple[str, ...] = ()
    module_paths: tuple[str, ...] = ()
    #: Linen: leaves that are no weights (a ``to_linen`` graphdef, ``params_axes`` entries).
    non_weights: tuple[str, ...] = ()
    #: Linen: parameter path -> its logical axis names, read from ``params_axes``.
    axes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Linen: structure leaves by path (a ``to_linen`` module's ``nnx/graphdef``).
    structure: dict[str, Any] = field(default_factory=dict)

    @property
    def has_rng_state(self) -> bool:
        """Whether some variable lives in a collection registered for NNX RNG state."""
        pairs = registered_pairs()
        return any(
            isinstance(t, type) and issubclass(t, RNG_STATE_TYPES)
            for t in {pairs.get(v.collection) for v in self.vars.values()}
        )


@dataclass
class _Call:
    order: int
    cls: type
    method: str
    inputs: str
    outputs: str = ""
    var_shapes: dict[Path, tuple[int, ...]] = field(default_factory=dict)


def _is_array(x: Any) -> bool:
    return isinstance(x, jax.Array | np.ndarray | np.generic | jax.ShapeDtypeStruct)


def dtype_of(dtype: Any) -> Any:
    """A numpy dtype, or JAX's extended dtype as is (typed PRNG keys: ``key<fry>``).

    ``np.dtype`` cannot interpret extended dtypes, and a ``to_linen`` module whose
    ``nnx.Dropout`` keeps its rngs stores such keys in its ``RngKey`` collection.
    """
    if jax.dtypes.issubdtype(dtype, jax.dtypes.extended):
        return dtype
    return np.dtype(dtype)


def dtype_name(dtype: Any) -> str:
    """``'float32'``, or ``'key<fry>'`` for a typed PRNG key (a name is returned as is)."""
    if isinstance(dtype, str):
        return dtype
    return str(dtype_of(dtype).name)


#: Why a Linen variables leaf is no weight: the ``nnx`` collection of a ``to_linen`` module
#: holds its graph definition (structure), and ``params_axes`` (``param_with_axes``, T5X-style
#: code) holds the logical axis names of the parameters, i.e. their sharding. A tuple is what
#: ``self.sow`` appends values to (into a collection that ``init`` keeps, such as ``'losses'``):
#: values of one call, not weights.
STRUCTURE, AXES, SOWN = "structure", "axes", "sown"


def non_weight_leaf(leaf: Any) -> str | None:
    """``STRUCTURE``, ``AXES`` or ``SOWN`` for a Linen variables leaf that is no weight, else
    None."""
    if isinstance(leaf, nnx.GraphDef):
        return STRUCTURE
    if isinstance(leaf, AxisMetadata):
        return AXES
    if isinstance(leaf, tuple | list):
        return SOWN
    return None


def axes_target(path: Path) -> Path | None:
    """The parameter that a ``params_axes`` entry names: ``params_axes/D/kernel_axes`` ->
    ``params/D/kernel`` (Flax's ``param_with_axes`` naming), or None for another path."""
    if len(path) < 2 or path[0] != "params_axes" or not str(path[-1]).endswith("_axes"):
        return None
    return ("params", *path[1:-1], str(path[-1])[: -len("_axes")])


def split_dynamic(args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[list[Any], Callable]:
    """Separates array leaves (traced) from Python values such as ``training=False`` (static)."""
    leaves, treedef = jax.tree.flatten((tuple(args), dict(kwargs)))
    mask = [_is_array(x) for x in leaves]
    dynamic = [x for x, m in zip(leaves, mask, strict=True) if m]

    def rebuild(values: Sequence[Any]) -> tuple[tuple, dict]:
        it = iter(values)
        return jax.tree_util.tree_unflatten(
            treedef, [next(it) if m else x for x, m in zip(leaves, mask, strict=True)]
        )

    return dynamic, rebuild


def _shapes(tree: Any) -> str:
    leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "shape") and hasattr(x, "dtype")]
    return ", ".join(f"{dtype_name(x.dtype)}{list(x.shape)}" for x in leaves)


def _kind(cls: type, table: Mapping[str, str], package: str) -> str | None:
    if cls.__module__.startswith(package):
        return table.get(cls.__name__, "flax." + cls.__name__)
    return None


def _unit(
    side: str,
    path: Path,
    cls: type | None,
    kinds: tuple[Mapping[str, str], str],
    vars_: list[VarInfo],
    rec: _Call | None,
) -> Unit:
    """One module's unit; ``cls`` and ``rec`` are None where its call was not recorded."""
    return Unit(
        side=side,
        path=path,
        cls_name=cls.__name__ if cls else "?",
        kind=_kind(cls, *kinds) if cls else None,
        vars=vars_,
        order=rec.order if rec else None,
        inputs=rec.inputs if rec else "",
        outputs=rec.outputs if rec else "",
        stack=_stack_of(vars_),
    )


def _stack_of(vars_: Sequence[VarInfo]) -> tuple[int, int] | None:
    """(length, axis) when every variable is stored with one extra axis that the call slices."""
    options: set[tuple[int, int]] | None = None
    for v in vars_:
        if v.call_shape is None or v.call_shape == v.shape:
            return None
        if len(v.shape) != len(v.call_shape) + 1:
            return None
        mine = {
            (v.shape[a], a)
            for a in range(len(v.shape))
            if v.shape[:a] + v.shape[a + 1 :] == v.call_shape
        }
        options = mine if options is None else options & mine
        if not options:
            return None
    if not options:
        return None
    return min(options, key=lambda t: t[1])


def _owner(prefixes: set[Path], path: Path) -> Path:
    """The longest prefix of ``path[:-1]`` that is a module path (the root at worst)."""
    for n in range(len(path) - 1, -1, -1):
        if path[:n] in prefixes:
            return path[:n]
    return ()


def _trace_failed(side: str, err: Exception, kwargs: Mapping[str, Any]) -> TraceError:
    arg = "linen_kwargs" if side == "linen" else "nnx_kwargs"
    name = "Linen" if side == "linen" else "NNX"
    return TraceError(
        f"The {name} model could not run abstractly on the sample inputs "
        f"({arg}={dict(kwargs)!r}): {type(err).__name__}: {err}\n"
        f"Fix: pass sample inputs the model accepts, and the call arguments it needs in "
        f"{arg}= (for example training=False)."
    )


# ----------------------------------------------------------------------------------- Linen


def record_linen(
    module: nn.Module,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    method: str | None = None,
) -> ModelRecord:
    """Runs ``module.init`` abstractly and records every module call and variable."""
    calls: dict[Path, _Call] = {}
    counter = itertools.count()

    def interceptor(next_fun, a, k, context):
        m = context.module
        name = context.method_name
        if name == "setup" or name.startswith("<"):
            return next_fun(*a, **k)
        try:
            path = tuple(m.path)
        except Exception:  # an unbound helper module: not part of the variable tree
            return next_fun(*a, **k)
        first = path not in calls
        if first:
            calls[path] = _Call(next(counter), type(m), name, _shapes((a, k)))
        out = next_fun(*a, **k)
        if first:
            rec = calls[path]
            rec.outputs = _shapes(out)
            with contextlib.suppress(Exception):
                for col, tree in m.variables.items():
                    for p, leaf in flatten_mapping(unboxed(tree)).items():
                        if hasattr(leaf, "shape"):
                            rec.var_shapes[(col, *p)] = tuple(leaf.shape)
        return out

    dynamic, rebuild = split_dynamic(args, kwargs)

    def init(values):
        a, k = rebuild(values)
        rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
        with nn.intercept_methods(interceptor):
            return module.init_with_output(rngs, *a, method=method, **k)

    try:
        output, variables = jax.eval_shape(init, dynamic)
    except Exception as err:
        raise _trace_failed("linen", err, kwargs) from err

    flat = flatten_mapping(unboxed(variables))
    module_paths = set(calls) | {()}
    by_owner: dict[Path, list[VarInfo]] = {}
    all_vars: dict[str, VarInfo] = {}
    non_weights: list[str] = []
    axes: dict[str, tuple[str, ...]] = {}
    structure: dict[str, Any] = {}
    for full, leaf in flat.items():
        role = non_weight_leaf(leaf)
        if role is not None:
            non_weights.append(path_str(full))
            target = axes_target(full) if role == AXES else None
            if target is not None:
                axes[path_str(target)] = tuple(leaf.names)
            if role == STRUCTURE:
                structure[path_str(full)] = leaf
            continue
        col, bare = full[0], full[1:]
        owner = _owner(module_paths, bare)
        rel = bare[len(owner) :]
        rec = calls.get(owner)
        info = VarInfo(
            path=path_str(full),
            bare=path_str(bare),
            rel=path_str(rel),
            collection=str(col),
            var_type=None,
            shape=tuple(leaf.shape),
            dtype=dtype_of(leaf.dtype),
            call_shape=rec.var_shapes.get((col, *rel)) if rec else None,
        )
        by_owner.setdefault(owner, []).append(info)
        all_vars[info.path] = info

    units = []
    for owner, vars_ in by_owner.items():
        rec = calls.get(owner)
        cls = rec.cls if rec else None
        units.append(_unit("linen", owner, cls, (_LINEN_KINDS, "flax.linen"), vars_, rec))
    return ModelRecord(
        side="linen",
        units=units,
        vars=all_vars,
        output=output,
        module_paths=tuple(sorted(path_str(p) for p in module_paths)),
        non_weights=tuple(non_weights),
        axes=axes,
        structure=structure,
    )


# ------------------------------------------------------------------------------------- NNX

_TAG = "_linnx_migrate_path"
_PATCH_LOCK = threading.RLock()
_ACTIVE = threading.local()
_BASE_NAMES = frozenset(dir(nnx.Module))
_CONTAINERS = (nnx.List, nnx.Dict)


class _NnxRecorder:
    def __init__(self, rel_paths: Mapping[Path, Sequence[Path]]):
        self.rel_paths = rel_paths
        self.calls: dict[Path, _Call] = {}
        self.counter = itertools.count()
        self.stack: list[Any] = []

    def own_shapes(self, obj: Any, path: Path) -> dict[Path, tuple[int, ...]]:
        out = {}
        for rel in self.rel_paths.get(path, ()):
            node = obj
            try:
                for key in rel:
                    use_item = isinstance(key, int) or not hasattr(node, key)
                    node = node[key] if use_item else getattr(node, key)
                out[rel] = tuple(node.get_value().shape)
            except Exception:  # a layout we cannot walk: the variable keeps its stored shape
                continue
        return out

    def call(self, obj: Any, name: str, fn: Callable, a: tuple, k: dict) -> Any:
        path = getattr(obj, _TAG, None)
        if path is None or (self.stack and self.stack[-1] is obj):
            return fn(obj, *a, **k)
        first = path not in self.calls
        if first:
            self.calls[path] = _Call(
                next(self.counter), type(obj), name, _shapes((a, k)), "", self.own_shapes(obj, path)
            )
        self.stack.append(obj)
        try:
            out = fn(obj, *a, **k)
        finally:
            self.stack.pop()
        if first:
            self.calls[path].outputs = _shapes(out)
        return out


def _wrap(fn: Callable, name: str) -> Callable:
    def wrapper(self, *a, **k):
        recorder = getattr(_ACTIVE, "recorder", None)
        if recorder is None:
            return fn(self, *a, **k)
        return recorder.call(self, name, fn, a, k)

    wrapper.__name__ = getattr(fn, "__name__", name)
    wrapper.__qualname__ = getattr(fn, "__qualname__", name)
    wrapper.__doc__ = fn.__doc__
    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


def _methods_to_wrap(classes: set[type]) -> Iterator[tuple[type, str, Callable]]:
    seen = set()
    for cls in classes:
        for klass in cls.__mro__:
            if klass in seen or not issubclass(klass, nnx.Module) or klass is nnx.Module:
                continue
            if klass.__module__ in ("flax.nnx.module", "flax.nnx.pytreelib", "flax.nnx.object"):
                continue
            seen.add(klass)
            for attr, fn in list(vars(klass).items()):
                if not inspect.isfunction(fn):
                    continue
                if attr != "__call__" and (attr.startswith("_") or attr in _BASE_NAMES):
                    continue
                yield klass, attr, fn


@contextlib.contextmanager
def _recording(classes: set[type], recorder: _NnxRecorder) -> Iterator[None]:
    with _PATCH_LOCK:
        saved = list(_methods_to_wrap(classes))
        for klass, attr, fn in saved:
            setattr(klass, attr, _wrap(fn, attr))
        _ACTIVE.recorder = recorder
        try:
            yield
        finally:
            _ACTIVE.recorder = None
            for klass, attr, fn in reversed(saved):
                setattr(klass, attr, fn)


def _sown_in_linen(module: Any, rel: Path) -> bool:
    """Whether a variable of a ``ToNNX`` module is a value that the Linen module sowed into a
    collection that ``init`` keeps (``self.sow('losses', ...)``): Linen keeps those in a
    tuple, which ``ToNNX`` keeps as a tuple of variables. Not a weight: the Linen side has
    no array there to pair it with."""
    if not isinstance(module, ToNNX) or len(rel) < 2:
        return False
    node = getattr(module, str(rel[0]), None)
    for key in rel[1:-1]:
        try:
            node = node[key]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return False
    return isinstance(node, tuple | list)


def sown_paths(model: nnx.Module) -> set[str]:
    """The paths of the ``ToNNX`` variables of ``model`` that hold sown values (see
    :func:`_sown_in_linen`): no weights, so nothing fills them and nothing reads them."""
    modules = dict(nnx.iter_modules(model))
    owners = {p for p, m in modules.items() if isinstance(m, ToNNX)}
    if not owners:
        return set()
    out = set()
    for path, _ in nnx.to_flat_state(nnx.state(model)):
        owner = next((o for o in owners if path[: len(o)] == o), None)
        if owner is not None and _sown_in_linen(modules[owner], path[len(owner) :]):
            out.add(path_str(path))
    return out


def record_nnx(
    model: nnx.Module,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    method: str | None = None,
    *,
    keep_rng_state: bool = False,
) -> ModelRecord:
    """Calls a copy of ``model`` abstractly and records every module call and variable.

    RNG state (``RngKey``/``RngCount``) is recorded as variables only with
    ``keep_rng_state`` (when the Linen side holds RNG state to pair it with); otherwise it
    is listed in ``excluded`` with the rest of the NNX-only state.
    """
    if not isinstance(model, nnx.Module):
        raise TraceError(
            f"nnx_model={type(model).__name__}: expected an nnx.Module instance.\n"
            "Fix: pass the hand-ported model object, e.g. Model(784, 256, 10, rngs=nnx.Rngs(0))."
        )
    graphdef, state = nnx.split(model)
    modules = dict(nnx.iter_modules(model))
    owners = {p for p, m in modules.items() if not isinstance(m, _CONTAINERS)}
    by_owner: dict[Path, list[tuple[Path, nnx.Variable]]] = {}
    excluded = []
    for path, var in nnx.to_flat_state(nnx.state(model)):
        if isinstance(var, EXCLUDED_NNX_TYPES) and not (
            keep_rng_state and isinstance(var, RNG_STATE_TYPES)
        ):
            excluded.append(path_str(path))
            continue
        owner = _owner(owners, path)
        if _sown_in_linen(modules[owner], path[len(owner) :]):
            excluded.append(path_str(path))
            continue
        by_owner.setdefault(owner, []).append((path, var))
    rel_paths = {o: [p[len(o) :] for p, _ in vs] for o, vs in by_owner.items()}

    recorder = _NnxRecorder(rel_paths)
    dynamic, rebuild = split_dynamic(args, kwargs)

    def run(st, values):
        m = nnx.merge(graphdef, st)
        for p, sub in nnx.iter_modules(m):
            object.__setattr__(sub, _TAG, tuple(p))
        a, k = rebuild(values)
        fn = m if method is None else getattr(m, method)
        # Under nnx.capture, as today's Flax wants a model that sows to run: outside it, sow
        # is deprecated (a warning about linnx's own call, which the user cannot act on).
        return nnx.capture(fn, nnx.Intermediate)(*a, **k)[0]

    try:
        with _recording({type(m) for m in modules.values()}, recorder):
            output = jax.eval_shape(run, state, dynamic)
    except Exception as err:
        raise _trace_failed("nnx", err, kwargs) from err

    units, all_vars = [], {}
    for owner, pvs in by_owner.items():
        rec = recorder.calls.get(owner)
        # A ToNNX part of a partly ported model keeps its Linen variables one attribute per
        # collection (`backbone/params/Conv_0/kernel`); without that collection segment the
        # path is the Linen one (`backbone/Conv_0/kernel`), so such variables pin by name.
        in_linen = isinstance(modules[owner], ToNNX)
        infos = []
        for path, var in pvs:
            rel = path[len(owner) :]
            value = var.get_value()
            info = VarInfo(
                path=path_str(path),
                bare=path_str(owner + rel[1:] if in_linen else path),
                rel=path_str(rel),
                collection=registered_name(type(var)) or type(var).__name__,
                var_type=type(var),
                shape=tuple(value.shape),
                dtype=dtype_of(value.dtype),
                call_shape=rec.var_shapes.get(rel) if rec else None,
            )
            infos.append(info)
            all_vars[info.path] = info
        cls = type(modules[owner])
        units.append(_unit("nnx", owner, cls, (_NNX_KINDS, "flax.nnx"), infos, rec))
    return ModelRecord(
        side="nnx",
        units=units,
        vars=all_vars,
        output=output,
        excluded=tuple(excluded),
        module_paths=tuple(sorted(path_str(p) for p in owners)),
    )
