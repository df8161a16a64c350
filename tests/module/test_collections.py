"""Collections beyond params: ``sow``, ``variable``, mutability and rng streams, vs Linen."""

import jax
import jax.numpy as jnp
from _trees import assert_trees_close
from flax import linen as nn
from flax import nnx

import linnx
import linnx.module as lm

X = jnp.arange(6.0).reshape(2, 3)


def linen_tap():
    class Tap(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(2)(x)
            self.sow("intermediates", "h", x)
            self.sow("intermediates", "h", 2 * x)
            return x

    return Tap


def linnx_tap():
    class Tap(lm.Module):
        @lm.compact
        def __call__(self, x):
            x = lm.nn.Dense(2)(x)
            self.sow("intermediates", "h", x)
            self.sow("intermediates", "h", 2 * x)
            return x

    return Tap


def test_sow_follows_linen_under_init_and_apply():
    LinenTap, Tap = linen_tap(), linnx_tap()
    key = jax.random.key(0)
    linen_vars = LinenTap().init(key, X)
    assert sorted(Tap().init(key, X)) == sorted(linen_vars) == ["params"]
    assert sorted(Tap().init(key, X, mutable=True)) == ["intermediates", "params"]
    expected = LinenTap().apply(linen_vars, X, mutable=["intermediates"])[1]
    _, state = Tap().apply(linen_vars, X, mutable=["intermediates"])
    assert_trees_close(state, expected, atol=1e-6)
    # Not mutable: nothing is stored, and it is no error (as in Linen).
    assert Tap().apply(linen_vars, X).shape == (2, 2)


def test_sow_in_nnx_style_stores_intermediates_or_feeds_nnx_capture():
    model = linnx.lazy_init(linnx_tap()(rngs=nnx.Rngs(0)), X)
    assert not hasattr(model, "h")  # lazy_init, like init, skips 'intermediates'
    model(X)
    assert isinstance(model.h, nnx.Intermediate) and len(model.h.get_value()) == 2
    nnx.pop(model, nnx.Intermediate)
    out, captured = nnx.capture(model, nnx.Intermediate)(X)
    assert len(nnx.to_pure_dict(captured)["h"]) == 2 and not hasattr(model, "h")


def test_variables_mutability_and_has_variable():
    class Stats(lm.Module):
        @lm.compact
        def __call__(self, x):
            seen = self.has_variable("stats", "total")
            total = self.variable("stats", "total", jnp.zeros, x.shape[-1:])
            if self.is_mutable_collection("stats"):
                total[...] += x.sum(0)
            return seen, total[...]

    variables = Stats().init(0, X)
    assert jnp.array_equal(variables["stats"]["total"], X.sum(0))
    (seen, total), updates = Stats().apply(variables, X, mutable=["stats"])
    assert seen and jnp.array_equal(updates["stats"]["total"], 2 * X.sum(0))
    seen, total = Stats().apply(variables, X)  # not mutable: skipped, no error
    assert jnp.array_equal(total, X.sum(0))
    # The type comes from the registry: an unregistered collection gets its own type.
    model = linnx.lazy_init(Stats(rngs=nnx.Rngs(0)), X)
    assert type(model.total) is linnx.variable_type_from_name("stats")


def test_streams_fall_back_to_params_as_in_linen():
    class Noisy(lm.Module):
        @lm.compact
        def __call__(self, x):
            return x + jax.random.normal(self.make_rng("noise"), x.shape)

    a = Noisy().init_with_output(jax.random.key(0), X)[0]
    b = Noisy().init_with_output({"params": jax.random.key(0)}, X)[0]
    c = Noisy().apply({}, X, rngs={"noise": jax.random.key(0)})
    assert jnp.array_equal(a, b) and not jnp.array_equal(a, X) and c.shape == X.shape
    assert not Noisy().has_rng("noise")
    assert Noisy(rngs=nnx.Rngs(0)).has_rng("noise")  # NNX's default stream serves it
