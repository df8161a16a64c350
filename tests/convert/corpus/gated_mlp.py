"""A gated (GLU) feed-forward block with RMSNorm, as in modern language models."""

# example: GatedBlock(hidden=24, dtype=jnp.float32)(jnp.ones((2, 5, 8)))

from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class GatedMLP(nn.Module):
    hidden: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        dense = partial(
            nn.Dense, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype
        )
        gate = nn.silu(dense(self.hidden, name="gate")(x))
        up = dense(self.hidden, name="up")(x)
        return nn.Dense(x.shape[-1], use_bias=False, dtype=self.dtype, name="down")(gate * up)


class GatedBlock(nn.Module):
    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        y = nn.RMSNorm(epsilon=1e-6, name="norm")(x)
        return x + GatedMLP(self.hidden, dtype=self.dtype, name="mlp")(y)
