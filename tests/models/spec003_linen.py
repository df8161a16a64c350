"""The Linen side of every model pair in spec 003 ("Flax Linen to Flax NNX"), as written there.

Each section of the guide reuses class names (``Block`` means three different modules), so each
section lives in its own function and comes back as a namespace.
"""

from types import SimpleNamespace

import flax.linen as nn
import jax
import jax.numpy as jnp


def basic():
    """Basic Module definition: Block (Dense + Dropout) inside Model."""

    class Block(nn.Module):
        features: int

        @nn.compact
        def __call__(self, x, training: bool):
            x = nn.Dense(self.features)(x)
            x = nn.Dropout(0.5, deterministic=not training)(x)
            x = jax.nn.relu(x)
            return x

    class Model(nn.Module):
        dmid: int
        dout: int

        @nn.compact
        def __call__(self, x, training: bool):
            x = Block(self.dmid)(x, training)
            x = nn.Dense(self.dout)(x)
            return x

    return SimpleNamespace(Block=Block, Model=Model)


def collections():
    """Collections and variable types: Dense + BatchNorm + a 'counter' collection."""

    class Block(nn.Module):
        features: int

        def setup(self):
            self.dense = nn.Dense(self.features)
            self.batchnorm = nn.BatchNorm(momentum=0.99)
            self.count = self.variable("counter", "count", lambda: jnp.zeros((), jnp.int32))

        @nn.compact
        def __call__(self, x, training: bool):
            x = self.dense(x)
            x = self.batchnorm(x, use_running_average=not training)
            self.count.value += 1
            x = jax.nn.relu(x)
            return x

    return SimpleNamespace(Block=Block)


def multiple_methods():
    """Using multiple methods: the auto-encoder."""

    class AutoEncoder(nn.Module):
        embed_dim: int
        output_dim: int

        def setup(self):
            self.encoder = nn.Dense(self.embed_dim)
            self.decoder = nn.Dense(self.output_dim)

        def encode(self, x):
            return self.encoder(x)

        def decode(self, x):
            return self.decoder(x)

        def __call__(self, x):
            x = self.encode(x)
            x = self.decode(x)
            return x

    return SimpleNamespace(AutoEncoder=AutoEncoder)


def transformations():
    """Transformations: an RNN cell scanned over time with nn.scan (params broadcast)."""

    class RNNCell(nn.Module):
        hidden_size: int

        @nn.compact
        def __call__(self, carry, x):
            x = jnp.concatenate([carry, x], axis=-1)
            x = nn.Dense(self.hidden_size)(x)
            x = jax.nn.relu(x)
            return x, x

        def initial_state(self, batch_size: int):
            return jnp.zeros((batch_size, self.hidden_size))

    class RNN(nn.Module):
        hidden_size: int

        @nn.compact
        def __call__(self, x):
            rnn = nn.scan(
                RNNCell,
                variable_broadcast="params",
                split_rngs={"params": False},
                in_axes=1,
                out_axes=1,
            )(self.hidden_size)
            carry = rnn.initial_state(x.shape[0])
            carry, y = rnn(carry, x)

            return y

    return SimpleNamespace(RNNCell=RNNCell, RNN=RNN)


def scan_over_layers():
    """Scan over layers: nn.scan of Block with stacked params."""

    class Block(nn.Module):
        features: int
        training: bool

        @nn.compact
        def __call__(self, x, _):
            x = nn.Dense(self.features)(x)
            x = nn.Dropout(0.5)(x, deterministic=not self.training)
            x = jax.nn.relu(x)
            return x, None

    class MLP(nn.Module):
        features: int
        num_layers: int

        @nn.compact
        def __call__(self, x, training: bool):
            ScanBlock = nn.scan(
                Block,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                length=self.num_layers,
            )

            y, _ = ScanBlock(self.features, training)(x, None)
            return y

    return SimpleNamespace(Block=Block, MLP=MLP)
