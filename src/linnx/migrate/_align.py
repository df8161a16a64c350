"""Pairing units of two recorded models: compatibility, order alignment, leftovers.

Why an alignment and not a name map: a hand port renames almost everything (``Dense_0`` ->
``linear``) but keeps the computation, so the *sequence* of layer calls is the stable part.
Both sequences (units in first-call order) are aligned like two strings, where two units may be
paired when their kinds agree (``Dense`` ~ ``Linear``) and their variables pair up by name and
shape. A stacked unit (run sliced under ``nn.scan`` or ``nnx.vmap``/``nnx.scan``) may also
stand for ``K`` consecutive repetitions of a pattern on the other side: that pairing stacks or
unstacks the variables.

The alignment maximizes an integer score (structure first, then a coarse name similarity as a
tie-breaker). When two different alignments reach the best score and place some unit
differently, the pairing is ambiguous and :class:`AmbiguousPairingError` is raised instead of
picking one. Units never called during the trace (so with no order) are paired afterwards when
exactly one candidate fits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flax import nnx

from ..bridge import registered_pairs
from ._paths import canonical, similarity
from ._plan import Layout
from ._record import Unit, VarInfo

__all__ = [
    "Compat",
    "VarMatch",
    "UnitMatch",
    "Item",
    "make_items",
    "align",
    "match_leftovers",
    "ExtraRepeat",
    "extra_repeat",
]

_BUILTIN_COLLECTIONS = frozenset(
    {"params", "batch_stats", "intermediates", "cache", "LoRAParam", "RngKey", "RngCount",
     "RngState", "OptState", "perturbations"}
)  # fmt: skip

# Plus a 0..10 name-similarity bonus; a mismatched pair also gets up to 440 for closeness.
_FULL, _PARTIAL, _MISMATCHED = 3000, 2000, 50

Shape = tuple[int, ...]
ShapeFn = Callable[[VarInfo], Shape]


def _norm(name: str) -> str:
    return name.replace("_", "").lower().rstrip("s")


class Compat:
    """Whether a Linen collection may hold the values of an NNX variable type (0 = never)."""

    def __init__(self) -> None:
        self.pairs = registered_pairs()
        self.builtin_types = tuple(
            t for c, t in self.pairs.items() if c in _BUILTIN_COLLECTIONS and t is not None
        )
        self._cache: dict[tuple[str, type], int] = {}

    def __call__(self, collection: str, typ: type | None) -> int:
        if typ is None:
            return 0
        key = (collection, typ)
        if key not in self._cache:
            self._cache[key] = self._score(collection, typ)
        return self._cache[key]

    def _score(self, collection: str, typ: type) -> int:
        registered = self.pairs.get(collection)
        if registered is typ:
            return 3
        if registered is not None and issubclass(typ, registered):
            return 2
        if _norm(collection) == _norm(typ.__name__):
            return 2
        if collection in _BUILTIN_COLLECTIONS or issubclass(typ, self.builtin_types):
            return 0
        if issubclass(typ, nnx.Variable) and any(
            t is typ and c != typ.__name__ for c, t in self.pairs.items()
        ):
            return 0  # explicitly registered under another collection
        return 1


@dataclass(kw_only=True)
class VarMatch:
    """A Linen leaf (or several, for stacking) paired with one NNX variable."""

    linen: tuple[VarInfo, ...]
    nnx: VarInfo
    layout: Layout = Layout()
    mismatch: bool = False  # same name, different (per-slice) shape


@dataclass
class UnitMatch:
    """Two units (or runs of units) paired: the score of the pairing and its variables."""

    score: int
    vars: list[VarMatch] = field(default_factory=list)
    linen_units: tuple[Unit, ...] = ()
    nnx_units: tuple[Unit, ...] = ()

    def absorb(self, other: UnitMatch) -> None:
        """Adds another match's score and units (not its variables) to this one."""
        self.score += other.score
        self.linen_units += other.linen_units
        self.nnx_units += other.nnx_units


def pair_vars(
    linen_vars: Sequence[VarInfo],
    nnx_vars: Sequence[VarInfo],
    linen_shape: ShapeFn,
    nnx_shape: ShapeFn,
    compat: Compat,
) -> tuple[list[tuple[VarInfo, VarInfo]], list[tuple[VarInfo, VarInfo]], int, int]:
    """Pairs variables of two units: same name first, then unique (collection, shape).

    Returns the clean pairs, the same-named pairs whose shapes differ, and how many Linen and
    NNX variables stay unpaired.
    """
    pairs, mismatched = [], []
    free = list(nnx_vars)
    deferred = []
    for linen_var in linen_vars:
        same = [
            v for v in free if v.rel == linen_var.rel and compat(linen_var.collection, v.var_type)
        ]
        if len(same) == 1:
            nnx_var = same[0]
            free.remove(nnx_var)
            fits = linen_shape(linen_var) == nnx_shape(nnx_var)
            (pairs if fits else mismatched).append((linen_var, nnx_var))
        else:
            deferred.append(linen_var)

    def fits(linen_var: VarInfo, nnx_var: VarInfo) -> bool:
        return bool(compat(linen_var.collection, nnx_var.var_type)) and linen_shape(
            linen_var
        ) == nnx_shape(nnx_var)

    left = 0
    for linen_var in deferred:
        found = [v for v in free if fits(linen_var, v)]
        if len(found) == 1 and not any(
            other is not linen_var and fits(other, found[0]) for other in deferred
        ):
            free.remove(found[0])
            pairs.append((linen_var, found[0]))
        else:
            left += 1
    return pairs, mismatched, left, len(free)


def _stored(v: VarInfo) -> Shape:
    return v.shape


def _sliced(v: VarInfo) -> Shape:
    return v.per_call_shape()


def match_units(
    linen_unit: Unit, nnx_unit: Unit, linen_shape: ShapeFn, nnx_shape: ShapeFn, compat: Compat
) -> UnitMatch | None:
    """Scores a Linen unit against an NNX unit; ``None`` when they cannot be the same layer."""
    if linen_unit.kind and nnx_unit.kind and linen_unit.kind != nnx_unit.kind:
        return None
    pairs, mism, linen_left, nnx_left = pair_vars(
        linen_unit.vars, nnx_unit.vars, linen_shape, nnx_shape, compat
    )
    if not pairs and not mism:
        return None
    # A pairing with a shape mismatch scores far below a clean one: it exists so that a wrong
    # layer size is reported as a mismatch, but it must never outweigh a clean pairing (or
    # many mismatched pairings could tie with fewer clean ones in the alignment).
    structure = _MISMATCHED if mism else (_PARTIAL if linen_left or nnx_left else _FULL)
    if mism:  # among wrong sizes, prefer the closest: same rank, most dimensions in common
        close = sum(
            (len(a) == len(b)) + sum(x == y for x, y in zip(a, b, strict=False))
            for a, b in ((linen_shape(lv), nnx_shape(nv)) for lv, nv in mism)
        )
        structure += 11 * min(close, 40)
    return UnitMatch(
        score=structure + similarity(linen_unit.alias, path_of(nnx_unit)),
        vars=[VarMatch(linen=(lv,), nnx=nv) for lv, nv in pairs]
        + [VarMatch(linen=(lv,), nnx=nv, mismatch=True) for lv, nv in mism],
        linen_units=(linen_unit,),
        nnx_units=(nnx_unit,),
    )


def path_of(unit: Unit) -> str:
    return "/".join(str(k) for k in unit.path)


@dataclass
class Item:
    """One step of a side's call sequence: a unit, or a group of stacked units."""

    units: list[Unit]
    stack: tuple[int, int] | None = None

    @property
    def order(self) -> int:
        return min(u.order for u in self.units if u.order is not None)

    @property
    def name(self) -> str:
        return ", ".join(u.name for u in self.units)


def _stack_root(unit: Unit, units: Sequence[Unit]) -> tuple:
    """The shallowest ancestor under which every unit is stacked the same way as ``unit``."""
    for n in range(len(unit.path) + 1):
        anc = unit.path[:n]
        if not anc and unit.path:
            continue  # the model itself is not a transform boundary; its children may be
        under = [u for u in units if u.path[:n] == anc]
        if all(u.stack == unit.stack for u in under):
            return anc
    return unit.path


def make_items(units: Sequence[Unit]) -> tuple[list[Item], list[Unit]]:
    """Called units as a sequence of items (stacked ones grouped), and the never-called units."""
    called = [u for u in units if u.order is not None]
    uncalled = [u for u in units if u.order is None]
    groups: dict[tuple, list[Unit]] = {}
    items: list[Item] = []
    for u in called:
        if u.stack is None:
            items.append(Item([u]))
        else:
            groups.setdefault((_stack_root(u, called), u.stack), []).append(u)
    for (_, stack), members in groups.items():
        items.append(Item(sorted(members, key=lambda u: u.order), stack))
    items.sort(key=lambda it: it.order)
    return items, uncalled


def _group_vs_run(
    group: Item, run: Sequence[Item], compat: Compat, group_is_nnx: bool
) -> UnitMatch | None:
    """A stacked group against ``K * m`` plain units of the other side, pattern by pattern."""
    length, axis = group.stack
    m = len(group.units)
    total = UnitMatch(score=0)
    collected: dict[int, list[tuple[int, VarMatch]]] = {}
    for k in range(length):
        for r, group_unit in enumerate(group.units):
            other = run[k * m + r].units[0]
            if group_is_nnx:
                unit_match = match_units(other, group_unit, _stored, _sliced, compat)
            else:
                unit_match = match_units(group_unit, other, _sliced, _stored, compat)
            if unit_match is None:
                return None
            total.absorb(unit_match)
            for var_match in unit_match.vars:
                if group_is_nnx:
                    collected.setdefault(id(var_match.nnx), []).append((k, var_match))
                else:
                    total.vars.append(
                        VarMatch(
                            linen=var_match.linen,
                            nnx=var_match.nnx,
                            layout=Layout("unstack", linen_axis=axis, index=k),
                            mismatch=var_match.mismatch,
                        )
                    )
    if group_is_nnx:
        for slices in collected.values():
            if [k for k, _ in slices] != list(range(length)):
                continue  # some slice has no source: the NNX variable stays unfilled
            first = slices[0][1]
            total.vars.append(
                VarMatch(
                    linen=tuple(var_match.linen[0] for _, var_match in slices),
                    nnx=first.nnx,
                    layout=Layout("stack", nnx_axis=axis),
                    mismatch=any(var_match.mismatch for _, var_match in slices),
                )
            )
    return total


def _group_vs_group(linen_group: Item, nnx_group: Item, compat: Compat) -> UnitMatch | None:
    """Two stacked groups of the same length: copy, or move the stacking axis."""
    if linen_group.stack[0] != nnx_group.stack[0] or len(linen_group.units) != len(
        nnx_group.units
    ):
        return None
    linen_axis, nnx_axis = linen_group.stack[1], nnx_group.stack[1]
    layout = (
        Layout()
        if linen_axis == nnx_axis
        else Layout("moveaxis", linen_axis=linen_axis, nnx_axis=nnx_axis)
    )
    total = UnitMatch(score=0)
    for linen_unit, nnx_unit in zip(linen_group.units, nnx_group.units, strict=True):
        unit_match = match_units(linen_unit, nnx_unit, _sliced, _sliced, compat)
        if unit_match is None:
            return None
        total.absorb(unit_match)
        for var_match in unit_match.vars:
            total.vars.append(
                VarMatch(
                    linen=var_match.linen,
                    nnx=var_match.nnx,
                    layout=layout,
                    mismatch=var_match.mismatch,
                )
            )
    return total


def _edges(linen_items: list[Item], nnx_items: list[Item], compat: Compat) -> Callable:
    def edges(i: int, j: int) -> list[tuple[int, int, int, UnitMatch]]:
        out = []
        if i >= len(linen_items) or j >= len(nnx_items):
            return out
        linen_item, nnx_item = linen_items[i], nnx_items[j]
        if linen_item.stack is None and nnx_item.stack is None:
            unit_match = match_units(
                linen_item.units[0], nnx_item.units[0], _stored, _stored, compat
            )
            if unit_match is not None:
                out.append((i + 1, j + 1, unit_match.score, unit_match))
        elif linen_item.stack is not None and nnx_item.stack is not None:
            unit_match = _group_vs_group(linen_item, nnx_item, compat)
            if unit_match is not None:
                out.append((i + 1, j + 1, unit_match.score, unit_match))
        if nnx_item.stack is not None:
            n = nnx_item.stack[0] * len(nnx_item.units)
            run = linen_items[i : i + n]
            if len(run) == n and all(x.stack is None for x in run):
                unit_match = _group_vs_run(nnx_item, run, compat, group_is_nnx=True)
                if unit_match is not None:
                    out.append((i + n, j + 1, unit_match.score, unit_match))
        if linen_item.stack is not None:
            n = linen_item.stack[0] * len(linen_item.units)
            run = nnx_items[j : j + n]
            if len(run) == n and all(x.stack is None for x in run):
                unit_match = _group_vs_run(linen_item, run, compat, group_is_nnx=False)
                if unit_match is not None:
                    out.append((i + 1, j + n, unit_match.score, unit_match))
        return out

    return edges


def align(
    linen_items: list[Item], nnx_items: list[Item], compat: Compat
) -> tuple[list[UnitMatch], dict[int, set], dict[int, set]]:
    """Best order-preserving pairing of two item sequences.

    Returns the chosen matches and, per Linen and per NNX item index, the set of placements
    that some best alignment gives it (more than one means the pairing is ambiguous).
    """
    a, b = len(linen_items), len(nnx_items)
    edge_fn = _edges(linen_items, nnx_items, compat)
    table: dict[tuple[int, int], list[tuple[int, int, int, Any]]] = {}
    for i in range(a + 1):
        for j in range(b + 1):
            es: list[tuple[int, int, int, Any]] = []
            if i < a:
                es.append((i + 1, j, 0, None))
            if j < b:
                es.append((i, j + 1, 0, None))
            es.extend(edge_fn(i, j))
            table[(i, j)] = es
    neg = -(10**18)
    best = [[neg] * (b + 1) for _ in range(a + 1)]  # best score from (i, j) to the end
    best[a][b] = 0
    for i in range(a, -1, -1):
        for j in range(b, -1, -1):
            for i2, j2, s, _ in table[(i, j)]:
                best[i][j] = max(best[i][j], s + best[i2][j2])
    reach = [[neg] * (b + 1) for _ in range(a + 1)]  # best score from the start to (i, j)
    reach[0][0] = 0
    for i in range(a + 1):
        for j in range(b + 1):
            if reach[i][j] == neg:
                continue
            for i2, j2, s, _ in table[(i, j)]:
                reach[i2][j2] = max(reach[i2][j2], reach[i][j] + s)
    total = best[0][0]
    l_opts: dict[int, set] = {}
    n_opts: dict[int, set] = {}
    for (i, j), es in table.items():
        if reach[i][j] == neg or reach[i][j] + best[i][j] != total:
            continue
        for i2, j2, s, unit_match in es:
            if reach[i][j] + s + best[i2][j2] != total:
                continue
            if unit_match is None:
                if i2 > i:
                    l_opts.setdefault(i, set()).add(None)
                else:
                    n_opts.setdefault(j, set()).add(None)
                continue
            for x in range(i, i2):
                l_opts.setdefault(x, set()).add((j, x - i))
            for y in range(j, j2):
                n_opts.setdefault(y, set()).add((i, y - j))
    chosen = []
    i = j = 0
    while (i, j) != (a, b):
        options = [e for e in table[(i, j)] if e[2] + best[e[0]][e[1]] == best[i][j]]
        i2, j2, _, unit_match = max(options, key=lambda e: e[3] is not None)
        if unit_match is not None:
            chosen.append(unit_match)
        i, j = i2, j2
    return chosen, l_opts, n_opts


def match_leftovers(
    lunits: list[Unit], nunits: list[Unit], compat: Compat
) -> tuple[list[UnitMatch], dict[str, list[str]]]:
    """Pairs units the alignment left over when exactly one candidate fits best, both ways."""
    cands: dict[tuple[int, int], UnitMatch] = {}
    for x, linen_unit in enumerate(lunits):
        for y, nnx_unit in enumerate(nunits):
            unit_match = match_units(linen_unit, nnx_unit, _stored, _stored, compat)
            if unit_match is not None:
                cands[(x, y)] = unit_match
    free_l, free_n = set(range(len(lunits))), set(range(len(nunits)))
    chosen = []
    changed = True
    while changed:
        changed = False
        for x in sorted(free_l):
            scores = {y: cands[(x, y)].score for y in free_n if (x, y) in cands}
            if not scores:
                continue
            top = max(scores.values())
            tops = [y for y, s in scores.items() if s == top]
            if len(tops) != 1:
                continue
            y = tops[0]
            rivals = [cands[(x2, y)].score for x2 in free_l if (x2, y) in cands]
            if max(rivals) == top and rivals.count(top) == 1:
                chosen.append(cands[(x, y)])
                free_l.discard(x)
                free_n.discard(y)
                changed = True
    ambiguous = {}
    for x in sorted(free_l):
        ys = [y for y in free_n if (x, y) in cands]
        if ys:
            ambiguous[lunits[x].name] = sorted(nunits[y].name for y in ys)
    return chosen, ambiguous


@dataclass(frozen=True)
class ExtraRepeat:
    """One side repeats a block more often than the other (a port with one block too many).

    ``side`` is the side with more repetitions; ``extra`` the path of its last one (by order
    it has no counterpart), ``variables`` how many variables it holds.
    """

    side: str
    extra: str
    variables: int
    more: tuple[str, ...]  # the longer side's repetitions, in index order
    fewer: tuple[str, ...]  # the shorter side's


def _repeat_groups(units: Sequence[Unit]) -> dict[str, dict[int, list[Unit]]]:
    """Units under list-like items (``layers_1`` or ``layers/1``), by list path and index."""
    groups: dict[str, dict[int, list[Unit]]] = {}
    for u in units:
        segs = canonical(path_of(u)).split("/")
        for k, seg in enumerate(segs):
            if seg.isdigit() and k:
                groups.setdefault("/".join(segs[:k]), {}).setdefault(int(seg), []).append(u)
    return groups


def _item_name(unit: Unit, canonical_prefix: str) -> str:
    """The path of the list item that ``unit`` lies in, as its own side spells it."""
    for n in range(1, len(unit.path) + 1):
        name = "/".join(str(k) for k in unit.path[:n])
        if canonical(name) == canonical_prefix:
            return name
    return canonical_prefix


def _signature(members: Sequence[Unit]) -> tuple:
    return tuple(sorted(v.shape for u in members for v in u.vars))


def extra_repeat(lunits: Sequence[Unit], nunits: Sequence[Unit]) -> ExtraRepeat | None:
    """A repeated block (same variables in every repetition on both sides) that one side
    repeats more often; the outermost such block when several differ."""
    found: list[tuple[int, ExtraRepeat]] = []
    for lkey, lgroup in _repeat_groups(lunits).items():
        lsigs = {_signature(m) for m in lgroup.values()}
        if len(lsigs) != 1 or sorted(lgroup) != list(range(len(lgroup))):
            continue
        for nkey, ngroup in _repeat_groups(nunits).items():
            if len(ngroup) == len(lgroup) or sorted(ngroup) != list(range(len(ngroup))):
                continue
            if {_signature(m) for m in ngroup.values()} != lsigs:
                continue
            lnames = tuple(_item_name(lgroup[i][0], f"{lkey}/{i}") for i in sorted(lgroup))
            nnames = tuple(_item_name(ngroup[i][0], f"{nkey}/{i}") for i in sorted(ngroup))
            side, more, fewer = (
                ("nnx", nnames, lnames) if len(ngroup) > len(lgroup) else ("linen", lnames, nnames)
            )
            size = len(next(iter(lsigs)))
            found.append((size, ExtraRepeat(side, more[-1], size, more, fewer)))
    if not found:
        return None
    return max(found, key=lambda f: f[0])[1]
