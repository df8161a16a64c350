"""Random Linen and NNX module trees for the bridge's property tests.

A tree is described by a hashable *spec* (:class:`Layer` and :class:`Block`, frozen
dataclasses), drawn by the hypothesis strategies :func:`linen_trees` and :func:`nnx_trees`, and
turned into a module by an interpreter class: :class:`CompactTree` / :class:`SetupTree` for
Linen, :class:`NNXTree` for NNX. Shapes are tiny (inputs ``(BATCH, LENGTH, features)``,
features of 2 or 3) so that each example initializes, runs and compiles in milliseconds; the
properties are about structure, dtypes and bookkeeping, which tiny shapes exercise as well as
large ones.

Every block maps ``(BATCH, LENGTH, din)`` to ``(BATCH, LENGTH, dout)`` and takes a ``train``
flag that switches BatchNorm to batch statistics, Dropout on, and the running averages of
custom variables to update. A tree may cross the bridge: a Linen block may hold an NNX block
(through ``linnx.ToLinen``) and an NNX block a Linen block (through ``linnx.ToNNX``), to any
depth.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx
from hypothesis import strategies as st

import linnx

__all__ = [
    "BATCH",
    "LENGTH",
    "Layer",
    "Block",
    "linen_trees",
    "nnx_trees",
    "linen_module",
    "CompactTree",
    "SetupTree",
    "NNXTree",
    "PropParam",
    "PropCount",
    "PropEma",
    "linen_collections_written",
    "has_kind",
    "has_dtype",
    "has_bridge",
    "is_nnx",
]

BATCH, LENGTH = 2, 3

FLOAT_DTYPES = ("float32", "bfloat16")
INT_DTYPES = ("int32", "int8")

# Linen collections the generated Linen trees write besides Flax's own. Unregistered, so
# ToNNX gives them the implicit variable types the registry creates from the name.
COUNTERS = "prop_counters"
EMA = "prop_ema"
ACTS = "prop_acts"  # a sow target that, unlike 'intermediates', Linen's init keeps


# Custom NNX variable types, one per way a type can reach a Linen collection:
class PropParam(nnx.Param):
    """A Param subclass: unregistered, so it gets its own collection ``'PropParam'``."""


class PropCount(nnx.Variable):
    """An integer counter, explicitly registered to the collection ``'prop_counts'``."""


class PropEma(nnx.Variable):
    """A running average: unregistered, so its collection is the class name ``'PropEma'``."""


# overwrite=True: if pytest's doctest collection imports this file a second time under
# another module name, the fresh PropCount class takes the name over instead of failing.
linnx.register_variable_name_type_pair("prop_counts", PropCount, overwrite=True)


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer or variable of a tree.

    Attributes:
        kind: what it is, e.g. ``'dense'``, ``'batchnorm'``, ``'counter'``, ``'sow'``.
        din: features in.
        dout: features out.
        dtype: the dtype of the variables it creates (params, counters, averages).
        arg: a kind-specific setting: kernel size, dropout rate, momentum, vocabulary size,
            or the sow collection.
    """

    kind: str
    din: int
    dout: int
    dtype: str = "float32"
    arg: Any = None


@dataclasses.dataclass(frozen=True)
class Block:
    """A module: a sequence of layers and sub-blocks applied in order.

    Attributes:
        style: Linen: ``'compact'`` or ``'setup'``; NNX: how the children are held,
            ``'attrs'`` (one attribute each), ``'list'`` (an ``nnx.List``) or ``'dict'``
            (an ``nnx.Dict``). A sub-block of the other side is wrapped by the bridge.
        items: the layers and sub-blocks.
        din: features in.
        dout: features out.
        setup_list: Linen ``setup`` style only: submodules assigned as one list
            (``layers_0``...) instead of one attribute each.
    """

    style: str
    items: tuple[Layer | Block, ...]
    din: int
    dout: int
    setup_list: bool = False

    @property
    def kind(self) -> str:
        return "block"


# -- strategies -------------------------------------------------------------------------------

# Two feature sizes are enough to catch mixed-up axes (din != dout), and few distinct shapes
# keep JAX's per-shape compile caches warm across examples.
_features = st.sampled_from((2, 3))
_float_dtype = st.sampled_from(FLOAT_DTYPES)

LINEN_KINDS = (
    "dense",
    "conv",
    "batchnorm",
    "layernorm",
    "embed",
    "dropout",
    "param",
    "counter",
    "ema",
    "sow",
)
# No `sow` on the NNX side: Flax 0.12 deprecates `nnx.Module.sow` outside `nnx.capture`.
NNX_KINDS = (
    "dense",
    "conv",
    "batchnorm",
    "layernorm",
    "embed",
    "dropout",
    "param",
    "counter",
    "ema",
)


@st.composite
def _layer(draw: st.DrawFn, kind: str, din: int) -> Layer:
    """Draws the settings of one layer of ``kind`` that takes ``din`` features."""
    if kind in ("dense", "conv"):
        dout = draw(_features)
        arg = draw(st.integers(1, 3)) if kind == "conv" else None
        return Layer(kind, din, dout, draw(_float_dtype), arg)
    if kind == "batchnorm":
        return Layer(kind, din, din, "float32", draw(st.sampled_from((0.5, 0.9))))
    if kind == "layernorm":
        return Layer(kind, din, din, draw(_float_dtype))
    if kind == "embed":
        return Layer(kind, din, din, draw(_float_dtype), draw(st.integers(1, LENGTH + 1)))
    if kind == "dropout":
        return Layer(kind, din, din, "float32", 0.5)
    if kind == "param":
        return Layer(kind, din, din, draw(st.sampled_from(FLOAT_DTYPES + INT_DTYPES)))
    if kind == "counter":
        return Layer(kind, din, din, draw(st.sampled_from(INT_DTYPES)))
    if kind == "ema":
        return Layer(kind, din, din, draw(_float_dtype))
    if kind == "sow":
        return Layer(kind, din, din, "float32", draw(st.sampled_from(("intermediates", ACTS))))
    raise AssertionError(kind)


LINEN_STYLES = ("compact", "setup")
NNX_STYLES = ("attrs", "list", "dict")


@st.composite
def _block(
    draw: st.DrawFn, din: int, depth: int, nnx_side: bool, bridged: bool, in_nnx: bool = False
) -> Block:
    """Draws a block of ``din`` features with sub-blocks up to ``depth`` levels down.

    With ``bridged``, a sub-block may come from the other side: an NNX block inside a Linen
    tree (through ``linnx.ToLinen``), a Linen block inside an NNX tree (through
    ``linnx.ToNNX``). ``in_nnx``: this Linen block is inside an NNX tree; it does not ``sow``,
    since a sow adds to its ToNNX's structure on every call, which ToLinen could only store
    with the 'nnx' collection mutable.
    """
    style = draw(st.sampled_from(NNX_STYLES if nnx_side else LINEN_STYLES))
    kinds = NNX_KINDS if nnx_side else LINEN_KINDS
    if in_nnx and not nnx_side:
        kinds = tuple(k for k in kinds if k != "sow")
    items: list[Layer | Block] = []
    features = din
    for _ in range(draw(st.integers(1, 4))):
        # Sub-blocks, of the same kind or across the bridge, weigh two layers each: nesting
        # is what the bridge's paths must get right. (Listed last, so that shrinking, which
        # moves towards the first choice, removes them.)
        choices = kinds
        if depth > 0:
            choices += ("block",) * 2 + (("bridge",) * 2 if bridged else ())
        kind = draw(st.sampled_from(choices))
        if kind == "block":
            item = draw(_block(features, depth - 1, nnx_side, bridged, in_nnx))
        elif kind == "bridge":
            item = draw(_block(features, depth - 1, not nnx_side, bridged, True))
        else:
            item = draw(_layer(kind, features))
        items.append(item)
        features = item.dout
    setup_list = style == "setup" and draw(st.booleans())
    return Block(style, tuple(items), din, features, setup_list)


def linen_trees(max_depth: int = 2, bridged: bool = True) -> st.SearchStrategy[Block]:
    """Specs of Linen trees: ``compact`` and ``setup`` blocks nested up to ``max_depth``.

    With ``bridged``, a sub-block may be an NNX tree inside ``linnx.ToLinen`` (which may
    hold a Linen tree inside ``linnx.ToNNX``...). Such trees need the ``params`` and
    ``dropout`` rng streams at ``init``: ToLinen builds its NNX module with the streams Linen
    was given, and an ``nnx.Dropout`` needs its own.
    """
    return _features.flatmap(lambda din: _block(din, max_depth, False, bridged))


def nnx_trees(max_depth: int = 2, bridged: bool = True) -> st.SearchStrategy[Block]:
    """Specs of NNX trees: children held as attributes, ``nnx.List`` or ``nnx.Dict``.

    With ``bridged``, a sub-block may be a Linen tree inside ``linnx.ToNNX`` (sharing the
    tree's ``nnx.Rngs``); such a tree needs :func:`linnx.lazy_init` before its first call.
    """
    return _features.flatmap(lambda din: _block(din, max_depth, True, bridged))


def has_bridge(block: Block) -> bool:
    """Whether the tree holds a block of the other kind (Linen in NNX or NNX in Linen)."""
    return any(
        isinstance(item, Block) and (is_nnx(item) != is_nnx(block) or has_bridge(item))
        for item in block.items
    )


def walk(block: Block):
    """Yields every layer of ``block`` and of its sub-blocks (not the blocks themselves)."""
    for item in block.items:
        if isinstance(item, Block):
            yield from walk(item)
        else:
            yield item


def has_kind(block: Block, kind: str) -> bool:
    """Whether any layer of the tree is a ``kind`` layer."""
    return any(layer.kind == kind for layer in walk(block))


def has_dtype(block: Block, dtype: str) -> bool:
    """Whether any layer of the tree creates variables of ``dtype``."""
    return any(layer.dtype == dtype for layer in walk(block) if layer.kind not in ("sow",))


def is_nnx(block: Block) -> bool:
    """Whether ``block`` is an NNX block (inside a Linen tree: one behind ``ToLinen``)."""
    return block.style in NNX_STYLES


def linen_collections_written(block: Block, train: bool) -> set[str]:
    """The Linen collections an ``apply`` of the tree writes when all of them are mutable."""
    out = set()
    for item in block.items:
        if isinstance(item, Block):
            out |= linen_collections_written(item, train)
        elif item.kind == "batchnorm" and train:
            out.add("batch_stats")
        elif item.kind == "counter":
            out.add("prop_counts" if is_nnx(block) else COUNTERS)
        elif item.kind == "ema" and (train or not is_nnx(block)):
            out.add("PropEma" if is_nnx(block) else EMA)
        elif item.kind == "sow":
            out.add(item.arg)
    return out


# -- shared pieces ----------------------------------------------------------------------------


def _int_init(dtype: str):
    """An initializer of small random integers: integer variables get a random value too."""

    def init(key, shape):
        return jax.random.randint(key, shape, -3, 4, dtype=dtype)

    return init


def _float_init(dtype: str):
    return lambda key, shape: nn.initializers.normal(1.0)(key, shape, dtype)


def _uses_param(x: jax.Array, w: jax.Array) -> jax.Array:
    """Mixes a param into the activations: scale for floats, shift for integers."""
    if jnp.issubdtype(w.dtype, jnp.integer):
        return x + w.astype(x.dtype)
    return x * w


def _positions(layer: Layer) -> jax.Array:
    """Integer ids for an Embed layer: the positions modulo the vocabulary size."""
    return jnp.arange(LENGTH) % layer.arg


def _ema_update(old: jax.Array, x: jax.Array) -> jax.Array:
    return (0.5 * old.astype(jnp.float32) + 0.5 * jnp.mean(x, axis=(0, 1))).astype(old.dtype)


# -- Linen ------------------------------------------------------------------------------------

# Layers that are a variable of the block itself rather than a submodule.
_VARIABLE_KINDS = ("param", "counter", "ema")


def _linen_submodule(layer: Layer | Block) -> nn.Module | None:
    """The Linen submodule of a layer (None for variables and sow, which live on the block)."""
    if isinstance(layer, Block):
        if is_nnx(layer):
            return linnx.ToLinen(NNXTree, args=(layer,))
        return linen_module(layer)
    dtype = jnp.dtype(layer.dtype)
    if layer.kind == "dense":
        return nn.Dense(layer.dout, param_dtype=dtype)
    if layer.kind == "conv":
        return nn.Conv(layer.dout, (layer.arg,), padding="SAME", param_dtype=dtype)
    if layer.kind == "batchnorm":
        return nn.BatchNorm(momentum=layer.arg)
    if layer.kind == "layernorm":
        return nn.LayerNorm(param_dtype=dtype)
    if layer.kind == "embed":
        return nn.Embed(layer.arg, layer.din, param_dtype=dtype)
    if layer.kind == "dropout":
        return nn.Dropout(layer.arg)
    return None


def _linen_variable(module: nn.Module, index: int, layer: Layer) -> Any:
    """Creates the variable of a ``param``/``counter``/``ema`` layer on ``module``."""
    if layer.kind == "param":
        dtype = jnp.dtype(layer.dtype)
        init = _int_init(dtype) if jnp.issubdtype(dtype, jnp.integer) else _float_init(dtype)
        return module.param(f"p{index}", init, (layer.din,))
    if layer.kind == "counter":
        return module.variable(COUNTERS, f"n{index}", jnp.zeros, (), jnp.dtype(layer.dtype))
    if layer.kind == "ema":
        return module.variable(EMA, f"e{index}", jnp.zeros, (layer.din,), jnp.dtype(layer.dtype))
    raise AssertionError(layer.kind)


def _linen_step(module: nn.Module, index: int, layer, sub, var, x, train: bool):
    """Applies item ``index`` of a Linen block; ``sub``/``var`` are its submodule/variable."""
    kind = layer.kind
    if kind == "block":
        return sub(x, train)
    if kind in ("dense", "conv", "layernorm"):
        return sub(x)
    if kind == "batchnorm":
        return sub(x, use_running_average=not train)
    if kind == "embed":
        return x + sub(_positions(layer))
    if kind == "dropout":
        return sub(x, deterministic=not train)
    if kind == "param":
        return _uses_param(x, var)
    if kind == "counter":
        # Counts calls whenever its collection may change (init included, as in Linen).
        if module.is_mutable_collection(COUNTERS):
            var.value += 1
        return x + 0.25 * var.value.astype(x.dtype)
    if kind == "ema":
        if train and module.is_mutable_collection(EMA):
            var.value = _ema_update(var.value, x)
        return x + var.value.astype(x.dtype)
    if kind == "sow":
        module.sow(layer.arg, f"s{index}", x)
        return x
    raise AssertionError(kind)


class CompactTree(nn.Module):
    """A Linen block in ``@nn.compact`` style: submodules auto-named where they are used."""

    spec: Block

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i, item in enumerate(self.spec.items):
            sub = _linen_submodule(item)
            var = _linen_variable(self, i, item) if item.kind in _VARIABLE_KINDS else None
            x = _linen_step(self, i, item, sub, var, x, train)
        return x


class SetupTree(nn.Module):
    """A Linen block in ``setup`` style: named attributes, or one list of submodules."""

    spec: Block

    def setup(self):
        subs, variables = {}, {}
        for i, item in enumerate(self.spec.items):
            if item.kind in _VARIABLE_KINDS:
                variables[i] = _linen_variable(self, i, item)
            elif item.kind != "sow":
                subs[i] = item
        if self.spec.setup_list:
            self.layers = [_linen_submodule(item) for item in subs.values()]
            self._index = {i: n for n, i in enumerate(subs)}
        else:
            for i, item in subs.items():
                setattr(self, f"{item.kind}{i}", _linen_submodule(item))
        self._variables = variables

    def __call__(self, x, train: bool = False):
        for i, item in enumerate(self.spec.items):
            sub = var = None
            if item.kind in _VARIABLE_KINDS:
                var = self._variables[i]
            elif item.kind != "sow":
                sub = (
                    self.layers[self._index[i]]
                    if self.spec.setup_list
                    else getattr(self, f"{item.kind}{i}")
                )
            x = _linen_step(self, i, item, sub, var, x, train)
        return x


def linen_module(spec: Block, **kwargs: Any) -> nn.Module:
    """The Linen module of a spec, in the block's style."""
    cls = CompactTree if spec.style == "compact" else SetupTree
    return cls(spec, **kwargs)


# -- NNX --------------------------------------------------------------------------------------


def _nnx_child(layer: Layer | Block, rngs: nnx.Rngs) -> Any:
    """The NNX submodule or variable of a layer."""
    if isinstance(layer, Block):
        if is_nnx(layer):
            return NNXTree(layer, rngs=rngs)
        return linnx.ToNNX(linen_module(layer), rngs=rngs)
    dtype = jnp.dtype(layer.dtype)
    if layer.kind == "dense":
        return nnx.Linear(layer.din, layer.dout, param_dtype=dtype, rngs=rngs)
    if layer.kind == "conv":
        return nnx.Conv(
            layer.din, layer.dout, (layer.arg,), padding="SAME", param_dtype=dtype, rngs=rngs
        )
    if layer.kind == "batchnorm":
        return nnx.BatchNorm(layer.din, momentum=layer.arg, rngs=rngs)
    if layer.kind == "layernorm":
        return nnx.LayerNorm(layer.din, param_dtype=dtype, rngs=rngs)
    if layer.kind == "embed":
        return nnx.Embed(layer.arg, layer.din, param_dtype=dtype, rngs=rngs)
    if layer.kind == "dropout":
        return nnx.Dropout(layer.arg, rngs=rngs)
    if layer.kind == "param":
        if jnp.issubdtype(dtype, jnp.integer):
            return nnx.Param(_int_init(dtype)(rngs.params(), (layer.din,)))
        return PropParam(_float_init(dtype)(rngs.params(), (layer.din,)))
    if layer.kind == "counter":
        return PropCount(jnp.zeros((), dtype))
    if layer.kind == "ema":
        return PropEma(jnp.zeros((layer.din,), dtype))
    raise AssertionError(layer.kind)


class NNXTree(nnx.Module):
    """An NNX block: children as attributes, in an ``nnx.List`` or in an ``nnx.Dict``."""

    def __init__(self, spec: Block, *, rngs: nnx.Rngs):
        self.spec = spec
        children = {f"{item.kind}{i}": _nnx_child(item, rngs) for i, item in enumerate(spec.items)}
        self._keys = tuple(children)
        if spec.style == "list":
            self.layers = nnx.List(list(children.values()))
        elif spec.style == "dict":
            self.layers = nnx.Dict(children)
        else:
            for key, child in children.items():
                setattr(self, key, child)

    def _child(self, key: str) -> Any:
        if self.spec.style == "list":
            return self.layers[self._keys.index(key)]
        if self.spec.style == "dict":
            return self.layers[key]
        return getattr(self, key)

    def __call__(self, x, train: bool = False):
        for i, item in enumerate(self.spec.items):
            key = f"{item.kind}{i}"
            kind = item.kind
            child = self._child(key)
            if kind == "block" and not is_nnx(item):
                # All collections mutable, as a native NNX layer updates all its state.
                x = child(x, train=train, mutable=True)
            elif kind == "block":
                x = child(x, train)
            elif kind in ("dense", "conv", "layernorm"):
                x = child(x)
            elif kind == "batchnorm":
                x = child(x, use_running_average=not train)
            elif kind == "embed":
                x = x + child(_positions(item))
            elif kind == "dropout":
                x = child(x, deterministic=not train)
            elif kind == "param":
                x = _uses_param(x, child.get_value())
            elif kind == "counter":
                child.set_value(child.get_value() + 1)
                x = x + 0.25 * child.get_value().astype(x.dtype)
            elif kind == "ema":
                if train:
                    child.set_value(_ema_update(child.get_value(), x))
                x = x + child.get_value().astype(x.dtype)
            else:
                raise AssertionError(kind)
        return x
