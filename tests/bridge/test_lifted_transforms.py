"""Lifted transforms over bridged modules: NNX transforms over ToNNX, Linen ones over ToLinen.

Stacked parameters must differ per copy (the rng streams are split), and a transform that adds
an axis with a partition name puts that name at the right place of the sharding metadata.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import linnx as bridge

P = jax.sharding.PartitionSpec
LAYERS = 3
D = 8


def _partitioned(names):
    return nn.with_partitioning(nn.initializers.lecun_normal(), names)


def _assert_copies_differ(stacked):
    stacked = np.asarray(stacked)
    for i in range(1, stacked.shape[0]):
        assert not np.allclose(stacked[0], stacked[i])


# -- NNX transforms over ToNNX ----------------------------------------------------------------


class LinenBlock(nnx.Module):
    """An NNX layer whose dense is Linen, with its kernel annotated ('in', 'out')."""

    def __init__(self, rngs: nnx.Rngs):
        self.dense = bridge.ToNNX(nn.Dense(D, kernel_init=_partitioned(("in", "out"))), rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.dense(x))


def _linen_block_forward(kernel, bias, x):
    return jax.nn.relu(x @ kernel + bias)


@pytest.fixture(scope="module")
def x():
    return jax.random.normal(jax.random.key(1), (2, D))


def _stack_of_blocks(x, partition_name="layers"):
    metadata = {nnx.PARTITION_NAME: partition_name} if partition_name else {}

    @nnx.split_rngs(splits=LAYERS)
    @nnx.vmap(in_axes=(0, None), out_axes=0, transform_metadata=metadata)
    def create(rngs, x):
        return bridge.lazy_init(LinenBlock(rngs), x)

    return create(nnx.Rngs(0), x)


def test_nnx_vmap_over_tonnx_stacks_and_names_the_layer_axis(x):
    stack = _stack_of_blocks(x)
    kernel = stack.dense.params["kernel"]
    assert type(kernel) is nnx.Param
    assert kernel.shape == (LAYERS, D, D)
    assert stack.dense.params["bias"].shape == (LAYERS, D)
    _assert_copies_differ(kernel.get_value())
    # NNX inserts the name in `out_sharding`, which nnx.get_partition_spec reads.
    assert kernel.get_metadata()["out_sharding"] == ("layers", "in", "out")
    specs = nnx.get_partition_spec(nnx.state(stack, nnx.Param))
    assert specs["dense"]["params"]["kernel"].get_value() == P("layers", "in", "out")
    assert specs["dense"]["params"]["bias"].get_value() == P()


def test_nnx_vmap_without_partition_name_keeps_names(x):
    stack = _stack_of_blocks(x, partition_name=None)
    assert stack.dense.params["kernel"].shape == (LAYERS, D, D)
    # Without transform_metadata NNX does no axis bookkeeping at all (NNX's behaviour, for
    # bridged and native variables alike): pass a partition name to stack the names.
    assert stack.dense.params["kernel"].get_metadata()["out_sharding"] == ("in", "out")


def test_nnx_scan_over_tonnx_layers(x):
    stack = _stack_of_blocks(x)

    @nnx.split_rngs(splits=LAYERS)
    @nnx.scan(
        in_axes=(0, nnx.Carry),
        out_axes=nnx.Carry,
        transform_metadata={nnx.PARTITION_NAME: "layers"},
    )
    def forward(block, h):
        # Inside the scan, each layer sees its own slice and its own names.
        assert block.dense.params["kernel"].shape == (D, D)
        assert block.dense.params["kernel"].get_metadata()["out_sharding"] == ("in", "out")
        return block(h)

    y = forward(stack, x)
    kernels = np.asarray(stack.dense.params["kernel"].get_value())
    biases = np.asarray(stack.dense.params["bias"].get_value())
    expected = np.asarray(x)
    for i in range(LAYERS):
        expected = np.maximum(expected @ kernels[i] + biases[i], 0)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    # The axis comes back after the scan.
    assert stack.dense.params["kernel"].get_metadata()["out_sharding"] == ("layers", "in", "out")

    # Gradients through the scan have the stacked shape.
    grads = nnx.grad(lambda m: forward(m, x).sum())(stack)
    assert grads["dense"]["params"]["kernel"].get_value().shape == (LAYERS, D, D)


def test_nnx_remat_over_tonnx(x):
    block = bridge.lazy_init(LinenBlock(nnx.Rngs(0)), x)

    @nnx.remat
    def forward(m, h):
        return m(h)

    kernel = block.dense.params["kernel"].get_value()
    bias = block.dense.params["bias"].get_value()
    np.testing.assert_allclose(forward(block, x), _linen_block_forward(kernel, bias, x), rtol=1e-6)
    grads = nnx.grad(lambda m: forward(m, x).sum())(block)
    expected = jax.grad(lambda k: _linen_block_forward(k, bias, x).sum())(kernel)
    np.testing.assert_allclose(
        grads["dense"]["params"]["kernel"].get_value(), expected, rtol=1e-5, atol=1e-6
    )


# -- Linen transforms over ToLinen ------------------------------------------------------------


class NNXLayer(nnx.Module):
    def __init__(self, d: int, rngs: nnx.Rngs):
        init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("in", "out"))
        self.linear = nnx.Linear(d, d, kernel_init=init, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.linear(x))


def _nnx_layer_forward(kernel, bias, x):
    return jnp.maximum(x @ kernel + bias, 0)


class VmappedLayer(nn.Module):
    partition_name: str | None = "layers"

    @nn.compact
    def __call__(self, x):
        metadata = {nn.PARTITION_NAME: self.partition_name} if self.partition_name else {}
        return nn.vmap(
            bridge.ToLinen,
            variable_axes={"params": 0, "nnx": None},
            split_rngs={"params": True},
            in_axes=None,
            axis_size=LAYERS,
            metadata_params=metadata,
        )(NNXLayer, args=(D,))(x)


@pytest.mark.parametrize("partition_name", ["layers", None])
def test_nn_vmap_over_tolinen(x, partition_name):
    model = VmappedLayer(partition_name)
    variables = model.init(jax.random.key(0), x)
    kernel = variables["params"]["VmapToLinen_0"]["linear"]["kernel"]
    assert type(kernel) is bridge.NNXMeta
    assert kernel.value.shape == (LAYERS, D, D)
    _assert_copies_differ(kernel.value)
    assert kernel.metadata["sharding"] == (partition_name, "in", "out")
    specs = nn.get_partition_spec(variables)["params"]["VmapToLinen_0"]["linear"]
    assert specs["kernel"] == P(partition_name, "in", "out")
    y = model.apply(variables, x)
    bias = variables["params"]["VmapToLinen_0"]["linear"]["bias"].value
    expected = jax.vmap(_nnx_layer_forward, in_axes=(0, 0, None))(kernel.value, bias, x)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


class ScanBody(nn.Module):
    @nn.compact
    def __call__(self, h, _):
        return bridge.to_linen(NNXLayer, D)(h), None


class ScannedLayers(nn.Module):
    partition_name: str | None = "layers"

    @nn.compact
    def __call__(self, x):
        # nn.scan only takes integer axes, so the graphdef is broadcast rather than axis None.
        metadata = {nn.PARTITION_NAME: self.partition_name} if self.partition_name else {}
        scan = nn.scan(
            ScanBody,
            variable_axes={"params": 0},
            variable_broadcast="nnx",
            split_rngs={"params": True},
            length=LAYERS,
            metadata_params=metadata,
        )
        h, _ = scan(name="layers")(x, None)
        return h


@pytest.mark.parametrize("partition_name", ["layers", None])
def test_nn_scan_over_tolinen_adds_the_layer_axis(x, partition_name):
    model = ScannedLayers(partition_name)
    variables = model.init(jax.random.key(0), x)
    linear = variables["params"]["layers"]["ToLinen_0"]["linear"]
    assert linear["kernel"].value.shape == (LAYERS, D, D)
    assert linear["bias"].value.shape == (LAYERS, D)
    _assert_copies_differ(linear["kernel"].value)
    assert linear["kernel"].metadata["sharding"] == (partition_name, "in", "out")
    specs = nn.get_partition_spec(variables)["params"]["layers"]["ToLinen_0"]["linear"]
    assert specs["kernel"] == P(partition_name, "in", "out")
    assert specs["bias"] == P()

    y = model.apply(variables, x)
    expected = x
    for i in range(LAYERS):
        expected = _nnx_layer_forward(linear["kernel"].value[i], linear["bias"].value[i], expected)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)

    # The boxes unstack and restack through the scan of a gradient too.
    grads = jax.grad(lambda p: model.apply({**variables, "params": p}, x).sum())(
        variables["params"]
    )
    assert grads["layers"]["ToLinen_0"]["linear"]["kernel"].value.shape == (LAYERS, D, D)


def test_nnxmeta_axis_round_trip():
    box = bridge.NNXMeta(nnx.Param, jnp.zeros((D, D)), {"sharding": ("in", "out")})
    stacked = box.add_axis(0, {nn.PARTITION_NAME: "layers"})
    assert stacked.metadata["sharding"] == ("layers", "in", "out")
    assert stacked.remove_axis(0, {nn.PARTITION_NAME: "layers"}).metadata["sharding"] == (
        "in",
        "out",
    )
    assert box.add_axis(1, {}).get_partition_spec() == P("in", None, "out")
    plain = bridge.NNXMeta(nnx.Param, jnp.zeros((D,)), {})
    assert plain.add_axis(0, {nn.PARTITION_NAME: "layers"}).metadata == {}


class RematLayer(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.remat(bridge.ToLinen)(NNXLayer, args=(D,))(x)


class JitLayer(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.jit(bridge.ToLinen)(NNXLayer, args=(D,))(x)


@pytest.mark.parametrize("model_cls", [RematLayer, JitLayer])
def test_nn_remat_and_jit_over_tolinen(x, model_cls):
    model = model_cls()
    variables = model.init(jax.random.key(0), x)
    (name,) = variables["params"]
    assert name.endswith("ToLinen_0")
    linear = variables["params"][name]["linear"]
    assert linear["kernel"].metadata["sharding"] == ("in", "out")
    kernel, bias = linear["kernel"].value, linear["bias"].value
    np.testing.assert_allclose(
        model.apply(variables, x), _nnx_layer_forward(kernel, bias, x), rtol=1e-5, atol=1e-6
    )
    grads = jax.grad(lambda p: model.apply({**variables, "params": p}, x).sum())(
        variables["params"]
    )
    expected = jax.grad(lambda k: _nnx_layer_forward(k, bias, x).sum())(kernel)
    np.testing.assert_allclose(
        grads[name]["linear"]["kernel"].value, expected, rtol=1e-5, atol=1e-6
    )
