"""Conv-BN-ReLU blocks with explicit dtypes and initializers (a MobileNet-like stem)."""

# example: Stem(widths=(8, 16))(jnp.ones((2, 12, 12, 3)), train=False)

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class ConvBNAct(nn.Module):
    features: int
    strides: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(
            self.features,
            kernel_size=(3, 3),
            strides=self.strides,
            use_bias=False,
            kernel_init=nn.initializers.he_normal(),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
        return nn.relu(x)


class Stem(nn.Module):
    widths: tuple[int, ...]

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i, w in enumerate(self.widths):
            x = ConvBNAct(w, strides=2 if i == 0 else 1)(x, train)
        return x
