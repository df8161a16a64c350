"""Every access linnx makes to private Flax and JAX internals, each checked at import.

linnx needs a few things that today's Flax and JAX expose only privately: the raw metadata
dict of a variable (to keep the guide's ``sharding`` key), whether state may change at the
current trace level (to refuse a write *before* anything is written), the bookkeeping of NNX's
attribute checks (to skip walks that cannot fail), Linen's call context (to run NNX code as
if outside Linen, and to tell a plain top-level call), the mesh of a ``with mesh:`` block, the
hook through which NNX constructs a module, the text of a few Flax errors that carry no
attributes, Orbax's private OCDBT merge (the streamed checkpoint migration joins its groups
with it) and the format of Orbax's metadata files (to describe the arrays a migration renamed
in place). They all live here, and nowhere else under ``src/linnx`` (a test greps for it).

Each access is guarded: at import, :data:`CHECKS` records, by name, whether the internal
looks as this module expects. Where a check fails (another Flax or JAX version), the code
takes its public, slower or less precise route, and ``tests/test_flax_internals.py``, which
asserts every check, fails by name. Where a public route exists it is used instead
(``nnx.unflatten``, ``jax.sharding.get_abstract_mesh``, ``jax.tree_util.keystr``).

Which of these accesses are speed shortcuts, and the one switch that turns all shortcuts
off, is :mod:`linnx.bridge._fast`: the shortcut accessors here refuse to run while the switch
is off (:func:`allow_shortcuts`), so a shortcut that forgets to consult the switch fails the
switch-off test run.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import types
from collections.abc import Callable, Iterator
from typing import Any

import flax.errors
import jax
import numpy as np
from flax import linen as nn
from flax import nnx
from flax.core.scope import Scope

__all__ = [
    "CHECKS",
    "allow_shortcuts",
    "shortcuts_allowed",
    "variable_with_sharding_names",
    "sharding_names_of",
    "can_update_in_place",
    "pytree_nodes",
    "set_checked_attribute",
    "recheck_cannot_fail",
    "install_recheck_filter",
    "outside_linen",
    "linen_context_is_plain",
    "linen_named_call",
    "legacy_mesh",
    "override_pytree_construct",
    "PYTREE_BOOKKEEPING_PREFIX",
    "collection_in",
    "rng_stream_in",
    "shape_mismatch_in",
    "nnx_rng_failure",
    "variable_slot_accessors",
    "pytree_state_type",
    "orbax_join_available",
    "join_orbax_parts",
]

#: Name of each guarded internal -> whether it looks as expected on this install.
CHECKS: dict[str, bool] = {}


def _groups(pattern: re.Pattern[str], text: str) -> tuple[str | Any, ...] | None:
    """The groups of ``pattern``'s first match in ``text`` (None: no match)."""
    found = pattern.search(text)
    return None if found is None else found.groups()


def _check(name: str, probe: Callable[[], object]) -> bool:
    try:
        ok = bool(probe())
    except Exception:  # noqa: BLE001 - any failure means "not as expected"
        ok = False
    CHECKS[name] = ok
    return ok


# -- the shortcut switch, as set by linnx.bridge._fast -----------------------------------------

_shortcuts = [True]


def allow_shortcuts(allowed: bool) -> None:
    """Set by :mod:`linnx.bridge._fast` only: whether the shortcut accessors may run."""
    _shortcuts[0] = allowed


def shortcuts_allowed() -> bool:
    return _shortcuts[0]


class ShortcutWhileSwitchedOff(AssertionError):
    """A speed shortcut ran while ``linnx.bridge._fast`` is switched off: it does not consult
    the switch. (A bug in linnx, not bad input.)"""


def _shortcut(name: str) -> None:
    if not _shortcuts[0]:
        raise ShortcutWhileSwitchedOff(
            f"{name} is a speed shortcut, but the switch in linnx.bridge._fast is off: the "
            f"caller must consult linnx.bridge._fast.enabled() first."
        )


# -- variable metadata ---------------------------------------------------------------------

_VARIABLE_METADATA = _check(
    "Variable._var_metadata is the dict behind get_metadata()",
    lambda: (lambda v: type(v._var_metadata) is dict and v._var_metadata == v.get_metadata())(
        nnx.Param(np.zeros(()))
    ),
)


def variable_with_sharding_names(
    var_type: type[nnx.Variable], value: Any, names: tuple, **metadata: Any
) -> nnx.Variable:
    """Creates ``var_type(value)`` annotated with partition names, without sharding it.

    Flax 0.12 reads partition names from the ``out_sharding`` metadata, and only warns about
    the older ``sharding`` key, which it renames. The bridge guide reads them back as
    ``variable.sharding``, so both keys are kept. ``sharding`` is written directly into the
    metadata dict because every public setter renames it. ``eager_sharding=False``: the
    variable carries the annotation only, whether or not a mesh is active; arrays are laid out
    by ``jax.jit`` with a sharding constraint, as the guide does (and as FLIP 4844 advises).

    Two consequences of today's Flax: NNX code that rebuilds a variable from its metadata
    through the constructor (``nnx.Optimizer`` does, for its state) gets Flax's
    DeprecationWarning about the ``sharding`` key; and NNX's own axis transforms
    (``nnx.vmap``/``nnx.scan`` with ``transform_metadata``) update ``out_sharding`` only, so
    after them ``out_sharding`` (what ``nnx.get_partition_spec`` reads) is authoritative.
    Following them would need metadata hooks, which Flax 0.12 deprecates.
    """
    metadata.setdefault("eager_sharding", False)
    var = var_type(value, out_sharding=tuple(names), **metadata)
    if _VARIABLE_METADATA:
        var._var_metadata["sharding"] = tuple(names)
    return var


def sharding_names_of(var: nnx.Variable) -> tuple | None:
    """The partition names of a variable, from either metadata key."""
    metadata = var.get_metadata()
    names = metadata.get("out_sharding")
    if names is None:
        names = metadata.get("sharding")
    return tuple(names) if names is not None else None


# -- trace levels ----------------------------------------------------------------------------

_CAN_UPDATE = _check(
    "Variable._can_update is a bool", lambda: type(nnx.Param(np.zeros(()))._can_update) is bool
)
_TRACE_STATE = _check(
    "Pytree._pytree__state.trace_state.is_valid()",
    lambda: nnx.Module()._pytree__state.trace_state.is_valid() is True,
)


def can_update_in_place(obj: nnx.Variable | nnx.Pytree) -> bool:
    """Whether a variable or NNX module may be mutated at the current JAX trace level.

    NNX refuses to mutate state created outside the innermost ``jax`` transform (for example
    an ``nnx.Rngs`` count inside ``jax.jit(lambda x: model(x))``) and raises
    ``TraceContextError``. The bridge must know *before* it writes anything (a failed call
    changes nothing), so catching that error from the write itself comes too late; Flax 0.12
    exposes the check only privately (``Variable._can_update``, ``Pytree._pytree__state``).
    Where they are missing, assume yes: the write then raises NNX's own error.
    """
    # Modules first: `isinstance(module, nnx.Variable)` takes Flax's slow path for non-variables.
    if not isinstance(obj, nnx.Pytree) and isinstance(obj, nnx.Variable):
        return bool(obj._can_update) if _CAN_UPDATE else True
    if not _TRACE_STATE:
        return True
    return bool(obj._pytree__state.trace_state.is_valid())


# -- NNX attribute checks ----------------------------------------------------------------------


def _probe_module() -> nnx.Module:
    class Probe(nnx.Module):
        def __init__(self) -> None:
            self.w = nnx.Param(np.zeros(()))

    return Probe()


_NODES_TYPE = type(getattr(nnx.Module, "_pytree__nodes", None))
_PYTREE_SETATTR = nnx.Module.__setattr__
_PYTREE_NODES = _check(
    "Pytree._pytree__nodes maps attribute names to their data status",
    lambda: (
        lambda m: (
            type(vars(m)["_pytree__nodes"]) is _NODES_TYPE
            and hasattr(_NODES_TYPE, "update")
            and vars(m)["_pytree__nodes"]["w"] is True
        )
    )(_probe_module()),
)
_RECHECK = _check(
    "Pytree._check_value(key, value, new_status) re-checks attributes after __init__",
    lambda: (
        callable(nnx.Module._check_value)
        and getattr(nnx.Module, "_pytree__is_pytree", None) is True
    ),
)


def pytree_nodes(node: nnx.Pytree) -> Any:
    """NNX's record of which attributes of ``node`` are data, or None where unknown."""
    nodes = vars(node).get("_pytree__nodes")
    return nodes if _PYTREE_NODES and type(nodes) is _NODES_TYPE else None


def set_checked_attribute(
    node: nnx.Pytree, name: str, value: Any, *, data: bool, explicit: bool = False
) -> None:
    """``setattr(node, name, value)`` for a value the caller has already validated.

    Flax 0.12's ``Pytree.__setattr__`` walks every assigned value to check its data/static
    status (about 20 us per attribute), and ``ToNNX`` assigns a handful per ``lazy_init``
    (a quarter of its own cost on a small model). The bridge's own attributes cannot fail that
    check: the Linen module and the collection names are static, ``rngs`` and the collections
    (``nnx.data`` trees of variables) are data. So this records the status exactly as
    ``__setattr__`` would (``data``; ``explicit`` for a value wrapped in ``nnx.data``) and
    stores the value. Where the bookkeeping is not what this expects (another Flax version)
    or the node may not change at this trace level, it falls back to ``setattr``. A speed
    shortcut: callers consult ``linnx.bridge._fast`` first.
    """
    _shortcut("set_checked_attribute")
    nodes = pytree_nodes(node)
    if (
        nodes is None
        or type(node).__setattr__ is not _PYTREE_SETATTR  # a subclass that intercepts writes
        or not getattr(type(node), "_pytree__is_pytree", False)
        or not can_update_in_place(node)
    ):
        if explicit:
            value = nnx.data(value) if data else nnx.static(value)
        setattr(node, name, value)
        return
    if name not in nodes or (explicit and nodes[name] != data):
        object.__setattr__(node, "_pytree__nodes", nodes.update({name: data}))
    object.__setattr__(node, name, value)


def recheck_cannot_fail(node: nnx.Pytree, key: str, value: Any) -> bool:
    """Whether NNX's re-check of an attribute after ``__init__`` cannot raise.

    After every ``__init__`` NNX re-checks each attribute (``Pytree._check_value`` with no new
    status), which walks the value looking for arrays; that is most of the cost of building a
    ``ToNNX``. The re-check raises only for data found in an attribute registered as static.
    So it cannot fail for an attribute registered as data, nor for a value that holds no data:
    ``None``, a tuple of strings, a Linen module (neither a JAX pytree nor an NNX data type),
    or NNX's own status mapping.
    """
    nodes = pytree_nodes(node)
    if nodes is None:
        return False
    if nodes.get(key) is True:
        return True
    return (
        value is None
        or type(value) is _NODES_TYPE
        or (type(value) is tuple and all(type(v) is str for v in value))
        or isinstance(value, nn.Module)
    )


def install_recheck_filter(
    cls: type[nnx.Pytree], skip: Callable[[nnx.Pytree, str, Any], bool]
) -> None:
    """Makes ``cls`` skip NNX's re-check of an attribute after ``__init__`` where
    ``skip(node, key, value)`` says it cannot fail (see :func:`recheck_cannot_fail`)."""
    if not _RECHECK:
        return
    base_check = cls._check_value

    def _check_value(self: Any, key: str, value: Any, new_status: Any, *a: Any, **kw: Any) -> None:
        if new_status is None and skip(self, key, value):
            return
        base_check(self, key, value, new_status, *a, **kw)

    cls._check_value = _check_value  # type: ignore[method-assign]


#: The prefix of NNX's own bookkeeping attributes on every Pytree (``_pytree__nodes``...).
PYTREE_BOOKKEEPING_PREFIX = "_pytree__"
_check(
    "NNX's bookkeeping attributes start with '_pytree__'",
    lambda: all(
        k.startswith(PYTREE_BOOKKEEPING_PREFIX) for k in vars(nnx.Module()) if k.startswith("_")
    ),
)

_META_CONSTRUCT = _check(
    "PytreeMeta._pytree_meta_construct(cls, self, *args, **kwargs) runs __init__",
    lambda: callable(type(nnx.Module)._pytree_meta_construct),
)


def override_pytree_construct(metaclass: type, construct: Callable[..., None]) -> None:
    """Makes ``metaclass`` build its instances with ``construct(cls, self, *args, **kwargs)``,
    NNX's hook between allocating a module and running its ``__init__``."""
    if not _META_CONSTRUCT:
        raise RuntimeError(
            "linnx.Module needs flax.nnx's PytreeMeta._pytree_meta_construct, which this "
            "Flax version lacks; see tests/test_flax_internals.py."
        )
    metaclass._pytree_meta_construct = construct  # type: ignore[attr-defined]


# -- Linen's call context ----------------------------------------------------------------------

_LINEN_CONTEXT = _check(
    "flax.linen.module keeps _context (module_stack, capture_stack, call_info_stack), "
    "_global_interceptor_stack and _use_named_call",
    lambda: (
        all(
            hasattr(nn.module._context, a)
            for a in ("module_stack", "capture_stack", "call_info_stack")
        )
        and nn.module._context.module_stack[-1] is None
        and hasattr(nn.module, "_global_interceptor_stack")
        and hasattr(nn.module, "_use_named_call")
    ),
)


@contextlib.contextmanager
def outside_linen() -> Iterator[None]:
    """Runs NNX code as if no Linen module were being defined.

    A Linen module created while a Linen method runs attaches itself, as a submodule, to that
    method's module (Linen reads its private ``_context.module_stack``). NNX code inside a
    ``ToLinen`` that creates a Linen module (``linnx.ToNNX(nn.Dense(3), rngs=rngs)``) must
    get a free-standing module instead, as outside Linen: pushing ``None`` on that stack is
    what Linen's own top-level context holds. Flax exposes no public switch for this.
    """
    if not _LINEN_CONTEXT:
        yield
        return
    stack = nn.module._context.module_stack
    stack.append(None)
    try:
        yield
    finally:
        stack.pop()


def linen_context_is_plain() -> bool:
    """Whether no Linen module is being defined and no ``capture_intermediates``,
    ``nn.tabulate`` or method interceptor is active (False where that cannot be told)."""
    _shortcut("linen_context_is_plain")
    if not _LINEN_CONTEXT:
        return False
    context = nn.module._context
    return (
        context.module_stack[-1] is None
        and not context.capture_stack
        and not context.call_info_stack
        and not len(nn.module._global_interceptor_stack)
    )


def linen_named_call() -> bool:
    """Whether Linen runs module calls under ``jax.named_scope`` (``nn.enable_named_call``)."""
    return bool(nn.module._use_named_call) if _LINEN_CONTEXT else False


# -- meshes ------------------------------------------------------------------------------------

try:
    from jax._src import mesh as _jax_mesh
except ImportError:  # pragma: no cover - another JAX
    _jax_mesh = None  # type: ignore[assignment]
_LEGACY_MESH = _check(
    "jax._src.mesh.thread_resources.env.physical_mesh holds the mesh of `with mesh:`",
    lambda: _jax_mesh.thread_resources.env.physical_mesh.empty is True,
)


def legacy_mesh() -> jax.sharding.Mesh | None:
    """The mesh of an enclosing ``with mesh:`` block (deprecated, but the guide's), if any.

    JAX has no public accessor for it: ``jax.sharding.get_abstract_mesh()`` and
    ``get_mesh()`` see only ``jax.set_mesh``.
    """
    if not _LEGACY_MESH:
        return None
    physical = _jax_mesh.thread_resources.env.physical_mesh
    return None if physical.empty else physical


# -- the text of Flax errors that carry no attributes ------------------------------------------

# Linen builds these errors from their arguments and keeps only the message, so the only way
# to name the collection, stream or shapes involved is to read it back. Each reader is checked
# on an error built the way Linen builds it, and returns None where its pattern fails.

_COLLECTION = re.compile(r'collection "([^"]+)"')
_check(
    "ModifyScopeVariableError names the collection as 'collection \"...\"'",
    lambda: (
        _groups(_COLLECTION, str(flax.errors.ModifyScopeVariableError("col", "v", "/"))) == ("col",)
    ),
)


def collection_in(error: flax.errors.ModifyScopeVariableError) -> str | None:
    """The collection a Linen ``ModifyScopeVariableError`` names."""
    found = _COLLECTION.search(str(error))
    return found.group(1) if found else None


_RNG_STREAM = re.compile(r'needs PRNG for "([^"]+)"')


def _linen_rng_error() -> str:
    try:
        Scope({}, rngs={}).make_rng("params")
    except flax.errors.InvalidRngError as e:
        return str(e)
    return ""


_check(
    "Linen's InvalidRngError names the stream as 'needs PRNG for \"...\"'",
    lambda: _groups(_RNG_STREAM, _linen_rng_error()) == ("params",),
)


def rng_stream_in(error: BaseException) -> str | None:
    """The stream a Linen ``InvalidRngError`` says is missing."""
    found = _RNG_STREAM.search(str(error))
    return found.group(1) if found else None


_SHAPES = re.compile(
    r'parameter "([^"]+)" in "([^"]*)".*expected to generate shape (\(.*?\)).*'
    r"has shape (\(.*?\))"
)
_check(
    "ScopeParamShapeError names parameter, scope and both shapes",
    lambda: (
        _groups(
            _SHAPES, str(flax.errors.ScopeParamShapeError("kernel", "/Dense_0", (2, 3), (4, 3)))
        )
        == ("kernel", "/Dense_0", "(4, 3)", "(2, 3)")
    ),
)


def shape_mismatch_in(error: BaseException) -> tuple[str, str, str, str] | None:
    """``(parameter, scope path, shape needed, shape stored)`` of a ``ScopeParamShapeError``."""
    found = _SHAPES.search(str(error))
    return found.groups() if found else None  # type: ignore[return-value]


# What NNX says when a random layer finds no stream: `Rngs` lookup of a missing stream, and
# `nnx.Dropout` without rngs.
_NO_STREAM = "No RngStream named"
_NO_RNGS = "no `rngs` argument was provided"


def _nnx_error(fn: Callable[[], object]) -> str:
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        return str(e)
    return ""


_check(
    "nnx.Rngs says 'No RngStream named' for a missing stream",
    lambda: _NO_STREAM in _nnx_error(lambda: nnx.Rngs(params=0)["dropout"]),
)
_check(
    "nnx.Dropout says 'no `rngs` argument was provided' without rngs",
    lambda: _NO_RNGS in _nnx_error(lambda: nnx.Dropout(0.5)(np.ones(1, np.float32))),
)


def nnx_rng_failure(error: BaseException) -> str | None:
    """``'no-stream'`` (an ``nnx.Rngs`` lacks the stream), ``'no-rngs'`` (a layer such as
    ``nnx.Dropout`` was built without rngs) or None, for an error NNX raised."""
    text = str(error)
    if _NO_STREAM in text:
        return "no-stream"
    if _NO_RNGS in text:
        return "no-rngs"
    return None


# -- linnx.jit: variable slots, NNX's per-object bookkeeping type --------------------------

_RAW_SLOT: Any = vars(nnx.Variable).get("_raw_value")
_META_SLOT: Any = vars(nnx.Variable).get("_var_metadata")
_VARIABLE_SLOTS = _check(
    "Variable keeps its raw value and metadata in the slots _raw_value and _var_metadata",
    lambda: (
        lambda v: (
            isinstance(_RAW_SLOT, types.MemberDescriptorType)
            and isinstance(_META_SLOT, types.MemberDescriptorType)
            and _RAW_SLOT.__get__(v) is v.get_raw_value()
            and _META_SLOT.__get__(v) == v.get_metadata()
        )
    )(nnx.Param(np.zeros(()))),
)


def variable_slot_accessors() -> tuple[
    Callable[[nnx.Variable], Any],
    Callable[[nnx.Variable, Any], None],
    Callable[[nnx.Variable], Any],
]:
    """``(get_raw, set_raw, metadata_of)`` for ``linnx.jit``'s per-call reads and writes.

    The slot descriptors of ``nnx.Variable`` read and write a variable in one C call, where
    ``get_raw_value()``/``set_raw_value()`` add a method call and a trace-level check each
    (``linnx.jit`` checks the trace level once per call instead). ``metadata_of`` returns the
    live metadata mapping, which ``linnx.jit`` compares from call to call. Where the slots are
    not as expected: the public methods (``get_metadata()`` returns a copy, equal in value).
    """
    if _VARIABLE_SLOTS:
        return _RAW_SLOT.__get__, _RAW_SLOT.__set__, _META_SLOT.__get__

    def set_raw(var: nnx.Variable, value: Any) -> None:
        var.set_raw_value(value)

    return nnx.Variable.get_raw_value, set_raw, nnx.Variable.get_metadata


_PYTREE_STATE: Any = type(vars(nnx.Module()).get("_pytree__state"))
_PYTREE_STATE_FLAGS = _check(
    "Pytree._pytree__state has the flags initializing and is_setup (its pytree data)",
    lambda: (
        jax.tree_util.tree_structure(vars(nnx.Module())["_pytree__state"])  # type: ignore[operator]  # jaxlib stub: PyTreeDef unresolved
        == jax.tree_util.tree_structure(_PYTREE_STATE(False, False))
        and _PYTREE_STATE(True, False).initializing is True
        and _PYTREE_STATE(False, True).is_setup is True
    ),
)


def pytree_state_type() -> type | None:
    """The type of NNX's per-object bookkeeping (``_pytree__state``), or None if it changed.

    Its two flags are part of a module's graphdef; ``linnx.jit`` re-checks them through the
    public properties ``initializing`` and ``is_setup`` (None: it treats the object as any
    other pytree node, which is slower to re-check but sees the same changes).
    """
    return _PYTREE_STATE if _PYTREE_STATE_FLAGS else None


# -- Orbax: one checkpoint from parts written one after another -------------------------------
# Orbax is heavy to import (``import linnx`` does not load it), so this check runs on first use
# (and in tests/test_flax_internals.py), not at import.

_ORBAX_JOIN = "Orbax 0.12's OCDBT merge: ocdbt_utils.merge_ocdbt_per_process_files and its layout"


def orbax_join_available() -> bool:
    """Whether Orbax's private OCDBT merge looks as :func:`join_orbax_parts` expects."""
    if _ORBAX_JOIN not in CHECKS:

        def probe() -> bool:
            import inspect

            from orbax.checkpoint._src.asyncio_utils import run_sync
            from orbax.checkpoint._src.serialization import ocdbt_utils, tensorstore_utils

            params = inspect.signature(ocdbt_utils.merge_ocdbt_per_process_files).parameters
            return (
                callable(run_sync)
                and callable(tensorstore_utils.get_ts_context)
                and {"ts_context", "use_zarr3", "enable_validation"} <= set(params)
            )

        _check(_ORBAX_JOIN, probe)
    return CHECKS[_ORBAX_JOIN]


def join_orbax_parts(parts: list[Any], out: Any) -> None:
    """Makes one Orbax checkpoint at ``out`` of checkpoints ``parts`` (``pathlib.Path``\\ s).

    Their OCDBT databases become the per-process databases of ``out``, their metadata files
    (Orbax's on-disk layout: ``_METADATA``, ``_sharding``, ``array_metadatas/``) are united,
    and Orbax's own merge indexes them, so ``ocp.StandardCheckpointer`` restores the result as
    if it had been written in one save. The streamed migration writes its groups this way.
    Raises ``RuntimeError`` where the installed Orbax does not look as expected (the caller
    turns it into a typed error).
    """
    import os

    if not orbax_join_available():
        raise RuntimeError(f"this Orbax differs from the one linnx knows: {_ORBAX_JOIN}")
    from orbax.checkpoint._src.asyncio_utils import run_sync
    from orbax.checkpoint._src.serialization import ocdbt_utils, tensorstore_utils

    out.mkdir()
    (out / "array_metadatas").mkdir()
    metadata: dict[str, Any] | None = None
    shardings: dict[str, Any] = {}
    arrays: list[Any] = []
    for k, part in enumerate(parts):
        os.rename(part / "ocdbt.process_0", out / f"ocdbt.process_{k}")
        md = json.loads((part / "_METADATA").read_text())
        if metadata is None:
            metadata = md
            shutil.copy(part / "_CHECKPOINT_METADATA", out / "_CHECKPOINT_METADATA")
        else:
            metadata["tree_metadata"].update(md["tree_metadata"])
        if (part / "_sharding").exists():
            shardings.update(json.loads((part / "_sharding").read_text()))
        # Orbax writes these only for jax.Arrays (numpy values have none).
        for f in (part / "array_metadatas").glob("*"):
            arrays += json.loads(f.read_text()).get("array_metadatas", [])
    (out / "_METADATA").write_text(json.dumps(metadata))
    (out / "_sharding").write_text(json.dumps(shardings))
    (out / "array_metadatas" / "process_0").write_text(json.dumps({"array_metadatas": arrays}))
    run_sync(
        ocdbt_utils.merge_ocdbt_per_process_files(
            out,
            ts_context=tensorstore_utils.get_ts_context(use_ocdbt=True),
            use_zarr3=False,
            enable_validation=False,
        )
    )
    (out / "commit_success.txt").write_text("Checkpoint commit was successful.")


def _orbax_name(entry: Any) -> str:
    """The parameter name (the key prefix in the database) of a ``_METADATA`` tree entry."""
    return ".".join(str(k["key"]) for k in entry["key_metadata"])


def orbax_part_names(shadow: Any) -> dict[tuple[str, ...], str]:
    """Key path -> parameter name of every array Orbax wrote into ``shadow``."""
    metadata = json.loads((shadow / "_METADATA").read_text())
    return {
        tuple(str(k["key"]) for k in entry["key_metadata"]): _orbax_name(entry)
        for entry in metadata["tree_metadata"].values()
    }


def describe_orbax_part(shadow: Any, part: Any, chunks: Any) -> None:
    """Gives ``part`` (a ``pathlib.Path`` whose ``ocdbt.process_0`` holds renamed arrays)
    Orbax's metadata files.

    ``shadow`` is what Orbax wrote for the same NNX variables holding one-element stand-ins:
    its files have Orbax's own format and keys; only each array's write and chunk shape are
    changed to what the renamed data has (``chunks``, by Orbax parameter name). Raises
    ``RuntimeError`` where those files do not look as expected (the caller then restores and
    saves instead)."""
    for name in ("_CHECKPOINT_METADATA", "_sharding"):
        if (shadow / name).exists():
            shutil.copy(shadow / name, part / name)
    metadata = json.loads((shadow / "_METADATA").read_text())
    patched: set[str] = set()
    for entry in metadata["tree_metadata"].values():
        name = _orbax_name(entry)
        if name in chunks and "write_shape" in entry["value_metadata"]:
            entry["value_metadata"]["write_shape"] = chunks[name]
            patched.add(name)
    (part / "_METADATA").write_text(json.dumps(metadata))
    arrays = []
    for file in sorted((shadow / "array_metadatas").glob("*")):
        arrays += json.loads(file.read_text()).get("array_metadatas", [])
    for entry in arrays:
        meta = entry["array_metadata"]
        if meta["param_name"] in chunks:
            meta["write_shape"] = meta["chunk_shape"] = chunks[meta["param_name"]]
            patched.add(meta["param_name"] + "#array")
    (part / "array_metadatas").mkdir()
    (part / "array_metadatas" / "process_0").write_text(json.dumps({"array_metadatas": arrays}))
    expected = set(chunks) | {f"{n}#array" for n in chunks}
    if patched != expected:
        raise RuntimeError(
            "Orbax's metadata files do not look as linnx expects (no write/chunk shape for "
            f"{sorted(expected - patched)[:5]})"
        )
