"""A T5-style language model whose parameters carry logical axis names, as t5x and flaxformer
write them: ``nn.with_logical_partitioning`` initializers, a ``self.param`` position table,
flaxformer's ``param_with_axes`` norm scale, activations pinned with
``nn.with_logical_constraint``; ``LOGICAL_RULES`` maps the names onto a ('data', 'model') mesh."""

# example: PartitionedLM(vocab=32, embed=8, mlp=16, max_len=4)(jnp.ones((2, 4), jnp.int32))

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import partitioning as nn_partitioning

param_with_axes = nn_partitioning.param_with_axes

# Logical axis name -> mesh axis; applied with nn.logical_axis_rules(LOGICAL_RULES).
LOGICAL_RULES = (
    ("batch", "data"),
    ("length", None),
    ("vocab", "model"),
    ("embed", None),
    ("mlp", "model"),
)


class RmsNorm(nn.Module):
    """flaxformer's T5 layer norm: the scale is declared with ``param_with_axes``."""

    epsilon: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        features = x.shape[-1]
        scale = param_with_axes(
            "scale", nn.initializers.ones, (features,), jnp.float32, axes=("embed",)
        )
        var = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        return (x * jax.lax.rsqrt(var + self.epsilon) * scale).astype(self.dtype)


class MlpBlock(nn.Module):
    mlp: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        wi_init = nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp"))
        h = nn.Dense(self.mlp, use_bias=False, dtype=self.dtype, kernel_init=wi_init, name="wi")(x)
        h = nn.with_logical_constraint(nn.gelu(h), ("batch", "length", "mlp"))
        return nn.Dense(
            x.shape[-1],
            use_bias=False,
            dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.lecun_normal(), ("mlp", "embed"), rules=LOGICAL_RULES
            ),
            name="wo",
        )(h)


class PartitionedLM(nn.Module):
    vocab: int
    embed: int
    mlp: int
    max_len: int = 16

    @nn.compact
    def __call__(self, tokens):
        embedder = nn.Embed(
            self.vocab,
            self.embed,
            embedding_init=nn.with_logical_partitioning(
                nn.initializers.normal(stddev=1.0), ("vocab", "embed")
            ),
            name="token_embed",
        )
        x = embedder(tokens)
        pos = self.param(
            "pos_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), ("length", "embed")),
            (self.max_len, self.embed),
        )
        x = x + pos[: tokens.shape[-1]]
        x = x + MlpBlock(self.mlp, name="mlp")(RmsNorm(name="pre_mlp_norm")(x))
        x = RmsNorm(name="final_norm")(x)
        # The output projection shares the embedding matrix.
        return embedder.attend(x)
