"""Optax state follows the plan: spec 003's TrainState example, nnx.Optimizer, and stacking.

The proof that ``mu``, ``nu`` and ``count`` moved correctly is behavioural: one more adam step
on each side, from the migrated state, must give the same parameters.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx
from flax.training import train_state

from linnx import migrate

X = jnp.ones((1, 784))
LABELS = jnp.ones((1,), dtype=jnp.int32)


def _linen_state():
    """Spec 003, Linen side: TrainState + adam, after one train step."""
    model = nn.Dense(features=10)
    params = model.init(jax.random.key(0), X)["params"]
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(1e-3))

    @jax.jit
    def train_step(key, state, inputs, labels):
        def loss_fn(params):
            logits = state.apply_fn({"params": params}, inputs, rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        grads = jax.grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads)

    state = train_step(jax.random.key(0), state, X, LABELS)
    return model, state, train_step


def test_spec003_train_state_example():
    lmodel, lstate, ltrain_step = _linen_state()

    # Spec 003, NNX side: a TrainState around graphdef.apply and nnx.State params.
    model = nnx.Linear(784, 10, rngs=nnx.Rngs(0))
    model.train()
    plan = migrate.match(lmodel, model, X)
    assert plan.ok
    migrate.linen_to_nnx({"params": lstate.params}, model, plan)
    graphdef, params, other_variables = nnx.split(model, nnx.Param, ...)

    class TrainState(train_state.TrainState):
        other_variables: nnx.State

    state = TrainState.create(
        apply_fn=graphdef.apply, params=params, other_variables=other_variables, tx=optax.adam(1e-3)
    )
    opt_state = migrate.opt_state_to_nnx(lstate.opt_state, state.opt_state, plan)
    state = state.replace(opt_state=opt_state, step=lstate.step)
    np.testing.assert_array_equal(
        state.opt_state[0].mu["kernel"][...], lstate.opt_state[0].mu["kernel"]
    )

    @jax.jit
    def train_step(state, inputs, labels):
        def loss_fn(params, other_variables):
            logits, (graphdef, new_state) = state.apply_fn(params, other_variables)(inputs)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        grads = jax.grad(loss_fn)(state.params, state.other_variables)
        return state.apply_gradients(grads=grads)

    lnext = ltrain_step(jax.random.key(1), lstate, X, LABELS)
    nnext = train_step(state, X, LABELS)
    np.testing.assert_allclose(nnext.params["kernel"][...], lnext.params["kernel"], atol=1e-6)
    np.testing.assert_allclose(nnext.params["bias"][...], lnext.params["bias"], atol=1e-6)
    assert int(nnext.opt_state[0].count[...]) == int(lnext.opt_state[0].count) == 2


def test_nnx_optimizer_and_back():
    lmodel, lstate, ltrain_step = _linen_state()
    model = nnx.Linear(784, 10, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    plan = migrate.match(lmodel, model, X)
    migrate.linen_to_nnx({"params": lstate.params}, model, plan)
    migrate.opt_state_to_nnx(lstate.opt_state, optimizer, plan)

    grads = jax.grad(
        lambda m: optax.softmax_cross_entropy_with_integer_labels(m(X), LABELS).mean()
    )(model)
    optimizer.update(model, grads)
    lnext = ltrain_step(jax.random.key(1), lstate, X, LABELS)
    np.testing.assert_allclose(model.kernel[...], lnext.params["kernel"], atol=1e-6)

    back = migrate.opt_state_to_linen(optimizer, plan)
    np.testing.assert_allclose(back[0].nu["bias"], lnext.opt_state[0].nu["bias"], atol=1e-9)
    assert int(back[0].count) == 2
    assert jax.tree.structure(back) == jax.tree.structure(lnext.opt_state)


def test_optimizer_state_is_stacked_like_the_weights():
    class LLoop(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(3):
                x = nn.Dense(4)(x)
            return x

    class NStack(nnx.Module):
        def __init__(self, rngs):
            @nnx.split_rngs(splits=3)
            @nnx.vmap(in_axes=(0,), out_axes=0)
            def make(rngs):
                return nnx.Linear(4, 4, rngs=rngs)

            self.layers = make(rngs)

        def __call__(self, x):
            @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
            def forward(x, layer):
                return layer(x)

            return forward(x, self.layers)

    x = jnp.ones((2, 4))
    params = LLoop().init(jax.random.key(0), x)["params"]
    tx = optax.adam(1e-2)
    lopt = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, lopt = tx.update(grads, lopt, params)

    model = NStack(nnx.Rngs(0))
    plan = migrate.match(LLoop(), model, x)
    assert {p.layout.kind for p in plan.pairs} == {"stack"}
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    migrate.opt_state_to_nnx(lopt, optimizer, plan)
    mu = optimizer.opt_state[0].mu["layers"]["kernel"][...]
    assert mu.shape == (3, 4, 4)
    np.testing.assert_array_equal(mu[2], lopt[0].mu["Dense_2"]["kernel"])

    back = migrate.opt_state_to_linen(optimizer, plan)
    np.testing.assert_array_equal(back[0].mu["Dense_1"]["bias"], lopt[0].mu["Dense_1"]["bias"])


def test_optimizer_state_from_another_transformation_is_refused():
    lmodel, lstate, _ = _linen_state()
    model = nnx.Linear(784, 10, rngs=nnx.Rngs(0))
    plan = migrate.match(lmodel, model, X)
    optimizer = nnx.Optimizer(model, optax.sgd(1e-3, momentum=0.9), wrt=nnx.Param)
    with pytest.raises(migrate.MissingWeightsError, match=r"0/trace/kernel"):
        migrate.opt_state_to_nnx(lstate.opt_state, optimizer, plan)
