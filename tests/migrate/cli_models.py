"""Small models for the command line tests: a language model with boxed parameters.

Its first layer is an ``nn.Embed`` (so integer samples must range over the vocabulary) and its
parameters are boxed by ``nn.with_partitioning`` / ``nn.with_logical_partitioning``, as in
lm1b- or T5X-style code, so Orbax stores them with a trailing ``value`` level.
"""

from flax import linen as nn
from flax import nnx

VOCAB = 1000


class LinenLM(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(
            VOCAB,
            8,
            embedding_init=nn.with_logical_partitioning(
                nn.initializers.normal(1.0), ("vocab", "embed")
            ),
        )(tokens)
        x = nn.Dense(
            16, kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), (None, "model"))
        )(x)
        return nn.Dense(4)(nn.relu(x))


class NNXLM(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.embed = nnx.Embed(VOCAB, 8, rngs=rngs)
        self.hidden = nnx.Linear(8, 16, rngs=rngs)
        self.out = nnx.Linear(16, 4, rngs=rngs)

    def __call__(self, tokens):
        return self.out(nnx.relu(self.hidden(self.embed(tokens))))


def linen_lm():
    return LinenLM()


def nnx_lm():
    return NNXLM(nnx.Rngs(3))
