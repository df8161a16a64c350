"""What a streamed migration moves, checked on the saved tree's metadata before any read.

The saved Linen tree is seen through the plan (:func:`_source_index`), every pair is checked
for shape, dtype, missing and unused leaves on metadata alone (:func:`_check`: a checkpoint of
billions of parameters is refused in milliseconds), the pairs are packed into groups of about
``group_bytes`` (:func:`_groups`), and on a mesh each side gets the sharding that keeps a
layout change local to each shard (:func:`_nnx_spec`, :func:`_linen_spec`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ._errors import CheckpointError
from ._paths import matches_any
from ._plan import Pair, Plan, _desc
from ._record import EXCLUDED_NNX_TYPES
from ._transfer import check_problems, shape_mismatches

_NOT_VARIABLES = ("step", "opt_state", "apply_fn", "tx")


# -- the saved tree, seen through the plan ----------------------------------------------------


def _source_index(tree: Mapping[str, Any], wanted: set[str]) -> dict[str, tuple[str, ...]]:
    """Linen path (as the plan spells it) -> key path in the saved tree, for every array.

    A box is saved with a trailing ``value`` level, which is folded away unless the plan
    reads ``.../value`` itself (a parameter that is really called ``value``).
    """
    out: dict[str, tuple[str, ...]] = {}
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        keys = tuple(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        if keys[0] in _NOT_VARIABLES:
            continue
        name = "/".join(keys)
        if keys[-1] == "value" and name not in wanted:
            parent = tree
            for k in keys[:-1]:
                parent = parent[k]
            if isinstance(parent, Mapping) and len(parent) == 1:
                name = "/".join(keys[:-1])
        out[name] = keys
    return out


def _nbytes(meta: Any) -> int:
    return int(np.prod(meta.shape, dtype=np.int64)) * np.dtype(meta.dtype).itemsize


def _groups(pairs: Sequence[Pair], size_of: Callable[[str], int], budget: int) -> list[list[Pair]]:
    """Pairs in plan order, packed into groups; pairs sharing a Linen leaf stay together."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for pair in pairs:
        for leaf in pair.linen[1:]:
            parent[find(leaf)] = find(pair.linen[0])
    components: dict[str, list[Pair]] = {}
    for pair in pairs:
        components.setdefault(find(pair.linen[0]), []).append(pair)
    groups: list[list[Pair]] = []
    current: list[Pair] = []
    current_bytes = 0
    for members in components.values():
        nbytes = sum(size_of(leaf) for leaf in {leaf for p in members for leaf in p.linen})
        if current and current_bytes + nbytes > budget:
            groups.append(current)
            current, current_bytes = [], 0
        current.extend(members)
        current_bytes += nbytes
    if current:
        groups.append(current)
    return groups


# -- shardings ---------------------------------------------------------------------------------


def _nnx_spec(var: nnx.Variable, ndim: int) -> jax.sharding.PartitionSpec:
    spec = nnx.spmd.get_var_pspec(var)
    if spec is None:
        return jax.sharding.PartitionSpec()
    return spec


def _linen_spec(pair: Pair, spec: jax.sharding.PartitionSpec, ndim: int) -> Any:
    """The sharding of a source leaf that makes ``pair``'s layout change local to each shard."""
    entries = list(spec) + [None] * (len(pair.nnx_shape) - len(spec))
    lay = pair.layout
    if lay.kind == "stack":
        del entries[lay._given("nnx_axis")]
    elif lay.kind == "unstack":
        entries.insert(lay._given("linen_axis"), None)
    elif lay.kind == "moveaxis":
        entries.insert(lay._given("linen_axis"), entries.pop(lay._given("nnx_axis")))
    return jax.sharding.PartitionSpec(*entries[:ndim])


def _check_mesh_axes(mesh: jax.sharding.Mesh, specs: Mapping[str, Any]) -> None:
    bad = []
    for path, spec in specs.items():
        for entry in spec:
            for axis in entry if isinstance(entry, tuple) else (entry,):
                if axis is not None and axis not in mesh.axis_names:
                    bad.append(f"{path} asks for mesh axis {axis!r}")
    if bad:
        raise CheckpointError(
            f"mesh=...: {len(bad)} NNX variable(s) are annotated with axes the mesh lacks "
            f"(it has {', '.join(mesh.axis_names)}):\n  " + "\n  ".join(bad[:10]) + "\n"
            "Fix: name the mesh axes as the annotations do, or resolve logical names with "
            "nn.logical_axis_rules / the variables' sharding_rules."
        )


def _check(
    plan: Plan,
    live: Mapping[str, tuple[Any, nnx.Variable]],
    metas: Mapping[str, Any],
    allow_missing: Sequence[str],
    allow_unused: Sequence[str],
    cast: bool,
    fn: str,
) -> list[Pair]:
    """The pairs to move, after checking shapes, dtypes, missing and unused on metadata."""
    strangers = sorted({p.nnx for p in plan.pairs if p.nnx not in live})
    if strangers:
        raise CheckpointError(
            f"{fn}: the plan names NNX variables that nnx_model lacks: "
            f"{', '.join(strangers[:10])}.\nFix: build the plan with match(linen_module, "
            "nnx_model, ...) for this NNX model."
        )
    used: set[str]
    pairs, used, mismatched = [], set(), []
    for pair in plan.pairs:
        if any(leaf not in metas for leaf in pair.linen):
            continue
        used.update(pair.linen)
        target = live[pair.nnx][1].get_value()
        value = _layout_shape(pair, [metas[leaf] for leaf in pair.linen])
        where = f"{pair.linen[0]} -> {pair.nnx}"
        t_shape, t_dtype = tuple(target.shape), _dtype_of(target)
        if tuple(value.shape) != t_shape or (value.dtype != t_dtype and not cast):
            mismatched.append((where, _desc(t_shape, t_dtype), _desc(value.shape, value.dtype)))
            continue
        pairs.append(pair)
    mismatched += shape_mismatches(plan, allow_missing, allow_unused, used)
    filled = {p.nnx for p in pairs}
    missing = [
        name
        for name, (_, var) in live.items()
        if not isinstance(var, EXCLUDED_NNX_TYPES)
        and name not in filled
        and not matches_any(name, allow_missing)
    ]
    unused = [p for p in metas if p not in used and not matches_any(p, allow_unused)]
    required = [n for n, (_, var) in live.items() if not isinstance(var, EXCLUDED_NNX_TYPES)]
    check_problems(
        missing=missing,
        unused=unused,
        mismatched=mismatched,
        hint_unused=unused,
        missing_among=required,
    )
    return pairs


def _layout_shape(pair: Pair, metas: Sequence[Any]) -> jax.ShapeDtypeStruct:
    """The shape and dtype ``to_nnx_value`` gives for sources of these shapes (no tracing:
    a plan of a scanned model has hundreds of pairs). Unequal sources to stack give the
    first one's shape with an impossible axis, which no variable has."""
    shape, dtype = tuple(metas[0].shape), jnp.dtype(metas[0].dtype)
    lay = pair.layout
    if lay.kind == "stack":
        same = all(tuple(m.shape) == shape for m in metas)
        shape = (*shape[: lay.nnx_axis], len(metas) if same else -1, *shape[lay.nnx_axis :])
    elif lay.kind == "unstack":
        shape = shape[: lay._given("linen_axis")] + shape[lay._given("linen_axis") + 1 :]
    elif lay.kind == "moveaxis":
        moved = list(shape)
        moved.insert(lay._given("nnx_axis"), moved.pop(lay._given("linen_axis")))
        shape = tuple(moved)
    return jax.ShapeDtypeStruct(shape, dtype)


def _dtype_of(value: Any) -> Any:
    return jnp.dtype(value.dtype)
