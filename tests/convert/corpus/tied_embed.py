"""A tiny language model with tied input/output embeddings (Embed.attend), setup() style."""

# example: TiedLM(vocab_size=40, dim=16)(jnp.ones((2, 6), jnp.int32))

import flax.linen as nn


class TiedLM(nn.Module):
    vocab_size: int
    dim: int

    def setup(self):
        self.embed = nn.Embed(self.vocab_size, self.dim)
        self.hidden = nn.Dense(self.dim)
        self.norm = nn.LayerNorm()

    def __call__(self, tokens):
        x = self.embed(tokens)
        x = nn.gelu(self.hidden(x))
        x = self.norm(x)
        # The output projection shares the embedding matrix.
        return self.embed.attend(x)
