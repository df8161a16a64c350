"""A Transformer encoder (BERT-style): token and position embeddings, attention, MLP blocks."""

# example: Encoder(vocab_size=50, num_layers=2, num_heads=2, emb_dim=16, mlp_dim=32)(jnp.ones((2, 7), jnp.int32), deterministic=True)

import flax.linen as nn


class MlpBlock(nn.Module):
    """Transformer MLP / feed-forward block."""

    mlp_dim: int
    dropout_rate: float = 0.1

    @nn.compact
    def __call__(self, inputs, deterministic: bool):
        x = nn.Dense(self.mlp_dim)(inputs)
        x = nn.gelu(x)
        x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)
        output = nn.Dense(inputs.shape[-1])(x)
        output = nn.Dropout(rate=self.dropout_rate)(output, deterministic=deterministic)
        return output


class EncoderBlock(nn.Module):
    """Pre-norm Transformer encoder layer."""

    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.1

    @nn.compact
    def __call__(self, inputs, deterministic: bool):
        x = nn.LayerNorm()(inputs)
        x = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            dropout_rate=self.dropout_rate,
            deterministic=deterministic,
        )(x, x)
        x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)
        x = x + inputs

        y = nn.LayerNorm()(x)
        y = MlpBlock(mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate)(y, deterministic)
        return x + y


class Encoder(nn.Module):
    """Token embeddings, learned position embeddings, and a stack of encoder blocks."""

    vocab_size: int
    num_layers: int
    num_heads: int
    emb_dim: int
    mlp_dim: int
    max_len: int = 64
    dropout_rate: float = 0.1

    @nn.compact
    def __call__(self, tokens, deterministic: bool = True):
        x = nn.Embed(self.vocab_size, self.emb_dim, name="embed")(tokens)
        pos = self.param(
            "pos_embedding",
            nn.initializers.normal(stddev=0.02),
            (1, self.max_len, self.emb_dim),
        )
        x = x + pos[:, : tokens.shape[1]]
        x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)
        for i in range(self.num_layers):
            x = EncoderBlock(
                num_heads=self.num_heads,
                mlp_dim=self.mlp_dim,
                dropout_rate=self.dropout_rate,
                name=f"encoderblock_{i}",
            )(x, deterministic)
        return nn.LayerNorm(name="encoder_norm")(x)
