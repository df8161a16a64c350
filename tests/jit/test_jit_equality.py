"""linnx.jit against nnx.jit, step by step, on every model of the zoo.

Two identical copies of each model (and optimizer, and ``Rngs`` where the step takes one) are
trained for several steps, one under ``nnx.jit`` and one under ``linnx.jit``. After every step
the outputs and every variable of every object (parameters, optimizer state, BatchNorm
statistics, rng keys and counts) must be equal bit for bit, and the objects must have the
same graph. ``linnx.jit`` must have served every step from its fast path (``nnx_jit_calls``
counts the calls it handed to ``nnx.jit``).
"""

from __future__ import annotations

import jax
import nnx_zoo
import pytest
from _trees import assert_identical
from flax import nnx

import linnx

STEPS = 4


@pytest.fixture(params=nnx_zoo.CASES, ids=repr)
def case(request):
    return request.param


def test_every_step_equals_nnx_jit(case):
    reference, fast = case.make(), case.make()
    assert_identical(reference, fast)
    ref_step, fast_step = nnx.jit(case.step), linnx.jit(case.step)
    x, y = case.batch()
    for _ in range(STEPS):
        expected = ref_step(*reference, x, y)
        got = fast_step(*fast, x, y)
        assert_identical(expected, got)
        assert_identical(reference, fast)
    assert fast_step.nnx_jit_calls == 0 and fast_step.fallback_reason is None


def test_the_step_updates_the_objects_passed_in(case):
    """Not a copy: the caller's own variable objects hold the new values."""
    objs = case.make()
    variables = [v for _, v in nnx.iter_graph(objs) if isinstance(v, nnx.Variable)]
    before = [v.get_raw_value() for v in variables]
    step = linnx.jit(case.step)
    step(*objs, *case.batch())
    after = [v.get_raw_value() for v in variables]
    assert [v for _, v in nnx.iter_graph(objs) if isinstance(v, nnx.Variable)] == variables
    changed = sum(a is not b for a, b in zip(before, after, strict=True))
    params = len(jax.tree.leaves(nnx.state(objs[0], nnx.Param)))
    assert changed >= params  # every parameter, plus optimizer state, counts, statistics
