"""Orbax checkpoints on both sides of a migration.

Linen side: a directory written by Orbax holding either a variables dict
(``{'params': ..., 'batch_stats': ...}``) or a Flax ``TrainState`` (``step``, ``params``,
``opt_state``, plus any extra fields such as ``batch_stats``). It is read without a target, so
no Linen code has to be rebuilt to read it. A ``CheckpointManager`` root (numbered step
directories) resolves to its latest step.

NNX side: a directory with ``model/`` (an Orbax checkpoint of ``nnx.state(model)``), optionally
``optimizer/`` (of ``nnx.state(optimizer)``), and ``linnx.json`` (what was migrated). Restoring
is the standard NNX recipe::

    state = ocp.StandardCheckpointer().restore(path / 'model', nnx.state(model))
    nnx.update(model, state)

Every write goes to a hidden temporary directory next to the destination, which is renamed
into place only once Orbax has finished, so an interrupted run never leaves a half-written
checkpoint under the destination name, and a failed overwrite leaves the old one intact.
Every checkpoint linnx writes also records a digest (XXH3-128) of each of its files in
``linnx.json``; reading it back checks them, so a truncated or damaged copy is refused by name
instead of restoring garbage. Reads restore into new arrays first and update a model only
when everything has been read and checked, so a failed read leaves the model as it was.
The scratch directory, the rename and the digests live in ``_checkpoint_files.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from .._keypath import path_str
from .._public import public
from ..bridge import ToNNX
from ._checkpoint_boxes import box_record, names_after, rebox, unwrap
from ._checkpoint_files import (
    PathLike,
    _atomic_dir,
    _reading,
    _record_files,
    _tree_metadata,
    _writer,
    recorded_info,
    verify_files,
)
from ._checks import check_mapping, check_nnx, check_path, check_plan
from ._errors import CheckpointError
from ._optim import opt_state_to_linen, opt_state_to_nnx
from ._paths import flatten_mapping, unboxed
from ._plan import Plan
from ._transfer import linen_to_nnx, nnx_to_linen

__all__ = [
    "LinenCheckpoint",
    "read_linen_checkpoint",
    "linen_checkpoint_to_nnx",
    "save_nnx_checkpoint",
    "load_nnx_checkpoint",
    "save_linen_checkpoint",
    "nnx_checkpoint_to_linen",
]

_MARKERS = ("_METADATA", "manifest.ocdbt", "checkpoint")
_TRAIN_STATE_FIELDS = ("step", "opt_state")
_STATIC_FIELDS = ("apply_fn", "tx")
FORMAT = "linnx.nnx-checkpoint/1"
_SAVABLE = (jax.Array, np.ndarray, np.generic, int, float, bool)
_LINEN_FORMAT = "linnx.linen-checkpoint/1"


@public("linnx.migrate")
@dataclass(repr=False)
class LinenCheckpoint:
    """What a Linen checkpoint directory holds, split into the parts a migration needs.

    Attributes:
        variables: the Linen variables dict (``params`` and the other collections). A
            parameter saved boxed (``nn.with_partitioning``, ``nn.with_logical_partitioning``)
            is read back as its box when linnx wrote the checkpoint (the names are recorded
            in ``linnx.json``), as its bare array otherwise: never as ``.../kernel/value``.
        opt_state: the optax state of a ``TrainState`` (dicts and lists), else ``None``.
        step: the ``TrainState`` step, else ``None``.
        kind: ``'variables'`` or ``'train_state'``.
        extra: other ``TrainState`` fields that are not collections (left out).
        boxes: the paths of the boxed parameters and their axis names (``None`` where the
            checkpoint does not record them: Orbax keeps only the array of a box).

    Example:
        >>> from linnx import migrate
        >>> migrate.LinenCheckpoint({'params': {}}).kind
        'variables'
    """

    variables: dict[str, Any]
    opt_state: Any = None
    step: int | None = None
    kind: str = "variables"
    extra: dict[str, Any] = field(default_factory=dict)
    boxes: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        # A summary, never the arrays: a real checkpoint would print gigabytes of numbers.
        leaves = jax.tree_util.tree_leaves(unboxed(self.variables))
        size = sum(getattr(x, "nbytes", 0) for x in leaves)
        parts = [f"kind={self.kind!r}"]
        if self.step is not None:
            parts.append(f"step={self.step}")
        collections = ", ".join(
            f"{name!r}: {len(jax.tree_util.tree_leaves(unboxed(tree)))} arrays"
            for name, tree in self.variables.items()
        )
        parts.append(f"variables={{{collections}}} ({_bytes(size)})")
        if self.opt_state is not None:
            parts.append(f"opt_state={len(jax.tree_util.tree_leaves(self.opt_state))} arrays")
        if self.boxes:
            parts.append(f"boxes={len(self.boxes)}")
        if self.extra:
            parts.append(f"extra={sorted(self.extra)}")
        return f"LinenCheckpoint({', '.join(parts)})"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _is_checkpoint(path: Path) -> bool:
    """An Orbax PyTree item: the directory that holds the tree metadata and the arrays."""
    return path.is_dir() and any((path / m).exists() for m in _MARKERS)


def _item_in(directory: Path) -> Path | None:
    if _is_checkpoint(directory):
        return directory
    items = [p for p in directory.iterdir() if _is_checkpoint(p)]
    if len(items) == 1:
        return items[0]
    for name in ("default", "state", "train_state", "model"):
        if _is_checkpoint(directory / name):
            return directory / name
    return None


def _resolve(path: PathLike) -> Path:
    check_path(path, "read_linen_checkpoint")
    root = Path(path).expanduser().resolve()
    if not root.exists():
        raise CheckpointError(
            f"{str(root)!r} does not exist.\nFix: pass the directory of an Orbax checkpoint "
            "(check the spelling, and the working directory for a relative path)."
        )
    if not root.is_dir():
        raise CheckpointError(f"{str(root)!r} is not a directory.\nFix: pass an Orbax checkpoint.")
    found = _item_in(root)
    steps = sorted(
        (p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    )
    if found is None and steps:
        found = _item_in(steps[-1])
    if found is None:
        raise CheckpointError(
            f"{str(root)!r} is not an Orbax checkpoint: it holds no {_MARKERS[0]} file (nor "
            "does a single item or the latest numbered step directory in it).\n"
            "Fix: pass the directory that Orbax's save() wrote (or a CheckpointManager root)."
        )
    return found


@public("linnx.migrate")
def read_linen_checkpoint(path: PathLike) -> LinenCheckpoint:
    """Reads a Linen checkpoint (variables dict or ``TrainState``) written by Orbax.

    Args:
        path: the checkpoint directory, or a ``CheckpointManager`` root (latest step).

    Returns:
        A :class:`LinenCheckpoint`.

    Raises:
        CheckpointError: the directory is not an Orbax checkpoint, holds something else, or is
            truncated or damaged (a file that linnx recorded is missing or changed, or Orbax
            cannot read it).

    Example:
        >>> import tempfile, jax, jax.numpy as jnp
        >>> tmp = tempfile.TemporaryDirectory()
        >>> from flax import linen as nn
        >>> from linnx import migrate
        >>> variables = nn.Dense(2).init(jax.random.key(0), jnp.ones((1, 3)))
        >>> path = tmp.name + '/ckpt'
        >>> migrate.save_linen_checkpoint(path, variables)
        >>> ckpt = migrate.read_linen_checkpoint(path)
        >>> ckpt.kind, ckpt.variables['params']['kernel'].shape
        ('variables', (3, 2))
        >>> tmp.cleanup()
    """
    where = _resolve(path)
    verify_files(where)
    with ocp.PyTreeCheckpointer() as ckptr:
        # Restored as host numpy arrays: no target, so no sharding to guess (and no warning
        # about it); linen_to_nnx places each value like the NNX variable it fills.
        tree = _tree_metadata(ckptr, where)
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        with _reading(where, ckptr, tree):
            raw = ckptr.restore(where, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    return _split(raw, where)


def _split(raw: Any, where: Path) -> LinenCheckpoint:
    """A restored tree as a :class:`LinenCheckpoint`: boxes folded back, TrainState split."""
    if not isinstance(raw, Mapping) or "params" not in raw:
        keys = list(raw) if isinstance(raw, Mapping) else type(raw).__name__
        raise CheckpointError(
            f"{str(where)!r} holds {keys!r}, neither a Linen variables dict nor a TrainState "
            "(both have a 'params' entry).\n"
            "Fix: restore it yourself and pass the variables dict to linen_to_nnx(...)."
        )
    record = recorded_info(where).get("boxes")
    raw, boxes = unwrap(dict(raw), record if isinstance(record, Mapping) else {})
    if not any(k in raw for k in _TRAIN_STATE_FIELDS):
        return LinenCheckpoint(variables=raw, boxes=boxes)
    variables: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _TRAIN_STATE_FIELDS or key in _STATIC_FIELDS:
            continue
        (variables if isinstance(value, Mapping) else extra)[key] = value
    step = raw.get("step")
    opt_state = unboxed(raw.get("opt_state"))
    return LinenCheckpoint(
        variables=variables,
        opt_state=opt_state,
        step=None if step is None else int(step),
        kind="train_state",
        extra=extra,
        boxes={p: n for p, n in boxes.items() if not p.startswith("opt_state/")},
    )


@public("linnx.migrate")
def linen_checkpoint_to_nnx(
    path: PathLike | LinenCheckpoint,
    nnx_model: nnx.Module,
    plan: Plan,
    *,
    optimizer: nnx.Optimizer | None = None,
    allow_missing: str | Iterable[str] = (),
    allow_unused: str | Iterable[str] = (),
    allow_nonfinite: bool | str | Iterable[str] = False,
    cast: bool = False,
) -> LinenCheckpoint:
    """Reads a Linen checkpoint into an NNX model (and optimizer), following a plan.

    Args:
        path: the Linen checkpoint directory (or what :func:`read_linen_checkpoint` read).
        nnx_model: the hand-ported NNX model; filled in place.
        plan: from :func:`match`.
        optimizer: an ``nnx.Optimizer`` for the model; when given, the ``TrainState``'s
            ``opt_state`` and ``step`` move into it. When omitted they are not migrated.
        allow_missing / allow_unused / allow_nonfinite / cast: as for :func:`linen_to_nnx`.

    Returns:
        The :class:`LinenCheckpoint` that was read (e.g. to :func:`verify` against it).

    Raises:
        CheckpointError: ``optimizer`` is given but the checkpoint has no optimizer state, or
            the checkpoint cannot be read.
        MissingWeightsError, UnusedWeightsError, ShapeMismatchError, NonFiniteValuesError: as
            for :func:`linen_to_nnx`. Nothing is changed then: neither the model nor the
            optimizer.

    Example:
        >>> import tempfile, jax, jax.numpy as jnp
        >>> tmp = tempfile.TemporaryDirectory()
        >>> from flax import linen as nn, nnx
        >>> from linnx import migrate
        >>> x = jnp.ones((1, 3))
        >>> path = tmp.name + '/ckpt'
        >>> migrate.save_linen_checkpoint(path, nn.Dense(2).init(jax.random.key(0), x))
        >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        >>> plan = migrate.match(nn.Dense(2), model, x)
        >>> ckpt = migrate.linen_checkpoint_to_nnx(path, model, plan)
        >>> bool(jnp.all(model.kernel[...] == ckpt.variables['params']['kernel']))
        True
        >>> tmp.cleanup()
    """
    fn = "linen_checkpoint_to_nnx"
    check_nnx(nnx_model, fn)
    check_plan(plan, fn)
    if optimizer is not None:
        check_nnx(optimizer, fn, "optimizer", optimizer=True)
    ckpt = path if isinstance(path, LinenCheckpoint) else read_linen_checkpoint(path)
    if optimizer is not None and ckpt.opt_state is None:
        raise CheckpointError(
            "optimizer=...: the checkpoint holds a variables dict without optimizer state.\n"
            "Fix: leave out optimizer=, or point at a TrainState checkpoint."
        )
    # The weights and the optimizer state are checked separately; the second check may fail
    # after the first wrote, so both objects are put back as they were on any failure.
    variables = rebox(ckpt.variables, ckpt.boxes, set(plan.linen_leaves))
    with _unchanged_on_error(nnx_model, optimizer):
        linen_to_nnx(
            variables,
            nnx_model,
            plan,
            allow_missing=allow_missing,
            allow_unused=allow_unused,
            allow_nonfinite=allow_nonfinite,
            cast=cast,
        )
        if optimizer is not None:
            opt_state_to_nnx(ckpt.opt_state, optimizer, plan, allow_nonfinite=allow_nonfinite)
            if ckpt.step is not None:
                optimizer.step.set_value(jnp.asarray(ckpt.step, optimizer.step.get_value().dtype))
    _keep_names(ckpt, nnx_model, plan)
    return ckpt


def _keep_names(ckpt: LinenCheckpoint, nnx_model: nnx.Module, plan: Plan) -> None:
    """Gives each NNX variable without sharding annotations the axis names of its Linen box.

    They become the variable's ``out_sharding`` metadata (and ``sharding_rules`` for logical
    names), which is what ``nnx.get_partition_spec`` reads; an annotation the port already
    has is kept.
    """
    named = {p: n for p, n in ckpt.boxes.items() if n is not None}
    if not named:
        return
    flat = {path_str(p): v for p, v in flatten_mapping(ckpt.variables).items()}
    live = {path_str(p): v for p, v in nnx.to_flat_state(nnx.state(nnx_model))}
    for pair in plan.pairs:
        var = live.get(pair.nnx)
        sources = [named.get(p) for p in pair.linen]
        if var is None or None in sources or len(set(sources)) != 1:
            continue
        if var.get_metadata().get("out_sharding"):
            continue
        names = names_after(sources[0], pair.layout, len(pair.linen))
        if names is None or len(names) != len(pair.nnx_shape):
            continue
        var.set_metadata("out_sharding", names)
        rules = getattr(flat.get(pair.linen[0]), "rules", None)
        if rules:
            var.set_metadata("sharding_rules", rules)


@contextmanager
def _unchanged_on_error(*objs: Any) -> Iterator[None]:
    """Puts every variable of ``objs`` (NNX models, optimizers; None skipped) back on failure."""
    saved = [
        (var, var.get_value())
        for obj in objs
        if obj is not None
        for _, var in nnx.to_flat_state(nnx.state(obj))
    ]
    try:
        yield
    except BaseException:
        for var, value in saved:
            var.set_value(value)
        raise


def _keyed(tree: Any) -> dict[str, Any]:
    """``{'fc/kernel': leaf}`` for an ``nnx.State`` or Orbax's metadata of one."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        keys = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
        if keys and keys[-1] == "value":  # Orbax stores a variable as {'value': array}
            keys = keys[:-1]
        out["/".join(keys)] = leaf
    return out


def _stored_shape(leaf: Any) -> tuple[int, ...] | None:
    """The shape Orbax saves a leaf with: a typed PRNG key array (an ``nnx.Rngs`` key, as
    ``nnx.Dropout(rngs=...)`` holds) is saved as its raw key data, one axis longer."""
    shape, dtype = getattr(leaf, "shape", None), getattr(leaf, "dtype", None)
    if (
        shape is not None
        and dtype is not None
        and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    ):
        return tuple(jax.eval_shape(jax.random.key_data, leaf).shape)
    return shape


def _check_fits(ckptr: Any, where: Path, state: Any, arg: str) -> None:
    """Refuses, by key path, a saved tree that the target's state cannot take."""
    saved = _keyed(_tree_metadata(ckptr, where))
    target = _keyed(state)
    missing = sorted(set(target) - set(saved))
    unexpected = sorted(set(saved) - set(target))
    mismatched = []
    for key in sorted(set(saved) & set(target)):
        a, b = saved[key], target[key]
        a_shape, b_shape = getattr(a, "shape", None), _stored_shape(b)
        if a_shape is not None and b_shape is not None and tuple(a_shape) != tuple(b_shape):
            mismatched.append(f"{key}: saved {tuple(a_shape)}, {arg} has {tuple(b_shape)}")
    if not (missing or unexpected or mismatched):
        return
    lines = [f"{str(where)!r} does not fit {arg}:"]
    if missing:
        lines.append(f"  missing from the checkpoint ({len(missing)}): {', '.join(missing[:20])}")
    if unexpected:
        lines.append(f"  only in the checkpoint ({len(unexpected)}): {', '.join(unexpected[:20])}")
    lines += [f"  mismatched at {m}" for m in mismatched[:20]]
    lines.append(
        f"Fix: build {arg} exactly as for the save (same class and sizes); nothing was changed."
    )
    raise CheckpointError("\n".join(lines))


@public("linnx.migrate")
def save_nnx_checkpoint(
    path: PathLike,
    nnx_model: nnx.Module,
    *,
    optimizer: nnx.Optimizer | None = None,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> None:
    """Saves an NNX model (and optimizer) as an Orbax checkpoint, atomically.

    Layout: ``path/model`` (``nnx.state(model)``), ``path/optimizer`` (``nnx.state(optimizer)``,
    when given) and ``path/linnx.json``.

    ``linnx.json`` holds ``metadata`` and a digest (XXH3-128) of every file, which
    :func:`load_nnx_checkpoint` checks.

    Raises:
        CheckpointError: ``path`` exists and ``overwrite`` is False, the model has no variables,
            or the write failed (then nothing is left at ``path``, or the previous checkpoint
            there is intact).
        MigrationTypeError: ``nnx_model``, ``optimizer`` or ``metadata`` has the wrong kind.

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> from flax import nnx
        >>> from linnx import migrate
        >>> path = tmp.name + '/nnx'
        >>> migrate.save_nnx_checkpoint(path, nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
        >>> model = migrate.load_nnx_checkpoint(path, nnx.Linear(3, 2, rngs=nnx.Rngs(1)))
        >>> model.kernel.shape
        (3, 2)
        >>> tmp.cleanup()
    """
    fn = "save_nnx_checkpoint"
    check_nnx(nnx_model, fn)
    if optimizer is not None:
        check_nnx(optimizer, fn, "optimizer", optimizer=True)
    check_mapping(metadata, fn, "metadata", "{'source': 'run-42'}", optional=True)
    items = [("model", nnx.state(nnx_model))]
    if optimizer is not None:
        items.append(("optimizer", nnx.state(optimizer)))
    for name, state in items:
        if not jax.tree_util.tree_leaves(state):
            # Orbax refuses an empty tree only after it has started writing.
            raise CheckpointError(
                f"{fn}: the {name} has no variables, so there is nothing to save.\n"
                f"Fix: pass the model whose variables you want to keep."
            )
    with _atomic_dir(path, overwrite, fn) as tmp, _writer() as ckptr:
        tmp.mkdir()
        for name, state in items:
            ckptr.save(tmp / name, state)
        info = {**dict(metadata or {}), "format": FORMAT, "optimizer": optimizer is not None}
        _record_files(tmp, info)


@public("linnx.migrate")
def load_nnx_checkpoint(
    path: PathLike,
    nnx_model: nnx.Module,
    *,
    optimizer: nnx.Optimizer | None = None,
) -> nnx.Module:
    """Restores a checkpoint written by :func:`save_nnx_checkpoint` into a model, in place.

    The model (concrete or from ``nnx.eval_shape``) gives the target structure; this is the
    usual ``nnx.state`` / ``nnx.update`` recipe.

    Returns:
        ``nnx_model``, restored.

    Raises:
        CheckpointError: ``path`` has no ``model`` item (or no ``optimizer`` item when asked),
            its files are truncated or damaged, or it does not fit the model (the message
            lists the key paths). Nothing is changed then.
        MigrationTypeError: ``nnx_model`` or ``optimizer`` has the wrong kind.

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> from flax import nnx
        >>> from linnx import migrate
        >>> path = tmp.name + '/nnx'
        >>> src = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        >>> migrate.save_nnx_checkpoint(path, src)
        >>> dst = migrate.load_nnx_checkpoint(path, nnx.Linear(3, 2, rngs=nnx.Rngs(1)))
        >>> bool((dst.kernel[...] == src.kernel[...]).all())
        True
        >>> tmp.cleanup()
    """
    fn = "load_nnx_checkpoint"
    check_path(path, fn)
    check_nnx(nnx_model, fn)
    if optimizer is not None:
        check_nnx(optimizer, fn, "optimizer", optimizer=True)
    root = Path(path).expanduser().resolve()
    items = [("model", nnx_model)] + ([("optimizer", optimizer)] if optimizer is not None else [])
    for name, _ in items:
        if not _is_checkpoint(root / name):
            raise CheckpointError(
                f"{str(root)!r} has no {name!r} item.\nFix: pass a directory written by "
                "save_nnx_checkpoint (or `linnx migrate-weights`)"
                + (", with an optimizer." if name == "optimizer" else ".")
            )
    _check_initialized(nnx_model, fn)
    verify_files(root)
    # Everything is read and checked before anything is updated.
    restored = []
    with _writer() as ckptr:
        for name, obj in items:
            arg = "nnx_model" if name == "model" else name
            _check_fits(ckptr, root / name, nnx.state(obj), arg)
            with _reading(root / name):
                restored.append((obj, ckptr.restore(root / name, nnx.state(obj))))
    for obj, state in restored:
        nnx.update(obj, state)
    return nnx_model


def _check_initialized(nnx_model: nnx.Module, fn: str) -> None:
    """Refuses a model holding a ``ToNNX`` that has no variables yet (no ``lazy_init``)."""
    empty = [
        path_str(p) or "nnx_model"
        for p, node in nnx.iter_graph(nnx_model)
        if isinstance(node, ToNNX) and not node.linen_collections
    ]
    if empty:
        raise CheckpointError(
            f"{fn}(nnx_model=...): the ToNNX at {', '.join(empty[:5])} was never initialized, "
            "so it has no variables to restore into.\n"
            "Fix: call lazy_init first, e.g. linnx.lazy_init(nnx_model, sample_input) (or "
            "nnx_model.lazy_init(sample_input)), then load; nothing was changed."
        )


@public("linnx.migrate")
def save_linen_checkpoint(path: PathLike, tree: Any, *, overwrite: bool = False) -> None:
    """Saves a Linen variables dict (or a ``TrainState``-like dict) with Orbax, atomically.

    A ``linnx.json`` next to Orbax's files records the digest of each file, which
    :func:`read_linen_checkpoint` checks.

    Raises:
        CheckpointError: ``path`` exists and ``overwrite`` is False, the tree is empty or holds
            leaves that are not arrays, or the write failed (then nothing is left at ``path``,
            or the previous checkpoint there is intact).

    Example:
        >>> import tempfile, jax, jax.numpy as jnp
        >>> tmp = tempfile.TemporaryDirectory()
        >>> from flax import linen as nn
        >>> from linnx import migrate
        >>> path = tmp.name + '/linen'
        >>> variables = nn.Dense(2).init(jax.random.key(0), jnp.ones((1, 3)))
        >>> migrate.save_linen_checkpoint(path, variables)
        >>> sorted(migrate.read_linen_checkpoint(path).variables['params'])
        ['bias', 'kernel']
        >>> tmp.cleanup()
    """
    fn = "save_linen_checkpoint"
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    if not leaves:
        # Orbax refuses an empty tree only after it has started writing.
        raise CheckpointError(
            f"{fn}(tree={tree!r:.60}): the tree has no arrays, so there is nothing to save.\n"
            "Fix: pass the variables dict, e.g. {'params': params, 'batch_stats': stats}."
        )
    bad = [jax.tree_util.keystr(p) for p, leaf in leaves if not isinstance(leaf, _SAVABLE)]
    if bad:
        raise CheckpointError(
            f"Cannot save {', '.join(bad[:10])}: only arrays and numbers can be saved.\n"
            "Fix: convert those leaves to arrays, or leave them out of the tree."
        )
    with _atomic_dir(path, overwrite, fn) as tmp, _writer() as ckptr:
        ckptr.save(tmp, tree)
        info: dict[str, Any] = {"format": _LINEN_FORMAT}
        boxes = box_record(tree)
        if boxes:  # Orbax keeps a box's array only; its axis names live here
            info["boxes"] = boxes
        _record_files(tmp, info)


@public("linnx.migrate")
def nnx_checkpoint_to_linen(
    src: PathLike,
    dst: PathLike,
    nnx_model: nnx.Module,
    plan: Plan,
    *,
    optimizer: nnx.Optimizer | None = None,
    overwrite: bool = False,
    allow_nonfinite: bool | str | Iterable[str] = False,
) -> dict[str, Any]:
    """Turns an NNX checkpoint back into a Linen one, following a plan.

    Without ``optimizer`` the Linen checkpoint is a variables dict; with it, a
    ``TrainState``-like dict (``step``, ``params``, ``opt_state``, other collections).

    Args:
        src: a directory written by :func:`save_nnx_checkpoint`.
        dst: the Linen checkpoint to write.
        nnx_model: a model of the right structure (restored in place as a side effect).
        plan: from :func:`match`.
        optimizer: an ``nnx.Optimizer`` of the same structure as the saved one.
        overwrite: replace ``dst`` if it exists.
        allow_nonfinite: as for :func:`nnx_to_linen`.

    Returns:
        The tree that was saved.

    Raises:
        CheckpointError: ``dst`` exists (without ``overwrite``), ``src`` cannot be read, or
            the write failed. ``nnx_model`` and ``optimizer`` are then left as they were.
        MissingWeightsError, UnusedWeightsError, NonFiniteValuesError: as for
            :func:`nnx_to_linen`.

    Example:
        >>> import tempfile, jax.numpy as jnp
        >>> tmp = tempfile.TemporaryDirectory()
        >>> from flax import linen as nn, nnx
        >>> from linnx import migrate
        >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        >>> root = tmp.name
        >>> migrate.save_nnx_checkpoint(root + '/nnx', model)
        >>> plan = migrate.match(nn.Dense(2), model, jnp.ones((1, 3)))
        >>> tree = migrate.nnx_checkpoint_to_linen(root + '/nnx', root + '/linen', model, plan)
        >>> migrate.read_linen_checkpoint(root + '/linen').variables['params']['kernel'].shape
        (3, 2)
        >>> tmp.cleanup()
    """
    fn = "nnx_checkpoint_to_linen"
    check_path(dst, fn, "dst")
    check_plan(plan, fn)
    if Path(dst).expanduser().exists() and not overwrite:  # before any work
        raise CheckpointError(
            f"{str(Path(dst).expanduser().resolve())!r} already exists.\nFix: choose a new "
            "destination, or pass overwrite=True to replace it."
        )
    with _unchanged_on_error(
        nnx_model if isinstance(nnx_model, nnx.Pytree) else None,
        optimizer if isinstance(optimizer, nnx.Pytree) else None,
    ):
        load_nnx_checkpoint(src, nnx_model, optimizer=optimizer)
        variables = nnx_to_linen(nnx_model, plan, allow_nonfinite=allow_nonfinite)
        if optimizer is None:
            tree: dict[str, Any] = dict(variables)
        else:
            tree = {
                **variables,
                "step": int(optimizer.step.get_value()),
                "opt_state": opt_state_to_linen(optimizer, plan),
            }
        save_linen_checkpoint(dst, tree, overwrite=overwrite)
    return tree
