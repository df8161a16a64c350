"""The transactional file handling under every checkpoint linnx writes and reads.

Every write goes to a hidden temporary directory next to the destination, which is renamed
into place only once Orbax has finished, so an interrupted run never leaves a half-written
checkpoint under the destination name, and a failed overwrite leaves the old one intact.
Every checkpoint linnx writes also records a digest of each of its files in ``linnx.json``
(XXH3-128: it runs at memory speed, so recording it adds little to a multi-gigabyte save;
records written with SHA-256 by earlier versions are still checked); reading it back checks
them, so a truncated or damaged copy is refused by name instead of restoring garbage. The
digest finds damage, not tampering: it is not a cryptographic signature.

What goes into the files (Orbax trees, the NNX and Linen layouts) is ``_checkpoint.py``'s
business; this module knows directories, files and digests, the synchronous Orbax writer that
the scratch-and-rename relies on, Orbax's partial restore (and naming the arrays a damaged
checkpoint cannot give back), and joining checkpoints written in parts into one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import xxhash

from .._errors import LinnxError
from ._checks import check_path
from ._errors import CheckpointError

_INFO = "linnx.json"  # what was written, and the digest of every file

PathLike = str | os.PathLike


@contextmanager
def _atomic_dir(path: PathLike, overwrite: bool, fn: str) -> Iterator[Path]:
    """Yields a scratch directory to write into; publishes it at ``path`` only on success.

    On failure nothing appears at ``path`` (an existing checkpoint there is untouched), no
    scratch is left behind, and parent directories created for the write are removed again.
    """
    check_path(path, fn)
    dst = Path(path).expanduser().resolve()
    if dst.exists() and not overwrite:
        raise CheckpointError(
            f"{str(dst)!r} already exists.\nFix: choose a new destination, or pass "
            "overwrite=True (--overwrite) to replace it."
        )
    blocker = next((p for p in dst.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise CheckpointError(
            f"{fn}: cannot write {str(dst)!r}: {str(blocker)!r} is a file, not a directory.\n"
            "Fix: choose a destination whose parent is a directory (or can be created)."
        )
    created = [p for p in dst.parents if not p.exists()]
    dst.parent.mkdir(parents=True, exist_ok=True)
    # A private directory on the same filesystem holds the work (and anything Orbax leaves
    # next to it on failure); one rename publishes the result.
    scratch = dst.parent / f".{dst.name}.linnx-tmp-{uuid.uuid4().hex[:8]}"
    published = keep_scratch = False
    try:
        scratch.mkdir()
        work = scratch / dst.name
        yield work
        old = scratch / "replaced"
        if dst.exists():
            os.rename(dst, old)
        try:
            os.rename(work, dst)
        except BaseException as e:
            if old.exists():
                try:
                    os.rename(old, dst)  # put the previous checkpoint back
                except OSError:
                    # Never delete the only copy of the previous checkpoint.
                    keep_scratch = True
                    raise CheckpointError(
                        f"{fn}: writing {str(dst)!r} failed ({type(e).__name__}: {e}), and "
                        f"moving the previous checkpoint back failed too.\n"
                        f"It is intact at {str(old)!r}.\n"
                        f"Fix: move it back by hand: mv {str(old)!r} {str(dst)!r}"
                    ) from e
            raise
        published = True
    except LinnxError:
        raise
    except Exception as e:
        state = (
            f"{str(dst)!r} is unchanged" if dst.exists() else f"nothing was created at {str(dst)!r}"
        )
        raise CheckpointError(
            f"{fn}: writing {str(dst)!r} failed: {type(e).__name__}: {e}\n"
            f"The write was not completed, so {state}.\n"
            "Fix: see the cause above (disk space, permissions, what was being saved), then "
            "run it again."
        ) from e
    finally:
        if not keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        if not published and not keep_scratch:
            for parent in created:  # innermost first; only the empty ones this call made
                with suppress(OSError):
                    parent.rmdir()


@contextmanager
def _writer() -> Iterator[ocp.Checkpointer]:
    """A synchronous checkpointer: every byte is on disk when ``save`` returns.

    The asynchronous one would keep writing in background threads after a failed save, and
    could recreate the scratch directory after it was cleaned up.
    """
    ckptr = ocp.Checkpointer(ocp.StandardCheckpointHandler())
    try:
        yield ckptr
    finally:
        ckptr.close()


#: digest name in ``linnx.json`` -> hash constructor; new records use :data:`DIGEST`.
HASHES: dict[str, Any] = {"xxh3_128": xxhash.xxh3_128, "sha256": hashlib.sha256}
DIGEST = "xxh3_128"


def _digest(path: Path, algorithm: str = DIGEST) -> str:
    h = HASHES[algorithm]()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _record_files(directory: Path, info: dict[str, Any]) -> None:
    """Writes ``linnx.json`` with ``info`` and the digest of every file under ``directory``."""
    files = {
        p.relative_to(directory).as_posix(): {"bytes": p.stat().st_size, DIGEST: _digest(p)}
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != _INFO
    }
    text = json.dumps({**info, "files": files}, indent=1, default=str)
    (directory / _INFO).write_text(text)


def recorded_info(directory: Path) -> dict[str, Any]:
    """What ``linnx.json`` in ``directory`` says (after :func:`verify_files`); ``{}`` if none."""
    try:
        info = json.loads((directory / _INFO).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


def verify_files(directory: Path) -> None:
    """Checks the files that ``linnx.json`` in ``directory`` records; no record, no check."""
    record = directory / _INFO
    if not record.is_file():
        return
    try:
        files = json.loads(record.read_text()).get("files", {})
        if not isinstance(files, dict):
            raise ValueError("'files' is not a mapping")
    except (ValueError, UnicodeDecodeError, AttributeError) as e:
        raise CheckpointError(
            f"{str(record)!r} is damaged ({e}), so the checkpoint cannot be checked.\n"
            "Fix: copy the checkpoint again from its source, or use another one."
        ) from e
    problems = []
    for rel, expected in files.items():
        file = directory / rel
        if not isinstance(expected, dict):
            problems.append(f"{rel}: its record in {_INFO} is unreadable")
        elif not file.is_file():
            problems.append(f"{rel}: missing")
        elif file.stat().st_size != expected.get("bytes"):
            problems.append(
                f"{rel}: {file.stat().st_size} bytes, {expected.get('bytes')} when written"
            )
        elif not any(name in expected for name in HASHES):
            problems.append(f"{rel}: its record in {_INFO} has no digest")
        elif _digest(file, algo := next(n for n in HASHES if n in expected)) != expected[algo]:
            problems.append(f"{rel}: contents changed since it was written")
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:10])
        more = f"\n  ... ({len(problems) - 10} more)" if len(problems) > 10 else ""
        raise CheckpointError(
            f"{str(directory)!r} is truncated or damaged: {len(problems)} of the "
            f"{len(files)} files recorded when it was written are missing or changed.\n"
            f"{shown}{more}\n"
            "Fix: copy the checkpoint again from its source (an interrupted copy or sync "
            "truncates files), or use another checkpoint."
        )


# -- reading: Orbax metadata, partial restores, naming what cannot be read -----------------------


def _tree_metadata(ckptr: Any, where: Path) -> Any:
    """The saved tree's structure, or a CheckpointError when Orbax cannot read it."""
    try:
        metadata = ckptr.metadata(where)
        tree = getattr(metadata, "item_metadata", metadata)
        tree = getattr(tree, "tree", tree)
    except Exception as e:
        tree, cause = None, f"{type(e).__name__}: {e}"
    else:
        cause = "Orbax found no tree metadata"
    if not isinstance(tree, Mapping):
        raise CheckpointError(
            f"{str(where)!r} is truncated or damaged: its tree metadata (_METADATA, "
            f"manifest.ocdbt) cannot be read ({cause}).\n"
            "Fix: copy the checkpoint again from its source, or use another checkpoint."
        )
    return tree


def _leaf_meta(tree: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    node: Any = tree
    for k in keys:
        node = node[k]
    return node


def subtree(tree: Mapping[str, Any], paths: Iterable[tuple[str, ...]]) -> dict[str, Any]:
    """The part of a nested mapping that holds ``paths`` (each a tuple of keys)."""
    out: dict[str, Any] = {}
    for path in paths:
        node, src = out, tree
        for key in path[:-1]:
            src = src[key]
            node = node.setdefault(key, {})
        node[path[-1]] = src[path[-1]]
    return out


def restore_part(ckptr: Any, where: Path, tree: Mapping[str, Any], make_args: Any) -> Any:
    """Orbax partial restore of ``tree`` (a part of the saved metadata tree) from ``where``.

    ``make_args(path, metadata)`` gives each leaf's ``RestoreArgs``: only those arrays are
    read, so the memory a read needs is the size of the part.
    """
    args = jax.tree_util.tree_map_with_path(make_args, tree)
    return ckptr.restore(
        where, args=ocp.args.PyTreeRestore(item=tree, restore_args=args, partial_restore=True)
    )


def _host_args(_: Any, __: Any) -> Any:
    return ocp.RestoreArgs(restore_type=np.ndarray)


def damaged_arrays(ckptr: Any, where: Path, tree: Mapping[str, Any]) -> list[str]:
    """The key paths of the arrays that cannot be read, one by one (the error path only)."""
    bad = []
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        keys = tuple(str(getattr(k, "key", k)) for k in path)
        try:
            restore_part(ckptr, where, subtree(tree, [keys]), _host_args)
        except Exception:
            bad.append("/".join(keys))
    return bad


@contextmanager
def _reading(where: Path, ckptr: Any = None, tree: Any = None) -> Iterator[None]:
    try:
        yield
    except LinnxError:
        raise
    except Exception as e:
        bad = damaged_arrays(ckptr, where, tree) if tree is not None else []
        which = ""
        if bad:
            shown = ", ".join(bad[:10]) + (f", ... ({len(bad) - 10} more)" if len(bad) > 10 else "")
            which = f"\nUnreadable arrays ({len(bad)}): {shown}"
        raise CheckpointError(
            f"{str(where)!r} could not be restored: {type(e).__name__}: {str(e)[:500]}{which}\n"
            "Fix: the checkpoint is truncated or damaged (copy it again, or use another one), "
            "or it was not written for this model."
        ) from e


# -- digests of arrays and files, and joining checkpoints written in parts ---------------------


def checksum(value: Any) -> str:
    """XXH3-128 of an array's bytes (its shape and dtype included)."""
    a = np.ascontiguousarray(np.asarray(value))
    h = checksum_hasher(a.dtype, a.shape)
    if a.size:
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def checksum_hasher(dtype: Any, shape: tuple[int, ...]) -> Any:
    """The hasher of :func:`checksum` before any byte: fed an array's C-order bytes in order
    (for example a stacked array layer by layer), it gives that array's checksum."""
    return HASHES[DIGEST](f"{np.dtype(dtype).str}{tuple(shape)}".encode())


def _digest_open(handle: Any) -> str:
    with handle:
        h = HASHES[DIGEST]()
        for block in iter(lambda: handle.read(1 << 22), b""):
            h.update(block)
        return h.hexdigest()


def _digest_files(
    directory: Path, pool: ThreadPoolExecutor, prefix: str = ""
) -> dict[str, Future[str]]:
    """Digests of the files under ``directory`` (keyed ``prefix`` + relative path), computed
    in the background. Each file is opened now, so moving the directory meanwhile (as joining
    the parts does) is harmless."""
    return {
        prefix + p.relative_to(directory).as_posix(): pool.submit(_digest_open, open(p, "rb"))  # noqa: SIM115
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def record_parts(
    tmp: Path, model_dir: Path, early: Mapping[str, Future[str]], info: Mapping[str, Any]
) -> None:
    """``linnx.json``: the digests of every file; the parts' data files were digested in the
    background while the next groups were read, so only the joined index is hashed here."""
    renamed = {}
    for name, fut in early.items():
        k, rel = name.split("/", 1)
        renamed[f"model/ocdbt.process_{k}/{rel}"] = fut.result()
    files = {}
    for p in sorted(tmp.rglob("*")):
        if not p.is_file() or p.name == _INFO:
            continue
        rel = p.relative_to(tmp).as_posix()
        digest = renamed.get(rel) or _digest(p)
        files[rel] = {"bytes": p.stat().st_size, DIGEST: digest}
    (tmp / _INFO).write_text(json.dumps({**info, "files": files}, indent=1, default=str))
