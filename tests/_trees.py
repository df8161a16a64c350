"""Comparing pytrees in tests: one place for "same structure, same (or close) leaves".

``tests/`` is on ``sys.path`` (its conftest.py lives there), so tests import these as
``from _trees import assert_trees_equal``. Every assertion names the first leaf that differs
by its key path.

Three kinds of helpers: views of a tree (:func:`values`, :func:`plain`, :func:`shapes`,
:func:`fingerprint`), assertions (:func:`assert_trees_equal`, :func:`assert_trees_close`,
:func:`assert_identical` for NNX objects), and ToLinen's Linen layout of an NNX module's
variables (:func:`linen_value`, :func:`copy_from_linen`, :func:`assert_linen_matches`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import linnx

__all__ = [
    "values",
    "plain",
    "shapes",
    "fingerprint",
    "assert_trees_equal",
    "assert_trees_close",
    "graph_shape",
    "assert_identical",
    "linen_value",
    "copy_from_linen",
    "assert_linen_matches",
]


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


def _is_key(a: Any) -> bool:
    return isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jax.dtypes.prng_key)


def _array(a: Any) -> np.ndarray:
    # `np.asarray`, not `jnp.asarray`: a float64 NumPy leaf keeps its dtype and its bits.
    return np.asarray(jax.random.key_data(a) if _is_key(a) else a)


def _leaf_record(x: Any) -> tuple:
    if isinstance(x, jax.Array | np.ndarray | np.generic):
        a = _array(x)
        return (a.dtype.str, a.shape, a.tobytes())
    return ("object", type(x).__name__, repr(x))


def fingerprint(tree: Any) -> tuple:
    """A comparable record of ``tree``: equal records mean bit-identical trees.

    The structure, and per leaf its key path and, for an array, dtype, shape and bytes (a PRNG
    key by its key data); other leaves by type and ``repr``. The record holds no reference to
    the tree, so a record taken before a call still shows the tree as it was then.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return (str(treedef), tuple((jax.tree_util.keystr(p), _leaf_record(v)) for p, v in leaves))


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


# -- NNX objects ---------------------------------------------------------------------------------


def graph_shape(objs: Any) -> list[tuple]:
    """Every node and variable of an NNX graph: path, type, and a variable's metadata.

    (Graphdefs of two copies differ in their static attributes, e.g. the optimizer's optax
    functions, so they are not compared directly.)
    """
    shape = []
    for path, node in nnx.iter_graph(objs):
        if isinstance(node, nnx.Variable):
            shape.append((path, type(node), node.get_metadata()))
        elif nnx.graph.is_node(node):
            shape.append((path, type(node)))
    return shape


def assert_identical(a: Any, b: Any, what: str = "") -> None:
    """Same graph (nodes, variable types and metadata) and the same bits in every variable.

    ``a`` and ``b`` are NNX objects (or tuples holding some), compared graph and state, or
    plain trees, compared as :func:`assert_trees_equal` does.
    """
    if (
        isinstance(a, nnx.Pytree | nnx.Variable)
        or isinstance(a, tuple)
        and any(isinstance(x, nnx.Pytree) for x in a)
    ):
        assert graph_shape(a) == graph_shape(b), f"{what}: graph"
        a, b = nnx.state(a), nnx.state(b)
    assert_trees_equal(a, b, what)


# -- ToLinen's layout ----------------------------------------------------------------------------


def _linen_path(var: nnx.Variable, path: tuple) -> tuple[str, ...]:
    path = tuple(str(k) for k in path)
    if isinstance(var, nnx.RngKey | nnx.RngCount):
        tag = var.get_metadata()["tag"]
        if path[-2] != tag:  # a bare RngStream (nnx.Dropout) nests under its stream name
            path = (*path[:-1], tag, path[-1])
    return path


def linen_value(variables: Mapping[str, Any], var: nnx.Variable, path: tuple) -> Any:
    """The value a native NNX variable at ``path`` has in ToLinen's Linen ``variables``.

    The documented layout: the registry's collection, string keys, and a bare ``RngStream``
    (as ``nnx.Dropout`` keeps one) nested under its stream name
    (``variables['RngCount']['rngs']['dropout']['count']``).
    """
    node = variables[linnx.variable_name_from_type(type(var))]
    for key in _linen_path(var, path):
        node = node[key]
    return node.value


def copy_from_linen(native: nnx.Module, variables: Mapping[str, Any]) -> nnx.Module:
    """Overwrites every variable of ``native`` with its value from Linen ``variables``."""
    flat = nnx.to_flat_state(nnx.state(native))
    for path, var in flat:
        var.set_value(linen_value(variables, var, path))
    nnx.update(native, nnx.from_flat_state(flat))
    return native


def assert_linen_matches(
    variables: Mapping[str, Any], state: nnx.State, *, atol: float = 1e-6, rtol: float = 1e-6
) -> None:
    """Every variable of an NNX ``state`` has its value (within tolerance) in ToLinen's Linen
    ``variables``, at the place :func:`linen_value` names; integers and keys exactly."""
    got, want = {}, {}
    for path, var in nnx.to_flat_state(state):
        where = "/".join(map(str, path))  # named by its NNX path
        got[where], want[where] = linen_value(variables, var, path), var.get_value()
    assert_trees_close(got, want, "linen", atol=atol, rtol=rtol)
