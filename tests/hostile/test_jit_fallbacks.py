"""The steps linnx.jit hands to nnx.jit: one warning naming reason and fix, nnx.jit's results.

Each entry of ``cases_jit.FALLBACKS`` runs three times under ``linnx.jit`` and, on a fresh
copy of its arguments, under ``nnx.jit``: the outputs and every object must be identical after
every call, ``linnx.jit`` must warn exactly once (with a :class:`linnx.JitFallbackWarning`
that points at the caller and says why and what to do), and record the reason.
"""

from __future__ import annotations

import re
import warnings

import jax
import numpy as np
import pytest
from flax import nnx

import linnx

from .cases_jit import FALLBACKS


def _values(obj):
    if isinstance(obj, nnx.Pytree):  # every variable's value (array refs read out)
        return [(p, v.get_value()) for p, v in nnx.iter_graph(obj) if isinstance(v, nnx.Variable)]
    return obj


def _assert_identical(a, b):
    la, ta = jax.tree.flatten(_values(a))
    lb, tb = jax.tree.flatten(_values(b))
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("fallback", FALLBACKS, ids=lambda f: f.id)
def test_fallback_warns_once_and_equals_nnx_jit(fallback):
    fun, args = fallback.make()
    _, ref_args = fallback.make()
    fast, reference = linnx.jit(fun), nnx.jit(fun)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            got = fast(*args)
            expected = reference(*ref_args)
            if isinstance(expected, nnx.Pytree):  # the step returns its module
                assert got is args[0] and expected is ref_args[0]
            _assert_identical(got, expected)
            for a, b in zip(args, ref_args, strict=True):
                _assert_identical(a, b)
    mine = [w for w in caught if w.category is linnx.JitFallbackWarning]
    assert len(mine) == 1 and len(caught) == 1, [str(w.message) for w in caught]
    message = str(mine[0].message)
    assert re.search(fallback.says, message), message
    assert re.search("Fix: .*" + fallback.fix, message), message
    assert mine[0].filename == __file__
    assert fast.fallback_reason and re.search(fallback.says, fast.fallback_reason)
