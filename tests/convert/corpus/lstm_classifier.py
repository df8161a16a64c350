"""An LSTM text classifier in the style of Flax's SST-2 example: token embeddings with
dropout, an LSTM over time that stops at each sequence's length, and an MLP head on the
final hidden state."""

# example: TextClassifier(vocab_size=50, embedding_size=8, hidden_size=16, num_classes=2)(jnp.ones((2, 7), jnp.int32), jnp.array([7, 4]), deterministic=True)

import flax.linen as nn


class MLP(nn.Module):
    """A hidden tanh layer with dropout, then the output layer."""

    hidden_size: int
    output_size: int
    dropout_rate: float = 0.1

    @nn.compact
    def __call__(self, inputs, deterministic: bool):
        hidden = nn.Dense(self.hidden_size, name="hidden")(inputs)
        hidden = nn.tanh(hidden)
        hidden = nn.Dropout(self.dropout_rate)(hidden, deterministic=deterministic)
        return nn.Dense(self.output_size, name="output")(hidden)


class TextClassifier(nn.Module):
    """Embeds the tokens, runs the LSTM, classifies its last valid hidden state."""

    vocab_size: int
    embedding_size: int
    hidden_size: int
    num_classes: int
    dropout_rate: float = 0.1

    @nn.compact
    def __call__(self, token_ids, lengths, deterministic: bool):
        embedded = nn.Embed(self.vocab_size, self.embedding_size, name="embedder")(token_ids)
        embedded = nn.Dropout(self.dropout_rate)(embedded, deterministic=deterministic)
        # The carry of an LSTM is (cell state, hidden state).
        (_, final_hidden), _ = nn.RNN(
            nn.LSTMCell(self.hidden_size), return_carry=True, name="encoder"
        )(embedded, seq_lengths=lengths)
        classifier = MLP(self.hidden_size, self.num_classes, self.dropout_rate, name="classifier")
        return classifier(final_hidden, deterministic=deterministic)
