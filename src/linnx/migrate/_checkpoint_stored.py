"""Reading an array of an Orbax checkpoint as stored: in byte ranges, never whole.

Orbax keeps every array of a checkpoint in one OCDBT database, and an array as zarr v2 keys:
``name/.zarray`` (shape, dtype, chunks, compressor) and one key per chunk, usually a single
zstd-compressed chunk for the whole array. Restoring a slice through TensorStore decodes all
of that chunk, so these readers go below it: a stored value is read in byte ranges of
:data:`PIECE` bytes (:class:`_Stored`) and its zstd stream decoded piece by piece
(``zstandard``), so memory stays at a few pieces whatever the size of the array.
:func:`read_stored` gives the digest of an array's stored bytes and whether its values are
finite; :func:`read_layers` gives a stacked array a few layers at a time.
"""

from __future__ import annotations

import io
import json
import typing
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import tensorstore as ts
import zstandard

from ._checkpoint_files import DIGEST, HASHES

__all__ = ["PIECE", "open_index", "read_layers", "read_stored", "zarr_metadata"]

#: the size of one read (and of one decoded piece)
PIECE = 4 << 20


def open_index(db: Path) -> Any:
    """The OCDBT database of the checkpoint (or part) at ``db``, as a TensorStore kvstore."""
    return ts.KvStore.open({"driver": "ocdbt", "base": f"file://{db}/"}).result()


def zarr_metadata(where: Path, names: Iterable[str]) -> dict[str, dict[str, Any]] | None:
    """``.zarray`` of each array ``name`` that can be renamed and read as stored, or ``None``
    when the checkpoint is not an OCDBT/zarr v2 one (the restore-and-save path then runs).

    An array qualifies when its chunks are plain C-order bytes, compressed with zstd or not
    at all (what Orbax writes); anything else is left to the restore-and-save path."""
    try:
        saved = json.loads((where / "_METADATA").read_text())
    except (OSError, ValueError):
        return None
    if not (where / "manifest.ocdbt").is_file() or saved.get("use_zarr3", False):
        return None
    out = {}
    try:
        kv = open_index(where)
        found = {name: kv.read(f"{name}/.zarray").result() for name in names}
    except Exception:  # an index TensorStore cannot open: the restore path names the damage
        return None
    for name, got in found.items():
        if got.state != "value":
            continue
        meta = json.loads(got.value)
        compressor = meta.get("compressor")
        if (
            meta.get("filters") is None
            and meta.get("order") == "C"
            and not str(meta.get("dtype", ">")).startswith(">")
            and (compressor is None or compressor.get("id") == "zstd")
        ):
            out[name] = meta
    return out


def read_stored(
    kv: Any, name: str, decode: tuple[Any, Mapping[str, Any]] | None = None
) -> tuple[str, bool]:
    """Reads array ``name`` of the database ``kv`` as stored: the digest of its keys and
    stored bytes and, with ``decode=(dtype, zarr metadata)``, whether every decoded value is
    finite (``True`` without ``decode``).

    Raises ``ValueError`` saying what is wrong when a key cannot be read or a chunk does not
    decode to its size (a truncated or damaged checkpoint)."""
    h = HASHES[DIGEST]()
    keys = sorted(bytes(k) for k in (kv / f"{name}/").list().result())
    if b".zarray" not in keys:
        raise ValueError(f"{name}/.zarray is missing")
    ok = True
    for key in keys:
        raw = _Stored(kv, f"{name}/{key.decode()}", h)
        h.update(key + b"\0")
        if decode is not None and not key.startswith(b"."):
            dtype, meta = decode
            data: Any = raw
            if meta.get("compressor") is not None:
                dctx = zstandard.ZstdDecompressor()
                stream = typing.cast(typing.IO[bytes], raw)
                data = dctx.stream_reader(stream, read_size=PIECE, read_across_frames=True)
            size, finite = _check_values(data, dtype)
            expected = int(np.prod(meta["chunks"], dtype=np.int64)) * np.dtype(dtype).itemsize
            if size != expected:
                raise ValueError(f"{name}/{key.decode()} decodes to {size} bytes, not {expected}")
            ok = ok and finite
        buffer = bytearray(PIECE)
        while raw.readinto(buffer):  # the digest covers every stored byte
            pass
        h.update(str(raw.offset).encode())
    return h.hexdigest(), ok


def _check_values(data: Any, dtype: Any) -> tuple[int, bool]:
    """Bytes decoded from ``data``, and whether all were finite (a sum of finite values is
    finite; a false alarm from overflow is cleared by the caller's exact check)."""
    dtype = np.dtype(dtype)
    inexact = jnp.issubdtype(dtype, jnp.inexact)  # bfloat16 and float8 too
    wide = np.float32 if dtype.itemsize < 4 else None
    size, ok, carry = 0, True, b""
    while piece := data.read(PIECE):
        size += len(piece)
        if not inexact:
            continue
        piece = carry + piece
        cut = len(piece) - len(piece) % dtype.itemsize
        carry = piece[cut:]
        values = np.frombuffer(piece, dtype=dtype, count=cut // dtype.itemsize)
        ok = ok and bool(np.isfinite(np.sum(values, dtype=wide)))
    return size, ok


class _Stored(io.RawIOBase):
    """One stored value as a file, read in byte ranges (never whole), hashed as it is read."""

    def __init__(self, kv: Any, key: str, h: Any = None):
        self.kv, self.key, self.h, self.offset, self.done = kv, key, h, 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.done or not len(buffer):
            return 0
        want = len(buffer)
        try:
            got = self.kv.read(self.key, byte_range=slice(self.offset, self.offset + want))
            result = got.result()
        except ValueError as e:
            if "OUT_OF_RANGE" not in str(e):
                raise
            # the value ends inside this range: read what is left of it
            result = self.kv.read(self.key, byte_range=slice(self.offset, None)).result()
        if result.state != "value":
            raise ValueError(f"{self.key} is missing from the checkpoint's index")
        data = result.value
        n = len(data)
        buffer[:n] = data
        if self.h is not None:
            self.h.update(data)
        self.offset += n
        self.done = n < want
        return n


def read_layers(
    kv: Any, name: str, dtype: Any, shape: tuple[int, ...], meta: Mapping[str, Any], per_batch: int
) -> Iterator[np.ndarray]:
    """The stacked array ``name`` (one chunk, C order) ``per_batch`` layers (along axis 0) at
    a time, in order: each batch a fresh array of shape ``(k, *shape[1:])``.

    Raises ``ValueError`` when the stored value is unreadable or decodes to another size."""
    dtype = np.dtype(dtype)
    layer = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    chunk = meta.get("dimension_separator", ".").join("0" * len(shape)) or "0"
    raw = _Stored(kv, f"{name}/{chunk}")
    data: Any = raw
    if meta.get("compressor") is not None:
        stream = typing.cast(typing.IO[bytes], raw)
        dctx = zstandard.ZstdDecompressor()
        data = dctx.stream_reader(stream, read_size=PIECE, read_across_frames=True)
    for start in range(0, shape[0], per_batch):
        k = min(per_batch, shape[0] - start)
        batch = np.empty((k, *shape[1:]), dtype)
        view = memoryview(typing.cast(Any, batch.reshape(-1).view(np.uint8)))
        got = 0
        while got < len(view) and (n := data.readinto(view[got:])):
            got += n
        if got != len(view):
            raise ValueError(
                f"{name} decodes to {start * layer + got} bytes, not {shape[0] * layer}"
            )
        yield batch
    if data.read(1):
        raise ValueError(f"{name} decodes to more than {shape[0] * layer} bytes")
