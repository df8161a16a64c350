"""A T5-style encoder-decoder with a decode cache, written as Flax's wmt/lm1b examples write it.

The decoder's self-attention keeps its keys and values in the ``'cache'`` collection
(``self.has_variable`` / ``self.variable('cache', ...)``, a ``cache_index``), the decoder's
last block is Flax's ``nn.MultiHeadDotProductAttention(decode=...)``; ``encode`` and ``decode`` are the
methods a decoding loop calls.
"""

# example: EncoderDecoder(vocab=11, features=8, num_heads=2, depth=1)(jnp.ones((2, 5), jnp.int32), jnp.ones((2, 4), jnp.int32))

import flax.linen as nn
import jax.numpy as jnp
from jax import lax


class CachedSelfAttention(nn.Module):
    """Causal self-attention whose keys and values are cached while decoding."""

    features: int
    num_heads: int
    decode: bool = False

    @nn.compact
    def __call__(self, x):
        head_dim = self.features // self.num_heads
        heads = (*x.shape[:-1], self.num_heads, head_dim)
        q = nn.Dense(self.features, name="query")(x).reshape(heads)
        k = nn.Dense(self.features, name="key")(x).reshape(heads)
        v = nn.Dense(self.features, name="value")(x).reshape(heads)
        mask = nn.make_causal_mask(jnp.ones(x.shape[:-1]))
        if self.decode:
            is_initialized = self.has_variable("cache", "cached_key")
            cached_key = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
            cached_value = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
            cache_index = self.variable(
                "cache", "cache_index", lambda: jnp.array(0, dtype=jnp.int32)
            )
            if is_initialized:
                # one new position: write it at cache_index, attend to everything up to it
                index = cache_index.value
                k = lax.dynamic_update_slice(cached_key.value, k, (0, index, 0, 0))
                v = lax.dynamic_update_slice(cached_value.value, v, (0, index, 0, 0))
                cached_key.value = k
                cached_value.value = v
                cache_index.value = index + 1
                mask = (jnp.arange(k.shape[1]) <= index)[None, None, None, :]
        y = nn.dot_product_attention(q, k, v, mask=mask)
        return nn.Dense(self.features, name="out")(y.reshape(x.shape))


class EncoderLayer(nn.Module):
    features: int
    num_heads: int

    @nn.compact
    def __call__(self, x):
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads)(nn.LayerNorm()(x))
        h = nn.gelu(nn.Dense(2 * self.features)(nn.LayerNorm()(x)))
        return x + nn.Dense(self.features)(h)


class DecoderLayer(nn.Module):
    features: int
    num_heads: int
    decode: bool = False

    @nn.compact
    def __call__(self, x, encoded):
        x = x + CachedSelfAttention(self.features, self.num_heads, self.decode)(nn.LayerNorm()(x))
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads)(
            nn.LayerNorm()(x), encoded
        )
        h = nn.gelu(nn.Dense(2 * self.features)(nn.LayerNorm()(x)))
        return x + nn.Dense(self.features)(h)


class Encoder(nn.Module):
    features: int
    num_heads: int
    depth: int

    @nn.compact
    def __call__(self, x):
        for _ in range(self.depth):
            x = EncoderLayer(self.features, self.num_heads)(x)
        return nn.LayerNorm()(x)


class Decoder(nn.Module):
    vocab: int
    features: int
    num_heads: int
    depth: int
    decode: bool = False

    @nn.compact
    def __call__(self, x, encoded):
        for _ in range(self.depth):
            x = DecoderLayer(self.features, self.num_heads, self.decode)(x, encoded)
        # decoding, the attention masks itself with its cache index; otherwise causally
        mask = None if self.decode else nn.make_causal_mask(jnp.ones(x.shape[:-1]))
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads, decode=self.decode)(
            nn.LayerNorm()(x), mask=mask
        )
        return nn.Dense(self.vocab)(x)


class EncoderDecoder(nn.Module):
    vocab: int
    features: int
    num_heads: int
    depth: int = 2
    decoding: bool = False  # the ``decode`` field of the decoder (``decode`` is a method here)

    def setup(self):
        self.embed = nn.Embed(self.vocab, self.features)
        self.encoder = Encoder(self.features, self.num_heads, self.depth)
        self.decoder = Decoder(
            self.vocab, self.features, self.num_heads, self.depth, self.decoding
        )

    def encode(self, tokens):
        return self.encoder(self.embed(tokens))

    def decode(self, encoded, tokens):
        return self.decoder(self.embed(tokens), encoded)

    def __call__(self, inputs, targets):
        return self.decode(self.encode(inputs), targets)
