"""Recurrent layers: ``nn.RNN(nn.LSTMCell(h))`` and ``nn.Bidirectional(...)`` become
``nnx.RNN(nnx.LSTMCell(in, h, rngs=rngs))`` and ``nnx.Bidirectional(...)``.

A cell built inside a compact method belongs to the module that builds it, not to the
``nn.RNN`` that runs it: Linen stores its weights at ``LSTMCell_0/ii/kernel`` next to the
caller's other layers, while NNX keeps the cell where it is used (``rnn/cell/ii/kernel``). The
trace records the cell's calls at the position of the ``nn.RNN(...)(x)`` call, so one site
holds the ``nn.RNN``/``nn.Bidirectional`` call and, as members, the cells and inner RNNs with
the NNX path of each below the site's attribute.

Weight layouts, per cell (Linen -> NNX):

- ``LSTMCell``: the same per-gate layers; ``if`` is ``if_`` in NNX (a Python keyword).
- ``OptimizedLSTMCell``: Linen keeps the per-gate layers of ``LSTMCell`` (and computes the
  same function); ``nnx.OptimizedLSTMCell`` fuses them into ``dense_i``/``dense_h``, which a
  path map cannot express, so it becomes ``nnx.LSTMCell`` and the weights move as they are.
- ``SimpleCell``: ``i``/``h`` are ``dense_i``/``dense_h``.
- ``GRUCell`` is refused: ``nnx.GRUCell`` has no bias on the recurrent candidate term (Linen's
  ``hn`` bias), so a Linen GRU's weights cannot move into it; the class stays Linen (wrapped).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import libcst as cst

from ._classes import Site, linen_fields
from ._cstutil import code, operand
from ._rules import nnx_kwargs

if TYPE_CHECKING:
    from ._build import _Builder
    from ._sites import _Compact

__all__ = [
    "is_recurrent",
    "is_cell",
    "lifted_method",
    "add_rnn_calls",
    "child_name",
    "rnn_site",
    "rnn_ctor",
    "rnn_call",
    "setup_rnn",
    "claim_time_scan",
]


@dataclass(frozen=True)
class _Cell:
    nnx: str
    children: Mapping[str, str] = field(default_factory=dict)  # Linen child -> NNX attr
    extra: Mapping[str, str] = field(default_factory=dict)  # NNX defaults that differ


CELLS: dict[str, _Cell] = {
    "LSTMCell": _Cell("LSTMCell", {"if": "if_"}),
    "OptimizedLSTMCell": _Cell("LSTMCell", {"if": "if_"}),
    "SimpleCell": _Cell("SimpleCell", {"i": "dense_i", "h": "dense_h"}, {"dtype": "None"}),
}
#: Cells with no NNX counterpart that holds their weights, and why.
REFUSED = {
    "GRUCell": "nnx.GRUCell has no bias on the recurrent candidate term (Linen's hn/bias) and "
    "fuses the gate kernels, so a Linen GRUCell's weights cannot move into it",
    "MGUCell": "flax.nnx has no MGUCell",
    "ConvLSTMCell": "flax.nnx has no ConvLSTMCell",
}
_WRAPPERS = ("RNN", "Bidirectional")
#: nn.RNN fields that pick lifted-transform behaviour nnx.RNN spells differently.
_LIFTED_FIELDS = ("variable_axes", "variable_broadcast", "variable_carry", "split_rngs")


def _flax(cls: Any, names) -> bool:
    return (
        isinstance(cls, type)
        and getattr(cls, "__module__", "").startswith("flax.linen")
        and cls.__name__ in names
    )


def is_recurrent(cls: Any) -> bool:
    """Whether ``cls`` is ``nn.RNN``, ``nn.Bidirectional`` or a Linen RNN cell."""
    return _flax(cls, (*_WRAPPERS, *CELLS, *REFUSED))


def is_cell(cls: Any) -> bool:
    """Whether ``cls`` is a Linen RNN cell (converted or refused)."""
    return _flax(cls, (*CELLS, *REFUSED))


def lifted_method(cls: type, name: str = "__call__") -> bool:
    """Whether a Linen class's method is wrapped by a lifted transform (``nn.scan`` on the
    method): the trace then sees its inputs one step at a time, not as the caller passes
    them."""
    f = getattr(cls, name, None)
    for _ in range(8):
        code_ = getattr(f, "__code__", None)
        if code_ is not None and code_.co_filename.replace("\\", "/").endswith(
            "flax/linen/transforms.py"
        ):
            return True
        f = getattr(f, "__wrapped__", None)
        if f is None:
            return False
    return False


def child_name(parent_cls: type, name: str) -> str:
    """The NNX attribute of a Linen layer's child (a cell's gate layers are renamed)."""
    if _flax(parent_cls, CELLS):
        return CELLS[parent_cls.__name__].children.get(name, name)
    return name


def rnn_site(conv: _Compact, node: cst.Call, execs, in_loop: bool, ctor, var) -> Site:
    """The site of an ``nn.RNN(...)(x)`` / ``nn.Bidirectional(...)(x)`` call; the cells (and
    the RNNs inside a Bidirectional), which Linen names after the caller, are its members."""
    if in_loop:
        what = "an RNN cell" if any(is_cell(c.cls) for _, c in execs) else "nn.RNN"
        raise conv.fail(
            f"{what} built inside a loop (build it once before the loop: "
            "cell = nn.LSTMCell(...), then step cell(carry, x[:, t]))",
            node,
        )
    if ctor is None and isinstance(node.func, cst.Call):
        ctor = node.func
    if ctor is None:
        raise conv.fail("nn.RNN built in one statement and called in another", node)
    top_cls = conv.resolve(ctor.func)
    scan: TimeScan | None = getattr(conv, "time_scan", None)
    if scan is not None and node is scan.call:
        return _scanned_site(conv, scan, node, execs, ctor)
    if is_cell(top_cls) and all(c.cls is top_cls for _, c in execs):
        return _cell_site(conv, node, execs, ctor, var)
    if not _flax(top_cls, _WRAPPERS):
        names = sorted({c.cls.__name__ for _, c in execs})
        raise conv.fail(f"a recurrent layer called other than as nn.RNN(cell)(x): {names}", node)
    top = [(i, c) for i, c in execs if c.cls is top_cls]
    inner = [(i, c) for i, c in execs if c.cls is not top_cls]
    members: dict[str, tuple[str, ...]] = {}
    for _, c in top:
        found: dict[str, tuple[str, ...]]
        if top_cls.__name__ == "RNN":
            found = {c.module.cell.name: ("cell",)}
        else:
            f, b = c.module.forward_rnn, c.module.backward_rnn
            found = {
                f.name: ("forward_rnn",),
                f.cell.name: ("forward_rnn", "cell"),
                b.name: ("backward_rnn",),
                b.cell.name: ("backward_rnn", "cell"),
            }
        for k, v in found.items():
            if members.setdefault(k, v) != v:
                raise conv.fail("the RNN's cells are named differently per call", node)
    if any(c.name not in members for _, c in inner):
        raise conv.fail("a recurrent layer's cells could not be matched to its call", node)
    name_arg = conv.literal_name(ctor, var, node)
    return Site(
        key=node,
        child_cls=top_cls,
        kind="rnn",
        execs=top,
        line=conv.lineno(node),
        base="bidirectional" if top_cls.__name__ == "Bidirectional" else "rnn",
        name_arg=name_arg,
        ctor=ctor,
        inner=inner,
        member_paths=members,
        named=var is not None,
    )


def add_rnn_calls(conv: _Compact, site: Site, execs, node: cst.Call) -> None:
    """Another call of a named RNN site (``rnn = nn.RNN(...)``, ``rnn(x)``, ``rnn(y)``): the
    RNN's own calls join ``execs``, its cells' calls ``inner``."""
    for i, c in execs:
        if c.cls is site.child_cls:
            site.execs.append((i, c))
        elif c.name in site.member_paths:
            site.inner.append((i, c))
        else:
            raise conv.fail("a recurrent layer's cells could not be matched to its call", node)


def _is_false(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Name) and node.value in ("False", "None")


def rnn_ctor(
    conv: _Compact, site: Site, node: cst.Call, in_t: str | None, env, dry: bool
) -> tuple[list[str], str | None]:
    """``nnx.RNN(nnx.LSTMCell(<in>, h, rngs=rngs), ..., rngs=rngs)`` (or the
    ``nnx.Bidirectional`` of two) for the site, and the output's last axis."""
    scan: TimeScan | None = getattr(conv, "time_scan", None)
    if scan is not None and site.key is scan.call:
        return _scanned_ctor(conv, scan, site, env, dry)
    if is_cell(site.child_cls):
        return _direct_cell_ctor(conv, site, node, env, dry)
    for a in node.args:
        if a.star:
            raise conv.fail("*args/**kwargs in a call of nn.RNN", node)
        if a.keyword is not None and a.keyword.value == "init_key":
            raise conv.fail(
                "nn.RNN(...)(x, init_key=...): nnx.RNN draws the initial carry from its rngs "
                "instead (not converted yet)",
                node,
            )
    if in_t is None and not dry and id(site) not in conv.emitted:
        # (a named RNN's later calls build nothing: no size argument for them)
        in_t = conv.fallback(site, "in_features", lambda c, i: _input_size(c, conv, node))
    in_t = in_t or "?"
    text, out = _rnn_expr(conv, site.ctor, in_t, env, dry)
    if any(a.keyword is not None and a.keyword.value == "return_carry" for a in node.args):
        out = None
    return [text], out


def setup_rnn(b: _Builder, site: Site, ctor: cst.Call, in_t: str | None, emit: bool):
    """A ``setup()`` attribute ``self.rnn = nn.RNN(nn.LSTMCell(h))``: the NNX construction
    (when ``emit``; the cell is the RNN's own child there, ``rnn/cell``) and the output size."""
    if in_t is None and emit:
        in_t = b.fallback(site, "in_features", lambda c, i: _input_size(c, b, ctor))
    return _rnn_expr(b, ctor, in_t or "?", {}, not emit)


def _input_size(call, conv, node) -> int:
    x = call.args[0] if call.args else call.kwargs.get("inputs")
    if x is None or not getattr(x, "shape", None):
        raise conv.fail("the RNN's input has no last axis to size its cell", node)
    return int(x.shape[-1])


def _value(conv: _Compact, v: cst.BaseExpression, env, what: str, node) -> str:
    t = conv.init_expr(v, env, conv.method_locals)
    if t is None:
        raise conv.fail(f"{what} depends on values computed in the call", node)
    return t


def _rnn_expr(conv: _Compact, call: cst.CSTNode, in_t: str, env, dry) -> tuple[str, str | None]:
    if not isinstance(call, cst.Call):
        raise conv.fail("the cell or RNN is not built inside the nn.RNN(...) call", call)
    cls = conv.resolve(call.func)
    if not _flax(cls, _WRAPPERS):
        raise conv.fail(
            f"{code(call.func)}(...) inside a recurrent layer is not nn.RNN or a cell class "
            "named directly",
            call,
        )
    kw = conv.arg_fields(call, cls)
    parts: list[str] = []
    return_carry = False
    if cls.__name__ == "RNN":
        if "cell" not in kw:
            raise conv.fail("nn.RNN(...) without a cell", call)
        cell_t, out = _cell_expr(conv, kw.pop("cell"), in_t, env)
        parts.append(cell_t)
        for f, v in kw.items():
            if f in _LIFTED_FIELDS:
                raise conv.fail(
                    f"nn.RNN({f}=...): nnx.RNN spells the lifted scan's variable handling "
                    "differently (state_axes, broadcast_rngs); not converted yet",
                    call,
                )
            return_carry |= f == "return_carry" and not _is_false(v)
            parts.append(f"{f}={_value(conv, v, env, f'nn.RNN({f}=...)', call)}")
        parts.append("rngs=rngs")
        return f"nnx.RNN({', '.join(parts)})", None if return_carry else out
    if "forward_rnn" not in kw or "backward_rnn" not in kw:
        raise conv.fail("nn.Bidirectional(...) without both RNNs", call)
    fwd, out_f = _rnn_expr(conv, kw.pop("forward_rnn"), in_t, env, dry)
    bwd, out_b = _rnn_expr(conv, kw.pop("backward_rnn"), in_t, env, dry)
    parts += [fwd, bwd]
    for f, v in kw.items():
        return_carry |= f == "return_carry" and not _is_false(v)
        parts.append(f"{f}={_value(conv, v, env, f'nn.Bidirectional({f}=...)', call)}")
    parts.append("rngs=rngs")
    out = None
    if "merge_fn" not in kw and not return_carry and out_f and out_b:
        out = f"2 * {operand(out_f)}" if out_f == out_b else f"{out_f} + {out_b}"
    return f"nnx.Bidirectional({', '.join(parts)})", out


def _cell_expr(conv: _Compact, call, in_t: str, env) -> tuple[str, str | None]:
    cls = conv.resolve(call.func) if isinstance(call, cst.Call) else None
    if isinstance(cls, type) and _flax(cls, REFUSED):
        raise conv.fail(f"nn.{cls.__name__}: {REFUSED[cls.__name__]}", call)
    if not isinstance(call, cst.Call) or not _flax(cls, CELLS):
        raise conv.fail(
            "the RNN's cell is not an nn.LSTMCell, nn.OptimizedLSTMCell or nn.SimpleCell "
            "built inside the nn.RNN(...) call",
            call,
        )
    assert isinstance(cls, type)
    spec = CELLS[cls.__name__]
    allowed = nnx_kwargs(spec.nnx)
    kw = conv.arg_fields(call, cls)
    if "features" not in kw:
        raise conv.fail(f"nn.{cls.__name__}(...) without features", call)
    hidden = _value(conv, kw.pop("features"), env, "the cell's features", call)
    parts = [in_t, hidden]
    for f, v in kw.items():
        if f == "carry_init":
            raise conv.fail(
                "carry_init= of a cell: nnx cells take it in initialize_carry (not converted yet)",
                call,
            )
        if f not in allowed or f not in {x.name for x in linen_fields(cls)}:
            raise conv.fail(f"nn.{cls.__name__}({f}=...) has no nnx.{spec.nnx} argument", call)
        parts.append(f"{f}={_value(conv, v, env, f'the cell argument {f}=', call)}")
    parts += [f"{k}={v}" for k, v in spec.extra.items() if k not in kw]
    parts.append("rngs=rngs")
    return f"nnx.{spec.nnx}({', '.join(parts)})", hidden


# -- nn.scan of a cell over time (Flax's SST-2 example) -----------------------------------------


@dataclass
class TimeScan:
    """A ``__call__(self, carry, x)`` scanned over time by ``nn.scan`` whose body is one cell
    call: it becomes ``nnx.RNN(cell, return_carry=True)`` called with ``initial_carry``."""

    call: cst.Call  # the cell call ``Cell(...)(carry, x)``
    carry: str
    inputs: str
    time_major: bool
    site: Site | None = None


def _scan_decorator(b: _Builder, d: cst.Decorator) -> cst.Call | None:
    from flax import linen as nn

    call = d.decorator
    if (
        isinstance(call, cst.Call)
        and call.args
        and b.resolve(call.func) is functools.partial
        and b.resolve(call.args[0].value) is nn.scan
    ):
        return call
    return None


def claim_time_scan(b: _Builder) -> None:
    """Recognises ``@partial(nn.scan, variable_broadcast='params', split_rngs={'params':
    False}, in_axes=1, out_axes=1)`` on a compact ``__call__(self, carry, x)`` that returns
    one cell call: the decorator goes (``b.node`` loses it) and ``b.time_scan`` says how the
    cell call converts. Any other scan of a cell raises :class:`Unsupported`; other scans
    are left to the rest of the converter."""
    body = list(b.node.body.body)
    for k, stmt in enumerate(body):
        if not isinstance(stmt, cst.FunctionDef):
            continue
        for d in stmt.decorators:
            call = _scan_decorator(b, d)
            if call is None:
                continue
            cell_call = _single_cell_call(b, stmt)
            if cell_call is None:
                return  # a scan of something else than one cell: not ours
            scan = _time_scan(b, stmt, call, cell_call)
            new = stmt.with_changes(decorators=[x for x in stmt.decorators if x is not d])
            body[k] = new
            b.node = b.node.with_changes(body=b.node.body.with_changes(body=body))
            b.time_scan = scan  # type: ignore[attr-defined]
            _carry_inits(b, cell_call, scan)
            return


def _single_cell_call(b: _Builder, method: cst.FunctionDef) -> cst.Call | None:
    stmts = [
        s
        for s in method.body.body
        if not (
            isinstance(s, cst.SimpleStatementLine)
            and isinstance(s.body[0], cst.Expr)
            and isinstance(s.body[0].value, cst.SimpleString)
        )
    ]
    if len(stmts) != 1 or not isinstance(stmts[0], cst.SimpleStatementLine):
        return None
    ret = stmts[0].body[0]
    value = ret.value if isinstance(ret, cst.Return) else None
    if not (isinstance(value, cst.Call) and isinstance(value.func, cst.Call)):
        return None
    cls = b.resolve(value.func.func)
    return value if _flax(cls, (*CELLS, *REFUSED)) else None


def _literal(node: cst.BaseExpression) -> Any:
    import ast

    try:
        return ast.literal_eval(code(node))
    except (ValueError, SyntaxError):
        return _NOT_LITERAL


_NOT_LITERAL = object()


def _time_scan(b: _Builder, method: cst.FunctionDef, deco: cst.Call, cell_call: cst.Call):
    def no(why: str) -> Exception:
        return b.fail(
            f"nn.scan of a cell over time {why}; nnx.RNN(cell) covers a scan "
            "with variable_broadcast='params', split_rngs={'params': False} and "
            "in_axes == out_axes (0 or 1)",
            deco,
        )

    kw: dict[str, Any] = {}
    for a in deco.args[1:]:
        if a.keyword is None:
            raise no("with positional arguments")
        kw[a.keyword.value] = _literal(a.value)
    want = {"variable_broadcast": "params", "split_rngs": {"params": False}}
    for k, v in want.items():
        if kw.pop(k, None) != v:
            raise no(f"without {k}={v!r}")
    axes = kw.pop("in_axes", 0), kw.pop("out_axes", 0)
    if axes[0] != axes[1] or axes[0] not in (0, 1):
        raise no(f"with in_axes={axes[0]!r}, out_axes={axes[1]!r}")
    if kw:
        raise no(f"with {', '.join(sorted(kw))}=")
    params = [p.name.value for p in method.params.params][1:]
    args = cell_call.args
    if (
        len(params) != 2
        or method.params.kwonly_params
        or isinstance(method.params.star_arg, cst.Param)
        or len(args) != 2
        or any(a.keyword is not None or a.star for a in args)
        or [code(a.value) for a in args] != params
    ):
        raise no("whose method is not (self, carry, x) returning cell(carry, x)")
    if axes[0] == 1:
        for inst in b.instances:
            for c in inst.calls:
                x = c.args[1] if len(c.args) > 1 else None
                if c.path[:-1] == inst.path and getattr(x, "ndim", 2) != 2:
                    raise no("over axis 1 of inputs that are not (batch, time, features)")
    return TimeScan(cell_call, params[0], params[1], time_major=axes[0] == 0)


def _scanned_site(conv: _Compact, scan: TimeScan, node: cst.Call, execs, ctor) -> Site:
    names = {c.name for _, c in execs}
    if len(names) != 1:
        raise conv.fail("the scanned cell is named differently per call", node)
    site = Site(
        key=node,
        child_cls=execs[0][1].cls,
        kind="rnn",
        execs=execs,
        line=conv.lineno(node),
        base="rnn",
        ctor=ctor,
        member_paths={names.pop(): ("cell",)},
    )
    scan.site = site
    return site


def _scanned_ctor(conv: _Compact, scan: TimeScan, site: Site, env, dry):
    x = scan.call.args[1].value
    in_t = conv.size_of(x, env)
    if in_t is None and not dry:
        in_t = conv.fallback(site, "in_features", lambda c, i: int(c.args[1].shape[-1]))
    cell_t, _ = _cell_expr(conv, site.ctor, in_t or "?", env)
    parts = [cell_t, "return_carry=True", *(["time_major=True"] if scan.time_major else [])]
    return [f"nnx.RNN({', '.join([*parts, 'rngs=rngs'])})"], None


def rnn_call(conv: _Compact, site: Site, node: cst.Call, default: Callable) -> Callable:
    """The rewrite of an RNN site's call: the scanned cell call ``cell(carry, x)`` becomes
    ``self.rnn(x, initial_carry=carry)``; every other call keeps its arguments."""
    scan: TimeScan | None = getattr(conv, "time_scan", None)
    if scan is None or site.key is not scan.call:
        return default
    text = f"self.{site.attr}({scan.inputs}, initial_carry={scan.carry})"
    return lambda updated: cst.parse_expression(text)


def _carry_inits(b: _Builder, cell_call: cst.Call, scan: TimeScan) -> None:
    """``Cell(same args, parent=None).initialize_carry(key, shape)`` in the class's other
    methods (the SST-2 example's way to build the initial carry) becomes
    ``self.rnn.cell.initialize_carry(shape, rngs=nnx.Rngs(key))``."""
    ctor = cast(cst.Call, cell_call.func)
    want = (code(ctor.func), [_arg(a) for a in ctor.args if _kw(a) != "name"])
    conv = b

    class V(cst.CSTVisitor):
        def visit_Call(self, node):
            f = node.func
            if not (
                isinstance(f, cst.Attribute)
                and f.attr.value == "initialize_carry"
                and isinstance(f.value, cst.Call)
            ):
                return
            inner = f.value
            parent = [a for a in inner.args if _kw(a) == "parent"]
            rest = [_arg(a) for a in inner.args if _kw(a) not in ("parent", "name")]
            if (
                len(parent) != 1
                or code(parent[0].value) != "None"
                or (code(inner.func), rest) != want
                or len(node.args) != 2
                or any(a.keyword or a.star for a in node.args)
            ):
                return
            key, shape = (code(a.value) for a in node.args)

            def replace(updated, key=key, shape=shape):
                assert scan.site is not None
                return cst.parse_expression(
                    f"self.{scan.site.attr}.cell.initialize_carry({shape}, rngs=nnx.Rngs({key}))"
                )

            conv.replacers[node] = replace

    for stmt in b.node.body.body:
        if isinstance(stmt, cst.FunctionDef) and stmt.name.value != "__call__":
            stmt.visit(V())


def _kw(a: cst.Arg) -> str | None:
    return a.keyword.value if a.keyword is not None else None


def _arg(a: cst.Arg) -> str:
    return f"{_kw(a)}={code(a.value)}" if a.keyword is not None else code(a.value)


# -- a cell called directly (stepped in a Python loop) ------------------------------------------


def _cell_site(conv: _Compact, node: cst.Call, execs, ctor, var) -> Site:
    """``cell = nn.LSTMCell(h)`` ... ``carry, y = cell(carry, x[:, t])``: the cell becomes an
    NNX cell attribute; ``cell.initialize_carry(key, shape)`` in the same method becomes
    ``cell.initialize_carry(shape, rngs=nnx.Rngs(key))``."""
    if ctor is None and isinstance(node.func, cst.Call):
        ctor = node.func
    if ctor is None:
        raise conv.fail("an RNN cell built in one statement and called in another", node)
    cls = execs[0][1].cls
    name_arg = conv.literal_name(ctor, var, node)
    if var is not None:
        _carry_inits_of(conv, var)
    return Site(
        key=node,
        child_cls=cls,
        kind="rnn",
        execs=execs,
        line=conv.lineno(node),
        base="cell",
        name_arg=name_arg,
        ctor=ctor,
        named=var is not None,
    )


def _direct_cell_ctor(conv: _Compact, site: Site, node: cst.Call, env, dry):
    if len(node.args) != 2 or any(a.keyword is not None or a.star for a in node.args):
        raise conv.fail("an RNN cell called other than as cell(carry, inputs)", node)
    in_t = conv.size_of(node.args[1].value, env)
    if in_t is None and not dry:
        in_t = conv.fallback(site, "in_features", lambda c, i: int(c.args[1].shape[-1]))
    cell_t, _ = _cell_expr(conv, site.ctor, in_t or "?", env)
    return [cell_t], None


def _carry_inits_of(conv: _Compact, var: str) -> None:
    """``var.initialize_carry(key, shape)`` (Linen) -> ``var.initialize_carry(shape,
    rngs=nnx.Rngs(key))`` (NNX), anywhere in the class's methods."""

    class V(cst.CSTVisitor):
        def visit_Call(self, node):
            f = node.func
            if (
                isinstance(f, cst.Attribute)
                and f.attr.value == "initialize_carry"
                and isinstance(f.value, cst.Name)
                and f.value.value == var
            ):
                if len(node.args) != 2 or any(a.keyword or a.star for a in node.args):
                    raise conv.fail(f"{var}.initialize_carry(...) other than (key, shape)", node)
                key, shape = (code(a.value) for a in node.args)
                conv.replacers[node] = lambda updated, k=key, s=shape: cst.parse_expression(
                    f"{var}.initialize_carry({s}, rngs=nnx.Rngs({k}))"
                )

    conv.node.visit(V())
