"""Small models and the values built from them, shared by the cases.

Builders that are costly and whose results are immutable (a plan, Linen variables) are cached;
every call still returns new containers, so one case cannot leak into the next even if it
mutated what it was given (which the suite would report anyway).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax import nnx

import linnx
from linnx import migrate

X = jnp.ones((2, 3))


class Net(nn.Module):
    """The Linen model: a Dense layer and a BatchNorm, with a training flag."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(4)(x)
        return nn.BatchNorm(use_running_average=not train)(x)


class Port(nnx.Module):
    """Its hand-written NNX port."""

    def __init__(self, seed: int = 0, features: int = 4):
        rngs = nnx.Rngs(seed)
        self.fc = nnx.Linear(3, features, rngs=rngs)
        self.norm = nnx.BatchNorm(features, rngs=rngs)

    def __call__(self, x):
        return self.norm(self.fc(x))


class Other(nnx.Module):
    """An NNX model of another structure."""

    def __init__(self, seed: int = 0):
        self.proj = nnx.Linear(3, 4, rngs=nnx.Rngs(seed))

    def __call__(self, x):
        return self.proj(x)


def fresh(tree):
    """New containers around the same (immutable) arrays."""
    return jax.tree.map(lambda a: a, tree)


@functools.cache
def _linen_variables():
    return Net().init(jax.random.key(0), X)


def linen_variables():
    return fresh(_linen_variables())


@functools.cache
def plan() -> migrate.Plan:
    return migrate.match(Net(), Port(), X, linen_kwargs={"train": False})


def optimizer(model: nnx.Module) -> nnx.Optimizer:
    return nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)


@functools.cache
def _linen_opt_state():
    params = _linen_variables()["params"]
    tx = optax.adam(1e-3)
    grads = jax.tree.map(jnp.ones_like, params)
    return tx.update(grads, tx.init(params), params)[1]


def linen_opt_state():
    return fresh(_linen_opt_state())


def with_leaf(tree, path: tuple, value):
    """A copy of a nested dict with ``value`` at ``path``."""
    out = dict(tree)
    if len(path) == 1:
        out[path[0]] = value
    else:
        out[path[0]] = with_leaf(tree[path[0]], path[1:], value)
    return out


def dense_tonnx() -> linnx.ToNNX:
    """A Linen Dense(4) inside NNX, initialized on inputs of 3 features."""
    return linnx.ToNNX(nn.Dense(4), rngs=nnx.Rngs(0)).lazy_init(X)


class DropoutDense(nn.Module):
    """A Linen module that needs the 'dropout' stream."""

    @nn.compact
    def __call__(self, x):
        return nn.Dropout(0.5, deterministic=False)(nn.Dense(4)(x))


class TwoWrappers(nnx.Module):
    """Two ToNNX children; the second needs a stream it is not given."""

    def __init__(self):
        self.first = linnx.ToNNX(nn.Dense(4), rngs=nnx.Rngs(0))
        self.second = linnx.ToNNX(DropoutDense(), rngs=None)

    def __call__(self, x):
        return self.second(self.first(x))


@functools.cache
def _tolinen_variables():
    return linnx.ToLinen(nnx.Linear, args=(3, 4)).init(jax.random.key(0), X)


def tolinen_variables():
    return fresh(_tolinen_variables())
