"""Spec 000, "Partition metadata" and "Lifted transforms": the guide's examples on 8 devices.

Each example is the guide's code with only ``import linnx as bridge`` changed, plus the
adaptations the spec README allows: ``jax.lax.with_sharding_constraint`` for the removed
``nnx.with_sharding_constraint``, and the mesh given as ``with mesh:`` (deprecated) or as
``with jax.set_mesh(mesh):``. The mesh examples also run without any mesh: the partition
names stay as metadata and the arrays are not sharded.
"""

import contextlib
import warnings

import jax
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx
from jax.experimental import mesh_utils

import linnx as bridge

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (host) devices")


@pytest.fixture(scope="module")
def mesh():
    return jax.sharding.Mesh(
        devices=mesh_utils.create_device_mesh((2, 4)), axis_names=("in", "out")
    )


@contextlib.contextmanager
def _with_mesh(mesh):
    # The guide's own spelling; JAX deprecates it in favour of jax.set_mesh.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with mesh:
            yield


MESH_CONTEXTS = {
    "with_mesh": _with_mesh,
    "set_mesh": jax.set_mesh,
}


def _assert_sharded_2x4(array, shape):
    sharding = array.sharding
    assert isinstance(sharding, jax.sharding.NamedSharding)
    assert sharding.spec == jax.sharding.PartitionSpec("in", "out")
    assert sharding.mesh.shape == {"in": 2, "out": 4}
    assert len(sharding.device_set) == 8
    assert not sharding.is_fully_replicated
    assert sharding.shard_shape(shape) == (shape[0] // 2, shape[1] // 4)
    assert {s.data.shape for s in array.addressable_shards} == {(shape[0] // 2, shape[1] // 4)}
    # The GSPMD view the guide prints: devices=[2,4]<=[8].
    hlo = sharding._to_xla_hlo_sharding(array.ndim)
    assert hlo.tile_assignment_dimensions() == [2, 4]


def _assert_unsharded(array):
    assert len(array.sharding.device_set) == 1


# -- Partition metadata: Linen to NNX ---------------------------------------------------------


class LinenDotWithPartitioning(nn.Module):
    out_dim: int

    @nn.compact
    def __call__(self, x):
        w = self.param(
            "w",
            nn.with_partitioning(nn.initializers.lecun_normal(), ("in", "out")),
            (x.shape[-1], self.out_dim),
        )
        return x @ w


@nnx.jit
def create_sharded_nnx_module(x):
    model = bridge.lazy_init(bridge.ToNNX(LinenDotWithPartitioning(64), rngs=nnx.Rngs(0)), x)
    state = nnx.state(model)
    sharded_state = jax.lax.with_sharding_constraint(state, nnx.get_partition_spec(state))
    nnx.update(model, sharded_state)
    return model


@pytest.mark.parametrize("mesh_context", MESH_CONTEXTS)
def test_linen_to_nnx_partition_metadata(mesh, mesh_context):
    x = jax.random.normal(jax.random.key(42), (4, 32))
    with MESH_CONTEXTS[mesh_context](mesh):
        model = create_sharded_nnx_module(x)

    assert type(model.params["w"]) is nnx.Param
    assert model.params["w"].sharding == ("in", "out")
    _assert_sharded_2x4(model.params["w"].get_value(), (32, 64))
    assert nnx.get_partition_spec(nnx.state(model))["params"]["w"].get_value() == (
        jax.sharding.PartitionSpec("in", "out")
    )
    # The sharded model computes what Linen computes with the same weights.
    expected = LinenDotWithPartitioning(64).apply(
        {"params": {"w": model.params["w"].get_value()}}, x
    )
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-5)


def test_linen_to_nnx_partition_metadata_without_mesh():
    x = jax.random.normal(jax.random.key(42), (4, 32))
    # The guide's function minus the constraint, which JAX only allows under a mesh.
    model = nnx.jit(
        lambda x: bridge.lazy_init(bridge.ToNNX(LinenDotWithPartitioning(64), rngs=nnx.Rngs(0)), x)
    )(x)
    assert type(model.params["w"]) is nnx.Param
    assert model.params["w"].sharding == ("in", "out")
    _assert_unsharded(model.params["w"].get_value())
    assert nnx.get_partition_spec(nnx.state(model))["params"]["w"].get_value() == (
        jax.sharding.PartitionSpec("in", "out")
    )
    assert model(x).shape == (4, 64)


# -- Partition metadata: NNX to Linen ---------------------------------------------------------


class NNXDotWithParititioning(nnx.Module):
    def __init__(self, in_dim: int, out_dim: int, rngs: nnx.Rngs):
        init_fn = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("in", "out"))
        self.w = nnx.Param(init_fn(rngs.params(), (in_dim, out_dim)))

    def __call__(self, x: jax.Array):
        return x @ self.w


@pytest.mark.parametrize("mesh_context", MESH_CONTEXTS)
def test_nnx_to_linen_partition_metadata(mesh, mesh_context):
    x = jax.random.normal(jax.random.key(42), (4, 32))
    model = bridge.to_linen(NNXDotWithParititioning, 32, 64)

    with MESH_CONTEXTS[mesh_context](mesh):
        variables = jax.jit(model.init)(jax.random.key(0), x)

    assert type(variables["params"]["w"]) is bridge.NNXMeta
    assert variables["params"]["w"].metadata["sharding"] == ("in", "out")
    _assert_sharded_2x4(variables["params"]["w"].value, (32, 64))

    unboxed = nn.unbox(variables)
    assert isinstance(unboxed["params"]["w"], jax.Array)
    assert not isinstance(unboxed["params"]["w"], nn.meta.AxisMetadata)
    _assert_sharded_2x4(unboxed["params"]["w"], (32, 64))

    specs = nn.get_partition_spec(variables)
    assert specs["params"]["w"] == jax.sharding.PartitionSpec("in", "out")
    rules = [("in", "in"), ("out", "out")]
    shardings = nn.logical_to_mesh_sharding({"params": specs["params"]}, mesh, rules)
    assert shardings["params"]["w"] == jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec("in", "out")
    )

    y = model.apply(variables, x)
    np.testing.assert_allclose(y, x @ unboxed["params"]["w"], rtol=1e-5, atol=1e-5)


def test_nnx_to_linen_partition_metadata_without_mesh():
    x = jax.random.normal(jax.random.key(42), (4, 32))
    model = bridge.to_linen(NNXDotWithParititioning, 32, 64)
    for init in (model.init, jax.jit(model.init)):
        variables = init(jax.random.key(0), x)
        assert type(variables["params"]["w"]) is bridge.NNXMeta
        assert variables["params"]["w"].metadata["sharding"] == ("in", "out")
        _assert_unsharded(variables["params"]["w"].value)
        assert nn.get_partition_spec(variables)["params"]["w"] == (
            jax.sharding.PartitionSpec("in", "out")
        )
        assert model.apply(variables, x).shape == (4, 64)


# -- Lifted transforms ------------------------------------------------------------------------


class NNXVmapped(nnx.Module):
    def __init__(self, out_dim: int, vmap_axis_size: int, rngs: nnx.Rngs):
        self.linen_dot = bridge.ToNNX(nn.Dense(out_dim, use_bias=False), rngs=rngs)
        self.vmap_axis_size = vmap_axis_size

    def __call__(self, x):
        @nnx.split_rngs(splits=self.vmap_axis_size)
        @nnx.vmap(in_axes=(0, 0), axis_size=self.vmap_axis_size)
        def vmap_fn(submodule, x):
            return submodule(x)

        return vmap_fn(self.linen_dot, x)


def test_lifted_transforms_linen_to_nnx():
    x = jax.random.normal(jax.random.key(0), (4, 32))
    model = bridge.lazy_init(NNXVmapped(64, 4, rngs=nnx.Rngs(0)), x)

    kernel = model.linen_dot.params["kernel"]
    assert kernel.shape == (4, 32, 64)  # first axis with dim 4 got vmapped
    kernels = np.asarray(kernel.get_value())
    # split_rngs: each copy got its own initialization.
    assert all(not np.allclose(kernels[0], kernels[i]) for i in range(1, 4))
    y = model(x)
    assert y.shape == (4, 64)
    expected = np.einsum("bi,bio->bo", np.asarray(x), kernels)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


class LinenVmapped(nn.Module):
    dout: int

    @nn.compact
    def __call__(self, x):
        inner = nn.vmap(
            bridge.ToLinen, variable_axes={"params": 0, "nnx": None}, split_rngs={"params": True}
        )(nnx.Linear, args=(x.shape[-1], self.dout))
        return inner(x)


def test_lifted_transforms_nnx_to_linen():
    x = jax.random.normal(jax.random.key(42), (4, 32))
    model = LinenVmapped(64)
    var = model.init(jax.random.key(0), x)

    kernel = var["params"]["VmapToLinen_0"]["kernel"]
    assert kernel.value.shape == (4, 32, 64)  # leading dim 4 got vmapped
    assert type(kernel) is bridge.NNXMeta
    kernels = np.asarray(kernel.value)
    assert all(not np.allclose(kernels[0], kernels[i]) for i in range(1, 4))
    y = model.apply(var, x)
    assert y.shape == (4, 64)
    bias = np.asarray(var["params"]["VmapToLinen_0"]["bias"].value)
    assert bias.shape == (4, 64)
    expected = np.einsum("bi,bio->bo", np.asarray(x), kernels) + bias
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
