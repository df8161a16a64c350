"""The speed shortcuts of ``ToNNX`` (construction, ``lazy_init`` of a lone wrapper, the
write-back of an eager call, variable creation and plain reads/writes) against the general
routes they stand in for. Every test also runs the general route (``_fast.switched_off()``, the
one switch every shortcut consults) and checks that the shortcut was actually taken
(``_fast.taken``), so that agreement is not vacuous.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _trees import assert_trees_equal
from flax import linen as nn
from flax import nnx

import linnx
from linnx import ToNNX, _flax_internals
from linnx.bridge import _fast

X = jnp.arange(12.0).reshape(2, 2, 3) / 12


class ConvBN(nn.Module):
    """Params and batch statistics, updated in place by every training call."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Dense(4)(x)
        x = nn.BatchNorm(use_running_average=False)(x)
        return nn.Dense(3)(nn.relu(x))


class Sower(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.Dense(3)(x)
        self.sow("intermediates", "y", y)
        return y


class Counter(nn.Module):
    """A custom collection that gains a key on the second call."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n = self.variable("counts", "n", lambda: jnp.zeros((), jnp.int32))
        if not self.is_initializing() and n.value > 0:
            self.variable("counts", "later", lambda: jnp.ones((), jnp.int32))
        n.value += 1
        return nn.Dense(3)(x)


# -- helpers ---------------------------------------------------------------------------------


def is_key(value: Any) -> bool:
    return jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key)


def snapshot(model: ToNNX) -> dict[str, Any]:
    """Everything observable about a wrapper's NNX side: attributes, statuses, variables."""
    state = nnx.state(model)
    return {
        "attributes": list(vars(model)),
        "nodes": dict(vars(model)["_pytree__nodes"]),
        "collections": model.linen_collections,
        "graphdef": nnx.graphdef(model),
        "types": jax.tree.map(type, state, is_leaf=lambda x: isinstance(x, nnx.Variable)),
        "metadata": [v.get_metadata() for v in variables(model)],
        "values": nnx.to_pure_dict(state),
    }


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    values_a, values_b = a.pop("values"), b.pop("values")
    assert a == b
    assert_trees_equal(values_a, values_b, "values")


@pytest.fixture(autouse=True)
def shortcuts_on():
    """These tests compare the shortcuts with the general route: they need the shortcuts on
    (also in the ``LINNX_FAST=0`` run of the suite)."""
    before = _fast.enabled()
    _fast.set_enabled(True)
    _fast.taken.clear()
    yield
    _fast.set_enabled(before)


def lone_and_nested(module: nn.Module, x: jax.Array) -> tuple[ToNNX, ToNNX]:
    """A wrapper initialized alone (fast path) and one inside an NNX module (general path)."""

    class Outer(nnx.Module):
        def __init__(self) -> None:
            self.inner = ToNNX(module, rngs=nnx.Rngs(0))

        def __call__(self, x: jax.Array) -> jax.Array:
            return self.inner(x)

    return linnx.lazy_init(ToNNX(module, rngs=nnx.Rngs(0)), x), linnx.lazy_init(Outer(), x).inner


# -- construction and lazy_init --------------------------------------------------------------


@pytest.mark.parametrize("module", [ConvBN(), Sower(), Counter(), nn.Dense(3)])
def test_construction_and_lazy_init_match_the_general_path(module) -> None:
    fast_fresh = snapshot(ToNNX(module, rngs=nnx.Rngs(0)))
    fast_none = snapshot(ToNNX(module))
    fast = snapshot(linnx.lazy_init(ToNNX(module, rngs=nnx.Rngs(0)), X))
    assert _fast.taken["to_nnx.lone_lazy_init"] == 1
    with _fast.switched_off():
        assert_same(fast_fresh, snapshot(ToNNX(module, rngs=nnx.Rngs(0))))
        assert_same(fast_none, snapshot(ToNNX(module)))
        assert_same(fast, snapshot(linnx.lazy_init(ToNNX(module, rngs=nnx.Rngs(0)), X)))
    assert _fast.taken["to_nnx.lone_lazy_init"] == 1


@pytest.mark.parametrize("module", [ConvBN(), Sower(), Counter()])
def test_lone_lazy_init_skips_the_snapshot_and_matches_a_nested_wrapper(module):
    lone, nested = lone_and_nested(module, X)
    assert _fast.taken["to_nnx.lone_lazy_init"] == 1  # the nested tree took the general route
    assert_same(snapshot(lone), snapshot(nested))


@contextlib.contextmanager
def interrupted_when_storing(attribute: str):
    """Raises KeyboardInterrupt, as a user's Ctrl-C could, when the bridge starts to store
    ``attribute`` on a module (``_fast.set_attribute``, after the attributes before it)."""

    def profile(frame, event, arg):
        if (
            event == "call"
            and frame.f_code is _fast.set_attribute.__code__
            and frame.f_locals.get("name") == attribute
        ):
            sys.setprofile(None)
            raise KeyboardInterrupt

    sys.setprofile(profile)
    try:
        yield
    finally:
        sys.setprofile(None)


def test_a_failed_store_leaves_a_lone_wrapper_unchanged() -> None:
    model = ToNNX(ConvBN(), rngs=nnx.Rngs(0))
    before = dict(vars(model))
    with pytest.raises(KeyboardInterrupt), interrupted_when_storing("batch_stats"):
        linnx.lazy_init(model, X)
    assert vars(model) == before
    assert model.linen_collections == () and "params" not in vars(model)
    linnx.lazy_init(model, X)
    assert model.linen_collections == ("params", "batch_stats")


def test_a_failed_lone_lazy_init_leaves_the_wrapper_unchanged() -> None:
    class Fails(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            nn.Dense(3)(x)
            raise ValueError("boom")

    model = ToNNX(Fails(), rngs=nnx.Rngs(0))
    before = dict(vars(model))
    with pytest.raises(ValueError, match="boom"):
        linnx.lazy_init(model, X)
    assert vars(model) == before


def test_the_recheck_still_refuses_data_in_static_attributes() -> None:
    model = linnx.lazy_init(ToNNX(nn.Dense(3), rngs=nnx.Rngs(0)), X)
    assert not _flax_internals.recheck_cannot_fail(model, "module", jnp.ones(3))
    assert not _flax_internals.recheck_cannot_fail(model, "linen_collections", (jnp.ones(3),))
    assert _flax_internals.recheck_cannot_fail(model, "params", model.params)  # registered as data
    with pytest.raises(ValueError):
        model.module = jnp.ones(3)
    with pytest.raises(ValueError):
        model.linen_collections = (jnp.ones(3),)


# -- eager write-back ------------------------------------------------------------------------


def run_calls(module: nn.Module, mutable: Any, calls: int = 3) -> tuple[ToNNX, list]:
    model = linnx.lazy_init(ToNNX(module, rngs=nnx.Rngs(0)), X)
    held = {id(v) for v in variables(model)}
    outs = [np.asarray(model(X * (i + 1), mutable=mutable)) for i in range(calls)]
    assert held <= {id(v) for v in variables(model)}  # references held elsewhere stay live
    return model, outs


def variables(model: ToNNX) -> list[nnx.Variable]:
    return jax.tree.leaves(nnx.state(model), is_leaf=lambda x: isinstance(x, nnx.Variable))


@pytest.mark.parametrize(
    "module, mutable, fast",
    [
        (ConvBN(), ["batch_stats"], [True] * 3),
        (ConvBN(), True, [True] * 3),
        (Sower(), ["intermediates"], [False] * 3),  # a sown tuple grows: general path
        (Counter(), ["counts"], [False, True, True]),  # a new key, then the same keys
    ],
)
def test_eager_write_back_matches_the_general_path(module, mutable, fast):
    model = linnx.lazy_init(ToNNX(module, rngs=nnx.Rngs(0)), X)
    taken = []
    for i in range(3):
        before = _fast.taken["to_nnx.in_place_write_back"]
        model(X * (i + 1), mutable=mutable)
        taken.append(_fast.taken["to_nnx.in_place_write_back"] > before)
    assert taken == fast
    model, outs = run_calls(module, mutable)
    with _fast.switched_off():
        reference, reference_outs = run_calls(module, mutable)
    assert_same(snapshot(model), snapshot(reference))
    for a, b in zip(outs, reference_outs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_in_place_write_back_refuses_a_frozen_module() -> None:
    model = linnx.lazy_init(ToNNX(ConvBN(), rngs=nnx.Rngs(0)), X)
    stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
    with pytest.raises(linnx.MutableCollectionError):
        jax.jit(lambda x: model(x, mutable=["batch_stats"]))(X)
    assert_trees_equal(nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)), stats)


# -- variables -------------------------------------------------------------------------------


class Count(nnx.Variable):
    pass


class Tagged(nnx.Variable):
    """Customizes construction: must be built by its constructor."""

    def __init__(self, value: Any, **metadata: Any) -> None:
        super().__init__(value, tag="tagged", **metadata)


class Doubled(nnx.Variable):
    """Customizes reads, writes and creation, as Flax advises instead of hooks."""

    def create_value(self, value: Any) -> Any:
        return value * 2

    def get_value(self, **kw: Any) -> Any:
        return super().get_value(**kw) + 1

    def set_value(self, value: Any, **kw: Any) -> None:
        super().set_value(value * 3, **kw)


VALUES = [jnp.arange(3.0), np.arange(3.0), jax.random.key(1)]
TYPES = [
    nnx.Param,
    nnx.BatchStat,
    Count,
    Tagged,
    Doubled,
    linnx.variable_type_from_name("fast_path_test_collection"),
]


CONTEXTS = {
    "defaults": lambda: nnx.var_defaults(hijax=False),
    "ref": lambda: nnx.var_defaults(ref=True),
    "hijax": lambda: nnx.var_defaults(hijax=True),
    "no_eager_sharding": lambda: nnx.use_eager_sharding(False),
}


@pytest.mark.parametrize("var_type", TYPES)
@pytest.mark.parametrize("value", VALUES, ids=["jax", "numpy", "key"])
@pytest.mark.parametrize("context", list(CONTEXTS))
def test_make_variable_matches_the_constructor(var_type, value, context) -> None:
    if var_type is Doubled and is_key(value):
        pytest.skip("a key cannot be doubled")
    with CONTEXTS[context]():
        made, built = _fast.make_variable(var_type, value), var_type(value)
    assert type(made) is type(built)
    assert made.get_metadata() == built.get_metadata()
    assert type(made.get_raw_value()) is type(built.get_raw_value())
    if context in ("defaults", "no_eager_sharding") and var_type is not Doubled:
        assert made.get_raw_value() is value  # no copy, as the constructor
    assert_trees_equal(made.get_value(), built.get_value())


@pytest.mark.parametrize("var_type", [nnx.Param, Doubled])
def test_read_and_write_value_match_get_and_set_value(var_type) -> None:
    a, b = var_type(jnp.arange(3.0)), var_type(jnp.arange(3.0))
    np.testing.assert_array_equal(_fast.read_value(a), b.get_value())
    _fast.write_value(a, jnp.ones(3))
    b.set_value(jnp.ones(3))
    np.testing.assert_array_equal(a.get_raw_value(), b.get_raw_value())
    np.testing.assert_array_equal(_fast.read_value(a), b.get_value())
