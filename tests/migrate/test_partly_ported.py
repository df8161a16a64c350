"""Migrating into a partly ported model: NNX modules next to Linen parts still inside ToNNX."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _trees import assert_trees_equal
from flax import linen as nn
from flax import nnx

import linnx
from linnx import migrate


class LinenBody(nn.Module):
    @nn.compact
    def __call__(self, x, training: bool):
        x = nn.Dense(8)(x)
        x = nn.BatchNorm(use_running_average=not training, momentum=0.9)(x)
        return nn.Dropout(0.5, deterministic=not training)(nn.relu(x))


class LinenModel(nn.Module):
    @nn.compact
    def __call__(self, x, training: bool):
        x = LinenBody(name="body")(x, training)
        return nn.Dense(2, name="head")(x)


class PartlyPorted(nnx.Module):
    """The body still Linen (with its dropout), the head ported."""

    def __init__(self, rngs):
        self.body = linnx.ToNNX(LinenBody(), rngs=rngs)
        self.head = nnx.Linear(8, 2, rngs=rngs)
        self.deterministic = False

    def __call__(self, x):
        training = not self.deterministic
        x = self.body(x, training=training, mutable=["batch_stats"] if training else False)
        return self.head(x)


def _setup():
    x = jax.random.normal(jax.random.key(0), (16, 4))
    variables = LinenModel().init(jax.random.key(1), x, training=False)
    model = PartlyPorted(nnx.Rngs(params=2, dropout=3))
    model.eval()
    linnx.lazy_init(model, x)
    plan = migrate.match(LinenModel(), model, x, linen_kwargs={"training": False})
    return x, variables, model, plan


def test_tonnx_variables_pair_by_their_linen_paths():
    _, _, _, plan = _setup()
    assert plan.ok, str(plan)
    pairs = {p.linen[0]: p.nnx for p in plan.pairs}
    assert pairs["params/body/Dense_0/kernel"] == "body/params/Dense_0/kernel"
    assert pairs["batch_stats/body/BatchNorm_0/mean"] == "body/batch_stats/BatchNorm_0/mean"
    assert pairs["params/head/kernel"] == "head/kernel"


def test_weights_and_optimizer_state_move_and_verify_in_both_modes():
    x, variables, model, plan = _setup()
    migrate.linen_to_nnx(variables, model, plan)
    tx = optax.adam(1e-2)
    state = tx.init(variables["params"])
    grads = jax.tree.map(jnp.ones_like, variables["params"])
    state = tx.update(grads, state, variables["params"])[1]
    optimizer = migrate.opt_state_to_nnx(state, nnx.Optimizer(model, tx, wrt=nnx.Param), plan)
    back = migrate.opt_state_to_linen(optimizer, plan)
    assert_trees_equal(back, state)
    # Train mode compares too: the dropout of the Linen part inside ToNNX is switched off.
    report = migrate.verify(
        LinenModel(), variables, model, x, linen_kwargs={"training": False}, plan=plan
    )
    assert report.ok and report.max_abs == 0.0, str(report)


def test_uncommitted_targets_stay_uncommitted():
    # Committing some values and not others makes the next jit call compile twice.
    _, variables, model, plan = _setup()
    assert not model.head.kernel.get_value().committed
    migrate.linen_to_nnx(variables, model, plan)
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    migrate.opt_state_to_nnx(optax.adam(1e-2).init(variables["params"]), optimizer, plan)
    leaves = jax.tree.leaves(nnx.state((model, optimizer), nnx.Param, nnx.OptState))
    assert leaves and not any(leaf.committed for leaf in leaves)


def test_a_model_with_dropout_rngs_round_trips_through_a_checkpoint(tmp_path):
    # nnx.Dropout(rngs=...) holds a typed PRNG key, which Orbax saves as its raw key data.
    ported = nnx.Sequential(nnx.Linear(4, 2, rngs=nnx.Rngs(0)), nnx.Dropout(0.5, rngs=nnx.Rngs(1)))
    migrate.save_nnx_checkpoint(tmp_path / "ckpt", ported)
    fresh = nnx.Sequential(nnx.Linear(4, 2, rngs=nnx.Rngs(5)), nnx.Dropout(0.5, rngs=nnx.Rngs(6)))
    migrate.load_nnx_checkpoint(tmp_path / "ckpt", fresh)
    np.testing.assert_array_equal(fresh.layers[0].kernel[...], ported.layers[0].kernel[...])
    key = fresh.layers[1].rngs.key.get_value()
    np.testing.assert_array_equal(
        jax.random.key_data(key), jax.random.key_data(ported.layers[1].rngs.key.get_value())
    )


class LinenSowsLosses(nn.Module):
    @nn.compact
    def __call__(self, x):
        self.sow("losses", "l2", jnp.sum(x**2))  # a collection Linen's init keeps (a tuple)
        return nn.Dense(3)(x)


class LinenWithSowingPart(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2, name="head")(LinenSowsLosses(name="body")(x))


class PortedHeadSowingBody(nnx.Module):
    def __init__(self, rngs):
        self.body = linnx.ToNNX(LinenSowsLosses(), rngs=rngs)
        self.head = nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, x):
        return self.head(self.body(x))


def test_values_a_tonnx_part_sows_into_a_kept_collection_are_no_weights():
    # Failed with "AttributeError: 'tuple' object has no attribute 'shape'" (the sown tuple
    # taken for a weight), then with the NNX side's copy of it reported as missing.
    x = jnp.ones((2, 4))
    variables = LinenWithSowingPart().init(jax.random.key(0), x)
    assert isinstance(variables["losses"]["body"]["l2"], tuple)
    model = linnx.lazy_init(PortedHeadSowingBody(nnx.Rngs(0)), x)
    plan = migrate.match(LinenWithSowingPart(), model, x)
    assert sorted(p.nnx for p in plan.pairs) == [
        "body/params/Dense_0/bias",
        "body/params/Dense_0/kernel",
        "head/bias",
        "head/kernel",
    ]
    model = migrate.linen_to_nnx(variables, model, plan)
    np.testing.assert_allclose(model(x), LinenWithSowingPart().apply(variables, x), rtol=1e-6)
    back = migrate.nnx_to_linen(model, plan)
    assert_trees_equal(back["params"], variables["params"])
