"""Linen-style layers written as ``linnx.Module``: ``Dense``, ``Dropout``, ``BatchNorm``,
``LayerNorm``.

They take Linen's constructor arguments (no input size: the kernel shape is read from the
first input, in the creation pass) and create Linen's variable names and collections
(``params/Dense_0/kernel``, ``batch_stats/BatchNorm_0/mean``), so a Linen model ported to
``linnx.Module`` has the same variables dict. On the NNX side their attributes have the names
of the NNX layers they turn into later (``kernel``/``bias`` of ``nnx.Linear``, ``mean``/``var``
of ``nnx.BatchNorm``), and ``model.train()``/``model.eval()`` set their ``deterministic`` and
``use_running_average`` fields, as for NNX layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import jax
import jax.numpy as jnp
from flax import nnx

from .._public import public
from ._construction import compact
from ._errors import ModuleDefinitionError
from ._module import Module

__all__ = ["Dense", "Dropout", "BatchNorm", "LayerNorm"]

Initializer = Callable[..., jax.Array]

_NEEDS_FLAG: Final = (
    "{cls} needs `{flag}`: it is None both in the constructor and in this call.\n"
    "Fix, one of: pass it to the call, {cls}(...)(x, {flag}=...); to the constructor, "
    "{cls}(..., {flag}=...); or set it on the whole model with model.train() / model.eval()."
)


def _flag(module: Module, flag: str, call_value: bool | None) -> bool:
    """The call's value, else the field's. Unset, it is an error, except in the creation pass.

    The creation pass only builds variables, so it needs no mode; being lenient there lets NNX
    code create the model first and pick the mode afterwards with ``model.train()`` /
    ``model.eval()``, as it would with NNX layers.
    """
    value = call_value if call_value is not None else getattr(module, flag)
    if value is None:
        if module.is_initializing():
            return True
        raise ModuleDefinitionError(_NEEDS_FLAG.format(cls=type(module).__name__, flag=flag))
    return bool(value)


@public("linnx.module.nn")
class Dense(Module):
    """A fully connected layer that infers its input size, as Linen's ``nn.Dense``.

    Its variables are ``params/kernel`` (``(in, features)``) and ``params/bias``. After
    migration it becomes ``nnx.Linear(in, features, rngs=rngs)``, whose attributes have the
    same names.

    Args:
        features: the output size.
        use_bias: whether to add a bias.
        dtype: the computation dtype (default: inferred from inputs and params).
        param_dtype: the dtype of the parameters.
        precision: the precision of the matrix product.
        kernel_init: the kernel initializer (Linen's default: LeCun normal).
        bias_init: the bias initializer.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import linnx.module as lm
        >>> variables = lm.nn.Dense(4).init(jax.random.key(0), jnp.ones((2, 3)))
        >>> jax.tree.map(jnp.shape, variables)
        {'params': {'bias': (4,), 'kernel': (3, 4)}}
    """

    features: int
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Initializer = nnx.initializers.lecun_normal()
    bias_init: Initializer = nnx.initializers.zeros_init()

    @compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel",
            self.kernel_init,
            (jnp.shape(inputs)[-1], self.features),
            self.param_dtype,
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        inputs, kernel, bias = nnx.nn.dtypes.promote_dtype((inputs, kernel, bias), dtype=self.dtype)
        y = jax.lax.dot_general(
            inputs, kernel, (((inputs.ndim - 1,), (0,)), ((), ())), precision=self.precision
        )
        if bias is not None:
            y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
        return y


@public("linnx.module.nn")
class Dropout(Module):
    """Dropout, as Linen's ``nn.Dropout``: zeroes inputs with probability ``rate``.

    ``deterministic`` can be given to the constructor (as Linen code does per call, e.g.
    ``Dropout(0.5, deterministic=not training)(x)``: a compact method refreshes it on every
    call), to the call, or set by ``model.train()``/``model.eval()``. Keys come from the
    ``'dropout'`` stream.

    Args:
        rate: the probability of dropping an element.
        broadcast_dims: dimensions along which the same mask is used.
        deterministic: if True, the layer is the identity.
        rng_collection: the rng stream to draw the mask from.

    Example:
        >>> import jax.numpy as jnp
        >>> import linnx.module as lm
        >>> from flax import nnx
        >>> layer = lm.nn.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
        >>> y = layer(jnp.ones((1000,)), deterministic=False)
        >>> sorted(set(y.tolist()))
        [0.0, 2.0]
        >>> layer(jnp.ones((2,)), deterministic=True)
        Array([1., 1.], dtype=float32)
    """

    rate: float
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def __call__(
        self, inputs: jax.Array, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> jax.Array:
        if self.rate == 0.0 or _flag(self, "deterministic", deterministic):
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        keep = 1.0 - self.rate
        rng = self.make_rng(self.rng_collection) if rng is None else rng
        shape = list(jnp.shape(inputs))
        for dim in self.broadcast_dims:
            shape[dim] = 1
        mask = jnp.broadcast_to(jax.random.bernoulli(rng, p=keep, shape=shape), inputs.shape)
        return jax.lax.select(mask, inputs / keep, jnp.zeros_like(inputs))


def _axes(axis: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(sorted(a % ndim for a in axes))


def _normalize(
    module: Any,
    x: jax.Array,
    mean: jax.Array,
    var: jax.Array,
    feature_axes: tuple[int, ...],
    epsilon: float,
) -> jax.Array:
    """``(x - mean) / sqrt(var + eps) * scale + bias``; mean and var broadcast against x."""
    feature_shape = tuple(x.shape[a] for a in feature_axes)
    param_shape = tuple(x.shape[a] if a in feature_axes else 1 for a in range(x.ndim))
    y = x - mean
    mul = jax.lax.rsqrt(var + epsilon)
    if module.use_scale:
        scale = module.param("scale", module.scale_init, feature_shape, module.param_dtype)
        mul = mul * scale.reshape(param_shape)
    y = y * mul
    if module.use_bias:
        bias = module.param("bias", module.bias_init, feature_shape, module.param_dtype)
        y = y + bias.reshape(param_shape)
    dtype = module.dtype or jnp.result_type(x, module.param_dtype)
    return jnp.asarray(y, dtype)


def _moments(x: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    x = jnp.asarray(x, jnp.promote_types(x.dtype, jnp.float32))
    mean = jnp.mean(x, axis=axes)
    var = jnp.maximum(0.0, jnp.mean(jnp.square(x), axis=axes) - jnp.square(mean))
    return mean, var


@public("linnx.module.nn")
class BatchNorm(Module):
    """Batch normalization, as Linen's ``nn.BatchNorm``.

    Its variables are ``params/scale``, ``params/bias`` and the running averages
    ``batch_stats/mean`` and ``batch_stats/var`` (``nnx.BatchStat``), as in Linen and in
    ``nnx.BatchNorm``. Outside the creation pass, a call with ``use_running_average=False``
    updates the running averages (under ``apply`` only when ``'batch_stats'`` is mutable).

    Args:
        use_running_average: normalize with the running averages instead of batch statistics.
        axis: the feature axis.
        momentum: the decay of the running averages.
        epsilon: added to the variance.
        dtype: the output dtype.
        param_dtype: the dtype of scale and bias.
        use_bias: whether to add a learned bias.
        use_scale: whether to multiply by a learned scale.
        bias_init: the bias initializer.
        scale_init: the scale initializer.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import linnx.module as lm
        >>> bn = lm.nn.BatchNorm(use_running_average=False)
        >>> x = jnp.arange(6.0).reshape(3, 2)
        >>> variables = bn.init(jax.random.key(0), x)
        >>> y, updates = bn.apply(variables, x, mutable=['batch_stats'])
        >>> updates['batch_stats']['mean']
        Array([0.02, 0.03], dtype=float32)
    """

    use_running_average: bool | None = None
    axis: int = -1
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Any = None
    param_dtype: Any = jnp.float32
    use_bias: bool = True
    use_scale: bool = True
    bias_init: Initializer = nnx.initializers.zeros_init()
    scale_init: Initializer = nnx.initializers.ones_init()

    @compact
    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        use_average = _flag(self, "use_running_average", use_running_average)
        feature_axes = _axes(self.axis, x.ndim)
        reduction_axes = tuple(a for a in range(x.ndim) if a not in feature_axes)
        features = tuple(x.shape[a] for a in feature_axes)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
        if use_average:
            mean, var = ra_mean[...], ra_var[...]
        else:
            mean, var = _moments(x, reduction_axes)
            if not self.is_initializing():
                m = self.momentum
                ra_mean[...] = m * ra_mean[...] + (1.0 - m) * mean
                ra_var[...] = m * ra_var[...] + (1.0 - m) * var
        shape = tuple(x.shape[a] if a in feature_axes else 1 for a in range(x.ndim))
        return _normalize(
            self, x, mean.reshape(shape), var.reshape(shape), feature_axes, self.epsilon
        )


@public("linnx.module.nn")
class LayerNorm(Module):
    """Layer normalization over the last axis, as Linen's ``nn.LayerNorm``.

    Args:
        epsilon: added to the variance.
        dtype: the output dtype.
        param_dtype: the dtype of scale and bias.
        use_bias: whether to add a learned bias.
        use_scale: whether to multiply by a learned scale.
        bias_init: the bias initializer.
        scale_init: the scale initializer.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import linnx.module as lm
        >>> y, v = lm.nn.LayerNorm().init_with_output(jax.random.key(0), jnp.arange(4.0))
        >>> sorted(v['params']), bool(abs(float(y.mean())) < 1e-6)
        (['bias', 'scale'], True)
    """

    epsilon: float = 1e-6
    dtype: Any = None
    param_dtype: Any = jnp.float32
    use_bias: bool = True
    use_scale: bool = True
    bias_init: Initializer = nnx.initializers.zeros_init()
    scale_init: Initializer = nnx.initializers.ones_init()

    @compact
    def __call__(self, x: jax.Array) -> jax.Array:
        axes = (x.ndim - 1,)
        mean, var = _moments(x, axes)
        mean, var = jnp.expand_dims(mean, -1), jnp.expand_dims(var, -1)
        return _normalize(self, x, mean, var, axes, self.epsilon)
