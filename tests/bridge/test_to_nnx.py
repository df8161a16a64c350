"""Behaviour of ToNNX and lazy_init: collections, methods, rngs, NNX APIs and errors.

Expected values come from native Linen (``module.init``/``apply`` on the same variables) or
from the NNX semantics the issue names, never from linnx itself.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _trees import assert_trees_close, assert_trees_equal, values
from flax import linen as nn
from flax import nnx

import linnx
from linnx import ToNNX, lazy_init

X = jnp.arange(6.0).reshape(2, 3) / 6


# -- helpers ---------------------------------------------------------------------------------


def is_var(x):
    return isinstance(x, nnx.Variable)


def linen_variables(model: ToNNX, *collections):
    return {c: values(getattr(model, c)) for c in collections or model.linen_collections}


def counts(model):
    """Every rng count in the model, by path."""
    return {p: int(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model, nnx.RngCount))}


def as_numpy(a):
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
        a = jax.random.key_data(a)
    return np.asarray(a)


def snapshot(model):
    """Every value in the model (rng keys as their data), as numpy arrays."""
    return jax.tree.map(as_numpy, nnx.to_pure_dict(nnx.state(model)))


# -- Linen modules used below -----------------------------------------------------------------


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.relu(nn.Dense(4)(x)))


class BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Dense(4)(x)
        return nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)


class Sower(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.Dense(3)(x)
        self.sow("intermediates", "hidden", y)
        return jnp.sum(y, axis=-1)


class Counter(nn.Module):
    @nn.compact
    def __call__(self, x):
        n = self.variable("counter", "n", lambda: jnp.zeros((), jnp.int32))
        if not self.is_initializing():
            n.value += 1
        return nn.Dense(2)(x)


class Decoder(nn.Module):
    """Creates its decoding ``cache`` only when called with ``decode=True``, after init."""

    @nn.compact
    def __call__(self, x, decode: bool = False):
        y = nn.Dense(3)(x)
        if decode:
            index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
            last = self.variable("cache", "last", lambda: jnp.zeros_like(y))
            index.value += 1
            last.value = y
        return y


class AE(nn.Module):
    def setup(self):
        self.enc = nn.Dense(2)
        self.dec = nn.Dense(3)

    def encode(self, x):
        return self.enc(x)

    def decode(self, z):
        return self.dec(z)

    def __call__(self, x):
        return self.decode(self.encode(x))


class DropNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        return nn.Dropout(0.5, deterministic=not train)(nn.Dense(8)(x))


# -- mutable collections ----------------------------------------------------------------------


@pytest.mark.parametrize("mutable", [True, ["batch_stats"], "batch_stats"], ids=repr)
def test_batch_stats_written_back_like_linen(mutable):
    module = BNNet()
    model = ToNNX(module, rngs=nnx.Rngs(0)).lazy_init(X)
    variables = module.init(jax.random.key(0), X)
    for _ in range(2):
        y = model(X * 2, mutable=mutable)
        expected, updates = module.apply(variables, X * 2, mutable=["batch_stats"])
        variables = {"params": variables["params"], **updates}
        np.testing.assert_allclose(y, expected, rtol=1e-6)
        assert_trees_close(
            values(model.batch_stats), dict(variables["batch_stats"]), rtol=1e-6, atol=0
        )
    assert type(model.batch_stats["BatchNorm_0"]["mean"]) is nnx.BatchStat


def test_batch_stats_update_keeps_variable_identity():
    model = ToNNX(BNNet(), rngs=nnx.Rngs(0)).lazy_init(X)
    mean = model.batch_stats["BatchNorm_0"]["mean"]
    before = np.asarray(mean.get_value())
    model(X * 3, mutable=["batch_stats"])
    assert model.batch_stats["BatchNorm_0"]["mean"] is mean  # references held elsewhere stay live
    assert not np.allclose(mean.get_value(), before)


def test_eval_call_leaves_batch_stats_alone():
    model = ToNNX(BNNet(), rngs=nnx.Rngs(0)).lazy_init(X)
    before = snapshot(model)
    model(X, train=False)
    after = snapshot(model)
    assert_trees_equal(after["batch_stats"], before["batch_stats"])
    assert_trees_equal(after["params"], before["params"])


def test_sow_intermediates_written_back():
    module = Sower()
    model = ToNNX(module, rngs=nnx.Rngs(0)).lazy_init(X)
    assert model.linen_collections == ("params",)  # init does not keep intermediates
    y = model(X, mutable=True)
    expected, state = module.apply(linen_variables(model, "params"), X, mutable=True)
    np.testing.assert_array_equal(y, expected)
    assert model.linen_collections == ("params", "intermediates")
    (hidden,) = model.intermediates["hidden"]
    assert type(hidden) is nnx.Intermediate
    np.testing.assert_array_equal(hidden.get_value(), state["intermediates"]["hidden"][0])
    # nnx.state with the type filter sees them as NNX intermediates.
    assert list(nnx.state(model, nnx.Intermediate)) == ["intermediates"]


def test_sow_accumulates_and_deleting_the_collection_starts_afresh():
    model = ToNNX(Sower(), rngs=nnx.Rngs(0)).lazy_init(X)
    model(X, mutable=["intermediates"])
    model(X, mutable=["intermediates"])
    assert len(model.intermediates["hidden"]) == 2  # Linen's sow appends, as with apply
    del model.intermediates
    model(X, mutable=["intermediates"])
    assert len(model.intermediates["hidden"]) == 1


def test_counter_written_back_and_immutable_write_is_a_typed_error():
    model = ToNNX(Counter(), rngs=nnx.Rngs(0)).lazy_init(X)
    assert model.counter["n"].get_value() == 0
    assert type(model.counter["n"]).__name__ == "counter"
    model(X, mutable=["counter"])
    model(X, mutable=True)
    assert model.counter["n"].get_value() == 2
    with pytest.raises(linnx.MutableCollectionError, match=r"mutable=\['counter'\]") as e:
        model(X)
    assert "'counter'" in str(e.value).splitlines()[0]
    assert model.counter["n"].get_value() == 2


def test_collection_created_after_init_is_kept():
    """Pitfall #2: a decode `cache` created under `mutable` after init."""
    module = Decoder()
    model = ToNNX(module, rngs=nnx.Rngs(0)).lazy_init(X)
    assert model.linen_collections == ("params",)

    variables = {"params": linen_variables(model)["params"]}
    for step in (1, 2):
        y = model(X + step, decode=True, mutable=["cache"])
        expected, updates = module.apply(variables, X + step, decode=True, mutable=["cache"])
        variables = {**variables, **updates}
        np.testing.assert_array_equal(y, expected)
        assert model.linen_collections == ("params", "cache")
        assert type(model.cache["index"]) is nnx.Cache
        assert model.cache["index"].get_value() == step
        assert_trees_equal(values(model.cache), dict(variables["cache"]))
    # Without decode the cache is left alone.
    model(X)
    assert model.cache["index"].get_value() == 2


def test_new_collection_under_nnx_jit():
    model = ToNNX(Decoder(), rngs=nnx.Rngs(0)).lazy_init(X)

    @nnx.jit
    def decode_step(model, x):
        return model(x, decode=True, mutable=["cache"])

    decode_step(model, X)
    decode_step(model, X)
    assert model.cache["index"].get_value() == 2


# -- methods -------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["method_kwarg", "attribute", "function"])
def test_methods(style):
    module = AE()
    model = ToNNX(module, rngs=nnx.Rngs(0)).lazy_init(X)
    variables = linen_variables(model)
    z = module.apply(variables, X, method="encode")
    call = {
        "method_kwarg": lambda name, v: model(v, method=name),
        "attribute": lambda name, v: getattr(model, name)(v),
        "function": lambda name, v: model(v, method=getattr(AE, name)),
    }[style]
    np.testing.assert_array_equal(call("encode", X), z)
    np.testing.assert_array_equal(call("decode", z), module.apply(variables, z, method="decode"))


def test_method_attribute_is_a_bound_method():
    model = ToNNX(AE(), rngs=nnx.Rngs(0))
    assert model.encode.__self__ is model
    assert model.encode.__name__ == "encode"


def test_lazy_init_through_one_method_then_another():
    module = AE()
    model = ToNNX(module, rngs=nnx.Rngs(0))
    assert lazy_init(model.encode, X) is model
    assert list(model.params) == ["enc"]
    z = jnp.ones((2, 2))

    with pytest.raises(linnx.NotInitializedError, match=r"lazy_init\(model\.decode, x\)"):
        model.decode(z)

    enc_before = np.asarray(model.params["enc"]["kernel"].get_value())
    assert lazy_init(model.decode, z) is model
    assert sorted(model.params) == ["dec", "enc"]
    np.testing.assert_array_equal(model.params["enc"]["kernel"].get_value(), enc_before)
    # Together they are the variables Linen's init creates through both methods (the
    # stream was never drawn from in between: the failed call gave its draw back).
    expected = module.init(jax.random.key(0), X)
    assert_trees_equal(linen_variables(model)["params"], dict(expected["params"]))
    np.testing.assert_array_equal(model.encode(X), module.apply(expected, X, method="encode"))


# -- rngs ------------------------------------------------------------------------------------


def test_per_call_rngs_match_linen_and_leave_own_streams_alone():
    module = DropNet()
    model = ToNNX(module, rngs=nnx.Rngs(0, dropout=1)).lazy_init(X)
    variables = linen_variables(model)
    before = counts(model)
    key = jax.random.key(7)
    expected = module.apply(variables, X, rngs={"dropout": key})
    np.testing.assert_array_equal(model(X, rngs={"dropout": key}), expected)
    np.testing.assert_array_equal(
        model(X, rngs=nnx.Rngs(dropout=7)),
        module.apply(variables, X, rngs={"dropout": nnx.Rngs(dropout=7).dropout()}),
    )
    # An int seed or a bare key serves every stream through Linen's 'params' fallback.
    np.testing.assert_array_equal(
        model(X, rngs=7), module.apply(variables, X, rngs={"params": jax.random.key(7)})
    )
    assert counts(model) == before


def test_own_rngs_draw_fresh_keys_each_call():
    module = DropNet()
    model = ToNNX(module, rngs=nnx.Rngs(0, dropout=1)).lazy_init(X)
    variables = linen_variables(model)
    reference = nnx.Rngs(dropout=1)
    y1, y2 = model(X), model(X)
    assert not np.array_equal(y1, y2)
    np.testing.assert_array_equal(
        y1, module.apply(variables, X, rngs={"dropout": reference.dropout()})
    )
    np.testing.assert_array_equal(
        y2, module.apply(variables, X, rngs={"dropout": reference.dropout()})
    )


def test_default_stream_serves_params_and_dropout():
    module = DropNet()
    model = ToNNX(module, rngs=nnx.Rngs(3)).lazy_init(X)
    expected = module.init(jax.random.key(3), X)
    assert_trees_equal(linen_variables(model), dict(expected))
    y = model(X)
    np.testing.assert_array_equal(
        y, module.apply(expected, X, rngs={"params": nnx.Rngs(3).default()})
    )


@pytest.mark.parametrize("rngs", [nnx.Rngs(5), nnx.Rngs(params=5), 5], ids=repr)
def test_per_call_rngs_at_init_equal_linen_init(rngs):
    model = ToNNX(MLP()).lazy_init(X, rngs=rngs)
    expected = MLP().init(jax.random.key(5), X)
    assert_trees_equal(linen_variables(model), dict(expected))


def test_init_without_params_stream_is_a_typed_error():
    model = ToNNX(MLP(), rngs=nnx.Rngs(dropout=0))
    with pytest.raises(linnx.RngStreamError, match=r"rngs=nnx\.Rngs\(0\)"):
        model.lazy_init(X)
    assert model.linen_collections == ()


def test_deterministic_model_under_jax_jit_closure():
    """Pitfall #5: jax.jit (not nnx.jit) closing over the model must not fail for rng counts."""
    model = ToNNX(MLP(), rngs=nnx.Rngs(0)).lazy_init(X)
    before = counts(model)
    y = jax.jit(lambda x: model(x))(X)
    np.testing.assert_allclose(y, MLP().apply(linen_variables(model), X), rtol=1e-6)
    assert counts(model) == before
    assert jax.eval_shape(lambda x: model(x), X).shape == (2, 2)


def test_dropout_under_jax_jit_closure_needs_explicit_keys():
    model = ToNNX(DropNet(), rngs=nnx.Rngs(0, dropout=1)).lazy_init(X)
    with pytest.raises(linnx.RngStreamError, match=r"nnx\.jit.*rngs=\{'dropout': key\}"):
        jax.jit(lambda x: model(x))(X)
    key = jax.random.key(2)
    y = jax.jit(lambda x, k: model(x, rngs={"dropout": k}))(X, key)
    np.testing.assert_array_equal(
        y, DropNet().apply(linen_variables(model), X, rngs={"dropout": key})
    )


def test_mutable_under_jax_jit_closure_is_a_typed_error():
    model = ToNNX(BNNet(), rngs=nnx.Rngs(0)).lazy_init(X)
    before = snapshot(model)
    with pytest.raises(linnx.MutableCollectionError, match="nnx.jit"):
        jax.jit(lambda x: model(x, mutable=["batch_stats"]))(X)
    assert_trees_equal(snapshot(model), before)


# -- leaf access ------------------------------------------------------------------------------


def test_leaf_access_by_unambiguous_name():
    model = ToNNX(BNNet(), rngs=nnx.Rngs(0)).lazy_init(X)
    assert model.kernel is model.params["Dense_0"]["kernel"]
    assert model.mean is model.batch_stats["BatchNorm_0"]["mean"]
    assert not hasattr(model, "nonexistent")


def test_ambiguous_leaf_name_is_a_typed_error():
    model = ToNNX(MLP(), rngs=nnx.Rngs(0)).lazy_init(X)
    with pytest.raises(linnx.LinnxError, match=r"'kernel' is ambiguous.*Dense_0/kernel") as e:
        _ = model.kernel
    assert isinstance(e.value, AttributeError)
    assert "model.params['Dense_0']['kernel']" in str(e.value)


def test_missing_attribute_names_what_exists():
    model = ToNNX(MLP(), rngs=nnx.Rngs(0)).lazy_init(X)
    with pytest.raises(linnx.UnknownMethodError, match=r"no attribute 'wieght'.*\['params'\]"):
        _ = model.wieght


class WithInit(nn.Module):
    w_init: object = nn.initializers.ones

    @nn.compact
    def __call__(self, x):
        return x @ self.param("w", self.w_init, (x.shape[-1], 2))


def test_callable_field_is_not_a_method():
    model = ToNNX(WithInit(), rngs=nnx.Rngs(0)).lazy_init(X)
    with pytest.raises(linnx.UnknownMethodError, match=r"(?s)field of the Linen.*module\.w_init"):
        _ = model.w_init
    with pytest.raises(linnx.UnknownMethodError, match="method='w_init'"):
        model(X, method="w_init")
    assert model.module.w_init is nn.initializers.ones


# -- NNX APIs ---------------------------------------------------------------------------------


def test_split_merge_state_update_with_type_filters():
    module = BNNet()
    model = ToNNX(module, rngs=nnx.Rngs(0)).lazy_init(X)
    graphdef, params, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    assert list(params) == ["params"] and list(stats) == ["batch_stats"]
    assert list(rest) == ["rngs"]

    # Change params functionally and load them back with nnx.update.
    new_params = jax.tree.map(lambda p: p * 2, nnx.state(model, nnx.Param))
    nnx.update(model, new_params)
    doubled = jax.tree.map(lambda p: p * 2, dict(module.init(jax.random.key(0), X)["params"]))
    assert_trees_equal(linen_variables(model)["params"], doubled)
    expected = module.apply(
        {"params": doubled, "batch_stats": linen_variables(model)["batch_stats"]},
        X,
        train=False,
    )
    np.testing.assert_allclose(model(X, train=False), expected, rtol=1e-6)

    merged = nnx.merge(graphdef, params, stats, rest)
    assert isinstance(merged, ToNNX) and merged.linen_collections == model.linen_collections
    np.testing.assert_allclose(
        merged(X, train=False), module.apply(linen_variables(merged), X, train=False), rtol=1e-6
    )


def test_nnx_jit_call_advances_rngs_and_writes_back():
    module = BNNet()
    model = ToNNX(module, rngs=nnx.Rngs(0)).lazy_init(X)
    variables = module.init(jax.random.key(0), X)

    @nnx.jit
    def train_call(model, x):
        return model(x, mutable=["batch_stats"])

    y = train_call(model, X)
    expected, updates = module.apply(variables, X, mutable=["batch_stats"])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    assert_trees_close(values(model.batch_stats), dict(updates["batch_stats"]), rtol=1e-5, atol=0)
    assert counts(model) == {("rngs", "default", "count"): 1}


def test_nnx_jit_dropout_differs_per_call():
    model = ToNNX(DropNet(), rngs=nnx.Rngs(0, dropout=1)).lazy_init(X)
    call = nnx.jit(lambda m, x: m(x))
    assert not np.array_equal(call(model, X), call(model, X))


def mlp_loss(params, x):
    return jnp.sum(MLP().apply({"params": params}, x) ** 2)


@pytest.mark.parametrize("transform", ["grad", "value_and_grad", "remat"])
def test_gradients_equal_linen(transform):
    model = ToNNX(MLP(), rngs=nnx.Rngs(0)).lazy_init(X)
    params = linen_variables(model)["params"]
    expected_loss, expected_grads = jax.value_and_grad(mlp_loss)(params, X)

    def loss(m):
        return jnp.sum(m(X) ** 2)

    if transform == "grad":
        grads = nnx.grad(loss)(model)
    elif transform == "value_and_grad":
        value, grads = nnx.value_and_grad(loss)(model)
        np.testing.assert_allclose(value, expected_loss, rtol=1e-6)
    else:
        grads = nnx.grad(lambda m: jnp.sum(nnx.remat(lambda m, x: m(x))(m, X) ** 2))(model)
    assert list(grads) == ["params"]
    assert_trees_close(nnx.to_pure_dict(grads)["params"], expected_grads, rtol=1e-6, atol=0)


def test_optimizer_step_equals_optax():
    model = ToNNX(MLP(), rngs=nnx.Rngs(0)).lazy_init(X)
    params = linen_variables(model)["params"]
    tx = optax.adam(1e-2)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    opt_state = tx.init(params)
    for _ in range(2):
        grads = nnx.grad(lambda m: jnp.sum(m(X) ** 2))(model)
        optimizer.update(model, grads)
        g = jax.grad(mlp_loss)(params, X)
        updates, opt_state = tx.update(g, opt_state, params)
        params = optax.apply_updates(params, updates)
    assert_trees_close(linen_variables(model)["params"], params, rtol=1e-6, atol=0)
    assert int(optimizer.step.get_value()) == 2


def test_per_call_keys_under_nnx_jit_and_grad_equal_native_training():
    module = DropNet()
    model = ToNNX(module, rngs=nnx.Rngs(0)).lazy_init(X)
    params = linen_variables(model)["params"]
    tx = optax.sgd(0.1)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    opt_state = tx.init(params)

    @nnx.jit
    def step(model, optimizer, key):
        loss, grads = nnx.value_and_grad(lambda m: jnp.sum(m(X, rngs={"dropout": key}) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    @jax.jit
    def native_step(params, opt_state, key):
        def loss_fn(p):
            return jnp.sum(module.apply({"params": p}, X, rngs={"dropout": key}) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    for key in jax.random.split(jax.random.key(42), 2):
        loss = step(model, optimizer, key)
        params, opt_state, expected = native_step(params, opt_state, key)
        np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert_trees_close(linen_variables(model)["params"], params, rtol=1e-5, atol=1e-7)
    assert counts(model) == {("rngs", "default", "count"): 0}  # own stream untouched


class NNXVmapped(nnx.Module):
    """The guide's lifted-transform example (spec 000, Lifted transforms / Linen to NNX)."""

    def __init__(self, out_dim: int, vmap_axis_size: int, rngs: nnx.Rngs):
        self.linen_dot = ToNNX(nn.Dense(out_dim, use_bias=False), rngs=rngs)
        self.vmap_axis_size = vmap_axis_size

    def __call__(self, x):
        @nnx.split_rngs(splits=self.vmap_axis_size)
        @nnx.vmap(in_axes=(0, 0), axis_size=self.vmap_axis_size)
        def vmap_fn(submodule, x):
            return submodule(x)

        return vmap_fn(self.linen_dot, x)


def test_vmap_with_split_rngs_stacks_distinct_params():
    x = jax.random.normal(jax.random.key(0), (4, 5))
    model = lazy_init(NNXVmapped(3, 4, rngs=nnx.Rngs(0)), x)
    kernel = model.linen_dot.params["kernel"].get_value()
    assert kernel.shape == (4, 5, 3)
    assert len({np.asarray(k).tobytes() for k in kernel}) == 4  # every copy differs
    y = model(x)
    expected = jnp.stack([x[i] @ kernel[i] for i in range(4)])
    np.testing.assert_allclose(y, expected, rtol=1e-5)


class Block(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.tanh(nn.Dense(3)(x))
        return nn.Dropout(0.2, deterministic=not train)(x)


class ScannedStack(nnx.Module):
    """Stacked ToNNX blocks created with nnx.vmap and run with nnx.scan, as NNX does layers."""

    def __init__(self, n: int, x, rngs: nnx.Rngs):
        @nnx.split_rngs(splits=n)
        @nnx.vmap(in_axes=(0, None), out_axes=0)
        def make(rngs, x):
            return ToNNX(Block(), rngs=rngs).lazy_init(x)

        self.blocks = make(rngs, x)
        self.n = n

    def __call__(self, x, train=False):
        @nnx.split_rngs(splits=self.n)
        @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry)
        def step(block, x):
            return block(x, train=train)

        return step(self.blocks, x)


def test_scan_over_stacked_blocks():
    model = ScannedStack(3, X, rngs=nnx.Rngs(0))
    kernel = model.blocks.params["Dense_0"]["kernel"].get_value()
    assert kernel.shape == (3, 3, 3)
    assert len({np.asarray(k).tobytes() for k in kernel}) == 3
    params = linen_variables(model.blocks)["params"]
    expected = X
    for layer in [jax.tree.map(lambda p, i=i: p[i], params) for i in range(3)]:
        expected = Block().apply({"params": layer}, expected)
    np.testing.assert_allclose(model(X), expected, rtol=1e-5)
    # Dropout inside the scan draws per-layer keys that change from call to call.
    a, b = model(X, train=True), model(X, train=True)
    assert a.shape == (2, 3) and not np.array_equal(a, b)


# -- lazy_init --------------------------------------------------------------------------------


class Pair(nnx.Module):
    def __init__(self, rngs):
        self.first = ToNNX(Counter(), rngs=rngs)
        self.second = ToNNX(BNNet(), rngs=rngs)

    def __call__(self, x):
        return self.second(self.first(x, mutable=["counter"]), mutable=["batch_stats"])


def test_lazy_init_partly_initialized_tree():
    model = Pair(nnx.Rngs(0))
    model.first.lazy_init(X)
    first_before = snapshot(model.first)
    h = model.first(X, mutable=["counter"])  # the counter moves to 1
    assert lazy_init(model, X) is model
    assert model.second.linen_collections == ("params", "batch_stats")
    # The initialized wrapper is untouched: its params, its counter and its rng count.
    after = snapshot(model.first)
    assert_trees_equal(after["params"], first_before["params"])
    assert after["counter"]["n"] == 1
    assert counts(model.first) == {("rngs", "default", "count"): 1}
    assert model.second.params["Dense_0"]["kernel"].shape == (2, 4)
    del h


@pytest.mark.parametrize(
    "module", [Counter(), BNNet(), Sower(), AE()], ids=lambda m: type(m).__name__
)
def test_lazy_init_twice_changes_nothing(module):
    model = ToNNX(module, rngs=nnx.Rngs(0)).lazy_init(X)
    before = snapshot(model)
    assert lazy_init(model, X) is model
    assert model.lazy_init(X) is model
    assert_trees_equal(snapshot(model), before)
    assert_trees_equal(linen_variables(model), dict(module.init(jax.random.key(0), X)))


def test_lazy_init_of_a_linen_module_is_a_typed_error():
    with pytest.raises(linnx.BridgeTypeError, match=r"wrap it first.*ToNNX\(Dense"):
        lazy_init(nn.Dense(3), X)


# -- errors ---------------------------------------------------------------------------------


def test_call_before_init():
    model = ToNNX(MLP(), rngs=nnx.Rngs(0))
    with pytest.raises(linnx.NotInitializedError, match=r"(?s)before initialization.*lazy_init"):
        model(X)
    assert model.linen_collections == ()


def test_mutable_call_before_init_does_not_initialize():
    model = ToNNX(MLP(), rngs=nnx.Rngs(0))
    with pytest.raises(linnx.NotInitializedError, match="lazy_init"):
        model(X, mutable=True)
    assert model.linen_collections == ()
    assert counts(model) == {("rngs", "default", "count"): 0}


def test_module_without_variables_runs_without_init():
    model = ToNNX(nn.Dropout(0.5, deterministic=False), rngs=nnx.Rngs(dropout=0))
    assert model(X).shape == X.shape


@pytest.mark.parametrize(
    "bad,match",
    [
        (nn.Dense, r"(?s)expects a Linen module instance, got the class Dense.*Dense\(\.\.\.\)"),
        (nnx.Linear, "NNX module class"),
        (nnx.Linear(3, 2, rngs=nnx.Rngs(0)), "already an NNX module"),
        (lambda x: x, "expects a Linen module instance"),
    ],
    ids=["linen-class", "nnx-class", "nnx-instance", "function"],
)
def test_wrong_module_kinds(bad, match):
    with pytest.raises(linnx.BridgeTypeError, match=match):
        ToNNX(bad, rngs=nnx.Rngs(0))


def test_rngs_must_be_nnx_rngs():
    with pytest.raises(linnx.BridgeTypeError, match=r"rngs=nnx\.Rngs\(0\)"):
        ToNNX(MLP(), rngs=0)


def test_unknown_method():
    model = ToNNX(AE(), rngs=nnx.Rngs(0)).lazy_init(X)
    with pytest.raises(linnx.UnknownMethodError, match=r"(?s)method='encdoe'.*decode, encode"):
        model(X, method="encdoe")
    with pytest.raises(linnx.UnknownMethodError, match="encdoe"):
        model.encdoe(X)


def test_mutable_collection_never_written():
    model = ToNNX(Counter(), rngs=nnx.Rngs(0)).lazy_init(X)
    before, rng_before = snapshot(model), counts(model)
    with pytest.raises(linnx.MutableCollectionError, match=r"never wrote the collection 'cnt'"):
        model(X, mutable=["counter", "cnt"])
    # The counter did run to 1 inside the failed call; nothing of it was kept.
    assert_trees_equal(snapshot(model), before)
    assert counts(model) == rng_before


@pytest.mark.parametrize(
    ("call", "error"),
    [
        # wrong input size
        (lambda m: m(jnp.ones((2, 5)), mutable=["batch_stats"]), linnx.StructureMismatchError),
        (lambda m: m(X, mutable=["batch_stats", "nope"]), linnx.MutableCollectionError),
        # BatchNorm in training writes batch_stats
        (lambda m: m(X), linnx.MutableCollectionError),
        (lambda m: m(X, method="missing"), linnx.UnknownMethodError),
    ],
    ids=["shape-error", "unknown-mutable", "immutable-write", "unknown-method"],
)
def test_failed_call_leaves_the_module_as_it_was(call, error):
    model = ToNNX(BNNet(), rngs=nnx.Rngs(0)).lazy_init(X)
    model(X, mutable=["batch_stats"])  # counts and stats away from their initial values
    before, rng_before = snapshot(model), counts(model)
    with pytest.raises(error):
        call(model)
    assert_trees_equal(snapshot(model), before)
    assert counts(model) == rng_before


class WritesRngs(nn.Module):
    name_of_collection: str

    @nn.compact
    def __call__(self, x):
        self.variable(self.name_of_collection, "v", lambda: jnp.zeros(()))
        return x


@pytest.mark.parametrize("collection", ["rngs", "module", "linen_collections", "eval"])
def test_collection_named_like_a_wrapper_attribute(collection):
    model = ToNNX(WritesRngs(collection), rngs=nnx.Rngs(0))
    with pytest.raises(linnx.BridgeTypeError, match=rf"collection named '{collection}'"):
        model.lazy_init(X)
    assert model.linen_collections == ()
    assert isinstance(model.rngs, nnx.Rngs)
