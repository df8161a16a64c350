"""Round-trip properties of the bridge on random Linen and NNX module trees (issue #7).

Hypothesis draws module *structures* (see ``tests/models/bridge_trees.py``): nested Linen
blocks in ``compact`` and ``setup`` style with Dense, Conv, BatchNorm, LayerNorm, Embed,
Dropout, ``self.param``, ``self.variable`` in custom collections and ``sow``; NNX blocks with
the same layers, custom ``nnx.Variable`` types and children in ``nnx.List``/``nnx.Dict``;
float32, bfloat16 and integer variables; and trees that cross the bridge inside (a Linen tree
holding ``ToLinen(nnx tree)`` holding ``ToNNX(linen tree)``...). Every expected value comes
from native Flax on the same rngs or the same state: Linen's own ``init``/``apply``, or the
NNX module run directly. Where a tree crosses the bridge inside, the reference runs the same
inner wrappers, so only the outer crossing is checked against Flax there.

Exactness. Eager runs of the bridge execute the very same JAX operations on the very same
arrays as the native module, so outputs and state are compared bit for bit (dtype, shape and
bytes). Compiled runs are compared with a tolerance (see ``JIT_TOL`` and ``BF16_JIT_TOL``):
the bridge's compiled program also carries its bookkeeping (rng draws, write-back outputs),
and XLA may fuse the shared arithmetic differently in two different programs. Integers and
rng keys are compared exactly everywhere.

The number of examples comes from the hypothesis profile (see ``tests/conftest.py``):
``default`` keeps CI fast, ``--hypothesis-profile=thorough`` goes deeper.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import bridge_trees as bt
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _trees import plain, values
from flax import linen as nn
from flax import nnx
from flax.core import meta
from hypothesis import given
from hypothesis import strategies as st

import linnx
from linnx import ToNNX

seeds = st.integers(0, 2**16)

# Compiled vs compiled: float32 results may differ in the last bits when XLA fuses two
# different programs differently (see the module docstring).
JIT_TOL = {"rtol": 1e-5, "atol": 1e-6}
# Compiled, with bfloat16 variables: XLA's default `xla_allow_excess_precision` lets a
# bfloat16 value computed inside a program (a kernel initialized by a compiled `init`, an
# average updated by a compiled step) feed the rest of that program unrounded, in float32,
# while the stored value is rounded; how much of that happens depends on the program. Such
# results agree to bfloat16's precision (8 bits: relative steps of 2**-8 = 0.4%, a few of
# them accumulated through the layers). With the flag off they agree bit for bit.
BF16_JIT_TOL = {"rtol": 3e-2, "atol": 3e-2}


def tolerance(spec: bt.Block, jit: bool) -> dict[str, float] | None:
    """None (bit-exact) for eager runs, else the compiled tolerance for this tree."""
    if not jit:
        return None
    return BF16_JIT_TOL if bt.has_dtype(spec, "bfloat16") else JIT_TOL


# -- helpers ---------------------------------------------------------------------------------


def linen_keys(seed: int) -> dict[str, jax.Array]:
    """Linen rngs for ``init``: ``params`` and ``dropout`` (an NNX tree behind ToLinen builds
    its ``nnx.Dropout`` layers from the ``dropout`` stream Linen gives)."""
    return {"params": jax.random.key(seed), "dropout": jax.random.key(seed + 1)}


def sample(din: int) -> jax.Array:
    """A fixed input for ``din`` features: fixed inputs keep JAX's compile caches warm."""
    return jax.random.normal(jax.random.key(din), (bt.BATCH, bt.LENGTH, din))


def is_var(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def tonnx_linen_variables(model: ToNNX) -> dict[str, Any]:
    """A ToNNX's collections as a plain Linen variables dict, read through its attributes."""
    return {c: values(getattr(model, c)) for c in model.linen_collections}


def string_keys(tree: Any) -> Any:
    """``tree`` with sequences as dicts of string indices, as ToLinen lays out NNX paths."""
    if isinstance(tree, Mapping):
        return {str(k): string_keys(v) for k, v in tree.items()}
    if isinstance(tree, tuple | list):
        return {str(i): string_keys(v) for i, v in enumerate(tree)}
    return tree


def _bits(a: Any) -> np.ndarray:
    a = jnp.asarray(a)
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
        a = jax.random.key_data(a)
    return np.asarray(a)


def assert_bit_exact(got: Any, want: Any, what: str = "") -> None:
    """Same tree structure, and every leaf with the same dtype, shape and bytes."""
    got_flat, got_def = jax.tree_util.tree_flatten_with_path(got)
    want_flat, want_def = jax.tree_util.tree_flatten_with_path(want)
    assert got_def == want_def, f"{what}: structure\n{got_def}\n!=\n{want_def}"
    for (path, g), (_, w) in zip(got_flat, want_flat, strict=True):
        where = f"{what}{jax.tree_util.keystr(path)}"
        g, w = _bits(g), _bits(w)
        assert g.dtype == w.dtype, f"{where}: dtype {g.dtype} != {w.dtype}"
        assert g.shape == w.shape, f"{where}: shape {g.shape} != {w.shape}"
        if g.tobytes() != w.tobytes():
            np.testing.assert_array_equal(g, w, err_msg=where)
            raise AssertionError(f"{where}: equal values but different bits: {g!r} vs {w!r}")


def assert_close(got: Any, want: Any, tol: dict[str, float], what: str = "") -> None:
    """Same structure and dtypes, floats within ``tol``, integers and keys exactly."""
    assert jax.tree.structure(got) == jax.tree.structure(want), what
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        g, w = _bits(g), _bits(w)
        assert g.dtype == w.dtype and g.shape == w.shape, what
        if jnp.issubdtype(g.dtype, jnp.inexact):
            np.testing.assert_allclose(
                g.astype(np.float32), w.astype(np.float32), err_msg=what, **tol
            )
        else:
            np.testing.assert_array_equal(g, w, err_msg=what)


def assert_same(got: Any, want: Any, tol: dict[str, float] | None, what: str = "") -> None:
    """Bit-exact when ``tol`` is None, else :func:`assert_close`."""
    if tol is None:
        assert_bit_exact(got, want, what)
    else:
        assert_close(got, want, tol, what)


class Probe(nn.Module):
    """Returns the keys a top-level Linen module draws with ``make_rng`` first."""

    streams: tuple[str, ...]

    @nn.compact
    def __call__(self):
        return {name: self.make_rng(name) for name in self.streams}


def linen_first_keys(rngs: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The keys a top-level Linen module gets from ``make_rng(name)`` given ``rngs``.

    This is what ``ToLinen`` hands its NNX constructor (``nnx.Rngs(**keys)``), computed by
    native Linen itself.
    """
    return Probe(tuple(sorted(rngs))).apply({}, rngs=rngs)


# The documented layout of NNX state in ToLinen's Linen variables: the registry's collection,
# string keys, and a bare ``RngStream`` (as nnx.Dropout keeps one) nested under its stream.
def linen_path(path: tuple, var: nnx.Variable) -> tuple[str, ...]:
    """Where the NNX variable at ``path`` sits in ToLinen's variables (collection first)."""
    keys = tuple(str(k) for k in path)
    if isinstance(var, (nnx.RngKey, nnx.RngCount)):
        tag = var.get_metadata()["tag"]
        if keys[-2:-1] != (tag,):
            keys = (*keys[:-1], tag, keys[-1])
    return (linnx.variable_name_from_type(type(var)), *keys)


def lookup(tree: Any, path: tuple) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def flat_state(module: nnx.Module) -> list[tuple[tuple, nnx.Variable]]:
    return list(nnx.to_flat_state(nnx.state(module)))


def state_as_linen(module: nnx.Module) -> dict[str, Any]:
    """A native NNX module's state laid out as ToLinen lays it out, as raw values."""
    out: dict[str, Any] = {}
    for path, var in flat_state(module):
        *parents, last = linen_path(path, var)
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = var.get_value()
    return out


def changed_collections(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    """The collections in which some value differs between two ``state_as_linen``."""

    def raw(x: Any) -> np.ndarray:
        if jax.dtypes.issubdtype(jnp.result_type(x), jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    return {
        c
        for c in after
        if c not in before
        or jax.tree.structure(before[c]) != jax.tree.structure(after[c])
        or not all(
            np.array_equal(raw(a), raw(b))
            for a, b in zip(jax.tree.leaves(before[c]), jax.tree.leaves(after[c]), strict=True)
        )
    }


def load_linen_layout(module: nnx.Module, variables: dict[str, Any]) -> None:
    """Sets every variable of a native NNX module from ToLinen-layout ``variables``."""
    for path, var in flat_state(module):
        var.set_value(meta.unbox(lookup(variables, linen_path(path, var))))


def unboxed(variables: dict[str, Any], drop: tuple[str, ...] = ("nnx",)) -> dict[str, Any]:
    """Linen variables without the ``nnx`` graphdef collection and without NNXMeta boxes."""
    return plain(nn.unbox({c: v for c, v in variables.items() if c not in drop}))


def is_box(x: Any) -> bool:
    return isinstance(x, meta.AxisMetadata)


def count_leaves(tree: Any) -> int:
    return len(jax.tree.leaves(tree, is_leaf=is_box))


def linen_values(variables: dict[str, Any]) -> dict[str, Any]:
    """Linen variables with every metadata box (``NNXMeta``) replaced by its value."""
    return plain(nn.unbox(variables))


@st.composite
def mutable_choices(draw: st.DrawFn, spec: bt.Block, existing: set[str], train: bool):
    """A ``mutable`` argument valid for one apply of the Linen tree ``spec``.

    Training BatchNorm must be able to write ``batch_stats`` (Linen raises otherwise). A
    listed collection must exist or be written by this call: ToNNX rejects a name the call
    never writes, as a likely typo (a documented difference from Linen's silence).
    """
    needs = {"batch_stats"} if train and bt.has_kind(spec, "batchnorm") else set()
    options = sorted((existing | bt.linen_collections_written(spec, train)) - needs)
    choice = draw(
        st.one_of(
            st.just(True),
            st.lists(st.sampled_from(options), unique=True).map(tuple) if options else st.just(()),
        )
    )
    if choice is True:
        return True
    choice = tuple(sorted(needs)) + choice
    return choice or False


# -- Linen inside NNX: ToNNX -----------------------------------------------------------------


@given(spec=bt.linen_trees(), seed=seeds, train=st.booleans())
def test_tonnx_lazy_init_is_linen_init(spec, seed, train):
    """``lazy_init`` of a ToNNX creates exactly the variables of Linen's ``init``."""
    x = sample(spec.din)
    module = bt.linen_module(spec)
    want = plain(module.init(linen_keys(seed), x, train=train))
    model = linnx.lazy_init(ToNNX(module, rngs=nnx.Rngs(**linen_keys(seed))), x, train=train)

    # Every collection kept (and no other), every leaf bit-exact with its dtype and shape.
    # (A ToLinen inside the Linen tree boxes its leaves in NNXMeta; ToNNX turns each box into
    # the variable it describes, so the values come back unboxed.)
    assert sorted(model.linen_collections) == sorted(want)
    assert_bit_exact(tonnx_linen_variables(model), linen_values(want), "lazy_init")
    # Each leaf is an NNX variable of the type the registry pairs with its collection, or the
    # type its NNXMeta box names...
    n_params = 0
    for collection in model.linen_collections:
        boxes = jax.tree.leaves(want[collection], is_leaf=is_box)
        got = jax.tree.leaves(getattr(model, collection), is_leaf=is_var)
        for box, var in zip(boxes, got, strict=True):
            typ = (
                box.var_type
                if isinstance(box, linnx.NNXMeta)
                else (linnx.variable_type_from_name(collection))
            )
            assert type(var) is typ, collection
            n_params += issubclass(typ, nnx.Param)
    # ... and NNX's own state API sees all of them, and its Param filter exactly the params.
    # (ToLinen's 'nnx' collection holds graphdefs only, which are static: no state.)
    state = nnx.state(model)
    in_state = sum(len(jax.tree.leaves(state[c])) for c in model.linen_collections if c in state)
    assert in_state == count_leaves(want)
    assert len(jax.tree.leaves(nnx.state(model, nnx.Param))) == n_params
    # Initialization consumed no randomness: calls still get the streams' first keys.
    assert int(model.rngs.params.count.get_value()) == 0
    assert int(model.rngs.dropout.count.get_value()) == 0
    # lazy_init is safe to repeat (in either mode): it only adds what is missing, here nothing.
    linnx.lazy_init(model, x, train=not train)
    assert_bit_exact(tonnx_linen_variables(model), linen_values(want), "second lazy_init")
    assert int(model.rngs.params.count.get_value()) == 0
    assert int(model.rngs.dropout.count.get_value()) == 0


@given(spec=bt.linen_trees(), seed=seeds, jit=st.booleans(), data=st.data())
def test_tonnx_calls_are_linen_apply(spec, seed, jit, data):
    """Calls of a ToNNX equal Linen's ``apply`` on the same variables and keys, eager or under
    ``nnx.jit``; ``mutable`` collections land in the module, nothing else changes, and the
    variable objects stay the same (references held elsewhere stay live)."""
    x = sample(spec.din)
    tol = tolerance(spec, jit)
    module = bt.linen_module(spec)
    model = linnx.lazy_init(ToNNX(module, rngs=nnx.Rngs(**linen_keys(seed))), x)
    # Load other weights, as a user restoring a checkpoint would: the module must compute
    # with what is loaded, not with anything cached at initialization.
    variables = plain(module.init(linen_keys(seed + 2), x))
    for collection, tree in linen_values(variables).items():
        jax.tree.map(lambda v, a: v.set_value(a), getattr(model, collection), tree, is_leaf=is_var)
    # What the module's rngs hand out, per NNX's semantics: one key per stream and call.
    shadow = nnx.Rngs(**linen_keys(seed))

    for step in range(data.draw(st.integers(1, 2), "steps")):
        train = data.draw(st.booleans(), "train")
        mutable = data.draw(mutable_choices(spec, set(variables), train), "mutable")
        own_rngs = data.draw(st.booleans(), "own rngs")
        if own_rngs:
            call_rngs = None
            linen_rngs = {"params": shadow.params(), "dropout": shadow.dropout()}
        else:
            key = jax.random.key(data.draw(seeds, "dropout seed"))
            call_rngs, linen_rngs = {"dropout": key}, {"dropout": key}
        before = {
            (c, jax.tree_util.keystr(p)): v
            for c in model.linen_collections
            for p, v in jax.tree_util.tree_flatten_with_path(getattr(model, c), is_leaf=is_var)[0]
        }

        def call(m, x, rngs, train=train, mutable=mutable):
            return m(x, train=train, mutable=mutable, rngs=rngs)

        def linen_apply(v, x, rngs, train=train, mutable=mutable):
            return module.apply(v, x, train=train, mutable=mutable, rngs=rngs)

        if jit:
            call, linen_apply = nnx.jit(call), jax.jit(linen_apply)
        y = call(model, x, call_rngs)
        if mutable:
            want_y, updates = linen_apply(variables, x, linen_rngs)
            updates = plain(updates)
        else:
            want_y, updates = linen_apply(variables, x, linen_rngs), {}
        variables = {**variables, **updates}

        what = f"step {step} (train={train}, mutable={mutable}, jit={jit})"
        assert_same(y, want_y, tol, f"{what} output")
        # The updates landed and nothing else changed: the module now holds exactly Linen's
        # threaded variables, the untouched collections included.
        assert sorted(model.linen_collections) == sorted(variables), what
        assert_same(tonnx_linen_variables(model), linen_values(variables), tol, f"{what} variables")
        for (c, p), var in before.items():
            now = {
                jax.tree_util.keystr(q): w
                for q, w in jax.tree_util.tree_flatten_with_path(getattr(model, c), is_leaf=is_var)[
                    0
                ]
            }
            assert now[p] is var, f"{what}: {c}{p} was replaced by a new variable"
        for stream in ("params", "dropout"):
            assert int(model.rngs[stream].count.get_value()) == int(
                shadow[stream].count.get_value()
            ), what


# -- NNX inside Linen: ToLinen ----------------------------------------------------------------


def native_call(module: nnx.Module, x: jax.Array, train: bool) -> Any:
    return module(x, train=train)


jit_native_call = nnx.jit(native_call, static_argnames="train")


def native_after_init(
    spec: bt.Block, keys: dict, x: jax.Array, train: bool, jit: bool = False
) -> tuple[nnx.Module, Any]:
    """The native NNX module as ToLinen's ``init`` documents it, and its forward output.

    ToLinen constructs the module with ``nnx.Rngs`` fed by Linen's ``make_rng`` and stores
    the state the constructor built, as a native NNX model starts from. A ToNNX inside
    creates its variables in the forward pass, which runs as a ``lazy_init`` pass; those
    variables keep the values the pass gave them.
    """
    native = bt.NNXTree(spec, rngs=nnx.Rngs(**linen_first_keys(keys)))
    if not bt.has_bridge(spec):
        return native, (jit_native_call if jit else native_call)(nnx.clone(native), x, train)
    built = {path: var.get_value() for path, var in flat_state(native)}
    outputs = []
    linnx.lazy_init(Catch(native, outputs), x, train)
    for path, var in flat_state(native):
        if path in built:
            var.set_value(built[path])
    return native, outputs[0]


class Catch(nnx.Module):
    """Calls a module and keeps the output (``lazy_init`` returns the module instead)."""

    def __init__(self, module: nnx.Module, outputs: list):
        self.module = module
        self.outputs = outputs

    def __call__(self, x: jax.Array, train: bool) -> None:
        self.outputs.append(self.module(x, train=train))


@given(spec=bt.nnx_trees(), seed=seeds, train=st.booleans(), jit=st.booleans(), data=st.data())
def test_tolinen_init_and_apply_are_native_nnx(spec, seed, train, jit, data):
    """ToLinen's ``init`` holds the native constructor's state and gives the native output, and
    ``apply`` equals the native module on the same state, returning the ``mutable``
    collections only."""
    x = sample(spec.din)
    tol = tolerance(spec, jit)
    keys = linen_keys(seed)
    model = linnx.ToLinen(bt.NNXTree, args=(spec,))
    init = (
        jax.jit(model.init_with_output, static_argnames="train")
        if jit
        else (model.init_with_output)
    )
    y, variables = init(keys, x, train=train)
    variables = plain(variables)
    native, want_y = native_after_init(spec, keys, x, train, jit)

    assert_same(y, want_y, tol, "init output")
    assert_same(unboxed(variables), state_as_linen(native), tol, "init variables")
    # Every leaf is boxed with the type of its native variable, and nothing else is there.
    for path, var in flat_state(native):
        box = lookup(variables, linen_path(path, var))
        assert isinstance(box, linnx.NNXMeta) and box.var_type is type(var), path
    assert count_leaves(unboxed(variables)) == len(flat_state(native))

    apply = jax.jit(model.apply, static_argnames=("train", "mutable")) if jit else model.apply
    collections = sorted(c for c in variables if c != "nnx")
    for step in range(data.draw(st.integers(1, 2), "steps")):
        train = data.draw(st.booleans(), "train")
        mutable = data.draw(
            st.one_of(
                st.just(True), st.lists(st.sampled_from(collections), unique=True).map(tuple)
            ),
            "mutable",
        )
        load_linen_layout(native, variables)
        native_before = state_as_linen(native)
        want_y = (jit_native_call if jit else native_call)(native, x, train)
        what = f"step {step} (train={train}, mutable={mutable}, jit={jit})"
        # A change to a collection that is not mutable would be lost: refused, as Linen
        # refuses it, and the variables are left as they were (issue 14, item 7).
        changed = changed_collections(native_before, state_as_linen(native))
        if mutable is not True and not changed <= set(mutable):
            with pytest.raises(linnx.MutableCollectionError, match="not mutable in this call"):
                apply(variables, x, train=train, mutable=mutable)
            continue
        y, updates = apply(variables, x, train=train, mutable=mutable)
        updates = plain(updates)
        assert_same(y, want_y, tol, f"{what} output")
        # Exactly the mutable collections come back, with the native module's new values.
        expected = set(collections) | {"nnx"} if mutable is True else set(mutable)
        assert set(updates) == expected, what
        native_now = state_as_linen(native)
        assert_same(unboxed(updates), {c: native_now[c] for c in updates if c != "nnx"}, tol, what)
        variables = {**variables, **updates}
        # The input variables are values: apply left them as they were (checked next step,
        # whose native reference is loaded from them).


@given(spec=bt.nnx_trees(), seed=seeds, dropout_seed=seeds, jit=st.booleans())
def test_tolinen_apply_with_linen_dropout_key(spec, seed, dropout_seed, jit):
    """``apply(..., rngs={'dropout': key})`` re-keys the NNX dropout streams from Linen for
    this call only: it equals the native module whose dropout streams hold Linen's key with a
    zero count, the same key gives the same output, and the stored streams do not move."""
    x = sample(spec.din)
    tol = tolerance(spec, jit)
    keys = linen_keys(seed)
    model = linnx.ToLinen(bt.NNXTree, args=(spec,))
    variables = plain(model.init(keys, x))
    native, _ = native_after_init(spec, keys, x, False)

    call_key = jax.random.key(dropout_seed)
    (linen_key,) = linen_first_keys({"dropout": call_key}).values()

    def apply(variables, x, key):
        return model.apply(variables, x, train=True, rngs={"dropout": key}, mutable=True)

    if jit:
        apply = jax.jit(apply)
    y, updates = apply(variables, x, call_key)
    y_again, _ = apply(variables, x, call_key)
    assert_bit_exact(y_again, y, "same key, same output")

    load_linen_layout(native, variables)
    dropout_state = [
        (path, var)
        for path, var in flat_state(native)
        if isinstance(var, nnx.RngKey | nnx.RngCount) and var.get_metadata()["tag"] == "dropout"
    ]
    for _, var in dropout_state:
        var.set_value(linen_key if isinstance(var, nnx.RngKey) else jnp.zeros((), jnp.uint32))
    assert_same(y, (jit_native_call if jit else native_call)(native, x, True), tol, "output")
    # For this call only: the dropout streams in the returned variables did not move.
    updates = plain(updates)
    for path, var in dropout_state:
        where = linen_path(path, var)
        assert_bit_exact(
            meta.unbox(lookup(updates, where)), meta.unbox(lookup(variables, where)), str(where)
        )


# -- round trips through both wrappers -------------------------------------------------------


@given(
    spec=bt.nnx_trees(),
    seed=seeds,
    train=st.booleans(),
    jit=st.booleans(),
    steps=st.lists(st.booleans(), min_size=1, max_size=2),
)
def test_tonnx_of_tolinen_is_the_nnx_module(spec, seed, train, jit, steps):
    """``ToNNX(ToLinen(cls))`` holds the native module's state and, called with
    ``mutable=True``, computes and updates exactly like it, eager and under ``nnx.jit``."""
    x = sample(spec.din)
    tol = tolerance(spec, jit)
    keys = linen_keys(seed)
    # No rngs of its own: every call then runs the NNX module's own streams, as the native
    # module does (with rngs, each call would re-key the NNX streams from Linen instead).
    model = ToNNX(linnx.ToLinen(bt.NNXTree, args=(spec,)))
    linnx.lazy_init(model, x, train=train, rngs=keys)
    native, _ = native_after_init(spec, keys, x, train)
    # ToNNX turns ToLinen's NNXMeta boxes back into the native variable types.
    for path, var in flat_state(native):
        got = lookup(vars(model), linen_path(path, var))
        assert type(got) is type(var), path
    assert_bit_exact(
        {c: values(getattr(model, c)) for c in model.linen_collections if c != "nnx"},
        state_as_linen(native),
        "lazy_init",
    )

    def call(m, x, train):
        return m(x, train=train, mutable=True)

    reference = native_call
    if jit:
        call, reference = nnx.jit(call, static_argnames="train"), jit_native_call
    for step, train in enumerate(steps):
        what = f"step {step} (train={train}, jit={jit})"
        assert_same(call(model, x, train), reference(native, x, train), tol, what)
        assert_same(
            {c: values(getattr(model, c)) for c in model.linen_collections if c != "nnx"},
            state_as_linen(native),
            tol,
            what,
        )


class Holder(nnx.Module):
    """An NNX module whose only child is a ToNNX of a Linen tree (passing ``mutable=True``)."""

    def __init__(self, spec: bt.Block, *, rngs: nnx.Rngs):
        self.inner = ToNNX(bt.linen_module(spec), rngs=rngs)

    def __call__(self, x, train: bool = False):
        return self.inner(x, train=train, mutable=True)


@given(
    spec=bt.linen_trees(),
    seed=seeds,
    init_train=st.booleans(),
    jit=st.booleans(),
    steps=st.lists(st.booleans(), min_size=1, max_size=2),
)
def test_tolinen_of_module_holding_tonnx_is_the_linen_module(spec, seed, init_train, jit, steps):
    """``ToLinen`` of an NNX module holding ``ToNNX(linen_module)`` initializes and applies
    exactly like ``linen_module`` itself, eager and under ``jax.jit``; its Linen variables sit
    under the holder's attribute, in each collection."""
    x = sample(spec.din)
    tol = tolerance(spec, jit)
    keys = linen_keys(seed)
    module = bt.linen_module(spec)
    model = linnx.ToLinen(Holder, args=(spec,))
    init = jax.jit(model.init, static_argnames="train") if jit else model.init
    variables = plain(init(keys, x, train=init_train))
    # The holder's rngs are Linen's make_rng keys; the ToNNX inside, their first user,
    # initializes its Linen module with them as they are.
    inner_keys = linen_first_keys(keys)
    linen_init = jax.jit(module.init, static_argnames="train") if jit else module.init
    want = plain(linen_init(inner_keys, x, train=init_train))

    def inner(variables):
        """The Linen module's own variables inside ToLinen's: ``collection/inner/collection``."""
        return {
            c: v["inner"][c]
            for c, v in unboxed(variables).items()
            if "inner" in v and c in v["inner"]
        }

    def expected(linen_variables):
        """What ``inner`` should give: the Linen variables in ToLinen's string-keyed layout
        (a sow's tuple shows as ``{'0': ...}``), unboxed. A ToLinen inside the Linen tree
        has its graphdef in the 'nnx' collection; behind ToNNX it is static, in the holder's
        own graphdef."""
        return string_keys(linen_values({c: v for c, v in linen_variables.items() if c != "nnx"}))

    assert_same(inner(variables), expected(want), tol, "init")
    # Calls draw from the ToNNX's streams, one key per stream and call.
    shadow = nnx.Rngs(**inner_keys)
    apply = jax.jit(model.apply, static_argnames=("train", "mutable")) if jit else model.apply
    linen_apply = (
        jax.jit(module.apply, static_argnames=("train", "mutable")) if jit else module.apply
    )
    for step, train in enumerate(steps):
        what = f"step {step} (train={train}, jit={jit})"
        y, updates = apply(variables, x, train=train, mutable=True)
        linen_rngs = {"dropout": shadow.dropout(), "params": shadow.params()}
        want_y, want_updates = linen_apply(want, x, train=train, mutable=True, rngs=linen_rngs)
        want = {**want, **plain(want_updates)}
        variables = {**variables, **plain(updates)}
        assert_same(y, want_y, tol, f"{what} output")
        assert_same(inner(variables), expected(want), tol, f"{what} variables")


# -- regressions found by the properties above -----------------------------------------------


class _Sower(nn.Module):
    @nn.compact
    def __call__(self, x):
        self.sow("prop_acts", "h", x)  # a custom collection: Linen's init keeps it
        return nn.Dense(2)(x)


def test_repeated_lazy_init_does_not_append_to_sown_collections():
    """A second ``lazy_init`` used to append a second value to each sown tuple, taking the new
    tuple entry for a missing variable; it must leave the module as Linen's ``init`` made it."""
    x = jnp.ones((1, 3))
    want = plain(_Sower().init(jax.random.key(0), x))
    model = linnx.lazy_init(ToNNX(_Sower(), rngs=nnx.Rngs(0)), x)
    linnx.lazy_init(model, x)
    assert_bit_exact(tonnx_linen_variables(model), want, "second lazy_init")
