"""``functional``: NNX modules as pure init/apply functions for jax.jit / jax.grad users."""

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import linen as nn
from flax import nnx

import linnx
import linnx.module as lm

X = jnp.arange(6.0).reshape(2, 3)


def test_apply_matches_the_module_and_trains_with_jax_grad():
    f = lm.functional(nnx.Linear)(3, 4)
    params = f.init(rngs=nnx.Rngs(0))
    reference = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    out, new_state = f.apply(params)(X)
    assert jnp.allclose(out, reference(X))
    assert jax.tree.structure(new_state) == jax.tree.structure(params)

    tx = optax.sgd(0.01)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean(f.apply(p)(X)[0] ** 2))(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for _ in range(3):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert losses[-1] < losses[0]


def test_state_updates_come_back_and_split_states_work():
    f = lm.functional(nnx.BatchNorm)(3)
    state = f.init(rngs=nnx.Rngs(0))
    reference = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    out, new_state = jax.jit(lambda s, x: f.apply(s)(x))(state, X)
    assert jnp.allclose(out, reference(X))
    assert jnp.allclose(new_state["mean"][...], reference.mean[...])
    params, stats = nnx.split_state(state, nnx.Param, ...)
    out2, _ = f.apply(params, stats)(X)
    assert jnp.allclose(out2, out)


def test_lazy_modules_initialize_from_a_sample_input():
    class AutoEncoder(lm.Module):
        def setup(self):
            self.encoder = lm.nn.Dense(2)
            self.decoder = lm.nn.Dense(3)

        def encode(self, x):
            return self.encoder(x)

        def __call__(self, x):
            return self.decoder(self.encode(x))

    f = lm.functional(AutoEncoder)()
    state = f.init(X, rngs=0)
    z, _ = f.apply(state, method="encode")(X)
    assert z.shape == (2, 2)
    model = nnx.merge(f.graphdef, state)
    assert jnp.allclose(f.apply(state)(X)[0], model(X))

    wrapped = lm.functional(linnx.ToNNX)(nn.Dense(5))
    assert wrapped.apply(wrapped.init(X, rngs=nnx.Rngs(0)))(X)[0].shape == (2, 5)


def test_errors():
    with pytest.raises(linnx.BridgeTypeError, match=r"a Linen module is functional already"):
        lm.functional(nn.Dense)
    with pytest.raises(linnx.BridgeTypeError, match=r"expected an nnx.Module subclass"):
        lm.functional(nnx.Linear(3, 4, rngs=nnx.Rngs(0)))
    f = lm.functional(nnx.Linear)(3, 4)
    with pytest.raises(linnx.NotInitializedError, match=r"apply\(...\) was called before init"):
        f.apply({})
    state = f.init(rngs=0)
    with pytest.raises(linnx.UnknownMethodError, match="Linear has no method named 'encode'"):
        f.apply(state, method="encode")

    class NoRngs(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.ones(3))

    with pytest.raises(linnx.BridgeTypeError, match="NoRngs takes no `rngs` argument"):
        lm.functional(NoRngs)().init(rngs=0)
