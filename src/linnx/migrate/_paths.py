"""Key paths: flattening nested mappings, name normalization, rename rules, path patterns.

A *path* is a tuple of keys (``('params', 'Block_0', 'Dense_0', 'kernel')``); its string form
joins the keys with ``'/'``. Linen paths start with the collection; NNX paths are graph paths
(``('block', 'linear', 'kernel')``, with ``int`` keys for list items).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
from flax.core import meta

from ._errors import MigrationTypeError, RenameError

__all__ = [
    "Path",
    "flatten_mapping",
    "unflatten_mapping",
    "canonical",
    "similarity",
    "Renamer",
    "patterns",
    "matches_any",
    "whole_subtrees",
]

Path = tuple[Any, ...]

#: What ``rename=`` accepts: a mapping of path fragments, or a function of the whole path.
RenameRule = Mapping[str, str] | Callable[[str], "str | None"] | None


def flatten_mapping(tree: Any, prefix: Path = ()) -> dict[Path, Any]:
    """Flattens nested mappings (dicts, FrozenDicts) into ``{path: leaf}``; non-mappings are leaves.

    Empty mappings vanish, as they do in a Linen variables dict.
    """
    out: dict[Path, Any] = {}
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            out.update(flatten_mapping(value, (*prefix, key)))
    elif prefix:
        out[prefix] = tree
    return out


def unboxed(tree: Any) -> Any:
    """``tree`` with every Flax box (``nn.Partitioned``, ``nn.LogicallyPartitioned``, ...)
    replaced by its value, as is. ``meta.unbox`` also applies the box's sharding constraint
    when a mesh is set: an error on the abstract values of a trace, and a reshard of concrete
    ones, where migration only reads them."""

    def value(x: Any) -> Any:
        if isinstance(x, meta.Partitioned):
            return x.unbox(apply_constraint=False)
        return x.unbox() if isinstance(x, meta.AxisMetadata) else x

    return jax.tree_util.tree_map(value, tree, is_leaf=lambda x: isinstance(x, meta.AxisMetadata))


def unflatten_mapping(flat: Mapping[Path, Any]) -> dict[Any, Any]:
    """The inverse of :func:`flatten_mapping`: plain nested dicts."""
    out: dict[Any, Any] = {}
    for path, leaf in flat.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = leaf
    return out


_INDEXED = re.compile(r"^(.*[^_])_(\d+)$")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _split_index(segment: str) -> list[str]:
    """``'layers_0'`` -> ``['layers', '0']``: Linen's list naming vs NNX's list paths."""
    m = _INDEXED.match(segment)
    return [m.group(1), m.group(2)] if m else [segment]


def canonical(path: str) -> str:
    """A path with Linen's ``name_N`` list items spelled the NNX way, ``name/N``.

    Two paths that are equal after this are the same variable written by the two libraries
    (``layers_0/kernel`` and ``layers/0/kernel``).
    """
    return "/".join(part for seg in path.split("/") if seg for part in _split_index(seg))


def _tokens(path: str) -> str:
    parts = []
    for seg in canonical(path).split("/"):
        parts.append(_CAMEL.sub("_", seg).lower())
    return "/".join(parts)


def similarity(a: str, b: str) -> int:
    """How alike two module paths read, from 0 to 10 (coarse on purpose: it only breaks ties)."""
    if not a and not b:
        return 10
    return round(10 * difflib.SequenceMatcher(None, _tokens(a), _tokens(b)).ratio())


class Renamer:
    """Applies a user ``rename=`` rule to Linen paths written without their collection.

    A mapping replaces path fragments: each key is one or more ``'/'``-separated segments and
    matches wherever those segments appear in a row (longest key first); the value replaces
    them. ``{'Dense_0': 'linear'}`` turns ``Block_0/Dense_0/kernel`` into
    ``Block_0/linear/kernel`` and ``Dense_0/bias`` into ``linear/bias``. A function receives
    the whole path and returns the new one, or ``None`` to keep it.
    """

    def __init__(self, rule: RenameRule):
        self._fn: Callable[[str], str | None] | None = None
        self._rules: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        self._used: set[tuple[str, ...]] = set()
        if rule is None:
            return
        if callable(rule) and not isinstance(rule, Mapping):
            self._fn = rule
            return
        if not isinstance(rule, Mapping):
            raise RenameError(
                f"rename={rule!r}: expected a mapping like {{'Dense_0': 'linear'}} or a "
                "function from a Linen path to an NNX path."
            )
        for old, new in rule.items():
            if not isinstance(old, str) or not isinstance(new, str) or not old.strip("/"):
                raise RenameError(
                    f"rename={{{old!r}: {new!r}}}: keys and values must be non-empty path "
                    "strings such as 'Block_0/Dense_0' or 'block/linear'."
                )
            self._rules.append((tuple(old.strip("/").split("/")), tuple(new.strip("/").split("/"))))
        self._rules.sort(key=lambda r: -len(r[0]))

    def __bool__(self) -> bool:
        return self._fn is not None or bool(self._rules)

    def __call__(self, path: str) -> str:
        if self._fn is not None:
            new = self._fn(path)
            if new is not None and not isinstance(new, str):
                raise RenameError(
                    f"rename(...) returned {new!r} for {path!r}; it must return a path string "
                    "or None."
                )
            return path if new is None else new.strip("/")
        if not self._rules:
            return path
        segs = path.split("/") if path else []
        out: list[str] = []
        i = 0
        while i < len(segs):
            for old, replacement in self._rules:
                if tuple(segs[i : i + len(old)]) == old:
                    out.extend(replacement)
                    self._used.add(old)
                    i += len(old)
                    break
            else:
                out.append(segs[i])
                i += 1
        return "/".join(out)

    def check_all_used(
        self, linen_module_paths: Iterable[str], linen_variable_paths: Iterable[str] = ()
    ) -> None:
        """Raises :class:`RenameError` when a mapping key matched no Linen path (a typo).

        The message lists the Linen module paths a key may name, and, for a model whose
        variables sit at the top (a lone ``nn.Dense``: no module path but the root), the
        variable paths.
        """
        unused = ["/".join(old) for old, _ in self._rules if old not in self._used]
        if not unused:
            return
        modules = sorted({p for p in linen_module_paths if p})
        variables = sorted({p for p in linen_variable_paths if p})
        lines = []
        if modules:
            shown = ", ".join(modules[:20]) + (" ..." if len(modules) > 20 else "")
            lines.append(f"Linen module paths (without collection): {shown}")
        if variables and (not modules or len(variables) <= 20):
            shown = ", ".join(variables[:20]) + (" ..." if len(variables) > 20 else "")
            where = "" if modules else " (the model's variables sit at its top level)"
            lines.append(f"Linen variable paths (without collection){where}: {shown}")
        if not lines:
            lines.append("The Linen model has no variables.")
        raise RenameError(
            f"rename: {', '.join(repr(u) for u in unused)} matched no Linen path.\n"
            + "\n".join(lines)
            + "\nFix: use one of these names as the key (segments joined by '/')."
        )


def patterns(spec: str | Iterable[str] | None, name: str = "allow_missing") -> tuple[str, ...]:
    """Normalizes an ``allow_missing=``/``allow_unused=`` argument to a tuple of patterns."""
    if spec is None or spec is False:
        return ()
    if isinstance(spec, str):
        return (spec,)
    if isinstance(spec, Iterable) and not isinstance(spec, bytes | Mapping):
        items = tuple(spec)
        if all(isinstance(p, str) for p in items):
            return items
    # Anything else would be iterated character by character, or fail deep inside a match.
    raise MigrationTypeError(
        f"{name}={spec!r}: expected a path or glob pattern, or a list of them.\n"
        f"Fix: e.g. {name}=['extra/*'] ('*' allows every path)."
    )


def matches_any(path: str, pats: Iterable[str]) -> bool:
    """True when ``path`` equals a pattern, matches it as a glob, or lies under it."""
    for pat in pats:
        pat = pat.strip("/")
        if path == pat or path.startswith(pat + "/") or fnmatch.fnmatchcase(path, pat):
            return True
    return False


def whole_subtrees(
    selected: Iterable[str], universe: Iterable[str], min_depth: int = 1
) -> list[tuple[str, int]]:
    """The largest subtrees all of whose paths are selected, with their sizes (2 or more).

    ``whole_subtrees(['d/b/2/w', 'd/b/2/v'], ['d/b/1/w', 'd/b/2/w', 'd/b/2/v'])`` is
    ``[('d/b/2', 2)]``: one line instead of a list when a whole block has no counterpart.
    ``min_depth`` keeps short prefixes out (a Linen collection name alone is no subtree).
    """
    chosen = set(selected)
    all_paths = list(universe)
    found: dict[str, int] = {}
    for path in sorted(chosen):
        segs = path.split("/")
        for n in range(min_depth, len(segs)):
            prefix = "/".join(segs[:n])
            under = [p for p in all_paths if p.startswith(prefix + "/")]
            if all(p in chosen for p in under):
                if len(under) > 1:
                    found.setdefault(prefix, len(under))
                break
    return sorted(found.items())
