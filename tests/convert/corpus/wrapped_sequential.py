"""A model with a part the converter keeps as Linen (a train/eval switch inside nn.Sequential)."""

# example: Model(hidden=8)(jnp.ones((2, 4)))

import flax.linen as nn


class Head(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x):
        return nn.Sequential(
            [nn.Dense(self.hidden), nn.relu, nn.Dropout(0.1, deterministic=True), nn.Dense(2)]
        )(x)


class Model(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(self.hidden)(x)
        return Head(self.hidden, name="head")(x)
