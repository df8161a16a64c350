"""Comparing pytrees in tests: one place for "same structure, same (or close) leaves".

``tests/`` is on ``sys.path`` (its conftest.py lives there), so tests import these as
``from _trees import assert_trees_equal``. Every assertion names the first leaf that differs
by its key path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["values", "plain", "shapes", "assert_trees_equal", "assert_trees_close"]


def _is_var(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def values(tree: Any) -> Any:
    """The raw values of a tree of NNX variables, in the same containers."""
    return jax.tree.map(lambda v: v.get_value(), tree, is_leaf=_is_var)


def plain(tree: Any) -> Any:
    """``tree`` with every mapping a ``dict`` (Linen may return ``FrozenDict``)."""
    if isinstance(tree, Mapping):
        return {k: plain(v) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return tuple(plain(v) for v in tree)
    return tree


def shapes(tree: Any) -> Any:
    """``tree`` with every array replaced by its shape."""
    return jax.tree.map(jnp.shape, tree)


def _array(a: Any) -> np.ndarray:
    a = jnp.asarray(a)
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
        a = jax.random.key_data(a)
    return np.asarray(a)


def _pairs(got: Any, want: Any, what: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    got_flat, got_def = jax.tree_util.tree_flatten_with_path(got)
    want_flat, want_def = jax.tree_util.tree_flatten_with_path(want)
    assert got_def == want_def, f"{what}: structure\n{got_def}\n!=\n{want_def}"
    out = []
    for (path, g), (_, w) in zip(got_flat, want_flat, strict=True):
        where = f"{what}{jax.tree_util.keystr(path)}"
        g, w = _array(g), _array(w)
        assert g.shape == w.shape, f"{where}: shape {g.shape} != {w.shape}"
        out.append((where, g, w))
    return out


def assert_trees_equal(got: Any, want: Any, what: str = "", *, dtype: bool = True) -> None:
    """Same structure, and every leaf with the same shape and values (and dtype, by default).

    PRNG keys compare by their key data.
    """
    for where, g, w in _pairs(got, want, what):
        if dtype:
            assert g.dtype == w.dtype, f"{where}: dtype {g.dtype} != {w.dtype}"
        np.testing.assert_array_equal(g, w, err_msg=where)


def assert_trees_close(
    got: Any, want: Any, what: str = "", *, atol: float = 1e-5, rtol: float = 1e-5
) -> None:
    """Same structure and shapes; floating leaves within tolerance, the others exactly."""
    for where, g, w in _pairs(got, want, what):
        if jnp.issubdtype(g.dtype, jnp.inexact) or jnp.issubdtype(w.dtype, jnp.inexact):
            np.testing.assert_allclose(
                g.astype(np.float64), w.astype(np.float64), atol=atol, rtol=rtol, err_msg=where
            )
        else:
            np.testing.assert_array_equal(g, w, err_msg=where)
