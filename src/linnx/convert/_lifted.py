"""Linen's lifted transforms of submodules: ``nn.scan``, ``nn.vmap``, ``nn.remat``.

A compact call site such as ``nn.scan(Block, variable_axes={'params': 0}, ...)(f)(x, None)``
(or ``ScanBlock = nn.scan(Block, ...)`` first, then ``ScanBlock(f)(x, None)``) becomes the
migration guide's NNX form:

* ``__init__`` builds the layer stack with ``nnx.split_rngs(splits=N)`` + ``nnx.vmap`` (one
  copy of the block per layer, its variables stacked on axis 0, where Linen stacks them, so
  the weights move as they are), or a single block when Linen broadcasts its variables
  (``variable_broadcast='params'``, ``variable_axes={'params': None}``);
* the call runs the block's ``__call__`` under ``nnx.scan`` / ``nnx.vmap`` / ``nnx.remat`` with
  the block first: ``nnx.scan(Block.__call__, in_axes=(0, nnx.Carry, 0), out_axes=(nnx.Carry,
  0))(self.blocks, x, None)``. Linen's ``in_axes`` (``nn.broadcast`` -> ``None``), ``out_axes``,
  ``reverse``, ``unroll`` and remat's ``static_argnums`` (which count ``self`` as 0, as the
  block argument is 0 here), ``policy`` and ``prevent_cse`` carry over; flags that became
  ``model.train()``/``model.eval()`` leave the call and its axes.

``nn.remat_scan`` and ``nn.jit`` are recognised but not converted: the class they lift stays
Linen and the call site wraps it with ``linnx.ToNNX`` (with a TODO naming the transform).
Options that have no faithful NNX counterpart here (``variable_carry``, stacking on another
axis than 0, ``data_transform``...) raise :class:`Unsupported` with the reason.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import libcst as cst

from ._classes import Site
from ._cstutil import bracket_pairs, code, dotted, names_in, split_args, unique

__all__ = [
    "Lift",
    "LiftChain",
    "site_lift",
    "allowed_funcs",
    "wrapped_targets",
    "creation",
    "call_replacer",
    "base_name",
    "is_stacked",
    "carry_size",
]

#: Transforms that convert, and the ones that are only recognised (their target is wrapped).
CONVERTED = ("scan", "vmap", "remat", "checkpoint")
WRAPPED = ("remat_scan", "jit")

_BROADCAST = object()  # nn.broadcast in in_axes


@dataclass
class Lift:
    """One transform of a chain: ``nn.scan(<inner>, **kwargs)``."""

    kind: str
    call: cst.Call
    kwargs: dict[str, cst.BaseExpression]


@dataclass
class LiftChain:
    """The transforms around one module class, outermost first."""

    lifts: list[Lift]
    target: cst.BaseExpression  # the module class expression (``Block``, ``self.block_cls``)
    expr: cst.BaseExpression  # the whole lifted class, local names substituted
    names: set[str] = field(default_factory=set)  # local names bound to the transforms

    @property
    def wrapped(self) -> bool:
        return any(lf.kind in WRAPPED for lf in self.lifts)

    @property
    def stacking(self) -> Lift | None:
        return next((lf for lf in self.lifts if lf.kind in ("scan", "vmap")), None)


def _kind(conv: Any, func: cst.BaseExpression) -> str | None:
    from flax import linen as nn

    value = conv.resolve(func) if dotted(func) else None
    if value is None:
        return None
    for name in (*CONVERTED, *WRAPPED):
        if value is getattr(nn, name, None):
            return name
    return None


def _chain(conv: Any, expr: cst.BaseExpression, assigns: dict[str, cst.Call]) -> LiftChain | None:
    lifts: list[Lift] = []
    names: set[str] = set()

    def resolved(e: cst.BaseExpression) -> cst.BaseExpression:
        if isinstance(e, cst.Name) and e.value in assigns and _kind(conv, assigns[e.value].func):
            return resolved(assigns[e.value])
        if isinstance(e, cst.Call) and _kind(conv, e.func) and e.args:
            first = e.args[0].with_changes(value=resolved(e.args[0].value))
            return e.with_changes(args=[first, *e.args[1:]])
        return e

    whole = resolved(expr)
    while True:
        if isinstance(expr, cst.Name) and expr.value in assigns:
            if _kind(conv, assigns[expr.value].func) is None:
                break
            names.add(expr.value)
            expr = assigns[expr.value]
            continue
        if not isinstance(expr, cst.Call):
            break
        kind = _kind(conv, expr.func)
        if kind is None:
            break
        if not expr.args or expr.args[0].keyword is not None or expr.args[0].star:
            raise conv.fail(f"nn.{kind}(...) without the module class as its first argument", expr)
        kwargs: dict[str, cst.BaseExpression] = {}
        for a in expr.args[1:]:
            if a.keyword is None or a.star:
                raise conv.fail(
                    f"nn.{kind}(...) with positional options (write them as keywords)", expr
                )
            kwargs[a.keyword.value] = a.value
        lifts.append(Lift(kind, expr, kwargs))
        expr = expr.args[0].value
    if not lifts:
        return None
    return LiftChain(lifts, expr, whole, names)


def _value(conv: Any, node: cst.BaseExpression, what: str) -> Any:
    """A literal option value (``nn.broadcast`` allowed in tuples)."""
    from flax import linen as nn

    if dotted(node) and conv.resolve(node) is nn.broadcast:
        return _BROADCAST
    if isinstance(node, cst.Tuple | cst.List):
        return tuple(_value(conv, e.value, what) for e in node.elements)
    try:
        return ast.literal_eval(code(node))
    except (ValueError, SyntaxError):
        raise conv.fail(f"{what}={code(node)} is not a literal value", node) from None


def _names(value: Any) -> tuple[str, ...]:
    """A collection filter as names: ``'params'``, ``['params']``, ``False``/``None``."""
    if value in (False, None):
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


# -- what the class converter calls -------------------------------------------------------


def site_lift(conv: Any, ctor: cst.Call) -> LiftChain | None:
    """The transform chain of a construction ``<lifted class>(...)``; None when plain.

    Checks every option and raises :class:`Unsupported` for what does not convert."""
    chain = _chain(conv, ctor.func, getattr(conv, "lift_assigns", {}))
    if chain is None or chain.wrapped:
        return chain
    kinds = [lf.kind for lf in chain.lifts]
    if sum(k in ("scan", "vmap") for k in kinds) > 1:
        raise conv.fail(f"nested transforms {kinds}: only one nn.scan/nn.vmap per module", ctor)
    for lf in chain.lifts:
        _check(conv, lf)
    return chain


_SCAN_OPTS = {
    "variable_axes",
    "variable_broadcast",
    "variable_carry",
    "split_rngs",
    "in_axes",
    "out_axes",
    "length",
    "reverse",
    "unroll",
}
_VMAP_OPTS = {"variable_axes", "split_rngs", "in_axes", "out_axes", "axis_size", "axis_name"}
_REMAT_OPTS = {"prevent_cse", "static_argnums", "policy", "concrete", "variables", "rngs"}


def _check(conv: Any, lf: Lift) -> None:
    allowed = {"scan": _SCAN_OPTS, "vmap": _VMAP_OPTS}.get(lf.kind, _REMAT_OPTS)
    for k, v in lf.kwargs.items():
        if k not in allowed:
            raise conv.fail(f"nn.{lf.kind}({k}=...) is not converted yet", v)
    if lf.kind in ("remat", "checkpoint"):
        for k, default in (("concrete", False), ("variables", True), ("rngs", True)):
            if k in lf.kwargs and _value(conv, lf.kwargs[k], k) != default:
                raise conv.fail(
                    f"nn.{lf.kind}({k}={code(lf.kwargs[k])}) is not converted yet", lf.kwargs[k]
                )
        return
    axes = (
        _value(conv, lf.kwargs["variable_axes"], "variable_axes")
        if ("variable_axes" in lf.kwargs)
        else {}
    )
    if not isinstance(axes, dict) or not all(isinstance(k, str) for k in axes):
        raise conv.fail("variable_axes is not a dict of collection names", lf.call)
    bad = {k: v for k, v in axes.items() if v not in (0, None)}
    if bad:
        raise conv.fail(
            f"nn.{lf.kind}(variable_axes={bad}): stacking on an axis other than 0 is not "
            "converted yet (nnx.vmap stacks every variable of the block on one axis)",
            lf.call,
        )
    stacked = [k for k, v in axes.items() if v == 0]
    shared = [k for k, v in axes.items() if v is None]
    if "variable_broadcast" in lf.kwargs:
        shared += _names(_value(conv, lf.kwargs["variable_broadcast"], "variable_broadcast"))
    if "variable_carry" in lf.kwargs and _names(
        _value(conv, lf.kwargs["variable_carry"], "variable_carry")
    ):
        raise conv.fail(
            "nn.scan(variable_carry=...) (variables carried from one step to the next) is not "
            "converted yet",
            lf.call,
        )
    if stacked and shared:
        raise conv.fail(
            f"nn.{lf.kind} stacks {stacked} and broadcasts {shared}: a block whose variables "
            "are partly stacked and partly shared is not converted yet",
            lf.call,
        )
    split = (
        _value(conv, lf.kwargs["split_rngs"], "split_rngs") if ("split_rngs" in lf.kwargs) else {}
    )
    if not isinstance(split, dict):
        raise conv.fail("split_rngs is not a dict of stream names", lf.call)
    if stacked and not split.get("params", False):
        raise conv.fail(
            f"nn.{lf.kind} stacks {stacked} without split_rngs={{'params': True}} (every layer "
            "starts from the same parameters): not converted yet",
            lf.call,
        )


def is_stacked(conv: Any, chain: LiftChain) -> bool:
    lf = chain.stacking
    if lf is None or "variable_axes" not in lf.kwargs:
        return False
    axes = _value(conv, lf.kwargs["variable_axes"], "variable_axes")
    return any(v == 0 for v in axes.values())


def _snake(name: str) -> str:
    """``Encoder1DBlock`` -> 'encoder1d_block', ``MLPBlock`` -> 'mlp_block'."""
    return re.sub(r"(?<=[A-Za-z0-9])(?=[A-Z][a-z])", "_", name).lower()


def base_name(conv: Any, chain: LiftChain, child_cls: type, base: str) -> str:
    """``blocks`` for a stack of ``Block``; the plain name for one block (remat, or a
    scan that broadcasts the block's variables)."""
    if not chain.wrapped and is_stacked(conv, chain):
        b = _snake(child_cls.__name__)
        return b + ("es" if b.endswith("s") else "s")
    return base


def creation(conv: Any, site: Site, node: cst.Call, ctor_text: str, env, ind: int) -> str:
    """Writes the stacked creation into ``__init__`` (decorated ``create_<block>``) and
    returns the expression assigned to the attribute."""
    chain: LiftChain = site.lift
    lf = chain.stacking
    if lf is None or not is_stacked(conv, chain):
        return ctor_text
    if site.is_list:
        raise conv.fail(f"nn.{lf.kind} of stacked layers created in a loop", node)
    key = "length" if lf.kind == "scan" else "axis_size"
    n = None
    if key in lf.kwargs:
        n = conv.init_expr(lf.kwargs[key], env, conv.method_locals)
    if n is None:
        n = _length_param(conv, site, node, lf, key)
    fn = unique(f"create_{_snake(site.child_cls.__name__)}", conv.taken)
    conv.taken.add(fn)
    if conv.init_lines or conv.fields:
        conv.emit(ind, "")
    conv.emit(ind, f"@nnx.split_rngs(splits={n})")
    conv.emit(ind, "@nnx.vmap(in_axes=(0,), out_axes=0)")
    conv.emit(ind, f"def {fn}(rngs: nnx.Rngs):")
    conv.emit(ind + 1, f"return {ctor_text}")
    conv.emit(ind, "")
    return f"{fn}(rngs)"


def _length_param(conv: Any, site: Site, node: cst.Call, lf: Lift, key: str) -> str:
    """The number of layers as an ``__init__`` argument, read from the stacked variables."""

    def resolve(inst: Any) -> int | None:
        for c in site.calls_in(inst):
            for path, other in inst.tree.items():
                if path[: len(c.path)] != c.path:
                    continue
                for leaf in other.own_vars.values():
                    if getattr(leaf, "shape", ()):
                        return int(leaf.shape[0])
        return None

    if all(resolve(inst) is None for inst in conv.instances):
        raise conv.fail(
            f"nn.{lf.kind} without {key}= over a module with no stacked variables: the number "
            f"of layers cannot be determined; pass {key}= to nn.{lf.kind}",
            node,
        )
    return conv.add_size_param(f"{site.attr}_{key}", resolve, site.line)


def carry_size(conv: Any, value: cst.BaseExpression, tnodes: list, env) -> dict[str, Any]:
    """``x, _ = <scan call>(x, ...)``: the carry that comes out has the size of the one that
    went in (scan's carry keeps its shape), so the next layer's input size stays known."""
    if not isinstance(value, cst.Call) or not value.args:
        return {}
    site = conv.site_of.get(value)
    lf = site.lift.stacking if site is not None and site.lift is not None else None
    if lf is None or lf.kind != "scan" or len(tnodes) != 1:
        return {}
    target = tnodes[0]
    if not isinstance(target, cst.Tuple | cst.List) or len(target.elements) != 2:
        return {}
    first = target.elements[0].value
    if not isinstance(first, cst.Name):
        return {}
    return {first.value: conv.size_of(value.args[0].value, env)}


def call_replacer(conv: Any, site: Site, node: cst.Call, target: str, drop: Iterable[int]):
    """The replacement of the lifted call: the block's ``__call__`` under the NNX
    transforms, the block first."""
    chain: LiftChain = site.lift
    drop = frozenset(drop)
    kept_pos = [i for i, a in enumerate(node.args) if i not in drop]
    for i in kept_pos:
        a = node.args[i]
        if a.keyword is not None or a.star:
            raise conv.fail("keyword or starred arguments to a lifted module call", node)
    fn = f"{code(conv.to_nnx_refs(chain.target))}.__call__"
    stacked = is_stacked(conv, chain)
    closed = _closed(conv, chain, node, kept_pos)
    for lf in reversed(chain.lifts):
        if lf.kind == "scan" and closed:
            fn = _closure(conv, site, node, fn, kept_pos, closed)
            fn = _wrap(conv, lf, fn, node, kept_pos, drop | closed, stacked)
        else:
            fn = _wrap(conv, lf, fn, node, kept_pos, drop, stacked)

    try:
        col = conv.positions[node].start.column
    except KeyError:
        col = 8

    def replace(updated: cst.Call) -> cst.BaseExpression:
        args = [code(a.value) for i, a in enumerate(updated.args) if i not in drop | closed]
        call = f"({', '.join([target or code(updated.func), *args])})"
        func = fn
        for i in closed:  # the broadcast arguments, as the call writes them now
            func = func.replace(f"\0{i}\0", code(updated.args[i].value))
        text = func + call
        if col + len(text) > 99:
            text = _fmt(func, col, 0, len(call)) + call
        return cst.parse_expression(text)

    return replace


def _closed(conv, chain: LiftChain, node: cst.Call, kept_pos: list[int]) -> frozenset[int]:
    """The arguments a scan broadcasts (``nn.broadcast``): Linen hands them to every step as
    they are (a Python flag stays a Python value), so the NNX call closes over them."""
    lf = chain.stacking
    if lf is None or lf.kind != "scan" or "in_axes" not in lf.kwargs:
        return frozenset()
    in_axes = _value(conv, lf.kwargs["in_axes"], "in_axes")
    n_x = len(node.args) - 1
    per = list(in_axes) if isinstance(in_axes, tuple) else [in_axes] * n_x
    if len(per) != n_x:
        raise conv.fail(
            f"nn.scan(in_axes={in_axes!r}) gives {len(per)} axes for {n_x} arguments", node
        )
    closed = frozenset(i for i in kept_pos[1:] if per[i - 1] is _BROADCAST)
    if closed and chain.lifts[0] is not lf:
        raise conv.fail("nn.broadcast arguments of an nn.scan under another transform", node)
    return closed


def _closure(conv, site: Site, node: cst.Call, fn: str, kept_pos, closed) -> str:
    """``lambda block, x: fn(block, x, <broadcast arg>)`` (the argument filled in later)."""
    plan = conv.ctx.plans.get(site.child_cls.__name__) if site.kind == "user" else None
    params = list(plan.call_params) if plan is not None else []
    used: set[str] = set(site.lift.names)  # those go from the method when unused
    for i in closed:
        used |= names_in(node.args[i].value)

    def free(name: str) -> str:
        while name in used:
            name += "_"
        used.add(name)
        return name

    block = next((n for n in ("block", "layer", "module") if n not in used), None) or free("block")
    used.add(block)
    names = {
        i: free(params[i] if i < len(params) else f"arg{i}") for i in kept_pos if i not in closed
    }
    body = [block, *(f"\0{i}\0" if i in closed else names[i] for i in kept_pos)]
    return f"lambda {', '.join([block, *names.values()])}: {fn}({', '.join(body)})"


def _fmt(text: str, col: int, depth: int, tail: int = 1) -> str:
    """A call written one argument a line where it is too long, as a formatter writes it
    (LibCST adds the block's own indentation to each continuation line)."""
    if col + len(text) + tail <= 99 or "(" not in text or not text.endswith(")"):
        return text
    start = text.index("(")
    end = bracket_pairs(text).get(start, len(text) - 1)
    if end != len(text) - 1:  # f(a)(b): split f's arguments, keep (b) after them
        rest = text[end + 1 :]
        return _fmt(text[: end + 1], col, depth, tail + len(rest)) + rest
    head, inner = text[:start], text[start + 1 : -1]
    pad = "    " * (depth + 1)
    args = [_fmt(a, col + 4, depth + 1) for a in split_args(inner)]
    return head + "(\n" + "".join(f"{pad}{a},\n" for a in args) + "    " * depth + ")"


def _wrap(conv, lf: Lift, fn: str, node, kept_pos, drop, stacked: bool) -> str:
    opts: list[str] = []
    kw = lf.kwargs
    if lf.kind in ("remat", "checkpoint"):
        if "static_argnums" in kw:
            given = _value(conv, kw["static_argnums"], "static_argnums")
            given = (given,) if isinstance(given, int) else tuple(given)
            # Linen counts self as 0: the block is argument 0 here too; removed flags go
            new = [
                1 + kept_pos.index(i - 1) for i in given if i - 1 not in drop and i - 1 in kept_pos
            ]
            if new:
                opts.append(f"static_argnums={tuple(new)!r}")
        for k in ("prevent_cse", "policy"):
            if k in kw:
                opts.append(f"{k}={code(conv.to_nnx_refs(kw[k]))}")
        return f"nnx.remat({', '.join([fn, *opts])})"
    module_axis = "0" if stacked else "None"
    in_axes = _value(conv, kw["in_axes"], "in_axes") if "in_axes" in kw else 0  # Linen's default
    args = list(node.args)
    first = 1 if lf.kind == "scan" else 0  # the carry is not mapped over
    n_x = len(args) - first
    if isinstance(in_axes, tuple):
        if len(in_axes) != n_x:
            raise conv.fail(
                f"nn.{lf.kind}(in_axes={in_axes!r}) gives {len(in_axes)} axes for {n_x} arguments",
                node,
            )
        per = list(in_axes)
    else:
        per = [in_axes] * n_x
    axes = [
        _axis(conv, a, node)
        for i, a in zip(range(first, len(args)), per, strict=True)
        if i not in drop
    ]
    if lf.kind == "scan":
        in_t = f"({', '.join([module_axis, 'nnx.Carry', *axes])})"
    else:
        in_t = f"({', '.join([module_axis, *axes])}{',' if not axes else ''})"
    out_axes = _value(conv, kw["out_axes"], "out_axes") if "out_axes" in kw else 0
    if _BROADCAST in (out_axes if isinstance(out_axes, tuple) else (out_axes,)):
        raise conv.fail(f"nn.{lf.kind}(out_axes=nn.broadcast) is not converted yet", node)
    out_t = repr(out_axes)
    if lf.kind == "scan":
        out_t = f"(nnx.Carry, {out_t})"
        opts = [f"in_axes={in_t}", f"out_axes={out_t}"]
        if not stacked and "length" in kw:
            opts.append(f"length={code(kw['length'])}")
        for k in ("reverse", "unroll"):
            if k in kw:
                opts.append(f"{k}={code(kw[k])}")
        return f"nnx.scan({', '.join([fn, *opts])})"
    opts = [f"in_axes={in_t}", f"out_axes={out_t}"]
    if "axis_name" in kw:
        opts.append(f"axis_name={code(kw['axis_name'])}")
    return f"nnx.vmap({', '.join([fn, *opts])})"


def _axis(conv, a, node) -> str:
    if a is _BROADCAST or a is None:
        return "None"
    if isinstance(a, int):
        return str(a)
    raise conv.fail(f"the axis {a!r} of a lifted call is not converted yet", node)


# -- whole-file checks ---------------------------------------------------------------------


def allowed_funcs(conv: Any) -> set[int]:
    """The ``nn.scan``/``nn.remat``... references that lift a module class in a compact
    method (by node id): ``check_transforms`` lets these through."""
    out: set[int] = set()

    class V(cst.CSTVisitor):
        def visit_Call(self, node):
            kind = _kind(conv, node.func)
            if kind is None or not node.args:
                return
            out.add(id(node.func))

    for stmt in conv.node.body.body:
        if isinstance(stmt, cst.FunctionDef) and any(
            (dotted(d.decorator) or "").endswith("compact") for d in stmt.decorators
        ):
            stmt.visit(V())
    return out


def wrapped_targets(
    class_nodes: dict[str, cst.ClassDef], module_globals: dict, positions: Any
) -> dict[str, tuple[str, int]]:
    """User classes lifted by ``nn.remat_scan``/``nn.jit``: they stay Linen (reason, line)."""
    from flax import linen as nn

    kinds = {id(getattr(nn, k)): k for k in WRAPPED if hasattr(nn, k)}
    out: dict[str, tuple[str, int]] = {}

    def resolve(node: cst.BaseExpression) -> Any:
        name = dotted(node)
        if name is None:
            return None
        head, *rest = name.split(".")
        value = module_globals.get(head)
        for part in rest:
            value = getattr(value, part, None)
        return value

    class V(cst.CSTVisitor):
        def visit_Call(self, node):
            kind = kinds.get(id(resolve(node.func)))
            if kind is None or not node.args:
                return
            first = node.args[0].value
            while isinstance(first, cst.Call) and first.args:
                first = first.args[0].value  # nn.jit(nn.remat(Block))
            name = dotted(first)
            if name in class_nodes and name not in out:
                line = positions[node].start.line
                out[name] = (f"it is lifted with nn.{kind}, which is not converted yet", line)

    for node in class_nodes.values():
        node.visit(V())
    return out
