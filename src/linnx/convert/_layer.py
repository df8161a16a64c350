"""Examples whose model is a Flax layer itself (``nn.Dense(features=10)(x)``), not a class.

The migration guide's ``TrainState`` example trains a bare ``nn.Dense``; its NNX side is
``nnx.Linear(784, 10, rngs=nnx.Rngs(0))``. There is no class of the file to rewrite, so the
file is kept as written; what the user needs is that construction (the input size learned from
the example, Linen's arguments renamed by the layer table), the path map of the layer's
variables (their names are the same on both sides), and the proof that both run alike, which
:func:`linnx.convert.convert_source` gives as it does for classes.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from .._public import public
from ._classes import linen_fields
from ._errors import ConvertError
from ._rules import IN, nnx_function, nnx_kwargs, rule_for
from ._trace import Trace, iter_vars, parse_example

__all__ = ["ConvertedLayer", "is_layer_root", "convert_layer"]


@public("linnx.convert")
@dataclass(frozen=True)
class ConvertedLayer:
    """An example whose model is a Flax layer: its Linen construction and the NNX one.

    There is no class to rewrite; build the model as ``nnx`` says (``rngs`` seeded as you
    like) and load its weights with the path map.

    Example:
        >>> from linnx import convert
        >>> src = 'import jax.numpy as jnp\\nsample_x = jnp.ones((1, 784))\\n'
        >>> result = convert.convert_source(src, ['nn.Dense(features=10)(sample_x)'])
        >>> (layer,) = result.layers
        >>> layer.linen, layer.nnx
        ('nn.Dense(features=10)', 'nnx.Linear(784, 10, rngs=nnx.Rngs(0))')
        >>> result.ok, result.path_map, result.code == src
        (True, {'bias': 'bias', 'kernel': 'kernel'}, True)
    """

    example: str
    linen: str
    nnx: str

    def __str__(self) -> str:
        return f"{self.linen} -> {self.nnx}"


def is_layer_root(t: Trace) -> bool:
    """Whether the example's model is a Flax layer of the layer table."""
    return rule_for(t.instances[()].cls) is not None


def _in_size(t: Trace) -> Any:
    root = t.instances[()]
    a = root.args[0] if root.args else next(iter(root.kwargs.values()), None)
    if a is None or not getattr(a, "shape", None):
        raise ConvertError(
            f"--example {t.example.text!r}: the layer's first input has no last axis to take "
            "its input size from.\nFix: call the layer on an array, e.g. (jnp.ones((1, 784)))."
        )
    axis = getattr(root.module, "axis", -1)
    if root.cls.__name__ == "DenseGeneral" and isinstance(axis, tuple | list):
        return tuple(int(a.shape[ax]) for ax in axis)
    return int(a.shape[axis if isinstance(axis, int) else -1])


class _ToNNX(ast.NodeTransformer):
    """``nn.relu`` -> ``nnx.relu``, ``nn.initializers.x`` -> ``nnx.initializers.x``."""

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        parts: list[str] = []
        cur: ast.expr = node
        while isinstance(cur, ast.Attribute):
            parts.insert(0, cur.attr)
            cur = cur.value
        if not (isinstance(cur, ast.Name) and cur.id == "nn"):
            return self.generic_visit(node)
        if parts[0] == "initializers" or (len(parts) == 1 and nnx_function(parts[0])):
            return ast.parse("nnx." + ".".join(parts), mode="eval").body
        return node


def convert_layer(t: Trace) -> tuple[ConvertedLayer, dict[str, str]]:
    """The NNX construction of the example's layer, and its path map (the same names)."""
    root = t.instances[()]
    rule = rule_for(root.cls)
    assert rule is not None
    ctor, _, _, _ = parse_example(t.example.text)
    fields = [f.name for f in linen_fields(root.cls)]
    given: dict[str, str] = {}
    for i, node in enumerate(ctor.args):
        if i < len(fields):
            given[fields[i]] = ast.unparse(_ToNNX().visit(node))
    for k in ctor.keywords:
        if k.arg is not None and k.arg not in ("name", "parent"):
            given[k.arg] = ast.unparse(_ToNNX().visit(k.value))
    allowed = nnx_kwargs(rule.nnx)
    named: dict[str, str] = {}
    for f, text in given.items():
        nkw = rule.rename.get(f, f)
        if nkw not in allowed:
            raise ConvertError(
                f"--example {t.example.text!r}: nn.{rule.linen}({f}=...) has no nnx."
                f"{rule.nnx} argument.\nFix: leave {f}= out of the example's construction, "
                f"or build the NNX layer by hand."
            )
        named[nkw] = text
    parts: list[str] = []
    for slot in rule.positional:
        if slot == IN:
            parts.append(repr(_in_size(t)))
            continue
        nkw = rule.rename.get(slot, slot)
        if nkw not in named:
            break
        parts.append(named.pop(nkw))
    parts += [f"{k}={v}" for k, v in named.items()]
    parts += [f"{k}={v}" for k, v in rule.extra.items() if k not in named]
    parts.append("rngs=nnx.Rngs(0)")
    layer = ConvertedLayer(
        t.example.text, t.example.ctor_src, f"nnx.{rule.nnx}({', '.join(parts)})"
    )
    # The layer table keeps every variable name (kernel, bias, scale, mean, var, embedding,
    # query/key/value/out): Linen's path is the NNX path.
    paths = sorted("/".join(rest) for (_, *rest), _ in iter_vars(t.variables))
    return layer, {p: p for p in paths}
