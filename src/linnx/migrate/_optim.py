"""Optax optimizer state follows the weights: adam's ``mu``/``nu`` move along the same plan.

An optax state is a tree whose parameter-shaped parts (``mu``, ``nu``, ``trace``...) mirror
the parameters, and whose other leaves (``count``) do not. Rather than knowing every optax
state class, leaves are matched by key path: a target leaf whose path *ends* with an NNX
parameter path of the plan is that parameter's slot, and takes the Linen leaf found at the
same prefix followed by the paired Linen parameter path. Every other leaf takes the Linen leaf
at the very same path. Paths are compared as strings (``0/mu/Dense_0/kernel``), so the Linen
side may be a live optax state or the dicts and lists that Orbax restores without a target.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from .._public import public
from ._checks import check_finite, check_nnx, check_plan
from ._errors import MigrationError, MigrationTypeError
from ._paths import matches_any, patterns, unflatten_mapping
from ._plan import Pair, Plan, _desc
from ._transfer import MSG_NNX_DROPPED, _placed, check_problems, to_linen_value, to_nnx_value

__all__ = ["opt_state_to_nnx", "opt_state_to_linen"]

T = TypeVar("T")
Patterns = str | Iterable[str] | None

MSG_OPT_MISSING = (
    "{n} optimizer state leaf/leaves of the NNX side would keep their initial values.\n"
    "  missing ({n}): {paths}\n"
    "{hint}"
    "Fix: use the same optax transformation on both sides, or pass allow_missing={allow!r}."
)
MSG_OPT_UNUSED = (
    "{n} Linen optimizer state leaf/leaves would be dropped.\n"
    "  unexpected ({n}): {paths}\n"
    "Fix: use the same optax transformation on both sides, or pass allow_unused={allow!r}."
)


def _key(k: Any) -> str:
    for attr in ("idx", "key", "name"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _is_var(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def _flat(tree: Any, is_leaf=None) -> tuple[list[tuple[tuple[str, ...], Any]], Any]:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    return [(tuple(_key(k) for k in path), leaf) for path, leaf in leaves], treedef


def _value(leaf: Any) -> Any:
    return leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf


def _suffix_index(pairs: dict[tuple[str, ...], Any], key: tuple[str, ...]):
    for n in sorted({len(k) for k in pairs}, reverse=True):
        if len(key) >= n and key[len(key) - n :] in pairs:
            return key[: len(key) - n], pairs[key[len(key) - n :]]
    return None, None


def _param_pairs(plan: Plan) -> dict[tuple[str, ...], Pair]:
    return {
        tuple(p.nnx.split("/")): p
        for p in plan.pairs
        if all(leaf.split("/", 1)[0] == "params" for leaf in p.linen)
    }


@public("linnx.migrate")
def opt_state_to_nnx(
    linen_opt_state: Any,
    target: T,
    plan: Plan,
    *,
    allow_missing: Patterns = (),
    allow_unused: Patterns = (),
    allow_nonfinite: bool | Patterns = False,
) -> T:
    """Moves a Linen optax state (e.g. adam ``mu``/``nu``) onto the NNX parameter layout.

    Args:
        linen_opt_state: the Linen side's optax state (``TrainState.opt_state``), live or as
            restored by Orbax without a target.
        target: an ``nnx.Optimizer`` (filled in place), or an optax state built for the NNX
            parameters (``tx.init(nnx.state(model, nnx.Param))``; a filled copy is returned).
        plan: from :func:`match`; only its ``params`` pairs matter.
        allow_missing: target leaf paths (``'0/mu/linear/kernel'``) that may keep their values.
        allow_unused: Linen leaf paths that may be dropped.
        allow_nonfinite: accept NaN and infinite values (``True``, or paths/patterns).

    Returns:
        ``target`` (an ``nnx.Optimizer``, filled) or the filled copy of the optax state.

    Raises:
        ShapeMismatchError, MissingWeightsError, UnusedWeightsError, NonFiniteValuesError:
            as for :func:`linen_to_nnx`, with optimizer-state paths.
        MigrationTypeError: ``target`` is a model instead of its optimizer, or no plan.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from flax import linen as nn, nnx
        >>> from linnx import migrate
        >>> x = jnp.ones((1, 2))
        >>> params = nn.Dense(3).init(jax.random.key(0), x)['params']
        >>> tx = optax.adam(1e-3)
        >>> state = tx.init(params)
        >>> state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)[1]
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
        >>> plan = migrate.match(nn.Dense(3), model, x)
        >>> opt = migrate.opt_state_to_nnx(state, opt, plan)
        >>> float(opt.opt_state[0].mu['kernel'][0, 0]) == float(state[0].mu['kernel'][0, 0])
        True
    """
    fn = "opt_state_to_nnx"
    if target is None or (isinstance(target, nnx.Pytree) and not isinstance(target, nnx.Optimizer)):
        check_nnx(target, fn, "target", optimizer=True)
    check_plan(plan, fn)
    tree = target.opt_state if isinstance(target, nnx.Optimizer) else target
    targets, treedef = _flat(tree, is_leaf=_is_var)
    source, _ = _flat(linen_opt_state)
    src = dict(source)
    pairs = _param_pairs(plan)
    allow_missing = patterns(allow_missing, "allow_missing")
    allow_unused = patterns(allow_unused, "allow_unused")
    used: set[tuple[str, ...]] = set()
    new_values: list[Any] = []
    missing, mismatched = [], []
    for key, leaf in targets:
        current = _value(leaf)
        prefix, pair = _suffix_index(pairs, key)
        if pair is not None and tuple(current.shape) != tuple(pair.nnx_shape):
            pair = None  # a same-named leaf that is not this parameter's slot (e.g. a count)
        keys = [prefix + tuple(p.split("/")[1:]) for p in pair.linen] if pair else [key]
        found = [src.get(k) for k in keys]
        name = "/".join(key)
        if any(f is None for f in found):
            new_values.append(None)
            if not matches_any(name, allow_missing):
                missing.append(name)
            continue
        used.update(keys)
        value = to_nnx_value(pair, found) if pair else jnp.asarray(found[0])
        if tuple(value.shape) != tuple(current.shape):
            mismatched.append(
                (name, _desc(current.shape, current.dtype), _desc(value.shape, value.dtype))
            )
            new_values.append(None)
            continue
        new_values.append(value.astype(current.dtype))
    unused = [
        "/".join(k) for k in src if k not in used and not matches_any("/".join(k), allow_unused)
    ]
    check_problems(
        missing=missing,
        unused=unused,
        mismatched=mismatched,
        hint_unused=unused,
        msg_missing=MSG_OPT_MISSING,
        msg_unused=MSG_OPT_UNUSED,
    )
    check_finite(
        (
            ("/".join(key), value)
            for (key, _), value in zip(targets, new_values, strict=True)
            if value is not None
        ),
        allow_nonfinite,
        what="optimizer state leaf/leaves",
        fn=fn,
    )
    if isinstance(target, nnx.Optimizer):
        for (_, leaf), value in zip(targets, new_values, strict=True):
            if value is not None:
                # Placed like the slot it fills, as linen_to_nnx places the weights.
                leaf.set_value(_placed(value, leaf.get_value()))
        return target
    out = []
    for (_, leaf), value in zip(targets, new_values, strict=True):
        if value is None:
            out.append(leaf)
        elif isinstance(leaf, nnx.Variable):
            out.append(leaf.replace(_placed(value, leaf.get_value())))
        else:
            out.append(_placed(value, leaf))
    return jax.tree_util.tree_unflatten(treedef, out)


@public("linnx.migrate")
def opt_state_to_linen(
    source: Any,
    plan: Plan,
    *,
    tx: optax.GradientTransformation | None = None,
) -> Any:
    """Builds the Linen optax state (Linen parameter layout) from an NNX one.

    Args:
        source: an ``nnx.Optimizer``, or an optax state on the NNX parameter layout.
        plan: from :func:`match`.
        tx: the optax transformation; taken from the optimizer when ``source`` is one.

    Returns:
        The optax state that ``tx.init(linen_params)`` would build, holding the NNX values.

    Raises:
        MigrationError: ``tx`` is needed and not given.
        MissingWeightsError: some Linen state leaves have no NNX counterpart.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from flax import linen as nn, nnx
        >>> from linnx import migrate
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
        >>> plan = migrate.match(nn.Dense(3), model, jnp.ones((1, 2)))
        >>> state = migrate.opt_state_to_linen(opt, plan)
        >>> state[0].mu['kernel'].shape
        (2, 3)
    """
    check_plan(plan, "opt_state_to_linen")
    if isinstance(source, nnx.Optimizer):
        tx = tx or source.tx
        source = source.opt_state
    elif isinstance(source, nnx.Pytree):
        check_nnx(source, "opt_state_to_linen", "source", optimizer=True)
    if tx is not None and not callable(getattr(tx, "init", None)):
        raise MigrationTypeError(
            f"opt_state_to_linen(tx={tx!r}): expected an optax GradientTransformation.\n"
            "Fix: pass the one the NNX state was built with, e.g. tx=optax.adam(1e-3)."
        )
    if tx is None:
        raise MigrationError(
            "opt_state_to_linen(source, plan): the optax transformation is needed to rebuild "
            "the Linen state's structure.\nFix: pass tx=optax.adam(...) (the same one the NNX "
            "state was built with), or pass the nnx.Optimizer itself."
        )
    linen_params = unflatten_mapping(
        {
            tuple(p.split("/")[1:]): sds
            for p, sds in plan.linen_leaves.items()
            if p.split("/", 1)[0] == "params"
        }
    )
    template = jax.eval_shape(tx.init, linen_params)
    targets, treedef = _flat(template)
    nnx_src = {k: _value(v) for k, v in _flat(source, is_leaf=_is_var)[0]}
    by_linen = {
        tuple(leaf.split("/")[1:]): (leaf, ps)
        for leaf, ps in plan.pairs_by_linen().items()
        if leaf.split("/", 1)[0] == "params"
    }
    used: set[tuple[str, ...]] = set()
    values: list[Any] = []
    missing: list[str] = []
    for key, leaf in targets:
        prefix, entry = _suffix_index(by_linen, key)
        try:
            if entry is not None and tuple(leaf.shape) == tuple(plan.linen_leaves[entry[0]].shape):
                lpath, ps = entry

                def get(nnx_path: str, prefix=prefix) -> Any:
                    k = prefix + tuple(nnx_path.split("/"))
                    used.add(k)
                    return nnx_src[k]

                values.append(to_linen_value(lpath, ps, get, plan.linen_leaves[lpath].shape))
            else:
                values.append(jnp.asarray(nnx_src[key]))
                used.add(key)
        except KeyError:
            missing.append("/".join(key))
            values.append(None)
    dropped = ["/".join(k) for k in nnx_src if k not in used]
    check_problems(missing=missing, unused=dropped, msg_unused=MSG_NNX_DROPPED)
    return jax.tree_util.tree_unflatten(treedef, values)
