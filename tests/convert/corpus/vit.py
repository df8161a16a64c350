"""A small ViT: patch embedding, class token and position embedding params, encoder blocks."""

# example: ViT(num_classes=5, patch_size=4, hidden_size=16, depth=2, num_heads=2)(jnp.ones((2, 16, 16, 3)), train=False)

import flax.linen as nn
import jax.numpy as jnp


class AddPositionEmbs(nn.Module):
    """Adds learned positional embeddings to the inputs."""

    posemb_init: nn.initializers.Initializer = nn.initializers.normal(stddev=0.02)

    @nn.compact
    def __call__(self, inputs):
        # The embedding has the shape of one input sequence.
        pos_emb_shape = (1, inputs.shape[1], inputs.shape[2])
        pe = self.param("pos_embedding", self.posemb_init, pos_emb_shape)
        return inputs + pe


class EncoderBlock(nn.Module):
    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, *, deterministic):
        y = nn.LayerNorm()(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, deterministic=deterministic
        )(y)
        y = nn.Dropout(rate=self.dropout_rate)(y, deterministic=deterministic)
        x = x + y
        y = nn.LayerNorm()(x)
        y = nn.Dense(self.mlp_dim)(y)
        y = nn.gelu(y)
        y = nn.Dense(x.shape[-1])(y)
        return x + y


class ViT(nn.Module):
    num_classes: int
    patch_size: int
    hidden_size: int
    depth: int
    num_heads: int

    @nn.compact
    def __call__(self, x, *, train):
        x = nn.Conv(
            self.hidden_size,
            (self.patch_size, self.patch_size),
            strides=(self.patch_size, self.patch_size),
            padding="VALID",
            name="embedding",
        )(x)
        n, h, w, c = x.shape
        x = jnp.reshape(x, [n, h * w, c])
        cls = self.param("cls", nn.initializers.zeros, (1, 1, c))
        x = jnp.concatenate([jnp.tile(cls, [n, 1, 1]), x], axis=1)
        x = AddPositionEmbs(name="posembed_input")(x)
        for lyr in range(self.depth):
            x = EncoderBlock(
                num_heads=self.num_heads, mlp_dim=4 * self.hidden_size,
                name=f"encoderblock_{lyr}",
            )(x, deterministic=not train)
        x = nn.LayerNorm(name="encoder_norm")(x)
        return nn.Dense(self.num_classes, name="head")(x[:, 0])
