"""The shortcut of a top-level ``ToLinen.init``/``apply`` (``linnx.bridge._root_scope``) against
Linen's own path, which every test here also runs (with the one switch, ``_fast``, off).

The two must agree exactly: outputs, the returned variables (types, collection and key order,
every leaf bit for bit, the stored graphdef), rng keys, errors. The fast path is also checked
to be *taken* where it should, so that a test of agreement is not vacuous.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx
from flax.core import FrozenDict, freeze

import linnx
from linnx.bridge import _fast, _root_scope

# -- models ----------------------------------------------------------------------------------


class Count(nnx.Variable):
    pass


class Net(nnx.Module):
    """Parameters, batch statistics, a dropout stream and a custom variable type."""

    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs) -> None:
        self.linear = nnx.Linear(din, dout, rngs=rngs)
        self.bn = nnx.BatchNorm(dout, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.calls = Count(jnp.zeros((), jnp.int32))

    def __call__(self, x: jax.Array) -> jax.Array:
        self.calls.value += 1
        return self.drop(self.bn(self.linear(x)))

    def encode(self, x: jax.Array) -> jax.Array:
        return self.linear(x)


class Stack(nnx.Module):
    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs) -> None:
        self.layers = nnx.List([nnx.Linear(din, din, rngs=rngs), nnx.Linear(din, dout, rngs=rngs)])

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = nnx.relu(layer(x))
        return x


class Shared(nnx.Module):
    """One layer under two names: only ``nnx.split`` sees that it is one."""

    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs) -> None:
        self.a = nnx.Linear(din, din, rngs=rngs)
        self.b = self.a
        self.out = nnx.Linear(din, dout, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(self.b(self.a(x)))


class Stateless(nnx.Module):
    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(x)


class WithStateless(nnx.Module):
    """A submodule without variables (which a pytree cannot tell shared from not)."""

    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs) -> None:
        self.act = Stateless()
        self.linear = nnx.Linear(din, dout, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.act(self.linear(x))


SHARE_ACTIVATION = [False]


class MaybeShared(nnx.Module):
    """Shares its stateless part or not, by a global switch (not by its arguments)."""

    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs) -> None:
        self.act1 = Stateless()
        self.act2 = self.act1 if SHARE_ACTIVATION[0] else Stateless()
        self.linear = nnx.Linear(din, dout, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.act2(self.act1(self.linear(x)))


class Grows(nnx.Module):
    """Adds a variable on its first call (structure change at apply time)."""

    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs) -> None:
        self.linear = nnx.Linear(din, dout, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if not hasattr(self, "seen"):
            self.seen = nnx.BatchStat(jnp.zeros(()))
        return self.linear(x)


class Flagged(nnx.Module):
    def __init__(self, din: int, dout: int, *, flag: Any = True, rngs: nnx.Rngs) -> None:
        self.flag = flag
        self.linear = nnx.Linear(din, dout, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear(x)


X = jnp.arange(12.0).reshape(3, 4) / 10
KEYS = {"params": jax.random.key(0), "dropout": jax.random.key(1)}

MODELS: dict[str, Callable[[], linnx.ToLinen]] = {
    "linear": lambda: linnx.to_linen(nnx.Linear, 4, 3),
    "net": lambda: linnx.to_linen(Net, 4, 3),
    "stack": lambda: linnx.to_linen(Stack, 4, 3),
    "shared": lambda: linnx.to_linen(Shared, 4, 3),
    "stateless-part": lambda: linnx.to_linen(WithStateless, 4, 3),
    "to_linen_class": lambda: linnx.to_linen_class(nnx.Linear, use_bias=False)(args=(4, 3)),
    "named": lambda: linnx.to_linen(nnx.Linear, 4, 3, name="dense"),
}


# -- helpers ---------------------------------------------------------------------------------


class Taken:
    """The top-level shortcuts taken since the test started (or the last ``clear``), read from
    the switch's counters: ``['init', ...]`` then ``['apply', ...]``."""

    KINDS = ("init", "apply")

    def __init__(self) -> None:
        self._start = self._now()

    def _now(self) -> dict[str, int]:
        return {kind: _fast.taken[f"root_scope.{kind}"] for kind in self.KINDS}

    def as_list(self) -> list[str]:
        now = self._now()
        return [kind for kind in self.KINDS for _ in range(now[kind] - self._start[kind])]

    def __eq__(self, other: object) -> bool:
        return self.as_list() == other

    __hash__ = None  # type: ignore[assignment]

    def __contains__(self, kind: str) -> bool:
        return kind in self.as_list()

    def __len__(self) -> int:
        return len(self.as_list())

    def __repr__(self) -> str:
        return repr(self.as_list())

    def clear(self) -> None:
        self._start = self._now()


@pytest.fixture
def taken(shortcuts_on: None) -> Taken:
    """Records each call the root-scope shortcut took ('init'/'apply'), read from the one
    switch's counters (``_fast.taken``); the shortcuts are on for these tests."""
    return Taken()


@pytest.fixture(autouse=True)
def shortcuts_on():
    """These tests compare the shortcut with Linen's path: they need the shortcuts on (also in
    the ``LINNX_FAST=0`` run of the suite)."""
    before = _fast.enabled()
    _fast.set_enabled(True)
    yield
    _fast.set_enabled(before)


def linen_path(fn: Callable[[], Any]) -> Any:
    """``fn()`` with every speed shortcut switched off: Linen's own init/apply machinery."""
    with _fast.switched_off():
        return fn()


def assert_same_outcome(fn: Callable[[], Any]) -> Any:
    """``fn()`` returns the same on both paths, or raises the same error."""
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001
        with pytest.raises(type(e)) as slow:
            linen_path(fn)
        assert str(slow.value) == str(e)
        return e
    assert_identical(got, linen_path(fn))
    return got


def assert_identical(got: Any, want: Any, path: str = "") -> None:
    """Same containers (types, key order), same leaf types and bits, same graphdefs."""
    assert type(got) is type(want), (path, type(got), type(want))
    if isinstance(want, Mapping):
        assert list(got.keys()) == list(want.keys()), path
        for key in want:
            assert_identical(got[key], want[key], f"{path}/{key}")
    elif isinstance(want, (tuple, list)):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_identical(g, w, f"{path}/{i}")
    elif isinstance(want, linnx.NNXMeta):
        assert got.var_type is want.var_type, path
        assert got.metadata == want.metadata, path
        assert_identical(got.value, want.value, f"{path}.value")
    elif isinstance(want, nnx.GraphDef):
        assert got == want, path
    elif isinstance(want, jax.Array):
        if jax.dtypes.issubdtype(want.dtype, jax.dtypes.prng_key):
            assert jax.random.key_impl(got) == jax.random.key_impl(want), path
            got, want = jax.random.key_data(got), jax.random.key_data(want)
        assert got.dtype == want.dtype and got.shape == want.shape, path
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=path)
    else:
        assert got == want, path


# -- init ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(
    "rngs", [KEYS, jax.random.key(3), {"params": jax.random.key(4)}], ids=["two", "key", "one"]
)
def test_init_matches_linen(name: str, rngs: Any, taken: list[str]) -> None:
    model = MODELS[name]()
    for _ in range(3):  # the first init learns the module's structure, later ones reuse it
        outcome = assert_same_outcome(lambda: model.init(rngs, X))
    if isinstance(outcome, Exception):  # Net needs a 'dropout' stream
        assert name == "net" and isinstance(outcome, linnx.RngStreamError)
    else:
        assert taken == ["init"] * 3
    # A fresh wrapper, and other keys.
    other = {"params": jax.random.key(7), "dropout": jax.random.key(8)}
    assert_identical(MODELS[name]().init(other, X), linen_path(lambda: model.init(other, X)))
    assert_identical(model.init(other, X), linen_path(lambda: model.init(other, X)))


def test_init_reuses_the_graphdef_and_reads_new_values() -> None:
    model = linnx.to_linen(Net, 4, 3)
    a = model.init(KEYS, X)
    b = model.init({"params": jax.random.key(7), "dropout": jax.random.key(8)}, X)
    assert a["nnx"]["graphdef"] is b["nnx"]["graphdef"]
    assert not np.array_equal(
        a["params"]["linear"]["kernel"].value, b["params"]["linear"]["kernel"].value
    )


def test_init_sees_a_new_sharing_of_a_stateless_part(taken: list[str]) -> None:
    # Sharing a part without variables leaves the pytree structure as it was; only the
    # graph tells. The fast path must not reuse the unshared graphdef.
    model = linnx.to_linen(MaybeShared, 4, 3)
    for share in (False, False, True, True, False):
        SHARE_ACTIVATION[0] = share
        try:
            got = model.init(jax.random.key(0), X)
            assert_identical(got, linen_path(lambda: model.init(jax.random.key(0), X)))
        finally:
            SHARE_ACTIVATION[0] = False
        graphdef = got["nnx"]["graphdef"]
        module = nnx.merge(
            graphdef,
            nnx.State(
                {
                    "linear": {
                        "kernel": nnx.Param(jnp.zeros((4, 3))),
                        "bias": nnx.Param(jnp.zeros((3,))),
                    }
                }
            ),
        )
        assert (module.act1 is module.act2) is share
    assert taken == ["init"] * 5


def test_init_keeps_arguments_that_are_equal_but_not_the_same() -> None:
    # `1 == True`: the structures of the two wrappers' modules compare equal, but each
    # wrapper's module keeps its own argument.
    for flag in (True, 1, 1.0, True):
        model = linnx.to_linen(Flagged, 4, 3, flag=flag)
        variables = model.init(jax.random.key(0), X)
        want = linen_path(lambda model=model: model.init(jax.random.key(0), X))
        assert_identical(variables, want)
        graphdef = variables["nnx"]["graphdef"]
        state = nnx.State(
            {"linear": {"kernel": nnx.Param(jnp.zeros((4, 3))), "bias": nnx.Param(jnp.zeros((3,)))}}
        )
        assert type(nnx.merge(graphdef, state).flag) is type(flag)


def test_init_of_a_module_that_creates_variables_on_first_call(taken: list[str]) -> None:
    class Outer(nnx.Module):
        def __init__(self, *, rngs: nnx.Rngs) -> None:
            self.inner = linnx.ToNNX(nn.Dense(3), rngs=rngs)

        def __call__(self, x: jax.Array) -> jax.Array:
            return self.inner(x)

    model = linnx.ToLinen(Outer)
    got = model.init(jax.random.key(0), X)
    assert_identical(got, linen_path(lambda: model.init(jax.random.key(0), X)))
    assert taken == ["init"]
    assert got["params"]["inner"]["params"]["kernel"].value.shape == (4, 3)


def test_init_errors_match_linen(taken: list[str]) -> None:
    model = linnx.ToLinen(nnx.Linear, args=(4, 3))
    with pytest.raises(linnx.RngStreamError, match="rngs given to this call: none") as fast:
        model.init({}, X)
    with pytest.raises(linnx.RngStreamError) as slow:
        linen_path(lambda: model.init({}, X))
    assert str(fast.value) == str(slow.value)

    class MakesIntermediate(nnx.Module):
        def __init__(self, *, rngs: nnx.Rngs) -> None:
            self.seen = nnx.Intermediate(jnp.zeros(()))

        def __call__(self, x: jax.Array) -> jax.Array:
            return x

    # Linen's init leaves 'intermediates' immutable; the write fails alike on both paths.
    model = linnx.ToLinen(MakesIntermediate)
    with pytest.raises(flax.errors.ModifyScopeVariableError) as fast:
        model.init(jax.random.key(0), X)
    with pytest.raises(flax.errors.ModifyScopeVariableError) as slow:
        linen_path(lambda: model.init(jax.random.key(0), X))
    assert str(fast.value) == str(slow.value)
    assert taken == ["init", "init"]  # both raised inside the shortcut


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.init(jax.random.key(0), X, method="encode"),
        lambda m: m.init(jax.random.key(0), X, capture_intermediates=True),
        lambda m: m.init(jax.random.key(0), X, mutable=True),
        lambda m: m.init(jax.random.PRNGKey(0), X),  # a raw uint32 key
        lambda m: m.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.key(1)}, X),
        lambda m: m.init_with_output(KEYS, X),
        lambda m: m.bind({}, rngs=KEYS, mutable=True).init(KEYS, X),
    ],
    ids=["method", "capture", "mutable", "raw-key", "one-raw-key", "with-output", "bound"],
)
def test_init_other_calls_take_linen_path(call: Callable, taken: list[str]) -> None:
    model = linnx.to_linen(Net, 4, 3)
    assert_same_outcome(lambda: call(model))
    assert taken == []


def test_init_with_arguments_linen_rebuilds_takes_linen_path(taken: list[str]) -> None:
    class Layers(nnx.Module):
        def __init__(self, sizes: Any, *, rngs: nnx.Rngs) -> None:
            self.sizes = sizes  # Linen hands the constructor a tuple for a list
            self.linear = nnx.Linear(sizes[0], sizes[1], rngs=rngs)

    model = linnx.to_linen(Layers, [4, 3])
    got = model.init(jax.random.key(0), X)
    assert taken == []
    assert_identical(got, linen_path(lambda: model.init(jax.random.key(0), X)))


# -- apply -----------------------------------------------------------------------------------

# Every collection a call of Net updates (without a Linen key for its dropout stream).
ALL_NET_STATE = ["batch_stats", "Count", "RngCount"]
MUTABLE = [False, True, "batch_stats", ["batch_stats"], ("RngCount", "Count"), [], ["nope"]]


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("mutable", MUTABLE, ids=repr)
def test_apply_matches_linen(name: str, mutable: Any, taken: list[str]) -> None:
    model = MODELS[name]()
    variables = model.init(KEYS, X)
    taken.clear()
    for rngs in (None, {"dropout": jax.random.key(5)}, jax.random.key(6), KEYS):
        outcome = assert_same_outcome(
            lambda rngs=rngs: model.apply(variables, X, rngs=rngs, mutable=mutable)
        )
        # Net updates its batch statistics, a counter and (without a Linen dropout key) its
        # dropout stream: a call that may not keep them raises, on both paths alike.
        if isinstance(outcome, Exception):
            assert name == "net" and isinstance(outcome, linnx.MutableCollectionError)
    assert taken == ["apply"] * 4


def test_apply_net_uses_its_streams_like_linen(taken: list[str]) -> None:
    model = linnx.to_linen(Net, 4, 3)
    variables = model.init(KEYS, X)
    taken.clear()
    # Its own stream, advanced in the returned RngCount, when no Linen key is given.
    own = model.apply(variables, X, mutable=True)
    assert_identical(own, linen_path(lambda: model.apply(variables, X, mutable=True)))
    count = own[1]["RngCount"]["drop"]["rngs"]["dropout"]["count"].value
    assert int(count) == 1
    # A Linen key for the stream replaces it for this call only.
    keyed = model.apply(variables, X, rngs={"dropout": jax.random.key(9)}, mutable=True)
    assert int(keyed[1]["RngCount"]["drop"]["rngs"]["dropout"]["count"].value) == 0
    assert not np.array_equal(own[0], keyed[0])
    assert taken == ["apply", "apply"]


@pytest.mark.parametrize("freeze_variables", [False, True])
def test_apply_returns_linen_containers(freeze_variables: bool, taken: list[str]) -> None:
    model = linnx.to_linen(Net, 4, 3)
    variables = model.init(KEYS, X)
    taken.clear()
    if freeze_variables:
        variables = freeze(variables)
    extra = {**variables, "other": {"x": jnp.ones(2)}}  # a collection the module does not use
    for mutable in MUTABLE:
        assert_same_outcome(lambda m=mutable: model.apply(extra, X, mutable=m))
    flax.config.update("flax_return_frozendict", True)
    try:
        got = model.apply(variables, X, mutable=ALL_NET_STATE)
        assert isinstance(got[1], FrozenDict)
        assert_identical(got, linen_path(lambda: model.apply(variables, X, mutable=ALL_NET_STATE)))
        assert_identical(model.init(KEYS, X), linen_path(lambda: model.init(KEYS, X)))
    finally:
        flax.config.update("flax_return_frozendict", False)
    assert len(taken) == len(MUTABLE) + 2


def test_apply_write_back_merges_into_the_given_collection(taken: list[str]) -> None:
    model = linnx.to_linen(Net, 4, 3)
    variables = model.init(KEYS, X)
    taken.clear()
    # Entries beside the module's own, at the top and inside the dict it writes ('bn').
    stats = dict(variables["batch_stats"], extra={"kept": jnp.ones(1)})
    stats["bn"] = {**stats["bn"], "kept": jnp.ones(2)}
    variables = {**variables, "batch_stats": stats}
    got = model.apply(variables, X, mutable=ALL_NET_STATE)
    assert_identical(got, linen_path(lambda: model.apply(variables, X, mutable=ALL_NET_STATE)))
    assert "kept" in got[1]["batch_stats"]["extra"]
    assert "kept" in got[1]["batch_stats"]["bn"]
    assert taken == ["apply"]


def test_apply_nnx_methods_and_kwargs(taken: list[str]) -> None:
    model = linnx.to_linen(Net, 4, 3)
    variables = model.init(KEYS, X)
    taken.clear()
    got = model.apply(variables, X, nnx_method="encode")
    assert_identical(got, linen_path(lambda: model.apply(variables, X, nnx_method="encode")))
    assert taken == ["apply"]
    # method= goes through Linen (it resolves names on the wrapper first).
    got = model.apply(variables, X, method="encode")
    assert taken == ["apply"]
    assert_identical(got, linen_path(lambda: model.apply(variables, X, method="encode")))


def test_apply_structure_change(taken: list[str]) -> None:
    model = linnx.to_linen(Grows, 4, 3)
    variables = model.init(jax.random.key(0), X)
    with pytest.raises(linnx.StructureMismatchError) as fast:
        model.apply(variables, X, mutable=["batch_stats"])
    with pytest.raises(linnx.StructureMismatchError) as slow:
        linen_path(lambda: model.apply(variables, X, mutable=["batch_stats"]))
    assert str(fast.value) == str(slow.value)
    mutable = ["nnx", "batch_stats"]
    got = model.apply(variables, X, mutable=mutable)
    assert_identical(got, linen_path(lambda: model.apply(variables, X, mutable=mutable)))
    assert got[1]["nnx"]["graphdef"] != variables["nnx"]["graphdef"]


@pytest.mark.parametrize(
    "call",
    [
        lambda m, v: m.apply(v, X, capture_intermediates=True),
        lambda m, v: m.apply(v, X, rngs={"dropout": jax.random.PRNGKey(1)}),
        lambda m, v: m.apply(v, X, rngs=FrozenDict({"dropout": jax.random.key(1)})),
        lambda m, v: m.apply(v, X, mutable=flax.core.scope.DenyList("params")),
        lambda m, v: m.apply({"params": {"params": v["params"]}, "nnx": v["nnx"]}, X),
        lambda m, v: m.apply({"params": v["params"]}, X),
        lambda m, v: m.apply({"params": v["params"]}, X, mutable=True),
    ],
    ids=[
        "capture",
        "raw-key",
        "frozen-rngs",
        "denylist",
        "params-in-params",
        "no-graphdef",
        "no-graphdef-mutable",
    ],
)
def test_apply_other_calls_take_linen_path(call: Callable, taken: list[str]) -> None:
    model = linnx.to_linen(Net, 4, 3)
    variables = model.init(KEYS, X)
    taken.clear()
    assert_same_outcome(lambda: call(model, variables))
    assert taken == []


def test_tabulate_and_interceptors_take_linen_path(taken: list[str]) -> None:
    model = linnx.to_linen(Net, 4, 3)
    table = nn.tabulate(model, KEYS)(X)
    assert table == linen_path(lambda: nn.tabulate(model, KEYS)(X))
    variables = model.init(KEYS, X)
    taken.clear()
    seen: list[str] = []

    def interceptor(next_fun: Callable, args: Any, kwargs: Any, context: Any) -> Any:
        seen.append(context.method_name)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        assert_same_outcome(lambda: model.apply(variables, X))
    assert seen == ["__call__", "__call__"]
    assert taken == []


def test_apply_in_a_linen_parent_is_unchanged(taken: list[str]) -> None:
    class Parent(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            return linnx.to_linen(Net, 4, 3, name="net")(x)

    parent = Parent()
    variables = parent.init(KEYS, X)
    out = parent.apply(variables, X, mutable=True)
    assert taken == []
    # The same variables, one level down, through a top-level wrapper's fast path (with the
    # module's own dropout stream: a Linen key would be folded with the parent's path).
    inner = {col: tree["net"] for col, tree in variables.items()}
    top = linnx.to_linen(Net, 4, 3, name="net")
    got = top.apply(inner, X, mutable=True)
    assert taken == ["apply"]
    assert_identical(got, (out[0], {col: tree["net"] for col, tree in out[1].items()}))


def test_apply_under_jit_matches_linen(taken: list[str]) -> None:
    model = linnx.to_linen(Net, 4, 3)
    variables = model.init(KEYS, X)

    def run(v: Any, key: jax.Array) -> Any:
        return model.apply(v, X, rngs={"dropout": key}, mutable=["batch_stats", "Count"])

    got = jax.jit(run)(variables, jax.random.key(3))
    assert_identical(got, linen_path(lambda: jax.jit(run)(variables, jax.random.key(3))))
    # Linen runs the call under a named scope of the module; so does the fast path.
    fast_jaxpr = jax.make_jaxpr(run)(variables, jax.random.key(3))
    slow_jaxpr = linen_path(lambda: jax.make_jaxpr(run)(variables, jax.random.key(3)))
    names = [[str(e.source_info.name_stack) for e in j.eqns] for j in (fast_jaxpr, slow_jaxpr)]
    assert names[0] == names[1]
    assert any(name.startswith("ToLinen") for name in names[0])
    assert str(fast_jaxpr) == str(slow_jaxpr)
    assert "apply" in taken


def test_fast_rng_keys_are_linen_keys() -> None:
    # make_rng of the fast path's scope against Linen's own, stream by stream and draw by draw.
    class Draws(nn.Module):
        @nn.compact
        def __call__(self) -> Any:
            return [self.make_rng(s) for s in ("params", "dropout", "params", "other")]

    keys = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    want = Draws().apply({}, rngs=keys)
    scope = _root_scope.TopLevelScope({}, dict(keys), False)
    got = [scope.make_rng(s) for s in ("params", "dropout", "params", "other")]
    assert_identical(got, want)
    # Traced keys take the eager fold, to the same keys.
    traced = jax.jit(lambda k: _root_scope.TopLevelScope({}, {"params": k}, False).make_rng())
    assert_identical(traced(keys["params"]), want[0])
