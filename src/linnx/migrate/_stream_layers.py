"""Stacked Linen arrays that a port unstacks, moved a few layers at a time.

An ``nn.scan`` stack that the NNX port keeps as one array per layer (an ``nnx.List`` of
blocks) is one Linen array of all layers: read whole, it alone can be a third of the
checkpoint. When such an array is bigger than a group, is stored as one chunk, and is only
unstacked along axis 0, its layers are contiguous in the decoded bytes, so
``_checkpoint_stored.read_layers`` decodes its zstd stream piece by piece and hands out a few
layers at a time (about half of ``group_bytes``: the next batch is decoded in a background
thread while this one is written); each batch is made into its NNX values, checked and
written as a part of its own, and verification re-reads the written layers in the same
batches, feeding one checksum in layer order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from ._checkpoint_files import _leaf_meta, _reading, checksum_hasher, restore_part, subtree
from ._checkpoint_stored import open_index, read_layers, zarr_metadata
from ._errors import CheckpointError
from ._plan import Pair
from ._stream_plan import _nbytes
from ._stream_values import _check_finite_group, _transform

__all__ = ["Sliced", "move_layers", "read_back", "sliceable", "verify_layers"]


@dataclasses.dataclass(frozen=True)
class Sliced:
    """A Linen leaf read a few layers at a time: its pairs (one per layer, in layer order),
    its Orbax name, its zarr metadata and how many layers a batch holds."""

    pairs: tuple[Pair, ...]
    name: str
    meta: Mapping[str, Any]
    per_batch: int


def sliceable(
    where: Path,
    pairs: Sequence[Pair],
    metas: Mapping[str, Any],
    index: Mapping[str, tuple[str, ...]],
    group_bytes: int,
) -> dict[str, Sliced]:
    """The Linen leaves to move a few layers at a time: bigger than a group, unstacked along
    axis 0 into one NNX array per layer (every layer used), stored as one plain chunk."""
    by_leaf: dict[str, list[Pair]] = {}
    for p in pairs:
        for leaf in p.linen:
            by_leaf.setdefault(leaf, []).append(p)
    big = {}
    for leaf, ps in by_leaf.items():
        shape = tuple(metas[leaf].shape)
        if _nbytes(metas[leaf]) <= group_bytes or not shape:
            continue
        if not all(
            p.layout.kind == "unstack" and p.layout.linen_axis == 0 and len(p.linen) == 1
            for p in ps
        ):
            continue
        if sorted(p.layout._given("index") for p in ps) == list(range(shape[0])):
            big[leaf] = sorted(ps, key=lambda p: p.layout._given("index"))
    if not big:
        return {}
    names = {leaf: ".".join(index[leaf]) for leaf in big}
    zarr = zarr_metadata(where, set(names.values())) or {}
    out = {}
    for leaf, ps in big.items():
        meta = zarr.get(names[leaf])
        shape = tuple(metas[leaf].shape)
        if meta is not None and tuple(meta["chunks"]) == shape:
            # two batches are alive at once (one decoded while the other is written)
            layer = max(1, _nbytes(metas[leaf]) // shape[0])
            per_batch = max(1, group_bytes // (2 * layer))
            out[leaf] = Sliced(tuple(ps), names[leaf], meta, per_batch)
    return out


def move_layers(
    where: Path,
    leaf: str,
    sliced: Sliced,
    meta: Any,
    live: Mapping[str, tuple[Any, nnx.Variable]],
    write: Callable[[Mapping[str, Any]], None],
    allow_nonfinite: Any,
    fn: str,
) -> tuple[str, int]:
    """Moves ``leaf`` batch by batch (each written with ``write``); returns the checksum of
    the whole leaf in the NNX dtype (what verification compares) and the largest batch."""
    target = np.dtype(sliced.pairs[0].nnx_dtype)
    shape = tuple(meta.shape)
    h = checksum_hasher(target, shape)
    start = largest = 0
    batches = read_layers(
        open_index(where), sliced.name, meta.dtype, shape, sliced.meta, sliced.per_batch
    )
    for batch in _ahead(_named(batches, where, leaf)):
        group = list(sliced.pairs[start : start + len(batch)])
        values = {}
        for p in group:
            local = dataclasses.replace(
                p, layout=dataclasses.replace(p.layout, index=p.layout._given("index") - start)
            )
            values[p.nnx] = _transform(local, [batch], live[p.nnx][1], None)
        _check_finite_group(group, values, allow_nonfinite, fn)
        h.update(np.ascontiguousarray(batch.astype(target, copy=False)).view(np.uint8))
        write(values)
        largest = max(largest, batch.nbytes)
        start += len(batch)
    return h.hexdigest(), largest


def _ahead(items: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """``items``, each next one made in a background thread while this one is used (the
    decoding of the next batch overlaps the writing of this one)."""
    with ThreadPoolExecutor(max_workers=1) as worker:
        coming = worker.submit(next, items, None)
        while (item := coming.result()) is not None:
            coming = worker.submit(next, items, None)
            yield item


def _named(batches: Iterator[np.ndarray], where: Path, leaf: str) -> Iterator[np.ndarray]:
    """``batches``, with a failed read named as a damaged source array."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as e:
            raise CheckpointError(
                f"{str(where)!r} could not be restored: {type(e).__name__}: {str(e)[:300]}\n"
                f"Unreadable arrays (1): {leaf}\n"
                "Fix: the checkpoint is truncated or damaged (copy it again, or use another one)."
            ) from e
        yield batch


def verify_layers(
    reader: Any,
    model_dir: Path,
    written: Mapping[str, Any],
    sliced: Sliced,
    shape: tuple[int, ...],
    live: Mapping[str, tuple[Any, nnx.Variable]],
    digest: str,
) -> bool:
    """Whether the layers written for a sliced leaf, re-read batch by batch and hashed in
    layer order, give the source's checksum."""
    h = checksum_hasher(np.dtype(sliced.pairs[0].nnx_dtype), shape)
    for start in range(0, len(sliced.pairs), sliced.per_batch):
        names = [p.nnx for p in sliced.pairs[start : start + sliced.per_batch]]
        values = read_back(reader, model_dir, written, live, names)
        for n in names:
            h.update(np.ascontiguousarray(values[n]).reshape(-1).view(np.uint8))
    return h.hexdigest() == digest


def read_back(
    reader: Any,
    model_dir: Path,
    written: Mapping[str, Any],
    live: Mapping[str, tuple[Any, nnx.Variable]],
    names: Sequence[str],
) -> dict[str, np.ndarray]:
    """The values of NNX variables ``names`` as written in the checkpoint at ``model_dir``
    (``written``: its tree metadata), read into host memory."""
    keys = {n: (*map(str, live[n][0]), "value") for n in names}
    with _reading(model_dir):
        got = restore_part(
            reader,
            model_dir,
            subtree(written, keys.values()),
            lambda _, m: ocp.RestoreArgs(restore_type=np.ndarray),
        )
    return {n: _leaf_meta(got, keys[n]) for n in names}
