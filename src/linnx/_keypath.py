"""Key paths as text: the one ``('params', 'Dense_0', 'kernel')`` -> ``'params/Dense_0/kernel'``.

Every message, record and report of linnx names a variable by its slash-joined path, whether the
path came from a Linen variables dict (strings), from ``nnx`` (strings and ints) or from
``jax.tree_util`` (``DictKey``/``SequenceKey``/``GetAttrKey`` entries). They all go through
:func:`path_str`, so the same variable is spelled the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax

__all__ = ["path_str"]


def path_str(path: Iterable[Any]) -> str:
    """Joins a key path with ``/``, taking each jax key entry's bare key, index or name.

    Example:
        >>> import jax
        >>> from linnx._keypath import path_str
        >>> path_str(("params", "Dense_0", "kernel"))
        'params/Dense_0/kernel'
        >>> [path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path({"a": [1, 2]})]
        ['a/0', 'a/1']
    """
    return jax.tree_util.keystr(tuple(path), simple=True, separator="/")
