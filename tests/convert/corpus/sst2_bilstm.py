"""The bidirectional LSTM of Flax's SST-2 example: the LSTM is an nn.scan of a cell over the
time axis (parameters broadcast), run forward and on the reversed sequences, with the carry
built by the module's own initialize_carry."""

# example: TextClassifier(vocab_size=40, embedding_size=8, hidden_size=6, num_classes=3)(jnp.ones((2, 5), jnp.int32), jnp.array([5, 3]), deterministic=True)

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


def flip_sequences(inputs, lengths):
    """Reverses each sequence within its length (padding stays at the end)."""
    max_length = inputs.shape[1]
    idxs = (jnp.arange(max_length - 1, -1, -1)[None, :] + lengths[:, None]) % max_length
    return jnp.take_along_axis(inputs, idxs[:, :, None], axis=1)


class SimpleLSTM(nn.Module):
    """A simple unidirectional LSTM."""

    hidden_size: int

    @functools.partial(
        nn.transforms.scan,
        variable_broadcast="params",
        in_axes=1,
        out_axes=1,
        split_rngs={"params": False},
    )
    @nn.compact
    def __call__(self, carry, x):
        return nn.OptimizedLSTMCell(self.hidden_size)(carry, x)

    def initialize_carry(self, input_shape):
        # Use fixed random key since default state init fn is just zeros.
        return nn.OptimizedLSTMCell(self.hidden_size, parent=None).initialize_carry(
            jax.random.key(0), input_shape
        )


class SimpleBiLSTM(nn.Module):
    """A simple bi-directional LSTM."""

    hidden_size: int

    def setup(self):
        self.forward_lstm = SimpleLSTM(self.hidden_size)
        self.backward_lstm = SimpleLSTM(self.hidden_size)

    def __call__(self, embedded_inputs, lengths):
        # Forward LSTM.
        initial_state = self.forward_lstm.initialize_carry(embedded_inputs[:, 0].shape)
        _, forward_outputs = self.forward_lstm(initial_state, embedded_inputs)

        # Backward LSTM.
        reversed_inputs = flip_sequences(embedded_inputs, lengths)
        initial_state = self.backward_lstm.initialize_carry(reversed_inputs[:, 0].shape)
        _, backward_outputs = self.backward_lstm(initial_state, reversed_inputs)
        backward_outputs = flip_sequences(backward_outputs, lengths)

        # Concatenate the forward and backward representations.
        return jnp.concatenate([forward_outputs, backward_outputs], -1)


class TextClassifier(nn.Module):
    """Embeds the tokens, encodes them with the BiLSTM, classifies the last valid step."""

    vocab_size: int
    embedding_size: int
    hidden_size: int
    num_classes: int
    dropout_rate: float = 0.5

    @nn.compact
    def __call__(self, token_ids, lengths, deterministic: bool):
        embedded = nn.Embed(self.vocab_size, self.embedding_size, name="embedder")(token_ids)
        embedded = nn.Dropout(self.dropout_rate)(embedded, deterministic=deterministic)
        encoded = SimpleBiLSTM(self.hidden_size, name="encoder")(embedded, lengths)
        last = jnp.take_along_axis(encoded, (lengths - 1)[:, None, None], axis=1)[:, 0]
        return nn.Dense(self.num_classes, name="output")(last)
