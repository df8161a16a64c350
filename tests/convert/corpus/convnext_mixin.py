"""ConvNeXt-style blocks as vision code bases write them: a mixin base class with the
residual helper, ``@nn.nowrap`` factories for the pointwise layers, an optional projection
switched by a field and a dropout only in training."""

# example: TinyConvNeXt(dims=(8, 16))(jnp.ones((2, 8, 8, 3)), train=False)

import flax.linen as nn
import jax.numpy as jnp


class ResidualMixin(nn.Module):
    """What every block shares: the residual scale and how the branch joins."""

    branch_scale: float = 1.0

    def residual(self, x, y):
        return x + self.branch_scale * y


class ConvNeXtBlock(ResidualMixin):
    dim: int = 8
    mlp_ratio: int = 4
    use_proj: bool = False
    drop_rate: float = 0.1

    @nn.nowrap
    def _pointwise(self, features):
        return nn.Dense(features, kernel_init=nn.initializers.truncated_normal(0.02))

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = nn.Conv(self.dim, (7, 7), feature_group_count=self.dim, padding="SAME")(x)
        y = nn.LayerNorm(epsilon=1e-6)(y)
        y = nn.gelu(self._pointwise(self.mlp_ratio * self.dim)(y))
        y = self._pointwise(self.dim)(y)
        if train:
            y = nn.Dropout(self.drop_rate, deterministic=False)(y)
        if self.use_proj:
            x = nn.Dense(self.dim, name="proj")(x)
        return self.residual(x, y)


class TinyConvNeXt(nn.Module):
    dims: tuple = (8, 16)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.dims[0], (2, 2), strides=(2, 2), name="stem")(x)
        x = ConvNeXtBlock(dim=self.dims[0], branch_scale=0.5)(x, train=train)
        x = nn.Conv(self.dims[1], (2, 2), strides=(2, 2), name="down")(x)
        x = ConvNeXtBlock(dim=self.dims[1])(x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(nn.LayerNorm()(x))
