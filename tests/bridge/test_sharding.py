"""Partition metadata across the bridge on a 2x4 mesh of host devices.

Linen -> NNX: ``nn.with_partitioning`` / ``nn.with_logical_partitioning`` names become the
NNX variable's ``sharding`` (mesh axes); NNX -> Linen: ``nnx.with_partitioning`` names land in
``NNXMeta.metadata['sharding']`` and arrays are laid out at init under a mesh, given as
``with mesh:`` or ``jax.set_mesh``. Without a mesh, names stay metadata and nothing is sharded.
"""

import contextlib
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import linnx as bridge

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (host) devices")

P = jax.sharding.PartitionSpec
RULES = (("batch", "data"), ("embed", None), ("mlp", "model"))


@pytest.fixture(scope="module")
def mesh():
    devices = np.asarray(jax.devices()[:8]).reshape(2, 4)
    return jax.sharding.Mesh(devices, ("data", "model"))


@contextlib.contextmanager
def _with_mesh(mesh):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with mesh:
            yield


MESH_CONTEXTS = {"with_mesh": _with_mesh, "set_mesh": jax.set_mesh}


def _spec_of(array):
    sharding = array.sharding
    assert isinstance(sharding, jax.sharding.NamedSharding)
    return sharding.spec


# -- Linen -> NNX -----------------------------------------------------------------------------


class LogicalMLP(nn.Module):
    rules: tuple | None = None

    @nn.compact
    def __call__(self, x):
        init = nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), ("embed", "mlp"), rules=self.rules
        )
        w = self.param("w", init, (x.shape[-1], 16))
        return x @ w


def _sharded_state(model):
    state = nnx.state(model)
    return jax.lax.with_sharding_constraint(state, nnx.get_partition_spec(state))


@pytest.mark.parametrize("mesh_context", MESH_CONTEXTS)
def test_logical_partitioning_with_context_rules(mesh, mesh_context):
    x = jnp.ones((4, 8))

    @nnx.jit
    def create(x):
        model = bridge.lazy_init(bridge.ToNNX(LogicalMLP(), rngs=nnx.Rngs(0)), x)
        nnx.update(model, _sharded_state(model))
        return model

    with MESH_CONTEXTS[mesh_context](mesh), nn.logical_axis_rules(RULES):
        model = create(x)
    w = model.params["w"]
    assert type(w) is nnx.Param
    # The logical names are kept (as Flax's bridge did); the context's rules map them where
    # the arrays are laid out, here by `_sharded_state` inside the rules context.
    assert w.sharding == ("embed", "mlp")
    assert "sharding_rules" not in w.get_metadata()
    with nn.logical_axis_rules(RULES):
        spec = nnx.get_partition_spec(nnx.state(model))["params"]["w"].get_value()
    assert spec == P(None, "model")
    assert _spec_of(w.get_value()) == P(None, "model")
    assert w.get_value().sharding.shard_shape((8, 16)) == (8, 4)


def test_logical_partitioning_with_rules_on_the_box(mesh):
    x = jnp.ones((4, 8))
    model = bridge.lazy_init(bridge.ToNNX(LogicalMLP(rules=RULES), rngs=nnx.Rngs(0)), x)
    # Names and rules as given (issue 14, item 8; this failed before: the names were mapped
    # at creation, to (None, 'model')); NNX maps them with the variable's own rules.
    assert model.params["w"].sharding == ("embed", "mlp")
    assert model.params["w"].get_metadata()["sharding_rules"] == RULES
    assert nnx.get_partition_spec(nnx.state(model))["params"]["w"].get_value() == P(None, "model")
    # No mesh: nothing is laid out.
    assert len(model.params["w"].get_value().sharding.device_set) == 1


def test_logical_partitioning_keeps_an_alias_and_its_rules():
    # The guide-era bridge's behaviour: `sharding` is the logical name, `sharding_rules` the
    # box's rules, resolved by nnx.get_partition_spec (failed before: ('out',)).
    rules = (("out-alias", "out"),)
    init = nn.with_logical_partitioning(nn.initializers.zeros_init(), ("out-alias",), rules=rules)
    model = bridge.lazy_init(
        bridge.ToNNX(nn.Dense(4, bias_init=init), rngs=nnx.Rngs(0)), jnp.ones((1, 3))
    )
    bias = model.params["bias"]
    assert bias.sharding == ("out-alias",)
    assert bias.get_metadata()["sharding_rules"] == rules
    assert nnx.get_partition_spec(nnx.state(model))["params"]["bias"].get_value() == P("out")


@pytest.mark.parametrize(
    "rules, bad",
    [
        (("out-alias", "out"), "sharding rule 0 of ('out-alias', 'out') is 'out-alias'"),
        ((("out-alias", 3),), "sharding rule 0 of (('out-alias', 3),) is ('out-alias', 3)"),
        ("out-alias", "the sharding rules 'out-alias' are not a sequence"),
    ],
    ids=["flat", "bad-axis", "a-string"],
)
def test_malformed_partition_rules_are_named_before_anything_is_created(rules, bad):
    # Failed before: a raw ValueError from Flax's resolver inside lazy_init.
    init = nn.with_logical_partitioning(nn.initializers.zeros_init(), ("out-alias",), rules=rules)
    model = bridge.ToNNX(nn.Dense(4, bias_init=init), rngs=nnx.Rngs(0))
    with pytest.raises(bridge.ShardingRulesError, match=re.escape("params/bias: " + bad)):
        bridge.lazy_init(model, jnp.ones((1, 3)))
    assert model.linen_collections == ()


def test_logical_partitioning_without_rules_keeps_logical_names():
    # Without rules there is nothing to map with; NNX maps them later under its rules.
    x = jnp.ones((4, 8))
    model = bridge.lazy_init(bridge.ToNNX(LogicalMLP(), rngs=nnx.Rngs(0)), x)
    assert model.params["w"].sharding == ("embed", "mlp")
    with nn.logical_axis_rules(RULES):
        spec = nnx.get_partition_spec(nnx.state(model))["params"]["w"].get_value()
    assert spec == P(None, "model")


def test_partitioned_dense_sharded_by_nnx_jit(mesh):
    # The guide's recipe with a real Linen layer, on a ('data', 'model') mesh.
    dense = nn.Dense(
        16,
        kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), (None, "model")),
        bias_init=nn.with_partitioning(nn.initializers.zeros_init(), ("model",)),
    )
    x = jnp.ones((4, 8))

    @nnx.jit
    def create(x):
        model = bridge.lazy_init(bridge.ToNNX(dense, rngs=nnx.Rngs(0)), x)
        nnx.update(model, _sharded_state(model))
        return model

    with jax.set_mesh(mesh):
        model = create(x)
        y = nnx.jit(lambda m, x: m(x))(model, x)
    assert model.kernel.sharding == (None, "model")
    assert model.bias.sharding == ("model",)
    assert _spec_of(model.kernel.get_value()) == P(None, "model")
    assert _spec_of(model.bias.get_value()) == P("model")
    np.testing.assert_allclose(
        y, x @ model.kernel.get_value() + model.bias.get_value(), rtol=1e-5, atol=1e-6
    )


def test_annotations_do_not_need_global_flax_config(mesh):
    # Pitfall 10: no eager-sharding flag is needed, and none is left changed.
    before = nnx.using_eager_sharding()
    x = jnp.ones((4, 8))
    model = bridge.lazy_init(bridge.ToNNX(LogicalMLP(rules=RULES), rngs=nnx.Rngs(0)), x)
    with jax.set_mesh(mesh):
        model(x)
        bridge.to_linen(NNXMLP, 8, 16).init(jax.random.key(0), x)
    assert nnx.using_eager_sharding() == before
    assert model(x).shape == (4, 16)


# -- NNX -> Linen -----------------------------------------------------------------------------


class NNXMLP(nnx.Module):
    def __init__(self, din, dout, rngs: nnx.Rngs, names=(None, "model")):
        init = nnx.with_partitioning(nnx.initializers.lecun_normal(), names)
        self.linear = nnx.Linear(din, dout, kernel_init=init, rngs=rngs)

    def __call__(self, x):
        return self.linear(x)


@pytest.mark.parametrize("mesh_context", MESH_CONTEXTS)
@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
def test_to_linen_init_lays_out_on_the_mesh(mesh, mesh_context, jit):
    x = jnp.ones((4, 8))
    model = bridge.to_linen(NNXMLP, 8, 16)
    init = jax.jit(model.init) if jit else model.init
    with MESH_CONTEXTS[mesh_context](mesh):
        variables = init(jax.random.key(0), x)
    kernel = variables["params"]["linear"]["kernel"]
    assert kernel.metadata["sharding"] == (None, "model")
    assert _spec_of(kernel.value) == P(None, "model")
    unboxed = nn.unbox(variables)["params"]["linear"]["kernel"]
    assert _spec_of(unboxed) == P(None, "model")
    assert nn.get_partition_spec(variables)["params"]["linear"]["kernel"] == P(None, "model")
    # The bias has no names: left as it is.
    assert nn.get_partition_spec(variables)["params"]["linear"]["bias"] == P()
    y = model.apply(variables, x)
    np.testing.assert_allclose(
        y, x @ unboxed + variables["params"]["linear"]["bias"].value, rtol=1e-5, atol=1e-6
    )


def test_to_linen_logical_names_with_rules(mesh):
    x = jnp.ones((4, 8))
    model = bridge.to_linen(NNXMLP, 8, 16, names=("embed", "mlp"))
    with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
        variables = jax.jit(model.init)(jax.random.key(0), x)
    kernel = variables["params"]["linear"]["kernel"]
    # Linen's convention: the metadata and partition spec keep the logical names...
    assert kernel.metadata["sharding"] == ("embed", "mlp")
    specs = nn.get_partition_spec(variables)
    assert specs["params"]["linear"]["kernel"] == P("embed", "mlp")
    # ...and nn.logical_to_mesh_sharding maps them, as for nn.LogicallyPartitioned.
    shardings = nn.logical_to_mesh_sharding({"params": specs["params"]}, mesh, RULES)
    assert shardings["params"]["linear"]["kernel"] == jax.sharding.NamedSharding(
        mesh, P(None, "model")
    )
    # Under the rules, init already laid the kernel out on the mapped axes.
    assert _spec_of(kernel.value) == P(None, "model")


def test_to_linen_names_not_on_the_mesh_stay_metadata(mesh):
    # Logical names without rules are not mesh axes: init keeps them as metadata only.
    x = jnp.ones((4, 8))
    model = bridge.to_linen(NNXMLP, 8, 16, names=("embed", "mlp"))
    with jax.set_mesh(mesh):
        variables = model.init(jax.random.key(0), x)
    kernel = variables["params"]["linear"]["kernel"]
    assert kernel.metadata["sharding"] == ("embed", "mlp")
    # (Under jax.set_mesh, JAX replicates new arrays over the mesh; nothing is split.)
    assert kernel.value.sharding.is_fully_replicated


def test_to_linen_under_explicit_mesh_axes():
    # jax.make_mesh gives Explicit axes by default today; init reshards instead of asserting.
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    x = jnp.ones((4, 8))
    model = bridge.to_linen(NNXMLP, 8, 16)
    with jax.set_mesh(mesh):
        variables = model.init(jax.random.key(0), x)
        jitted = jax.jit(model.init)(jax.random.key(0), x)
    for v in (variables, jitted):
        assert _spec_of(v["params"]["linear"]["kernel"].value) == P(None, "model")


def test_to_linen_without_mesh_keeps_metadata():
    x = jnp.ones((4, 8))
    model = bridge.to_linen(NNXMLP, 8, 16)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    kernel = variables["params"]["linear"]["kernel"]
    assert kernel.metadata["sharding"] == (None, "model")
    assert len(kernel.value.sharding.device_set) == 1
    assert model.apply(variables, x).shape == (4, 16)


def test_names_survive_the_round_trip_through_both_wrappers(mesh):
    # NNX -> Linen -> NNX: the NNX variable comes back with its names.
    x = jnp.ones((4, 8))
    model = bridge.lazy_init(bridge.ToNNX(bridge.to_linen(NNXMLP, 8, 16), rngs=nnx.Rngs(0)), x)
    kernel = model.params["linear"]["kernel"]
    assert type(kernel) is nnx.Param
    assert kernel.sharding == (None, "model")
    assert nnx.get_partition_spec(nnx.state(model, nnx.Param))["params"]["linear"][
        "kernel"
    ].get_value() == P(None, "model")
