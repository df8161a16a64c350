"""A small Linen ResNet with BatchNorm, its hand-written NNX port, and CLI factories.

The Linen model follows the usual Flax style (``functools.partial`` conv/norm factories, a
``train`` call argument, auto-named blocks); the NNX port renames everything (``conv1``,
``bn1``, ``blocks/0``...), as a person porting it by hand would. The factories are what
``linnx migrate-weights --linen resnet_models:linen_resnet --nnx resnet_models:nnx_resnet``
loads.
"""

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import optax
from flax import nnx

STAGES = (1, 1)
FILTERS = 4
CLASSES = 3
IMAGE = (8, 8, 3)
MOMENTUM = 0.9


class LinenBlock(nn.Module):
    filters: int
    conv: Any
    norm: Any
    strides: tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x):
        residual = x
        y = self.conv(self.filters, (3, 3), self.strides)(x)
        y = nn.relu(self.norm()(y))
        y = self.conv(self.filters, (3, 3))(y)
        y = self.norm()(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)
        return nn.relu(residual + y)


class LinenResNet(nn.Module):
    stage_sizes: Sequence[int] = STAGES
    num_filters: int = FILTERS
    num_classes: int = CLASSES

    @nn.compact
    def __call__(self, x, train: bool = True):
        conv = partial(nn.Conv, use_bias=False)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=MOMENTUM)
        x = nn.relu(norm(name="bn_init")(conv(self.num_filters, (3, 3), name="conv_init")(x)))
        for i, size in enumerate(self.stage_sizes):
            for j in range(size):
                strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                x = LinenBlock(self.num_filters * 2**i, conv, norm, strides)(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)


class NnxBlock(nnx.Module):
    def __init__(self, in_features, filters, strides, *, momentum=MOMENTUM, rngs):
        conv = partial(nnx.Conv, use_bias=False, rngs=rngs)
        norm = partial(nnx.BatchNorm, momentum=momentum, rngs=rngs)
        self.conv1 = conv(in_features, filters, (3, 3), strides=strides)
        self.bn1 = norm(filters)
        self.conv2 = conv(filters, filters, (3, 3))
        self.bn2 = norm(filters)
        if in_features != filters or strides != (1, 1):
            self.shortcut = nnx.Sequential(
                conv(in_features, filters, (1, 1), strides=strides), norm(filters)
            )
        else:
            self.shortcut = None

    def __call__(self, x):
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        residual = x if self.shortcut is None else self.shortcut(x)
        return nnx.relu(residual + y)


class NnxResNet(nnx.Module):
    def __init__(
        self,
        stage_sizes=STAGES,
        num_filters=FILTERS,
        num_classes=CLASSES,
        in_channels=IMAGE[-1],
        *,
        momentum=MOMENTUM,
        rngs,
    ):
        self.stem = nnx.Conv(in_channels, num_filters, (3, 3), use_bias=False, rngs=rngs)
        self.stem_bn = nnx.BatchNorm(num_filters, momentum=momentum, rngs=rngs)
        blocks, features = [], num_filters
        for i, size in enumerate(stage_sizes):
            for j in range(size):
                strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                filters = num_filters * 2**i
                blocks.append(NnxBlock(features, filters, strides, momentum=momentum, rngs=rngs))
                features = filters
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(features, num_classes, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.stem_bn(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(jnp.mean(x, axis=(1, 2)))


def linen_resnet():
    """CLI factory: the Linen model."""
    return LinenResNet()


def nnx_resnet():
    """CLI factory: the hand-ported NNX model."""
    return NnxResNet(rngs=nnx.Rngs(0))


def nnx_resnet_wrong_momentum():
    """CLI factory: a faulty port (BatchNorm momentum 0.5): verification must fail."""
    return NnxResNet(momentum=0.5, rngs=nnx.Rngs(0))


def make_tx():
    """CLI factory: the optimizer used for training."""
    return optax.adam(1e-2)
