"""Moving values along a plan: Linen variables into an NNX model, and back.

Both directions check everything before they write anything: a refused transfer leaves the
NNX model untouched. "Everything" means every NNX variable that would keep its initial value
(the MaxText #4566 lesson: a missed weight silently stays at its random init) and every Linen
leaf that would be dropped, each listed by key path, unless named in ``allow_missing=`` /
``allow_unused=``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

import jax
from flax import nnx

from .._errors import StructureMismatchError
from .._keypath import path_str
from .._public import public
from ._checks import check_finite, check_initialized, check_mapping, check_nnx, check_plan
from ._errors import MigrationTypeError, MissingWeightsError, ShapeMismatchError, UnusedWeightsError
from ._paths import (
    flatten_mapping,
    matches_any,
    patterns,
    similarity,
    unboxed,
    unflatten_mapping,
    whole_subtrees,
)
from ._plan import Pair, Plan, _desc, width_summary
from ._record import EXCLUDED_NNX_TYPES, non_weight_leaf, sown_paths

__all__ = [
    "linen_to_nnx",
    "nnx_to_linen",
    "to_nnx_value",
    "to_linen_value",
    "check_problems",
]

M = TypeVar("M", bound=nnx.Module)
Patterns = str | Iterable[str] | None

MSG_MISSING: Final = (
    "{n} NNX variable(s) would keep their initial values: no Linen leaf fills them.\n"
    "  missing ({n}): {paths}\n"
    "{hint}"
    "Fix: pair them by passing rename={{'<Linen path>': '<NNX path>'}} to match(...), or, if "
    "keeping the initial values is intended, pass allow_missing={allow!r}."
)
MSG_UNUSED: Final = (
    "{n} Linen leaf/leaves would be dropped: no NNX variable takes them.\n"
    "  unexpected ({n}): {paths}\n"
    "Fix: add the layer to the NNX model or pair it by passing rename={{'<Linen path>': "
    "'<NNX path>'}} to match(...); to drop them on purpose, pass allow_unused={allow!r}."
)
MSG_MISMATCH: Final = (
    "{n} paired leaf/leaves differ in shape or dtype:\n"
    "{lines}\n"
    "Fix: build the NNX model with the Linen model's sizes (e.g. nnx.Linear(in, out) with "
    "the Linen kernel's shape), or correct a wrong pairing with rename={{...}} in match(...). "
    "For dtype-only differences pass cast=True."
)
MSG_NNX_MISSING_FROM_LINEN: Final = (
    "{n} Linen leaf/leaves cannot be produced: no NNX variable holds them.\n"
    "  missing ({n}): {paths}\n"
    "Fix: add the variables to the NNX model, or pass allow_missing={allow!r} and supply "
    "them yourself before linen_module.apply."
)
MSG_NNX_DROPPED: Final = (
    "{n} NNX variable(s) have no place in the Linen variables and would be dropped.\n"
    "  unexpected ({n}): {paths}\n"
    "Fix: pair them in match(...) with rename=, or pass allow_unused={allow!r}."
)


def _shorten(paths: Sequence[str], limit: int = 40) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f", ... ({len(paths) - limit} more)" if len(paths) > limit else "")


def shape_mismatches(
    plan: Plan, allow_missing: Sequence[str], allow_unused: Sequence[str], used: set[str]
) -> list[tuple[str, str, str]]:
    """The plan's shape mismatches that ``allow_missing``/``allow_unused`` do not both excuse,
    as ``(where, expected, got)``; their Linen leaves are added to ``used`` (they are not
    unused: they have the wrong shape)."""
    out = []
    for m in plan.mismatched:
        if m.reason != "shape":
            continue
        if matches_any(m.nnx, allow_missing) and all(matches_any(p, allow_unused) for p in m.linen):
            continue
        used.update(m.linen)
        out.append((f"{m.linen[0]} -> {m.nnx}", m.nnx_desc, m.linen_desc))
    return out


def check_problems(
    *,
    missing: Sequence[str] = (),
    unused: Sequence[str] = (),
    mismatched: Sequence[tuple[str, str, str]] = (),
    hint_unused: Sequence[str] = (),
    missing_among: Sequence[str] = (),
    msg_missing: str = MSG_MISSING,
    msg_unused: str = MSG_UNUSED,
) -> None:
    """Raises the typed error for the first kind of problem found (mismatch, missing, unused).

    ``missing_among`` (every path of the missing side) lets the message name whole subtrees
    that are missing ("the NNX model has decoder/blocks/2 (6 variables) ...").
    """
    if mismatched:
        lines = "\n".join(
            f"  mismatched at {p}: NNX expects {exp}, Linen has {act}" for p, exp, act in mismatched
        )
        lead = width_summary(mismatched)
        raise ShapeMismatchError(
            (f"{lead}\n" if lead else "") + MSG_MISMATCH.format(n=len(mismatched), lines=lines),
            mismatched=mismatched,
        )
    if missing:
        hint = "".join(
            f"  the NNX model has {prefix} ({n} variables) that the Linen variables do not have\n"
            for prefix, n in whole_subtrees(missing, missing_among)
        )
        if hint_unused:
            shown = _shorten(hint_unused, 10)
            hint += f"  unused on the other side ({len(hint_unused)}): {shown}\n"
        raise MissingWeightsError(
            msg_missing.format(
                n=len(missing), paths=_shorten(missing), hint=hint, allow=list(missing[:3])
            ),
            missing=missing,
            unexpected=hint_unused,
        )
    if unused:
        raise UnusedWeightsError(
            msg_unused.format(n=len(unused), paths=_shorten(unused), allow=list(unused[:3])),
            unexpected=unused,
        )


def _same_shaped(
    missing: Sequence[str],
    unused: Sequence[str],
    nnx_shape: Callable[[str], tuple],
    linen_shape: Callable[[str], tuple | None],
) -> list[tuple[str, str]] | None:
    """A same-shaped unused Linen leaf for each missing NNX variable (closest name first),
    or None when some missing variable has none: then the weights may really be absent."""
    free = list(unused)
    found = []
    for nnx_path in missing:
        shape = nnx_shape(nnx_path)
        cands = [u for u in free if linen_shape(u) == shape]
        if not cands:
            return None
        best = max(cands, key=lambda u: similarity(u.split("/", 1)[-1], nnx_path))
        free.remove(best)
        found.append((best, nnx_path))
    return found


def _rename_rule(linen_path: str, nnx_path: str) -> tuple[str, str]:
    """The ``rename=`` entry that maps a Linen leaf (collection first) onto an NNX path:
    the differing module prefix when the leaf names agree, else the whole path."""
    lsegs, nsegs = linen_path.split("/")[1:], nnx_path.split("/")
    while len(lsegs) > 1 and len(nsegs) > 1 and lsegs[-1] == nsegs[-1]:
        lsegs, nsegs = lsegs[:-1], nsegs[:-1]
    return "/".join(lsegs), "/".join(nsegs)


def misnamed_error(
    found: Sequence[tuple[str, str]], plan_leaves: Mapping[str, Any], fn: str
) -> MissingWeightsError:
    """The error for missing NNX variables that the unused Linen leaves can fill one to one.

    ``allow_missing=`` would keep random initial values there, so it is not suggested: the
    leaves are there under other names. Leaves boxed the way Orbax stores partitioned
    parameters (``.../kernel/value``) are named as such.
    """
    missing = [n for _, n in found]
    unused = [u for u, _ in found]
    shown = "\n".join(f"    {u} -> {n}" for u, n in found[:10])
    more = f"\n    ... ({len(found) - 10} more)" if len(found) > 10 else ""
    head = (
        f"{fn}: {len(missing)} NNX variable(s) would keep their initial values, but each has "
        "an unused Linen leaf of the same shape: the weights are there under other names.\n"
        f"  missing ({len(missing)}): {_shorten(missing, 10)}\n"
        f"  same-shaped unused Linen leaves:\n{shown}{more}\n"
    )
    boxed = all(u.endswith("/value") and u[: -len("/value")] in plan_leaves for u in unused)
    if boxed:
        fix = (
            "Fix: the Linen leaves are boxed (a trailing 'value' level, as Orbax stores "
            "parameters made with nn.with_partitioning / nn.with_logical_partitioning): drop "
            "that level (params/Dense_0/kernel/value -> params/Dense_0/kernel) before "
            f"{fn}. Do not pass allow_missing=: it would keep the random initial values."
        )
    elif all(u in plan_leaves for u in unused):
        rules: dict[str, str] = {}
        for u, n in found:
            key, value = _rename_rule(u, n)
            rules.setdefault(key, value)
        example = ", ".join(f"{k!r}: {v!r}" for k, v in list(rules.items())[:3])
        fix = (
            f"Fix: pair them by name: match(..., rename={{{example}"
            f"{', ...' if len(rules) > 3 else ''}}}) and run {fn} with the new plan. Do not "
            "pass allow_missing=: it would keep the random initial values."
        )
    else:
        fix = (
            "Fix: the variables hold these leaves under other names than the Linen module "
            "given to match(...): rename them in the variables dict to the module's names "
            f"(e.g. {unused[0]!r} -> the path the plan reads). Do not pass allow_missing=: "
            "it would keep the random initial values."
        )
    return MissingWeightsError(head + fix, missing=missing, unexpected=unused)


@public("linnx.migrate")
def to_nnx_value(pair: Pair, sources: Sequence[Any]) -> jax.Array:
    """The NNX value of ``pair`` from its Linen leaves (in ``pair.linen`` order).

    Example:
        >>> import jax.numpy as jnp
        >>> from linnx import migrate
        >>> pair = migrate.Pair(linen=('params/l_0/w', 'params/l_1/w'), nnx='l/w',
        ...                     nnx_type='Param', linen_shape=(2,), linen_dtype='float32',
        ...                     nnx_shape=(2, 2), nnx_dtype='float32',
        ...                     layout=migrate.Layout('stack', nnx_axis=0))
        >>> migrate.to_nnx_value(pair, [jnp.zeros(2), jnp.ones(2)]).tolist()
        [[0.0, 0.0], [1.0, 1.0]]
    """
    if not isinstance(pair, Pair):
        raise MigrationTypeError(
            f"to_nnx_value(pair={pair!r}): expected a Pair from plan.pairs.\n"
            "Fix: e.g. [to_nnx_value(p, ...) for p in plan.pairs]."
        )
    return pair.layout.to_nnx(sources)


@public("linnx.migrate")
def to_linen_value(
    linen_path: str,
    pairs: Sequence[Pair],
    get: Callable[[str], Any],
    linen_shape: Sequence[int] | None = None,
) -> jax.Array:
    """The Linen leaf ``linen_path`` from the NNX values of the pairs that read it.

    ``get`` maps an NNX path to its value. Raises ``KeyError`` when a needed value is absent.

    Example:
        >>> import jax.numpy as jnp
        >>> from linnx import migrate
        >>> pair = migrate.Pair(linen=('params/l_0/w', 'params/l_1/w'), nnx='l/w',
        ...                     nnx_type='Param', linen_shape=(2,), linen_dtype='float32',
        ...                     nnx_shape=(2, 2), nnx_dtype='float32',
        ...                     layout=migrate.Layout('stack', nnx_axis=0))
        >>> migrate.to_linen_value('params/l_1/w', [pair], {'l/w': jnp.eye(2)}.__getitem__)
        Array([0., 1.], dtype=float32)
    """
    first = pairs[0]
    layout = first.layout
    if layout.kind == "unstack":
        # The leaf is rebuilt from every slice: all of them must be there.
        parts = sorted(pairs, key=lambda p: p.layout._given("index"))
        axis = layout._given("linen_axis")
        expected = linen_shape[axis] if linen_shape is not None else len(parts)
        if [p.layout.index for p in parts] != list(range(expected)):
            raise KeyError(linen_path)
        return layout.to_linen([get(p.nnx) for p in parts])
    return layout.to_linen([get(first.nnx)], position=first.linen.index(linen_path))


def _live_variables(model: nnx.Module) -> dict[str, nnx.Variable]:
    sown = sown_paths(model)  # values a ToNNX part sowed: no weights
    out = {path_str(p): v for p, v in nnx.to_flat_state(nnx.state(model))}
    return {p: v for p, v in out.items() if p not in sown} if sown else out


def _required(live: Mapping[str, nnx.Variable]) -> list[str]:
    return [p for p, v in live.items() if not isinstance(v, EXCLUDED_NNX_TYPES)]


def _check_plan_fits(plan: Plan, live: Mapping[str, nnx.Variable]) -> None:
    strangers = sorted({p.nnx for p in plan.pairs if p.nnx not in live})
    if strangers:
        raise StructureMismatchError.from_paths(
            "The plan and the NNX model",
            missing=strangers,
            fix="build the plan with match(linen_module, nnx_model, ...) for this NNX model.",
        )


def _placed(value: jax.Array, target: Any) -> jax.Array:
    """``value`` placed like ``target``: on its sharding if it was placed on purpose.

    An uncommitted target (created without a device or sharding) is not placed: committing
    some values of a model and not others makes the next ``jit`` call compile twice, once for
    the mix and once for its all-committed outputs.
    """
    sharding = getattr(target, "sharding", None)
    if isinstance(target, jax.Array) and sharding is not None and target.committed:
        return jax.device_put(value, sharding)
    return value


@public("linnx.migrate")
def linen_to_nnx(
    variables: Mapping[str, Any],
    nnx_model: M,
    plan: Plan,
    *,
    allow_missing: Patterns = (),
    allow_unused: Patterns = (),
    cast: bool = False,
    allow_nonfinite: bool | Patterns = False,
) -> M:
    """Fills an NNX model with Linen variables, following a plan, in place.

    Every collection moves (``params``, ``batch_stats``, custom ones such as ``counter``).
    Nothing is written unless every required NNX variable gets a value and every Linen leaf
    is used, so a refused call leaves the model as it was.

    Args:
        variables: the Linen variables dict (``{'params': ..., 'batch_stats': ...}``).
        nnx_model: the NNX model the plan was built for (concrete or abstract).
        plan: from :func:`match`.
        allow_missing: NNX paths or glob patterns that may keep their current values.
        allow_unused: Linen paths (collection first) or glob patterns that may be dropped.
        cast: convert values whose dtype differs from the NNX variable's instead of refusing.
        allow_nonfinite: accept NaN and infinite values: ``True``, or the Linen or NNX paths
            (or glob patterns) where they may appear. By default they are refused.

    Returns:
        ``nnx_model``, filled.

    Raises:
        ShapeMismatchError: a paired leaf has another shape (or dtype, without ``cast``).
        MissingWeightsError: some NNX variables would keep their initial values.
        UnusedWeightsError: some Linen leaves would be dropped.
        NonFiniteValuesError: some values are NaN or infinite (after ``cast``).
        MigrationTypeError: an argument has the wrong kind (a model class, no plan...).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import linen as nn, nnx
        >>> from linnx import migrate
        >>> x = jnp.ones((1, 2))
        >>> variables = nn.Dense(3).init(jax.random.key(0), x)
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(1))
        >>> plan = migrate.match(nn.Dense(3), model, x)
        >>> model = migrate.linen_to_nnx(variables, model, plan)
        >>> bool(jnp.all(model(x) == nn.Dense(3).apply(variables, x)))
        True
    """
    fn = "linen_to_nnx"
    check_mapping(variables, fn, "variables", "{'params': ..., 'batch_stats': ...}")
    check_nnx(nnx_model, fn)
    check_initialized(nnx_model, fn)
    check_plan(plan, fn)
    allow_missing = patterns(allow_missing, "allow_missing")
    allow_unused = patterns(allow_unused, "allow_unused")
    # A to_linen graphdef and params_axes entries describe the model; they are not weights.
    flat = {
        path_str(p): v
        for p, v in flatten_mapping(unboxed(variables)).items()
        if non_weight_leaf(v) is None
    }
    live = _live_variables(nnx_model)
    _check_plan_fits(plan, live)
    new: dict[str, jax.Array] = {}
    source_of: dict[str, str] = {}
    used: set[str] = set()
    mismatched: list[tuple[str, str, str]] = []
    for pair in plan.pairs:
        sources = [flat.get(p) for p in pair.linen]
        if any(s is None for s in sources):
            continue
        used.update(pair.linen)
        target = live[pair.nnx].get_value()
        where = f"{pair.linen[0]} -> {pair.nnx}"
        try:
            value = to_nnx_value(pair, sources)
        except (TypeError, ValueError):
            # A leaf that is no array at all (a string, an object): say so instead of
            # letting jnp.asarray fail with no path.
            odd = next((s for s in sources if not hasattr(s, "shape")), sources[0])
            got = f"a {type(odd).__name__} ({odd!r:.40}), not an array"
            mismatched.append((where, _desc(target.shape, target.dtype), got))
            continue
        source_of[pair.nnx] = pair.linen[0]
        if tuple(value.shape) != tuple(target.shape):
            mismatched.append(
                (where, _desc(target.shape, target.dtype), _desc(value.shape, value.dtype))
            )
        elif value.dtype != target.dtype and not cast:
            mismatched.append(
                (where, _desc(target.shape, target.dtype), _desc(value.shape, value.dtype))
            )
        else:
            # astype only when needed: a typed PRNG key cannot be cast, even to its own dtype.
            new[pair.nnx] = value if value.dtype == target.dtype else value.astype(target.dtype)
    mismatched += shape_mismatches(plan, allow_missing, allow_unused, used)
    missing = [p for p in _required(live) if p not in new and not matches_any(p, allow_missing)]
    unused = [p for p in flat if p not in used and not matches_any(p, allow_unused)]
    collections = sorted({p.split("/", 1)[0] for p in plan.linen_leaves})
    if missing and flat and not set(variables) & set(collections):
        # The commonest slip: variables['params'] passed where the whole dict belongs.
        raise MissingWeightsError(
            f"{fn}(variables=...): the variables have none of the collections the plan reads "
            f"({', '.join(collections)}); their top-level keys are "
            f"{sorted(map(str, variables))[:6]}.\n"
            "Fix: pass the whole variables dict, e.g. {'params': params, 'batch_stats': "
            "batch_stats}, not variables['params'].",
            missing=missing,
            unexpected=unused,
        )
    if missing and unused and not mismatched:
        found = _same_shaped(
            missing,
            unused,
            lambda p: tuple(live[p].get_value().shape),
            lambda p: tuple(getattr(flat[p], "shape", ())) if hasattr(flat[p], "shape") else None,
        )
        if found is not None:
            raise misnamed_error(found, plan.linen_leaves, fn)
    check_problems(
        missing=missing,
        unused=unused,
        mismatched=mismatched,
        hint_unused=unused,
        missing_among=_required(live),
    )
    check_finite(
        ((f"{source_of[p]} -> {p}", v) for p, v in new.items()),
        allow_nonfinite,
        what="leaf/leaves to migrate",
        fn=fn,
    )
    for path, value in new.items():
        var = live[path]
        var.set_value(_placed(value, var.get_value()))
    return nnx_model


@public("linnx.migrate")
def nnx_to_linen(
    nnx_model: nnx.Module,
    plan: Plan,
    *,
    allow_missing: Patterns = (),
    allow_unused: Patterns = (),
    allow_nonfinite: bool | Patterns = False,
) -> dict[str, Any]:
    """Reads an NNX model back into a Linen variables dict, following a plan.

    The result has the Linen layout (collections first, ``layers_0`` names, unstacked or
    stacked as the Linen module expects), so ``linen_module.apply(result, ...)`` accepts it.

    Args:
        nnx_model: the NNX model.
        plan: from :func:`match`.
        allow_missing: Linen paths or patterns that may be absent from the result.
        allow_unused: NNX paths or patterns whose values may be left out.
        allow_nonfinite: accept NaN and infinite values: ``True``, or the Linen paths (or
            glob patterns) where they may appear. By default they are refused.

    Returns:
        A nested ``dict`` of arrays.

    Raises:
        MissingWeightsError: some Linen leaves would be absent.
        UnusedWeightsError: some NNX variables would be dropped.
        NonFiniteValuesError: some values are NaN or infinite.
        MigrationTypeError: an argument has the wrong kind (a model class, no plan...).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import linen as nn, nnx
        >>> from linnx import migrate
        >>> x = jnp.ones((1, 2))
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> variables = migrate.nnx_to_linen(model, migrate.match(nn.Dense(3), model, x))
        >>> bool(jnp.all(nn.Dense(3).apply(variables, x) == model(x)))
        True
    """
    check_nnx(nnx_model, "nnx_to_linen")
    check_initialized(nnx_model, "nnx_to_linen")
    check_plan(plan, "nnx_to_linen")
    allow_missing = patterns(allow_missing, "allow_missing")
    allow_unused = patterns(allow_unused, "allow_unused")
    live = _live_variables(nnx_model)
    _check_plan_fits(plan, live)
    values = {p: v.get_value() for p, v in live.items()}
    out: dict[str, jax.Array] = {}
    for leaf, pairs in plan.pairs_by_linen().items():
        sds = plan.linen_leaves.get(leaf)
        try:
            out[leaf] = to_linen_value(
                leaf, pairs, values.__getitem__, sds.shape if sds is not None else None
            )
        except KeyError:
            continue
    used = {p.nnx for p in plan.pairs if all(leaf in out for leaf in p.linen)}
    missing = [p for p in plan.linen_leaves if p not in out and not matches_any(p, allow_missing)]
    unused = [p for p in _required(live) if p not in used and not matches_any(p, allow_unused)]
    check_problems(
        missing=missing,
        unused=unused,
        msg_missing=MSG_NNX_MISSING_FROM_LINEN,
        msg_unused=MSG_NNX_DROPPED,
    )
    check_finite(out.items(), allow_nonfinite, what="leaf/leaves", fn="nnx_to_linen")
    # The structure of a to_linen module (its graphdef) comes back with the weights.
    return unflatten_mapping(
        {tuple(p.split("/")): v for p, v in {**plan.linen_structure, **out}.items()}
    )
