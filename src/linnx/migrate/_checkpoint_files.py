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
business; this module knows directories, files and digests, and the synchronous Orbax
writer that the scratch-and-rename relies on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

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
        for p in sorted(directory.rglob("*")) if p.is_file() and p.name != _INFO
    }  # fmt: skip
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
