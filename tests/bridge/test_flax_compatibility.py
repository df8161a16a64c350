"""What code written against Flax's bridge sees (issue 14, items 9-12): errors that are also
the Flax errors they replace, the graphdef's class name, messages that point the right way,
and ``to_linen_class`` taking the NNX constructor's keywords. Each test failed before its fix.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import pytest
from flax import linen as nn
from flax import nnx

import linnx

X = jnp.ones((2, 3))


class Encoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        return self.encode(x) + nn.Dense(4, name="head")(x)

    @nn.compact
    def encode(self, x):
        return nn.Dense(4, name="enc")(x)


# -- item 9: linnx errors are also the errors they stand in for -------------------------------


def test_calling_a_method_that_lazy_init_did_not_reach_is_scope_param_not_found():
    model = linnx.ToNNX(Encoder(), rngs=nnx.Rngs(0))
    linnx.lazy_init(model.encode, X)
    with pytest.raises(flax.errors.ScopeParamNotFoundError) as e:
        model(X)
    assert isinstance(e.value, linnx.NotInitializedError)
    assert type(e.value).__name__ == "NotInitializedError"
    assert "lazy_init" in str(e.value)


def test_a_write_without_mutable_is_modify_scope_variable_error():
    model = linnx.ToNNX(nn.BatchNorm(use_running_average=False), rngs=nnx.Rngs(0))
    linnx.lazy_init(model, X)
    with pytest.raises(flax.errors.ModifyScopeVariableError) as e:
        model(X)
    assert isinstance(e.value, linnx.MutableCollectionError)
    assert "mutable=['batch_stats']" in str(e.value)


def test_a_write_at_another_trace_level_is_trace_context_error():
    model = linnx.ToNNX(nn.BatchNorm(use_running_average=False), rngs=nnx.Rngs(0))
    linnx.lazy_init(model, X)
    with pytest.raises(flax.errors.TraceContextError) as e:
        jax.jit(lambda x: model(x, mutable=["batch_stats"]))(X)
    assert isinstance(e.value, linnx.MutableCollectionError)


def test_a_shape_change_is_scope_param_shape_error():
    model = linnx.lazy_init(linnx.ToNNX(nn.Dense(4), rngs=nnx.Rngs(0)), X)
    with pytest.raises(flax.errors.ScopeParamShapeError) as e:
        model(jnp.ones((2, 5)))
    assert isinstance(e.value, linnx.StructureMismatchError)
    assert e.value.mismatched[0][0] == "params/kernel"


def test_a_missing_stream_is_invalid_rng_error():
    with pytest.raises(flax.errors.InvalidRngError) as e:
        linnx.lazy_init(linnx.ToNNX(nn.Dense(4)), X)
    assert isinstance(e.value, linnx.RngStreamError)


def test_a_bad_filter_is_invalid_filter_error():
    model = linnx.lazy_init(linnx.ToNNX(nn.Dense(4), rngs=nnx.Rngs(0)), X)
    with pytest.raises(flax.errors.InvalidFilterError) as e:
        model(X, mutable=3)
    assert isinstance(e.value, linnx.BridgeTypeError)


def test_bad_linen_rngs_are_invalid_rng_error():
    model = linnx.to_linen(nnx.Linear, 3, 4)
    with pytest.raises(flax.errors.InvalidRngError) as e:
        model.init("abc", X)
    assert isinstance(e.value, linnx.BridgeTypeError)


def test_mutable_collection_error_is_always_modify_scope_variable_error():
    assert issubclass(linnx.MutableCollectionError, flax.errors.ModifyScopeVariableError)
    error = linnx.MutableCollectionError("message")
    assert str(error) == "message"  # no Flax docs link appended


# -- item 10: the graphdef's class is named GraphDef -----------------------------------------


def test_the_stored_graphdef_is_named_graphdef():
    variables = linnx.to_linen(nnx.Linear, 3, 4).init(jax.random.key(0), X)
    graphdef = variables["nnx"]["graphdef"]
    assert type(graphdef).__name__ == "GraphDef"
    assert isinstance(graphdef, nnx.GraphDef)
    assert "GraphDef'>" in str(type(graphdef))


# -- item 11: messages --------------------------------------------------------------------------


def test_a_variable_name_before_lazy_init_says_to_call_it():
    model = linnx.ToNNX(nn.Dense(4), rngs=nnx.Rngs(0))
    with pytest.raises(linnx.UnknownMethodError, match=r"no variables yet.*lazy_init") as e:
        model.kernel  # noqa: B018
    assert "[]" not in str(e.value).split("\n", 1)[1]
    assert not hasattr(model, "kernel")  # still an AttributeError


@pytest.mark.parametrize(
    "rngs, shown",
    [
        (jax.random.key(0), "nnx.Rngs(key)"),
        (jax.random.PRNGKey(0), "nnx.Rngs(0)"),
        (0, "nnx.Rngs(0)"),
        ({"params": 0}, "nnx.Rngs(params=...)"),
    ],
    ids=["typed-key", "raw-key", "int", "dict"],
)
def test_a_wrong_rngs_is_not_printed_inside_the_fix(rngs, shown):
    with pytest.raises(linnx.BridgeTypeError) as e:
        linnx.ToNNX(nn.Dense(4), rngs=rngs)
    message = str(e.value)
    assert f"e.g. rngs={shown}." in message
    assert "Array(" not in message and "dtype=" not in message


def test_rngs_none_says_so_first():
    with pytest.raises(linnx.RngStreamError) as e:
        linnx.lazy_init(linnx.ToNNX(nn.Dense(4)), X)
    first = str(e.value).splitlines()[0]
    assert first == "ToNNX(Dense) needs the rng stream 'params', but it has no rngs (rngs=None)."


# -- item 12: to_linen_class as in Flax 0.12 ------------------------------------------------


def test_to_linen_class_takes_the_constructor_keywords():
    LinenDense = linnx.to_linen_class(nnx.Linear)
    layer = LinenDense(in_features=3, out_features=4)
    variables = layer.init(jax.random.key(0), X)
    assert variables["params"]["kernel"].shape == (3, 4)
    assert layer == LinenDense(kwargs={"in_features": 3, "out_features": 4})
    hash(layer)


def test_to_linen_class_keywords_merge_over_defaults_and_work_in_a_parent():
    LinenDense = linnx.to_linen_class(nnx.Linear, use_bias=False)

    class Parent(nn.Module):
        @nn.compact
        def __call__(self, x):
            return LinenDense(in_features=3, out_features=2, use_bias=True)(x)

    variables = Parent().init(jax.random.key(0), X)
    assert sorted(variables["params"]["Linear_0"]) == ["bias", "kernel"]
    assert Parent().apply(variables, X).shape == (2, 2)


def test_base_skip_rng_is_not_passed_to_the_constructor():
    class Scale(nnx.Module):
        def __init__(self, n: int) -> None:
            self.w = nnx.Param(jnp.ones(n))

        def __call__(self, x):
            return x * self.w

    LinenScale = linnx.to_linen_class(Scale, base_skip_rng=True)
    layer = LinenScale(n=3)
    assert layer.skip_rng is True and dict(layer.kwargs) == {"n": 3}
    variables = layer.init(jax.random.key(0), X)
    assert layer.apply(variables, X).shape == (2, 3)
