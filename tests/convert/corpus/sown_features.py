"""Feature extraction with sow: a small ViT-style encoder that records each block's
activations and a running sum of attention-free token norms, as probing code reads them."""

# example: Probed(depth=2, width=16)(jnp.ones((2, 5, 8)))

import flax.linen as nn
import jax.numpy as jnp


class MlpBlock(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x)
        h = nn.Dense(self.width)(h)
        # what a linear probe reads
        self.sow("intermediates", "hidden", h)
        self.sow(
            "intermediates", "norm_sum", jnp.linalg.norm(h, axis=-1).sum(),
            reduce_fn=lambda prev, new: prev + new, init_fn=lambda: jnp.zeros(()),
        )
        return x + nn.Dense(x.shape[-1])(nn.gelu(h))


class Probed(nn.Module):
    depth: int
    width: int

    @nn.compact
    def __call__(self, x):
        for _ in range(self.depth):
            x = MlpBlock(self.width)(x)
        self.sow("intermediates", "final", x)
        return nn.Dense(3, name="head")(x.mean(axis=1))
