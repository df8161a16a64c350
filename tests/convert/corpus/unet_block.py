"""A U-Net style down/up block: Conv + GroupNorm + swish, and a ConvTranspose upsampler."""

# example: UpDown(channels=8)(jnp.ones((2, 16, 16, 4)))

import flax.linen as nn


class ConvBlock(nn.Module):
    channels: int
    groups: int = 4

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.channels, (3, 3), padding="SAME")(x)
        x = nn.GroupNorm(num_groups=self.groups)(x)
        return nn.swish(x)


class UpDown(nn.Module):
    channels: int

    @nn.compact
    def __call__(self, x):
        h = ConvBlock(self.channels, name="down")(x)
        h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = ConvBlock(self.channels * 2, name="mid")(h)
        h = nn.ConvTranspose(self.channels, (2, 2), strides=(2, 2), name="up")(h)
        return ConvBlock(self.channels, name="out")(h)
