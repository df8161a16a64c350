"""A ViT in the style of big_vision: the encoder scans a rematerialized block over depth."""

import flax.linen as nn
import jax
import jax.numpy as jnp


class MlpBlock(nn.Module):
    """Transformer MLP / feed-forward block."""

    mlp_dim: int | None = None  # Defaults to 4x input dim
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, deterministic=True):
        d = x.shape[-1]
        x = nn.Dense(self.mlp_dim or 4 * d)(x)
        x = nn.gelu(x)
        x = nn.Dropout(rate=self.dropout)(x, deterministic=deterministic)
        x = nn.Dense(d)(x)
        return x


class Encoder1DBlock(nn.Module):
    """Single transformer encoder block (MHSA + MLP)."""

    mlp_dim: int | None = None
    num_heads: int = 12
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, deterministic=True):
        y = nn.LayerNorm()(x)
        y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads)(y, y, deterministic=deterministic)
        y = nn.Dropout(rate=self.dropout)(y, deterministic=deterministic)
        x = x + y

        y = nn.LayerNorm()(x)
        y = MlpBlock(mlp_dim=self.mlp_dim, dropout=self.dropout)(y, deterministic)
        y = nn.Dropout(rate=self.dropout)(y, deterministic=deterministic)
        x = x + y
        return x, None


class Encoder(nn.Module):
    """Transformer model encoder for sequence to sequence translation."""

    depth: int
    mlp_dim: int | None = None
    num_heads: int = 12
    dropout: float = 0.0
    remat_policy: str = "nothing_saveable"

    @nn.compact
    def __call__(self, x, deterministic=True):
        # Input Encoder: the blocks share one compiled body (nn.scan over depth).
        block = nn.remat(
            Encoder1DBlock,
            prevent_cse=False,
            static_argnums=(2,),  # 0=self, 2=deterministic
            policy=getattr(jax.checkpoint_policies, self.remat_policy, None),
        )
        x, _ = nn.scan(
            block,
            variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=nn.broadcast,
            length=self.depth,
        )(name="encoderblock", mlp_dim=self.mlp_dim, num_heads=self.num_heads,
          dropout=self.dropout)(x, deterministic)
        return nn.LayerNorm(name="encoder_norm")(x)


class VisionTransformer(nn.Module):
    """ViT model."""

    num_classes: int
    patch_size: tuple = (4, 4)
    width: int = 16
    depth: int = 2
    mlp_dim: int | None = None
    num_heads: int = 2
    dropout: float = 0.0

    @nn.compact
    def __call__(self, image, *, train=False):
        x = nn.Conv(self.width, self.patch_size, strides=self.patch_size, padding="VALID",
                    name="embedding")(image)
        n, h, w, c = x.shape
        x = jnp.reshape(x, [n, h * w, c])
        x = x + self.param("pos_embedding", nn.initializers.normal(stddev=0.02), (1, h * w, c))
        x = nn.Dropout(rate=self.dropout)(x, deterministic=not train)
        x = Encoder(depth=self.depth, mlp_dim=self.mlp_dim, num_heads=self.num_heads,
                    dropout=self.dropout, name="Transformer")(x, deterministic=not train)
        x = jnp.mean(x, axis=1)
        return nn.Dense(self.num_classes, name="head")(x)


# example: VisionTransformer(num_classes=10, dropout=0.1)(jnp.ones((2, 8, 8, 3)), train=False)
