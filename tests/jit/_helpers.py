"""Comparing two copies of the same NNX objects bit for bit, and counting compiled programs."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx


def _plain(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def graph_shape(objs: Any) -> list[tuple]:
    """Every node and variable of a graph: path, type, and a variable's metadata.

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


def assert_identical(a: Any, b: Any) -> None:
    """Same graph (nodes, variable types and metadata) and the same bits in every variable."""
    if (
        isinstance(a, nnx.Pytree | nnx.Variable)
        or isinstance(a, tuple)
        and any(isinstance(x, nnx.Pytree) for x in a)
    ):
        assert graph_shape(a) == graph_shape(b)
        a, b = nnx.state(a), nnx.state(b)
    leaves_a, tree_a = jax.tree.flatten_with_path(a)
    leaves_b, tree_b = jax.tree.flatten_with_path(b)
    assert tree_a == tree_b
    for (path, x), (_, y) in zip(leaves_a, leaves_b, strict=True):
        x, y = _plain(x), _plain(y)
        assert x.dtype == y.dtype and x.shape == y.shape, jax.tree_util.keystr(path)
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
