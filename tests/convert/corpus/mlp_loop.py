"""An MLP whose hidden sizes come from a field: Dense layers created in a loop."""

# example: MLP(features=(32, 16, 4))(jnp.ones((3, 10)))
# example: MLP(features=(8, 2), activation=nn.tanh)(jnp.ones((1, 5)))

from collections.abc import Callable, Sequence

import flax.linen as nn


class MLP(nn.Module):
    features: Sequence[int]
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, x):
        for feat in self.features[:-1]:
            x = self.activation(nn.Dense(feat)(x))
        # The last layer has no activation: logits.
        x = nn.Dense(self.features[-1])(x)
        return x
