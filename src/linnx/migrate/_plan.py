"""The migration plan: which Linen leaves fill which NNX variables, and how.

:func:`match` traces both models (see ``_record.py``), pins the variables whose paths already
agree (``batchnorm/scale`` on both sides, ``layers_0`` vs ``layers/0``, or whatever the user's
``rename=`` rule produces), aligns the rest by call order (see ``_align.py``) and writes the
outcome down as a :class:`Plan`. A plan holds only paths, shapes and layouts, never values, so
one plan serves the weights, the optimizer state and both directions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
from flax import linen as nn
from flax import nnx

from ._align import (
    Compat,
    ExtraRepeat,
    Item,
    VarMatch,
    align,
    extra_repeat,
    make_items,
    match_leftovers,
)
from ._checks import check_initialized, check_linen, check_mapping, check_nnx
from ._errors import AmbiguousPairingError, MigrationError, MigrationTypeError
from ._paths import Renamer, canonical, path_str, whole_subtrees
from ._record import RNG_STATE_TYPES, ModelRecord, Unit, dtype_name, record_linen, record_nnx

__all__ = ["Layout", "Pair", "Mismatch", "Plan", "match", "plan_from_records"]

_MODULE = "linnx.migrate"


_LAYOUT_KINDS = ("copy", "stack", "unstack", "moveaxis")


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
    (have, want), others = ordered[0], ordered[1:]
    also = f" (and {', '.join(f'{x} vs {y}' for x, y in others)})" if others else ""
    return (
        f"every width differs: {have} vs {want}{also}: Linen has {have} where the NNX model has "
        f"{want}, across all {len(mismatched)} mismatched leaves; was the NNX model built with "
        "another size?"
    )


@dataclass(frozen=True)
class Layout:
    """How Linen leaves turn into one NNX value.

    ``copy``: one leaf, as is. ``stack``: several leaves (``layers_0..N``) stacked along
    ``nnx_axis``. ``unstack``: slice ``index`` of one leaf along ``linen_axis``.
    ``moveaxis``: one stacked leaf whose stacking axis moves from ``linen_axis`` to ``nnx_axis``.

    Example:
        >>> from linnx import migrate
        >>> str(migrate.Layout('stack', nnx_axis=0))
        'stack on axis 0'
    """

    kind: str = "copy"
    linen_axis: int | None = None
    nnx_axis: int | None = None
    index: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in _LAYOUT_KINDS:
            raise MigrationError(
                f"Layout(kind={self.kind!r}): expected one of {', '.join(_LAYOUT_KINDS)}.\n"
                "Fix: e.g. Layout('stack', nnx_axis=0)."
            )

    def __str__(self) -> str:
        if self.kind == "stack":
            return f"stack on axis {self.nnx_axis}"
        if self.kind == "unstack":
            return f"unstack [{self.index}] of axis {self.linen_axis}"
        if self.kind == "moveaxis":
            return f"move axis {self.linen_axis} -> {self.nnx_axis}"
        return "copy"


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
        >>> p = migrate.Pair(('params/Dense_0/bias',), 'linear/bias', 'Param',
        ...                  (3,), 'float32', (3,), 'float32', migrate.Layout())
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


@dataclass(frozen=True)
class Mismatch:
    """A Linen leaf and an NNX variable that should pair but differ in shape or dtype.

    Example:
        >>> from linnx import migrate
        >>> m = migrate.Mismatch(('params/Dense_0/kernel',), 'linear/kernel',
        ...                      '(4, 5) float32', '(4, 6) float32', 'shape')
        >>> m.reason
        'shape'
    """

    linen: tuple[str, ...]
    nnx: str
    linen_desc: str
    nnx_desc: str
    reason: str  # 'shape' | 'dtype'


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


def _var_desc(unit: Unit) -> str:
    return ", ".join(f"{v.collection}/{v.rel} {v.shape}" for v in unit.vars[:4]) + (
        " ..." if len(unit.vars) > 4 else ""
    )


def _placement(items: Sequence[Item], option: tuple[int, int] | None) -> str:
    if option is None:
        return "<left unpaired>"
    j, offset = option
    item = items[j]
    if item.stack is None:
        return item.units[0].name
    m = len(item.units)
    return f"{item.units[offset % m].name} [slice {offset // m}]"


def _ambiguous(
    described: Mapping[str, Sequence[str]], fix_pairs: Sequence[tuple[str, str]]
) -> AmbiguousPairingError:
    lines = ["Cannot pair some Linen modules with NNX modules unambiguously:"]
    for name, cands in described.items():
        lines.append(f"  {name} could pair with any of: {', '.join(cands)}")
    example = ", ".join(f"{a!r}: {b!r}" for a, b in fix_pairs[:2]) or "'Dense_0': 'linear'"
    lines.append(
        "Fix: name the pairing with a rename rule (Linen path without collection -> NNX "
        f"path), e.g. rename={{{example}}}; or make the two models call their layers in the "
        "same order."
    )
    return AmbiguousPairingError("\n".join(lines), candidates=described)


def _extra_repeat_error(er: ExtraRepeat) -> AmbiguousPairingError:
    """An extra block is the cause of ambiguity: say so, instead of a rename that would
    lead to another ambiguous pairing."""
    has, lacks = ("NNX", "Linen") if er.side == "nnx" else ("Linen", "NNX")
    what = "variables" if er.side == "nnx" else "leaves"
    rule = ", ".join(
        f"{a!r}: {b!r}"
        for a, b in zip(er.fewer if er.side == "nnx" else er.more, er.more if er.side == "nnx"
                        else er.fewer, strict=False)
    )  # fmt: skip
    if er.side == "nnx":
        build = f"build the NNX model with {len(er.fewer)} blocks"
        keep = f"linen_to_nnx(..., allow_missing=[{er.extra!r}]) keeps its initial values"
    else:
        build = f"give the NNX model {len(er.more)} blocks, as the Linen model has"
        keep = f"linen_to_nnx(..., allow_unused=['*/{er.extra}/*']) drops its weights"
    message = (
        f"The {has} model has {er.extra} ({er.variables} {what}) that the {lacks} model does "
        f"not have: it repeats that block {len(er.more)} times ({', '.join(er.more)}), the "
        f"{lacks} model {len(er.fewer)} times ({', '.join(er.fewer)}), with the same "
        "variables in each, so the blocks cannot be paired by call order.\n"
        f"Fix: {build}; or, if the difference is intended, "
        f"pair the others by name, match(..., rename={{{rule}}}), and "
        f"{keep}."
    )
    return AmbiguousPairingError(message, candidates={er.extra: [None]})


def _check_alignment(li, ni, l_opts, n_opts) -> None:
    described: dict[str, list[str]] = {}
    fixes = []
    for i, opts in sorted(l_opts.items()):
        if len(opts) > 1:
            item = li[i]
            names = sorted({_placement(ni, o) for o in opts})
            key = f"{item.name} ({item.units[0].cls_name}: {_var_desc(item.units[0])})"
            described[key] = names
            taken = {b for _, b in fixes}
            real = [n.split(" [")[0] for n in names if not n.startswith("<")]
            real = [n for n in real if n not in taken]
            if real:
                fixes.append((item.units[0].name, real[0]))
    if not described:
        for j, opts in sorted(n_opts.items()):
            if len(opts) > 1:
                names = sorted({_placement(li, o) for o in opts})
                described[f"(NNX) {ni[j].name}"] = names
    if described:
        raise _ambiguous(described, fixes)


def _without_stream(path: str) -> str:
    """``drop/rngs/dropout/key`` -> ``drop/rngs/key``: a ``to_linen`` module keeps a module's
    RNG stream under the stream's name, a native one built from ``nnx.Rngs(0)`` does not."""
    segs = path.split("/")
    if len(segs) >= 3 and segs[-1] in ("key", "count"):
        return "/".join(segs[:-2] + segs[-1:])
    return path


def plan_from_records(
    lrec: ModelRecord,
    nrec: ModelRecord,
    rename: Mapping[str, str] | Callable[[str], str | None] | None = None,
) -> Plan:
    """Builds the plan from two recorded models (the work behind :func:`match`)."""
    renamer = Renamer(rename)
    compat = Compat()
    alias = {v.path: renamer(v.bare) for v in lrec.vars.values()}
    for u in lrec.units:
        u.alias = renamer(path_str(u.path))
    renamer.check_all_used(lrec.module_paths, [v.bare for v in lrec.vars.values()])

    # 1. Paths that already agree (after renaming) pair by name.
    rng_collections = {
        c for c, t in compat.pairs.items() if isinstance(t, type) and issubclass(t, RNG_STATE_TYPES)
    }
    nrec_rng = any(
        v.var_type is not None and issubclass(v.var_type, RNG_STATE_TYPES)
        for v in nrec.vars.values()
    )
    by_canon: dict[str, list] = {}
    for nv in nrec.vars.values():
        by_canon.setdefault(canonical(nv.bare), []).append(nv)
    matches: list[VarMatch] = []
    taken_l, taken_n = set(), set()
    for lv in lrec.vars.values():
        cands = [
            nv
            for nv in by_canon.get(canonical(alias[lv.path]), [])
            if nv.path not in taken_n and compat(lv.collection, nv.var_type)
        ]
        if not cands and nrec_rng and lv.collection in rng_collections:
            cands = [
                nv
                for nv in by_canon.get(_without_stream(canonical(alias[lv.path])), [])
                if nv.path not in taken_n and compat(lv.collection, nv.var_type)
            ]
        if len(cands) == 1:
            nv = cands[0]
            matches.append(VarMatch((lv,), nv, mismatch=lv.shape != nv.shape))
            taken_l.add(lv.path)
            taken_n.add(nv.path)

    def rest(units: Sequence[Unit], taken: set[str]) -> list[Unit]:
        out = []
        for u in units:
            vs = [v for v in u.vars if v.path not in taken]
            if vs:
                out.append(dataclasses.replace(u, vars=vs))
        return out

    lunits, nunits = rest(lrec.units, taken_l), rest(nrec.units, taken_n)

    # 2. The rest, by call order.
    li, l_uncalled = make_items(lunits)
    ni, n_uncalled = make_items(nunits)
    chosen, l_opts, n_opts = align(li, ni, compat)
    try:
        _check_alignment(li, ni, l_opts, n_opts)
    except AmbiguousPairingError:
        extra = extra_repeat(lrec.units, nrec.units)
        if extra is not None:
            raise _extra_repeat_error(extra) from None
        raise

    # 3. Whatever is left, by unique fit.
    used_l = {id(u) for um in chosen for u in um.linen_units}
    used_n = {id(u) for um in chosen for u in um.nnx_units}
    left_l = [u for it in li for u in it.units if id(u) not in used_l] + l_uncalled
    left_n = [u for it in ni for u in it.units if id(u) not in used_n] + n_uncalled
    more, ambiguous = match_leftovers(left_l, left_n, compat)
    if ambiguous:
        extra = extra_repeat(lrec.units, nrec.units)
        if extra is not None:
            raise _extra_repeat_error(extra)
        fixes: list[tuple[str, str]] = []
        for name, cands in ambiguous.items():
            free = [c for c in cands if c not in {b for _, b in fixes}]
            if free:
                fixes.append((name, free[0]))
        raise _ambiguous(ambiguous, fixes)
    for um in [*chosen, *more]:
        matches.extend(um.vars)
    return _assemble(lrec, nrec, matches)


def _assemble(lrec: ModelRecord, nrec: ModelRecord, matches: Sequence[VarMatch]) -> Plan:
    # RNG state the Linen side does not hold stays NNX-only, as when it is not recorded.
    pairs, mismatched = [], []
    used_l, used_n = set(), set()
    for vm in matches:
        lpaths = tuple(v.path for v in vm.linen)
        nv, lv = vm.nnx, vm.linen[0]
        used_l.update(lpaths)
        used_n.add(nv.path)
        if vm.mismatch:
            mismatched.append(
                Mismatch(lpaths, nv.path, _desc(lv.shape, lv.dtype), _desc(nv.shape, nv.dtype),
                         "shape")
            )  # fmt: skip
            continue
        layout = Layout(vm.layout, vm.linen_axis, vm.nnx_axis, vm.index)
        pairs.append(
            Pair(lpaths, nv.path, nv.var_type.__name__, lv.shape, lv.dtype.name, nv.shape,
                 nv.dtype.name, layout)
        )  # fmt: skip
        if lv.dtype != nv.dtype:
            mismatched.append(
                Mismatch(lpaths, nv.path, _desc(lv.shape, lv.dtype), _desc(nv.shape, nv.dtype),
                         "dtype")
            )  # fmt: skip
    linen_leaves = {p: jax.ShapeDtypeStruct(v.shape, v.dtype) for p, v in lrec.vars.items()}
    nnx_leaves = {
        p: (v.var_type.__name__, jax.ShapeDtypeStruct(v.shape, v.dtype))
        for p, v in nrec.vars.items()
    }
    rng_left = {
        p
        for p, v in nrec.vars.items()
        if p not in used_n and v.var_type is not None and issubclass(v.var_type, RNG_STATE_TYPES)
    }
    return Plan(
        pairs=pairs,
        unused=sorted(p for p in lrec.vars if p not in used_l),
        unfilled=sorted(p for p in nrec.vars if p not in used_n and p not in rng_left),
        mismatched=mismatched,
        excluded=(*nrec.excluded, *sorted(rng_left)),
        linen_leaves=linen_leaves,
        nnx_leaves=nnx_leaves,
        linen_axes=lrec.axes,
        linen_structure=lrec.structure,
    )


def match(
    linen_module: nn.Module,
    nnx_model: nnx.Module,
    *sample_args: Any,
    linen_kwargs: Mapping[str, Any] | None = None,
    nnx_kwargs: Mapping[str, Any] | None = None,
    rename: Mapping[str, str] | Callable[[str], str | None] | None = None,
    linen_method: str | None = None,
    nnx_method: str | None = None,
) -> Plan:
    """Pairs the variables of a Linen module with those of its hand-ported NNX model.

    Both models run abstractly (``jax.eval_shape``: no compute, no allocation) on the sample
    inputs while every submodule call is recorded. Variables whose paths already agree pair
    by name; the others pair by aligning the two call sequences, layer kinds (``Dense`` ~
    ``Linear``) and variable shapes. Stacked layers (``nn.scan``, ``nnx.vmap`` +
    ``nnx.scan``) may pair with unrolled ones; the plan then stacks or unstacks.

    Args:
        linen_module: the Linen module (unbound).
        nnx_model: the NNX model (concrete, or abstract from ``nnx.eval_shape``).
        *sample_args: inputs for both models; arrays or ``jax.ShapeDtypeStruct``.
        linen_kwargs: extra call arguments for Linen, e.g. ``{'training': False}``.
        nnx_kwargs: extra call arguments for NNX (its mode is set by ``.eval()``).
        rename: rules that override or complete the automatic pairing, on Linen paths
            without the collection: ``{'Dense_0': 'linear'}`` replaces path segments;
            a function maps a whole path (``'Block_0/Dense_0/kernel'``) to an NNX path.
        linen_method: the Linen method to trace instead of ``__call__``.
        nnx_method: the NNX method to trace instead of ``__call__``.

    Returns:
        The :class:`Plan`. It may be incomplete (``plan.ok`` False); :func:`linen_to_nnx`
        then refuses, listing the paths.

    Raises:
        AmbiguousPairingError: several pairings fit equally well.
        TraceError: a model could not run on the sample inputs.
        RenameError: a ``rename`` key matched no Linen path.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import linen as nn, nnx
        >>> from linnx import migrate
        >>> class Model(nn.Module):
        ...     @nn.compact
        ...     def __call__(self, x):
        ...         x = nn.relu(nn.Dense(4)(x))
        ...         return nn.Dense(2)(x)
        >>> class Ported(nnx.Module):
        ...     def __init__(self, rngs):
        ...         self.hidden = nnx.Linear(3, 4, rngs=rngs)
        ...         self.out = nnx.Linear(4, 2, rngs=rngs)
        ...     def __call__(self, x):
        ...         return self.out(nnx.relu(self.hidden(x)))
        >>> plan = migrate.match(Model(), Ported(nnx.Rngs(0)), jnp.ones((1, 3)))
        >>> [(p.linen[0], p.nnx) for p in plan.pairs][:2]
        [('params/Dense_0/bias', 'hidden/bias'), ('params/Dense_0/kernel', 'hidden/kernel')]
    """
    check_linen(linen_module, "match")
    check_nnx(nnx_model, "match")
    check_initialized(nnx_model, "match")
    check_mapping(linen_kwargs, "match", "linen_kwargs", "{'train': False}", optional=True)
    check_mapping(nnx_kwargs, "match", "nnx_kwargs", "{'deterministic': True}", optional=True)
    lkw = dict(linen_kwargs or {})
    nkw = dict(nnx_kwargs or {})
    lrec = record_linen(linen_module, sample_args, lkw, linen_method)
    nrec = record_nnx(
        nnx_model, sample_args, nkw, nnx_method, keep_rng_state=lrec.has_rng_state
    )
    return plan_from_records(lrec, nrec, rename)


for _obj in (Layout, Pair, Mismatch, Plan, match):
    _obj.__module__ = _MODULE
del _obj
