"""Where each variable of an NNX module lives in Linen variables, and back.

An NNX ``GraphDef`` orders its variables (leaves) by path. A *layout* lists, in that order,
one :class:`Slot` per variable: its Linen collection (from the registry), its path inside the
collection, its type and, for rng state, the stream it belongs to. With a layout, ``apply``
can gather the Linen leaves into a flat list and unflatten the graphdef directly, with no
path matching per call. Layouts are cached per graphdef.

Two things keep ``apply`` cheap: a :class:`TreeView` rebuilds and re-reads the module as a
plain JAX pytree instead of walking its graph, and the graphdef stored in the variables is a
:class:`GraphDef` (a subclass of Flax's), which hashes once (``jax.jit`` hashes it on every call).

Linen paths equal NNX paths with two adjustments: keys are strings (``layers/0`` stays
``'0'``, so Linen checkpoints keep string keys), and a bare ``RngStream`` attribute (as
``nnx.Dropout`` keeps one) is nested under its stream name, so its state sits at the guide's
documented ``variables['RngCount']['rngs']['dropout']['count']``.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.core import meta

from .._errors import StructureMismatchError
from . import _fast
from ._fast import PLAIN_VALUES, read_value
from ._registry import variable_name_from_type

__all__ = [
    "RNG_STATE_TYPES",
    "KnownStructure",
    "known_structure",
    "remember_structure",
    "Slot",
    "GraphDef",
    "TreeView",
    "layout_of",
    "new_layout",
    "split_values",
    "tree_view_of",
    "to_collections",
    "gather",
    "MISSING",
    "collections_of",
    "streams_of",
]

RNG_STATE_TYPES = (nnx.RngKey, nnx.RngCount)


@dataclasses.dataclass(frozen=True)
class Slot:
    """One NNX variable's place in the Linen variables, and its (static) metadata."""

    collection: str
    path: tuple[str, ...]
    var_type: type[nnx.Variable]
    stream: str | None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)


def _slot(nnx_path: tuple, var: nnx.Variable) -> Slot:
    var_type = type(var)
    path = tuple(str(k) for k in nnx_path)
    stream = None
    if issubclass(var_type, RNG_STATE_TYPES):
        stream = var.get_metadata().get("tag")
        if stream is not None and (len(path) < 2 or path[-2] != stream):
            path = (*path[:-1], stream, path[-1])
    return Slot(variable_name_from_type(var_type), path, var_type, stream, dict(var.get_metadata()))


@jax.tree_util.register_static
class GraphDef(nnx.GraphDef):
    """The graphdef kept in ``variables['nnx']['graphdef']``: an ``nnx.GraphDef`` whose hash
    is computed once.

    It carries Flax's class name (``type(variables['nnx']['graphdef']).__name__ ==
    'GraphDef'``, as users of Flax's bridge see it) and is an ``nnx.GraphDef`` for every
    ``isinstance`` check and NNX function.

    A graphdef is a static leaf of the Linen variables, so ``jax.jit`` hashes it on every call
    of a jitted ``apply`` or training step; ``GraphDef.__hash__`` walks every node each time
    (~2 ms for a 4-block transformer, a few percent of its training step). Equal to, and
    hashing like, the plain graphdef it wraps.
    """

    __slots__ = ("_hash",)
    _hash: int

    @classmethod
    def of(cls, graphdef: nnx.GraphDef) -> GraphDef:
        if isinstance(graphdef, cls):
            return graphdef
        return cls(graphdef.nodes, graphdef.attributes, graphdef.num_leaves)

    def __hash__(self) -> int:
        if not _fast.enabled():
            return nnx.GraphDef.__hash__(self)
        try:
            return self._hash
        except AttributeError:
            value = nnx.GraphDef.__hash__(self)
            object.__setattr__(self, "_hash", value)
            return value

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, nnx.GraphDef):
            return NotImplemented
        return (self.num_leaves, self.nodes, self.attributes) == (
            other.num_leaves,
            other.nodes,
            other.attributes,
        )


@dataclasses.dataclass(frozen=True)
class TreeView:
    """A graphdef's module seen as a plain JAX pytree: its treedef and its leaf order.

    ``nnx.split``/``nnx.merge`` walk the module graph in Python (~2 ms for a 4-block
    transformer, a tenth of an eager call); flattening the same module as a pytree is done by
    JAX in C++ and costs a tenth of that. The two agree when every variable appears once in
    the graph (no shared variables), which :func:`tree_view_of` checks once per graphdef.
    The treedef holds the static structure (node types, static attributes, variable types and
    metadata), so an unchanged treedef after a call means an unchanged graphdef.
    """

    treedef: Any
    #: ``order[i]`` is the graph leaf index of the ``i``-th pytree leaf.
    order: tuple[int, ...]

    def unflatten(self, leaves: Sequence[Any]) -> nnx.Module:
        """The module with the given leaves, in graph order."""
        return jax.tree_util.tree_unflatten(self.treedef, [leaves[i] for i in self.order])

    def tree_leaves(self, module: nnx.Module) -> list[Any] | None:
        """The module's leaves in pytree order, or None if its treedef is not this view's."""
        tree_leaves, treedef = jax.tree_util.tree_flatten(module)
        return tree_leaves if treedef == self.treedef else None

    def graph_leaves(self, module: nnx.Module) -> list[Any] | None:
        """The module's leaves in graph order, or None if its structure changed."""
        tree_leaves = self.tree_leaves(module)
        return None if tree_leaves is None else self.graph_order(tree_leaves)

    def graph_order(self, tree_leaves: Sequence[Any]) -> list[Any]:
        """Pytree leaves (of a module with this treedef) put in graph order."""
        leaves: list[Any] = [None] * len(self.order)
        for value, i in zip(tree_leaves, self.order, strict=True):
            leaves[i] = value
        return leaves


def _build_tree_view(graphdef: nnx.GraphDef) -> TreeView | None:
    n = graphdef.num_leaves
    tags = [np.int64(i) for i in range(n)]
    try:
        with nnx.use_eager_sharding(False):
            module = nnx.unflatten(graphdef, tags)
            tree_leaves, treedef = jax.tree_util.tree_flatten(module)
            order = tuple(int(leaf) for leaf in tree_leaves)
            if sorted(order) != list(range(n)):
                return None  # a shared variable (one graph leaf, two pytree leaves)
            rebuilt = jax.tree_util.tree_unflatten(treedef, [tags[i] for i in order])
            same = nnx.graphdef(rebuilt) == graphdef
    except Exception:  # noqa: BLE001 - a module JAX cannot treat as a pytree: use graph mode
        return None
    return TreeView(treedef, order) if same else None


class _Cache:
    """Per-graphdef values, looked up by identity first.

    Hashing a GraphDef walks all its nodes (~2 ms for a 4-block transformer), and apply
    passes the same graphdef object on every call. An entry keeps its graphdef alive, so its
    id cannot be reused while the entry exists.
    """

    def __init__(self, limit: int = 1024, by_id_limit: int = 64) -> None:
        self._by_value: dict[Any, Any] = {}
        self._by_id: dict[int, tuple[nnx.GraphDef, Any]] = {}
        self._limit, self._by_id_limit = limit, by_id_limit

    def remember(self, graphdef: nnx.GraphDef, value: Any) -> None:
        """Caches ``value`` for this graphdef object only, without hashing it."""
        if len(self._by_id) >= self._by_id_limit:
            self._by_id.pop(next(iter(self._by_id)))
        self._by_id[id(graphdef)] = (graphdef, value)

    def get(self, graphdef: nnx.GraphDef, build: Callable[[], Any]) -> Any:
        hit = self._by_id.get(id(graphdef))
        if hit is not None and hit[0] is graphdef:
            return hit[1]
        if graphdef in self._by_value:
            value = self._by_value[graphdef]
        else:
            value = build()
            if len(self._by_value) >= self._limit:
                self._by_value.pop(next(iter(self._by_value)))
            self._by_value[graphdef] = value
        self.remember(graphdef, value)
        return value


_layouts = _Cache()
_tree_views = _Cache()


def layout_of(graphdef: nnx.GraphDef, state: nnx.State | None = None) -> tuple[Slot, ...]:
    """The layout of ``graphdef``; ``state`` (from the same split) saves rebuilding it."""

    def build() -> tuple[Slot, ...]:
        flat = nnx.to_flat_state(state if state is not None else _placeholder_state(graphdef))
        return tuple(_slot(path, var) for path, var in flat)

    return _layouts.get(graphdef, build)


def new_layout(graphdef: nnx.GraphDef, state: nnx.State) -> tuple[Slot, ...]:
    """The layout of a graphdef just split from a module, with ``state`` from the same split.

    Building it from the state costs less than hashing a fresh graphdef for the cache; it is
    remembered for this graphdef object, which ``apply`` then receives from the variables.
    """
    layout = tuple(_slot(path, var) for path, var in nnx.to_flat_state(state))
    _layouts.remember(graphdef, layout)
    return layout


def tree_view_of(graphdef: nnx.GraphDef) -> TreeView | None:
    """The pytree view of ``graphdef``'s module, or None where only graph mode is exact (or
    the speed shortcuts are off: then callers walk the graph, ``nnx.split``/``unflatten``)."""
    if not _fast.enabled():
        return None
    return _tree_views.get(graphdef, lambda: _build_tree_view(graphdef))


@dataclasses.dataclass(frozen=True)
class KnownStructure:
    """The split of a module whose structure was split before, read without ``nnx.split``.

    A wrapper constructs its NNX module anew on every ``init``; ``nnx.split`` walks the
    new module's graph in Python (about a tenth of a small module's constructor), while
    flattening it as a pytree costs a sixth of that. The pytree treedef holds the static
    structure (node types, static attributes, variable types and metadata), so a module with
    the treedef of a module split before has that module's graphdef and layout, on three
    conditions checked here: no variable appears twice (two pytree leaves for one graph
    leaf; told by identity), no graph node without variables (a shared one is invisible to a
    pytree), and every value is a concrete array of the type seen at the first split (so
    that the raw leaf is what :func:`read_value` would return). Anything else takes
    ``nnx.split``.

    Keep one per wrapper, not globally: treedefs compare static attributes with ``==``
    (``1 == True``), and the constructor of one wrapper gets the very same arguments each
    time.
    """

    view: TreeView
    graphdef: GraphDef
    layout: tuple[Slot, ...]
    #: The type of each pytree leaf at the first split.
    leaf_types: tuple[type, ...]
    #: Types of the module's graph nodes (variables excluded).
    node_types: frozenset[type]

    def values(self, module: nnx.Module) -> list[Any] | None:
        """The module's variable values in graph order, or None if it does not fit."""
        try:
            tree_leaves = self.view.tree_leaves(module)
        except Exception:  # noqa: BLE001 - an unflattenable or incomparable structure
            return None
        if tree_leaves is None:
            return None
        if tuple(map(type, tree_leaves)) != self.leaf_types or len(
            set(map(id, tree_leaves))
        ) != len(tree_leaves):
            return None
        return self.view.graph_order(tree_leaves)


# id(wrapper) -> what `split_values` learned from the wrapper's last init. Keyed by identity,
# not by the (hashable) module: equal wrappers may hold arguments that are equal but not the
# same (`1 == True`), which can end up as static attributes of the module.
_structures: dict[int, KnownStructure] = {}


def known_structure(wrapper: object) -> KnownStructure | None:
    """What an earlier init of ``wrapper`` learned about its module's structure (a speed
    shortcut: None while the shortcuts are off)."""
    return _structures.get(id(wrapper)) if _fast.enabled() else None


def remember_structure(wrapper: object, known: KnownStructure) -> None:
    key = id(wrapper)
    if key not in _structures:
        weakref.finalize(wrapper, _structures.pop, key, None)
    _structures[key] = known


def split_values(
    module: nnx.Module, known: KnownStructure | None = None, learn: bool = False
) -> tuple[GraphDef, tuple[Slot, ...], list[Any], KnownStructure | None]:
    """``nnx.split`` for storing: graphdef, layout and values in graph order.

    With ``known`` from an earlier split of a module of the same structure, the values are
    read as a pytree. The last item is the structure to pass next time: ``known`` if it
    fitted, else, with ``learn``, what this split taught (None where the module can only be
    read by ``nnx.split``).
    """
    if known is not None:
        values = known.values(module)
        if values is not None:
            _fast.took("layout.known_structure")
            return known.graphdef, known.layout, values, known
    graphdef, state = nnx.split(module)
    flat = nnx.to_flat_state(state)
    values = [read_value(var) for var in flat.leaves]
    graphdef = GraphDef.of(graphdef)
    layout = new_layout(graphdef, state)
    learned = _known_structure(module, graphdef, layout, flat.leaves) if learn else None
    return graphdef, layout, values, learned


def _known_structure(
    module: nnx.Module,
    graphdef: GraphDef,
    layout: tuple[Slot, ...],
    variables: Sequence[Any],
) -> KnownStructure | None:
    if not all(
        isinstance(var, nnx.Variable)
        and type(var.get_raw_value()) in PLAIN_VALUES
        and read_value(var) is var.get_raw_value()
        for var in variables
    ):
        return None
    view = tree_view_of(graphdef)
    if view is None:
        return None
    try:
        tree_leaves = view.tree_leaves(module)
    except Exception:  # noqa: BLE001 - an unflattenable or incomparable structure
        return None
    if tree_leaves is None:
        return None
    node_paths, node_types = [], set()
    covered: set[Any] = set()
    for path, node in nnx.iter_graph(module):
        if isinstance(node, nnx.Variable):
            covered.update(path[:i] for i in range(len(path)))
        elif nnx.graphlib.is_graph_node(node):
            node_paths.append(path)
            node_types.add(type(node))
    if any(path not in covered for path in node_paths):
        return None
    return KnownStructure(
        view, graphdef, layout, tuple(map(type, tree_leaves)), frozenset(node_types)
    )


def _placeholder_state(graphdef: nnx.GraphDef) -> nnx.State:
    # Paths and types are all a layout needs; scalar placeholders stand in for the arrays.
    leaves = [np.zeros((), np.uint32) for _ in range(graphdef.num_leaves)]
    with nnx.use_eager_sharding(False):
        module = nnx.unflatten(graphdef, leaves)
    return nnx.state(module)


def collections_of(layout: Sequence[Slot]) -> list[str]:
    return list(dict.fromkeys(slot.collection for slot in layout))


def streams_of(layout: Sequence[Slot]) -> list[str]:
    return list(dict.fromkeys(slot.stream for slot in layout if slot.stream is not None))


def to_collections(
    layout: Sequence[Slot],
    values: Sequence[Any],
    box: Callable[..., meta.AxisMetadata],
    skip_streams: set[str] | frozenset[str] = frozenset(),
    only: Callable[[str], bool] = lambda collection: True,
) -> Iterator[tuple[str, str, Any]]:
    """Yields ``(collection, variable name, value)`` for Linen's ``put_variable``.

    Values are nested dicts below the first path component, with every leaf boxed (with the
    slot's metadata); ``only`` selects collections.
    """
    trees: dict[tuple[str, str], Any] = {}
    for slot, value in zip(layout, values, strict=True):
        if slot.stream is not None and slot.stream in skip_streams:
            continue
        if not only(slot.collection):
            continue
        boxed = box(slot.var_type, value, dict(slot.metadata))
        name, rest = slot.path[0], slot.path[1:]
        if not rest:
            trees[(slot.collection, name)] = boxed
            continue
        node = trees.setdefault((slot.collection, name), {})
        for key in rest[:-1]:
            node = node.setdefault(key, {})
        node[rest[-1]] = boxed
    for (collection, name), tree in trees.items():
        yield collection, name, tree


def _lookup(variables: Mapping[str, Any], slot: Slot) -> Any:
    node = variables.get(slot.collection)
    for key in slot.path:
        if (
            isinstance(node, meta.AxisMetadata)
            or not isinstance(node, Mapping)
            or (key not in node)
        ):
            return MISSING
        node = node[key]
    return node


#: A slot with no value in the variables.
MISSING: Any = object()


def gather(
    layout: Sequence[Slot],
    variables: Mapping[str, Any],
    linen_key: Callable[[str], Any],
) -> list[Any]:
    """The raw leaves of ``variables`` in graphdef order.

    Streams for which ``linen_key(stream)`` returns a key are re-keyed for this call (count
    reset to zero), so the same Linen key gives the same randomness.
    """
    leaves, missing, keys = [], [], {}
    for slot in layout:
        if slot.stream is not None:
            if slot.stream not in keys:
                keys[slot.stream] = linen_key(slot.stream)
            key = keys[slot.stream]
            if key is not None:
                leaves.append(key if slot.var_type is nnx.RngKey else jnp.zeros((), jnp.uint32))
                continue
        leaf = _lookup(variables, slot)
        if leaf is MISSING:
            missing.append("/".join((slot.collection, *slot.path)))
            continue
        if isinstance(leaf, meta.AxisMetadata):
            # What `meta.unbox` returns for a box around an array, without its tree_map.
            value = leaf.unbox()
            plain = _fast.enabled() and isinstance(value, (jax.Array, np.ndarray))
            leaf = value if plain else meta.unbox(leaf)
        leaves.append(leaf)
    if missing:
        expected = {"/".join((s.collection, *s.path)) for s in layout}
        present = set(_leaf_paths(variables))
        raise StructureMismatchError.from_paths(
            "The variables passed to apply",
            missing=missing,
            unexpected=sorted(present - expected),
            fix="pass the variables returned by `init` of this same module (or a checkpoint "
            "of them); if the NNX module's structure changed, run init again.",
        )
    return leaves


def _leaf_paths(variables: Mapping[str, Any], prefix: tuple = ()) -> Iterator[str]:
    for key, value in variables.items():
        if not prefix and key == "nnx":
            continue
        if isinstance(value, Mapping):
            yield from _leaf_paths(value, (*prefix, str(key)))
        else:
            yield "/".join((*prefix, str(key)))
