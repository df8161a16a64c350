"""Linen-style layers for ``linnx.Module``: Linen's constructors, no input size needed.

``from flax import linen as nn`` code ported to :class:`linnx.module.Module` changes
``nn.Dense(64)`` to ``linnx.module.nn.Dense(64)`` (same arguments, same variable names and
collections); after the move to plain NNX they become ``nnx.Linear``, ``nnx.Dropout``,
``nnx.BatchNorm`` and ``nnx.LayerNorm``.
"""

from ._layers import BatchNorm as BatchNorm
from ._layers import Dense as Dense
from ._layers import Dropout as Dropout
from ._layers import LayerNorm as LayerNorm
