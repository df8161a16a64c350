"""A Linen ResNet trained a few steps with BatchNorm and saved as an Orbax TrainState."""

from typing import Any

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
import pytest
from flax.training import train_state

from . import resnet_models


class TrainState(train_state.TrainState):
    batch_stats: Any


@pytest.fixture(scope="session")
def trained_resnet(tmp_path_factory):
    """(TrainState after 3 steps, an input batch, the checkpoint directory)."""
    model = resnet_models.linen_resnet()
    x = jax.random.normal(jax.random.key(0), (4, *resnet_models.IMAGE))
    labels = jnp.array([0, 1, 2, 1])
    variables = model.init(jax.random.key(1), x, train=False)
    state = TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        tx=resnet_models.make_tx(),
    )

    @jax.jit
    def step(state, x, labels):
        def loss(params):
            logits, updates = state.apply_fn(
                {"params": params, "batch_stats": state.batch_stats},
                x,
                train=True,
                mutable=["batch_stats"],
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates

        grads, updates = jax.grad(loss, has_aux=True)(state.params)
        return state.apply_gradients(grads=grads).replace(batch_stats=updates["batch_stats"])

    for _ in range(3):
        state = step(state, x, labels)
    path = tmp_path_factory.mktemp("resnet") / "linen_ckpt"
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, state)
    return state, x, path
