"""Migrating an array by renaming it in the checkpoint's index: no data read into an array,
none written.

Orbax keeps every array of a checkpoint in one OCDBT database, an index over immutable data
files: the array ``params.Dense_0.kernel`` is the keys ``params.Dense_0.kernel/.zarray`` (its
zarr metadata) and ``params.Dense_0.kernel/0.0`` (its compressed chunks). Most of a Linen ->
NNX migration only renames: the array keeps its shape, dtype and bytes, and its key becomes
``layers.0.kernel.value``. For those arrays, restoring and saving again (decoding and encoding
every byte) is wasted work. :func:`rename_in_place` instead makes a database whose data files
are hard links to the source's (nothing is copied; Orbax never changes a data file once
written), and changes its index with TensorStore's ``experimental_copy_range_to``, which
inside one OCDBT database copies references, not values. The database becomes one more part
of the joined checkpoint (``join_orbax_parts``).

Nothing is taken on trust: ``_checkpoint_stored.read_stored`` still reads every renamed
array once as stored, piece by piece, which finds a damaged source by name, gives the digest
of its stored bytes (what verification compares with the written checkpoint) and, decoding
the zstd stream piece by piece, runs the NaN/inf check; memory stays at a few pieces
whatever the array's size.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from flax import nnx

from .._flax_internals import describe_orbax_part, orbax_part_names
from ._checkpoint_files import _leaf_meta, _reading, restore_part, subtree
from ._checkpoint_stored import open_index, read_stored, zarr_metadata
from ._errors import CheckpointError
from ._plan import Pair
from ._stream_plan import _nbytes
from ._stream_values import _check_finite_group, _state

__all__ = ["rename_in_place", "rename_pairs", "stored_results", "verify_renamed"]

#: renaming hard-links all of the source's data files; below this share of the source's bytes
#: renamed, the rest would ride along in the result (an optimizer state, unused leaves), so
#: the arrays are restored and saved instead
MIN_SHARE = 0.9


def rename_in_place(where: Path, db: Path, moves: Sequence[tuple[str, str]]) -> None:
    """Makes ``db`` an OCDBT database holding the source's arrays named in ``moves``, each
    under its new name (``(old, new)``; one old name may get several new ones), and nothing
    else.

    Raises ``OSError`` when the source's files cannot be hard-linked into ``db`` (another
    filesystem): the caller then restores and saves instead."""
    for path in sorted(where.rglob("*")):
        rel = path.relative_to(where)
        top = rel.parts[0]
        if top not in ("manifest.ocdbt", "d") and not top.startswith("ocdbt.process_"):
            continue  # Orbax's metadata files: the part gets its own
        if path.is_dir():
            (db / rel).mkdir(parents=True, exist_ok=True)
        else:
            (db / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(path, db / rel)
    kv = open_index(db)
    for old, new in moves:
        if old != new:
            (kv / f"{old}/").experimental_copy_range_to(kv / f"{new}/").result()
    # Everything outside the new names goes: the gaps between them, in key order (an empty
    # upper bound is no bound).
    news = {new for _, new in moves}
    start = b""
    for prefix in sorted(f"{new}/".encode() for new in news):
        if start < prefix:
            kv.delete_range(ts.KvStore.KeyRange(start, prefix)).result()
        start = prefix[:-1] + b"0"  # just past every key under "name/"
    kv.delete_range(ts.KvStore.KeyRange(start, b"")).result()
    left = {bytes(k).split(b"/")[0].decode() for k in kv.list().result()}
    if left != news:
        raise OSError(f"renaming in the copied index left {sorted(left ^ news)[:5]}")


# -- the pairs of a streamed migration that only rename ---------------------------------------


def rename_pairs(
    where: Path,
    tree: Mapping[str, Any],
    index: Mapping[str, tuple[str, ...]],
    metas: Mapping[str, Any],
    pairs: Sequence[Pair],
    live: Mapping[str, tuple[Any, nnx.Variable]],
    parts_dir: Path,
    writer: Any,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Renames, in a copy of the source's index, the arrays that a pair only renames (same
    shape, same dtype), when they are most of the checkpoint's bytes; writes them as part
    ``parts_dir/0``. Returns NNX path -> new Orbax name (empty when nothing was renamed: the
    restore-and-save path then moves every pair) and the renamed Linen leaves' zarr metadata.
    """
    candidates = [
        p
        for p in pairs
        if p.layout.kind == "copy"
        and len(p.linen) == 1
        and np.dtype(metas[p.linen[0]].dtype) == np.dtype(p.nnx_dtype)
    ]
    if not hasattr(ts.KvStore, "experimental_copy_range_to"):  # another TensorStore
        return {}, {}
    old = {p.linen[0]: ".".join(index[p.linen[0]]) for p in candidates}
    zarr = zarr_metadata(where, set(old.values())) if candidates else None
    if not zarr:
        return {}, {}
    candidates = [p for p in candidates if old[p.linen[0]] in zarr]
    saved = [m for m in jax.tree_util.tree_leaves(tree) if hasattr(m, "shape")]
    share = sum(_nbytes(metas[leaf]) for leaf in {p.linen[0] for p in candidates})
    if not candidates or share < MIN_SHARE * sum(_nbytes(m) for m in saved):
        return {}, {}
    # Orbax writes the new names' metadata itself, for one-element stand-ins: its own
    # format and keys; only the shapes are then set to the renamed data's.
    shadow = parts_dir / "shadow"
    stand_ins = [
        (live[p.nnx][0], live[p.nnx][1], jnp.zeros((1,) * len(p.nnx_shape), p.nnx_dtype))
        for p in candidates
    ]
    writer.save(shadow, _state(stand_ins))
    names = orbax_part_names(shadow)
    new: dict[str, str] = {}
    for p in candidates:
        path = tuple(map(str, live[p.nnx][0]))
        found = [n for keys, n in names.items() if keys[: len(path)] == path]
        if len(found) == 1:
            new[p.nnx] = found[0]
    moves = [(old[p.linen[0]], new[p.nnx]) for p in candidates if p.nnx in new]
    part = parts_dir / "0"
    try:
        if len(new) != len(candidates) or set(new.values()) & {a for a, b in moves if a != b}:
            raise RuntimeError("an Orbax name is ambiguous, or both an old and a new name")
        part.mkdir()
        rename_in_place(where, part / "ocdbt.process_0", moves)
        chunks = {new[p.nnx]: zarr[old[p.linen[0]]]["chunks"] for p in candidates}
        describe_orbax_part(shadow, part, chunks)
    except (OSError, RuntimeError):
        # another filesystem (no hard links), or an Orbax that writes otherwise: restore
        # and save every array instead
        shutil.rmtree(part, ignore_errors=True)
        return {}, {}
    finally:
        shutil.rmtree(shadow, ignore_errors=True)
    return new, {p.linen[0]: zarr[old[p.linen[0]]] for p in candidates}


def stored_results(
    stored: Mapping[str, Future[tuple[str, bool]]],
    pairs: Sequence[Pair],
    renamed: Mapping[str, str],
    allow: Any,
    fn: str,
    where: Path,
    reader: Any,
    tree: Mapping[str, Any],
    index: Mapping[str, tuple[str, ...]],
) -> dict[str, str]:
    """The stored-bytes digests of the renamed Linen leaves; refuses damaged ones by name,
    and NaN/inf as :func:`linen_to_nnx` does (the exact count on the restored array)."""
    digests, bad, suspect = {}, [], []
    for leaf, fut in stored.items():
        try:
            digests[leaf], finite = fut.result()
        except Exception as e:
            bad.append(f"{leaf} ({type(e).__name__}: {str(e)[:200]})")
            continue
        if not finite:
            suspect.append(leaf)
    if bad:
        raise CheckpointError(
            f"{str(where)!r} could not be restored: {len(bad)} array(s) cannot be read as "
            f"stored.\nUnreadable arrays ({len(bad)}): " + ", ".join(bad[:10]) + "\n"
            "Fix: the checkpoint is truncated or damaged (copy it again, or use another one)."
        )
    for leaf in suspect:
        with _reading(where, reader, subtree(tree, [index[leaf]])):
            got = restore_part(
                reader,
                where,
                subtree(tree, [index[leaf]]),
                lambda _, m: ocp.RestoreArgs(restore_type=np.ndarray, dtype=m.dtype),
            )
        group = [p for p in pairs if p.nnx in renamed and p.linen[0] == leaf]
        value = _leaf_meta(got, index[leaf])
        _check_finite_group(group, {p.nnx: value for p in group}, allow, fn)
    return digests


def verify_renamed(
    model_dir: Path, pairs: Sequence[Pair], renamed: Mapping[str, str], digests: Mapping[str, str]
) -> list[str]:
    """The renamed Linen leaves whose stored bytes, re-read from the written checkpoint under
    their new names, differ from the source's."""
    written = open_index(model_dir)
    return [
        p.linen[0]
        for p in pairs
        if p.nnx in renamed and read_stored(written, renamed[p.nnx])[0] != digests[p.linen[0]]
    ]
