"""Attention written out with DenseGeneral projections (heads as their own axis)."""

# example: Attention(num_heads=2, head_dim=4)(jnp.ones((2, 5, 12)))

import flax.linen as nn
import jax
import jax.numpy as jnp


class Attention(nn.Module):
    num_heads: int
    head_dim: int

    @nn.compact
    def __call__(self, x):
        features = (self.num_heads, self.head_dim)
        q = nn.DenseGeneral(features, name="query")(x)
        k = nn.DenseGeneral(features, name="key")(x)
        v = nn.DenseGeneral(features, name="value")(x)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(self.head_dim)
        weights = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        return nn.DenseGeneral(x.shape[-1], axis=(-2, -1), name="out")(out)
