"""Between a tree of Linen-style modules and a Linen variables dict, in both directions.

The NNX tree keeps one attribute per submodule and per variable (``model.Block_0.Dense_0.
kernel``, an ``nnx.Param``); Linen keeps one nested dict per collection
(``variables['params']['Block_0']['Dense_0']['kernel']``). Both share the module path; the
collection comes from the variable's type through the registry. One walk, :func:`entries`,
says where each child of a module sits in Linen's naming, and both directions use it:

* :func:`export` builds the variables dict (``Module.init``, the result of ``Module.apply``).
* :func:`bind` fills the variables of modules that already exist from a variables dict
  (``Module.apply``); modules created later during the call are filled when they are attached.

Naming rules, as in Linen: a submodule is named by its ``name`` (auto-named ``Dense_0`` in a
compact method, or the attribute it was assigned to in ``setup``), items of a list or dict
attribute ``layers`` are ``layers_0``, ``layers_1``... A ``ToNNX`` child contributes its Linen
collections under its name. Inside a native NNX module the NNX attribute path is used as is
(``Sequential_0/layers/0/kernel``). Rng state (``nnx.Rngs`` and its variables) is not part of
a Linen variables dict and is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flax import nnx
from flax.core import meta

from .._errors import StructureMismatchError
from .._flax_internals import PYTREE_BOOKKEEPING_PREFIX
from ..bridge._registry import variable_name_from_type
from ..bridge._to_nnx import ToNNX
from ..bridge._variables import to_linen_values
from ._context import Binding

__all__ = ["entries", "attribute_entries", "export", "bind", "bind_attribute", "lookup"]

_SKIPPED_PREFIXES = (PYTREE_BOOKKEEPING_PREFIX, "_linnx_")


def is_linnx_module(x: Any) -> bool:
    return getattr(type(x), "_linnx_is_module", False)


def collection_of(var: nnx.Variable) -> str:
    return variable_name_from_type(type(var))


def _kind(value: Any) -> str | None:
    if isinstance(value, nnx.Variable):
        return None if isinstance(value, nnx.RngState) else "var"
    if isinstance(value, (nnx.Rngs, nnx.RngStream)):
        return None
    if is_linnx_module(value):
        return "linnx"
    if isinstance(value, ToNNX):
        return "tonnx"
    if isinstance(value, nnx.Pytree):
        return "native"
    return None


def _owned(child: Any, key: str) -> bool:
    # A Linen-style submodule belongs where its name says; elsewhere it is a reference.
    name = vars(child).get("name")
    return name is None or name == key


def attribute_entries(
    attr: str, value: Any, linen_naming: bool
) -> Iterator[tuple[tuple[str, ...], str, Any]]:
    """``(relative path, kind, child)`` for one attribute; kind is var/linnx/tonnx/native."""
    kind = _kind(value)
    if kind is not None:
        if not (kind == "linnx" and linen_naming and not _owned(value, attr)):
            yield (attr,), kind, value
        return
    if isinstance(value, (list, tuple)):
        items: Any = enumerate(value)
    elif isinstance(value, Mapping):
        items = value.items()
    else:
        return
    for k, item in items:
        kind = _kind(item)
        if kind is None:
            continue
        if not linen_naming:
            yield (attr, str(k)), kind, item
            continue
        key = f"{attr}_{k}"
        if kind == "linnx" and not _owned(item, key):
            continue
        yield (key,), kind, item


def entries(node: Any, linen_naming: bool) -> Iterator[tuple[tuple[str, ...], str, Any]]:
    """The children of a module, each with its path relative to the module."""
    items = list(vars(node).items())
    if linen_naming:
        # A variable declared with `param`/`variable` and also assigned under another
        # attribute (`self.w = self.param('kernel', ...)`) keeps its declared name.
        declared = set(vars(node).get("_linnx_declared", ()))
        items.sort(key=lambda kv: kv[0] not in declared)
    for attr, value in items:
        if attr.startswith(_SKIPPED_PREFIXES) or attr == "__captures__":
            continue
        yield from attribute_entries(attr, value, linen_naming)


def _put(out: dict, collection: str, path: tuple[str, ...], value: Any) -> None:
    node = out.setdefault(collection, {})
    for key in path[:-1]:
        node = node.setdefault(key, {})
    last = path[-1]
    if isinstance(value, Mapping) and isinstance(node.get(last), dict):
        node[last].update(value)
    else:
        node[last] = value


def export(root: Any) -> dict[str, Any]:
    """The Linen variables dict of a module tree: ``{collection: nested dict of arrays}``."""
    out: dict[str, Any] = {}
    seen: set[int] = set()

    def visit(node: Any, path: tuple[str, ...], linen_naming: bool) -> None:
        for rel, kind, value in entries(node, linen_naming):
            if id(value) in seen:
                continue
            seen.add(id(value))
            here = path + rel
            if kind == "var":
                _put(out, collection_of(value), here, value.get_value())
            elif kind == "tonnx":
                for collection in value.linen_collections:
                    tree = vars(value).get(collection)
                    if tree is not None:
                        _put(out, collection, here, to_linen_values(tree))
            else:
                visit(value, here, kind == "linnx")

    visit(root, (), True)
    return out


def lookup(scope: Mapping[str, Any], collection: str, rel: tuple[str, ...]) -> tuple[bool, Any]:
    node = scope.get(collection)
    for key in rel:
        if not isinstance(node, Mapping) or key not in node:
            return False, None
        node = node[key]
    return node is not None, node


def sub_scope(scope: Mapping[str, Any], rel: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for collection in scope:
        found, node = lookup(scope, collection, rel)
        if found and isinstance(node, Mapping):
            out[collection] = node
    return out


def path_text(collection: str, path: tuple[str, ...]) -> str:
    return "/".join((collection, *path))


def load_variable(
    binding: Binding,
    var: nnx.Variable,
    scope: Mapping[str, Any],
    path: tuple[str, ...],
    rel: tuple[str, ...],
) -> None:
    """Fills one existing variable from the bound dict (or checks it may stay as it is)."""
    collection = collection_of(var)
    found, value = lookup(scope, collection, rel)
    where = path_text(collection, path + rel)
    binding.seen.add(id(var))
    if found and not isinstance(value, Mapping):
        var.set_value(meta.unbox(value))
        binding.record(var, collection, where)
        return
    if found:
        raise StructureMismatchError.from_paths(
            "variables",
            mismatched=[(where, "an array", "a nested dict")],
            fix=f"{where} must hold the variable's value, not a dict of values.",
        )
    if not binding.is_mutable(collection):
        raise missing_error(where, collection, binding)


def missing_error(where: str, collection: str, binding: Binding) -> StructureMismatchError:
    if collection not in binding.variables:
        fix = (
            f"the variables have no {collection!r} collection at all (their keys: "
            f"{sorted(binding.variables)}). Did you pass variables[{collection!r}] instead of "
            f"the whole dict? Then: model.apply({{{collection!r}: {collection}}}, x)."
        )
    else:
        fix = (
            f"pass the variables returned by `model.init(...)` for this model, or let the "
            f"call create the missing ones with mutable=[{collection!r}]."
        )
    return StructureMismatchError.from_paths("variables", missing=[where], fix=fix)


def bind_entry(
    binding: Binding,
    scope: Mapping[str, Any],
    path: tuple[str, ...],
    rel: tuple[str, ...],
    kind: str,
    value: Any,
) -> None:
    if kind == "var":
        if id(value) not in binding.seen:
            load_variable(binding, value, scope, path, rel)
    elif kind == "linnx" and id(value) in binding.scopes:
        return
    elif kind == "tonnx":
        collections = sub_scope(scope, rel)
        if collections:
            value._store(collections)
    else:
        bind(binding, value, sub_scope(scope, rel), path + rel, kind == "linnx")


def bind(
    binding: Binding,
    node: Any,
    scope: dict[str, Any],
    path: tuple[str, ...],
    linen_naming: bool = True,
) -> None:
    """Gives ``node`` and everything already inside it their values from ``scope``."""
    if linen_naming:
        binding.register(node, scope, path)
    for rel, kind, value in entries(node, linen_naming):
        bind_entry(binding, scope, path, rel, kind, value)


def bind_attribute(binding: Binding, owner: Any, attr: str, value: Any) -> None:
    """Fills what was just assigned to ``owner.attr`` during ``apply`` (e.g. in ``setup``)."""
    found = binding.scope_of(owner)
    if found is None:
        return
    scope, path = found
    for rel, kind, child in attribute_entries(attr, value, True):
        bind_entry(binding, scope, path, rel, kind, child)
