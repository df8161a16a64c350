"""A small image classifier built from nn.Sequential stacks, as quick baselines are written:
a convolutional stem, a pooled feature vector and an MLP head."""

# example: Classifier(width=16, num_classes=10)(jnp.ones((2, 8, 8, 3)))

import flax.linen as nn
import jax.numpy as jnp


class Stem(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
        # two 3x3 convolutions, the second one strided
        return nn.Sequential([
            nn.Conv(self.width, (3, 3)),
            nn.gelu,
            nn.LayerNorm(),
            nn.Conv(2 * self.width, (3, 3), strides=2),
            nn.relu,
        ])(x)


class Classifier(nn.Module):
    width: int
    num_classes: int
    hidden: int = 32

    @nn.compact
    def __call__(self, x):
        x = Stem(self.width)(x)
        x = jnp.mean(x, axis=(1, 2))
        head = nn.Sequential(
            [nn.Dense(self.hidden), nn.silu, nn.Dense(self.num_classes)], name="head"
        )
        return head(x)
