"""linnx.jit keeps nnx.jit's results when structure changes, outside the step or inside it.

Outside (between steps): replacing a submodule or a variable, changing a static attribute or
a variable's metadata, writing values, passing other objects. Each must give what ``nnx.jit``
gives on the next step. Inside: a step that creates a variable on its first call runs that
call through ``nnx.jit`` once and is fast afterwards; one that changes structure on every call
falls back for good, with one warning.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import nnx_zoo
import optax
import pytest
from _trees import assert_identical
from flax import errors as flax_errors
from flax import nnx

import linnx

STEP = nnx_zoo.CASES[1]  # the conv + BatchNorm + dropout model
assert STEP.name == "nnx_conv_bn_dropout"


def _pair(case=STEP):
    traces: list[int] = []

    def step(*args):
        traces.append(1)  # runs once per trace
        return case.step(*args)

    return case.make(), case.make(), nnx.jit(case.step), linnx.jit(step), traces


def _edits():
    def new_head(m, o):
        m.head = nnx.Linear(4, 3, rngs=nnx.Rngs(9))
        o.__init__(m, optax.adam(1e-2), wrt=nnx.Param)  # the optimizer follows the model

    def static_flag(m, o):
        m.drop.deterministic = True
        m.bn.use_running_average = True

    def new_variable(m, o):
        m.head.bias = nnx.Param(jnp.full((3,), 0.5))

    def values_in_place(m, o):
        m.head.bias[...] = jnp.ones((3,))
        m.bn.mean.set_value(jnp.zeros((4,)))

    def metadata(m, o):
        m.head.kernel.set_metadata("note", "frozen later")

    def update_from_state(m, o):
        nnx.update(m, jax.tree.map(lambda a: a * 0.5, nnx.state(m, nnx.Param)))

    return [new_head, static_flag, new_variable, values_in_place, metadata, update_from_state]


@pytest.mark.parametrize("edit", _edits(), ids=lambda f: f.__name__)
def test_edits_between_steps_are_seen(edit):
    reference, fast, ref_step, fast_step, traces = _pair()
    x, y = STEP.batch()
    for i in range(3):
        if i == 2:
            edit(*reference)
            edit(*fast)
            assert_identical(reference, fast)
        assert_identical(ref_step(*reference, x, y), fast_step(*fast, x, y))
        assert_identical(reference, fast)
    assert fast_step.nnx_jit_calls == 0
    structural = edit.__name__ not in ("values_in_place", "update_from_state")
    assert len(traces) == 1 + structural  # writing values never retraces


def test_other_objects_of_the_same_structure_reuse_the_program():
    _, _, ref_step, fast_step, traces = _pair()
    tx = optax.adam(1e-2)  # one transform: its functions are static attributes of the graph

    def make(seed):
        model = nnx_zoo.ConvBnDrop(rngs=nnx.Rngs(seed, dropout=seed + 1))
        return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

    a, b, a2, b2 = make(0), make(0), make(5), make(5)
    x, y = STEP.batch()
    for objs_ref, objs_fast in [(a, b), (a2, b2), (a, b), (a2, b2)]:
        assert_identical(ref_step(*objs_ref, x, y), fast_step(*objs_fast, x, y))
        assert_identical(objs_ref, objs_fast)
    assert len(traces) == 1


class Lazy(nnx.Module):
    """Creates a statistic on its first call, as lazily built modules do."""

    def __init__(self):
        self.fc = nnx.Linear(6, 6, rngs=nnx.Rngs(0))

    def __call__(self, x):
        if not hasattr(self, "total"):
            self.total = nnx.BatchStat(jnp.zeros((6,)))
        self.total[...] += jnp.sum(x, axis=0)
        return self.fc(x)


def _lazy_step(model, opt, x, y):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    opt.update(model, grads)
    return loss


def test_a_variable_created_in_the_first_step_costs_one_nnx_jit_call():
    reference, fast = Lazy(), Lazy()
    ref_step, fast_step = nnx.jit(_lazy_step), linnx.jit(_lazy_step)
    x, y = nnx_zoo._vectors()
    opts = [nnx.Optimizer(m, optax.sgd(0.1), wrt=nnx.Param) for m in (reference, fast)]
    for _ in range(4):
        assert_identical(ref_step(reference, opts[0], x, y), fast_step(fast, opts[1], x, y))
        assert_identical((reference, opts[0]), (fast, opts[1]))
    assert fast_step.nnx_jit_calls == 1 and fast_step.fallback_reason is None


@pytest.mark.filterwarnings("ignore:Using 'Module.sow\\(\\)' outside:DeprecationWarning")
def test_sown_values_kept_on_the_module_accumulate_as_under_nnx_jit():
    model_ref, model_fast = nnx_zoo.SowMLP(rngs=nnx.Rngs(0)), nnx_zoo.SowMLP(rngs=nnx.Rngs(0))

    def step(model, x):
        return model(x).sum()

    ref_step, fast_step = nnx.jit(step), linnx.jit(step)
    x, _ = nnx_zoo._vectors()
    for i in range(3):
        assert_identical(ref_step(model_ref, x), fast_step(model_fast, x))
        assert_identical(model_ref, model_fast)
        assert len(model_fast.hidden.get_value()) == i + 1
    assert fast_step.nnx_jit_calls == 1  # the call that created `hidden`


class Grows(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.ones(()))

    def __call__(self, x):
        setattr(self, f"seen_{len(vars(self))}", nnx.BatchStat(jnp.sum(x)))
        return x * self.w


def test_a_step_that_changes_structure_every_call_falls_back_with_one_warning():
    reference, fast = Grows(), Grows()
    step = lambda m, x: m(x)  # noqa: E731
    ref_step, fast_step = nnx.jit(step), linnx.jit(step)
    x = jnp.arange(3.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(4):
            assert_identical(ref_step(reference, x), fast_step(fast, x))
            assert_identical(reference, fast)
    assert [w.category for w in caught] == [linnx.JitFallbackWarning]
    message = str(caught[0].message)
    assert "changes the structure of its NNX arguments on every call" in message
    assert "added m.seen_" in message and "Fix: create variables" in message
    assert caught[0].filename == __file__  # points at the caller's line
    assert fast_step.fallback_reason is not None and fast_step.nnx_jit_calls == 4


def test_static_arguments_by_position_and_by_name():
    def step(model, x, train):
        h = model.bn(model.conv(x), use_running_average=not train)
        return model.drop(h, deterministic=not train)

    reference, fast = (nnx_zoo.ConvBnDrop(rngs=nnx.Rngs(0, dropout=1)) for _ in range(2))
    ref_step = nnx.jit(step, static_argnums=2)
    fast_step = linnx.jit(step, static_argnums=2)
    x, _ = STEP.batch()
    for train in (True, False, True):
        assert_identical(ref_step(reference, x, train), fast_step(fast, x, train))
        assert_identical(ref_step(reference, x, train=train), fast_step(fast, x, train=train))
        assert_identical(reference, fast)
    assert fast_step.nnx_jit_calls == 0


def test_objects_passed_by_keyword():
    reference, fast = STEP.make(), STEP.make()
    ref_step, fast_step = nnx.jit(STEP.step), linnx.jit(STEP.step)
    x, y = STEP.batch()
    for _ in range(3):
        expected = ref_step(reference[0], x=x, y=y, opt=reference[1])
        assert_identical(expected, fast_step(fast[0], x=x, y=y, opt=fast[1]))
        assert_identical(reference, fast)
    assert fast_step.nnx_jit_calls == 0


def test_as_a_method_decorator():
    class Model(nnx.Module):
        def __init__(self):
            self.fc = nnx.Linear(6, 6, rngs=nnx.Rngs(0))
            self.calls = nnx.BatchStat(jnp.zeros((), jnp.int32))

        @linnx.jit
        def step(self, x):
            self.calls[...] += 1
            return self.fc(x)

    model, x = Model(), nnx_zoo._vectors()[0]
    out = [model.step(x) for _ in range(3)]
    assert int(model.calls[...]) == 3 and jnp.array_equal(out[0], model.fc(x))
    assert Model.step.nnx_jit_calls == 0


def test_inside_another_jit_it_behaves_like_nnx_jit():
    reference, fast = STEP.make(), STEP.make()
    inner_ref, inner_fast = nnx.jit(STEP.step), linnx.jit(STEP.step)
    outer_ref = nnx.jit(lambda *a: inner_ref(*a))
    outer_fast = nnx.jit(lambda *a: inner_fast(*a))
    x, y = STEP.batch()
    for _ in range(2):
        assert_identical(outer_ref(*reference, x, y), outer_fast(*fast, x, y))
        assert_identical(reference, fast)


def test_closing_over_objects_under_jax_jit_fails_as_with_nnx_jit():
    x, y = STEP.batch()
    for wrap in (nnx.jit, linnx.jit):
        objs, step = STEP.make(), wrap(STEP.step)
        with pytest.raises(flax_errors.TraceContextError):
            jax.jit(lambda x, step=step, objs=objs: step(*objs, x, y))(x)


def test_an_error_in_the_step_leaves_the_objects_unchanged():
    objs = STEP.make()
    copy = nnx.clone(objs)
    calls = []

    def step(model, opt, x, y):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return STEP.step(model, opt, x, y)

    fast_step = linnx.jit(step)
    x, y = STEP.batch()
    fast_step(*objs, x, y)
    nnx.jit(STEP.step)(*copy, x, y)
    with pytest.raises(RuntimeError, match="boom"):
        fast_step(*objs, x[:2], y[:2])  # a new shape: traces again, and fails
    assert_identical(copy, objs)
    assert_identical(nnx.jit(STEP.step)(*copy, x, y), fast_step(*objs, x, y))


class Box:
    """A pytree whose static data (a list) cannot be hashed."""

    def __init__(self, value, tags):
        self.value, self.tags = value, tags


jax.tree_util.register_pytree_node(
    Box, lambda b: ((b.value,), list(b.tags)), lambda tags, children: Box(children[0], tags)
)


def test_an_argument_with_unhashable_pytree_data():
    reference, fast = STEP.make(), STEP.make()

    def step(model, opt, box, y):
        return STEP.step(model, opt, box.value, y)

    ref_step, fast_step = nnx.jit(step), linnx.jit(step)
    x, y = STEP.batch()
    for _ in range(2):
        assert_identical(ref_step(*reference, Box(x, ["a"]), y), fast_step(*fast, Box(x, ["a"]), y))
        assert_identical(reference, fast)
    assert fast_step.nnx_jit_calls == 0
