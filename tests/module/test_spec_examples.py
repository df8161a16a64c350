"""The Linen examples of spec 003 as ``linnx.Module`` subclasses.

Each example is compared with its verbatim Linen version (``tests/models/spec003_linen.py``,
shared with the migration tests); the linnx port here changes only the base class,
``nn.compact`` -> ``lm.compact`` and the layer constructors (``nn.Dense`` ->
``lm.nn.Dense``...). Both are built inside a function so that the class names, which Linen
uses for auto-naming, are the same. The tests compare the port against the real Linen
``init``/``apply`` and then train it the NNX way.
"""

import jax
import jax.numpy as jnp
import optax
import pytest
import spec003_linen
from _trees import assert_trees_close, shapes
from flax import linen as nn
from flax import nnx

import linnx
import linnx.module as lm

# The spec's counter example writes `self.count.value += 1`, which today's Flax deprecates.
pytestmark = pytest.mark.filterwarnings(
    "ignore:'.value' setter is now deprecated:DeprecationWarning"
)


# -- Block / Model with Dense + Dropout -------------------------------------------------------


def linnx_block_model():
    class Block(lm.Module):
        features: int

        @lm.compact
        def __call__(self, x, training: bool):
            x = lm.nn.Dense(self.features)(x)
            x = lm.nn.Dropout(0.5, deterministic=not training)(x)
            x = jax.nn.relu(x)
            return x

    class Model(lm.Module):
        dmid: int
        dout: int

        @lm.compact
        def __call__(self, x, training: bool):
            x = Block(self.dmid)(x, training)
            x = lm.nn.Dense(self.dout)(x)
            return x

    return Model


@pytest.fixture(scope="module")
def block_model():
    LinenModel, Model = spec003_linen.basic().Model, linnx_block_model()
    sample_x = jnp.ones((1, 784))
    linen_vars = LinenModel(256, 10).init(jax.random.key(0), sample_x, training=False)
    return LinenModel, Model, sample_x, linen_vars


class TestBlockModel:
    def test_init_has_linens_paths_and_shapes(self, block_model):
        _, Model, sample_x, linen_vars = block_model
        variables = Model(256, 10).init(jax.random.key(0), sample_x, training=False)
        assert shapes(variables) == shapes(linen_vars)
        params = variables["params"]
        assert params["Dense_0"]["bias"].shape == (10,)
        assert params["Block_0"]["Dense_0"]["kernel"].shape == (784, 256)

    def test_apply_on_linen_variables_gives_linens_output(self, block_model):
        LinenModel, Model, _, linen_vars = block_model
        x = jax.random.normal(jax.random.key(1), (3, 784))
        expected = LinenModel(256, 10).apply(linen_vars, x, training=False)
        assert_trees_close(Model(256, 10).apply(linen_vars, x, training=False), expected)

    def test_dropout_runs_in_training_only(self, block_model):
        _, Model, _, linen_vars = block_model
        x = jnp.ones((2, 784))
        model = Model(256, 10)
        eval_out = model.apply(linen_vars, x, training=False)
        train_a = model.apply(linen_vars, x, training=True, rngs={"dropout": jax.random.key(1)})
        train_b = model.apply(linen_vars, x, training=True, rngs={"dropout": jax.random.key(2)})
        assert not jnp.allclose(train_a, eval_out)
        assert not jnp.allclose(train_a, train_b)

    def test_linen_style_train_step_under_jax_jit(self, block_model):
        # The spec's Linen training step, unchanged, on the linnx model.
        _, Model, sample_x, linen_vars = block_model
        model = Model(256, 10)
        params = linen_vars["params"]
        labels = jnp.ones((1,), dtype=jnp.int32)

        def loss_fn(params, key):
            logits = model.apply({"params": params}, sample_x, training=True, rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        @jax.jit
        def train_step(key, params):
            grads = jax.grad(loss_fn)(params, key)
            return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)

        new_params = train_step(jax.random.key(0), params)
        assert shapes(new_params) == shapes(params)
        key = jax.random.key(0)
        assert loss_fn(new_params, key) < loss_fn(params, key)

    def test_trains_as_an_nnx_module(self, block_model):
        _, Model, sample_x, _ = block_model
        model = linnx.lazy_init(Model(256, 10, rngs=nnx.Rngs(0)), sample_x, training=False)
        assert isinstance(model.Block_0.Dense_0.kernel, nnx.Param)
        assert model.Block_0.Dense_0.kernel.shape == (784, 256)
        assert model.Dense_0.bias.shape == (10,)
        optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
        labels = jnp.ones((1,), dtype=jnp.int32)

        @nnx.jit
        def train_step(model, optimizer):
            def loss_fn(model):
                logits = model(sample_x, training=True)
                return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

            loss, grads = nnx.value_and_grad(loss_fn)(model)
            optimizer.update(model, grads)
            return loss

        losses = [float(train_step(model, optimizer)) for _ in range(4)]
        assert losses[-1] < losses[0]
        # The trained state reads back as a Linen variables dict of the same structure.
        variables = {"params": nnx.to_pure_dict(nnx.state(model, nnx.Param))}
        assert shapes(variables) == shapes(block_model[3])


# -- Block with BatchNorm and a counter (setup + compact) -------------------------------------


def linnx_bn_block():
    class Block(lm.Module):
        features: int

        def setup(self):
            self.dense = lm.nn.Dense(self.features)
            self.batchnorm = lm.nn.BatchNorm(momentum=0.99)
            self.count = self.variable("counter", "count", lambda: jnp.zeros((), jnp.int32))

        @lm.compact
        def __call__(self, x, training: bool):
            x = self.dense(x)
            x = self.batchnorm(x, use_running_average=not training)
            self.count.value += 1
            x = jax.nn.relu(x)
            return x

    return Block


@pytest.fixture(scope="module")
def bn_block():
    LinenBlock, Block = spec003_linen.collections().Block, linnx_bn_block()
    x = jax.random.normal(jax.random.key(0), (2, 4))
    linen_vars = LinenBlock(4).init(jax.random.key(0), x, training=True)
    return LinenBlock, Block, x, linen_vars


class TestBatchNormCounterBlock:
    def test_init_matches_linen(self, bn_block):
        _, Block, x, linen_vars = bn_block
        variables = Block(4).init(jax.random.key(0), x, training=True)
        assert shapes(variables) == shapes(linen_vars)
        assert variables["params"]["dense"]["kernel"].shape == (4, 4)
        assert variables["batch_stats"]["batchnorm"]["mean"].shape == (4,)
        assert int(variables["counter"]["count"]) == 1
        # Statistics are not updated while initializing, as in Linen.
        assert_trees_close(variables["batch_stats"], linen_vars["batch_stats"])
        assert_trees_close(variables["counter"], linen_vars["counter"])

    def test_apply_updates_match_linen(self, bn_block):
        LinenBlock, Block, x, linen_vars = bn_block
        mutable = ["batch_stats", "counter"]
        expected, expected_updates = LinenBlock(4).apply(
            linen_vars, x, training=True, mutable=mutable
        )
        out, updates = Block(4).apply(linen_vars, x, training=True, mutable=mutable)
        assert_trees_close(out, expected)
        assert_trees_close(updates, expected_updates)
        assert int(updates["counter"]["count"]) == 2
        eval_out, _ = Block(4).apply(linen_vars, x, training=False, mutable=["counter"])
        assert_trees_close(
            eval_out, LinenBlock(4).apply(linen_vars, x, training=False, mutable=["counter"])[0]
        )

    def test_split_by_variable_type_and_train(self, bn_block):
        _, Block, x, _ = bn_block
        Counter = linnx.variable_type_from_name("counter")
        model = linnx.lazy_init(Block(4, rngs=nnx.Rngs(0)), x, training=True)
        assert isinstance(model.dense.kernel, nnx.Param)
        assert isinstance(model.batchnorm.mean, nnx.BatchStat)
        assert isinstance(model.count, Counter)
        # As in the spec, plus `...` for the rng streams the top module holds.
        graphdef, params, batch_stats, count, rest = nnx.split(
            model, nnx.Param, nnx.BatchStat, Counter, ...
        )
        assert sorted(params.keys()) == ["batchnorm", "dense"]
        assert sorted(batch_stats.keys()) == ["batchnorm"]
        assert sorted(count.keys()) == ["count"]
        model = nnx.merge(graphdef, params, batch_stats, count, rest)

        optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)

        @nnx.jit
        def train_step(model, optimizer):
            def loss_fn(model):
                return jnp.mean((model(x, training=True) - 1.0) ** 2)

            loss, grads = nnx.value_and_grad(loss_fn)(model)
            optimizer.update(model, grads)
            return loss

        losses = [float(train_step(model, optimizer)) for _ in range(4)]
        assert losses[-1] < losses[0]
        assert int(model.count[...]) == 5  # 1 from lazy_init, 4 training steps
        assert not jnp.allclose(model.batchnorm.mean[...], 0.0)


# -- AutoEncoder with several methods -------------------------------------------------------


def linnx_autoencoder(Dense):
    class AutoEncoder(lm.Module):
        embed_dim: int
        output_dim: int

        def setup(self):
            self.encoder = Dense(self.embed_dim)
            self.decoder = Dense(self.output_dim)

        def encode(self, x):
            return self.encoder(x)

        def decode(self, x):
            return self.decoder(x)

        def __call__(self, x):
            x = self.encode(x)
            x = self.decode(x)
            return x

    return AutoEncoder


# "linnx": the layer constructor changed to lm.nn.Dense. "linen": even nn.Dense unchanged (a
# Linen module assigned in setup is wrapped in linnx.ToNNX): only the base class changed.
DENSES = {"linnx": lm.nn.Dense, "linen": nn.Dense}


@pytest.fixture(scope="module")
def linen_ae():
    LinenAE = spec003_linen.multiple_methods().AutoEncoder
    return LinenAE, LinenAE(256, 784).init(jax.random.key(0), x=jnp.ones((1, 784)))


@pytest.mark.parametrize("dense", sorted(DENSES))
class TestAutoEncoder:
    def test_init_and_methods_match_linen(self, dense, linen_ae):
        LinenAE, linen_vars = linen_ae
        AutoEncoder = linnx_autoencoder(DENSES[dense])
        model = AutoEncoder(256, 784)
        variables = model.init(jax.random.key(0), x=jnp.ones((1, 784)))
        assert shapes(variables) == shapes(linen_vars)
        assert shapes(variables["params"]) == {
            "decoder": {"bias": (784,), "kernel": (256, 784)},
            "encoder": {"bias": (256,), "kernel": (784, 256)},
        }
        x = jax.random.normal(jax.random.key(1), (2, 784))
        for method in ("encode", None):
            expected = LinenAE(256, 784).apply(linen_vars, x=x, method=method)
            assert_trees_close(model.apply(linen_vars, x=x, method=method), expected)
        z = model.apply(linen_vars, x=x, method="encode")
        assert z.shape == (2, 256)
        assert_trees_close(
            model.apply(linen_vars, z, method=AutoEncoder.decode),
            LinenAE(256, 784).apply(linen_vars, z, method="decode"),
        )

    def test_methods_and_training_as_an_nnx_module(self, dense, linen_ae):
        AutoEncoder = linnx_autoencoder(DENSES[dense])
        model = linnx.lazy_init(AutoEncoder(256, 784, rngs=nnx.Rngs(0)), jnp.ones((1, 784)))
        x = jax.random.normal(jax.random.key(1), (4, 784))
        assert model.encode(x).shape == (4, 256)
        assert_trees_close(model.decode(model.encode(x)), model(x))
        optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

        @nnx.jit
        def train_step(model, optimizer):
            def loss_fn(model):
                return jnp.mean((model(x) - x) ** 2)

            loss, grads = nnx.value_and_grad(loss_fn)(model)
            optimizer.update(model, grads)
            return loss

        losses = [float(train_step(model, optimizer)) for _ in range(3)]
        assert losses[-1] < losses[0]
