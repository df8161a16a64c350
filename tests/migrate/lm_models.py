"""A small lm1b-style decoder (embedding, pre-norm self-attention with attention dropout,
MLP with dropout, tied logits) in Linen, and its hand-written NNX port."""

import jax.numpy as jnp
from flax import linen as nn
from flax import nnx

VOCAB, EMBED, HEADS, MLP, LAYERS = 11, 8, 2, 16, 2


class LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool):
        y = nn.LayerNorm()(x)
        y = nn.MultiHeadDotProductAttention(HEADS, dropout_rate=0.3, broadcast_dropout=False)(
            y, mask=mask, deterministic=deterministic
        )
        x = x + nn.Dropout(0.2)(y, deterministic=deterministic)
        y = nn.LayerNorm()(x)
        y = nn.Dense(EMBED)(nn.gelu(nn.Dense(MLP)(y)))
        return x + nn.Dropout(0.2)(y, deterministic=deterministic)


class LinenLM(nn.Module):
    @nn.compact
    def __call__(self, tokens, *, train: bool = False):
        embed = nn.Embed(VOCAB, EMBED)
        x = embed(tokens)
        mask = nn.make_causal_mask(tokens)
        for _ in range(LAYERS):
            x = LinenBlock()(x, mask, deterministic=not train)
        return embed.attend(nn.LayerNorm()(x))


class NnxBlock(nnx.Module):
    def __init__(self, rngs, embed=EMBED):
        self.ln1 = nnx.LayerNorm(embed, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            HEADS,
            embed,
            dropout_rate=0.3,
            broadcast_dropout=False,
            decode=False,
            deterministic=False,
            rngs=rngs,
        )
        self.drop1 = nnx.Dropout(0.2, rngs=rngs)
        self.ln2 = nnx.LayerNorm(embed, rngs=rngs)
        self.up = nnx.Linear(embed, MLP, rngs=rngs)
        self.down = nnx.Linear(MLP, embed, rngs=rngs)
        self.drop2 = nnx.Dropout(0.2, rngs=rngs)

    def __call__(self, x, mask):
        x = x + self.drop1(self.attn(self.ln1(x), mask=mask))
        y = self.down(nnx.gelu(self.up(self.ln2(x))))
        return x + self.drop2(y)


class NnxLM(nnx.Module):
    """The port; ``embed`` other than ``EMBED`` builds it with the wrong width."""

    def __init__(self, rngs, embed=EMBED):
        self.embed = nnx.Embed(VOCAB, embed, rngs=rngs)
        self.blocks = nnx.List([NnxBlock(rngs, embed) for _ in range(LAYERS)])
        self.ln_f = nnx.LayerNorm(embed, rngs=rngs)

    def __call__(self, tokens):
        x = self.embed(tokens)
        mask = nnx.make_causal_mask(tokens)
        for block in self.blocks:
            x = block(x, mask)
        return self.embed.attend(self.ln_f(x))


TOKENS = jnp.array([[1, 5, 3, 7, 2, 9], [4, 4, 8, 1, 10, 6]])
