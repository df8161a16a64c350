"""Checkpoint migration at the size of real models: group by group, sharded, all-or-nothing.

:func:`stream_linen_checkpoint_to_nnx` never holds the whole checkpoint. It checks the plan
against the saved tree's *metadata* (shapes and dtypes: nothing is read yet), splits the pairs
into groups of about ``group_bytes`` (the pairs that share a Linen leaf, as stacked or
unstacked scanned layers do, stay together), and for each group restores only those arrays
(Orbax partial restore), turns them into the NNX values (copy, stack, unstack, move an axis,
cast) and writes them as one Orbax checkpoint of that part of ``nnx.state(model)``. At the end
the parts become one checkpoint: each part's OCDBT database is a per-process database of the
result, and Orbax's own merge indexes them (no array is copied twice). A Linen user restores
it with the standard NNX recipe, exactly like what :func:`save_nnx_checkpoint` writes.

Two kinds of pairs skip the whole-array round trip. Pairs that only rename an array are
renamed in a hard-linked copy of the source's index, their data never decoded nor rewritten
(``_checkpoint_rename``); a stack bigger than a group that the port cuts into layers is
decoded piece by piece and moved a few layers at a time (``_stream_layers``).

With a ``mesh``, each NNX value is read straight into the sharding its variable's annotation
asks for (``nnx.with_partitioning``, or the names a boxed Linen parameter carried): the
source arrays are restored already sharded, the layout change runs under ``jax.jit`` with
those output shardings, and Orbax writes each shard from the device that holds it.

Everything happens in the scratch directory of ``_checkpoint_files._atomic_dir``: an
interrupted or refused run leaves nothing at the destination. Verification re-reads the
written checkpoint part by part, rebuilds every Linen leaf from it with the inverse layout
change, and compares its checksum (XXH3-128) with that of the source array as it was read.
"""

from __future__ import annotations

import os
import shutil
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from .._flax_internals import join_orbax_parts, orbax_join_available
from .._public import public
from ._checkpoint import FORMAT, _check_initialized, _resolve
from ._checkpoint_files import (
    PathLike,
    _atomic_dir,
    _digest_files,
    _leaf_meta,
    _reading,
    _tree_metadata,
    _writer,
    checksum,
    record_parts,
    restore_part,
    subtree,
    verify_files,
)
from ._checkpoint_rename import (
    open_index,
    read_stored,
    rename_pairs,
    stored_results,
    verify_renamed,
)
from ._checks import check_mapping, check_nnx, check_path, check_plan
from ._errors import CheckpointError, MigrationTypeError
from ._paths import patterns
from ._plan import Pair, Plan
from ._stream_layers import Sliced, move_layers, read_back, sliceable, verify_layers
from ._stream_plan import (
    _NOT_VARIABLES,
    _check,
    _check_mesh_axes,
    _groups,
    _linen_spec,
    _nbytes,
    _nnx_spec,
    _source_index,
)
from ._stream_values import (
    _check_finite_group,
    _first_pair,
    _once,
    _source_checksum,
    _state,
    _transform,
)
from ._transfer import to_linen_value

__all__ = ["StreamReport", "stream_linen_checkpoint_to_nnx", "parse_mesh"]

_INFO = "linnx.json"


@public("linnx.migrate")
@dataclass(frozen=True)
class StreamReport:
    """What :func:`stream_linen_checkpoint_to_nnx` did, and what its verification checked.

    Attributes:
        arrays: NNX arrays written.
        groups: parts the checkpoint was written in (each group restored, changed and written
            alone; the renamed arrays, and the variables the checkpoint does not fill, are a
            part each).
        largest_group_bytes: bytes of the largest group's Linen arrays (what bounds memory).
        verified: ``'checksums'`` (every moved array re-read from the written checkpoint and
            compared with the source by checksum (XXH3-128)) or ``'none'``.
        checked: Linen leaves whose checksum was compared.
        differing: Linen leaves whose re-read bytes differ from the source.
        sharded: ``True`` when the values were restored and written sharded on a mesh.
        left_out: top-level entries of a ``TrainState`` checkpoint that were not moved
            (``step``, ``opt_state``).
        renamed: NNX arrays that were renamed in the checkpoint's index instead of restored
            and saved: their data files are hard links to the source's, and verification
            compares the checksums of their stored (compressed) bytes.

    Example:
        >>> from linnx import migrate
        >>> report = migrate.StreamReport(arrays=2, groups=1, largest_group_bytes=96,
        ...                               verified='checksums', checked=2)
        >>> report.ok
        True
    """

    arrays: int
    groups: int
    largest_group_bytes: int
    verified: str
    checked: int = 0
    differing: tuple[str, ...] = ()
    sharded: bool = False
    left_out: tuple[str, ...] = ()
    renamed: int = 0
    kept: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """No moved array differs from its source (vacuously true when not verified)."""
        return not self.differing

    def __str__(self) -> str:
        head = (
            f"Streamed migration: {self.arrays} NNX arrays written in {self.groups} group(s) "
            f"(largest {self.largest_group_bytes / 2**20:.1f} MiB)"
            + (", sharded on the mesh" if self.sharded else "")
            + "."
            + (
                f" {self.renamed} of them were renamed in place (their data files are hard "
                "links to the source's, not rewritten)."
                if self.renamed
                else ""
            )
        )
        if self.verified == "none":
            return head + "\nNot verified (checksums were not compared)."
        if self.differing:
            shown = ", ".join(self.differing[:10])
            return (
                f"{head}\nVerification FAILED: {len(self.differing)} of {self.checked} Linen "
                f"arrays differ from the written checkpoint: {shown}"
            )
        return (
            f"{head}\nVerification passed: the checksum (XXH3-128) of each of the "
            f"{self.checked} Linen arrays, rebuilt from the written NNX checkpoint, equals "
            "that of the source"
            + (" (of the stored bytes, for renamed arrays)" if self.renamed else "")
            + " (checksums only: the models were not run)."
        )


@public("linnx.migrate")
def parse_mesh(spec: str) -> jax.sharding.Mesh:
    """``'data=2,model=4'`` -> a ``Mesh`` over the first 8 devices with those axes.

    Example:
        >>> from linnx import migrate
        >>> migrate.parse_mesh('data=1').axis_names
        ('data',)
    """
    names, sizes = [], []
    for part in str(spec).split(","):
        name, sep, size = part.partition("=")
        if not sep or not name.strip() or not size.strip().isdigit() or int(size) < 1:
            raise MigrationTypeError(
                f"mesh {spec!r}: expected NAME=SIZE[,NAME=SIZE...], e.g. 'data=2,model=4'.\n"
                "Fix: name each mesh axis and give its size."
            )
        names.append(name.strip())
        sizes.append(int(size))
    count = int(np.prod(sizes))
    devices = jax.devices()
    if count > len(devices):
        raise MigrationTypeError(
            f"mesh {spec!r} needs {count} devices; {len(devices)} are visible.\nFix: choose "
            "axis sizes whose product is at most the device count (on CPU, set XLA_FLAGS="
            f"--xla_force_host_platform_device_count={count} before JAX starts)."
        )
    return jax.sharding.Mesh(np.array(devices[:count]).reshape(sizes), tuple(names))


# -- writing the parts and joining them ---------------------------------------------------------


class _Abort(BaseException):  # noqa: N818 - not an error; passes _atomic_dir untouched
    """Leaves the scratch directory unpublished without an error (verification failed)."""


@public("linnx.migrate")
def stream_linen_checkpoint_to_nnx(
    src: PathLike,
    dst: PathLike,
    nnx_model: nnx.Module,
    plan: Plan,
    *,
    allow_missing: str | Iterable[str] = (),
    allow_unused: str | Iterable[str] = (),
    allow_nonfinite: bool | str | Iterable[str] = False,
    cast: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    verify: bool = True,
    group_bytes: int = 256 << 20,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    keep: bool = False,
    check: Callable[[StreamReport], bool] | None = None,
    share_data: bool = True,
) -> StreamReport:
    """Migrates a Linen checkpoint into an NNX checkpoint group by group, never all at once.

    The result is what :func:`save_nnx_checkpoint` writes for ``nnx_model`` filled by
    :func:`linen_checkpoint_to_nnx` (``dst/model``, ``dst/linnx.json``), bit for bit in its
    values; peak memory is about the largest group, not the checkpoint.

    Args:
        src: the Linen checkpoint directory (variables dict or ``TrainState``; the
            optimizer state is not moved in this mode).
        dst: the NNX checkpoint directory to write.
        nnx_model: the NNX model, concrete or abstract (``nnx.eval_shape(lambda: Model(...))``):
            only its structure, dtypes and sharding annotations are used, except for the
            variables the checkpoint does not fill (RNG state, ``allow_missing``), whose
            current values are saved (so those must be concrete).
        plan: from :func:`match`.
        allow_missing / allow_unused / allow_nonfinite / cast: as for :func:`linen_to_nnx`.
        mesh: restore and write each value sharded as its variable's annotation asks.
        verify: re-read what was written and compare each Linen array's checksum (XXH3-128).
        group_bytes: the size of the Linen arrays moved at a time.
        metadata: extra entries for ``linnx.json``.
        overwrite: replace ``dst`` if it exists.
        keep: also return the values (``report.kept``: ``{'nnx': {path: value},
            'linen': variables}``) for a caller that runs the models (memory: the checkpoint).
        check: called with the report before the checkpoint is published; returning False
            publishes nothing (used by the CLI to run the models first).
        share_data: rename in place the arrays that a pair only renames (same shape and
            dtype, no mesh): the written checkpoint's index gets their new names and its
            data files are hard links to the source's, so nothing is decoded or rewritten.
            Used when those arrays are at least 90% of the source's bytes, both directories
            are on one filesystem, and the source is an OCDBT zarr v2 checkpoint (what Orbax
            writes); otherwise, and with ``False``, every array is restored and written.

    Returns:
        A :class:`StreamReport`; when verification finds a difference nothing is published
        at ``dst`` and ``report.ok`` is False.

    Raises:
        CheckpointError: ``src`` cannot be read (the unreadable arrays are named), ``dst``
            exists (without ``overwrite``), a variable the checkpoint does not fill is
            abstract, or a mesh axis is unknown. Nothing is left at ``dst``.
        MissingWeightsError, UnusedWeightsError, ShapeMismatchError, NonFiniteValuesError: as
            for :func:`linen_to_nnx`, before anything is written (NaN checks run per group,
            and abort the run with nothing written).

    Example:
        >>> import tempfile, jax, jax.numpy as jnp
        >>> tmp = tempfile.TemporaryDirectory()
        >>> from flax import linen as nn, nnx
        >>> from linnx import migrate
        >>> x = jnp.ones((1, 3))
        >>> src, dst = tmp.name + '/linen', tmp.name + '/nnx'
        >>> migrate.save_linen_checkpoint(src, nn.Dense(2).init(jax.random.key(0), x))
        >>> model = nnx.eval_shape(lambda: nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
        >>> plan = migrate.match(nn.Dense(2), model, x)
        >>> report = migrate.stream_linen_checkpoint_to_nnx(src, dst, model, plan)
        >>> report.ok, report.verified
        (True, 'checksums')
        >>> fresh = nnx.Linear(3, 2, rngs=nnx.Rngs(1))
        >>> migrate.load_nnx_checkpoint(dst, fresh).kernel.shape
        (3, 2)
        >>> tmp.cleanup()
    """
    fn = "stream_linen_checkpoint_to_nnx"
    check_path(src, fn, "src")
    check_path(dst, fn, "dst")
    check_nnx(nnx_model, fn)
    check_plan(plan, fn)
    check_mapping(metadata, fn, "metadata", "{'source': 'run-42'}", optional=True)
    if not orbax_join_available():
        raise CheckpointError(
            f"{fn}: the installed Orbax is not the one whose checkpoint layout linnx joins "
            "streamed groups with (orbax-checkpoint 0.12).\n"
            "Fix: install orbax-checkpoint>=0.12,<0.13 (as linnx's requirements pin it), or "
            "migrate in memory with linen_checkpoint_to_nnx."
        )
    if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
        raise MigrationTypeError(
            f"{fn}(mesh={mesh!r:.60}): expected a jax.sharding.Mesh.\n"
            "Fix: e.g. mesh=migrate.parse_mesh('data=2,model=4')."
        )
    if not isinstance(group_bytes, int) or group_bytes < 1:
        raise MigrationTypeError(
            f"{fn}(group_bytes={group_bytes!r}): expected a positive number of bytes.\n"
            "Fix: e.g. group_bytes=256 << 20."
        )
    if jax.process_count() > 1:
        raise CheckpointError(
            f"{fn}: {jax.process_count()} JAX processes: the migration runs in one process "
            "(its scratch directory and the joining of the parts are not coordinated across "
            "hosts).\nFix: migrate on one host (with a mesh of its devices if the model is "
            "big); every host of the job can then restore the result into its own shards."
        )
    target = Path(dst).expanduser().resolve()
    if target.exists() and not overwrite:  # before any work
        raise CheckpointError(
            f"{str(target)!r} already exists.\nFix: choose a new destination, or pass "
            "overwrite=True (--overwrite) to replace it."
        )
    _check_initialized(nnx_model, fn)
    allow_missing = patterns(allow_missing, "allow_missing")
    allow_unused = patterns(allow_unused, "allow_unused")
    where = _resolve(src)
    verify_files(where)
    live = {"/".join(map(str, p)): (p, v) for p, v in nnx.to_flat_state(nnx.state(nnx_model))}

    with ocp.PyTreeCheckpointer() as reader:
        tree = _tree_metadata(reader, where)
        index = _source_index(tree, set(plan.linen_leaves))
        metas = {name: _leaf_meta(tree, keys) for name, keys in index.items()}
        pairs = _check(plan, live, metas, allow_missing, allow_unused, cast, fn)
        specs: dict[str, Any] = {}
        if mesh is not None:
            specs = {p.nnx: _nnx_spec(live[p.nnx][1], len(p.nnx_shape)) for p in pairs}
            _check_mesh_axes(mesh, specs)
        filled = {p.nnx for p in pairs}
        leftovers = [(path, var) for name, (path, var) in live.items() if name not in filled]
        abstract = [
            "/".join(map(str, path))
            for path, var in leftovers
            if isinstance(var.get_value(), jax.ShapeDtypeStruct)
        ]
        if abstract:
            raise CheckpointError(
                f"{fn}: {len(abstract)} NNX variable(s) get no value from the checkpoint, and "
                f"nnx_model is abstract, so there is nothing to save for them: "
                f"{', '.join(abstract[:10])}.\n"
                "Fix: pass a concrete model (their current values are saved), or pair them."
            )
        # Without a mesh, a stack bigger than a group that the port cuts into layers is read
        # a few layers at a time; `keep` holds everything anyway.
        sliced = (
            {} if mesh is not None or keep else sliceable(where, pairs, metas, index, group_bytes)
        )
        whole = [p for p in pairs if p.linen[0] not in sliced]
        groups = _groups(whole, lambda leaf: _nbytes(metas[leaf]), group_bytes)

        def restore_args(name_spec: Mapping[tuple[str, ...], Any]) -> Callable[[Any, Any], Any]:
            def make(path: Any, meta: Any) -> Any:
                keys = tuple(str(getattr(k, "key", k)) for k in path)
                spec = name_spec.get(keys)
                if spec is None:
                    # Without a mesh, read into host memory: TensorStore decodes straight
                    # into the numpy array, where a single-device jax.Array costs one more
                    # copy (about twice the read time); the write wraps it without a copy.
                    return ocp.RestoreArgs(restore_type=np.ndarray, dtype=meta.dtype)
                # specs are only recorded when there is a mesh
                sharding = jax.sharding.NamedSharding(typing.cast(jax.sharding.Mesh, mesh), spec)
                return ocp.ArrayRestoreArgs(
                    sharding=sharding, global_shape=meta.shape, dtype=meta.dtype
                )

            return make

        digests: dict[str, str] = {}
        kept_nnx: dict[str, Any] = {}
        kept_linen: dict[str, Any] = {}
        largest = 0
        pool = ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1)))
        try:
            with _atomic_dir(target, overwrite, fn) as tmp, _writer() as writer:
                tmp.mkdir()
                parts_dir = tmp / ".parts"
                parts_dir.mkdir()
                parts: list[Path] = []
                file_digests: dict[str, Future[str]] = {}

                def write_part(
                    values: Mapping[str, Any], wrapped: dict[int, Any] | None = None
                ) -> None:
                    """Writes NNX ``values`` as the next part; its files are digested meanwhile."""
                    part = parts_dir / f"{len(parts)}"
                    made = {} if wrapped is None else wrapped
                    moved = [(live[n][0], live[n][1], _once(made, v)) for n, v in values.items()]
                    writer.save(part, _state(moved))
                    prefix = f"{len(parts)}/"
                    file_digests.update(_digest_files(part / "ocdbt.process_0", pool, prefix))
                    parts.append(part)

                renamed: dict[str, str] = {}  # NNX path -> the Orbax name it was renamed to
                stored: dict[str, Future[tuple[str, bool]]] = {}  # Linen leaf -> its read
                zarr: dict[str, Any] = {}
                if mesh is None and share_data:
                    renamed, zarr = rename_pairs(
                        where, tree, index, metas, pairs, live, parts_dir, writer
                    )
                if renamed and (verify or not keep):
                    # With `keep` the renamed arrays are restored for the models anyway (which
                    # names damage, and checks NaN): read as stored only for the checksums.
                    source_index = open_index(where)
                    decode = not keep and allow_nonfinite is not True
                    for p in pairs:
                        if p.nnx in renamed and p.linen[0] not in stored:
                            how = (metas[p.linen[0]].dtype, zarr[p.linen[0]]) if decode else None
                            name = ".".join(index[p.linen[0]])
                            stored[p.linen[0]] = pool.submit(read_stored, source_index, name, how)
                if renamed:
                    part = parts_dir / "0"
                    file_digests.update(_digest_files(part / "ocdbt.process_0", pool, "0/"))
                    parts.append(part)
                for group in groups:
                    written = [p for p in group if p.nnx not in renamed]
                    if not written and not keep:
                        continue
                    leaves = list(
                        dict.fromkeys(
                            leaf for p in (group if keep else written) for leaf in p.linen
                        )
                    )
                    largest = max(largest, sum(_nbytes(metas[leaf]) for leaf in leaves))
                    src_specs: dict[tuple[str, ...], Any] = {}
                    if mesh is not None:
                        for p in group:
                            for leaf in p.linen:
                                src_specs.setdefault(
                                    index[leaf],
                                    _linen_spec(p, specs[p.nnx], len(metas[leaf].shape)),
                                )
                    with _reading(where, reader, subtree(tree, [index[x] for x in leaves])):
                        restored = restore_part(
                            reader,
                            where,
                            subtree(tree, [index[leaf] for leaf in leaves]),
                            restore_args(src_specs),
                        )
                    sources = {leaf: _leaf_meta(restored, index[leaf]) for leaf in leaves}
                    del restored
                    values = {}
                    for p in written:
                        var = live[p.nnx][1]
                        sharding = (
                            None if mesh is None else jax.sharding.NamedSharding(mesh, specs[p.nnx])
                        )
                        values[p.nnx] = _transform(
                            p, [sources[leaf] for leaf in p.linen], var, sharding
                        )
                    # NaN checks and source checksums run in the background while this
                    # group is written, and are done before the next group is read: its
                    # values are alive for the write anyway, so they cost no memory, and
                    # one group at a time is alive (overlapping them with the next read
                    # held two of the largest groups at once).
                    # With `keep`, renamed pairs were restored too: checked, and kept, as is.
                    values_or_sources = {
                        **{p.nnx: sources[p.linen[0]] for p in group if keep and p.nnx in renamed},
                        **values,
                    }
                    checked = [p for p in group if p.nnx in values_or_sources]
                    checks = [
                        pool.submit(
                            _check_finite_group, checked, values_or_sources, allow_nonfinite, fn
                        )
                    ]
                    if verify:
                        for leaf in dict.fromkeys(leaf for p in written for leaf in p.linen):
                            dtype = _first_pair(written, leaf).nnx_dtype
                            checks.append(
                                pool.submit(_source_checksum, digests, leaf, sources[leaf], dtype)
                            )
                    # Each host array becomes a jax.Array once, for the write and for
                    # `keep` alike (a copy where its buffer is not aligned as XLA wants,
                    # and a value that is its source unchanged must not be copied twice).
                    wrapped: dict[int, Any] = {}
                    if written:
                        write_part(values, wrapped)
                    for fut in checks:
                        fut.result()
                    if keep:  # as jax.Arrays: a jitted call would embed host arrays as
                        # constants in its program (a copy each, and their compile time)
                        kept_nnx.update(
                            {n: _once(wrapped, v) for n, v in values_or_sources.items()}
                        )
                        kept_linen.update({leaf: _once(wrapped, v) for leaf, v in sources.items()})
                    del sources, values, wrapped
                for leaf, layers in sliced.items():
                    digest, batch_bytes = move_layers(
                        where, leaf, layers, metas[leaf], live, write_part, allow_nonfinite, fn
                    )
                    largest = max(largest, batch_bytes)
                    if verify:
                        digests[leaf] = digest
                if leftovers:
                    write_part({"/".join(map(str, p)): v.get_value() for p, v in leftovers})
                stored_digests = stored_results(
                    stored, pairs, renamed, allow_nonfinite, fn, where, reader, tree, index
                )
                model_dir = tmp / "model"
                join_orbax_parts(parts, model_dir)
                shutil.rmtree(parts_dir)
                differing: list[str] = []
                if verify:
                    written_groups = [
                        w for g in groups if (w := [p for p in g if p.nnx not in renamed])
                    ]
                    differing = _verify(
                        model_dir, written_groups, plan, live, digests, mesh, specs, sliced, metas
                    )
                    differing += verify_renamed(model_dir, pairs, renamed, stored_digests)
                report = StreamReport(
                    arrays=len(live),
                    groups=len(parts),
                    largest_group_bytes=largest,
                    verified="checksums" if verify else "none",
                    checked=len(set(digests) | (set(stored_digests) if verify else set())),
                    renamed=len(renamed),
                    differing=tuple(differing),
                    sharded=mesh is not None,
                    left_out=tuple(k for k in tree if k in _NOT_VARIABLES),
                    kept={"nnx": kept_nnx, "linen": kept_linen} if keep else {},
                )
                if differing or (check is not None and not check(report)):
                    raise _Abort(report)
                streamed = {"groups": report.groups, "verified": report.verified}
                streamed["checked"] = report.checked
                streamed["renamed"] = report.renamed
                streamed["mesh"] = None if mesh is None else dict(mesh.shape)
                info = {**dict(metadata or {}), "format": FORMAT, "optimizer": False}
                record_parts(tmp, model_dir, file_digests, {**info, "streamed": streamed})
        except _Abort as stop:
            return stop.args[0]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return report


def _verify(
    model_dir: Path,
    groups: Sequence[Sequence[Pair]],
    plan: Plan,
    live: Mapping[str, tuple[Any, nnx.Variable]],
    digests: Mapping[str, str],
    mesh: jax.sharding.Mesh | None,
    specs: Mapping[str, Any],
    sliced: Mapping[str, Sliced],
    metas: Mapping[str, Any],
) -> list[str]:
    """Re-reads the written checkpoint group by group; the Linen leaves whose bytes differ."""
    by_linen = plan.pairs_by_linen()
    differing = []
    with ocp.PyTreeCheckpointer() as reader:
        written = _tree_metadata(reader, model_dir)
        for group in groups:
            names = list(
                dict.fromkeys(
                    q.nnx for p in group for leaf in p.linen for q in by_linen.get(leaf, [p])
                )
            )
            values = read_back(reader, model_dir, written, live, names)
            for leaf in dict.fromkeys(leaf for p in group for leaf in p.linen):
                sds = plan.linen_leaves.get(leaf)
                rebuilt = to_linen_value(
                    leaf,
                    by_linen[leaf],
                    values.__getitem__,
                    None if sds is None else sds.shape,
                )
                if checksum(rebuilt) != digests[leaf]:
                    differing.append(leaf)
        for leaf, layers in sliced.items():
            shape = tuple(metas[leaf].shape)
            if not verify_layers(reader, model_dir, written, layers, shape, live, digests[leaf]):
                differing.append(leaf)
    return differing
