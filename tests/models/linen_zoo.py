"""Small real Linen models shared by the tests: tiny shapes, so they compile and run fast.

Each model comes as a :class:`ZooCase` that says how to build it, a sample batch, the call
keyword arguments for evaluation and training, the loss, which collections a training step
updates, and whether it needs a ``dropout`` rng.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

__all__ = [
    "ResNet",
    "TransformerEncoder",
    "AutoEncoder",
    "ScanRNN",
    "ZooCase",
    "ZOO",
]


class ResBlock(nn.Module):
    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
        y = nn.Conv(self.features, (3, 3), strides=self.strides, use_bias=False)(x)
        y = nn.relu(norm()(y))
        y = nn.Conv(self.features, (3, 3), use_bias=False)(y)
        y = norm(scale_init=nn.initializers.zeros)(y)
        if x.shape[-1] != self.features or self.strides != 1:
            x = nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False)(x)
            x = norm()(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """A stem and one residual block with BatchNorm (``batch_stats``) and a ``train`` flag."""

    num_classes: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3), use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
        x = ResBlock(8, strides=2)(x, train)
        return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


class EncoderBlock(nn.Module):
    dim: int
    heads: int
    rate: float

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.LayerNorm()(x)
        y = nn.MultiHeadDotProductAttention(num_heads=self.heads, dropout_rate=self.rate)(
            y, deterministic=not train
        )
        x = x + nn.Dropout(self.rate, deterministic=not train)(y)
        y = nn.Dense(2 * self.dim)(nn.LayerNorm()(x))
        y = nn.Dense(self.dim)(nn.gelu(y))
        return x + nn.Dropout(self.rate, deterministic=not train)(y)


class TransformerEncoder(nn.Module):
    """Token classifier: embedding, learned positions, encoder blocks with dropout."""

    vocab: int = 11
    dim: int = 8
    heads: int = 2
    layers: int = 1
    rate: float = 0.3
    num_classes: int = 3

    @nn.compact
    def __call__(self, tokens, train: bool = False):
        x = nn.Embed(self.vocab, self.dim)(tokens)
        pos = self.param("pos", nn.initializers.normal(0.02), (tokens.shape[-1], self.dim))
        x = nn.Dropout(self.rate, deterministic=not train)(x + pos)
        for _ in range(self.layers):
            x = EncoderBlock(self.dim, self.heads, self.rate)(x, train)
        x = nn.LayerNorm()(x)
        return nn.Dense(self.num_classes)(jnp.mean(x, axis=1))


class AutoEncoder(nn.Module):
    """An MLP autoencoder with ``encode``/``decode`` methods next to ``__call__``."""

    latent: int = 2
    features: int = 6

    def setup(self):
        self.encoder = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(self.latent)])
        self.decoder = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(self.features)])

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def __call__(self, x):
        return self.decode(self.encode(x))


class RNNCell(nn.Module):
    features: int

    @nn.compact
    def __call__(self, h, x):
        h = nn.tanh(nn.Dense(self.features)(x) + nn.Dense(self.features, use_bias=False)(h))
        return h, h


class ScanRNN(nn.Module):
    """An Elman RNN over time, built with ``nn.scan`` (parameters broadcast over steps)."""

    features: int = 5

    @nn.compact
    def __call__(self, xs):
        scan = nn.scan(
            RNNCell,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=1,
            out_axes=1,
        )
        h0 = jnp.zeros((xs.shape[0], self.features), xs.dtype)
        h, _ = scan(self.features)(h0, xs)
        return nn.Dense(1)(h)


def _cross_entropy(logits, labels):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], -1))


def _mse(pred, target):
    return jnp.mean((pred - target) ** 2)


@dataclasses.dataclass(frozen=True)
class ZooCase:
    """How a test builds, feeds and trains one zoo model."""

    name: str
    make: Callable[[], nn.Module]
    batch: Callable[[], tuple[Any, Any]]
    loss: Callable[[Any, Any], jax.Array]
    eval_kwargs: dict = dataclasses.field(default_factory=dict)
    train_kwargs: dict = dataclasses.field(default_factory=dict)
    mutable: tuple[str, ...] = ()
    dropout: bool = False

    def __repr__(self) -> str:
        return self.name


def _images():
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    return x, jnp.array([0, 1, 2, 1])


def _tokens():
    x = jax.random.randint(jax.random.key(2), (3, 5), 0, 11)
    return x, jnp.array([0, 2, 1])


def _vectors():
    x = jax.random.normal(jax.random.key(3), (4, 6))
    return x, x


def _sequences():
    xs = jax.random.normal(jax.random.key(4), (3, 4, 2))
    return xs, jnp.sum(xs, axis=(1, 2))[:, None]


ZOO: tuple[ZooCase, ...] = (
    ZooCase(
        "resnet",
        ResNet,
        _images,
        _cross_entropy,
        eval_kwargs={"train": False},
        train_kwargs={"train": True},
        mutable=("batch_stats",),
    ),
    ZooCase(
        "transformer",
        TransformerEncoder,
        _tokens,
        _cross_entropy,
        eval_kwargs={"train": False},
        train_kwargs={"train": True},
        dropout=True,
    ),
    ZooCase("autoencoder", AutoEncoder, _vectors, _mse),
    ZooCase("scan_rnn", ScanRNN, _sequences, _mse),
)
