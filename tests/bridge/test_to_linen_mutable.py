"""``to_linen(...).apply`` never drops an update silently (issue 14, item 7).

As Linen raises ``ModifyScopeVariableError`` for a write to a collection that is not mutable,
``ToLinen`` raises :class:`linnx.MutableCollectionError` (also that Flax error) when the NNX
module changed a variable of such a collection, whether the call is a top-level ``apply`` (the
root-scope shortcut) or runs inside a Linen parent. The one documented exception: a call given
Linen ``rngs`` does not keep the module's rng state (docs/guarantees.md). Every test here
failed before the fix: the call returned with the update lost.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import linnx
from linnx.bridge import _fast

X = jnp.arange(6.0).reshape(2, 3) / 6


@pytest.fixture(params=["shortcuts", "general"])
def route(request):
    """Each test runs with the speed shortcuts on and off."""
    if request.param == "general":
        with _fast.switched_off():
            yield request.param
    else:
        before = _fast.enabled()
        _fast.set_enabled(True)
        yield request.param
        _fast.set_enabled(before)


def batchnorm():
    model = linnx.to_linen(nnx.BatchNorm, 3)
    return model, model.init(jax.random.key(0), X)


@pytest.mark.parametrize("mutable", [False, [], ["batch_stat"], ["params"]], ids=repr)
def test_train_batchnorm_without_mutable_batch_stats_raises(mutable, route):
    model, variables = batchnorm()
    with pytest.raises(linnx.MutableCollectionError, match=r"batch_stats/mean") as e:
        model.apply(variables, X, mutable=mutable)
    assert "Fix: pass mutable=['batch_stats']" in str(e.value)
    assert isinstance(e.value, flax.errors.ModifyScopeVariableError)


def test_with_mutable_batch_stats_the_update_is_returned(route):
    model, variables = batchnorm()
    _, updates = model.apply(variables, X, mutable=["batch_stats"])
    mean = updates["batch_stats"]["mean"].value
    assert not np.array_equal(mean, variables["batch_stats"]["mean"].value)


def test_eval_mode_writes_nothing_and_needs_no_mutable(route):
    model = linnx.to_linen(nnx.BatchNorm, 3, use_running_average=True)
    variables = model.init(jax.random.key(0), X)
    model.apply(variables, X)  # no error: nothing changed


def test_inside_a_linen_parent_too(route):
    class Parent(nn.Module):
        @nn.compact
        def __call__(self, x):
            return linnx.to_linen(nnx.BatchNorm, 3)(x)

    variables = Parent().init(jax.random.key(0), X)
    with pytest.raises(linnx.MutableCollectionError, match=r"batch_stats/mean"):
        Parent().apply(variables, X)
    Parent().apply(variables, X, mutable=["batch_stats"])


class Counting(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.calls = nnx.BatchStat(jnp.zeros((), jnp.int32))
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        self.calls.value += 1
        return self.drop(x)


def test_own_rng_stream_advancing_needs_mutable_rngcount(route):
    # The guide's NNX style: the module's own stream advances, so its count must be kept,
    # or every call would draw the same mask.
    model = linnx.to_linen(nnx.Dropout, 0.5)
    variables = model.init({"dropout": jax.random.key(0)}, X)
    with pytest.raises(linnx.MutableCollectionError, match=r"RngCount/rngs/dropout/count") as e:
        model.apply(variables, X)
    assert "rngs={'dropout': jax.random.key(1)}" in str(e.value)
    y1, updates = model.apply(variables, X, mutable=["RngCount"])
    y2, _ = model.apply({**variables, **updates}, X, mutable=["RngCount"])
    assert not np.array_equal(y1, y2)


def test_a_call_given_linen_keys_keeps_no_rng_state(route):
    # The guide's Linen style: the documented exception (rng state is dropped), while a
    # change to another collection still raises.
    model = linnx.to_linen(Counting)
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, X)
    with pytest.raises(linnx.MutableCollectionError, match=r"batch_stats/calls") as e:
        model.apply(variables, X, rngs={"dropout": jax.random.key(2)})
    assert "RngCount" not in str(e.value).splitlines()[0]
    y, updates = model.apply(
        variables, X, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"]
    )
    assert list(updates) == ["batch_stats"]
    again = model.apply(variables, X, rngs={"dropout": jax.random.key(2)}, mutable=True)
    np.testing.assert_array_equal(y, again[0])


def test_nothing_is_written_when_it_raises(route):
    model = linnx.to_linen(Counting)
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, X)
    before = leaves(variables)
    with pytest.raises(linnx.MutableCollectionError):
        model.apply(variables, X, mutable=["RngCount"])  # `calls` changes too
    for a, b in zip(before, leaves(variables), strict=True):
        np.testing.assert_array_equal(a, b)


def leaves(variables):
    def plain(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    return [plain(x) for x in jax.tree.leaves(variables)]
