"""Layout changes and pairing rules beyond the spec: stacking, unstacking, moved axes, renames,
setup lists, and a port that calls its layers in another order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import linnx
from linnx import migrate

X = jax.random.normal(jax.random.key(0), (5, 4))
LAYERS = 3


class LBlock(nn.Module):
    @nn.compact
    def __call__(self, x, train):
        x = nn.Dense(6)(x)
        return nn.relu(nn.BatchNorm(use_running_average=not train)(x))


class LLoop(nn.Module):
    """Unrolled: LBlock_0..2."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(6, name="embed")(x)
        for _ in range(LAYERS):
            x = LBlock()(x, train)
        return nn.Dense(2, name="out")(x)


class LScanned(nn.Module):
    """Stacked with nn.scan along ``axis``."""

    axis: int = 0

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(6, name="embed")(x)

        class Body(nn.Module):
            @nn.compact
            def __call__(self, x, _):
                return LBlock()(x, train), None

        scan = nn.scan(
            Body,
            variable_axes={"params": self.axis, "batch_stats": self.axis},
            split_rngs={"params": True},
            length=LAYERS,
        )
        x, _ = scan()(x, None)
        return nn.Dense(2, name="out")(x)


class NBlock(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(6, 6, rngs=rngs)
        self.bn = nnx.BatchNorm(6, rngs=rngs)

    def __call__(self, x):
        return nnx.relu(self.bn(self.linear(x)))


class NStacked(nnx.Module):
    def __init__(self, rngs):
        self.inp = nnx.Linear(4, 6, rngs=rngs)

        @nnx.split_rngs(splits=LAYERS)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make(rngs):
            return NBlock(rngs)

        self.layers = make(rngs)
        self.outp = nnx.Linear(6, 2, rngs=rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def forward(x, block):
            return block(x)

        return self.outp(forward(self.inp(x), self.layers))


class NList(nnx.Module):
    def __init__(self, rngs):
        self.inp = nnx.Linear(4, 6, rngs=rngs)
        self.layers = nnx.List([NBlock(rngs) for _ in range(LAYERS)])
        self.outp = nnx.Linear(6, 2, rngs=rngs)

    def __call__(self, x):
        x = self.inp(x)
        for block in self.layers:
            x = block(x)
        return self.outp(x)


def _trained(lm):
    variables = lm.init(jax.random.key(1), X)
    _, upd = lm.apply(variables, 2 * X + 1, train=True, mutable=["batch_stats"])
    return {**variables, **upd}


@pytest.mark.parametrize(
    "linen, port, layout",
    [
        (LLoop, NStacked, "stack"),
        (LScanned, NList, "unstack"),
        (lambda: LScanned(axis=1), NStacked, "moveaxis"),
        (LScanned, NStacked, "copy"),
    ],
)
def test_stacked_and_unrolled_layers(linen, port, layout):
    lm, model = linen(), port(nnx.Rngs(0))
    variables = _trained(lm)
    plan = migrate.match(lm, model, X, linen_kwargs={"train": False})
    assert plan.ok, str(plan)
    kinds = {
        p.layout.kind for p in plan.pairs if "embed" not in p.linen[0] and "out/" not in p.linen[0]
    }
    assert kinds == {layout}
    migrate.linen_to_nnx(variables, model, plan)
    report = migrate.verify(lm, variables, model, X, linen_kwargs={"train": False}, plan=plan)
    assert report.ok and report.max_abs < 1e-5, str(report)

    back = migrate.nnx_to_linen(model, plan)
    flat = jax.tree_util.tree_leaves_with_path(variables)
    for path, leaf in flat:
        got = back
        for k in path:
            got = got[k.key]
        np.testing.assert_array_equal(got, leaf)


def test_stack_values_land_in_the_right_slices():
    lm, model = LLoop(), NStacked(nnx.Rngs(0))
    variables = _trained(lm)
    plan = migrate.match(lm, model, X, linen_kwargs={"train": False})
    migrate.linen_to_nnx(variables, model, plan)
    for k in range(LAYERS):
        np.testing.assert_array_equal(
            model.layers.linear.kernel[...][k],
            variables["params"][f"LBlock_{k}"]["Dense_0"]["kernel"],
        )
        np.testing.assert_array_equal(
            model.layers.bn.mean[...][k],
            variables["batch_stats"][f"LBlock_{k}"]["BatchNorm_0"]["mean"],
        )
    assert "stack on axis 0" in str(plan)


def test_setup_list_pairs_by_name_whatever_the_call_order():
    class LSetup(nn.Module):
        def setup(self):
            self.layers = [nn.Dense(4) for _ in range(3)]

        def __call__(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    class NReversed(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(4, 4, rngs=rngs) for _ in range(3)])

        def __call__(self, x):  # a port that (wrongly) runs them backwards
            for layer in reversed(self.layers):
                x = layer(x)
            return x

    x = jnp.ones((1, 4))
    plan = migrate.match(LSetup(), NReversed(nnx.Rngs(0)), x)
    assert {(p.linen[0], p.nnx) for p in plan.pairs if p.nnx.endswith("kernel")} == {
        (f"params/layers_{i}/kernel", f"layers/{i}/kernel") for i in range(3)
    }


def test_port_that_runs_the_shortcut_first():
    class LRes(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            norm = lambda **kw: nn.BatchNorm(use_running_average=not train, **kw)  # noqa: E731
            y = nn.relu(norm()(nn.Conv(8, (3, 3))(x)))
            y = norm()(nn.Conv(8, (3, 3))(y))
            r = norm(name="norm_proj")(nn.Conv(8, (1, 1), name="conv_proj")(x))
            return nn.relu(y + r)

    class NRes(nnx.Module):
        def __init__(self, rngs):
            self.short_conv = nnx.Conv(4, 8, (1, 1), rngs=rngs)
            self.short_bn = nnx.BatchNorm(8, rngs=rngs)
            self.conv1 = nnx.Conv(4, 8, (3, 3), rngs=rngs)
            self.bn1 = nnx.BatchNorm(8, rngs=rngs)
            self.conv2 = nnx.Conv(8, 8, (3, 3), rngs=rngs)
            self.bn2 = nnx.BatchNorm(8, rngs=rngs)

        def __call__(self, x):
            r = self.short_bn(self.short_conv(x))
            y = nnx.relu(self.bn1(self.conv1(x)))
            return nnx.relu(self.bn2(self.conv2(y)) + r)

    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
    lm, model = LRes(), NRes(nnx.Rngs(0))
    variables = lm.init(jax.random.key(1), x)
    _, upd = lm.apply(variables, x + 1, train=True, mutable=["batch_stats"])
    variables = {**variables, **upd}
    plan = migrate.match(lm, model, x, linen_kwargs={"train": False})
    assert plan.ok, str(plan)
    pairs = {p.linen[0]: p.nnx for p in plan.pairs}
    assert pairs["batch_stats/norm_proj/mean"] == "short_bn/mean"
    assert pairs["batch_stats/BatchNorm_1/mean"] == "bn2/mean"
    migrate.linen_to_nnx(variables, model, plan)
    assert migrate.verify(lm, variables, model, x, linen_kwargs={"train": False}, plan=plan).ok


def test_rename_completes_what_order_cannot_tell():
    class Heads(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2, name="head_a")(x), nn.Dense(2, name="head_b")(x)

    class NHeads(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(4, 2, rngs=rngs)
            self.b = nnx.Linear(4, 2, rngs=rngs)

        def __call__(self, x):
            b = self.b(x)  # the port computes the heads in the other order
            return self.a(x), b

    x = jax.random.normal(jax.random.key(0), (1, 4))
    variables = Heads().init(jax.random.key(1), x)

    # By call order alone the heads cross over; verification catches it.
    model = NHeads(nnx.Rngs(0))
    plan = migrate.match(Heads(), model, x)
    assert ("params/head_a/kernel", "b/kernel") in {(p.linen[0], p.nnx) for p in plan.pairs}
    migrate.linen_to_nnx(variables, model, plan)
    assert not migrate.verify(Heads(), variables, model, x, plan=plan).ok

    # A rename rule fixes the pairing.
    model = NHeads(nnx.Rngs(0))
    plan = migrate.match(Heads(), model, x, rename={"head_a": "a", "head_b": "b"})
    assert ("params/head_a/kernel", "a/kernel") in {(p.linen[0], p.nnx) for p in plan.pairs}
    migrate.linen_to_nnx(variables, model, plan)
    assert migrate.verify(Heads(), variables, model, x, plan=plan).ok


def test_custom_collection_pairs_through_the_registry():
    class Clicks(nnx.Variable):
        pass

    class LTally(nn.Module):
        @nn.compact
        def __call__(self, x):
            hits = self.variable("tally", "hits", jnp.zeros, (4,))
            w = self.param("w", nn.initializers.ones, (4,))
            hits.value += x.sum(0)
            return x * w[None, :]

    class NTally(nnx.Module):
        def __init__(self):
            self.clicks = Clicks(jnp.zeros(4))
            self.weight = nnx.Param(jnp.ones(4))

        def __call__(self, x):
            self.clicks[...] += x.sum(0)
            return x * self.weight[None, :]

    x = jnp.arange(8.0).reshape(2, 4)
    variables = LTally().init(jax.random.key(0), x)
    linnx.register_variable_name_type_pair("tally", Clicks, overwrite=True)
    model = NTally()
    plan = migrate.match(LTally(), model, x)
    assert {(p.linen[0], p.nnx, p.nnx_type) for p in plan.pairs} == {
        ("tally/hits", "clicks", "Clicks"),
        ("params/w", "weight", "Param"),
    }
    migrate.linen_to_nnx(variables, model, plan)
    np.testing.assert_array_equal(model.clicks[...], variables["tally"]["hits"])
    report = migrate.verify(LTally(), variables, model, x, plan=plan)
    assert report.ok and {d.name for d in report.differences} >= {"tally"}


def test_abstract_samples_and_an_abstract_target():
    """No allocation needed: ShapeDtypeStruct samples, and a model from nnx.eval_shape."""
    x = jax.ShapeDtypeStruct((5, 4), jnp.float32)
    model = nnx.eval_shape(lambda: NList(nnx.Rngs(0)))
    lm = LScanned()
    plan = migrate.match(lm, model, x, linen_kwargs={"train": False})
    assert plan.ok
    variables = _trained(lm)
    migrate.linen_to_nnx(variables, model, plan)
    assert isinstance(model.layers[2].linear.kernel[...], jax.Array)
    model.eval()
    np.testing.assert_allclose(model(X), lm.apply(variables, X), atol=1e-6)
