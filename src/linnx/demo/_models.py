"""The demo's classifier, written four ways: one per stage of the migration.

The Linen CNN is split into a ``backbone`` (Conv + BatchNorm + pooling) and a ``head`` (Dense +
Dropout + Dense) so that the migration can go bottom-up, one part at a time:

========  ======================================  ======================================
stage     backbone                                head
========  ======================================  ======================================
1 Linen   ``LinenBackbone``                       ``LinenHead``         (``LinenCNN``)
2 ToNNX   ``ToNNX(LinenBackbone())``              ``ToNNX(LinenHead())`` (``WrappedCNN``)
3 hybrid  ``ToNNX(LinenBackbone())``              ``Head``               (``HybridCNN``)
4 NNX     converted ``LinenBackbone``             converted ``LinenHead`` (``CNN``)
========  ======================================  ======================================

Every NNX stage follows NNX's ``model.train()`` / ``model.eval()`` switch. ``nnx.Dropout`` and
``nnx.BatchNorm`` read it themselves; a Linen part inside ``ToNNX`` is told through the
``training`` argument, which the enclosing module derives from its own ``deterministic``
attribute (the attribute ``train()``/``eval()`` set, as on ``nnx.Dropout``).

Because the parts keep their names (``backbone``, ``head``) across the stages, the variables
under a ``ToNNX`` part keep their Linen paths and :func:`linnx.migrate.match` pairs them by
name; the NNX parts pair with their Linen counterparts by call order. Stage 4 is not written
by hand: it is what ``linnx convert`` makes of stage 1 (:func:`converted_cnn`).
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable

import jax
from flax import linen as nn
from flax import nnx

import linnx

#: Channels of the convolution, hidden units of the head, number of classes.
CHANNELS, HIDDEN, CLASSES = 16, 64, 10
#: Features after the backbone: 8x8 images, pooled 2x2, times the channels.
FEATURES = 4 * 4 * CHANNELS
DROPOUT_RATE = 0.2
#: Linen's BatchNorm momentum is the weight of the old statistics, as in NNX.
BN_MOMENTUM = 0.9


# -- stage 1: Linen ------------------------------------------------------------------------


class LinenBackbone(nn.Module):
    """Conv + BatchNorm + ReLU + 2x2 average pooling, flattened."""

    @nn.compact
    def __call__(self, x: jax.Array, training: bool) -> jax.Array:
        x = nn.Conv(CHANNELS, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not training, momentum=BN_MOMENTUM)(x)
        x = nn.avg_pool(nn.relu(x), (2, 2), (2, 2))
        return x.reshape((x.shape[0], -1))


class LinenHead(nn.Module):
    """The classifier head: Dense + ReLU + Dropout + Dense."""

    @nn.compact
    def __call__(self, x: jax.Array, training: bool) -> jax.Array:
        x = nn.relu(nn.Dense(HIDDEN)(x))
        x = nn.Dropout(DROPOUT_RATE, deterministic=not training)(x)
        return nn.Dense(CLASSES)(x)


class LinenCNN(nn.Module):
    """The Linen classifier of stage 1, and the reference every later stage is checked against.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> variables = LinenCNN().init(jax.random.key(0), jnp.ones((1, 8, 8, 1)), training=False)
        >>> sorted(variables['params']), sorted(variables['batch_stats'])
        (['backbone', 'head'], ['backbone'])
    """

    @nn.compact
    def __call__(self, x: jax.Array, training: bool) -> jax.Array:
        x = LinenBackbone(name="backbone")(x, training)
        return LinenHead(name="head")(x, training)


# -- the hand-written NNX parts --------------------------------------------------------------


class Head(nnx.Module):
    """The NNX port of :class:`LinenHead`."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(FEATURES, HIDDEN, rngs=rngs)
        self.dropout = nnx.Dropout(DROPOUT_RATE, rngs=rngs)
        self.out = nnx.Linear(HIDDEN, CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(self.dropout(nnx.relu(self.hidden(x))))


# -- stages 2 to 4 -----------------------------------------------------------------------------


def _run_linen_backbone(backbone: linnx.ToNNX, x: jax.Array, training: bool) -> jax.Array:
    # In training the Linen BatchNorm updates its statistics, so `batch_stats` must be mutable;
    # ToNNX writes the new values back into its NNX variables.
    return backbone(x, training=training, mutable=["batch_stats"] if training else False)


class WrappedCNN(nnx.Module):
    """Stage 2: both Linen parts, unchanged, each wrapped by :class:`linnx.ToNNX`."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.backbone = linnx.ToNNX(LinenBackbone(), rngs=rngs)
        self.head = linnx.ToNNX(LinenHead(), rngs=rngs)
        self.deterministic = False  # set by .train() / .eval()

    def __call__(self, x: jax.Array) -> jax.Array:
        training = not self.deterministic
        return self.head(_run_linen_backbone(self.backbone, x, training), training=training)


class HybridCNN(nnx.Module):
    """Stage 3: the Linen backbone still inside ``ToNNX``, the head ported to NNX."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.backbone = linnx.ToNNX(LinenBackbone(), rngs=rngs)
        self.head = Head(rngs=rngs)
        self.deterministic = False  # set by .train() / .eval()

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(_run_linen_backbone(self.backbone, x, not self.deterministic))


#: The marker that ends the Linen source the converter reads (stage 1, with the imports and
#: constants above it).
_LINEN_END = "# -- the hand-written NNX parts"

#: The example the converter traces the Linen CNN on: one 8x8 grey image, eval mode.
CONVERT_EXAMPLE = "LinenCNN()(jnp.ones((1, 8, 8, 1)), training=False)"


@functools.cache
def converted_cnn() -> type[nnx.Module]:
    """Stage 4: the whole classifier in NNX, as ``linnx convert`` writes it from stage 1.

    The Linen part of this file (imports, constants, ``LinenBackbone``, ``LinenHead``,
    ``LinenCNN``) goes through :func:`linnx.convert.convert_source`; the NNX class it writes
    keeps the Linen class's name (``LinenCNN``) and has ``backbone`` (``conv``,
    ``batch_norm``) and ``head`` (``linear1``, ``dropout``, ``linear2``). The handover into it
    is verified like every other one, so the conversion's own check is skipped here.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = converted_cnn()(rngs=nnx.Rngs(0))
        >>> model.eval()
        >>> model(jnp.ones((2, 8, 8, 1))).shape
        (2, 10)
    """
    from ..convert import convert_source
    from ..convert._trace import load_source

    source = inspect.getsource(sys.modules[__name__]).split(_LINEN_END)[0]
    result = convert_source(source, [CONVERT_EXAMPLE], path=__file__, verify=False)
    return load_source(result.code, __file__.replace(".py", "_nnx.py")).LinenCNN


def __getattr__(name: str):
    # `CNN`, the stage-4 class, is converted on first use (it traces the Linen model).
    if name == "CNN":
        return converted_cnn()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build(cls: Callable[..., nnx.Module], sample: jax.Array, seed: int) -> nnx.Module:
    """An NNX stage model in eval mode, with its ``ToNNX`` parts initialized on ``sample``.

    Its initial values do not matter: the handover overwrites every one of them.
    """
    model = cls(rngs=nnx.Rngs(params=seed, dropout=seed + 1))
    model.eval()
    return linnx.lazy_init(model, sample)
