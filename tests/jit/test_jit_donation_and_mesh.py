"""linnx.jit with donated buffers, and on a (2, 4) mesh of host devices with sharded parameters.

Both against ``nnx.jit`` with the same options, bit for bit: donation must leave the new
values in the same variable objects (and the donated buffers deleted, as ``nnx.jit`` does);
on the mesh, parameters, optimizer state and outputs must keep the shardings ``nnx.jit``
gives them.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import nnx_zoo
import numpy as np
import optax
import pytest
from _trees import assert_identical
from flax import linen as nn
from flax import nnx

import linnx

STEP = nnx_zoo.CASES[1]  # conv + BatchNorm + dropout
P = jax.sharding.PartitionSpec


def _buffers(objs):
    return [v.get_raw_value() for _, v in nnx.iter_graph(objs) if isinstance(v, nnx.Variable)]


@pytest.mark.parametrize(
    "how",
    [{"donate_argnums": (0, 1)}, {"donate_argnames": ("model", "opt")}, {"donate_argnums": 0}],
    ids=repr,
)
def test_donated_objects_hold_the_new_values(how):
    reference, fast = STEP.make(), STEP.make()
    ref_step, fast_step = nnx.jit(STEP.step, **how), linnx.jit(STEP.step, **how)
    x, y = STEP.batch()
    donated = reference[:1] if how.get("donate_argnums") == 0 else reference
    for _ in range(3):
        ref_before, fast_before = _buffers(donated), _buffers(fast[: len(donated)])
        assert_identical(ref_step(*reference, x, y), fast_step(*fast, x, y))
        assert_identical(reference, fast)
        # What nnx.jit's donation deletes, linnx.jit's deletes too, and nothing else.
        assert [a.is_deleted() for a in ref_before] == [a.is_deleted() for a in fast_before]
    assert any(a.is_deleted() for a in fast_before)
    assert fast_step.nnx_jit_calls == 0


# The batch's buffer matches no output, so XLA cannot reuse it: JAX says so, for both.
@pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")
def test_a_donated_batch_argument():
    reference, fast = STEP.make(), STEP.make()
    ref_step = nnx.jit(STEP.step, donate_argnums=2)
    fast_step = linnx.jit(STEP.step, donate_argnums=2)
    for _ in range(2):
        x_ref, y = STEP.batch()
        x_fast = jnp.array(x_ref, copy=True)
        assert_identical(ref_step(*reference, x_ref, y), fast_step(*fast, x_fast, y))
        assert x_ref.is_deleted() == x_fast.is_deleted()
        assert_identical(reference, fast)


# -- on a mesh ---------------------------------------------------------------------------------

needs_8 = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (host) devices")


class Sharded(nnx.Module):
    """An NNX MLP split over 'model', around a Linen Dense through ToNNX (also split)."""

    def __init__(self, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal()
        self.up = nnx.Linear(
            8,
            16,
            kernel_init=nnx.with_partitioning(init, (None, "model")),
            bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("model",)),
            rngs=rngs,
        )
        self.mid = linnx.ToNNX(
            nn.Dense(
                16,
                kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), ("model", None)),
            ),
            rngs=rngs,
        )
        self.drop = nnx.Dropout(0.2, rngs=rngs)
        self.down = nnx.Linear(
            16, 8, kernel_init=nnx.with_partitioning(init, ("model", None)), rngs=rngs
        )

    def __call__(self, x):
        return self.down(self.drop(jax.nn.gelu(self.mid(jax.nn.gelu(self.up(x))))))


def _sharded_objects(mesh):
    with nnx.use_eager_sharding(False):
        model = linnx.lazy_init(Sharded(nnx.Rngs(0, dropout=1)), jnp.ones((1, 8)))
    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, nnx.get_named_sharding(state, mesh)))
    return model, nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)


def _step(model, opt, x, y):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    opt.update(model, grads)
    return loss


def _shardings(objs):
    return [
        (p, v.get_raw_value().sharding)
        for p, v in nnx.iter_graph(objs)
        if isinstance(v, nnx.Variable)
    ]


@needs_8
@pytest.mark.filterwarnings("ignore:'sharding' is deprecated:DeprecationWarning")
def test_sharded_training_on_a_mesh_equals_nnx_jit():
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
    data = jax.sharding.NamedSharding(mesh, P("data"))
    kx, ky = jax.random.split(jax.random.key(3))
    x = jax.device_put(jax.random.normal(kx, (8, 8)), data)
    y = jax.device_put(jax.random.normal(ky, (8, 8)), data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # `with mesh:`, see test_mesh_training
        with mesh:
            reference, fast = _sharded_objects(mesh), _sharded_objects(mesh)
            ref_step, fast_step = nnx.jit(_step), linnx.jit(_step)
            kernel = fast[0].up.kernel.get_raw_value()
            assert kernel.sharding.shard_shape(kernel.shape) == (8, 4)
            for _ in range(3):
                expected, got = ref_step(*reference, x, y), fast_step(*fast, x, y)
                assert_identical(expected, got)
                assert expected.sharding == got.sharding
                assert_identical(reference, fast)
                assert _shardings(reference) == _shardings(fast)
    kernel = fast[0].up.kernel.get_raw_value()
    assert kernel.sharding.shard_shape(kernel.shape) == (8, 4)  # still split over 'model'
    assert fast_step.nnx_jit_calls == 0
