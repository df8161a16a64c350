"""Real Linen models through ToNNX: same outputs and same training as native Linen + optax.

For each model of the zoo (ResNet with BatchNorm, transformer encoder with dropout,
autoencoder with encode/decode, RNN built with ``nn.scan``):

* ToNNX creates the variables of Linen's ``init`` and its outputs equal ``module.apply`` on
  those variables;
* three jitted training steps through ToNNX + ``nnx.Optimizer`` give the losses, parameters
  (and BatchNorm statistics) of the native Linen + optax loop started from the same
  variables, with the same dropout keys on both sides.

Calls and training steps run under ``jax.jit``/``nnx.jit`` to keep the tests fast.
"""

import jax
import linen_zoo
import numpy as np
import optax
import pytest
from _trees import assert_trees_close, values
from flax import nnx

import linnx

STEPS = 3
TOL = {"rtol": 2e-5, "atol": 1e-6}


def linen_variables(model):
    return {c: values(getattr(model, c)) for c in model.linen_collections}


def bridged(case, **seeds):
    """``ToNNX(module, rngs=nnx.Rngs(**seeds)).lazy_init(x)``.

    Initialization runs eagerly: its random ops are compiled once per shape and then cached,
    so the native ``init`` and later tests of the same model reuse them.
    """
    x, _ = case.batch()
    return linnx.ToNNX(case.make(), rngs=nnx.Rngs(**seeds)).lazy_init(x, **case.eval_kwargs)


@pytest.fixture(params=linen_zoo.ZOO, ids=repr)
def case(request):
    return request.param


def test_init_and_outputs_equal_native(case):
    module = case.make()
    x, _ = case.batch()
    model = bridged(case, default=0)
    variables = module.init(jax.random.key(0), x, **case.eval_kwargs)

    assert sorted(model.linen_collections) == sorted(variables)
    assert_trees_close(linen_variables(model), {k: dict(v) for k, v in variables.items()}, **TOL)
    out = nnx.jit(lambda model, x: model(x, **case.eval_kwargs))(model, x)
    expected = jax.jit(lambda v, x: module.apply(v, x, **case.eval_kwargs))(variables, x)
    np.testing.assert_allclose(out, expected, **TOL)


def test_autoencoder_methods_equal_native():
    module = linen_zoo.AutoEncoder()
    x, _ = linen_zoo.ZOO[2].batch()
    model = linnx.ToNNX(module, rngs=nnx.Rngs(0)).lazy_init(x)
    variables = linen_variables(model)
    z = module.apply(variables, x, method="encode")
    assert z.shape == (4, module.latent)
    np.testing.assert_allclose(model.encode(x), z, **TOL)
    np.testing.assert_allclose(
        model(z, method="decode"), module.apply(variables, z, method="decode"), **TOL
    )


def native_training(case, variables, keys):
    """The Linen + optax loop: returns the losses and the final variables."""
    module, tx = case.make(), optax.adam(1e-2)
    x, y = case.batch()
    params = variables["params"]
    state = {c: v for c, v in variables.items() if c != "params"}
    opt_state = tx.init(params)

    @jax.jit
    def step(params, state, opt_state, key):
        def loss_fn(params):
            rngs = {"dropout": key} if case.dropout else None
            out, new_state = module.apply(
                {"params": params, **state},
                x,
                rngs=rngs,
                mutable=list(case.mutable),
                **case.train_kwargs,
            )
            return case.loss(out, y), {**state, **new_state}

        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, loss

    losses = []
    for key in keys:
        params, state, opt_state, loss = step(params, state, opt_state, key)
        losses.append(loss)
    return losses, {"params": params, **state}


def test_training_steps_equal_native(case):
    """Dropout keys come from the wrapper's own ``dropout`` stream: step t uses its t-th
    key, ``nnx.Rngs(dropout=1).dropout()`` drawn t+1 times, which the native loop replays."""
    x, y = case.batch()
    model = bridged(case, default=0, dropout=1)
    start = linen_variables(model)
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        def loss_fn(model):
            out = model(x, mutable=list(case.mutable) or False, **case.train_kwargs)
            return case.loss(out, y)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = [step(model, optimizer) for _ in range(STEPS)]
    reference = nnx.Rngs(dropout=1)
    keys = [reference.dropout() for _ in range(STEPS)]
    expected_losses, expected = native_training(case, start, keys)

    np.testing.assert_allclose(losses, expected_losses, **TOL)
    assert_trees_close(linen_variables(model), expected, **TOL)
    assert int(model.rngs.dropout.count.get_value()) == STEPS
    assert int(optimizer.step.get_value()) == STEPS
    # Training moved the parameters (and the statistics), so the comparison means something.
    assert not np.allclose(losses[0], losses[-1])
    for collection in ("params", *case.mutable):
        changed = jax.tree.map(
            lambda a, b: not np.allclose(a, b), start[collection], expected[collection]
        )
        assert any(jax.tree.leaves(changed)), collection
