"""Sharding annotations: Linen's partitioning metadata becomes NNX variable metadata.

Linen annotates a parameter by wrapping its initializer: ``nn.with_partitioning(init,
('data', 'model'))`` (mesh axes) or ``nn.with_logical_partitioning(init, ('embed', 'mlp'),
rules=...)`` (logical axes, mapped to the mesh by ``nn.logical_axis_rules``); the initialized
value is a box (``nn.Partitioned``) that ``nn.get_partition_spec`` reads. T5X/flaxformer code
instead calls ``flax.linen.partitioning.param_with_axes(name, init, shape, axes=(...))``, which
makes a plain parameter and records the axes in a ``params_axes`` collection.

NNX keeps the axes on the variable itself: ``nnx.with_partitioning(init, names)`` (or the
``out_sharding=`` metadata of ``nnx.Param``) and ``sharding_rules=`` for rules that travel with
the variable; ``nnx.get_partition_spec`` / ``nnx.get_named_sharding`` read them, under
``nnx.logical_axis_rules`` (the same context manager as ``nn.logical_axis_rules``) for logical
names. So:

- ``nn.with_partitioning(f, names, mesh)`` -> ``nnx.with_partitioning(f, names, mesh)``;
- ``nn.with_logical_partitioning(f, names, mesh, rules)`` -> ``nnx.with_partitioning(f, names,
  mesh, sharding_rules=rules)``;
- ``self.param(name, <one of those>(f, names), shape)`` and ``param_with_axes(name, f, shape,
  axes=names)`` -> ``nnx.Param(f(rngs.params(), shape), out_sharding=names)``; the
  ``params_axes`` collection has no NNX counterpart (the axes live on the parameter).

Today's NNX shards a variable when it is created (``nnx.use_eager_sharding``, on by default),
so the converted model is built under a mesh (``jax.set_mesh``) as NNX models are; the
converter's own verification builds it with eager sharding off (one device, no mesh).
"""

from __future__ import annotations

from typing import Any

import libcst as cst

from ._cstutil import code

__all__ = [
    "annotation_call",
    "unwrap_annotation",
    "axes_call",
    "is_axes_leaf",
]


def _targets() -> dict[int, str]:
    from flax import linen as nn
    from flax.linen import partitioning

    out = {
        id(nn.with_partitioning): "with_partitioning",
        id(nn.with_logical_partitioning): "with_logical_partitioning",
        id(partitioning.param_with_axes): "param_with_axes",
        id(partitioning.variable_with_axes): "variable_with_axes",
    }
    return out


def _kind(conv: Any, func: cst.BaseExpression) -> str | None:
    value = conv.resolve(func)
    return None if value is None else _targets().get(id(value))


#: The parameters of Linen's annotation functions, in order (what NNX calls each in brackets).
_PARAMS = {
    "with_partitioning": ("fn", "names", "mesh"),
    "with_logical_partitioning": ("fn", "names", "mesh", "rules"),
}
_NNX_META = {"mesh": "mesh", "rules": "sharding_rules"}


def _bind(conv: Any, call: cst.Call, kind: str) -> dict[str, cst.BaseExpression]:
    params = _PARAMS[kind]
    out: dict[str, cst.BaseExpression] = {}
    for i, a in enumerate(call.args):
        if a.star:
            raise conv.fail(f"nn.{kind}(...) with *args or **kwargs", call)
        name = (
            a.keyword.value if a.keyword is not None else (params[i] if i < len(params) else None)
        )
        if name not in params or name in out:
            raise conv.fail(f"nn.{kind}(...): unexpected argument {code(a)!r}", call)
        out[name] = a.value
    if "fn" not in out or "names" not in out:
        raise conv.fail(f"nn.{kind}(...) without an initializer and axis names", call)
    return out


def annotation_call(conv: Any, original: cst.Call, updated: cst.Call) -> cst.Call | None:
    """``nn.with_(logical_)partitioning(f, names, ...)`` as ``nnx.with_partitioning(...)``
    (the arguments taken from ``updated``, already converted), or None for another call."""
    kind = _kind(conv, original.func)
    if kind not in _PARAMS:
        return None
    bound = _bind(conv, updated, kind)
    parts = [code(bound["fn"]), code(bound["names"])]
    for k, v in bound.items():
        if k in _NNX_META:
            parts.append(f"{_NNX_META[k]}={code(v)}")
    return cst.parse_expression(f"nnx.with_partitioning({', '.join(parts)})")  # type: ignore[return-value]


def unwrap_annotation(
    conv: Any, init: cst.BaseExpression
) -> tuple[cst.BaseExpression, list[tuple[str, cst.BaseExpression]]] | None:
    """For a ``self.param`` initializer written as an annotation call: the wrapped initializer
    and the NNX metadata (``out_sharding=``...), so that the parameter reads
    ``nnx.Param(f(rngs.params(), shape), out_sharding=names)``; None for another initializer."""
    if not isinstance(init, cst.Call):
        return None
    kind = _kind(conv, init.func)
    if kind not in _PARAMS:
        return None
    bound = _bind(conv, init, kind)
    meta = [("out_sharding", bound["names"])]
    meta += [(_NNX_META[k], v) for k, v in bound.items() if k in _NNX_META]
    return bound["fn"], meta


def axes_call(conv: Any, node: cst.Call) -> tuple[str, list[cst.Arg], list[tuple[str, Any]]] | None:
    """``param_with_axes(name, f, *args, axes=names)`` (and ``variable_with_axes``) as the
    ``self.param``/``self.variable`` call it makes: ``(kind, positional args, metadata)``;
    None for another call."""
    kind = _kind(conv, node.func)
    if kind not in ("param_with_axes", "variable_with_axes"):
        return None
    args: list[cst.Arg] = []
    meta: list[tuple[str, Any]] = []
    for a in node.args:
        kw = a.keyword.value if a.keyword is not None else None
        if kw == "axes":
            meta.append(("out_sharding", a.value))
        elif kw == "fallback":
            continue  # how a missing rule maps: NNX leaves an unmatched name as it is
        elif kw is not None or a.star:
            raise conv.fail(f"{kind}(..., {code(a).rstrip(', ')}) is not converted", node)
        else:
            args.append(a)
    return ("param" if kind == "param_with_axes" else "variable"), args, meta


def is_axes_call(conv: Any, node: cst.Call) -> bool:
    """Whether the call is Flax's ``param_with_axes``/``variable_with_axes``."""
    return _kind(conv, node.func) in ("param_with_axes", "variable_with_axes")


def is_axes_leaf(leaf: Any) -> bool:
    """A ``params_axes`` entry of the Linen variables (axis names, no weight)."""
    from flax.linen.partitioning import AxisMetadata

    return isinstance(leaf, AxisMetadata)
