"""``self.make_rng(name)`` becomes a stream the converted class keeps (forked from its
``rngs``) and draws from; ``self.is_initializing()`` is False (NNX initializes in
``__init__``), so the init-only branch goes."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from linnx import convert

from ._util import load, ruff

SOURCE = '''\
import flax.linen as nn
import jax
import jax.numpy as jnp


class NoisyBlock(nn.Module):
    """Adds Gaussian noise while training (its own 'noise' stream), then projects."""

    features: int
    noise_std: float = 0.1

    @nn.compact
    def __call__(self, x, train: bool = False):
        if train:
            x = x + self.noise_std * jax.random.normal(self.make_rng("noise"), x.shape)
        if self.is_initializing():
            x = jnp.zeros_like(x)  # Linen's init never looks at the values
        else:
            x = x * 2.0
        x = nn.Dense(self.features)(x)
        if train:
            keep = jax.random.bernoulli(self.make_rng("dropout"), 0.9, x.shape)
            x = jnp.where(keep, x / 0.9, 0.0)
        return x


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = NoisyBlock(8)(x, train)
        return NoisyBlock(2, noise_std=0.2)(nn.relu(x), train=train)
'''
EXAMPLE = "Net()(jnp.ones((2, 4)), train=False)"


@pytest.fixture(scope="module")
def result():
    result = convert.convert_source(SOURCE, [EXAMPLE])
    assert result.ok, result.report()
    return result


def test_make_rng_becomes_a_stream_the_class_keeps(result, tmp_path):
    assert result.kept == []
    assert ruff(result.code, tmp_path) == ""
    code = result.code
    assert "self.noise_rngs = rngs.noise.fork()\n" in code
    assert "self.dropout_rngs = rngs.dropout.fork()\n" in code
    assert "jax.random.normal(self.noise_rngs(), x.shape)" in code
    assert "jax.random.bernoulli(self.dropout_rngs(), 0.9, x.shape)" in code
    assert "make_rng" not in code


def test_the_init_only_branch_goes(result):
    code = result.code
    assert "is_initializing" not in code and "zeros_like" not in code
    assert "        x = x * 2.0\n        x = self.linear(x)\n" in code  # the else branch, dedented


def test_the_streams_draw_new_keys_per_call(result, tmp_path):
    mod = load(result.code, tmp_path, "rng_nnx")
    model = mod.Net(rngs=nnx.Rngs(0, noise=1))  # a stream of its own, or the default one
    x = jnp.ones((2, 4))
    eval_a, eval_b = model(x), model(x)
    np.testing.assert_array_equal(eval_a, eval_b)  # no draw without train
    train_a, train_b = model(x, train=True), model(x, train=True)
    assert not np.allclose(train_a, eval_a) and not np.allclose(train_a, train_b)
    count = model.noisy_block1.noise_rngs.count[...]
    assert int(count) == 2  # one key per training call
    model = mod.Net(rngs=nnx.Rngs(0))  # no 'noise' stream: the default one serves
    assert model(x, train=True).shape == (2, 2)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("        key = self.make_rng(STREAM)\n", "a stream not named by a literal"),
        ("        key = self.make_rng('noise', 2)\n", "other arguments than a stream name"),
    ],
)
def test_make_rng_that_does_not_convert_keeps_the_class_as_linen(body, reason):
    source = (
        "import flax.linen as nn\nimport jax\nimport jax.numpy as jnp\n\nSTREAM = 'noise'\n\n\n"
        "class Inner(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x, train: bool = False):\n"
        "        if train:\n"
        f"    {body}"
        "            x = x + jax.random.normal(key, x.shape)\n"
        "        return nn.Dense(2)(x)\n\n\n"
        "class Net(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return Inner()(nn.Dense(3)(x))\n"
    )
    result = convert.convert_source(source, ["Net()(jnp.ones((1, 4)))"])
    assert result.ok, result.report()
    (kept,) = result.kept
    assert kept.name == "Inner" and reason in kept.reason


def test_make_rng_in_a_setup_class_keeps_it_as_linen():
    source = (
        "import flax.linen as nn\nimport jax\n\n\n"
        "class Inner(nn.Module):\n"
        "    def setup(self):\n"
        "        self.dense = nn.Dense(2)\n\n"
        "    def __call__(self, x, train: bool = False):\n"
        "        if train:\n"
        "            x = x + jax.random.normal(self.make_rng('noise'), x.shape)\n"
        "        return self.dense(x)\n\n\n"
        "class Net(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return Inner()(nn.Dense(3)(x))\n"
    )
    result = convert.convert_source(source, ["Net()(jnp.ones((1, 4)))"])
    assert result.ok, result.report()
    (kept,) = result.kept
    assert "self.make_rng(...) in a setup() class is not converted yet" in kept.reason
