"""Every user-facing error of Linen-style modules: its type and what its message says."""

import flax.errors
import jax
import jax.numpy as jnp
import pytest
from flax import linen as nn
from flax import nnx

import linnx
import linnx.module as lm

X = jnp.ones((2, 4))


class MLP(lm.Module):
    @lm.compact
    def __call__(self, x):
        x = lm.nn.Dense(3)(x)
        return lm.nn.Dense(2)(x)


class WithDropout(lm.Module):
    @lm.compact
    def __call__(self, x):
        return lm.nn.Dropout(0.5, deterministic=False)(lm.nn.Dense(3)(x))


def test_every_error_is_a_linnx_error():
    for cls in (lm.NameInUseError, lm.ModuleDefinitionError):
        assert issubclass(cls, linnx.LinnxError)
    assert issubclass(lm.NameInUseError, ValueError)
    assert issubclass(lm.ModuleDefinitionError, TypeError)


class TestCreation:
    def test_calling_before_lazy_init(self):
        with pytest.raises(
            linnx.NotInitializedError,
            match=r"MLP: a plain call cannot create "
            r"the submodule 'Dense_0'(.|\n)*linnx.lazy_init\(model, x\)",
        ):
            MLP(rngs=nnx.Rngs(0))(X)

    def test_setup_before_lazy_init(self):
        class Setup(lm.Module):
            def setup(self):
                self.dense = lm.nn.Dense(2)

            def __call__(self, x):
                return self.dense(x)

        with pytest.raises(linnx.NotInitializedError, match="setup()"):
            Setup(rngs=nnx.Rngs(0))(X)
        with pytest.raises(AttributeError, match="created by setup"):
            Setup(rngs=nnx.Rngs(0)).dense  # noqa: B018

    def test_lazy_init_without_rngs(self):
        with pytest.raises(
            linnx.RngStreamError,
            match=r"make_rng\('params'\): no rngs are "
            r"available(.|\n)*rngs=nnx.Rngs\(0\)",
        ):
            linnx.lazy_init(MLP(), X)

    def test_missing_stream(self):
        with pytest.raises(
            linnx.RngStreamError,
            match=r"there is no 'dropout' stream(.|\n)*"
            r"Streams available: \['noise'\]",
        ):
            lm.nn.Dropout(0.5, deterministic=False, rngs=nnx.Rngs(noise=0)).lazy_init(X)

    def test_missing_stream_of_an_nnx_layer_under_apply(self):
        class Model(lm.Module):
            @lm.compact
            def __call__(self, x):
                return self.submodule(nnx.Dropout, 0.5, deterministic=True)(x)

        variables = Model().init(0, X)
        with pytest.raises(
            linnx.RngStreamError,
            match=r"an NNX layer built in this module "
            r"needs an rng stream(.|\n)*rngs=\{'dropout': key\}",
        ):
            Model().apply(variables, X)
        assert jnp.array_equal(Model().apply(variables, X, rngs={"dropout": 0}), X)

    def test_child_called_without_its_parent(self):
        model = linnx.lazy_init(WithDropout(rngs=nnx.Rngs(0)), X)
        with pytest.raises(linnx.RngStreamError, match="call the submodule through its parent"):
            model.Dropout_0(X)


class TestNames:
    def test_same_explicit_name_twice_in_one_call(self):
        class Twice(lm.Module):
            @lm.compact
            def __call__(self, x):
                x = lm.nn.Dense(3, name="proj")(x)
                return lm.nn.Dense(3, name="proj")(x)

        with pytest.raises(lm.NameInUseError, match="'proj' is used twice in one call"):
            Twice().init(0, X)

    def test_name_clash_is_also_linens_error(self):
        # Code ported from Linen catches flax.errors.NameInUseError; it must keep working.
        class Twice(lm.Module):
            @lm.compact
            def __call__(self, x):
                return lm.nn.Dense(3, name="proj")(lm.nn.Dense(3, name="proj")(x))

        with pytest.raises(flax.errors.NameInUseError, match="'proj' is used twice") as info:
            Twice().init(0, X)
        assert isinstance(info.value, linnx.LinnxError)

    def test_variable_named_like_a_submodule(self):
        class Clash(lm.Module):
            @lm.compact
            def __call__(self, x):
                x = lm.nn.Dense(3)(x)
                return x * self.param("Dense_0", nnx.initializers.ones, (3,))

        with pytest.raises(
            lm.NameInUseError,
            match=r"'Dense_0' is already a Dense, so it "
            r"cannot name a variable of the collection 'params'",
        ):
            Clash().init(0, X)

    def test_submodule_named_like_a_method(self):
        class Clash(lm.Module):
            @lm.compact
            def __call__(self, x):
                return lm.nn.Dense(3, name="encode")(x)

            def encode(self, x):
                return x

        with pytest.raises(lm.NameInUseError, match="'encode' is a method of Clash"):
            Clash().init(0, X)


class TestDefinition:
    def test_two_compact_methods(self):
        with pytest.raises(
            lm.ModuleDefinitionError,
            match=r"2 compact methods \(decode, "
            r"encode\); a module may have at most one",
        ):

            class TwoCompact(lm.Module):
                @lm.compact
                def encode(self, x):
                    return x

                @nn.compact  # Linen's marker counts too
                def decode(self, x):
                    return x

    def test_linen_module_called_inline(self):
        class Inline(lm.Module):
            @lm.compact
            def __call__(self, x):
                return nn.Dense(3)(x)

        with pytest.raises(
            lm.ModuleDefinitionError,
            match=r"a Linen module was called(.|\n)*"
            r"self.submodule\(nn.Dense\(features\)\)",
        ):
            Inline().init(0, X)

    def test_submodule_created_outside_compact_and_never_assigned(self):
        class Plain(lm.Module):
            def __call__(self, x):
                return lm.nn.Dense(3)(x)

        with pytest.raises(
            lm.ModuleDefinitionError,
            match=r"belongs to no parent: it was "
            r"created outside a compact method",
        ):
            Plain().init(0, X)

    def test_parent_none_module_called_inside_a_parent(self):
        class Detached(lm.Module):
            @lm.compact
            def __call__(self, x):
                return lm.nn.Dense(3, parent=None)(x)

        with pytest.raises(lm.ModuleDefinitionError, match="created with parent=None"):
            Detached().init(0, X)

    def test_parent_other_than_none_or_self(self):
        class Adopter(lm.Module):
            @lm.compact
            def __call__(self, x):
                return lm.nn.Dense(3, parent=lm.nn.Dense(1))(x)

        with pytest.raises(lm.ModuleDefinitionError, match="parent may only be None"):
            Adopter().init(0, X)

    def test_submodule_outside_a_compact_method(self):
        class Setup(lm.Module):
            def setup(self):
                self.linear = self.submodule(nnx.Linear, 4, 2)

            def __call__(self, x):
                return self.linear(x)

        with pytest.raises(
            lm.ModuleDefinitionError,
            match=r"submodule\(...\) builds a child "
            r"in a compact method(.|\n)*self.linear = nnx.Linear",
        ):
            Setup().init(0, X)

    def test_submodule_given_a_built_module(self):
        class Built(lm.Module):
            @lm.compact
            def __call__(self, x):
                return self.submodule(nnx.Linear(4, 2, rngs=nnx.Rngs(0)))(x)

        with pytest.raises(
            linnx.BridgeTypeError,
            match=r"got a built Linear(.|\n)*"
            r"self.submodule\(nnx.Linear, 3, 4\)",
        ):
            Built().init(0, X)

    def test_flag_left_unset(self):
        model = linnx.lazy_init(lm.nn.Dropout(0.5, rngs=nnx.Rngs(0)), X)
        with pytest.raises(
            lm.ModuleDefinitionError,
            match=r"Dropout needs `deterministic`"
            r"(.|\n)*model.train\(\) / model.eval\(\)",
        ):
            model(X)


@pytest.fixture(scope="module")
def variables():
    return MLP().init(jax.random.key(0), X)


class TestApply:
    def test_unknown_method(self, variables):
        with pytest.raises(
            linnx.UnknownMethodError,
            match=r"MLP has no method named 'encode'"
            r"(.|\n)*Available methods: __call__",
        ):
            MLP().apply(variables, X, method="encode")

    def test_params_passed_without_the_collection(self, variables):
        with pytest.raises(
            linnx.StructureMismatchError,
            match=r"missing \(1\): "
            r"params/Dense_0/kernel(.|\n)*Did you pass variables\['params'\]",
        ):
            MLP().apply(variables["params"], X)
        with pytest.raises(linnx.BridgeTypeError, match=r"Did you pass variables\['params'\]"):
            MLP().apply({"params": variables["params"]["Dense_0"]["kernel"]}, X)

    def test_missing_variable(self, variables):
        params = {k: v for k, v in variables["params"].items() if k != "Dense_1"}
        with pytest.raises(
            linnx.StructureMismatchError, match=r"missing \(1\): params/Dense_1/kernel"
        ):
            MLP().apply({"params": params}, X)

    def test_wrong_shape(self, variables):
        with pytest.raises(
            linnx.StructureMismatchError,
            match=r"mismatched at "
            r"params/Dense_0/kernel: expected shape \(5, 3\), got shape \(4, 3\)",
        ):
            MLP().apply(variables, jnp.ones((2, 5)))

    def test_write_to_an_immutable_collection(self):
        class Counter(lm.Module):
            @lm.compact
            def __call__(self):
                count = self.variable("counter", "count", jnp.zeros, (), jnp.int32)
                count[...] += 1

        variables = Counter().init(0)
        with pytest.raises(
            linnx.MutableCollectionError,
            match=r"changed counter/count, but "
            r"the collection 'counter' is not mutable(.|\n)*"
            r"mutable=\['counter'\]",
        ):
            Counter().apply(variables)

    def test_mutable_collection_that_does_not_exist(self, variables):
        with pytest.raises(
            linnx.MutableCollectionError,
            match=r"'batch_stat' is neither in "
            r"the variables nor written",
        ):
            MLP().apply(variables, X, mutable=["batch_stat"])

    def test_bad_rngs(self, variables):
        with pytest.raises(
            linnx.BridgeTypeError,
            match=r"rngs='dropout': expected a "
            r"jax.random.key",
        ):
            MLP().apply(variables, X, rngs="dropout")
