"""Typed PRNG keys and logical axis names: variables that are not float weights.

Three real shapes of code: a ``to_linen`` module whose ``nnx.Dropout`` keeps its rngs (its
Linen variables hold ``RngKey``/``RngCount`` collections and the ``nnx`` graphdef), a VAE whose
``__call__`` takes the sampling key, and T5X-style layers built with
``flax.linen.partitioning.param_with_axes`` (a ``params_axes`` collection of axis names).
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import nnx
from flax.linen import partitioning as nn_partitioning

import linnx
from linnx import migrate

X = jnp.linspace(-1.0, 1.0, 24).reshape(4, 6)


class MlpBlock(nnx.Module):
    """A native NNX block whose dropout owns its RNG stream."""

    def __init__(self, din, dout, *, rngs):
        self.linear = nnx.Linear(din, dout, rngs=rngs)
        self.drop = nnx.Dropout(0.3, rngs=rngs)

    def __call__(self, x):
        return self.drop(nnx.relu(self.linear(x)))


def _trained_to_linen_variables():
    """Variables of to_linen(MlpBlock) after two training calls (the key stream advanced)."""
    layer = linnx.to_linen(MlpBlock, 6, 5)
    variables = layer.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, X)
    for _ in range(2):
        _, updates = layer.apply(variables, X, mutable=["RngCount"])
        variables = {**variables, **updates}
    return layer, variables


def test_to_linen_rng_state_moves_to_the_native_module_and_back():
    layer, variables = _trained_to_linen_variables()
    model = MlpBlock(6, 5, rngs=nnx.Rngs(params=7, dropout=8))
    plan = migrate.match(layer, model, X)  # crashed: Cannot interpret 'key<fry>' as a data type
    assert plan.ok, plan
    by_nnx = {p.nnx: p for p in plan.pairs}
    assert by_nnx["drop/rngs/key"].linen_dtype.startswith("key<")
    assert by_nnx["drop/rngs/count"].linen == ("RngCount/drop/rngs/dropout/count",)
    assert plan.excluded == ()

    migrate.linen_to_nnx(variables, model, plan)
    stored = variables["RngKey"]["drop"]["rngs"]["dropout"]["key"]
    np.testing.assert_array_equal(
        jax.random.key_data(model.drop.rngs.key[...]), jax.random.key_data(nn.unbox(stored))
    )
    assert int(model.drop.rngs.count[...]) == 2
    np.testing.assert_array_equal(
        model.linear.kernel[...], nn.unbox(variables["params"]["linear"]["kernel"])
    )
    # The same stream state draws the same mask on both sides.
    np.testing.assert_array_equal(model(X), layer.apply(variables, X, mutable=["RngCount"])[0])

    back = migrate.nnx_to_linen(model, plan)
    assert set(back) == {"RngKey", "RngCount", "params", "nnx"}
    np.testing.assert_array_equal(back["RngCount"]["drop"]["rngs"]["dropout"]["count"], 3)
    out, _ = layer.apply(back, X, mutable=["RngCount"])
    assert out.shape == (4, 5)


def test_rng_state_without_a_linen_counterpart_stays_nnx_only():
    """A pure Linen model holds no RNG state: the port's dropout key is neither paired nor
    reported unfilled, as before."""
    model = MlpBlock(6, 5, rngs=nnx.Rngs(0))
    plan = migrate.match(nn.Dense(5), model, X)
    assert plan.ok
    assert set(plan.excluded) == {"drop/rngs/count", "drop/rngs/key"}
    assert [p.nnx for p in plan.pairs] == ["linear/bias", "linear/kernel"]


class LinenVAE(nn.Module):
    @nn.compact
    def __call__(self, x, z_rng):
        mean = nn.Dense(3, name="mean")(x)
        z = mean + jax.random.normal(z_rng, mean.shape)
        return nn.Dense(6, name="decoder")(z)


class NnxVAE(nnx.Module):
    def __init__(self, rngs):
        self.mean = nnx.Linear(6, 3, rngs=rngs)
        self.decoder = nnx.Linear(3, 6, rngs=rngs)

    def __call__(self, x, z_rng):
        mean = self.mean(x)
        return self.decoder(mean + jax.random.normal(z_rng, mean.shape))


def test_a_typed_key_sample_input_is_accepted():
    key = jax.random.key(3)
    linen_vae = LinenVAE()
    variables = linen_vae.init(jax.random.key(0), X, key)
    model = NnxVAE(nnx.Rngs(1))
    plan = migrate.match(linen_vae, model, X, key)  # was a TraceError on key<fry>
    assert plan.ok and len(plan.pairs) == 4
    migrate.linen_to_nnx(variables, model, plan)
    report = migrate.verify(linen_vae, variables, model, X, key, plan=plan)
    assert report.ok, report


class T5Dense(nn.Module):
    """A T5X-style dense layer: the kernel's logical axes go to ``params_axes``."""

    features: int
    axes: tuple[str, str]

    @nn.compact
    def __call__(self, x):
        kernel = nn_partitioning.param_with_axes(
            "kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features), axes=self.axes
        )
        return x @ kernel


class T5Mlp(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = T5Dense(8, ("embed", "mlp"), name="wi")(x)
        return T5Dense(6, ("mlp", "embed"), name="wo")(nn.relu(h))


class NnxDense(nnx.Module):
    def __init__(self, din, dout, *, rngs):
        self.kernel = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (din, dout)))

    def __call__(self, x):
        return x @ self.kernel[...]


class NnxMlp(nnx.Module):
    def __init__(self, rngs):
        self.wi = NnxDense(6, 8, rngs=rngs)
        self.wo = NnxDense(8, 6, rngs=rngs)

    def __call__(self, x):
        return self.wo(nnx.relu(self.wi(x)))


def test_params_axes_are_read_as_sharding_names_not_weights():
    variables = T5Mlp().init(jax.random.key(0), X)
    assert "params_axes" in variables
    model = NnxMlp(nnx.Rngs(1))
    plan = migrate.match(T5Mlp(), model, X)  # crashed: 'AxisMetadata' has no attribute 'shape'
    assert plan.ok, plan
    assert {p.nnx: p.linen for p in plan.pairs} == {
        "wi/kernel": ("params/wi/kernel",),
        "wo/kernel": ("params/wo/kernel",),
    }
    assert plan.linen_axes == {
        "params/wi/kernel": ("embed", "mlp"),
        "params/wo/kernel": ("mlp", "embed"),
    }
    migrate.linen_to_nnx(variables, model, plan)  # params_axes are not "unused" weights
    np.testing.assert_array_equal(model.wo.kernel[...], variables["params"]["wo"]["kernel"])
    assert migrate.verify(T5Mlp(), variables, model, X, plan=plan).ok


class KeyedNoise(nn.Module):
    """A Linen module that stores a typed PRNG key in its own collection and advances it."""

    @nn.compact
    def __call__(self, x):
        state = self.variable("noise_state", "key", jax.random.key, 5)
        key, sub = jax.random.split(state.value)
        if not self.is_initializing():
            state.value = key
        return nn.Dense(4, name="proj")(x) + 0.01 * jax.random.normal(sub, (x.shape[0], 4))


class NoiseState(nnx.Variable):
    pass


class KeyedNoisePort(nnx.Module):
    def __init__(self, rngs):
        self.proj = nnx.Linear(6, 4, rngs=rngs)
        self.key = NoiseState(jax.random.key(0))

    def __call__(self, x):
        key, sub = jax.random.split(self.key[...])
        self.key[...] = key
        return self.proj(x) + 0.01 * jax.random.normal(sub, (x.shape[0], 4))


def test_a_key_stored_by_a_linen_module_moves_both_ways():
    linen = KeyedNoise()
    variables = linen.init(jax.random.key(0), X)
    _, updates = linen.apply(variables, X, mutable=["noise_state"])
    variables = {**variables, **updates}  # the stored key has advanced once
    model = KeyedNoisePort(nnx.Rngs(1))
    plan = migrate.match(linen, model, X)  # crashed: Cannot interpret 'key<fry>'
    assert plan.ok, plan
    migrate.linen_to_nnx(variables, model, plan)
    np.testing.assert_array_equal(
        jax.random.key_data(model.key[...]),
        jax.random.key_data(variables["noise_state"]["key"]),
    )
    # Same key state: the same noise on both sides, and the same state afterwards.
    out, updates = linen.apply(variables, X, mutable=["noise_state"])
    np.testing.assert_allclose(model(X), out, rtol=1e-6, atol=1e-6)
    back = migrate.nnx_to_linen(model, plan)
    np.testing.assert_array_equal(
        jax.random.key_data(back["noise_state"]["key"]),
        jax.random.key_data(updates["noise_state"]["key"]),
    )
