"""Behaviour of ``linnx.ToLinen`` / ``to_linen`` / ``to_linen_class`` and ``linnx.NNXMeta``.

Expected values come from native Flax (the same NNX module run directly, or Linen's own
machinery), never from linnx's output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _trees import assert_linen_matches, copy_from_linen
from flax import linen as nn
from flax import nnx

import linnx

# -- helpers ---------------------------------------------------------------------------------


class AutoEncoder(nnx.Module):
    constructed = 0  # class-level counter of constructor calls

    def __init__(self, din: int, dhidden: int, *, rngs: nnx.Rngs):
        type(self).constructed += 1
        self.enc = nnx.Linear(din, dhidden, rngs=rngs)
        self.dec = nnx.Linear(dhidden, din, rngs=rngs)

    def encode(self, x):
        return self.enc(x)

    def decode(self, z):
        return self.dec(z)

    def __call__(self, x):
        return self.decode(self.encode(x))


X = jnp.arange(12.0).reshape(3, 4) / 10


# -- NNXMeta ---------------------------------------------------------------------------------


def test_nnxmeta_fields_unbox_replace():
    value = jnp.ones((2, 3))
    box = linnx.NNXMeta(nnx.Param, value, {"foo": 1})
    assert box.var_type is nnx.Param
    assert box.value is value
    assert box.metadata == {"foo": 1}
    assert box.unbox() is value
    assert box.shape == (2, 3)
    new = box.replace_boxed(jnp.zeros((4,)))
    assert isinstance(new, linnx.NNXMeta)
    assert new.var_type is nnx.Param and new.metadata == {"foo": 1}
    np.testing.assert_array_equal(new.unbox(), jnp.zeros((4,)))
    # A pytree whose only leaf is the value (Linen's AxisMetadata contract).
    assert jax.tree_util.tree_leaves(box) == [value]
    doubled = jax.tree_util.tree_map(lambda a: a * 2, box)
    assert isinstance(doubled, linnx.NNXMeta)
    np.testing.assert_array_equal(doubled.value, 2 * value)


def test_nnxmeta_axes_with_partition_name():
    box = linnx.NNXMeta(nnx.Param, jnp.ones((2, 3)), {"sharding": ("in", "out")})
    assert box.get_partition_spec() == jax.sharding.PartitionSpec("in", "out")
    params = {nn.PARTITION_NAME: "layers"}
    added = box.add_axis(0, params)
    assert added.get_partition_spec() == jax.sharding.PartitionSpec("layers", "in", "out")
    assert added.remove_axis(0, params).get_partition_spec() == box.get_partition_spec()
    # Same behaviour as Linen's own nn.Partitioned for the same operation.
    linen_box = nn.Partitioned(jnp.ones((2, 3)), names=("in", "out"))
    assert added.get_partition_spec() == linen_box.add_axis(0, params).get_partition_spec()
    # Without a partition name the new axis is replicated; still inverse.
    mid = box.add_axis(1, {})
    assert mid.get_partition_spec() == jax.sharding.PartitionSpec("in", None, "out")
    assert mid.remove_axis(1, {}).get_partition_spec() == box.get_partition_spec()


def test_nnxmeta_without_names():
    box = linnx.NNXMeta(nnx.Param, jnp.ones((2,)), {})
    assert box.get_partition_spec() == jax.sharding.PartitionSpec()
    assert box.add_axis(0, {nn.PARTITION_NAME: "l"}).remove_axis(0, {}).unbox() is box.value


def test_nnxmeta_to_nnx_variable():
    class Custom(nnx.Variable):
        pass

    box = linnx.NNXMeta(Custom, jnp.arange(3.0), {})
    var = box.to_nnx_variable()
    assert type(var) is Custom
    np.testing.assert_array_equal(var.get_value(), jnp.arange(3.0))


def test_nn_unbox_gives_raw_arrays():
    model = linnx.to_linen(AutoEncoder, 4, 2)
    variables = model.init(jax.random.key(0), X)
    unboxed = nn.unbox(variables)
    leaves = jax.tree_util.tree_leaves(unboxed["params"])
    assert len(leaves) == 4
    assert all(type(leaf) is type(jnp.ones(1)) for leaf in leaves)
    assert isinstance(variables["params"]["enc"]["kernel"], linnx.NNXMeta)
    assert unboxed["params"]["enc"]["kernel"] is variables["params"]["enc"]["kernel"].value


# -- apply: no constructor, no initializer, no copy ------------------------------------------


def test_apply_does_not_construct_or_initialize():
    inits = []

    def counting_init(key, shape, dtype=jnp.float32):
        inits.append(shape)
        return jax.random.normal(key, shape, dtype)

    class Counted(nnx.Module):
        constructed = 0

        def __init__(self, rngs):
            type(self).constructed += 1
            self.w = nnx.Param(counting_init(rngs.params(), (4, 2)))

        def __call__(self, x):
            return x @ self.w

    model = linnx.to_linen(Counted)
    variables = model.init(jax.random.key(0), X)
    assert Counted.constructed == 1 and len(inits) == 1
    for _ in range(3):
        y = model.apply(variables, X)
    jax.jit(model.apply)(variables, X)
    assert Counted.constructed == 1, "apply must not call the NNX constructor"
    assert len(inits) == 1, "apply must not run any initializer"
    np.testing.assert_allclose(y, X @ variables["params"]["w"].value, rtol=1e-6)


def test_apply_shares_the_param_arrays():
    seen = []

    class Peek(nnx.Module):
        def __init__(self, rngs):
            self.w = nnx.Param(jax.random.normal(rngs.params(), (4, 2)))

        def __call__(self, x):
            seen.append(self.w.get_value())
            return x @ self.w

    model = linnx.to_linen(Peek)
    variables = model.init(jax.random.key(0), X)
    seen.clear()
    model.apply(variables, X)
    # The rebuilt module holds the very array from `variables`: no second copy.
    assert seen[0] is variables["params"]["w"].value


# -- methods ---------------------------------------------------------------------------------


def test_methods_by_name_and_nnx_method():
    model = linnx.to_linen(AutoEncoder, 4, 2)
    variables = model.init(jax.random.key(0), X)
    native = copy_from_linen(AutoEncoder(4, 2, rngs=nnx.Rngs(1)), variables)
    z = model.apply(variables, X, method="encode")
    np.testing.assert_allclose(z, native.encode(X), rtol=1e-6)
    np.testing.assert_allclose(model.apply(variables, X, nnx_method="encode"), z, rtol=1e-6)
    np.testing.assert_allclose(
        model.apply(variables, z, method="decode"), native.decode(z), rtol=1e-6
    )
    np.testing.assert_allclose(
        model.apply(variables, X, method=lambda m, x: m.encode(x)), z, rtol=1e-6
    )
    np.testing.assert_allclose(model.apply(variables, X), native(X), rtol=1e-6)


def test_init_through_a_method():
    model = linnx.to_linen(AutoEncoder, 4, 2)
    variables = model.init(jax.random.key(0), X, method="encode")
    assert set(variables["params"]) == {"enc", "dec"}


def test_unknown_method():
    model = linnx.to_linen(AutoEncoder, 4, 2)
    variables = model.init(jax.random.key(0), X)
    with pytest.raises(linnx.UnknownMethodError, match="has no method named 'nope'"):
        model.apply(variables, X, nnx_method="nope")


# -- mutable write-back and structure changes ------------------------------------------------


def test_batchnorm_batch_stats_write_back():
    x = jax.random.normal(jax.random.key(3), (8, 4)) * 3 + 1
    model = linnx.to_linen(nnx.BatchNorm, 4)
    variables = model.init(jax.random.key(0), x)
    native = copy_from_linen(nnx.BatchNorm(4, rngs=nnx.Rngs(0)), variables)
    y, updates = model.apply(variables, x, mutable=["batch_stats"])
    y_native = native(x)
    np.testing.assert_allclose(y, y_native, rtol=1e-5, atol=1e-6)
    assert list(updates.keys()) == ["batch_stats"]
    np.testing.assert_allclose(
        updates["batch_stats"]["mean"].value, native.mean.get_value(), rtol=1e-6
    )
    np.testing.assert_allclose(
        updates["batch_stats"]["var"].value, native.var.get_value(), rtol=1e-6
    )
    # Without mutable the update would be lost: refused, as Linen refuses it (issue 14,
    # item 7; before, the statistics were silently dropped).
    with pytest.raises(linnx.MutableCollectionError, match="batch_stats/mean"):
        model.apply(variables, x)
    # Evaluation mode through an NNX keyword argument uses the stored statistics.
    native.eval()
    variables |= updates
    np.testing.assert_allclose(
        model.apply(variables, x, use_running_average=True), native(x), rtol=1e-5, atol=1e-6
    )


class Growing(nnx.Module):
    def __init__(self, rngs):
        self.calls = nnx.Variable(jnp.array(0))

    def __call__(self, x):
        n = int(self.calls.get_value()) + 1
        self.calls.set_value(jnp.array(n))
        setattr(self, f"p{n}", nnx.Param(jnp.full((), float(n))))
        return x


def test_structure_change_needs_nnx_mutable():
    model = linnx.to_linen(Growing)
    # A top-level init stores what the constructor built: no forward pass, so no p1.
    variables = model.init(jax.random.key(0), X)
    assert "params" not in variables
    with pytest.raises(linnx.StructureMismatchError, match=r"mutable=\['nnx'"):
        model.apply(variables, X, mutable=["params"])
    with pytest.raises(linnx.LinnxError, match=r"changed its structure(?s:.*)init_with_output"):
        model.apply(variables, X)
    _, updates = model.apply(variables, X, mutable=["nnx", "params", "Variable"])
    assert sorted(updates["params"]) == ["p1"]
    variables = {**variables, **updates}
    _, updates = model.apply(variables, X, mutable=True)
    assert sorted(updates["params"]) == ["p1", "p2"]
    assert updates["params"]["p2"].value == 2.0


def test_init_with_output_keeps_created_variables_and_constructor_state():
    model = linnx.to_linen(Growing)
    _, variables = model.init_with_output(jax.random.key(0), X)
    # p1 was created by the pass; the counter the pass advanced keeps its constructor value.
    assert list(variables["params"]) == ["p1"]
    assert variables["Variable"]["calls"].value == 0


def test_init_is_constructor_state_without_forward_pass():
    calls = []

    class Spy(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(4, 2, rngs=rngs)
            self.bn = nnx.BatchNorm(2, rngs=rngs)

        def __call__(self, x):
            calls.append(x.shape)
            return self.bn(self.linear(x))

    model = linnx.to_linen(Spy)
    variables = model.init(jax.random.key(0), X)
    assert calls == []
    y, with_output = model.init_with_output(jax.random.key(0), X)
    assert calls == [X.shape]
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, nn.unbox(variables), nn.unbox(with_output)
    )
    # The statistics are the constructor's (zeros/ones), as in a freshly built native model.
    native = Spy(nnx.Rngs(0))
    np.testing.assert_array_equal(
        variables["batch_stats"]["bn"]["mean"].value, native.bn.mean.get_value()
    )
    # Inside a Linen parent the output is needed, so the pass runs, with the same state.

    class Parent(nn.Module):
        @nn.compact
        def __call__(self, x):
            return linnx.to_linen(Spy, name="spy")(x)

    parent_vars = Parent().init(jax.random.key(0), X)
    assert calls == [X.shape, X.shape]
    np.testing.assert_array_equal(
        parent_vars["batch_stats"]["spy"]["bn"]["mean"].value, native.bn.mean.get_value()
    )


# -- jit, nesting, hashing, to_linen_class ---------------------------------------------------


def test_jit_init_and_apply():
    model = linnx.to_linen(AutoEncoder, 4, 2)
    eager = model.init(jax.random.key(0), X)
    jitted = jax.jit(model.init)(jax.random.key(0), X)
    jax.tree_util.tree_map(
        np.testing.assert_allclose, nn.unbox(eager["params"]), nn.unbox(jitted["params"])
    )
    np.testing.assert_allclose(jax.jit(model.apply)(jitted, X), model.apply(eager, X), rtol=1e-6)
    apply_encode = jax.jit(lambda v, x: model.apply(v, x, method="encode"))
    np.testing.assert_allclose(
        apply_encode(jitted, X), model.apply(eager, X, method="encode"), rtol=1e-6
    )


def test_jit_dropout_both_rng_styles():
    x = jnp.ones((4, 16))
    model = linnx.to_linen(nnx.Dropout, 0.5)
    variables = jax.jit(model.init)({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
    apply = jax.jit(model.apply, static_argnames="mutable")
    y1, upd = apply(variables, x, mutable=("RngCount",))
    y2, _ = apply({**variables, **upd}, x, mutable=("RngCount",))
    assert not jnp.allclose(y1, y2)
    assert upd["RngCount"]["rngs"]["dropout"]["count"].value == 1
    apply_keyed = jax.jit(lambda v, x, k: model.apply(v, x, rngs={"dropout": k}))
    a = apply_keyed(variables, x, jax.random.key(5))
    b = apply_keyed(variables, x, jax.random.key(5))
    np.testing.assert_array_equal(a, b)


def test_auto_named_submodule_inside_linen_parent():
    class Parent(nn.Module):
        @nn.compact
        def __call__(self, x):
            a = linnx.to_linen(AutoEncoder, 4, 2)
            b = linnx.ToLinen(AutoEncoder, args=(4, 3))
            return a(x) + b(x) + nn.Dense(4)(x)

    variables = Parent().init(jax.random.key(0), X)
    assert sorted(variables["params"]) == ["Dense_0", "ToLinen_0", "ToLinen_1"]
    assert sorted(variables["nnx"]) == ["ToLinen_0", "ToLinen_1"]
    assert variables["params"]["ToLinen_1"]["enc"]["kernel"].shape == (4, 3)
    # The sibling submodules draw different params.
    assert not np.allclose(
        variables["params"]["ToLinen_0"]["enc"]["kernel"].value,
        variables["params"]["ToLinen_1"]["enc"]["kernel"].value[:, :2],
    )
    natives = [
        copy_from_linen(
            AutoEncoder(4, h, rngs=nnx.Rngs(0)), {c: variables[c][name] for c in ("params",)}
        )
        for name, h in (("ToLinen_0", 2), ("ToLinen_1", 3))
    ]
    dense = nn.Dense(4).apply({"params": variables["params"]["Dense_0"]}, X)
    expected = natives[0](X) + natives[1](X) + dense
    np.testing.assert_allclose(Parent().apply(variables, X), expected, rtol=1e-5)


def test_hash_and_equality():
    a = linnx.to_linen(AutoEncoder, 4, dhidden=2)
    b = linnx.ToLinen(AutoEncoder, args=[4], kwargs={"dhidden": 2})
    assert a == b
    assert hash(a) == hash(b)
    assert a != linnx.to_linen(AutoEncoder, 4, dhidden=3)
    assert len({a, b}) == 1

    # Usable as a static argument of jax.jit (pitfall #1).
    static = jax.jit(lambda m, v, x: m.apply(v, x), static_argnums=0)
    variables = a.init(jax.random.key(0), X)
    np.testing.assert_allclose(static(b, variables, X), a.apply(variables, X), rtol=1e-6)


def test_to_linen_class():
    Linear = linnx.to_linen_class(nnx.Linear, use_bias=False)
    assert issubclass(Linear, linnx.ToLinen)
    layer = Linear(args=(4, 2))
    variables = layer.init(jax.random.key(0), X)
    assert list(variables["params"]) == ["kernel"]
    np.testing.assert_allclose(
        layer.apply(variables, X), X @ variables["params"]["kernel"].value, rtol=1e-6
    )
    # Instance kwargs override the defaults; equal instances hash equal.
    with_bias = Linear(args=(4, 2), kwargs={"use_bias": True})
    assert sorted(with_bias.init(jax.random.key(0), X)["params"]) == ["bias", "kernel"]
    assert Linear(args=(4, 2)) == Linear(args=(4, 2))
    assert hash(Linear(args=(4, 2))) == hash(Linear(args=(4, 2)))

    class Parent(nn.Module):
        @nn.compact
        def __call__(self, x):
            return Linear(args=(4, 2))(x)

    assert list(Parent().init(jax.random.key(0), X)["params"]) == ["Linear_0"]


# -- round trips -----------------------------------------------------------------------------


class MLP(nnx.Module):
    def __init__(self, din, rngs):
        self.l1 = nnx.Linear(din, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.l2 = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
        return self.l2(nnx.relu(self.bn(self.l1(x))))


@pytest.mark.parametrize("jit", [False, True])
def test_round_trip_tonnx_of_tolinen(jit):
    x = jax.random.normal(jax.random.key(1), (5, 4))
    outer = linnx.ToNNX(linnx.to_linen(MLP, 4), rngs=nnx.Rngs(0))
    linnx.lazy_init(outer, x)
    # The Linen variables ToNNX holds are ToLinen's layout; a native MLP with the same state
    # must compute the same thing and update its batch stats the same way.
    variables = nn.unbox(nnx.to_pure_dict(nnx.state(outer)))
    assert variables["params"]["l1"]["kernel"].shape == (4, 8)
    native = MLP(4, rngs=nnx.Rngs(7))
    for path, var in nnx.to_flat_state(nnx.state(native)):
        node = variables[linnx.variable_name_from_type(type(var))]
        for key in path:
            node = node[str(key)]
        var.set_value(node)
    if jit:
        step = nnx.jit(lambda m, x: m(x, mutable=["batch_stats"]))
        native_step = nnx.jit(lambda m, x: m(x))
    else:
        step = lambda m, x: m(x, mutable=["batch_stats"])  # noqa: E731
        native_step = lambda m, x: m(x)  # noqa: E731
    for _ in range(2):
        np.testing.assert_allclose(step(outer, x), native_step(native, x), rtol=1e-5, atol=1e-6)
    stats = nn.unbox(nnx.to_pure_dict(nnx.state(outer)))["batch_stats"]
    for name in ("mean", "var"):
        np.testing.assert_allclose(
            stats["bn"][name], getattr(native.bn, name).get_value(), rtol=1e-5, atol=1e-6
        )


class HoldsToNNX(nnx.Module):
    def __init__(self, rngs):
        self.dense = linnx.ToNNX(nn.Dense(3), rngs=rngs)
        self.lin = nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, x):
        return self.lin(nnx.relu(self.dense(x)))


@pytest.mark.parametrize("jit", [False, True])
def test_round_trip_tolinen_of_module_holding_tonnx(jit):
    x = jax.random.normal(jax.random.key(1), (5, 4))
    model = linnx.to_linen(HoldsToNNX)
    init = jax.jit(model.init) if jit else model.init
    apply = jax.jit(model.apply, static_argnames="mutable") if jit else model.apply
    variables = init(jax.random.key(0), x)
    assert variables["params"]["dense"]["params"]["kernel"].shape == (4, 3)
    assert variables["params"]["lin"]["kernel"].shape == (3, 2)
    # The unwrapped module (ToLinen feeds the Linen init key as the `params` stream),
    # lazily initialized natively, then given the same state.
    native = linnx.lazy_init(HoldsToNNX(nnx.Rngs(params=3)), x)
    copy_from_linen(native, variables)
    assert_linen_matches(variables, nnx.state(native))
    for _ in range(2):
        y, updates = apply(variables, x, mutable=True)
        np.testing.assert_allclose(y, native(x), rtol=1e-5, atol=1e-6)
        variables = {**variables, **updates}
        # The ToNNX rng count advanced in both, the same way.
        assert_linen_matches(variables, nnx.state(native))

    # Under an outer Linen parent too.
    class Parent(nn.Module):
        @nn.compact
        def __call__(self, x):
            return linnx.to_linen(HoldsToNNX)(x)

    pv = Parent().init(jax.random.key(0), x)
    assert pv["params"]["ToLinen_0"]["dense"]["params"]["kernel"].shape == (4, 3)
    # The ToNNX inside draws from its own rngs on every call (its count advances): the
    # count is kept with mutable=['RngCount'], or the call is given Linen keys.
    assert Parent().apply(pv, x, mutable=["RngCount"])[0].shape == (5, 2)
    assert Parent().apply(pv, x, rngs={"params": jax.random.key(1)}).shape == (5, 2)
    with pytest.raises(linnx.MutableCollectionError, match="RngCount/dense/rngs/params/count"):
        Parent().apply(pv, x)


# -- errors ----------------------------------------------------------------------------------


def test_error_instance_instead_of_class():
    instance = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    with pytest.raises(linnx.BridgeTypeError, match=r"got an instance of Linear.*\n.*") as e:
        linnx.ToLinen(instance)
    assert "linnx.to_linen(Linear, *args, **kwargs)" in str(e.value)
    with pytest.raises(linnx.BridgeTypeError, match="instance of Linear"):
        linnx.to_linen(instance)
    assert isinstance(e.value, TypeError)


def test_error_class_without_rngs():
    class NoRngs(nnx.Module):
        def __init__(self, scale: float = 2.0):
            self.scale = scale

        def __call__(self, x):
            return x * self.scale

    with pytest.raises(linnx.BridgeTypeError, match=r"(?s)takes no `rngs`.*skip_rng=True"):
        linnx.to_linen(NoRngs)
    with pytest.raises(linnx.BridgeTypeError, match="skip_rng=True"):
        linnx.ToLinen(NoRngs, kwargs={"scale": 3.0})
    model = linnx.ToLinen(NoRngs, kwargs={"scale": 3.0}, skip_rng=True)
    variables = model.init(jax.random.key(0), X)
    np.testing.assert_allclose(model.apply(variables, X), 3 * X)


def test_error_variables_do_not_match_graphdef():
    model = linnx.to_linen(AutoEncoder, 4, 2)
    variables = model.init(jax.random.key(0), X)
    renamed = {
        "nnx": variables["nnx"],
        "params": {"enc": variables["params"]["enc"], "decoder": variables["params"]["dec"]},
    }
    with pytest.raises(linnx.StructureMismatchError) as e:
        model.apply(renamed, X)
    message = str(e.value)
    assert "missing" in message and "params/dec/kernel" in message and "params/dec/bias" in message
    assert "unexpected" in message and "params/decoder/kernel" in message
    assert isinstance(e.value, linnx.LinnxError)
    with pytest.raises(linnx.StructureMismatchError, match="nnx/graphdef"):
        model.apply({"params": variables["params"]}, X)


def test_error_random_layer_without_stream():
    model = linnx.to_linen(nnx.Dropout, 0.5)
    with pytest.raises(
        linnx.RngStreamError, match=r"(?s)rngs given to this call: \['params'\].*dropout"
    ) as e:
        model.init(jax.random.key(0), X)
    assert isinstance(e.value, KeyError)  # also the error NNX raised

    class NoStream(nnx.Module):
        def __init__(self, rngs):
            self.drop = nnx.Dropout(0.5)  # keeps no stream of its own

        def __call__(self, x):
            return self.drop(x)

    model = linnx.to_linen(NoStream)
    with pytest.raises(linnx.RngStreamError, match="Fix:"):
        model.init_with_output({"params": jax.random.key(0)}, X)
    # A top-level init runs no forward pass; the first apply without a stream raises.
    variables = model.init({"params": jax.random.key(0)}, X)
    with pytest.raises(linnx.RngStreamError, match=r"nnx\.Dropout\(0\.5, rngs=rngs\)"):
        model.apply(variables, X)


def test_error_dropout_without_rngs_does_not_ask_for_the_key_it_got():
    # Issue 14, item 11 (failed before: the fix told the user to pass rngs={'dropout': key},
    # which they had just done). The layer itself has no rngs: a Linen key cannot reach it.
    class NoStream(nnx.Module):
        def __init__(self, rngs):
            self.drop = nnx.Dropout(0.5)

        def __call__(self, x):
            return self.drop(x)

    model = linnx.to_linen(NoStream)
    variables = model.init({"params": jax.random.key(0)}, X)
    with pytest.raises(linnx.RngStreamError) as e:
        model.apply(variables, X, rngs={"dropout": jax.random.key(1)})
    message = str(e.value)
    fix = message[message.index("Fix:") :]
    assert "rngs given to this call: ['dropout']" in message
    assert fix.startswith("Fix: give the layer the constructor's rngs")
    assert isinstance(e.value, ValueError)
