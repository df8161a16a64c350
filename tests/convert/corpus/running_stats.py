"""Custom collections: a normalizer that keeps running statistics and counts its calls."""

# example: Normalized(features=6)(jnp.ones((4, 3)), update_stats=False)

import flax.linen as nn
import jax.numpy as jnp


class RunningNorm(nn.Module):
    """Normalizes with running statistics kept in the 'stats' collection."""

    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x, update_stats: bool):
        mean = self.variable("stats", "mean", jnp.zeros, (x.shape[-1],))
        var = self.variable("stats", "var", jnp.ones, (x.shape[-1],))
        calls = self.variable("counter", "calls", lambda: jnp.zeros((), jnp.int32))
        if update_stats:
            m = self.momentum
            mean.value = m * mean.value + (1 - m) * x.mean(axis=0)
            var.value = m * var.value + (1 - m) * x.var(axis=0)
            calls.value += 1
        return (x - mean.value) / jnp.sqrt(var.value + self.epsilon)


class Normalized(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x, update_stats: bool = False):
        x = RunningNorm()(x, update_stats)
        return nn.Dense(self.features)(x)
