"""Auto-naming, explicit names, ``parent=None``, setup naming and scope (rngs) inheritance.

Names are checked against the real Linen ``init`` of an equivalent Linen module wherever Linen
has one, and against the NNX attributes of the stateful module.
"""

import jax
import jax.numpy as jnp
import pytest
from _trees import shapes
from flax import linen as nn
from flax import nnx

import linnx
import linnx.module as lm

X = jnp.ones((2, 4))


def test_auto_names_count_per_class_and_skip_explicit_names():
    class Linen(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(3)(x)
            x = nn.Dense(3, name="proj")(x)
            x = nn.Dense(5)(x)
            return nn.LayerNorm()(x)

    class Ours(lm.Module):
        @lm.compact
        def __call__(self, x):
            x = lm.nn.Dense(3)(x)
            x = lm.nn.Dense(3, name="proj")(x)
            x = lm.nn.Dense(5)(x)
            return lm.nn.LayerNorm()(x)

    expected = Linen().init(jax.random.key(0), X)
    variables = Ours().init(jax.random.key(0), X)
    assert shapes(variables) == shapes(expected)
    assert sorted(variables["params"]) == ["Dense_0", "Dense_1", "LayerNorm_0", "proj"]
    # Same names on the NNX side, as attributes.
    model = linnx.lazy_init(Ours(rngs=nnx.Rngs(0)), X)
    assert model.proj.kernel.shape == (3, 3)
    assert model.Dense_1.kernel.shape == (3, 5)
    assert model.proj.name == "proj" and model.Dense_0.name == "Dense_0"
    assert jnp.allclose(model(X), Linen().apply(model.variables, X))


def test_nnx_and_linen_children_are_auto_named_in_the_same_sequence():
    class Mixed(lm.Module):
        @lm.compact
        def __call__(self, x):
            x = lm.nn.Dense(3)(x)
            x = self.submodule(nnx.Linear, x.shape[-1], 5)(x)
            x = self.submodule(nn.Dense(4))(x)  # a Linen module, wrapped in ToNNX
            x = self.submodule(nnx.BatchNorm, 4, use_running_average=True)(x)
            x = self.submodule(linnx.ToNNX, nn.Dense(4))(x)  # the same, spelled out
            x = self.submodule(nnx.Linear, 4, 2, name="head")(x)
            return x

    variables = Mixed().init(jax.random.key(0), X)
    assert shapes(variables) == {
        "params": {
            "Dense_0": {"bias": (3,), "kernel": (4, 3)},
            "Linear_0": {"bias": (5,), "kernel": (3, 5)},
            "Dense_1": {"bias": (4,), "kernel": (5, 4)},
            "BatchNorm_0": {"bias": (4,), "scale": (4,)},
            "Dense_2": {"bias": (4,), "kernel": (4, 4)},
            "head": {"bias": (2,), "kernel": (4, 2)},
        },
        "batch_stats": {"BatchNorm_0": {"mean": (4,), "var": (4,)}},
    }
    model = linnx.lazy_init(Mixed(rngs=nnx.Rngs(0)), X)
    assert isinstance(model.Linear_0, nnx.Linear)
    assert isinstance(model.Dense_1, linnx.ToNNX)
    assert isinstance(model.BatchNorm_0.mean, nnx.BatchStat)
    # apply fills every kind of child from the dict, so outputs agree with the NNX module.
    assert shapes(model.variables) == shapes(variables)
    assert jnp.allclose(Mixed().apply(model.variables, X), model(X), atol=1e-6)


def test_compact_children_persist_across_calls():
    class Model(lm.Module):
        @lm.compact
        def __call__(self, x):
            dense = lm.nn.Dense(3)
            return dense(x) + dense(x)  # one module called twice shares its parameters

    class Linen(nn.Module):
        @nn.compact
        def __call__(self, x):
            dense = nn.Dense(3)
            return dense(x) + dense(x)

    assert shapes(Model().init(0, X)) == shapes(Linen().init(jax.random.key(0), X))
    model = linnx.lazy_init(Model(rngs=nnx.Rngs(0)), X)
    child, kernel = model.Dense_0, model.Dense_0.kernel
    first = model(X)
    assert jnp.array_equal(model(X), first)
    assert model.Dense_0 is child and model.Dense_0.kernel is kernel
    assert sorted(k for k, v in vars(model).items() if isinstance(v, nnx.Module)) == ["Dense_0"]


def test_setup_names_children_after_attributes_and_list_items():
    class Linen(nn.Module):
        def setup(self):
            self.layers = [nn.Dense(3), nn.Dense(4)]
            self.out = nn.Dense(2)

        def __call__(self, x):
            for layer in self.layers:
                x = layer(x)
            return self.out(x)

    class Ours(lm.Module):
        def setup(self):
            self.layers = [lm.nn.Dense(3), lm.nn.Dense(4)]
            self.out = lm.nn.Dense(2)

        def __call__(self, x):
            for layer in self.layers:
                x = layer(x)
            return self.out(x)

    expected = Linen().init(jax.random.key(0), X)
    assert shapes(Ours().init(jax.random.key(0), X)) == shapes(expected)
    assert sorted(expected["params"]) == ["layers_0", "layers_1", "out"]
    model = linnx.lazy_init(Ours(rngs=nnx.Rngs(0)), X)
    assert model.layers[1].kernel.shape == (3, 4)
    assert model.layers[0].name == "layers_0"
    # The trained-the-NNX-way state reads back in Linen's layout, which Linen itself accepts.
    assert shapes(model.variables) == shapes(expected)
    assert jnp.allclose(model(X), Linen().apply(model.variables, X), atol=1e-6)


def test_parent_none_module_is_adopted_by_the_field_it_is_passed_to():
    class Wrapper(lm.Module):
        inner: lm.Module

        @lm.compact
        def __call__(self, x):
            return self.inner(x)

    class Model(lm.Module):
        @lm.compact
        def __call__(self, x):
            template = lm.nn.Dense(3, parent=None)  # belongs to nobody yet
            return Wrapper(template)(x)

    class LinenWrapper(nn.Module):
        inner: nn.Module

        @nn.compact
        def __call__(self, x):
            return self.inner(x)

    variables = Model().init(jax.random.key(0), X)
    assert shapes(variables) == {
        "params": {"Wrapper_0": {"inner": {"bias": (3,), "kernel": (4, 3)}}}
    }
    # A top-level module passed as a field is named after the field, as in Linen.
    linen = LinenWrapper(nn.Dense(3)).init(jax.random.key(0), X)
    assert shapes(Wrapper(lm.nn.Dense(3)).init(jax.random.key(0), X)) == shapes(linen)


def test_parent_none_module_is_not_attached_to_the_compact_parent():
    class Model(lm.Module):
        @lm.compact
        def __call__(self, x):
            detached = lm.nn.Dense(3, parent=None)
            attached = lm.nn.Dense(3)
            assert detached.name is None and attached.name == "Dense_0"
            return attached(x)

    assert sorted(Model().init(jax.random.key(0), X)["params"]) == ["Dense_0"]


def test_children_draw_from_the_parents_rngs():
    class Probe(lm.Module):
        @lm.compact
        def __call__(self, x):
            return lm.nn.Dense(3)(x), self.rngs, self.make_rng("params")

    class Model(lm.Module):
        @lm.compact
        def __call__(self, x):
            return Probe()(x)

    rngs = nnx.Rngs(0)
    model = linnx.lazy_init(Model(rngs=rngs), X)
    _, seen, _ = model(X)
    assert seen is rngs  # the child holds no rngs of its own: it uses the parent's
    assert "rngs" not in vars(model.Probe_0)

    def kernel(seed):
        return linnx.lazy_init(Model(rngs=nnx.Rngs(seed)), X).Probe_0.Dense_0.kernel[...]

    assert jnp.array_equal(kernel(0), kernel(0))
    assert not jnp.array_equal(kernel(0), kernel(1))


def test_a_child_given_its_own_rngs_uses_them():
    class Block(lm.Module):
        @lm.compact
        def __call__(self, x):
            return lm.nn.Dense(3)(x)

    class Model(lm.Module):
        seed: int

        @lm.compact
        def __call__(self, x):
            return Block(rngs=nnx.Rngs(self.seed))(x)

    alone = linnx.lazy_init(Block(rngs=nnx.Rngs(7)), X).Dense_0.kernel[...]
    for parent_seed in (0, 1):
        model = linnx.lazy_init(Model(7, rngs=nnx.Rngs(parent_seed)), X)
        assert jnp.array_equal(model.Block_0.Dense_0.kernel[...], alone)


def test_per_call_flags_reach_existing_children():
    class Model(lm.Module):
        @lm.compact
        def __call__(self, x, training: bool):
            return lm.nn.Dropout(0.5, deterministic=not training)(x)

    model = linnx.lazy_init(Model(rngs=nnx.Rngs(0)), X, training=False)
    assert jnp.array_equal(model(X, training=False), X)
    assert model.Dropout_0.deterministic is True
    out = model(X, training=True)
    assert not jnp.array_equal(out, X) and model.Dropout_0.deterministic is False
    assert not jnp.array_equal(model(X, training=True), out)  # fresh keys every call
    jitted = nnx.jit(lambda m, x: m(x, training=False))
    assert jnp.array_equal(jitted(model, X), X)


def test_train_and_eval_set_flags_like_nnx_layers():
    class Model(lm.Module):
        @lm.compact
        def __call__(self, x):
            x = lm.nn.BatchNorm()(x)
            return lm.nn.Dropout(0.5)(x)

    # The creation pass needs no mode; the mode is chosen afterwards, as for NNX layers.
    model = linnx.lazy_init(Model(rngs=nnx.Rngs(0)), X + jnp.arange(4.0))
    model.train()
    assert model.Dropout_0.deterministic is False
    assert model.BatchNorm_0.use_running_average is False
    model(X + jnp.arange(4.0))
    assert not jnp.allclose(model.BatchNorm_0.mean[...], 0.0)
    model.eval()
    assert model.Dropout_0.deterministic is True
    assert jnp.array_equal(model(X), model(X))


def test_the_module_works_with_nnx_graph_and_tree_apis():
    class Model(lm.Module):
        @lm.compact
        def __call__(self, x):
            return lm.nn.Dense(2)(lm.nn.Dense(3)(x))

    model = linnx.lazy_init(Model(rngs=nnx.Rngs(0)), X)
    for graph in (True, False):
        graphdef, state = nnx.split(model, graph=graph)
        assert jnp.array_equal(nnx.merge(graphdef, state)(X), model(X))
    clone = nnx.clone(model)
    assert clone.Dense_0 is not model.Dense_0
    assert jnp.array_equal(clone(X), model(X))


@pytest.mark.parametrize("jit", [False, True])
def test_init_is_pure_and_traceable(jit):
    model = lm.nn.Dense(3)
    init = jax.jit(model.init) if jit else model.init
    variables = init(jax.random.key(0), X)
    assert shapes(variables) == {"params": {"bias": (3,), "kernel": (4, 3)}}
    assert not model.has_variable("params", "kernel")
