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
checkpoint under the destination name.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from flax.core import meta

from ._errors import CheckpointError
from ._optim import opt_state_to_linen, opt_state_to_nnx
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

PathLike = str | os.PathLike


@dataclass
class LinenCheckpoint:
    """What a Linen checkpoint directory holds, split into the parts a migration needs.

    Attributes:
        variables: the Linen variables dict (``params`` and the other collections).
        opt_state: the optax state of a ``TrainState`` (dicts and lists), else ``None``.
        step: the ``TrainState`` step, else ``None``.
        kind: ``'variables'`` or ``'train_state'``.
        extra: other ``TrainState`` fields that are not collections (left out).

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
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise CheckpointError(f"{str(root)!r} is not a directory.\nFix: pass an Orbax checkpoint.")
    found = _item_in(root)
    steps = sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()),
                   key=lambda p: int(p.name))  # fmt: skip
    if found is None and steps:
        found = _item_in(steps[-1])
    if found is None:
        raise CheckpointError(
            f"{str(root)!r} is not an Orbax checkpoint: it holds no {_MARKERS[0]} file (nor "
            "does a single item or the latest numbered step directory in it).\n"
            "Fix: pass the directory that Orbax's save() wrote (or a CheckpointManager root)."
        )
    return found


def read_linen_checkpoint(path: PathLike) -> LinenCheckpoint:
    """Reads a Linen checkpoint (variables dict or ``TrainState``) written by Orbax.

    Args:
        path: the checkpoint directory, or a ``CheckpointManager`` root (latest step).

    Returns:
        A :class:`LinenCheckpoint`.

    Raises:
        CheckpointError: the directory is not an Orbax checkpoint, or holds something else.

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
    with ocp.PyTreeCheckpointer() as ckptr:
        # Restored as host numpy arrays: no target, so no sharding to guess (and no warning
        # about it); linen_to_nnx places each value like the NNX variable it fills.
        tree = ckptr.metadata(where).item_metadata.tree
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        raw = ckptr.restore(where, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    if not isinstance(raw, Mapping) or "params" not in raw:
        keys = list(raw) if isinstance(raw, Mapping) else type(raw).__name__
        raise CheckpointError(
            f"{str(where)!r} holds {keys!r}, neither a Linen variables dict nor a TrainState "
            "(both have a 'params' entry).\n"
            "Fix: restore it yourself and pass the variables dict to linen_to_nnx(...)."
        )
    raw = dict(raw)
    if not any(k in raw for k in _TRAIN_STATE_FIELDS):
        return LinenCheckpoint(variables=meta.unbox(raw))
    variables, extra = {}, {}
    for key, value in raw.items():
        if key in _TRAIN_STATE_FIELDS or key in _STATIC_FIELDS:
            continue
        (variables if isinstance(value, Mapping) else extra)[key] = value
    step = raw.get("step")
    return LinenCheckpoint(
        variables=meta.unbox(variables),
        opt_state=raw.get("opt_state"),
        step=None if step is None else int(step),
        kind="train_state",
        extra=extra,
    )


def linen_checkpoint_to_nnx(
    path: PathLike | LinenCheckpoint,
    nnx_model: nnx.Module,
    plan: Plan,
    *,
    optimizer: nnx.Optimizer | None = None,
    allow_missing: str | Iterable[str] = (),
    allow_unused: str | Iterable[str] = (),
) -> LinenCheckpoint:
    """Reads a Linen checkpoint into an NNX model (and optimizer), following a plan.

    Args:
        path: the Linen checkpoint directory (or what :func:`read_linen_checkpoint` read).
        nnx_model: the hand-ported NNX model; filled in place.
        plan: from :func:`match`.
        optimizer: an ``nnx.Optimizer`` for the model; when given, the ``TrainState``'s
            ``opt_state`` and ``step`` move into it. When omitted they are not migrated.
        allow_missing / allow_unused: as for :func:`linen_to_nnx`.

    Returns:
        The :class:`LinenCheckpoint` that was read (e.g. to :func:`verify` against it).

    Raises:
        CheckpointError: ``optimizer`` is given but the checkpoint has no optimizer state.
        MissingWeightsError, UnusedWeightsError, ShapeMismatchError: as for
        :func:`linen_to_nnx`.

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
    ckpt = path if isinstance(path, LinenCheckpoint) else read_linen_checkpoint(path)
    if optimizer is not None and ckpt.opt_state is None:
        raise CheckpointError(
            "optimizer=...: the checkpoint holds a variables dict without optimizer state.\n"
            "Fix: leave out optimizer=, or point at a TrainState checkpoint."
        )
    linen_to_nnx(
        ckpt.variables, nnx_model, plan, allow_missing=allow_missing, allow_unused=allow_unused
    )
    if optimizer is not None:
        opt_state_to_nnx(ckpt.opt_state, optimizer, plan)
        if ckpt.step is not None:
            optimizer.step.set_value(jnp.asarray(ckpt.step, optimizer.step.get_value().dtype))
    return ckpt


@contextmanager
def _atomic_dir(path: PathLike, overwrite: bool) -> Iterator[Path]:
    dst = Path(path).expanduser().resolve()
    if dst.exists() and not overwrite:
        raise CheckpointError(
            f"{str(dst)!r} already exists.\nFix: choose a new destination, or pass "
            "overwrite=True (--overwrite) to replace it."
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    # A private directory on the same filesystem holds the work (and anything Orbax leaves
    # next to it on failure); one rename publishes the result.
    scratch = dst.parent / f".{dst.name}.linnx-tmp-{uuid.uuid4().hex[:8]}"
    scratch.mkdir()
    work = scratch / dst.name
    try:
        yield work
        old = scratch / "replaced"
        if dst.exists():
            os.rename(dst, old)
        try:
            os.rename(work, dst)
        except BaseException:
            if old.exists():
                os.rename(old, dst)  # put the previous checkpoint back
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def _writer() -> Iterator[ocp.StandardCheckpointer]:
    """A checkpointer whose background work is over before the caller cleans up, even on error."""
    ckptr = ocp.StandardCheckpointer()
    try:
        yield ckptr
        ckptr.wait_until_finished()
    except BaseException:
        with suppress(Exception):
            ckptr.wait_until_finished()
        raise
    finally:
        ckptr.close()


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

    Raises:
        CheckpointError: ``path`` exists and ``overwrite`` is False.

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
    with _atomic_dir(path, overwrite) as tmp, _writer() as ckptr:
        tmp.mkdir()
        ckptr.save(tmp / "model", nnx.state(nnx_model))
        if optimizer is not None:
            ckptr.save(tmp / "optimizer", nnx.state(optimizer))
        ckptr.wait_until_finished()
        info = {"format": FORMAT, "optimizer": optimizer is not None, **dict(metadata or {})}
        (tmp / "linnx.json").write_text(json.dumps(info, indent=1, default=str))


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
        CheckpointError: ``path`` has no ``model`` item, or no ``optimizer`` item when asked.

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
    root = Path(path).expanduser().resolve()
    items = [("model", nnx_model)] + ([("optimizer", optimizer)] if optimizer is not None else [])
    with ocp.StandardCheckpointer() as ckptr:
        for name, obj in items:
            if not _is_checkpoint(root / name):
                raise CheckpointError(
                    f"{str(root)!r} has no {name!r} item.\nFix: pass a directory written by "
                    "save_nnx_checkpoint (or `linnx migrate-weights`)"
                    + (", with an optimizer." if name == "optimizer" else ".")
                )
            nnx.update(obj, ckptr.restore(root / name, nnx.state(obj)))
    return nnx_model


def save_linen_checkpoint(path: PathLike, tree: Any, *, overwrite: bool = False) -> None:
    """Saves a Linen variables dict (or a ``TrainState``-like dict) with Orbax, atomically.

    Raises:
        CheckpointError: ``path`` exists and ``overwrite`` is False.

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
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    bad = [jax.tree_util.keystr(p) for p, leaf in leaves if not isinstance(leaf, _SAVABLE)]
    if bad:
        raise CheckpointError(
            f"Cannot save {', '.join(bad[:10])}: only arrays and numbers can be saved.\n"
            "Fix: convert those leaves to arrays, or leave them out of the tree."
        )
    with _atomic_dir(path, overwrite) as tmp, _writer() as ckptr:
        ckptr.save(tmp, tree)


def nnx_checkpoint_to_linen(
    src: PathLike,
    dst: PathLike,
    nnx_model: nnx.Module,
    plan: Plan,
    *,
    optimizer: nnx.Optimizer | None = None,
    overwrite: bool = False,
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

    Returns:
        The tree that was saved.

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
    load_nnx_checkpoint(src, nnx_model, optimizer=optimizer)
    variables = nnx_to_linen(nnx_model, plan)
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


for _obj in (
    LinenCheckpoint,
    read_linen_checkpoint,
    linen_checkpoint_to_nnx,
    save_nnx_checkpoint,
    load_nnx_checkpoint,
    save_linen_checkpoint,
    nnx_checkpoint_to_linen,
):
    _obj.__module__ = "linnx.migrate"
del _obj
