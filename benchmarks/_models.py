"""The benchmark's models, each written twice: once in Linen and once in NNX.

Every model has the same architecture in both APIs, so the Linen version is what a ``ToNNX``
wraps and the NNX version is what a ``ToLinen`` wraps (and the native NNX baseline).

* ``mlp``: a 2-layer MLP.
* ``transformer``: 4 pre-LN transformer blocks of width 256 with dropout.
* ``convbn``: a conv + BatchNorm residual block.

Every model is built in train mode (dropout active, BatchNorm updating its statistics) or in
eval mode; :class:`ModelSpec` says which rng streams and mutable collections train mode needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx

__all__ = ["ModelSpec", "Sizes", "SIZES", "model_specs"]


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Shapes of one benchmark run (``full``/``quick`` share them; ``smoke`` is tiny)."""

    batch: int
    mlp_in: int
    mlp_hidden: int
    seq: int
    width: int
    heads: int
    blocks: int
    image: int
    channels: int


SIZES: dict[str, Sizes] = {
    "full": Sizes(
        batch=8,
        mlp_in=256,
        mlp_hidden=512,
        seq=32,
        width=256,
        heads=4,
        blocks=4,
        image=16,
        channels=32,
    ),
    "smoke": Sizes(
        batch=2, mlp_in=8, mlp_hidden=16, seq=4, width=16, heads=2, blocks=1, image=4, channels=4
    ),
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model, in both APIs, with a sample batch.

    Attributes:
        name: short name used in the table.
        linen: ``linen(train)`` returns the Linen module instance.
        nnx_class: the NNX module class; ``nnx_class(*nnx_args, train=..., rngs=...)``.
        nnx_args: positional constructor arguments of ``nnx_class``.
        x: a sample input.
        y: a regression target with the output's shape (for the training step).
        streams: rng streams train mode draws from (besides ``params``).
        mutable: Linen collections train mode updates.
    """

    name: str
    linen: Callable[[bool], nn.Module]
    nnx_class: type[nnx.Module]
    nnx_args: tuple[Any, ...]
    x: jax.Array
    y: jax.Array
    streams: tuple[str, ...] = ()
    mutable: tuple[str, ...] = ()

    def nnx_kwargs(self, train: bool) -> dict[str, Any]:
        """Keyword arguments (besides ``rngs``) of ``nnx_class`` for the given mode."""
        return {"train": train}


# -- 2-layer MLP -------------------------------------------------------------------------------


class LinenMLP(nn.Module):
    """Dense -> relu -> Dense."""

    hidden: int
    out: int
    train: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(self.out)(nn.relu(nn.Dense(self.hidden)(x)))


class NnxMLP(nnx.Module):
    """Linear -> relu -> Linear."""

    def __init__(
        self, din: int, hidden: int, out: int, *, train: bool = True, rngs: nnx.Rngs
    ) -> None:
        self.fc1 = nnx.Linear(din, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, out, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(nnx.relu(self.fc1(x)))


# -- pre-LN transformer ------------------------------------------------------------------------

_DROPOUT = 0.1


class LinenBlock(nn.Module):
    """x + Dropout(MHA(LN(x))); x + Dropout(MLP(LN(x)))."""

    width: int
    heads: int
    train: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        det = not self.train
        h = nn.MultiHeadDotProductAttention(
            num_heads=self.heads, qkv_features=self.width, deterministic=True
        )(nn.LayerNorm()(x))
        x = x + nn.Dropout(_DROPOUT, deterministic=det)(h)
        h = nn.Dense(self.width)(nn.gelu(nn.Dense(4 * self.width)(nn.LayerNorm()(x))))
        return x + nn.Dropout(_DROPOUT, deterministic=det)(h)


class LinenTransformer(nn.Module):
    """``blocks`` pre-LN blocks and a final LayerNorm."""

    width: int
    heads: int
    blocks: int
    train: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for _ in range(self.blocks):
            x = LinenBlock(self.width, self.heads, self.train)(x)
        return nn.LayerNorm()(x)


class NnxBlock(nnx.Module):
    """The NNX twin of :class:`LinenBlock`."""

    def __init__(self, width: int, heads: int, *, train: bool, rngs: nnx.Rngs) -> None:
        det = not train
        self.ln1 = nnx.LayerNorm(width, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            heads, width, qkv_features=width, decode=False, deterministic=True, rngs=rngs
        )
        self.drop1 = nnx.Dropout(_DROPOUT, deterministic=det, rngs=rngs)
        self.ln2 = nnx.LayerNorm(width, rngs=rngs)
        self.fc1 = nnx.Linear(width, 4 * width, rngs=rngs)
        self.fc2 = nnx.Linear(4 * width, width, rngs=rngs)
        self.drop2 = nnx.Dropout(_DROPOUT, deterministic=det, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.drop1(self.attn(self.ln1(x)))
        return x + self.drop2(self.fc2(nnx.gelu(self.fc1(self.ln2(x)))))


class NnxTransformer(nnx.Module):
    """The NNX twin of :class:`LinenTransformer`."""

    def __init__(
        self, width: int, heads: int, blocks: int, *, train: bool = True, rngs: nnx.Rngs
    ) -> None:
        self.blocks = nnx.List(
            [NnxBlock(width, heads, train=train, rngs=rngs) for _ in range(blocks)]
        )
        self.ln = nnx.LayerNorm(width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.blocks:
            x = block(x)
        return self.ln(x)


# -- conv + BatchNorm residual block -----------------------------------------------------------


class LinenResBlock(nn.Module):
    """relu(x + BN(Conv(relu(BN(Conv(x))))))."""

    channels: int
    train: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ura = not self.train
        h = nn.relu(nn.BatchNorm(use_running_average=ura)(nn.Conv(self.channels, (3, 3))(x)))
        h = nn.BatchNorm(use_running_average=ura)(nn.Conv(self.channels, (3, 3))(h))
        return nn.relu(x + h)


class NnxResBlock(nnx.Module):
    """The NNX twin of :class:`LinenResBlock`."""

    def __init__(self, channels: int, *, train: bool = True, rngs: nnx.Rngs) -> None:
        ura = not train
        self.conv1 = nnx.Conv(channels, channels, (3, 3), rngs=rngs)
        self.bn1 = nnx.BatchNorm(channels, use_running_average=ura, rngs=rngs)
        self.conv2 = nnx.Conv(channels, channels, (3, 3), rngs=rngs)
        self.bn2 = nnx.BatchNorm(channels, use_running_average=ura, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = nnx.relu(self.bn1(self.conv1(x)))
        return nnx.relu(x + self.bn2(self.conv2(h)))


# -- specs -------------------------------------------------------------------------------------


def model_specs(size: str = "full", names: tuple[str, ...] | None = None) -> list[ModelSpec]:
    """The benchmark models at the given size, optionally only those in ``names``."""
    s = SIZES[size]
    kx, ky = jax.random.split(jax.random.key(42))

    def data(shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
        return jax.random.normal(kx, shape), jax.random.normal(ky, shape)

    mlp_x, mlp_y = data((s.batch, s.mlp_in))
    tr_x, tr_y = data((s.batch, s.seq, s.width))
    cv_x, cv_y = data((s.batch, s.image, s.image, s.channels))
    specs = [
        ModelSpec(
            "mlp",
            lambda train: LinenMLP(s.mlp_hidden, s.mlp_in, train=train),
            NnxMLP,
            (s.mlp_in, s.mlp_hidden, s.mlp_in),
            mlp_x,
            mlp_y,
        ),
        ModelSpec(
            "transformer",
            lambda train: LinenTransformer(s.width, s.heads, s.blocks, train=train),
            NnxTransformer,
            (s.width, s.heads, s.blocks),
            tr_x,
            tr_y,
            streams=("dropout",),
        ),
        ModelSpec(
            "convbn",
            lambda train: LinenResBlock(s.channels, train=train),
            NnxResBlock,
            (s.channels,),
            cv_x,
            cv_y,
            mutable=("batch_stats",),
        ),
    ]
    if names is not None:
        unknown = set(names) - {spec.name for spec in specs}
        if unknown:
            raise ValueError(f"unknown models: {sorted(unknown)}")
        specs = [spec for spec in specs if spec.name in names]
    return specs


def mse(out: jax.Array, target: jax.Array) -> jax.Array:
    """Mean squared error, the training loss of every model."""
    return jnp.mean((out - target) ** 2)
