"""Errors that point the right way: no fix that would keep random weights, no empty lists."""

import ast
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import linnx
from linnx import migrate

from .lm_models import TOKENS, LinenLM, NnxLM

X = jnp.ones((2, 3))


def _suggests_allow_missing(message: str) -> bool:
    """True when the message offers ``allow_missing=[...]`` as a fix (not when it warns)."""
    return re.search(r"pass allow_missing=\[", message) is not None


class PartitionedDense(nn.Module):
    """lm1b/T5X style: parameters boxed with logical axis names."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(
            4,
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("in", "out")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("out",)),
        )(x)


class Port(nnx.Module):
    def __init__(self, rngs):
        self.proj = nnx.Linear(3, 4, rngs=rngs)

    def __call__(self, x):
        return self.proj(x)


def test_boxed_leaves_are_named_as_such_and_allow_missing_is_not_offered():
    variables = PartitionedDense().init(jax.random.key(0), X)
    # What Orbax restores for boxed parameters without a target: a trailing 'value' level.
    boxed = jax.tree.map(
        lambda b: {"value": b.value}, variables, is_leaf=lambda b: isinstance(b, nn.Partitioned)
    )
    model = Port(nnx.Rngs(1))
    plan = migrate.match(PartitionedDense(), model, X)
    assert plan.ok
    before = np.asarray(model.proj.kernel[...])
    with pytest.raises(migrate.MissingWeightsError, match=r"same shape") as info:
        migrate.linen_to_nnx(boxed, model, plan)
    message = str(info.value)
    assert "params/Dense_0/kernel/value -> proj/kernel" in message
    assert "trailing 'value' level" in message
    assert not _suggests_allow_missing(message)
    assert info.value.missing == ("proj/bias", "proj/kernel")
    np.testing.assert_array_equal(model.proj.kernel[...], before)


class EinsumPort(nnx.Module):
    """A port that writes the projection as an einsum: no Dense ~ Linear pairing by kind."""

    def __init__(self, rngs):
        self.proj = nnx.Einsum("bi,io->bo", (3, 4), (4,), rngs=rngs)

    def __call__(self, x):
        return self.proj(x)


def test_same_shaped_unused_leaves_suggest_the_rename_that_pairs_them():
    linen = nn.Dense(4)
    variables = {"params": nn.Sequential([linen]).init(jax.random.key(0), X)["params"]}
    model = EinsumPort(nnx.Rngs(1))
    plan = migrate.match(nn.Sequential([nn.Dense(4)]), model, X)
    assert set(plan.unfilled) == {"proj/bias", "proj/kernel"}
    with pytest.raises(migrate.MissingWeightsError, match=r"same shape") as info:
        migrate.linen_to_nnx(variables, model, plan)
    message = str(info.value)
    assert "rename={'layers_0': 'proj'}" in message
    assert not _suggests_allow_missing(message)

    # The suggested rule is the right one: it pairs everything.
    plan = migrate.match(nn.Sequential([nn.Dense(4)]), model, X, rename={"layers_0": "proj"})
    assert plan.ok
    migrate.linen_to_nnx(variables, model, plan)
    np.testing.assert_array_equal(model.proj.kernel[...], variables["params"]["layers_0"]["kernel"])


def test_really_missing_weights_still_offer_allow_missing():
    """Without a same-shaped leaf for each missing variable, allow_missing stays the fix."""

    class Wider(nnx.Module):
        def __init__(self, rngs):
            self.proj = nnx.Linear(3, 4, rngs=rngs)
            self.extra = nnx.Linear(4, 4, rngs=rngs)

        def __call__(self, x):
            return self.extra(self.proj(x))

    variables = nn.Dense(4).init(jax.random.key(0), X)
    model = Wider(nnx.Rngs(0))
    plan = migrate.match(nn.Dense(4), model, X)
    with pytest.raises(migrate.MissingWeightsError) as info:
        migrate.linen_to_nnx(variables, model, plan)
    assert _suggests_allow_missing(str(info.value))


# -- a port with one block more (or less) -----------------------------------------------------


class LBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.Dense(8)(nn.LayerNorm()(x))
        return x + nn.Dense(8)(nn.relu(y))


class LinenDecoder(nn.Module):
    layers: int

    @nn.compact
    def __call__(self, x):
        for _ in range(self.layers):
            x = LBlock()(x)
        return x


class LinenModel(nn.Module):
    layers: int = 2

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(8, name="embed")(x)
        return nn.Dense(3, name="head")(LinenDecoder(self.layers, name="decoder")(x))


class NnxBlock(nnx.Module):
    def __init__(self, rngs):
        self.ln = nnx.LayerNorm(8, rngs=rngs)
        self.fc1 = nnx.Linear(8, 8, rngs=rngs)
        self.fc2 = nnx.Linear(8, 8, rngs=rngs)

    def __call__(self, x):
        return x + self.fc2(nnx.relu(self.fc1(self.ln(x))))


class NnxDecoder(nnx.Module):
    def __init__(self, layers, rngs):
        self.blocks = nnx.List([NnxBlock(rngs) for _ in range(layers)])

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class NnxModel(nnx.Module):
    def __init__(self, layers, rngs):
        self.embed = nnx.Linear(4, 8, rngs=rngs)
        self.decoder = NnxDecoder(layers, rngs)
        self.head = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.head(self.decoder(self.embed(x)))


X4 = jnp.ones((2, 4))


def test_an_extra_nnx_block_is_named_instead_of_an_endless_rename_chase():
    model = NnxModel(3, nnx.Rngs(0))
    # Before: "decoder/LBlock_1/Dense_0 could pair with any of ..." and a rename that led to
    # another ambiguous pairing.
    with pytest.raises(
        migrate.AmbiguousPairingError,
        match=r"^The NNX model has decoder/blocks/2 \(6 variables\) that the Linen model does "
        r"not have",
    ) as info:
        migrate.match(LinenModel(2), model, X4)
    message = str(info.value)
    assert "build the NNX model with 2 blocks" in message
    # The rename it suggests for an intended extra block works, and leaves exactly that
    # block unfilled, said in one line.
    rename = ast.literal_eval(re.search(r"rename=(\{.*?\})", message).group(1))
    plan = migrate.match(LinenModel(2), model, X4, rename=rename)
    assert plan.unfilled == tuple(
        f"decoder/blocks/2/{p}"
        for p in ("fc1/bias", "fc1/kernel", "fc2/bias", "fc2/kernel", "ln/bias", "ln/scale")
    )
    assert (
        "the NNX model has decoder/blocks/2 (6 variables) that the Linen model does not have"
        in str(plan)
    )
    variables = LinenModel(2).init(jax.random.key(0), X4)
    with pytest.raises(
        migrate.MissingWeightsError, match=r"the NNX model has decoder/blocks/2 \(6 variables\)"
    ):
        migrate.linen_to_nnx(variables, model, plan)
    migrate.linen_to_nnx(variables, model, plan, allow_missing=["decoder/blocks/2"])


def test_an_extra_linen_block_is_named():
    with pytest.raises(
        migrate.AmbiguousPairingError,
        match=r"^The Linen model has decoder/LBlock_2 \(6 leaves\) that the NNX model does not",
    ) as info:
        migrate.match(LinenModel(3), NnxModel(2, nnx.Rngs(0)), X4)
    assert "give the NNX model 3 blocks" in str(info.value)


# -- smaller messages -------------------------------------------------------------------------


def test_rename_error_on_a_top_level_layer_lists_its_variables():
    # Before: "Linen module paths (without collection): " and nothing after it.
    with pytest.raises(
        migrate.RenameError,
        match=r"'Dense_0' matched no Linen path\.\nLinen variable paths \(without collection\) "
        r"\(the model's variables sit at its top level\): bias, kernel",
    ):
        migrate.match(nn.Dense(4), nnx.Linear(3, 4, rngs=nnx.Rngs(0)), X, rename={"Dense_0": "x"})


class PartlyPorted(nnx.Module):
    def __init__(self, rngs):
        self.body = linnx.ToNNX(nn.Dense(4), rngs=rngs)
        self.head = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.head(self.body(x))


class LinenWhole(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2, name="head")(nn.Dense(4, name="body")(x))


def test_a_tonnx_part_never_lazy_initialized_says_call_lazy_init():
    linen = LinenWhole()
    variables = linen.init(jax.random.key(0), X)
    ready = linnx.lazy_init(PartlyPorted(nnx.Rngs(0)), X)
    plan = migrate.match(linen, ready, X)
    fresh = PartlyPorted(nnx.Rngs(0))
    for call in (
        lambda: migrate.match(linen, fresh, X),
        lambda: migrate.linen_to_nnx(variables, fresh, plan),
        lambda: migrate.nnx_to_linen(fresh, plan),
        lambda: migrate.verify(linen, variables, fresh, X, plan=plan),
    ):
        # Before: a TraceError ending in "pass sample inputs the model accepts", or a
        # StructureMismatchError about the plan and the model.
        with pytest.raises(linnx.NotInitializedError, match=r"lazy_init was never run\): body"):
            call()


def test_a_width_mistake_leads_with_one_line():
    linen_lm = LinenLM()
    variables = linen_lm.init(jax.random.key(0), TOKENS)
    model = NnxLM(nnx.Rngs(0), embed=16)  # the Linen model has width 8
    plan = migrate.match(linen_lm, model, TOKENS)
    assert len(plan.mismatched) == 33
    lead = "every width differs: 8 vs 16 (and 4 vs 8)"
    assert (
        str(plan).splitlines()[-34] == f"  {lead}: Linen has 8 where the NNX model has 16, "
        "across all 33 mismatched leaves; was the NNX model built with another size?"
    )
    with pytest.raises(migrate.ShapeMismatchError) as info:
        migrate.linen_to_nnx(variables, model, plan)
    assert str(info.value).startswith(lead)


def test_unrelated_shape_mismatches_get_no_width_line():
    class Two(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(3, 5, rngs=rngs)  # Linen: 3 -> 4
            self.b = nnx.Linear(5, 7, rngs=rngs)  # Linen: 4 -> 6

        def __call__(self, x):
            return self.b(self.a(x))

    linen = nn.Sequential([nn.Dense(4), nn.Dense(6)])
    plan = migrate.match(linen, Two(nnx.Rngs(0)), X, rename={"layers_0": "a", "layers_1": "b"})
    assert plan.mismatched and "every width differs" not in str(plan)
