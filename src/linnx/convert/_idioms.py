"""Common Linen idioms beyond plain layers: mixin base classes, helper methods that build
submodules, and submodules that no example reached.

- **Mixins**: ``class Block(NormMixin)`` where ``NormMixin(nn.Module)`` only holds fields and
  helper methods. The mixin becomes an ``nnx.Module`` base with the same methods (its fields
  become ``__init__`` arguments of each converted subclass, in Linen's dataclass order). It
  converts only when every class of the file that derives from it converts: a Linen class
  cannot derive from an NNX one.
- **Factory helpers** (``@nn.nowrap def _dense(self, features): return nn.Dense(features)``
  called as ``self._dense(4)(x)`` or ``self.proj = self._dense(4)`` in ``setup``): the one
  construction the helper returns is written in place of the call, its parameters replaced by
  the call's arguments, and the helper goes when nothing else uses it.
- **Unreached submodules**: a construction that no example ran (the other branch of
  ``if self.use_proj:``) would be left as Linen code in an NNX method. The class stays Linen
  instead, with a reason that names the line, unless the layer can be written without the
  trace (a Flax layer whose arguments and input size follow from the fields).
"""

from __future__ import annotations

import functools
from typing import Any

import libcst as cst

from ._cstutil import code, dotted, is_self_attr

__all__ = [
    "mixin_bases",
    "mixin_fields",
    "convert_mixin",
    "inline_helper",
    "check_unreached",
    "module_factory",
]


# -- mixins ------------------------------------------------------------------------------------


def mixin_bases(b: Any) -> list[str]:
    """The file's mixin classes that ``b``'s class derives from (``[]`` for a direct
    ``nn.Module`` subclass); Unsupported for any other base."""
    from flax import linen as nn

    bases = b.cls.__bases__
    if bases == (nn.Module,):
        return []
    names = []
    for base in bases:
        _check_mixin(b, base)
        names.append(base.__name__)
    return names


def _check_mixin(b: Any, base: type) -> None:
    from flax import linen as nn

    name = base.__name__
    node = b.ctx.class_nodes.get(name)
    if node is None or b.ctx.user_classes.get(name) is not base:
        where = "not a class of the file" if node is None else "redefined"
        raise b.fail(
            f"the class derives from {name} ({where}); only mixins defined in the file convert"
        )
    if name in b.ctx.reached:
        raise b.fail(f"the class derives from {name}, which is used as a module itself")
    from ._build import _Builder
    from ._classes import Unsupported

    try:  # the Linen module API and lifted transforms, as in a class of its own
        _Builder(node, b.positions, base, [], b.ctx).check_transforms()
    except Unsupported as e:
        raise Unsupported(f"its base {name}: {e.reason}", e.line) from None
    for grand in base.__bases__:
        if grand is not nn.Module:
            _check_mixin(b, grand)
    for stmt in node.body.body:
        if not isinstance(stmt, cst.FunctionDef):
            continue
        decos = {(dotted(d.decorator) or "").rsplit(".", 1)[-1] for d in stmt.decorators}
        if stmt.name.value == "setup" or "compact" in decos:
            raise b.fail(
                f"its base {name} builds submodules ({stmt.name.value}); only mixins of "
                "fields and helper methods convert",
                stmt,
            )
        for call in _calls(stmt):
            if b.is_var_call(call) or module_factory(b, call.func) is not None:
                raise b.fail(
                    f"its base {name} creates a submodule or variable in "
                    f"{stmt.name.value}() ({code(call.func)}); only mixins of fields and helper "
                    "methods convert",
                    stmt,
                )


def mixin_fields(b: Any, missing: list[str]) -> dict[str, cst.AnnAssign]:
    """The field declarations of inherited fields, found in the mixins' class bodies."""
    out: dict[str, cst.AnnAssign] = {}
    for klass in b.cls.__mro__[1:]:
        node = b.ctx.class_nodes.get(klass.__name__)
        if node is None or b.ctx.user_classes.get(klass.__name__) is not klass:
            continue
        for stmt in node.body.body:
            if isinstance(stmt, cst.SimpleStatementLine):
                for small in stmt.body:
                    if (
                        isinstance(small, cst.AnnAssign)
                        and isinstance(small.target, cst.Name)
                        and small.target.value in missing
                        and small.target.value not in out
                    ):
                        out[small.target.value] = small
    return out


def convert_mixin(b: Any) -> cst.ClassDef:
    """The mixin class as an NNX base: its fields go (each subclass's ``__init__`` sets them),
    its methods stay with Linen references made NNX ones; ``b`` is a builder of the mixin."""
    b.check_transforms()
    fields = set(b.fields)
    body: list[Any] = []
    for stmt in b.node.body.body:
        if isinstance(stmt, cst.SimpleStatementLine) and any(
            isinstance(s, cst.AnnAssign)
            and isinstance(s.target, cst.Name)
            and s.target.value in fields
            for s in stmt.body
        ):
            continue
        if isinstance(stmt, cst.FunctionDef):
            stmt = b.rewrite_method(stmt, drop_mirrored=False)
            if not body:
                stmt = stmt.with_changes(leading_lines=[])
        body.append(stmt)
    if not body or not any(isinstance(s, cst.FunctionDef) for s in body) and len(body) == 1:
        body.append(cst.parse_statement("pass"))
    bases = [
        cst.Arg(
            cst.parse_expression(
                base.__name__
                if base.__name__ in b.ctx.class_nodes and base.__name__ != "Module"
                else "nnx.Module"
            )
        )
        for base in b.cls.__bases__
    ]
    return b.node.with_changes(bases=bases, body=b.node.body.with_changes(body=body))


# -- factory helpers -----------------------------------------------------------------------------


def _method(b: Any, name: str) -> cst.FunctionDef | None:
    for klass in b.cls.__mro__:
        node = b.node if klass is b.cls else b.ctx.class_nodes.get(klass.__name__)
        if node is None:
            continue
        for stmt in node.body.body:
            if isinstance(stmt, cst.FunctionDef) and stmt.name.value == name:
                return stmt
    return None


def inline_helper(b: Any, ctor: cst.Call) -> cst.Call:
    """``self._dense(4)`` where the helper method returns one construction: that
    construction with the helper's parameters replaced by the arguments (else ``ctor``)."""
    f = ctor.func
    if not is_self_attr(f) or f.attr.value in b.fields:
        return ctor
    name = f.attr.value
    helper = _method(b, name)
    if helper is None:
        return ctor
    # the body without its docstring
    body = [
        s
        for s in helper.body.body
        if not (
            isinstance(s, cst.SimpleStatementLine)
            and len(s.body) == 1
            and isinstance(s.body[0], cst.Expr)
            and isinstance(s.body[0].value, cst.SimpleString | cst.ConcatenatedString)
        )
    ]
    ret = None
    if len(body) == 1 and isinstance(body[0], cst.SimpleStatementLine) and len(body[0].body) == 1:
        only = body[0].body[0]
        if isinstance(only, cst.Return) and isinstance(only.value, cst.Call):
            ret = only.value
    params = helper.params
    if (
        ret is None
        or not isinstance(params.star_arg, cst.MaybeSentinel | cst.ParamStar)
        or params.star_kwarg is not None
        or params.posonly_params
    ):
        raise b.fail(
            f"the submodule is built by the helper self.{name}(), which does more than return "
            "one construction",
            ctor,
        )
    names = [p.name.value for p in (*params.params, *params.kwonly_params)][1:]
    defaults = {
        p.name.value: p.default for p in (*params.params, *params.kwonly_params) if p.default
    }
    given: dict[str, cst.BaseExpression] = {}
    for i, a in enumerate(ctor.args):
        if a.star:
            raise b.fail(f"self.{name}(*args/**kwargs) builds the submodule", ctor)
        key = a.keyword.value if a.keyword is not None else (names[i] if i < len(names) else None)
        if key is None or key not in names:
            raise b.fail(f"self.{name}(...) is called with an argument it does not take", ctor)
        given[key] = a.value
    for n in names:
        if n not in given:
            if n not in defaults:
                raise b.fail(f"self.{name}(...) is called without its argument {n!r}", ctor)
            given[n] = defaults[n]

    class Sub(cst.CSTTransformer):
        def visit_Attribute(self, node):  # `x.name`: only the value is a name of the helper
            return True

        def leave_Attribute(self, original, updated):
            return updated.with_changes(attr=original.attr)

        def leave_Arg(self, original, updated):  # keywords are no names either
            return updated.with_changes(keyword=original.keyword)

        def leave_Name(self, original, updated):
            if updated.value in given:
                return _paren(given[updated.value])
            return updated

    new = ret.visit(Sub())
    b.inlined.setdefault(name, 0)
    b.inlined[name] += 1
    return new  # type: ignore[return-value]


def _paren(node: cst.BaseExpression) -> cst.BaseExpression:
    simple = (
        cst.Name,
        cst.Attribute,
        cst.Call,
        cst.Subscript,
        cst.SimpleString,
        cst.Integer,
        cst.Float,
        cst.Tuple,
        cst.List,
    )
    if isinstance(node, simple):
        return node
    return node.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def unused_helpers(b: Any) -> set[str]:
    """The inlined helpers that nothing else in the class reads (they are left out)."""
    counts: dict[str, int] = {}

    class V(cst.CSTVisitor):
        def visit_Attribute(self, node):
            if is_self_attr(node):
                counts[node.attr.value] = counts.get(node.attr.value, 0) + 1

    b.node.visit(V())
    return {n for n, k in b.inlined.items() if counts.get(n, 0) == k}


# -- unreached submodules ------------------------------------------------------------------------


def module_factory(b: Any, func: cst.BaseExpression) -> type | None:
    """The Linen module class that calling ``func`` constructs: a class, a
    ``functools.partial`` of one, or a field that holds either; else None."""
    from flax import linen as nn

    values: list[Any] = []
    if is_self_attr(func) and func.attr.value in b.fields:
        values = [getattr(i.module, func.attr.value, None) for i in b.instances]
    else:
        values = [b.resolve(func)]
    for v in values:
        while isinstance(v, functools.partial):
            v = v.func
        if isinstance(v, type) and issubclass(v, nn.Module):
            return v
    return None


def _calls(node: cst.CSTNode) -> list[cst.Call]:
    out: list[cst.Call] = []

    class V(cst.CSTVisitor):
        def visit_Call(self, n):
            out.append(n)

    node.visit(V())
    return out


def _inside(node: cst.CSTNode) -> set[int]:
    out: set[int] = set()

    class V(cst.CSTVisitor):
        def on_visit(self, n):
            out.add(id(n))
            return True

    node.visit(V())
    return out


def _passed(node: cst.CSTNode) -> set[int]:
    out: set[int] = set()

    class V(cst.CSTVisitor):
        def visit_Arg(self, a):
            out.add(id(a.value))

    node.visit(V())
    return out


def check_unreached(b: Any, methods: list[cst.FunctionDef], handled: list[cst.CSTNode]) -> None:
    """Unsupported when a method of the class constructs a submodule that no example ran
    (it would stay Linen code inside an NNX method); ``handled`` holds the constructions
    that became ``__init__`` code (and everything inside them)."""
    done: set[int] = set()
    for h in handled:
        done |= _inside(h)
    for m in methods:
        if m.name.value in getattr(b, "dropped_helpers", ()):
            continue
        passed = _passed(m)  # modules handed to another call (nn.RNN(cell)): its business
        for call in _calls(m):
            if id(call) in done or id(call) in passed:
                continue
            if any(a.keyword is not None and a.keyword.value == "parent" for a in call.args):
                continue  # `parent=None`: a detached module, no submodule
            cls = module_factory(b, call.func)
            if cls is None:
                continue
            raise b.fail(
                f"{code(call)} (line {b.lineno(call)}) builds a {cls.__name__} that no example "
                "reached (e.g. a branch the examples did not take); add an --example that "
                "runs it",
                call,
            )


def _mixins_of(cls: type, user: dict[str, type]) -> list[str]:
    return [k.__name__ for k in cls.__mro__[1:] if user.get(k.__name__) is k]


def mixin_conflicts(
    plans: dict, kept: dict, user: dict[str, type], class_nodes: dict, positions: Any
) -> dict:
    """Converted classes whose mixin is also the base of a class that stays Linen (a Linen
    class cannot derive from an NNX mixin): they stay Linen too, as :class:`Kept` entries."""
    from ._rewrite import Kept

    out: dict = {}
    for name, plan in plans.items():
        if not plan.mixins or name in kept:
            continue
        for mixin in _mixins_of(user[name], user):
            others = [
                n
                for n, c in user.items()
                if n not in plans and n != mixin and mixin in _mixins_of(c, user)
            ]
            if others:
                line = positions[class_nodes[name]].start.line
                out[name] = Kept(
                    name,
                    f"its base {mixin} is also the base of {others[0]}, which stays Linen",
                    line,
                )
                break
    return out


def mixin_plans(
    plans: dict, user: dict[str, type], class_nodes: dict, positions: Any, ctx: Any
) -> dict:
    """A :class:`ClassPlan` holding the NNX form of each mixin the converted classes use."""
    from ._build import _Builder
    from ._classes import ClassPlan

    out: dict = {}
    for name in list(plans):
        for mixin in _mixins_of(user[name], user):
            if mixin in out or mixin in plans:
                continue
            b = _Builder(class_nodes[mixin], positions, user[mixin], [], ctx)
            node = convert_mixin(b)
            out[mixin] = ClassPlan(mixin, node, positions[class_nodes[mixin]].start.line)
    return out


def static_site(b: Any, node: cst.Call) -> list | None:
    """``[]`` (a site without executions) for ``nn.Dropout(0.1)(x)``-style calls of a Flax
    layer with a rule that no example reached (a branch not taken), which can be written
    from the source alone; None for anything else (left to :func:`check_unreached`)."""
    from ._rules import rule_for

    if not isinstance(node.func, cst.Call):
        return None
    ctor = node.func
    cls = module_factory(b, ctor.func)
    if cls is None or rule_for(cls) is None or cls.__name__ == "Sequential":
        return None
    if any(a.keyword is not None and a.keyword.value == "axis" for a in ctor.args):
        return None  # which axes it contracts decides the input size: learnt from a trace
    if any(a.star for a in (*ctor.args, *node.args)):
        return None
    return []
