"""verify in train mode: every dropout off on both sides, and no claim the run did not make true."""

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx

import linnx
from linnx import migrate

from .lm_models import TOKENS, LinenLM, NnxLM
from .test_keys_and_axes import MlpBlock, X


def _migrated_lm():
    linen_lm = LinenLM()
    variables = linen_lm.init(jax.random.key(0), TOKENS)
    model = NnxLM(nnx.Rngs(params=1, dropout=2))
    plan = migrate.match(linen_lm, model, TOKENS, linen_kwargs={"train": False})
    assert plan.ok, plan
    migrate.linen_to_nnx(variables, model, plan)
    return linen_lm, variables, model, plan


def test_attention_dropout_is_off_on_both_sides_in_train_mode():
    linen_lm, variables, model, plan = _migrated_lm()
    report = migrate.verify(
        linen_lm, variables, model, TOKENS, linen_kwargs={"train": False}, plan=plan
    )
    # Failed before: nn.SelfAttention / nnx.MultiHeadAttention kept their dropout_rate.
    assert report.ok, report
    assert [(d.mode, d.name) for d in report.differences] == [
        ("eval", "output"),
        ("train", "output"),
    ]
    (note,) = report.notes
    assert "6 Linen dropout/attention layer(s) bypassed, 6 NNX module(s)" in note  # 2 x 3
    # The caller's model is untouched: its attention still has its dropout.
    assert model.blocks[0].attn.dropout_rate == 0.3
    assert model.blocks[0].attn.deterministic is False


class NoisyLinen(nn.Module):
    """Gaussian noise drawn from the 'dropout' stream by hand: no nn.Dropout to switch off."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(4, name="proj")(x)
        if train:
            x = x + 0.1 * jax.random.normal(self.make_rng("dropout"), x.shape)
        return x


class NoisyPort(nnx.Module):
    def __init__(self, rngs):
        self.proj = nnx.Linear(3, 4, rngs=rngs)

    def __call__(self, x):
        return self.proj(x)


def test_randomness_the_switches_miss_is_named_not_claimed_away():
    x = jnp.ones((2, 3))
    variables = NoisyLinen().init(jax.random.key(0), x)
    model = NoisyPort(nnx.Rngs(0))
    plan = migrate.match(NoisyLinen(), model, x)
    migrate.linen_to_nnx(variables, model, plan)
    report = migrate.verify(
        NoisyLinen(), variables, model, x, linen_kwargs={"train": False}, plan=plan
    )
    text = str(report)
    # Before: "dropout is off in train mode on both sides" next to a failing train row.
    assert "without dropout" not in text and "dropout is off" not in text
    assert "not deterministic on the Linen side: <root> (NoisyLinen)" in text


class NoisyNnx(nnx.Module):
    """An NNX port that draws its own noise from a stream it keeps."""

    def __init__(self, rngs):
        self.proj = nnx.Linear(3, 4, rngs=rngs)
        self.noise = rngs.dropout.fork()

    def __call__(self, x):
        x = self.proj(x)
        return x + 0.1 * jax.random.normal(self.noise(), x.shape)


def test_nnx_side_randomness_is_named():
    x = jnp.ones((2, 3))
    linen = nn.Sequential([nn.Dense(4)])
    variables = linen.init(jax.random.key(0), x)
    model = NoisyNnx(nnx.Rngs(0))
    plan = migrate.match(linen, model, x, rename={"layers_0": "proj"})
    migrate.linen_to_nnx(variables, model, plan)
    report = migrate.verify(linen, variables, model, x, plan=plan)
    text = str(report)
    assert "not deterministic on the NNX side" in text
    assert "noise of <root> (NoisyNnx)" in text
    assert "without dropout" not in text


def test_to_linen_dropout_on_the_linen_side_is_named():
    """The Linen side is to_linen(a module holding nnx.Dropout): Linen's switches cannot reach
    inside it, so the report says which module stays random instead of claiming otherwise."""
    layer = linnx.to_linen(MlpBlock, 6, 5)
    variables = layer.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, X)
    model = MlpBlock(6, 5, rngs=nnx.Rngs(3))
    plan = migrate.match(layer, model, X)
    migrate.linen_to_nnx(variables, model, plan)
    report = migrate.verify(layer, variables, model, X, plan=plan)
    assert "not deterministic on the Linen side: <root> (ToLinen)" in str(report)
    assert "without dropout" not in str(report)
