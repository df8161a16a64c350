"""Streamed checkpoint migration: bit-equal to the in-memory one, all-or-nothing, sharded."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import linen as nn
from flax import nnx

from linnx import migrate
from linnx.migrate import _checkpoint_files, _checkpoint_stream

from .test_layouts import LLoop, LScanned, NList, NStacked, X, _trained

# When Orbax fails on a damaged file, TensorStore reads it started may complete after Orbax
# closed its event loop; Python reports that as an exception ignored in a callback, during
# that test or the next one. It is Orbax's own cleanup after linnx raised its error.
pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning"),
]


class BF16(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4, param_dtype=jnp.bfloat16)(nn.Dense(5)(x))


class F32Port(nnx.Module):
    def __init__(self, rngs):
        self.a = nnx.Linear(4, 5, rngs=rngs)
        self.b = nnx.Linear(5, 4, rngs=rngs)

    def __call__(self, x):
        return self.b(self.a(x))


CASES = {
    # nn.scan into the form `linnx convert` writes (nnx.vmap blocks, stacked on Linen's
    # axis): every stacked array moves as it is, renamed in place ("copy") or restored and
    # written again ("copy-rewritten", share_data=False).
    "copy": (LScanned, NStacked, True, False),
    "copy-rewritten": (LScanned, NStacked, True, False),
    "stack": (LLoop, NStacked, True, False),
    "unstack": (LScanned, NList, True, False),
    "moveaxis": (lambda: LScanned(axis=1), NStacked, True, False),
    "cast": (BF16, F32Port, False, True),
}


def _leaves(model):
    return {
        "/".join(map(str, p)): np.asarray(v.get_value())
        for p, v in nnx.to_flat_state(nnx.state(model))
    }


def _linen_ckpt(tmp_path, linen, stats):
    lm = linen()
    variables = _trained(lm) if stats else lm.init(jax.random.key(1), X)
    migrate.save_linen_checkpoint(tmp_path / "linen", variables)
    return lm, variables


@pytest.mark.parametrize("name", sorted(CASES))
def test_streamed_migration_is_bit_equal_to_the_in_memory_one(tmp_path, name):
    linen, port, stats, cast = CASES[name]
    lm, _ = _linen_ckpt(tmp_path, linen, stats)
    kwargs = {"train": False} if stats else {}

    # In memory: read everything, fill the model, save it.
    model = port(nnx.Rngs(0))
    plan = migrate.match(lm, model, X, linen_kwargs=kwargs)
    kinds = {p.layout.kind for p in plan.pairs}
    if name.startswith("copy"):
        assert kinds == {"copy"} and any(len(p.nnx_shape) == 3 for p in plan.pairs), plan
    elif name == "cast":
        assert {m.reason for m in plan.mismatched} == {"dtype"}
    else:
        assert name in kinds
    migrate.linen_checkpoint_to_nnx(tmp_path / "linen", model, plan, cast=cast)
    migrate.save_nnx_checkpoint(tmp_path / "memory", model)

    # Streamed, from an abstract model, in groups as small as they get.
    abstract = nnx.eval_shape(lambda: port(nnx.Rngs(0)))
    share = name != "copy-rewritten"
    report = migrate.stream_linen_checkpoint_to_nnx(
        tmp_path / "linen",
        tmp_path / "streamed",
        abstract,
        plan,
        cast=cast,
        group_bytes=1,
        share_data=share,
    )
    assert report.ok and report.verified == "checksums", str(report)
    assert report.checked == len(plan.linen_leaves)
    if name == "copy":  # every array renamed in place: one part, data files shared
        assert report.renamed == len(plan.pairs) and report.groups == 1, str(report)
        source = {p.stat().st_ino for p in (tmp_path / "linen").rglob("d/*")}
        written = {p.stat().st_ino for p in (tmp_path / "streamed").rglob("d/*")}
        assert source and source <= written
    else:
        assert report.renamed == 0 and report.groups > 2, str(report)
    if name == "unstack":  # each stack is read a layer at a time, never whole
        itemsize = {np.dtype(s.dtype).itemsize for s in plan.linen_leaves.values()}.pop()
        stack = max(int(np.prod(s.shape)) * itemsize for s in plan.linen_leaves.values())
        assert report.largest_group_bytes < stack, str(report)

    memory = migrate.load_nnx_checkpoint(tmp_path / "memory", port(nnx.Rngs(7)))
    streamed = migrate.load_nnx_checkpoint(tmp_path / "streamed", port(nnx.Rngs(8)))
    a, b = _leaves(memory), _leaves(streamed)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key

    # The standard NNX recipe reads it too: one Orbax checkpoint, not a directory of parts.
    target = nnx.eval_shape(lambda: port(nnx.Rngs(0)))
    with ocp.StandardCheckpointer() as ckptr:
        nnx.update(target, ckptr.restore(tmp_path / "streamed" / "model", nnx.state(target)))
    assert _leaves(target).keys() == a.keys()
    info = json.loads((tmp_path / "streamed" / "linnx.json").read_text())
    assert info["streamed"]["verified"] == "checksums"
    assert sorted(p.name for p in (tmp_path / "streamed").iterdir()) == ["linnx.json", "model"]


def test_rng_state_and_allowed_missing_come_from_a_concrete_model(tmp_path):
    class WithDropout(nnx.Module):
        def __init__(self, rngs):
            self.fc = nnx.Linear(3, 4, rngs=rngs)
            self.extra = nnx.Param(jnp.full((2,), 7.0))
            self.drop = nnx.Dropout(0.5, rngs=rngs)

        def __call__(self, x):
            return self.drop(self.fc(x), deterministic=True)

    x = jnp.ones((2, 3))
    migrate.save_linen_checkpoint(tmp_path / "linen", nn.Dense(4).init(jax.random.key(0), x))
    abstract = nnx.eval_shape(lambda: WithDropout(nnx.Rngs(0)))
    plan = migrate.match(nn.Dense(4), abstract, x)
    with pytest.raises(migrate.CheckpointError, match=r"nnx_model is abstract(.|\n)*drop/rngs"):
        migrate.stream_linen_checkpoint_to_nnx(
            tmp_path / "linen", tmp_path / "nnx", abstract, plan, allow_missing="extra"
        )
    assert not (tmp_path / "nnx").exists()
    model = WithDropout(nnx.Rngs(0))
    migrate.stream_linen_checkpoint_to_nnx(
        tmp_path / "linen", tmp_path / "nnx", model, plan, allow_missing="extra"
    )
    back = migrate.load_nnx_checkpoint(tmp_path / "nnx", WithDropout(nnx.Rngs(1)))
    np.testing.assert_array_equal(back.extra[...], np.full((2,), 7.0))
    np.testing.assert_array_equal(
        jax.random.key_data(back.drop.rngs.key[...]), jax.random.key_data(model.drop.rngs.key[...])
    )


def test_an_interrupted_streamed_run_leaves_no_destination(tmp_path, monkeypatch):
    lm, _ = _linen_ckpt(tmp_path, LLoop, True)
    plan = migrate.match(lm, NStacked(nnx.Rngs(0)), X, linen_kwargs={"train": False})
    abstract = nnx.eval_shape(lambda: NStacked(nnx.Rngs(0)))
    migrate.stream_linen_checkpoint_to_nnx(tmp_path / "linen", tmp_path / "old", abstract, plan)
    before = {p: p.read_bytes() for p in (tmp_path / "old").rglob("*") if p.is_file()}

    real_save = ocp.Checkpointer.save
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third group
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(ocp.Checkpointer, "save", interrupted)
    for dst, overwrite in ((tmp_path / "new", False), (tmp_path / "old", True)):
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            migrate.stream_linen_checkpoint_to_nnx(
                tmp_path / "linen", dst, abstract, plan, group_bytes=1, overwrite=overwrite
            )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linen", "old"]  # no scratch left
    assert {p: p.read_bytes() for p in (tmp_path / "old").rglob("*") if p.is_file()} == before


def test_a_wrong_write_fails_verification_and_publishes_nothing(tmp_path, monkeypatch):
    lm, _ = _linen_ckpt(tmp_path, LScanned, True)
    plan = migrate.match(lm, NList(nnx.Rngs(0)), X, linen_kwargs={"train": False})
    real = _checkpoint_stream._transform

    def off_by_one(pair, sources, var, sharding):
        value = real(pair, sources, var, sharding)
        return value + 1 if pair.nnx == "layers/1/linear/kernel" else value

    monkeypatch.setattr(_checkpoint_stream, "_transform", off_by_one)
    report = migrate.stream_linen_checkpoint_to_nnx(
        tmp_path / "linen", tmp_path / "nnx", nnx.eval_shape(lambda: NList(nnx.Rngs(0))), plan
    )
    assert not report.ok and report.differing == ("params/ScanBody_0/LBlock_0/Dense_0/kernel",)
    assert "Verification FAILED" in str(report) and not (tmp_path / "nnx").exists()


@pytest.mark.parametrize("share_data", [True, False], ids=["renamed", "rewritten"])
def test_a_damaged_source_array_is_named_and_nothing_is_written(tmp_path, share_data):
    noise = np.random.default_rng(0).normal(size=(4, 1024)).astype(np.float32)  # incompressible
    tree = {
        "params": {
            "Dense_0": {"kernel": noise[:3, :4], "bias": noise[0, :4]},
            "Dense_1": {"kernel": noise, "bias": noise[1]},
        }
    }

    class Two(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(4)(x)
            return nn.Dense(1024)(x)

    class TwoPort(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(3, 4, rngs=rngs)
            self.b = nnx.Linear(4, 1024, rngs=rngs)

        def __call__(self, x):
            return self.b(self.a(x))

    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp_path / "linen", tree)
    data = sorted(
        (tmp_path / "linen" / "ocdbt.process_0" / "d").iterdir(), key=lambda p: p.stat().st_size
    )
    data[-1].write_bytes(data[-1].read_bytes()[:100])
    model = nnx.eval_shape(lambda: TwoPort(nnx.Rngs(0)))
    plan = migrate.match(Two(), model, jnp.ones((1, 3)))
    unreadable = r"Unreadable arrays \(\d\): params/Dense_1/"
    with pytest.raises(migrate.CheckpointError, match=unreadable) as info:
        migrate.stream_linen_checkpoint_to_nnx(
            tmp_path / "linen", tmp_path / "nnx", model, plan, share_data=share_data
        )
    assert "Dense_0" not in str(info.value).split("Unreadable arrays")[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linen"]


class _Body(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        return nn.Dense(64)(x), None


class _Scanned(nn.Module):
    @nn.compact
    def __call__(self, x):
        scan = nn.scan(_Body, variable_axes={"params": 0}, split_rngs={"params": True}, length=4)
        return scan()(x, None)[0]


class NLayers(nnx.Module):
    def __init__(self, rngs):
        self.layers = nnx.List([nnx.Linear(64, 64, rngs=rngs) for _ in range(4)])

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def test_a_damaged_stack_read_layer_by_layer_is_named(tmp_path):
    x = jnp.ones((1, 64))
    with ocp.StandardCheckpointer() as ckptr:  # Orbax alone: no file digests to catch it first
        ckptr.save(tmp_path / "linen", _Scanned().init(jax.random.key(0), x))
    abstract = nnx.eval_shape(lambda: NLayers(nnx.Rngs(0)))
    plan = migrate.match(_Scanned(), abstract, x)
    assert {p.layout.kind for p in plan.pairs} == {"unstack"}
    data = max(
        (tmp_path / "linen" / "ocdbt.process_0" / "d").iterdir(), key=lambda p: p.stat().st_size
    )
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(migrate.CheckpointError, match=r"Unreadable arrays \(1\): params/"):
        migrate.stream_linen_checkpoint_to_nnx(
            tmp_path / "linen", tmp_path / "nnx", abstract, plan, group_bytes=1
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linen"]


class Sharded(nnx.Module):
    def __init__(self, rngs):
        init = nnx.initializers.lecun_normal()
        self.a = nnx.Linear(
            8, 16, kernel_init=nnx.with_partitioning(init, ("data", "model")), rngs=rngs
        )
        self.b = nnx.Linear(
            16, 4, kernel_init=nnx.with_partitioning(init, ("model", None)), rngs=rngs
        )

    def __call__(self, x):
        return self.b(self.a(x))


class LinenSharded(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(16)(x)
        return nn.Dense(4)(x)


def test_sharded_restore_on_a_mesh_of_8_host_devices(tmp_path):
    if len(jax.devices()) < 8:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
    x = jnp.ones((2, 8))
    variables = LinenSharded().init(jax.random.key(0), x)
    migrate.save_linen_checkpoint(tmp_path / "linen", variables)
    mesh = migrate.parse_mesh("data=2,model=4")
    with jax.set_mesh(mesh):
        abstract = nnx.eval_shape(lambda: Sharded(nnx.Rngs(0)))
    plan = migrate.match(LinenSharded(), abstract, x)
    report = migrate.stream_linen_checkpoint_to_nnx(
        tmp_path / "linen", tmp_path / "nnx", abstract, plan, mesh=mesh
    )
    assert report.ok and report.sharded

    # Saved sharded: Orbax recorded each array's NamedSharding.
    shardings = json.loads((tmp_path / "nnx" / "model" / "_sharding").read_text())
    assert all("NamedSharding" in s for s in shardings.values())

    # Restored with the standard recipe, each value lands in its annotation's sharding.
    with jax.set_mesh(mesh):
        target = nnx.eval_shape(lambda: Sharded(nnx.Rngs(0)))
    abstract_state = nnx.state(target)
    wanted = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract_state,
        nnx.get_named_sharding(abstract_state, mesh),
    )
    with ocp.StandardCheckpointer() as ckptr:
        nnx.update(target, ckptr.restore(tmp_path / "nnx" / "model", wanted))
    P = jax.sharding.PartitionSpec
    assert target.a.kernel[...].sharding == jax.sharding.NamedSharding(mesh, P("data", "model"))
    assert target.b.kernel[...].sharding == jax.sharding.NamedSharding(mesh, P("model", None))
    assert len(target.a.kernel[...].addressable_shards) == 8
    np.testing.assert_array_equal(
        np.asarray(target.a.kernel[...]), variables["params"]["Dense_0"]["kernel"]
    )
    with jax.set_mesh(mesh):
        np.testing.assert_allclose(target(x), LinenSharded().apply(variables, x), atol=1e-6)


def test_mesh_axes_the_annotations_name_must_exist(tmp_path):
    if len(jax.devices()) < 8:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
    x = jnp.ones((2, 8))
    migrate.save_linen_checkpoint(tmp_path / "linen", LinenSharded().init(jax.random.key(0), x))
    with jax.set_mesh(migrate.parse_mesh("data=2,model=4")):
        abstract = nnx.eval_shape(lambda: Sharded(nnx.Rngs(0)))
    plan = migrate.match(LinenSharded(), abstract, x)
    with pytest.raises(migrate.CheckpointError, match=r"a/kernel asks for mesh axis 'data'"):
        migrate.stream_linen_checkpoint_to_nnx(
            tmp_path / "linen",
            tmp_path / "nnx",
            abstract,
            plan,
            mesh=migrate.parse_mesh("batch=2,model=4"),
        )
    assert not (tmp_path / "nnx").exists()
    with pytest.raises(migrate.MigrationTypeError, match=r"needs 64 devices"):
        migrate.parse_mesh("data=8,model=8")


def test_checksum_covers_dtype_shape_and_bytes():
    a = np.arange(6, dtype=np.float32)
    assert _checkpoint_files.checksum(a) == _checkpoint_files.checksum(a.copy())
    assert _checkpoint_files.checksum(a) != _checkpoint_files.checksum(a.reshape(2, 3))
    assert _checkpoint_files.checksum(a) != _checkpoint_files.checksum(a.view(np.int32))
    b = a.copy()
    b[3] = np.nextafter(b[3], 10)
    assert _checkpoint_files.checksum(a) != _checkpoint_files.checksum(b)


def test_path_objects_are_accepted(tmp_path):
    migrate.save_linen_checkpoint(str(tmp_path / "linen"), nn.Dense(2).init(jax.random.key(0), X))
    model = nnx.eval_shape(lambda: nnx.Linear(4, 2, rngs=nnx.Rngs(0)))
    plan = migrate.match(nn.Dense(2), model, X)
    report = migrate.stream_linen_checkpoint_to_nnx(
        Path(tmp_path / "linen"), str(tmp_path / "nnx"), model, plan, verify=False
    )
    assert report.verified == "none" and "Not verified" in str(report)
