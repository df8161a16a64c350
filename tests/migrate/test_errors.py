"""Every way a migration can go wrong gives a typed error that lists key paths and a fix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import linnx
from linnx import migrate

X = jnp.ones((2, 3))


class OneDense(nn.Module):
    features: int = 4

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.features)(x)


class TwoDense(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(4)(x)
        return nn.Dense(4)(x)


class Parallel(nn.Module):
    """Two layers of the same shape fed the same input: only one survives in the port."""

    @nn.compact
    def __call__(self, x):
        a = nn.Dense(4)(x)
        b = nn.Dense(4)(x)
        return a + 0 * b


class Ported(nnx.Module):
    def __init__(self, out=4, extra=False, *, rngs):
        self.linear = nnx.Linear(3, out, rngs=rngs)
        self.extra = nnx.Linear(out, out, rngs=rngs) if extra else None

    def __call__(self, x):
        x = self.linear(x)
        return x if self.extra is None else self.extra(x)


class Proj(nnx.Module):
    def __init__(self, rngs):
        self.proj = nnx.Linear(3, 4, rngs=rngs)

    def __call__(self, x):
        return self.proj(x)


def test_missing_weights_are_listed_and_the_model_is_left_alone():
    model = Ported(extra=True, rngs=nnx.Rngs(0))
    variables = OneDense().init(jax.random.key(0), X)
    plan = migrate.match(OneDense(), model, X)
    assert plan.unfilled == ("extra/bias", "extra/kernel")
    assert "Unfilled NNX variables (2)" in str(plan)
    before = np.asarray(model.linear.kernel[...])
    with pytest.raises(migrate.MissingWeightsError, match=r"extra/bias, extra/kernel") as info:
        migrate.linen_to_nnx(variables, model, plan)
    assert "would keep their initial values" in str(info.value)
    assert "allow_missing=" in str(info.value)
    assert info.value.missing == ("extra/bias", "extra/kernel")
    assert isinstance(info.value, linnx.StructureMismatchError)
    np.testing.assert_array_equal(model.linear.kernel[...], before)

    migrate.linen_to_nnx(variables, model, plan, allow_missing=["extra/*"])
    np.testing.assert_array_equal(
        model.linear.kernel[...], variables["params"]["Dense_0"]["kernel"]
    )


def test_unused_weights_are_listed():
    model = Ported(rngs=nnx.Rngs(0))
    variables = TwoDense().init(jax.random.key(0), X)
    plan = migrate.match(TwoDense(), model, X)
    assert plan.unused == ("params/Dense_1/bias", "params/Dense_1/kernel")
    with pytest.raises(
        migrate.UnusedWeightsError, match=r"would be dropped(.|\n)*params/Dense_1/bias"
    ) as info:
        migrate.linen_to_nnx(variables, model, plan)
    assert "allow_unused=" in str(info.value)
    migrate.linen_to_nnx(variables, model, plan, allow_unused="params/Dense_1")

    # A leaf that the checkpoint has but the plan never saw is unused too.
    extra = {**variables, "ema": {"Dense_0": {"kernel": jnp.zeros((3, 4))}}}
    with pytest.raises(migrate.UnusedWeightsError, match=r"ema/Dense_0/kernel"):
        migrate.linen_to_nnx(extra, model, plan, allow_unused="params/Dense_1")


def test_shape_mismatch_is_listed_with_both_shapes():
    model = Ported(out=6, rngs=nnx.Rngs(0))
    variables = OneDense(5).init(jax.random.key(0), X)
    plan = migrate.match(OneDense(5), model, X)
    assert {m.reason for m in plan.mismatched} == {"shape"}
    with pytest.raises(
        migrate.ShapeMismatchError,
        match=r"params/Dense_0/kernel -> linear/kernel: NNX expects \(3, 6\) float32, "
        r"Linen has \(3, 5\) float32",
    ) as info:
        migrate.linen_to_nnx(variables, model, plan)
    assert len(info.value.mismatched) == 2


def test_dtype_mismatch_needs_cast():
    lm = nn.Dense(4, param_dtype=jnp.bfloat16)
    model = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    variables = lm.init(jax.random.key(0), X)
    plan = migrate.match(lm, model, X)
    assert {m.reason for m in plan.mismatched} == {"dtype"}
    with pytest.raises(migrate.ShapeMismatchError, match=r"bfloat16(.|\n)*cast=True"):
        migrate.linen_to_nnx(variables, model, plan)
    migrate.linen_to_nnx(variables, model, plan, cast=True)
    assert model.kernel[...].dtype == jnp.float32


def test_ambiguous_pairing_is_refused_and_rename_resolves_it():
    model = Proj(nnx.Rngs(0))
    with pytest.raises(
        migrate.AmbiguousPairingError, match=r"Dense_0(.|\n)*proj(.|\n)*rename="
    ) as info:
        migrate.match(Parallel(), model, X)
    assert any("Dense_1" in k for k in info.value.candidates)

    plan = migrate.match(Parallel(), model, X, rename={"Dense_1": "proj"})
    assert [p.linen[0] for p in plan.pairs] == ["params/Dense_1/bias", "params/Dense_1/kernel"]
    assert plan.unused == ("params/Dense_0/bias", "params/Dense_0/kernel")

    plan = migrate.match(Parallel(), model, X, rename=lambda p: p.replace("Dense_0", "proj"))
    assert plan.unused == ("params/Dense_1/bias", "params/Dense_1/kernel")


def test_rename_rule_that_matches_nothing():
    with pytest.raises(migrate.RenameError, match=r"'Dense_7' matched no Linen path"):
        migrate.match(OneDense(), Ported(rngs=nnx.Rngs(0)), X, rename={"Dense_7": "linear"})
    with pytest.raises(migrate.RenameError, match="expected a mapping"):
        migrate.match(OneDense(), Ported(rngs=nnx.Rngs(0)), X, rename=["Dense_0"])


def test_model_that_cannot_run_on_the_samples():
    with pytest.raises(migrate.TraceError, match=r"NNX model could not run(.|\n)*nnx_kwargs="):
        migrate.match(OneDense(), Ported(rngs=nnx.Rngs(0)), jnp.ones((2, 5)), linen_kwargs={})
    with pytest.raises(migrate.TraceError, match=r"Linen model could not run"):
        migrate.match(OneDense(), Ported(rngs=nnx.Rngs(0)), X, linen_kwargs={"training": True})


def test_plan_for_another_model_is_refused():
    plan = migrate.match(OneDense(), Ported(rngs=nnx.Rngs(0)), X)
    variables = OneDense().init(jax.random.key(0), X)
    with pytest.raises(linnx.StructureMismatchError, match=r"missing \(2\): linear/bias"):
        migrate.linen_to_nnx(variables, Proj(nnx.Rngs(0)), plan)


def test_failed_verification_report():
    class Port(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(3, 4, rngs=rngs)
            self.bn = nnx.BatchNorm(4, momentum=0.5, rngs=rngs)  # Linen uses 0.99

        def __call__(self, x):
            return self.bn(self.linear(x))

    class Orig(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return nn.BatchNorm(use_running_average=not train)(nn.Dense(4)(x))

    x = jax.random.normal(jax.random.key(1), (5, 3))
    variables = Orig().init(jax.random.key(0), x)
    model = Port(nnx.Rngs(0))
    plan = migrate.match(Orig(), model, x, linen_kwargs={"train": False})
    migrate.linen_to_nnx(variables, model, plan)
    report = migrate.verify(Orig(), variables, model, x, linen_kwargs={"train": False}, plan=plan)
    failing = [(d.mode, d.name) for d in report.differences if not d.ok]
    assert failing == [("train", "batch_stats")]
    assert not report.ok
    with pytest.raises(migrate.VerificationError, match=r"train\s+batch_stats.*FAIL"):
        report.raise_for_failure()
