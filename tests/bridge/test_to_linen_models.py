"""Real NNX models trained in a Linen-style loop through ``linnx.to_linen``.

Each model is trained twice from the same initial state: once as Linen (``TrainState`` +
optax over ``variables['params']``, the other collections threaded through ``mutable``),
once natively in NNX (``nnx.Optimizer``). Losses and parameters must agree step for step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _trees import assert_linen_matches, assert_trees_close, copy_from_linen, plain
from flax import linen as nn
from flax import nnx
from flax.training import train_state

import linnx

STEPS = 3
RTOL, ATOL = 2e-5, 2e-6


class MLP(nnx.Module):
    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(din, 16, rngs=rngs)
        self.bn = nnx.BatchNorm(16, rngs=rngs)
        self.drop = nnx.Dropout(0.3, rngs=rngs)
        self.l2 = nnx.Linear(16, dout, rngs=rngs)

    def __call__(self, x):
        return self.l2(self.drop(nnx.relu(self.bn(self.l1(x)))))


class Attention(nnx.Module):
    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs):
        self.attn = nnx.MultiHeadAttention(
            num_heads=2, in_features=din, qkv_features=8, decode=False, rngs=rngs
        )
        self.norm = nnx.LayerNorm(din, rngs=rngs)
        self.head = nnx.Linear(din, dout, rngs=rngs)

    def __call__(self, x):  # x: (batch, length, din)
        h = self.norm(x + self.attn(x))
        return self.head(h.mean(axis=1))


class Ema(nnx.Variable):
    """A custom variable type: a running mean of the features, not trained."""


class WithCustomVariable(nnx.Module):
    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs):
        self.lin = nnx.Linear(din, dout, rngs=rngs)
        self.scale = nnx.Param(jnp.ones((dout,)))
        self.ema = Ema(jnp.zeros((dout,)))

    def __call__(self, x):
        y = self.lin(x)
        self.ema.set_value(0.9 * self.ema.get_value() + 0.1 * jax.lax.stop_gradient(y.mean(0)))
        return y * self.scale + self.ema.get_value()


KINDS = {
    "mlp_dropout_batchnorm": (MLP, (6, 5), (6, 5)),
    "attention": (Attention, (6, 3, 4), (6, 2)),
    "custom_variable": (WithCustomVariable, (6, 4), (6, 3)),
}


@pytest.fixture
def ema_registered():
    # linnx's registry is global: scope the registration to the test.
    from linnx.bridge._registry import scoped

    with scoped():
        linnx.register_variable_name_type_pair("ema_stats", Ema)
        yield


def _data(kind):
    cls, xshape, yshape = KINDS[kind]
    kx, ky = jax.random.split(jax.random.key(42))
    x = jax.random.normal(kx, xshape)
    y = jax.random.normal(ky, yshape)
    dims = (xshape[-1], yshape[-1])
    return cls, dims, x, y


def _assert_params_equal(linen_params, native: nnx.Module):
    native_params = nnx.to_pure_dict(nnx.state(native, nnx.Param))
    assert_trees_close(plain(nn.unbox(linen_params)), native_params, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind", list(KINDS))
def test_linen_loop_matches_native_loop(kind, ema_registered):
    cls, dims, x, y = _data(kind)
    tx = optax.adam(1e-2)

    # -- Linen-style loop through to_linen --------------------------------------------------
    model = linnx.to_linen(cls, *dims)
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
    if kind == "mlp_dropout_batchnorm":
        assert {"batch_stats", "RngKey", "RngCount"} <= set(variables)
    if kind == "custom_variable":
        assert "ema_stats" in variables
    others = {k: v for k, v in variables.items() if k != "params"}
    # Everything the forward pass updates: batch stats, rng counts, the custom variable.
    mutable = tuple(k for k in others if k not in ("nnx", "RngKey"))
    state = train_state.TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx)

    @jax.jit
    def linen_step(state, others, x, y):
        def loss_fn(params):
            out, updates = state.apply_fn({"params": params, **others}, x, mutable=mutable)
            return jnp.mean((out - y) ** 2), updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return state.apply_gradients(grads=grads), {**others, **updates}, loss

    # -- native NNX loop from the same initial state ----------------------------------------
    native = cls(*dims, rngs=nnx.Rngs(params=7, dropout=8))
    copy_from_linen(native, variables)
    _assert_params_equal(variables["params"], native)
    optimizer = nnx.Optimizer(native, tx, wrt=nnx.Param)

    @nnx.jit
    def native_step(model, optimizer, x, y):
        def loss_fn(model):
            return jnp.mean((model(x) - y) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    for step in range(STEPS):
        state, others, linen_loss = linen_step(state, others, x, y)
        native_loss = native_step(native, optimizer, x, y)
        np.testing.assert_allclose(
            linen_loss, native_loss, rtol=RTOL, atol=ATOL, err_msg=f"loss at step {step}"
        )
        _assert_params_equal(state.params, native)
    first = jax.tree_util.tree_leaves(nn.unbox(variables["params"]))[0]
    trained = jax.tree_util.tree_leaves(nn.unbox(state.params))[0]
    assert not np.allclose(first, trained), "training did not change the params"

    # The non-trained state followed the same path too.
    final = {"params": state.params, **others}
    assert_linen_matches(final, nnx.state(native, nnx.Not(nnx.Param)), rtol=RTOL, atol=ATOL)
    if kind == "mlp_dropout_batchnorm":
        assert others["RngCount"]["drop"]["rngs"]["dropout"]["count"].value == STEPS
