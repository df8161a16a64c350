"""Hostile inputs to checkpoints: bad paths and trees, NaN, damaged directories, failed writes.

Cases that damage a checkpoint work on a private copy of a pristine one (``env.copy_of``).
Cases that make a write fail half-way patch Orbax or the file system for the duration of the
call only, and watch the whole working directory: no destination, no scratch directory and no
parent directory may be left behind, and a checkpoint being replaced must keep every byte.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import linen as nn
from flax import nnx

from linnx import migrate
from linnx.migrate import _checkpoint_files

from ._harness import Table
from .models import Other, Port, optimizer, plan

# When Orbax itself reads a damaged file (a checkpoint without linnx's digests), a TensorStore
# read it started may complete after Orbax closed its event loop; Python then reports "Event
# loop is closed" as an exception ignored in a callback, during this case or the next one. That
# is Orbax's own cleanup, after linnx has raised its error; the cases check that error.
ORBAX_CLEANUP_NOISE = (
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning"),
)

table = Table("checkpoint", marks=ORBAX_CLEANUP_NOISE)
case = table.case

DAMAGED = r"is truncated or damaged"
RECOPY = r"copy the checkpoint again"


def data_files(directory: Path) -> list[Path]:
    """The files that hold array bytes (OCDBT data), as opposed to metadata."""
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.parent.name == "d")


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(0, len(data), 13):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# -- read_linen_checkpoint -------------------------------------------------------------------


@case(
    "read_linen/path-is-None",
    migrate.MigrationTypeError,
    r"read_linen_checkpoint\(path=None\)",
    r"read_linen_checkpoint\('/tmp/ckpt'",
)
def _(env):
    return lambda: migrate.read_linen_checkpoint(None)


@case(
    "read_linen/path-is-an-int",
    migrate.MigrationTypeError,
    r"read_linen_checkpoint\(path=3\)",
    r"a str or pathlib\.Path",
)
def _(env):
    return lambda: migrate.read_linen_checkpoint(3)


@case(
    "read_linen/missing-directory",
    migrate.CheckpointError,
    r"nope' does not exist",
    r"check the spelling",
)
def _(env):
    return lambda: migrate.read_linen_checkpoint(env.tmp / "nope"), env.tmp


@case(
    "read_linen/a-file",
    migrate.CheckpointError,
    r"notes\.txt' is not a directory",
    r"pass an Orbax checkpoint",
)
def _(env):
    (env.tmp / "notes.txt").write_text("not a checkpoint")
    return lambda: migrate.read_linen_checkpoint(env.tmp / "notes.txt"), env.tmp


@case(
    "read_linen/empty-directory",
    migrate.CheckpointError,
    r"is not an Orbax checkpoint",
    r"pass the directory that Orbax's save\(\) wrote",
)
def _(env):
    (env.tmp / "empty").mkdir()
    return lambda: migrate.read_linen_checkpoint(env.tmp / "empty"), env.tmp


@case(
    "read_linen/not-a-Linen-tree",
    migrate.CheckpointError,
    r"holds \['weights'\], neither a Linen variables dict nor a TrainState",
    r"restore it yourself",
)
def _(env):
    migrate.save_linen_checkpoint(env.tmp / "other", {"weights": {"w": np.ones(2)}})
    return lambda: migrate.read_linen_checkpoint(env.tmp / "other"), env.tmp


def _damaged_linen(name: str, damage):
    @case(f"read_linen/{name}", migrate.CheckpointError, DAMAGED, RECOPY)
    def _(env):
        ckpt = env.copy_of("linen")
        damage(ckpt)
        return lambda: migrate.read_linen_checkpoint(ckpt), ckpt


_damaged_linen("metadata-deleted", lambda d: (d / "_METADATA").unlink())
_damaged_linen("metadata-garbled", lambda d: (d / "_METADATA").write_text("{not json"))
_damaged_linen("metadata-emptied", lambda d: (d / "_METADATA").write_bytes(b""))
_damaged_linen("manifest-truncated", lambda d: truncate(d / "manifest.ocdbt"))
_damaged_linen("array-data-truncated", lambda d: truncate(data_files(d)[0]))
_damaged_linen("array-data-bit-flipped", lambda d: flip_bytes(data_files(d)[-1]))
_damaged_linen("array-data-deleted", lambda d: [p.unlink() for p in data_files(d)])
_damaged_linen("process-shard-deleted", lambda d: shutil.rmtree(d / "ocdbt.process_0"))


@case(
    "read_linen/checksum-record-garbled",
    migrate.CheckpointError,
    r"linnx\.json' is damaged",
    r"copy the checkpoint again",
)
def _(env):
    ckpt = env.copy_of("linen")
    (ckpt / "linnx.json").write_text('{"files": [')
    return lambda: migrate.read_linen_checkpoint(ckpt), ckpt


def _damaged_foreign(name: str, damage):
    # Written by Orbax alone: no digests, so Orbax itself must notice, and linnx says so.
    @case(
        f"read_linen/foreign-{name}",
        migrate.CheckpointError,
        r"tree metadata \(_METADATA, manifest\.ocdbt\) cannot be read",
        RECOPY,
    )
    def _(env):
        ckpt = env.copy_of("foreign")
        damage(ckpt)
        return lambda: migrate.read_linen_checkpoint(ckpt), ckpt


_damaged_foreign("metadata-deleted", lambda d: (d / "_METADATA").unlink())
_damaged_foreign(
    "metadata-not-a-tree", lambda d: (d / "_METADATA").write_text(json.dumps({"tree_metadata": 5}))
)
_damaged_foreign("manifest-garbled", lambda d: (d / "manifest.ocdbt").write_bytes(b"garbage"))
_damaged_foreign("data-truncated", lambda d: [truncate(p) for p in data_files(d / "d")])


@case(
    "read_linen/foreign-one-array-unreadable",
    migrate.CheckpointError,
    r"Unreadable arrays \(1\): params/big/kernel",
    r"copy it again",
)
def _(env):
    # The bytes of one array (not the index) are cut short: the message names that array.
    # (OCDBT keeps small arrays inside its index; this one is big enough for a data file.)
    noise = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)  # incompressible
    tree = {"params": {"big": {"kernel": noise}, "small": {"bias": np.ones(3, np.float32)}}}
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(env.tmp / "ckpt", tree)
    truncate(max(data_files(env.tmp / "ckpt" / "ocdbt.process_0"), key=lambda p: p.stat().st_size))
    return lambda: migrate.read_linen_checkpoint(env.tmp / "ckpt"), env.tmp


# -- linen_checkpoint_to_nnx -----------------------------------------------------------------


@case(
    "linen_to_nnx/NaN-and-inf-in-the-checkpoint",
    migrate.NonFiniteValuesError,
    r"params/Dense_0/bias -> fc/bias: 0 NaN, 1 inf\n  params/Dense_0/kernel -> fc/kernel: "
    r"1 NaN, 0 inf",
    r"migrate an earlier checkpoint",
)
def _(env):
    ckpt, model = env.copy_of("nonfinite"), Port()
    return lambda: migrate.linen_checkpoint_to_nnx(ckpt, model, plan()), model, ckpt


@case(
    "linen_to_nnx/optimizer-but-no-optimizer-state",
    migrate.CheckpointError,
    r"optimizer=\.\.\.: the checkpoint holds a variables dict",
    r"leave out optimizer=",
)
def _(env):
    ckpt, model = env.copy_of("linen"), Port()
    opt = optimizer(model)
    return (
        lambda: migrate.linen_checkpoint_to_nnx(ckpt, model, plan(), optimizer=opt),
        model,
        opt,
        ckpt,
    )


@case(
    "linen_to_nnx/optimizer-of-another-kind",
    migrate.MissingWeightsError,
    r"optimizer state leaf/leaves of the NNX side(.|\n)*0/trace/fc/bias",
    r"same optax transformation on both sides",
)
def _(env):
    # The weights fit and are checked first; the optimizer state does not. Neither the model
    # nor the optimizer may keep anything of the attempt.
    ckpt, model = env.copy_of("train_state"), Port()
    opt = nnx.Optimizer(model, optax.sgd(0.1, momentum=0.9), wrt=nnx.Param)
    return (
        lambda: migrate.linen_checkpoint_to_nnx(ckpt, model, plan(), optimizer=opt),
        model,
        opt,
        ckpt,
    )


@case(
    "linen_to_nnx/optimizer-is-the-model",
    migrate.MigrationTypeError,
    r"linen_checkpoint_to_nnx\(optimizer=\.\.\.\).*got Port",
    r"nnx\.Optimizer\(model, tx",
)
def _(env):
    ckpt, model = env.copy_of("train_state"), Port()
    return (
        lambda: migrate.linen_checkpoint_to_nnx(ckpt, model, plan(), optimizer=model),
        model,
        ckpt,
    )


@case(
    "linen_to_nnx/model-is-a-class",
    migrate.MigrationTypeError,
    r"linen_checkpoint_to_nnx\(nnx_model=Port\)",
    r"build it first",
)
def _(env):
    ckpt = env.copy_of("linen")
    return lambda: migrate.linen_checkpoint_to_nnx(ckpt, Port, plan()), ckpt


@case("linen_to_nnx/damaged-checkpoint", migrate.CheckpointError, DAMAGED, RECOPY)
def _(env):
    ckpt, model = env.copy_of("linen"), Port()
    truncate(data_files(ckpt)[0])
    return lambda: migrate.linen_checkpoint_to_nnx(ckpt, model, plan()), model, ckpt


# -- save_nnx_checkpoint -----------------------------------------------------------------------


@case(
    "save_nnx/path-is-None",
    migrate.MigrationTypeError,
    r"save_nnx_checkpoint\(path=None\)",
    r"save_nnx_checkpoint\('/tmp/ckpt'",
)
def _(env):
    model = Port()
    return lambda: migrate.save_nnx_checkpoint(None, model), model


@case(
    "save_nnx/model-is-None",
    migrate.MigrationTypeError,
    r"save_nnx_checkpoint\(nnx_model=\.\.\.\).*NoneType",
    r"pass the NNX model object",
)
def _(env):
    return lambda: migrate.save_nnx_checkpoint(env.tmp / "out", None), env.tmp


@case(
    "save_nnx/model-is-a-Linen-module",
    migrate.MigrationTypeError,
    r"save_nnx_checkpoint\(nnx_model=\.\.\.\).*got Dense",
    r"hand-ported NNX model",
)
def _(env):
    return lambda: migrate.save_nnx_checkpoint(env.tmp / "out", nn.Dense(3)), env.tmp


@case(
    "save_nnx/optimizer-is-the-model",
    migrate.MigrationTypeError,
    r"save_nnx_checkpoint\(optimizer=\.\.\.\)",
    r"nnx\.Optimizer\(model, tx",
)
def _(env):
    model = Port()
    return (
        lambda: migrate.save_nnx_checkpoint(env.tmp / "out", model, optimizer=model),
        model,
        env.tmp,
    )


@case(
    "save_nnx/metadata-is-a-list",
    migrate.MigrationTypeError,
    r"save_nnx_checkpoint\(metadata=\.\.\.\)",
    r"metadata=\{'source': 'run-42'\}",
)
def _(env):
    model = Port()
    return (
        lambda: migrate.save_nnx_checkpoint(env.tmp / "out", model, metadata=["run"]),
        model,
        env.tmp,
    )


@case(
    "save_nnx/model-without-variables",
    migrate.CheckpointError,
    r"the model has no variables",
    r"pass the model whose variables you want to keep",
)
def _(env):
    return lambda: migrate.save_nnx_checkpoint(env.tmp / "out", nnx.Dropout(0.5)), env.tmp


@case(
    "save_nnx/destination-exists",
    migrate.CheckpointError,
    r"nnx' already exists",
    r"overwrite=True",
)
def _(env):
    ckpt, model = env.copy_of("nnx"), Port()
    return lambda: migrate.save_nnx_checkpoint(ckpt, model), env.tmp


@case(
    "save_nnx/parent-is-a-file",
    migrate.CheckpointError,
    r"notes\.txt' is a file, not a directory",
    r"choose a destination whose parent",
)
def _(env):
    (env.tmp / "notes.txt").write_text("x")
    return lambda: migrate.save_nnx_checkpoint(env.tmp / "notes.txt" / "out", Port()), env.tmp


def _orbax_fails_half_way(self, directory, *args, **kwargs):
    # What a full disk looks like: some files are written, then the write stops.
    Path(directory).mkdir(parents=True, exist_ok=True)
    (Path(directory) / "_METADATA").write_text("{")
    raise OSError(28, "No space left on device")


@case(
    "save_nnx/write-fails-half-way",
    migrate.CheckpointError,
    r"writing '.*/out' failed: OSError: \[Errno 28\] No space left on device",
    r"nothing was created at '.*/out'(.|\n)*run it again",
)
def _(env):
    def misuse():
        with mock.patch.object(ocp.Checkpointer, "save", _orbax_fails_half_way):
            migrate.save_nnx_checkpoint(env.tmp / "out", Port())

    return misuse, env.tmp


@case(
    "save_nnx/write-fails-half-way-in-new-parent-directories",
    migrate.CheckpointError,
    r"writing '.*/runs/7/out' failed",
    r"nothing was created",
)
def _(env):
    def misuse():
        with mock.patch.object(ocp.Checkpointer, "save", _orbax_fails_half_way):
            migrate.save_nnx_checkpoint(env.tmp / "runs" / "7" / "out", Port())

    return misuse, env.tmp


@case(
    "save_nnx/overwrite-fails-half-way",
    migrate.CheckpointError,
    r"writing '.*/nnx' failed: OSError",
    r"'.*/nnx' is unchanged",
)
def _(env):
    ckpt = env.copy_of("nnx")

    def misuse():
        with mock.patch.object(ocp.Checkpointer, "save", _orbax_fails_half_way):
            migrate.save_nnx_checkpoint(ckpt, Port(seed=5), overwrite=True)

    return misuse, env.tmp


@case(
    "save_nnx/record-write-fails",
    migrate.CheckpointError,
    r"writing '.*/nnx' failed: OSError: disk gone",
    r"'.*/nnx' is unchanged",
)
def _(env):
    # Orbax has finished; the last step (linnx.json) fails.
    ckpt = env.copy_of("nnx")

    def misuse():
        with mock.patch.object(_checkpoint_files, "_digest", side_effect=OSError("disk gone")):
            migrate.save_nnx_checkpoint(ckpt, Port(seed=5), overwrite=True)

    return misuse, env.tmp


@case(
    "save_nnx/publishing-rename-fails",
    migrate.CheckpointError,
    r"writing '.*/nnx' failed: OSError: rename refused",
    r"'.*/nnx' is unchanged",
)
def _(env):
    # Everything is written; swapping it in fails after the old checkpoint was moved aside.
    ckpt = env.copy_of("nnx")
    real_rename = os.rename

    def rename(a, b):
        if Path(b) == ckpt and Path(a).name == ckpt.name:  # the new one, not the old one back
            raise OSError("rename refused")
        return real_rename(a, b)

    def misuse():
        with mock.patch.object(_checkpoint_files.os, "rename", rename):
            migrate.save_nnx_checkpoint(ckpt, Port(seed=5), overwrite=True)

    return misuse, env.tmp


# -- stream_linen_checkpoint_to_nnx -----------------------------------------------------------


def _stream(env, src=None, **kwargs):
    src = env.copy_of("linen") if src is None else src
    return lambda: migrate.stream_linen_checkpoint_to_nnx(
        src, env.tmp / "nnx", kwargs.pop("model", Port()), kwargs.pop("plan", plan()), **kwargs
    )


@case(
    "stream/src-is-None",
    migrate.MigrationTypeError,
    r"stream_linen_checkpoint_to_nnx\(src=None\)",
    r"a str or pathlib\.Path",
)
def _(env):
    model = Port()
    return lambda: migrate.stream_linen_checkpoint_to_nnx(None, env.tmp / "x", model, plan())


@case(
    "stream/mesh-is-a-string",
    migrate.MigrationTypeError,
    r"mesh='data=2'\): expected a jax\.sharding\.Mesh",
    r"migrate\.parse_mesh",
)
def _(env):
    return _stream(env, mesh="data=2"), env.tmp


@case(
    "stream/group-bytes-zero",
    migrate.MigrationTypeError,
    r"group_bytes=0\): expected a positive number",
    r"group_bytes=256 << 20",
)
def _(env):
    return _stream(env, group_bytes=0), env.tmp


@case(
    "stream/destination-exists", migrate.CheckpointError, r"nnx' already exists", r"overwrite=True"
)
def _(env):
    (env.tmp / "nnx").mkdir()
    return _stream(env), env.tmp


@case(
    "stream/NaN-in-the-checkpoint",
    migrate.NonFiniteValuesError,
    r"params/Dense_0/(kernel|bias) -> fc/(kernel|bias): \d NaN, \d inf",
    r"allow_nonfinite=True",
)
def _(env):
    return _stream(env, src=env.copy_of("nonfinite"), group_bytes=1), env.tmp


class _PortWithRng(Port):
    def __init__(self):
        super().__init__()
        self.drop = nnx.Dropout(0.1, rngs=nnx.Rngs(0))


@case(
    "stream/abstract-model-with-unfilled-variables",
    migrate.CheckpointError,
    r"nnx_model is abstract(.|\n)*drop/rngs/count",
    r"pass a concrete model",
)
def _(env):
    return _stream(env, model=nnx.eval_shape(_PortWithRng)), env.tmp


@case(
    "stream/model-of-other-sizes",
    migrate.ShapeMismatchError,
    r"params/Dense_0/kernel -> fc/kernel: NNX expects \(3, 5\) float32, Linen has \(3, 4\)",
    r"build the NNX model with the Linen model's sizes",
)
def _(env):
    return _stream(env, model=nnx.eval_shape(lambda: Port(features=5))), env.tmp


@case(
    "stream/parse-mesh-garbled",
    migrate.MigrationTypeError,
    r"mesh 'data:2': expected NAME=SIZE",
    r"name each mesh axis",
)
def _(env):
    return lambda: migrate.parse_mesh("data:2")


# -- load_nnx_checkpoint -----------------------------------------------------------------------


@case(
    "load_nnx/path-is-None",
    migrate.MigrationTypeError,
    r"load_nnx_checkpoint\(path=None\)",
    r"load_nnx_checkpoint\('/tmp/ckpt'",
)
def _(env):
    model = Port()
    return lambda: migrate.load_nnx_checkpoint(None, model), model


@case(
    "load_nnx/model-is-a-class",
    migrate.MigrationTypeError,
    r"load_nnx_checkpoint\(nnx_model=Port\)",
    r"nnx\.eval_shape",
)
def _(env):
    ckpt = env.copy_of("nnx")
    return lambda: migrate.load_nnx_checkpoint(ckpt, Port), ckpt


@case(
    "load_nnx/missing-directory",
    migrate.CheckpointError,
    r"nope' has no 'model' item",
    r"written by save_nnx_checkpoint",
)
def _(env):
    model = Port()
    return lambda: migrate.load_nnx_checkpoint(env.tmp / "nope", model), model, env.tmp


@case(
    "load_nnx/ToNNX-never-lazy-initialized",
    migrate.CheckpointError,
    r"the ToNNX at nnx_model was never initialized",
    r"call lazy_init first",
)
def _(env):
    import linnx

    ckpt = env.copy_of("nnx")
    model = linnx.ToNNX(nn.Dense(4), rngs=nnx.Rngs(0))
    return lambda: migrate.load_nnx_checkpoint(ckpt, model), model, ckpt


@case(
    "load_nnx/model-of-other-sizes",
    migrate.CheckpointError,
    r"does not fit nnx_model:\n  mismatched at fc/bias: saved \(4,\), nnx_model has \(5,\)",
    r"build nnx_model exactly as for the save",
)
def _(env):
    ckpt, model = env.copy_of("nnx"), Port(features=5)
    return lambda: migrate.load_nnx_checkpoint(ckpt, model), model, ckpt


@case(
    "load_nnx/model-of-another-structure",
    migrate.CheckpointError,
    r"missing from the checkpoint \(2\): proj/bias, proj/kernel\n  only in the checkpoint "
    r"\(6\): fc/bias",
    r"build nnx_model exactly as for the save",
)
def _(env):
    ckpt, model = env.copy_of("nnx"), Other()
    return lambda: migrate.load_nnx_checkpoint(ckpt, model), model, ckpt


@case(
    "load_nnx/optimizer-asked-but-not-saved",
    migrate.CheckpointError,
    r"has no 'optimizer' item",
    r"with an optimizer",
)
def _(env):
    ckpt, model = env.copy_of("nnx"), Port()
    opt = optimizer(model)
    return lambda: migrate.load_nnx_checkpoint(ckpt, model, optimizer=opt), model, opt, ckpt


@case(
    "load_nnx/optimizer-of-another-kind",
    migrate.CheckpointError,
    r"optimizer' does not fit optimizer",
    r"build optimizer exactly as for the save",
)
def _(env):
    # The model item fits and is read first: it must not be applied when the optimizer fails.
    ckpt, model = env.copy_of("nnx_optimizer"), Port()
    opt = nnx.Optimizer(model, optax.sgd(0.1, momentum=0.9), wrt=nnx.Param)
    return lambda: migrate.load_nnx_checkpoint(ckpt, model, optimizer=opt), model, opt, ckpt


@case(
    "load_nnx/array-data-truncated",
    migrate.CheckpointError,
    r"model/ocdbt\.process_0/d/\w+: \d+ bytes, \d+ when written",
    RECOPY,
)
def _(env):
    ckpt, model = env.copy_of("nnx"), Port()
    truncate(data_files(ckpt / "model" / "ocdbt.process_0")[0])
    return lambda: migrate.load_nnx_checkpoint(ckpt, model), model, ckpt


@case(
    "load_nnx/array-data-bit-flipped",
    migrate.CheckpointError,
    r"model/d/\w+: contents changed since it was written",
    RECOPY,
)
def _(env):
    ckpt, model = env.copy_of("nnx"), Port()
    flip_bytes(data_files(ckpt / "model" / "d")[0])
    return lambda: migrate.load_nnx_checkpoint(ckpt, model), model, ckpt


@case(
    "load_nnx/unrecorded-checkpoint-damaged",
    migrate.CheckpointError,
    r"tree metadata \(_METADATA, manifest\.ocdbt\) cannot be read",
    RECOPY,
)
def _(env):
    # Without linnx.json there are no digests: Orbax's own failure becomes the typed error.
    ckpt, model = env.copy_of("nnx"), Port()
    (ckpt / "linnx.json").unlink()
    (ckpt / "model" / "_METADATA").unlink()
    return lambda: migrate.load_nnx_checkpoint(ckpt, model), model, ckpt


# -- save_linen_checkpoint ---------------------------------------------------------------------


@case(
    "save_linen/tree-is-None",
    migrate.CheckpointError,
    r"save_linen_checkpoint\(tree=None\)",
    r"pass the variables dict",
)
def _(env):
    return lambda: migrate.save_linen_checkpoint(env.tmp / "out", None), env.tmp


@case(
    "save_linen/tree-is-empty",
    migrate.CheckpointError,
    r"save_linen_checkpoint\(tree=\{\}\)",
    r"pass the variables dict",
)
def _(env):
    return lambda: migrate.save_linen_checkpoint(env.tmp / "out", {}), env.tmp


@case(
    "save_linen/leaf-is-an-object",
    migrate.CheckpointError,
    r"Cannot save \['params'\]\['w'\]",
    r"convert those leaves to arrays",
)
def _(env):
    tree = {"params": {"w": object()}}
    return lambda: migrate.save_linen_checkpoint(env.tmp / "out", tree), env.tmp


@case(
    "save_linen/destination-exists",
    migrate.CheckpointError,
    r"linen' already exists",
    r"overwrite=True",
)
def _(env):
    ckpt = env.copy_of("linen")
    tree = {"params": {"w": np.ones(2)}}
    return lambda: migrate.save_linen_checkpoint(ckpt, tree), env.tmp


@case(
    "save_linen/path-is-an-int",
    migrate.MigrationTypeError,
    r"save_linen_checkpoint\(path=7\)",
    r"a str or pathlib\.Path",
)
def _(env):
    return lambda: migrate.save_linen_checkpoint(7, {"params": {"w": np.ones(2)}})


@case(
    "save_linen/overwrite-fails-half-way",
    migrate.CheckpointError,
    r"save_linen_checkpoint: writing '.*/linen' failed",
    r"'.*/linen' is unchanged",
)
def _(env):
    ckpt = env.copy_of("linen")
    tree = {"params": {"w": np.ones(2)}}

    def misuse():
        with mock.patch.object(ocp.Checkpointer, "save", _orbax_fails_half_way):
            migrate.save_linen_checkpoint(ckpt, tree, overwrite=True)

    return misuse, env.tmp


# -- nnx_checkpoint_to_linen -------------------------------------------------------------------


@case(
    "nnx_to_linen/destination-exists",
    migrate.CheckpointError,
    r"linen' already exists",
    r"overwrite=True",
)
def _(env):
    src, dst, model = env.copy_of("nnx"), env.copy_of("linen"), Port()
    return lambda: migrate.nnx_checkpoint_to_linen(src, dst, model, plan()), model, env.tmp


@case(
    "nnx_to_linen/NaN-in-the-NNX-checkpoint",
    migrate.NonFiniteValuesError,
    r"params/Dense_0/bias: 4 NaN, 0 inf",
    r"allow_nonfinite=\['params/Dense_0/bias'\]",
)
def _(env):
    # The model is restored from the checkpoint before the NaN is found: it must be put back.
    src, model = env.copy_of("nnx_nonfinite"), Port()
    return (
        lambda: migrate.nnx_checkpoint_to_linen(src, env.tmp / "out", model, plan()),
        model,
        env.tmp,
    )


@case("nnx_to_linen/damaged-source", migrate.CheckpointError, DAMAGED, RECOPY)
def _(env):
    src, model = env.copy_of("nnx"), Port()
    truncate(src / "model" / "manifest.ocdbt")
    return (
        lambda: migrate.nnx_checkpoint_to_linen(src, env.tmp / "out", model, plan()),
        model,
        env.tmp,
    )


@case(
    "nnx_to_linen/plan-is-None",
    migrate.MigrationTypeError,
    r"nnx_checkpoint_to_linen\(plan=\.\.\.\)",
    r"plan = migrate\.match\(",
)
def _(env):
    src, model = env.copy_of("nnx"), Port()
    return (
        lambda: migrate.nnx_checkpoint_to_linen(src, env.tmp / "out", model, None),
        model,
        env.tmp,
    )


@case(
    "nnx_to_linen/write-fails-half-way",
    migrate.CheckpointError,
    r"save_linen_checkpoint: writing '.*/out' failed",
    r"nothing was created",
)
def _(env):
    # The model is restored from the source before the write fails: it must be put back.
    src, model = env.copy_of("nnx"), Port()

    def misuse():
        with mock.patch.object(ocp.Checkpointer, "save", _orbax_fails_half_way):
            migrate.nnx_checkpoint_to_linen(src, env.tmp / "out", model, plan())

    return misuse, model, env.tmp


CASES = table.cases
