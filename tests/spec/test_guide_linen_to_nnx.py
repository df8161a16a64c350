"""Every Linen -> NNX example of the bridge guide (spec 000) and the ToNNX example of 004.

Each test body is the document's code with only the bridge import changed
(``import linnx as bridge``; ``nnx.bridge.ToNNX`` -> ``bridge.ToNNX``), followed by
assertions on what the document shows: shapes, keys, collections, types, rng counts in the
``nnx.display`` output, and values.

Sections covered: "The Basics / Linen -> NNX", "Handling RNG keys / Linen to NNX" and
"NNX variable types vs. Linen collections / Linen to NNX". (Partition metadata and lifted
transforms are issue 9's.)
"""

import re
from typing import *

import jax
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx
from jax import numpy as jnp

import linnx as bridge


@pytest.fixture
def old_threefry():
    """The JAX rng config the guide's numbers were produced with (JAX's default until 0.5)."""
    before = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", False)
    yield
    jax.config.update("jax_threefry_partitionable", before)


def displayed(capsys, node) -> str:
    capsys.readouterr()
    nnx.display(node)
    return capsys.readouterr().out


def assert_rngs_shown(text: str, count: int) -> None:
    """The default stream of ``nnx.Rngs(0)``: key data ``[0 0]`` and the given count."""
    assert "[0 0]" in text
    shown = re.findall(r"count=RngCount\(.*?value=Array\((\d+), dtype=uint32\)", text, re.S)
    assert shown == [str(count)]


# -- The Basics / Linen -> NNX -------------------------------------------------------------


class LinenDot(nn.Module):
    out_dim: int
    w_init: Callable[..., Any] = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        # Linen might need the input shape to create the weight!
        w = self.param("w", self.w_init, (x.shape[-1], self.out_dim))
        return x @ w


def test_basics_lazy_init_and_call(capsys):
    x = jax.random.normal(jax.random.key(42), (4, 32))
    model = bridge.ToNNX(LinenDot(64), rngs=nnx.Rngs(0))  # => `model = LinenDot(64)` in Linen
    bridge.lazy_init(model, x)  # => `var = model.init(key, x)` in Linen
    y = model(x)  # => `y = model.apply(var, x)` in Linen

    text = displayed(capsys, model)

    # In-place swap your weight array and the model still works!
    model.params["w"].value = jax.random.normal(jax.random.key(1), (32, 64))
    assert not jnp.allclose(y, model(x))

    # The documented display: the module, its rngs (count 1 after lazy_init and one call),
    # its collections and the params.
    assert text.startswith("ToNNX(")
    assert "out_dim = 64" in text
    assert "linen_collections=('params',)" in text
    assert "Array(shape=(32, 64)" in text
    assert_rngs_shown(text, count=1)
    assert model.linen_collections == ("params",)
    assert list(model.params) == ["w"]
    assert model.rngs.default.count.value == 2  # one draw per call: the display's 1, then 2
    np.testing.assert_array_equal(jax.random.key_data(model.rngs.default.key.value), [0, 0])
    assert y.shape == (4, 64)
    # The swapped weight is the one the model uses now.
    np.testing.assert_allclose(model(x), x @ model.params["w"].value, rtol=1e-6)


class NNXOuter(nnx.Module):
    def __init__(self, out_dim: int, rngs: nnx.Rngs):
        self.dot = bridge.ToNNX(LinenDot(out_dim), rngs=rngs)
        self.b = nnx.Param(
            jax.random.uniform(
                rngs.params(),
                (
                    1,
                    out_dim,
                ),
            )
        )

    def __call__(self, x):
        return self.dot(x) + self.b


def test_basics_lazy_init_of_nnx_outer(capsys):
    x = jax.random.normal(jax.random.key(42), (4, 32))
    model = bridge.lazy_init(NNXOuter(64, rngs=nnx.Rngs(0)), x)  # Can fit them into one line too
    text = displayed(capsys, model)

    assert isinstance(model, NNXOuter)
    assert text.startswith("NNXOuter(")
    assert "linen_collections=('params',)" in text
    assert "Array(shape=(32, 64)" in text and "Array(shape=(1, 64)" in text
    # The only draw was `b`'s: lazy_init consumes no randomness.
    assert_rngs_shown(text, count=1)

    assert isinstance(model.dot.params["w"], nnx.Param)
    assert isinstance(model.dot.params["w"].value, jax.Array)
    assert model.dot.params["w"].shape == (32, 64)
    assert model(x).shape == (4, 64)


def test_basics_partial_model_then_lazy_init(capsys):
    x = jax.random.normal(jax.random.key(42), (4, 32))

    partial_model = NNXOuter(64, rngs=nnx.Rngs(0))
    partial_text = displayed(capsys, partial_model)

    assert "linen_collections=()" in partial_text
    assert "params=" not in partial_text
    assert "Array(shape=(1, 64)" in partial_text  # `b` is created as usual
    assert_rngs_shown(partial_text, count=1)
    assert partial_model.dot.linen_collections == ()

    full_model = bridge.lazy_init(partial_model, x)
    full_text = displayed(capsys, full_model)

    assert full_model is partial_model
    assert "linen_collections=('params',)" in full_text
    assert "Array(shape=(32, 64)" in full_text
    assert_rngs_shown(full_text, count=1)
    assert full_model.dot.params["w"].shape == (32, 64)


# -- Handling RNG keys / Linen to NNX ------------------------------------------------------


def test_rng_dropout_differs_and_reseed_reproduces():
    x = jax.random.normal(jax.random.key(42), (4, 32))
    model = bridge.ToNNX(nn.Dropout(rate=0.5, deterministic=False), rngs=nnx.Rngs(dropout=0))
    bridge.lazy_init(model, x)  # We don't really need this b/c no extra params were
    # created here, but it's a good practice to always add
    # this line.
    y1, y2 = model(x), model(x)
    assert not jnp.allclose(y1, y2)  # Two runs yield different outputs!

    # Reset the dropout RNG seed, so that next model run will be the same as the first.
    # Today's `nnx.reseed(model, dropout=0)` sets the stream key to `nnx.Rngs(dropout=0)
    # .dropout()` instead of `jax.random.key(0)`, which breaks this line for a native
    # nnx.Dropout just the same. The policy below (plain NNX API) restores the old key.
    nnx.reseed(model, dropout=0, policy=lambda path, key, shape: jax.random.key(0))
    assert jnp.allclose(y1, model(x))


def test_rng_plain_reseed_reproduces_a_call():
    x = jax.random.normal(jax.random.key(42), (4, 32))
    model = bridge.ToNNX(nn.Dropout(rate=0.5, deterministic=False), rngs=nnx.Rngs(dropout=0))
    bridge.lazy_init(model, x)
    model(x)

    nnx.reseed(model, dropout=0)
    y1 = model(x)
    nnx.reseed(model, dropout=0)
    y2 = model(x)
    assert jnp.array_equal(y1, y2)
    assert not jnp.array_equal(y2, model(x))


def test_rng_calls_match_linen_with_the_streams_keys():
    """Each call draws the stream's next key, as the stateful NNX stream defines it."""
    x = jax.random.normal(jax.random.key(42), (4, 32))
    dropout = nn.Dropout(rate=0.5, deterministic=False)
    model = bridge.lazy_init(bridge.ToNNX(dropout, rngs=nnx.Rngs(dropout=0)), x)
    reference = nnx.Rngs(dropout=0)
    for _ in range(2):
        expected = dropout.apply({}, x, rngs={"dropout": reference.dropout()})
        np.testing.assert_array_equal(model(x), expected)


# -- NNX variable types vs. Linen collections / Linen to NNX -------------------------------


def make_multi_collections(x):
    class LinenMultiCollections(nn.Module):
        out_dim: int

        def setup(self):
            self.w = self.param("w", nn.initializers.lecun_normal(), (x.shape[-1], self.out_dim))
            self.b = self.param("b", nn.zeros_init(), (self.out_dim,))
            self.count = self.variable("counter", "count", lambda: jnp.zeros((), jnp.int32))

        def __call__(self, x):
            if not self.is_initializing():
                self.count.value += 1
            y = x @ self.w + self.b
            self.sow("intermediates", "dot_sum", jnp.sum(y))
            return y

    return LinenMultiCollections


DOC_W = [
    [0.35401407, 0.38010964, -0.20674096],
    [-0.7356256, 0.35613298, -0.5099556],
    [-0.4783049, 0.4310735, 0.30137998],
    [-0.6102254, -0.2668519, -1.053598],
]


def test_collections_documented_values(old_threefry, capsys):
    x = jax.random.normal(jax.random.key(42), (2, 4))
    LinenMultiCollections = make_multi_collections(x)
    model = bridge.lazy_init(bridge.ToNNX(LinenMultiCollections(3), rngs=nnx.Rngs(0)), x)
    capsys.readouterr()
    print(model.params["w"])  # Of type `nnx.Param` - note this is still under attribute
    # `params`
    print(model.params["b"])  # Of type `nnx.Param`
    print(model.counter["count"])  # Of type `counter` - an auto-created dummy type from the
    # name "counter"
    print(type(model.counter["count"]))

    y = model(x, mutable=True)  # Linen's `sow()` needs `mutable=True` to trigger
    print(model.intermediates["dot_sum"])  # Of type `nnx.Intermediates`
    out = capsys.readouterr().out

    assert type(model.params["w"]) is nnx.Param
    np.testing.assert_allclose(model.params["w"].value, DOC_W, rtol=1e-6)
    assert type(model.params["b"]) is nnx.Param
    np.testing.assert_array_equal(model.params["b"].value, [0.0, 0.0, 0.0])
    assert type(model.counter["count"]).__name__ == "counter"
    assert re.search(r"<class '[\w.]*\bcounter'>", out)
    assert out.count("Param(") == 2 and "counter(" in out and "Intermediate(" in out

    dot_sum = model.intermediates["dot_sum"]
    assert isinstance(dot_sum, tuple) and len(dot_sum) == 1
    assert type(dot_sum[0]) is nnx.Intermediate
    np.testing.assert_allclose(dot_sum[0].value, 6.932987, rtol=1e-6)
    # The call ran with mutable=True, so the counter advanced once.
    assert model.counter["count"].value == 1
    assert y.shape == (2, 3)


def test_collections_split_by_type_and_merge():
    x = jax.random.normal(jax.random.key(42), (2, 4))
    LinenMultiCollections = make_multi_collections(x)
    model = bridge.lazy_init(bridge.ToNNX(LinenMultiCollections(3), rngs=nnx.Rngs(0)), x)
    y = model(x, mutable=True)

    # Separate variables of different types with nnx.split
    CountType = type(model.counter["count"])
    static, params, counter, the_rest = nnx.split(model, nnx.Param, CountType, ...)
    print("All Params:", list(params["params"].keys()))
    print("All Counters:", list(counter["counter"].keys()))
    print("All the rest (intermediates and RNG keys):", list(the_rest.keys()))

    model = nnx.merge(static, params, counter, the_rest)  # You can merge them back at any time

    assert sorted(params["params"].keys()) == ["b", "w"]
    assert list(counter["counter"].keys()) == ["count"]
    assert sorted(the_rest.keys()) == ["intermediates", "rngs"]
    assert list(params.keys()) == ["params"] and list(counter.keys()) == ["counter"]
    assert model.linen_collections == ("params", "counter", "intermediates")
    assert model.counter["count"].value == 1
    # The merged model is whole: same output, and the counter goes on counting.
    np.testing.assert_array_equal(model(x, mutable=["counter"]), y)
    assert model.counter["count"].value == 2


@pytest.mark.parametrize("example", ["dot", "multi_collections", "dense_004"])
def test_initial_variables_equal_linen_init(example):
    """With today's JAX config, ToNNX(m, rngs=nnx.Rngs(0)) creates m.init(key(0), x)."""
    x = jax.random.normal(jax.random.key(42), (2, 4))
    module = {
        "dot": LinenDot(3),
        "multi_collections": make_multi_collections(x)(3),
        "dense_004": nn.Dense(features=64),
    }[example]
    model = bridge.ToNNX(module, rngs=nnx.Rngs(0)).lazy_init(x)
    expected = module.init(jax.random.key(0), x)

    assert set(model.linen_collections) == set(expected)
    for collection, tree in expected.items():
        got = jax.tree.map(lambda v: v.value, getattr(model, collection), is_leaf=bridge_var)
        jax.tree.map(np.testing.assert_array_equal, got, dict(tree))


def bridge_var(x):
    return isinstance(x, nnx.Variable)


# -- API reference (004): ToNNX --------------------------------------------------------------


def test_api_reference_to_nnx_example():
    linen_module = nn.Dense(features=64)
    x = jax.numpy.ones((1, 32))
    # Like Linen init(), initialize with a sample input
    model = bridge.ToNNX(linen_module, rngs=nnx.Rngs(0)).lazy_init(x)
    # Like Linen apply(), but using NNX's direct call method
    y = model(x)

    assert model.kernel.shape == (32, 64)
    assert isinstance(model, bridge.ToNNX) and isinstance(model, nnx.Module)
    assert model.kernel is model.params["kernel"]
    assert y.shape == (1, 64)
    variables = {"params": {"kernel": model.kernel.value, "bias": model.bias.value}}
    np.testing.assert_allclose(y, linen_module.apply(variables, x), rtol=1e-6)
