"""The migration plan as data: which Linen leaves fill which NNX variables, and how.

:class:`Plan` is what :func:`linnx.migrate.match` finds (the algorithm is in ``_match.py``):
:class:`Pair` entries, each with a :class:`Layout` that knows how to turn Linen leaves into the
NNX value and back, :class:`Mismatch` entries, and the leftovers on both sides. A plan holds
only paths, shapes and layouts, never values, so one plan serves the weights, the optimizer
state and both directions. This module imports nothing of the matching algorithm.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp

from .._public import public
from ._errors import MigrationError, MigrationTypeError
from ._paths import whole_subtrees
from ._record import dtype_name

__all__ = [
    "LayoutKind",
    "MismatchReason",
    "Layout",
    "Pair",
    "Mismatch",
    "Plan",
    "width_summary",
]

_MODULE = "linnx.migrate"

#: How Linen leaves become one NNX value (see :class:`Layout`).
LayoutKind = Literal["copy", "stack", "unstack", "moveaxis"]
#: Why a paired Linen leaf and NNX variable do not fit.
MismatchReason = Literal["shape", "dtype"]
_LAYOUT_KINDS: tuple[str, ...] = get_args(LayoutKind)


def _desc(shape: Sequence[int], dtype: Any) -> str:
    return f"{tuple(shape)} {dtype_name(dtype)}"


def _shape_of(desc: str) -> tuple[int, ...] | None:
    """``'(3, 6) float32'`` -> ``(3, 6)``; None for another description."""
    head = desc.rsplit(" ", 1)[0]
    if not (head.startswith("(") and head.endswith(")")):
        return None
    try:
        return tuple(int(d) for d in head.strip("(),").split(",") if d.strip())
    except ValueError:
        return None


def width_summary(mismatched: Sequence[tuple[str, str, str]]) -> str | None:
    """One line when every shape mismatch scales the same way (each differing dimension is
    ``k`` times the Linen one, for one ``k``): the usual sign of a model built with another
    width. ``mismatched`` holds ``(path, NNX description, Linen description)`` triples.
    """
    changes: dict[tuple[int, int], int] = {}
    for _, expected, actual in mismatched:
        have, want = _shape_of(actual), _shape_of(expected)
        if have is None or want is None or len(have) != len(want) or have == want:
            return None
        for x, y in zip(have, want, strict=True):
            if x != y:
                changes[(x, y)] = changes.get((x, y), 0) + 1
    if len(mismatched) < 2 or len({y / x if x else None for x, y in changes}) != 1:
        return None
    ordered = sorted(changes, key=lambda c: -changes[c])
    (have_dim, want_dim), others = ordered[0], ordered[1:]
    also = f" (and {', '.join(f'{x} vs {y}' for x, y in others)})" if others else ""
    return (
        f"every width differs: {have_dim} vs {want_dim}{also}: Linen has {have_dim} where the NNX "
        f"model has {want_dim}, across all {len(mismatched)} mismatched leaves; was the NNX "
        "model built with another size?"
    )


@public(_MODULE)
@dataclass(frozen=True)
class Layout:
    """How Linen leaves turn into one NNX value.

    ``copy``: one leaf, as is. ``stack``: several leaves (``layers_0..N``) stacked along
    ``nnx_axis``. ``unstack``: slice ``index`` of one leaf along ``linen_axis``.
    ``moveaxis``: one stacked leaf whose stacking axis moves from ``linen_axis`` to ``nnx_axis``.
    :meth:`to_nnx` and :meth:`to_linen` do the conversion in each direction.

    Example:
        >>> import jax.numpy as jnp
        >>> from linnx import migrate
        >>> layout = migrate.Layout('stack', nnx_axis=0)
        >>> str(layout), layout.to_nnx([jnp.zeros(2), jnp.ones(2)]).shape
        ('stack on axis 0', (2, 2))
    """

    kind: LayoutKind = "copy"
    linen_axis: int | None = None
    nnx_axis: int | None = None
    index: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in _LAYOUT_KINDS:
            raise MigrationError(
                f"Layout(kind={self.kind!r}): expected one of {', '.join(_LAYOUT_KINDS)}.\n"
                "Fix: e.g. Layout('stack', nnx_axis=0)."
            )

    def _given(self, field: str) -> int:
        """An axis or index this kind of layout needs; refused by name when it is missing."""
        value = getattr(self, field)
        if value is None:
            raise MigrationError(
                f"Layout({self.kind!r}) has no {field}.\nFix: pass it, e.g. "
                f"Layout({self.kind!r}, {field}=0)."
            )
        return int(value)

    def to_nnx(self, sources: Sequence[Any]) -> jax.Array:
        """The NNX value from its Linen leaves (in ``Pair.linen`` order)."""
        values = [jnp.asarray(s) for s in sources]
        if self.kind == "stack":
            return jnp.stack(values, axis=self._given("nnx_axis"))
        if self.kind == "unstack":
            return jnp.take(values[0], self._given("index"), axis=self._given("linen_axis"))
        if self.kind == "moveaxis":
            return jnp.moveaxis(values[0], self._given("linen_axis"), self._given("nnx_axis"))
        return values[0]

    def to_linen(self, values: Sequence[Any], position: int = 0) -> jax.Array:
        """One Linen leaf from the NNX values that hold it.

        ``values``: the one NNX value, or for ``unstack`` every slice in ``index`` order.
        ``position``: for ``stack``, the leaf's place in ``Pair.linen``.
        """
        arrays = [jnp.asarray(v) for v in values]
        if self.kind == "stack":
            return jnp.take(arrays[0], position, axis=self._given("nnx_axis"))
        if self.kind == "unstack":
            return jnp.stack(arrays, axis=self._given("linen_axis"))
        if self.kind == "moveaxis":
            return jnp.moveaxis(arrays[0], self._given("nnx_axis"), self._given("linen_axis"))
        return arrays[0]

    def __str__(self) -> str:
        if self.kind == "stack":
            return f"stack on axis {self.nnx_axis}"
        if self.kind == "unstack":
            return f"unstack [{self.index}] of axis {self.linen_axis}"
        if self.kind == "moveaxis":
            return f"move axis {self.linen_axis} -> {self.nnx_axis}"
        return "copy"


@public(_MODULE)
@dataclass(frozen=True)
class Pair:
    """One NNX variable and the Linen leaves that fill it.

    Attributes:
        linen: Linen leaf paths, collection first (several when stacking).
        nnx: the NNX variable path.
        nnx_type: the NNX variable class name.
        linen_shape / linen_dtype: of each Linen leaf.
        nnx_shape / nnx_dtype: of the NNX variable.
        layout: how the leaves become the value.

    Example:
        >>> from linnx import migrate
        >>> p = migrate.Pair(linen=('params/Dense_0/bias',), nnx='linear/bias',
        ...                  nnx_type='Param', linen_shape=(3,), linen_dtype='float32',
        ...                  nnx_shape=(3,), nnx_dtype='float32', layout=migrate.Layout())
        >>> p.nnx, str(p.layout)
        ('linear/bias', 'copy')
    """

    linen: tuple[str, ...]
    nnx: str
    nnx_type: str
    linen_shape: tuple[int, ...]
    linen_dtype: str
    nnx_shape: tuple[int, ...]
    nnx_dtype: str
    layout: Layout = Layout()


@public(_MODULE)
@dataclass(frozen=True)
class Mismatch:
    """A Linen leaf and an NNX variable that should pair but differ in shape or dtype.

    Example:
        >>> from linnx import migrate
        >>> m = migrate.Mismatch(linen=('params/Dense_0/kernel',), nnx='linear/kernel',
        ...                      linen_desc='(4, 5) float32', nnx_desc='(4, 6) float32',
        ...                      reason='shape')
        >>> m.reason
        'shape'
    """

    linen: tuple[str, ...]
    nnx: str
    linen_desc: str
    nnx_desc: str
    reason: MismatchReason


@public(_MODULE)
class Plan:
    """What :func:`match` found: pairs, leftovers on both sides, mismatches, layout changes.

    ``str(plan)`` is a readable table. A plan holds paths and shapes only, so it can be
    reused for any checkpoint of the same two models, in both directions.

    Attributes:
        pairs: the :class:`Pair` list, in NNX path order.
        unused: Linen leaf paths that no NNX variable takes.
        unfilled: NNX variable paths that no Linen leaf fills.
        mismatched: :class:`Mismatch` entries (shape mismatches are not in ``pairs``).
        excluded: NNX-only state left out on purpose (RNG keys and counts, caches...).
        linen_leaves: every Linen leaf path -> ``jax.ShapeDtypeStruct``.
        nnx_leaves: every NNX variable path -> ``(type name, jax.ShapeDtypeStruct)``.
        linen_axes: Linen parameter path -> its logical axis names, read from a
            ``params_axes`` collection (``flax.linen.partitioning.param_with_axes``): the
            parameters' sharding, not weights, so never paired.
        linen_structure: Linen leaves that describe the model rather than hold weights (the
            ``nnx/graphdef`` of a ``to_linen`` module), by path; :func:`nnx_to_linen` puts
            them back so that the Linen module can ``apply`` the result.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import linen as nn, nnx
        >>> from linnx import migrate
        >>> plan = migrate.match(nn.Dense(3), nnx.Linear(2, 3, rngs=nnx.Rngs(0)),
        ...                      jnp.ones((1, 2)))
        >>> plan.ok, [p.nnx for p in plan.pairs]
        (True, ['bias', 'kernel'])
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        unused: Sequence[str],
        unfilled: Sequence[str],
        mismatched: Sequence[Mismatch],
        excluded: Sequence[str],
        linen_leaves: Mapping[str, jax.ShapeDtypeStruct],
        nnx_leaves: Mapping[str, tuple[str, jax.ShapeDtypeStruct]],
        *,
        linen_axes: Mapping[str, tuple[str, ...]] | None = None,
        linen_structure: Mapping[str, Any] | None = None,
    ):
        if not isinstance(pairs, Sequence) or not all(isinstance(p, Pair) for p in pairs):
            raise MigrationTypeError(
                f"Plan(pairs={pairs!r:.60}): expected a list of Pair.\n"
                "Fix: build plans with match(linen_module, nnx_model, sample_input)."
            )
        self.pairs = tuple(sorted(pairs, key=lambda p: (p.nnx, p.layout.index or 0)))
        self.unused = tuple(unused)
        self.unfilled = tuple(unfilled)
        self.mismatched = tuple(mismatched)
        self.excluded = tuple(excluded)
        self.linen_leaves = dict(linen_leaves)
        self.nnx_leaves = dict(nnx_leaves)
        self.linen_axes = dict(linen_axes or {})
        self.linen_structure = dict(linen_structure or {})

    @property
    def ok(self) -> bool:
        """True when every leaf on both sides is paired and every pair agrees."""
        return not (self.unused or self.unfilled or self.mismatched)

    @property
    def layout_changes(self) -> tuple[Pair, ...]:
        """The pairs that are not plain copies (stacking, unstacking, axis moves)."""
        return tuple(p for p in self.pairs if p.layout.kind != "copy")

    def pairs_by_linen(self) -> dict[str, list[Pair]]:
        """Linen leaf path -> the pairs that read it."""
        out: dict[str, list[Pair]] = {}
        for p in self.pairs:
            for leaf in p.linen:
                out.setdefault(leaf, []).append(p)
        return out

    def summary(self) -> str:
        """One line: counts of pairs, layout changes, leftovers and mismatches."""
        return (
            f"{len(self.pairs)} pairs ({len(self.layout_changes)} layout changes), "
            f"{len(self.unused)} unused Linen leaves, {len(self.unfilled)} unfilled NNX "
            f"variables, {len(self.mismatched)} mismatches"
        )

    def __str__(self) -> str:
        rows = []
        for p in self.pairs:
            src = p.linen[0] if len(p.linen) == 1 else f"{p.linen[0]} (+{len(p.linen) - 1})"
            rows.append((src, p.nnx, p.nnx_type, _desc(p.nnx_shape, p.nnx_dtype), str(p.layout)))
        head = ("Linen", "NNX", "type", "shape", "layout")
        widths = [max([len(head[c])] + [len(r[c]) for r in rows]) for c in range(5)]

        def fmt(r: Sequence[str]) -> str:
            return "  " + "  ".join(r[c].ljust(widths[c]) for c in range(5)).rstrip()

        lines = [f"Migration plan: {self.summary()}", fmt(head)]
        lines += [fmt(r) for r in rows]
        if self.unused:
            lines.append(f"Unused Linen leaves ({len(self.unused)}):")
            for prefix, n in whole_subtrees(self.unused, self.linen_leaves, min_depth=2):
                lines.append(f"  the Linen model has {prefix} ({n} leaves) with no NNX counterpart")
            for path in self.unused:
                sds = self.linen_leaves.get(path)
                lines.append(f"  {path}  {_desc(sds.shape, sds.dtype) if sds else ''}")
        if self.unfilled:
            lines.append(f"Unfilled NNX variables ({len(self.unfilled)}):")
            for prefix, n in whole_subtrees(self.unfilled, self.nnx_leaves):
                lines.append(
                    f"  the NNX model has {prefix} ({n} variables) that the Linen model does "
                    "not have"
                )
            for path in self.unfilled:
                typ, sds = self.nnx_leaves[path]
                lines.append(f"  {path}  {typ}  {_desc(sds.shape, sds.dtype)}")
        if self.mismatched:
            lines.append(f"Mismatches ({len(self.mismatched)}):")
            lead = width_summary([("", m.nnx_desc, m.linen_desc) for m in self.mismatched])
            if lead:
                lines.append(f"  {lead}")
            for m in self.mismatched:
                lines.append(
                    f"  {', '.join(m.linen)} -> {m.nnx}: {m.reason} differs, Linen "
                    f"{m.linen_desc} vs NNX {m.nnx_desc}"
                )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Plan({self.summary()})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (written next to migrated checkpoints)."""
        return {
            "pairs": [
                {"linen": list(p.linen), "nnx": p.nnx, "layout": str(p.layout)} for p in self.pairs
            ],
            "unused": list(self.unused),
            "unfilled": list(self.unfilled),
            "mismatched": [dataclasses.asdict(m) for m in self.mismatched],
        }


def __getattr__(name: str) -> Any:
    # match() lived here before the split into data (this module) and algorithm
    # (_match.py); code written against the old place keeps working without a cycle.
    if name in ("match", "plan_from_records"):
        from . import _match

        return getattr(_match, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
