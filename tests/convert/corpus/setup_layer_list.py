"""An MLP whose layers are a list built in setup(), applied in a loop (a common Linen idiom)."""

# example: MLP(features=(16, 8, 3))(jnp.ones((4, 5)))

from collections.abc import Sequence

import flax.linen as nn


class MLP(nn.Module):
    features: Sequence[int]
    use_norm: bool = True

    def setup(self):
        self.layers = [nn.Dense(feat) for feat in self.features]
        self.norm = nn.LayerNorm()

    def __call__(self, inputs):
        x = inputs
        for i, lyr in enumerate(self.layers):
            x = lyr(x)
            if i != len(self.layers) - 1:
                x = nn.relu(x)
        return self.norm(x) if self.use_norm else x
