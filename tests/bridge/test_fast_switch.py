"""The one switch for the bridge's speed shortcuts (``linnx.bridge._fast``).

``make test`` runs tests/bridge and tests/spec a second time with ``LINNX_FAST=0``: every test
must hold on the general route too. A shortcut that does not consult the switch fails that run:
the accessors of Flax internals that only shortcuts use, and the record of coarse shortcuts
(``_fast.took``), refuse to run while the switch is off. Here: the switch itself, and one
workload of every kind run both ways and compared.
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import linnx
from linnx import _flax_internals
from linnx.bridge import _fast

X = jnp.arange(6.0).reshape(2, 3) / 6


def test_the_environment_variable_starts_with_the_switch_off() -> None:
    code = "from linnx.bridge import _fast; print(_fast.enabled())"
    env = {**os.environ, "LINNX_FAST": "0", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_switched_off_restores_the_switch() -> None:
    before = _fast.enabled()
    with _fast.switched_off():
        assert not _fast.enabled()
        assert not _flax_internals.shortcuts_allowed()
    assert _fast.enabled() is before
    assert _flax_internals.shortcuts_allowed() is before


def test_a_shortcut_that_ignores_the_switch_fails_loudly() -> None:
    module = linnx.ToNNX(nn.Dense(3), rngs=nnx.Rngs(0))
    with _fast.switched_off():
        with pytest.raises(_flax_internals.ShortcutWhileSwitchedOff, match="consult"):
            _flax_internals.set_checked_attribute(module, "x", 1, data=False)
        with pytest.raises(_flax_internals.ShortcutWhileSwitchedOff, match="consult"):
            _flax_internals.linen_context_is_plain()
        with pytest.raises(_flax_internals.ShortcutWhileSwitchedOff, match="new-shortcut"):
            _fast.took("new-shortcut")


class Net(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.linear = nnx.Linear(3, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.inner = linnx.ToNNX(nn.Dense(2), rngs=rngs)

    def __call__(self, x):
        return self.inner(self.drop(self.bn(self.linear(x))))


class ConvBN(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.BatchNorm(use_running_average=False)(nn.Dense(4)(x))


def workload() -> list:
    """Outputs and state of the bridge's main routes, as plain arrays."""
    out = []
    keys = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    model = linnx.to_linen(Net)
    variables = model.init(keys, X)
    for _ in range(2):
        y, updates = model.apply(variables, X, mutable=True)
        variables = {**variables, **updates}
        out.append(y)
    out.append(
        model.apply(variables, X, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"])[0]
    )
    out.append(jax.jit(lambda v: model.apply(v, X, mutable=True)[0])(variables))
    tonnx = linnx.lazy_init(linnx.ToNNX(ConvBN(), rngs=nnx.Rngs(0)), X)
    for _ in range(2):
        out.append(tonnx(X, mutable=["batch_stats"]))
    out.append(nnx.state(tonnx))
    out.append({k: v for k, v in variables.items() if k != "nnx"})

    def plain(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    return [plain(x) for x in jax.tree.leaves(out)]


def test_both_routes_agree_and_the_general_one_takes_no_shortcut() -> None:
    before = _fast.enabled()
    _fast.set_enabled(True)
    try:
        taken = dict(_fast.taken)
        fast = workload()
        assert dict(_fast.taken) != taken  # the shortcuts ran
        with _fast.switched_off():
            taken = dict(_fast.taken)
            general = workload()
            assert dict(_fast.taken) == taken
    finally:
        _fast.set_enabled(before)
    assert len(fast) == len(general)
    for a, b in zip(fast, general, strict=True):
        np.testing.assert_array_equal(a, b)
