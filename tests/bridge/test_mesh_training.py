"""A realistic mesh run: a tiny mixed Linen/NNX transformer block trained on a (2, 4) mesh.

Attention is Linen (``nn.SelfAttention``), the MLP is NNX (``nnx.Linear``); parameters are
annotated for model parallelism on the ``'model'`` axis and the batch is split on ``'data'``.
The training step is jitted and runs on the 8 host devices; the parameters keep their
shardings across steps, and the losses equal those of the same model run unsharded. Done
from both sides: NNX on top (``ToNNX`` for the attention) and Linen on top (``to_linen`` for
the MLP).
"""

import contextlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import linnx as bridge

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (host) devices")

P = jax.sharding.PartitionSpec
BATCH, SEQ, FEATURES, HEADS, HIDDEN = 8, 4, 16, 4, 32
STEPS = 3
LR = 0.1


@pytest.fixture(scope="module")
def mesh():
    devices = np.asarray(jax.devices()[:8]).reshape(2, 4)
    return jax.sharding.Mesh(devices, ("data", "model"))


@pytest.fixture(scope="module")
def batch():
    kx, ky = jax.random.split(jax.random.key(7))
    x = jax.random.normal(kx, (BATCH, SEQ, FEATURES))
    y = jax.random.normal(ky, (BATCH, SEQ, FEATURES))
    return x, y


def _linen_attention():
    # Heads are split over 'model': query/key/value kernels are (features, heads, head_dim),
    # the output kernel is (heads, head_dim, features).
    return nn.MultiHeadDotProductAttention(
        num_heads=HEADS,
        qkv_features=FEATURES,
        kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), (None, "model", None)),
        out_kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), ("model", None, None)),
        deterministic=True,
    )


class NNXMLP(nnx.Module):
    def __init__(self, features: int, hidden: int, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal()
        self.up = nnx.Linear(
            features,
            hidden,
            kernel_init=nnx.with_partitioning(init, (None, "model")),
            bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("model",)),
            rngs=rngs,
        )
        self.down = nnx.Linear(
            hidden,
            features,
            kernel_init=nnx.with_partitioning(init, ("model", None)),
            rngs=rngs,
        )

    def __call__(self, x):
        return self.down(jax.nn.gelu(self.up(x)))


def _expected_specs():
    return {
        "query": P(None, "model", None),
        "out": P("model", None, None),
        "up_kernel": P(None, "model"),
        "up_bias": P("model"),
        "down_kernel": P("model", None),
    }


def _data_sharded(mesh, *arrays):
    sharding = jax.sharding.NamedSharding(mesh, P("data"))
    return tuple(jax.device_put(a, sharding) for a in arrays)


@contextlib.contextmanager
def _mesh_context(mesh):
    # `with mesh:` (deprecated by JAX), not jax.set_mesh: Flax 0.12.8's own Linen attention
    # (DenseGeneral with 3-d partition names) fails under jax.set_mesh even without linnx,
    # as it constrains its flat 2-d kernel in the shape check of `self.param`.
    if mesh is None:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with mesh:
            yield


def _spec(array):
    assert isinstance(array.sharding, jax.sharding.NamedSharding)
    # JAX drops trailing None entries from the specs it computes.
    names = list(array.sharding.spec)
    return P(*names, *([None] * (array.ndim - len(names))))


# -- NNX on top: Linen attention via ToNNX ----------------------------------------------------


class NNXBlock(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.attention = bridge.ToNNX(_linen_attention(), rngs=rngs)
        self.mlp = NNXMLP(FEATURES, HIDDEN, rngs=rngs)

    def __call__(self, x):
        x = x + self.attention(x)
        return x + self.mlp(x)


def _create_nnx(x):
    # Created off the mesh, then laid out: Linen's own DenseGeneral (inside the attention)
    # cannot initialize kernels with 3 partition names under a mesh (it constrains the flat
    # 2-d kernel). Pure NNX shards annotated variables eagerly and so needs a mesh too; its
    # construction here turns that off, for this block only (FLIP 4844). Neither is linnx's.
    with nnx.use_eager_sharding(False):
        return bridge.lazy_init(NNXBlock(nnx.Rngs(0)), x)


def _nnx_params_specs(model):
    attention = model.attention.params
    return {
        "query": _spec(attention["query"]["kernel"].get_value()),
        "out": _spec(attention["out"]["kernel"].get_value()),
        "up_kernel": _spec(model.mlp.up.kernel.get_value()),
        "up_bias": _spec(model.mlp.up.bias.get_value()),
        "down_kernel": _spec(model.mlp.down.kernel.get_value()),
    }


@nnx.jit
def _nnx_train_step(model, optimizer, x, y):
    def loss_fn(model):
        return jnp.mean((model(x) - y) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def _train_nnx(batch, mesh=None):
    x, y = batch
    model = _create_nnx(x)
    with _mesh_context(mesh):
        if mesh is not None:
            x, y = _data_sharded(mesh, x, y)
            state = nnx.state(model)
            nnx.update(model, jax.device_put(state, nnx.get_named_sharding(state, mesh)))
        optimizer = nnx.Optimizer(model, optax.sgd(LR), wrt=nnx.Param)
        losses, specs = [], []
        for _ in range(STEPS):
            losses.append(float(_nnx_train_step(model, optimizer, x, y)))
            if mesh is not None:
                specs.append(_nnx_params_specs(model))
    return np.asarray(losses), specs, model


# nnx.Optimizer rebuilds each parameter from its metadata through the Variable constructor,
# which warns about the guide's `sharding` key (kept next to `out_sharding`, see
# linnx._flax_internals.variable_with_sharding_names).
@pytest.mark.filterwarnings("ignore:'sharding' is deprecated:DeprecationWarning")
def test_nnx_model_with_linen_attention_trains_on_the_mesh(mesh, batch):
    losses, specs, model = _train_nnx(batch, mesh)
    reference, _, reference_model = _train_nnx(batch)

    # The annotations crossed the bridge as names, and the arrays sit on the mesh.
    assert model.attention.params["query"]["kernel"].sharding == (None, "model", None)
    for step_specs in specs:
        assert step_specs == _expected_specs()
    kernel = model.attention.params["query"]["kernel"].get_value()
    assert kernel.sharding.shard_shape(kernel.shape) == (FEATURES, HEADS // 4, FEATURES // HEADS)

    assert losses[-1] < losses[0]
    np.testing.assert_allclose(losses, reference, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        model.mlp.up.kernel.get_value(),
        reference_model.mlp.up.kernel.get_value(),
        rtol=1e-3,
        atol=1e-5,
    )


# -- Linen on top: NNX MLP via to_linen -------------------------------------------------------


class LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = x + _linen_attention()(x)
        return x + bridge.to_linen(NNXMLP, FEATURES, HIDDEN, name="mlp")(x)


def _linen_params_specs(params):
    attention, mlp = params["MultiHeadDotProductAttention_0"], params["mlp"]
    return {
        "query": _spec(nn.unbox(attention["query"]["kernel"])),
        "out": _spec(nn.unbox(attention["out"]["kernel"])),
        "up_kernel": _spec(nn.unbox(mlp["up"]["kernel"])),
        "up_bias": _spec(nn.unbox(mlp["up"]["bias"])),
        "down_kernel": _spec(nn.unbox(mlp["down"]["kernel"])),
    }


def _train_linen(batch, mesh=None):
    model = LinenBlock()
    tx = optax.sgd(LR)
    x, y = batch
    # Initialized off the mesh (see _create_nnx), then laid out by the Linen recipe:
    # shardings from the boxed partition specs.
    variables = jax.jit(model.init)(jax.random.key(0), x)
    params, graphdefs = variables["params"], variables["nnx"]
    if mesh is not None:
        x, y = _data_sharded(mesh, x, y)
        params = jax.device_put(params, nn.get_sharding(params, mesh))
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, x, y):
        def loss_fn(params):
            out = model.apply({"params": params, "nnx": graphdefs}, x)
            return jnp.mean((out - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return loss, optax.apply_updates(params, updates), opt_state

    losses, specs = [], []
    for _ in range(STEPS):
        loss, params, opt_state = train_step(params, opt_state, x, y)
        losses.append(float(loss))
        if mesh is not None:
            specs.append(_linen_params_specs(params))
    return np.asarray(losses), specs, params


def test_linen_model_with_nnx_mlp_trains_on_the_mesh(mesh, batch):
    with _mesh_context(mesh):
        losses, specs, params = _train_linen(batch, mesh)
    reference, _, reference_params = _train_linen(batch)

    up = params["mlp"]["up"]["kernel"]
    assert type(up) is bridge.NNXMeta
    assert up.metadata["sharding"] == (None, "model")
    assert nn.get_partition_spec(params)["mlp"]["down"]["kernel"] == P("model", None)
    for step_specs in specs:
        assert step_specs == _expected_specs()

    assert losses[-1] < losses[0]
    np.testing.assert_allclose(losses, reference, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        nn.unbox(up), nn.unbox(reference_params["mlp"]["up"]["kernel"]), rtol=1e-3, atol=1e-5
    )


def test_the_two_sides_agree(batch):
    # The same weights give the same block output whichever side is on top.
    x, _ = batch
    nnx_model = _create_nnx(x)
    variables = LinenBlock().init(jax.random.key(1), x)
    params = {
        "MultiHeadDotProductAttention_0": nnx.to_pure_dict(nnx.state(nnx_model.attention.params)),
        "mlp": nnx.to_pure_dict(nnx.state(nnx_model.mlp, nnx.Param)),
    }
    out = LinenBlock().apply(
        {"params": _rebox(variables["params"], params), "nnx": variables["nnx"]}, x
    )
    np.testing.assert_allclose(out, nnx_model(x), rtol=1e-5, atol=1e-5)


def _rebox(boxed, raw):
    return jax.tree.map(
        lambda b, r: b.replace_boxed(r) if isinstance(b, nn.meta.AxisMetadata) else r,
        boxed,
        raw,
        is_leaf=lambda b: isinstance(b, nn.meta.AxisMetadata),
    )
