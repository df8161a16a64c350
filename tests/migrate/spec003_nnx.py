"""The NNX side of every model pair in spec 003 ("Flax Linen to Flax NNX"), as written there.

One function per section of the guide, as in ``spec003_linen``.
"""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
from flax import nnx


def basic():
    """Basic Module definition: Block (Linear + Dropout) inside Model."""

    class Block(nnx.Module):
        def __init__(self, in_features: int, out_features: int, rngs: nnx.Rngs):
            self.linear = nnx.Linear(in_features, out_features, rngs=rngs)
            self.dropout = nnx.Dropout(0.5, rngs=rngs)

        def __call__(self, x):
            x = self.linear(x)
            x = self.dropout(x)
            x = jax.nn.relu(x)
            return x

    class Model(nnx.Module):
        def __init__(self, din: int, dmid: int, dout: int, rngs: nnx.Rngs):
            self.block = Block(din, dmid, rngs=rngs)
            self.linear = nnx.Linear(dmid, dout, rngs=rngs)

        def __call__(self, x):
            x = self.block(x)
            x = self.linear(x)
            return x

    return SimpleNamespace(Block=Block, Model=Model)


def collections():
    """Collections and variable types: Linear + BatchNorm + a Counter variable."""

    class Counter(nnx.Variable):
        pass  # noqa: E701

    class Block(nnx.Module):
        def __init__(self, in_features: int, out_features: int, rngs: nnx.Rngs):
            self.linear = nnx.Linear(in_features, out_features, rngs=rngs)
            self.batchnorm = nnx.BatchNorm(num_features=out_features, momentum=0.99, rngs=rngs)
            self.count = Counter(jnp.array(0))

        def __call__(self, x):
            x = self.linear(x)
            x = self.batchnorm(x)
            self.count.value += 1
            x = jax.nn.relu(x)
            return x

    return SimpleNamespace(Counter=Counter, Block=Block)


def multiple_methods():
    """Using multiple methods: the auto-encoder."""

    class AutoEncoder(nnx.Module):
        def __init__(self, in_dim: int, embed_dim: int, output_dim: int, rngs):
            self.encoder = nnx.Linear(in_dim, embed_dim, rngs=rngs)
            self.decoder = nnx.Linear(embed_dim, output_dim, rngs=rngs)

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
    """Transformations: an RNN cell scanned over time with nnx.scan (cell broadcast)."""

    class RNNCell(nnx.Module):
        def __init__(self, input_size, hidden_size, rngs):
            self.linear = nnx.Linear(hidden_size + input_size, hidden_size, rngs=rngs)
            self.hidden_size = hidden_size

        def __call__(self, carry, x):
            x = jnp.concatenate([carry, x], axis=-1)
            x = self.linear(x)
            x = jax.nn.relu(x)
            return x, x

        def initial_state(self, batch_size: int):
            return jnp.zeros((batch_size, self.hidden_size))

    class RNN(nnx.Module):
        def __init__(self, input_size: int, hidden_size: int, rngs: nnx.Rngs):
            self.hidden_size = hidden_size
            self.cell = RNNCell(input_size, self.hidden_size, rngs=rngs)

        def __call__(self, x):
            scan_fn = lambda carry, cell, x: cell(carry, x)  # noqa: E731
            carry = self.cell.initial_state(x.shape[0])
            carry, y = nnx.scan(scan_fn, in_axes=(nnx.Carry, None, 1), out_axes=(nnx.Carry, 1))(
                carry, self.cell, x
            )

            return y

    return SimpleNamespace(RNNCell=RNNCell, RNN=RNN)


def scan_over_layers():
    """Scan over layers: blocks created with nnx.vmap, run with nnx.scan."""

    class Block(nnx.Module):
        def __init__(self, input_dim, features, rngs):
            self.linear = nnx.Linear(input_dim, features, rngs=rngs)
            self.dropout = nnx.Dropout(0.5, rngs=rngs)

        def __call__(self, x: jax.Array):  # No need to require a second input!
            x = self.linear(x)
            x = self.dropout(x)
            x = jax.nn.relu(x)
            return x  # No need to return a second output!

    class MLP(nnx.Module):
        def __init__(self, features, num_layers, rngs):
            @nnx.split_rngs(splits=num_layers)
            @nnx.vmap(in_axes=(0,), out_axes=0)
            def create_block(rngs: nnx.Rngs):
                return Block(features, features, rngs=rngs)

            self.blocks = create_block(rngs)
            self.num_layers = num_layers

        def __call__(self, x):
            @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
            def forward(x, model):
                x = model(x)
                return x

            return forward(x, self.blocks)

    return SimpleNamespace(Block=Block, MLP=MLP)
