"""The matching algorithm: from two traced models to a :class:`~linnx.migrate.Plan`.

:func:`match` traces both models (``_record.py``), then

1. *pins* the variables whose paths already agree (``batchnorm/scale`` on both sides,
   ``layers_0`` vs ``layers/0``, or whatever the user's ``rename=`` rule produces; RNG state of
   a ``to_linen`` module also without its stream-name segment);
2. *aligns* the remaining units by call order (``_align.py``), refusing an ambiguous result,
   and naming a whole block that one side repeats more often than the other;
3. pairs the *leftovers* (units never called) when each is the other's unique best fit;

and writes the outcome down with the data types of ``_plan.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
from flax import linen as nn
from flax import nnx

from .._keypath import path_str
from .._public import public
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
from ._errors import AmbiguousPairingError
from ._paths import Renamer, canonical
from ._plan import Mismatch, Pair, Plan, _desc
from ._record import RNG_STATE_TYPES, ModelRecord, Unit, VarInfo, record_linen, record_nnx

__all__ = ["match", "plan_from_records"]

_MODULE = "linnx.migrate"

RenameRule = Mapping[str, str] | Callable[[str], str | None] | None


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


def _extra_repeat_error(extra: ExtraRepeat) -> AmbiguousPairingError:
    """An extra block is the cause of ambiguity: say so, instead of a rename that would
    lead to another ambiguous pairing."""
    nnx_has_more = extra.side == "nnx"
    has, lacks = ("NNX", "Linen") if nnx_has_more else ("Linen", "NNX")
    what = "variables" if nnx_has_more else "leaves"
    linen_blocks, nnx_blocks = (
        (extra.fewer, extra.more) if nnx_has_more else (extra.more, extra.fewer)
    )
    rule = ", ".join(f"{a!r}: {b!r}" for a, b in zip(linen_blocks, nnx_blocks, strict=False))
    if nnx_has_more:
        build = f"build the NNX model with {len(extra.fewer)} blocks"
        keep = f"linen_to_nnx(..., allow_missing=[{extra.extra!r}]) keeps its initial values"
    else:
        build = f"give the NNX model {len(extra.more)} blocks, as the Linen model has"
        keep = f"linen_to_nnx(..., allow_unused=['*/{extra.extra}/*']) drops its weights"
    message = (
        f"The {has} model has {extra.extra} ({extra.variables} {what}) that the {lacks} model "
        f"does not have: it repeats that block {len(extra.more)} times "
        f"({', '.join(extra.more)}), the {lacks} model {len(extra.fewer)} times "
        f"({', '.join(extra.fewer)}), with the same variables in each, so the blocks cannot be "
        "paired by call order.\n"
        f"Fix: {build}; or, if the difference is intended, pair the others by name, "
        f"match(..., rename={{{rule}}}), and {keep}."
    )
    return AmbiguousPairingError(message, candidates={extra.extra: [None]})


def _check_alignment(
    linen_items: Sequence[Item],
    nnx_items: Sequence[Item],
    linen_options: Mapping[int, set],
    nnx_options: Mapping[int, set],
) -> None:
    """Raises :class:`AmbiguousPairingError` when some item has several best placements."""
    described: dict[str, list[str]] = {}
    fixes: list[tuple[str, str]] = []
    for i, options in sorted(linen_options.items()):
        if len(options) > 1:
            item = linen_items[i]
            names = sorted({_placement(nnx_items, o) for o in options})
            key = f"{item.name} ({item.units[0].cls_name}: {_var_desc(item.units[0])})"
            described[key] = names
            taken = {b for _, b in fixes}
            real = [n.split(" [")[0] for n in names if not n.startswith("<")]
            real = [n for n in real if n not in taken]
            if real:
                fixes.append((item.units[0].name, real[0]))
    if not described:
        for j, options in sorted(nnx_options.items()):
            if len(options) > 1:
                names = sorted({_placement(linen_items, o) for o in options})
                described[f"(NNX) {nnx_items[j].name}"] = names
    if described:
        raise _ambiguous(described, fixes)


def _without_stream(path: str) -> str:
    """``drop/rngs/dropout/key`` -> ``drop/rngs/key``: a ``to_linen`` module keeps a module's
    RNG stream under the stream's name, a native one built from ``nnx.Rngs(0)`` does not."""
    segs = path.split("/")
    if len(segs) >= 3 and segs[-1] in ("key", "count"):
        return "/".join(segs[:-2] + segs[-1:])
    return path


def _is_rng_state(var: VarInfo) -> bool:
    return var.var_type is not None and issubclass(var.var_type, RNG_STATE_TYPES)


def _pin_by_name(
    linen_record: ModelRecord, nnx_record: ModelRecord, alias: Mapping[str, str], compat: Compat
) -> list[VarMatch]:
    """Step 1: variables whose paths agree after the rename rule pair by name."""
    rng_collections = {
        c for c, t in compat.pairs.items() if isinstance(t, type) and issubclass(t, RNG_STATE_TYPES)
    }
    nnx_has_rng_state = any(_is_rng_state(v) for v in nnx_record.vars.values())
    by_canonical: dict[str, list[VarInfo]] = {}
    for nnx_var in nnx_record.vars.values():
        by_canonical.setdefault(canonical(nnx_var.bare), []).append(nnx_var)
    pinned: list[VarMatch] = []
    taken_nnx: set[str] = set()

    def candidates(path: str, linen_var: VarInfo) -> list[VarInfo]:
        return [
            nnx_var
            for nnx_var in by_canonical.get(path, [])
            if nnx_var.path not in taken_nnx and compat(linen_var.collection, nnx_var.var_type)
        ]

    for linen_var in linen_record.vars.values():
        path = canonical(alias[linen_var.path])
        found = candidates(path, linen_var)
        if not found and nnx_has_rng_state and linen_var.collection in rng_collections:
            found = candidates(_without_stream(path), linen_var)
        if len(found) == 1:
            nnx_var = found[0]
            pinned.append(
                VarMatch(linen=(linen_var,), nnx=nnx_var, mismatch=linen_var.shape != nnx_var.shape)
            )
            taken_nnx.add(nnx_var.path)
    return pinned


def _without(units: Sequence[Unit], taken: set[str]) -> list[Unit]:
    """The units with the taken variables removed (units left empty dropped)."""
    out = []
    for unit in units:
        rest = [v for v in unit.vars if v.path not in taken]
        if rest:
            out.append(dataclasses.replace(unit, vars=rest))
    return out


def plan_from_records(
    linen_record: ModelRecord, nnx_record: ModelRecord, rename: RenameRule = None
) -> Plan:
    """Builds the plan from two recorded models (the work behind :func:`match`)."""
    renamer = Renamer(rename)
    compat = Compat()
    alias = {v.path: renamer(v.bare) for v in linen_record.vars.values()}
    for unit in linen_record.units:
        unit.alias = renamer(path_str(unit.path))
    renamer.check_all_used(linen_record.module_paths, [v.bare for v in linen_record.vars.values()])

    # 1. Paths that already agree (after renaming) pair by name.
    matches = _pin_by_name(linen_record, nnx_record, alias, compat)
    taken_linen = {v.path for m in matches for v in m.linen}
    taken_nnx = {m.nnx.path for m in matches}
    linen_units = _without(linen_record.units, taken_linen)
    nnx_units = _without(nnx_record.units, taken_nnx)

    # 2. The rest, by call order.
    linen_items, linen_uncalled = make_items(linen_units)
    nnx_items, nnx_uncalled = make_items(nnx_units)
    chosen, linen_options, nnx_options = align(linen_items, nnx_items, compat)
    try:
        _check_alignment(linen_items, nnx_items, linen_options, nnx_options)
    except AmbiguousPairingError:
        extra = extra_repeat(linen_record.units, nnx_record.units)
        if extra is not None:
            raise _extra_repeat_error(extra) from None
        raise

    # 3. Whatever is left, by unique fit.
    aligned_linen = {id(u) for unit_match in chosen for u in unit_match.linen_units}
    aligned_nnx = {id(u) for unit_match in chosen for u in unit_match.nnx_units}
    left_linen = [
        u for item in linen_items for u in item.units if id(u) not in aligned_linen
    ] + linen_uncalled
    left_nnx = [
        u for item in nnx_items for u in item.units if id(u) not in aligned_nnx
    ] + nnx_uncalled
    more, ambiguous = match_leftovers(left_linen, left_nnx, compat)
    if ambiguous:
        extra = extra_repeat(linen_record.units, nnx_record.units)
        if extra is not None:
            raise _extra_repeat_error(extra)
        fixes: list[tuple[str, str]] = []
        for name, names in ambiguous.items():
            free = [c for c in names if c not in {b for _, b in fixes}]
            if free:
                fixes.append((name, free[0]))
        raise _ambiguous(ambiguous, fixes)
    for unit_match in [*chosen, *more]:
        matches.extend(unit_match.vars)
    return _assemble(linen_record, nnx_record, matches)


def _assemble(
    linen_record: ModelRecord, nnx_record: ModelRecord, matches: Sequence[VarMatch]
) -> Plan:
    pairs, mismatched = [], []
    used_linen: set[Any] = set()
    used_nnx: set[Any] = set()
    for var_match in matches:
        linen_paths = tuple(v.path for v in var_match.linen)
        nnx_var, linen_var = var_match.nnx, var_match.linen[0]
        used_linen.update(linen_paths)
        used_nnx.add(nnx_var.path)
        descriptions = {
            "linen_desc": _desc(linen_var.shape, linen_var.dtype),
            "nnx_desc": _desc(nnx_var.shape, nnx_var.dtype),
        }
        if var_match.mismatch:
            mismatched.append(
                Mismatch(linen=linen_paths, nnx=nnx_var.path, reason="shape", **descriptions)
            )
            continue
        pairs.append(
            Pair(
                linen=linen_paths,
                nnx=nnx_var.path,
                nnx_type=getattr(nnx_var.var_type, "__name__", "?"),
                linen_shape=linen_var.shape,
                linen_dtype=linen_var.dtype.name,
                nnx_shape=nnx_var.shape,
                nnx_dtype=nnx_var.dtype.name,
                layout=var_match.layout,
            )
        )
        if linen_var.dtype != nnx_var.dtype:
            mismatched.append(
                Mismatch(linen=linen_paths, nnx=nnx_var.path, reason="dtype", **descriptions)
            )
    linen_leaves = {p: jax.ShapeDtypeStruct(v.shape, v.dtype) for p, v in linen_record.vars.items()}
    nnx_leaves = {
        p: (getattr(v.var_type, "__name__", "?"), jax.ShapeDtypeStruct(v.shape, v.dtype))
        for p, v in nnx_record.vars.items()
    }
    # RNG state the Linen side does not hold stays NNX-only, as when it is not recorded.
    rng_left = {
        p
        for p, v in nnx_record.vars.items()
        if p not in used_nnx and v.var_type is not None and issubclass(v.var_type, RNG_STATE_TYPES)
    }
    return Plan(
        pairs=pairs,
        unused=sorted(p for p in linen_record.vars if p not in used_linen),
        unfilled=sorted(p for p in nnx_record.vars if p not in used_nnx and p not in rng_left),
        mismatched=mismatched,
        excluded=(*nnx_record.excluded, *sorted(rng_left)),
        linen_leaves=linen_leaves,
        nnx_leaves=nnx_leaves,
        linen_axes=linen_record.axes,
        linen_structure=linen_record.structure,
    )


@public(_MODULE)
def match(
    linen_module: nn.Module,
    nnx_model: nnx.Module,
    *sample_args: Any,
    linen_kwargs: Mapping[str, Any] | None = None,
    nnx_kwargs: Mapping[str, Any] | None = None,
    rename: RenameRule = None,
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
    linen_record = record_linen(linen_module, sample_args, dict(linen_kwargs or {}), linen_method)
    nnx_record = record_nnx(
        nnx_model,
        sample_args,
        dict(nnx_kwargs or {}),
        nnx_method,
        keep_rng_state=linen_record.has_rng_state,
    )
    return plan_from_records(linen_record, nnx_record, rename)
