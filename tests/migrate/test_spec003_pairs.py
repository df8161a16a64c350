"""Every model pair of spec 003 migrates with no hand-written rules, and back.

For each pair: Linen ``init`` variables go into the NNX model written as in the guide, the NNX
outputs equal the Linen ones to 1e-6, a few weights are checked at the paths the guide names,
and ``nnx_to_linen`` gives variables that ``linen_module.apply`` accepts with the same result.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import spec003_linen as L
from _trees import assert_trees_close, assert_trees_equal, plain
from flax import nnx

from linnx import migrate

from . import spec003_nnx as N

TOL = 1e-6
RNGS = {"params": jax.random.key(0), "dropout": jax.random.key(1)}


def _migrate(linen_module, nnx_model, variables, x, linen_kwargs=None):
    plan = migrate.match(linen_module, nnx_model, x, linen_kwargs=linen_kwargs)
    assert plan.ok, str(plan)
    migrate.linen_to_nnx(variables, nnx_model, plan)
    return plan


def test_block_and_model():
    lm = L.basic().Model(256, 10)
    x = jax.random.normal(jax.random.key(2), (2, 784))
    variables = lm.init(RNGS, x, training=False)
    model = N.basic().Model(784, 256, 10, rngs=nnx.Rngs(0))
    plan = _migrate(lm, model, variables, x, {"training": False})

    p = variables["params"]
    assert_trees_equal(model.block.linear.kernel[...], p["Block_0"]["Dense_0"]["kernel"])
    assert_trees_equal(model.linear.bias[...], p["Dense_0"]["bias"])
    model.eval()
    assert_trees_close(model(x), lm.apply(variables, x, training=False), atol=TOL, rtol=0)

    back = migrate.nnx_to_linen(model, plan)
    assert_trees_equal(plain(back), plain(variables))
    assert_trees_close(
        lm.apply(back, x, training=False), lm.apply(variables, x, training=False), atol=TOL, rtol=0
    )


def test_batchnorm_and_counter_collection():
    ns = N.collections()
    lm = L.collections().Block(4)
    x = jax.random.normal(jax.random.key(0), (2, 4))
    variables = lm.init(jax.random.key(0), x, training=True)
    # Train a step so the statistics and the counter differ from their initial values.
    _, updates = lm.apply(variables, 3 * x + 1, training=True, mutable=["batch_stats", "counter"])
    variables = {**variables, **updates}
    assert int(variables["counter"]["count"]) == 2

    model = ns.Block(4, 4, rngs=nnx.Rngs(0))
    plan = _migrate(lm, model, variables, x, {"training": False})
    assert {p.nnx_type for p in plan.pairs} == {"Param", "BatchStat", "Counter"}
    assert isinstance(model.count, ns.Counter)
    assert int(model.count[...]) == 2
    assert_trees_equal(model.batchnorm.mean[...], variables["batch_stats"]["batchnorm"]["mean"])
    assert_trees_equal(model.linear.kernel[...], variables["params"]["dense"]["kernel"])

    # Eval, then train mode with the statistics and counter updates compared.
    report = migrate.verify(lm, variables, model, x, linen_kwargs={"training": False}, plan=plan)
    assert report.ok, str(report)
    compared = {(d.mode, d.name) for d in report.differences}
    assert {("train", "batch_stats"), ("train", "counter"), ("eval", "output")} <= compared
    assert report.max_abs <= TOL

    model.train()
    y = model(x)
    ly, lupd = lm.apply(variables, x, training=True, mutable=["batch_stats", "counter"])
    assert_trees_close(y, ly, atol=TOL, rtol=0)
    assert_trees_close(
        model.batchnorm.var[...], lupd["batch_stats"]["batchnorm"]["var"], atol=TOL, rtol=0
    )
    assert int(model.count[...]) == int(lupd["counter"]["count"]) == 3

    back = migrate.nnx_to_linen(model, plan)
    assert_trees_close(
        back["batch_stats"]["batchnorm"]["mean"],
        lupd["batch_stats"]["batchnorm"]["mean"],
        atol=TOL,
        rtol=0,
    )
    out, _ = lm.apply(back, x, training=False, mutable=["batch_stats", "counter"])
    model.eval()
    assert_trees_close(out, model(x), atol=TOL, rtol=0)


def test_autoencoder_methods():
    lm = L.multiple_methods().AutoEncoder(256, 784)
    x = jax.random.normal(jax.random.key(3), (2, 784))
    variables = lm.init(jax.random.key(0), x=x)
    model = N.multiple_methods().AutoEncoder(784, 256, 784, rngs=nnx.Rngs(0))
    plan = _migrate(lm, model, variables, x)

    assert_trees_close(model(x), lm.apply(variables, x), atol=TOL, rtol=0)
    assert_trees_close(model.encode(x), lm.apply(variables, x=x, method="encode"), atol=TOL, rtol=0)
    z = model.encode(x)
    assert_trees_close(model.decode(z), lm.apply(variables, z, method="decode"), atol=TOL, rtol=0)

    back = migrate.nnx_to_linen(model, plan)
    assert_trees_equal(plain(back), plain(variables))


def test_rnn_scan_over_time():
    lm = L.transformations().RNN(64)
    x = jax.random.normal(jax.random.key(4), (3, 12, 32))
    variables = lm.init(jax.random.key(0), x=x)
    model = N.transformations().RNN(32, 64, rngs=nnx.Rngs(0))
    plan = _migrate(lm, model, variables, x)
    assert [p.layout.kind for p in plan.pairs] == ["copy", "copy"]

    assert_trees_close(model(x), lm.apply(variables, x=x), atol=TOL, rtol=0)
    back = migrate.nnx_to_linen(model, plan)
    assert_trees_equal(plain(back), plain(variables))
    assert_trees_close(lm.apply(back, x=x), model(x), atol=TOL, rtol=0)


def test_scan_over_layers():
    lm = L.scan_over_layers().MLP(64, num_layers=5)
    x = jax.random.normal(jax.random.key(5), (2, 64))
    variables = lm.init(RNGS, x=x, training=True)
    assert variables["params"]["ScanBlock_0"]["Dense_0"]["kernel"].shape == (5, 64, 64)
    model = N.scan_over_layers().MLP(64, num_layers=5, rngs=nnx.Rngs(0))
    plan = _migrate(lm, model, variables, x, {"training": False})

    assert_trees_close(
        model.blocks.linear.kernel[...],
        variables["params"]["ScanBlock_0"]["Dense_0"]["kernel"],
        atol=0,
        rtol=0,
    )
    model.eval()
    assert_trees_close(model(x), lm.apply(variables, x, training=False), atol=TOL, rtol=0)
    report = migrate.verify(lm, variables, model, x, linen_kwargs={"training": False}, plan=plan)
    assert report.ok and report.max_abs <= TOL, str(report)

    back = migrate.nnx_to_linen(model, plan)
    assert_trees_equal(plain(back), plain(variables))


@pytest.mark.parametrize("section", ["basic", "scan_over_layers"])
def test_migration_leaves_rng_state_alone(section):
    """Dropout's RNG state is NNX-only: it is excluded from the plan and keeps its value."""
    if section == "basic":
        lm, model = L.basic().Model(8, 2), N.basic().Model(4, 8, 2, rngs=nnx.Rngs(0))
    else:
        lm, model = L.scan_over_layers().MLP(4, 2), N.scan_over_layers().MLP(4, 2, nnx.Rngs(0))
    x = jnp.ones((1, 4))
    before = jax.tree.map(
        lambda k: np.asarray(jax.random.key_data(k)), nnx.state(model, nnx.RngKey)
    )
    variables = lm.init(RNGS, x, training=False)
    plan = _migrate(lm, model, variables, x, {"training": False})
    assert plan.excluded and all("rngs" in p for p in plan.excluded)
    after = jax.tree.map(lambda k: np.asarray(jax.random.key_data(k)), nnx.state(model, nnx.RngKey))
    jax.tree.map(np.testing.assert_array_equal, before, after)
