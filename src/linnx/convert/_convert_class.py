"""Converts one Linen module class into an NNX module class.

``@nn.compact`` classes: each submodule call site of ``__call__`` (``nn.Dense(4)(x)``) becomes
an attribute created in ``__init__`` and called in ``__call__``. ``__init__`` *mirrors* the
control flow that created the submodules: loops over fields stay loops (the submodules go into
an ``nnx.List``), conditions on fields stay conditions. A small data-flow pass follows the last
axis of each local variable through the layers (``Dense(features)`` makes it ``features``,
activations and norms keep it), which gives each layer's input size as an expression of the
fields; where it cannot, the size becomes an extra keyword argument whose default is the value
seen in the example.

``setup()`` classes: the setup body becomes ``__init__`` (the input sizes come from the same
data-flow pass over the methods that call the submodules), and every method is kept.

Anything else raises :class:`Unsupported` with the reason and line.
"""

from __future__ import annotations

import builtins
import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import libcst as cst

from ._classes import (
    VAR_TYPES,
    ClassPlan,
    Site,
    SizeParam,
    Unsupported,
    field_default,
    linen_fields,
    literal,
    one_value,
)
from ._cstutil import (
    code,
    dotted,
    identifier,
    is_self_attr,
    names_in,
    replace_shape_last,
    self_attrs,
    snake,
    targets,
    unique,
)
from ._rules import IN, Rule, nnx_function, nnx_kwargs, rule_for
from ._trace import ChildCall, Instance

__all__ = ["Context"]

# Functions that keep the last axis of their first argument.
_KEEPS_SIZE = frozenset(
    "relu gelu silu swish tanh sigmoid elu celu selu leaky_relu softplus softmax log_softmax "
    "max_pool avg_pool min_pool asarray hard_tanh relu6 mish soft_sign log_sigmoid dropout "
    "normalize standardize abs exp square sqrt clip where".split()
)
_LINEN_API = frozenset(
    "make_rng sow is_initializing is_mutable_collection put_variable get_variable has_variable "
    "has_rng scope variables perturb apply init bind unbind lazy_init path".split()
)
_BASE_NAMES = {
    "Linear": "linear", "LinearGeneral": "linear", "Conv": "conv",
    "ConvTranspose": "conv_transpose", "Embed": "embed", "LayerNorm": "layer_norm",
    "RMSNorm": "rms_norm", "GroupNorm": "group_norm", "BatchNorm": "batch_norm",
    "Dropout": "dropout", "MultiHeadAttention": "attention",
}  # fmt: skip


@dataclasses.dataclass
class Context:
    """What a class converter needs from the rest of the conversion."""

    module_globals: dict[str, Any]
    src_lines: list[str]
    plans: dict[str, ClassPlan]  # converted user classes, by name
    kept: dict[str, str]  # user classes kept as Linen -> reason
    user_classes: dict[str, type]  # every Linen class of the source, by name
    keep_signatures: bool
    path: str


def _char_col(line_text: str, byte_col: int) -> int:
    return len(line_text.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


class _Converter:
    def __init__(
        self,
        node: cst.ClassDef,
        positions: Any,
        cls: type,
        instances: Sequence[Instance],
        ctx: Context,
    ):
        self.node = node
        self.positions = positions
        self.cls = cls
        self.instances = list(instances)
        self.ctx = ctx
        self.line = positions[node].start.line
        self.plan = ClassPlan(name=cls.__name__, node=node, line=self.line)
        self.fields = [f.name for f in linen_fields(cls)]
        self.size_params: dict[str, SizeParam] = {}
        self.site_of: dict[cst.CSTNode, Site] = {}
        self.replacers: dict[cst.CSTNode, Callable[[cst.CSTNode], cst.CSTNode]] = {}
        self.site_out: dict[cst.CSTNode, str | None] = {}
        self.init_lines: list[tuple[int, str, str | None]] = []  # (indent, text, binds)
        self.init_locals: set[str] = set()
        self.removed: set[str] = set()
        self.mode_loads: dict[str, int] = {}
        self.insert_before: dict[cst.CSTNode, list[str]] = {}
        self.taken: set[str] = set(self.fields) | {"rngs"}
        self.running_names: dict[str, str] = {}
        for stmt in node.body.body:
            if isinstance(stmt, cst.FunctionDef):
                self.taken.add(stmt.name.value)

    # -- small helpers ---------------------------------------------------------------------

    def lineno(self, node: cst.CSTNode) -> int:
        try:
            return self.positions[node].start.line
        except KeyError:
            return self.line

    def fail(self, reason: str, node: cst.CSTNode | None = None) -> Unsupported:
        return Unsupported(reason, self.lineno(node) if node is not None else self.line)

    def pos_key(self, node: cst.CSTNode) -> tuple[int, int, int, int] | None:
        try:
            r = self.positions[node]
        except KeyError:
            return None
        return (r.start.line, r.end.line, r.start.column, r.end.column)

    def trace_pos(self, call: ChildCall) -> tuple[int, int, int, int] | None:
        if call.pos is None:
            return None
        l0, l1, c0, c1 = call.pos
        lines = self.ctx.src_lines
        return (
            l0,
            l1,
            _char_col(lines[l0 - 1], c0) if l0 - 1 < len(lines) else c0,
            _char_col(lines[l1 - 1], c1) if l1 - 1 < len(lines) else c1,
        )

    def resolve(self, node: cst.BaseExpression) -> Any:
        """The runtime value of a dotted name in the source's globals, else None."""
        name = dotted(node)
        if name is None:
            return None
        head, *rest = name.split(".")
        if head not in self.ctx.module_globals:
            return None
        value = self.ctx.module_globals[head]
        for part in rest:
            value = getattr(value, part, None)
        return value

    def add_size_param(
        self, name: str, resolve: Callable[[Instance], Any], line: int, annotation: str = "int"
    ) -> str:
        if name not in self.size_params:
            name = unique(identifier(name), self.taken)
            self.taken.add(name)
            self.size_params[name] = SizeParam(name, annotation, resolve, line)
        return name

    # -- names that __init__ can read --------------------------------------------------------

    def init_ok(self, names: set[str], method_locals: set[str]) -> bool:
        for n in names:
            if n in ("self", "nnx") or n in self.init_locals or n in self.size_params:
                continue
            if n in method_locals:
                return False
            if n in self.ctx.module_globals or n in builtins.__dict__:
                continue
            return False
        return True

    def init_expr(
        self, node: cst.BaseExpression, env: dict[str, str | None], method_locals: set[str]
    ) -> str | None:
        """The expression as ``__init__`` can write it, or None when it reads call data."""
        node = replace_shape_last(node, lambda v: env.get(v))
        node = self.to_nnx_refs(node, init=True)
        if any(a in _LINEN_API or a in ("param", "variable") for a in self_attrs(node)):
            return None
        names = names_in(node)
        names.discard(getattr(self, "in_name", "in_features"))
        if not self.init_ok(names, method_locals):
            return None
        return code(node)

    # -- nn.* references -> nnx.* ------------------------------------------------------------

    def to_nnx_refs(self, node: cst.CSTNode, init: bool = False) -> cst.CSTNode:
        """``nn.relu`` -> ``nnx.relu``, ``nn.Conv`` -> ``nnx.Conv``, factories converted."""
        conv = self

        class T(cst.CSTTransformer):
            def leave_Attribute(self, original, updated):
                name = dotted(updated)
                if name is None or "." not in name:
                    return updated
                value = conv.resolve(updated)
                if isinstance(value, type):
                    rule = rule_for(value)
                    if rule is not None:
                        return cst.parse_expression(f"nnx.{rule.nnx}")
                    return updated
                head, _, attr = name.rpartition(".")
                from flax import linen as nn

                if conv.resolve(updated.value) is nn and nnx_function(attr):
                    return cst.parse_expression(f"nnx.{attr}")
                if name.startswith("nn.initializers.") and conv.resolve(updated.value) is not None:
                    return cst.parse_expression("nnx.initializers." + name.split(".", 2)[2])
                return updated

            def leave_Call(self, original, updated):
                return conv.convert_partial(updated)

        return node.visit(T())

    def convert_partial(self, call: cst.Call) -> cst.Call:
        """``partial(nnx.BatchNorm, use_running_average=not train, momentum=0.9)`` loses its
        mode argument; Linen field names become NNX ones."""
        import functools

        if self.resolve(call.func) is not functools.partial or not call.args:
            return call
        target = call.args[0].value
        name = dotted(target)
        if name is None or not name.startswith("nnx."):
            return call
        from flax import linen as nn

        rule = next((r for r in _all_rules() if r.nnx == name[4:]), None)
        linen_cls = getattr(nn, rule.linen, None) if rule else None
        if rule is None or linen_cls is None:
            return call
        new_args = [call.args[0]]
        for a in call.args[1:]:
            if a.keyword is None:
                raise self.fail("functools.partial of a layer with positional arguments", call)
            kw = a.keyword.value
            if kw in rule.modes:
                if names_in(a.value) & self.removed:
                    continue
            nkw = rule.rename.get(kw, kw)
            if nkw not in nnx_kwargs(rule.nnx):
                raise self.fail(f"nn.{rule.linen}({kw}=...) has no nnx.{rule.nnx} argument", call)
            new_args.append(a.with_changes(keyword=cst.Name(nkw)))
        last = new_args[-1]
        new_args[-1] = last.with_changes(comma=cst.MaybeSentinel.DEFAULT)
        return call.with_changes(args=new_args)

    # -- the call sites ------------------------------------------------------------------------

    def collect_sites(self, method: cst.FunctionDef, by_name: dict[str, Site] | None) -> None:
        """Finds the submodule calls of ``method`` that the trace saw (by source position)."""
        qual = f"{self.cls.__qualname__}.{method.name.value}"
        by_pos: dict[tuple, list[tuple[Instance, ChildCall]]] = {}
        for inst in self.instances:
            for c in inst.calls:
                if c.path[:-1] != inst.path:
                    continue
                if by_name is not None:
                    continue
                if c.frame_qualname != qual:
                    where = c.frame_qualname or "code outside the source file"
                    raise self.fail(
                        f"the submodule {c.name} ({c.cls.__name__}) is created in {where}, "
                        f"not in {method.name.value}"
                    )
                by_pos.setdefault(self.trace_pos(c), []).append((inst, c))
        conv = self

        class V(cst.CSTVisitor):
            def __init__(self) -> None:
                self.loops = 0
                self.fn = 0

            def visit_For(self, node):
                self.loops += 1

            def leave_For(self, node):
                self.loops -= 1

            def visit_While(self, node):
                self.loops += 1

            def leave_While(self, node):
                self.loops -= 1

            def visit_Lambda(self, node):
                self.fn += 1

            def leave_Lambda(self, node):
                self.fn -= 1

            def visit_FunctionDef(self, node):
                if node is not method:
                    self.fn += 1

            def leave_FunctionDef(self, node):
                if node is not method:
                    self.fn -= 1

            def visit_Call(self, node):
                execs = by_pos.pop(conv.pos_key(node), None)
                f = node.func
                if is_self_attr(f) and f.attr.value in _LINEN_API:
                    raise conv.fail(f"self.{f.attr.value}(...) is not converted yet", node)
                if execs is None:
                    return
                if self.fn:
                    raise conv.fail("a submodule is created inside a nested function", node)
                conv.site_of[node] = conv.make_site(node, execs, self.loops > 0)

        method.body.visit(V())
        if by_pos:
            raise self.fail("a submodule call could not be matched to the source")

    def make_site(self, node: cst.Call, execs, in_loop: bool) -> Site:
        classes = list(dict.fromkeys(c.cls for _, c in execs))
        norule = [c for c in classes if c.__module__.startswith("flax.") and not rule_for(c)]
        if norule:
            raise self.fail(f"nn.{norule[0].__name__} has no conversion rule yet", node)
        if len(classes) != 1 and not self.compatible(classes):
            names = sorted(c.__name__ for c in classes)
            raise self.fail(f"this call creates modules of several classes: {names}", node)
        child_cls = classes[0]
        rule = rule_for(child_cls)
        name_arg = None
        loop_base = None
        if isinstance(node.func, cst.Call):
            for a in node.func.args:
                if a.keyword is not None and a.keyword.value == "name":
                    if isinstance(a.value, cst.SimpleString):
                        name_arg = a.value.evaluated_value
                    elif isinstance(a.value, cst.FormattedString) and in_loop:
                        head = a.value.parts[0] if a.value.parts else None
                        if isinstance(head, cst.FormattedStringText):
                            loop_base = identifier(head.value.rstrip("_-")) if head.value else None
                    else:
                        raise self.fail("name= is not a plain string", node)
        else:
            raise self.fail(
                "the submodule is created in one statement and called in another", node
            )
        user = self.ctx.user_classes.get(child_cls.__name__)
        factory = dotted(node.func.func) if isinstance(node.func, cst.Call) else None
        if factory is not None and self.resolve(node.func.func) is child_cls:
            factory = None  # a class named directly: name the attribute after the layer kind
        if rule is not None:
            kind, base = "layer", _BASE_NAMES.get(rule.nnx, snake(rule.nnx))
        elif user is child_cls and child_cls.__name__ in self.ctx.plans:
            kind, base = "user", snake(child_cls.__name__)
        elif user is child_cls:
            kind, base = "kept", snake(child_cls.__name__)
        elif any(u in child_cls.__mro__ for u in self.ctx.user_classes.values()) or (
            child_cls.__module__.startswith("flax.")
        ):
            raise self.fail(
                f"{child_cls.__name__} (a lifted transform or a Flax layer without a rule) is "
                "not converted yet", node,
            )  # fmt: skip
        else:
            from ._errors import UnknownLayerError

            mod = child_cls.__module__
            raise UnknownLayerError(
                f"{self.ctx.path}:{self.lineno(node)}: {mod}.{child_cls.__name__} has no "
                "conversion rule and is not defined in the source file.\nFix: convert that "
                "file first, or pass --wrap-unknown to keep the calling class as Linen "
                "inside linnx.ToNNX.",
                path=self.ctx.path, line=self.lineno(node),
            )  # fmt: skip
        if factory is not None:
            last = factory.split(".")[-1]
            base = re.sub(r"_(cls|class|def|fn|factory)$", "", last) or base
        if loop_base:
            base = loop_base
        return Site(
            key=node, child_cls=child_cls, kind=kind, execs=execs, line=self.lineno(node),
            base=base, is_list=in_loop, name_arg=name_arg,
        )  # fmt: skip

    def compatible(self, classes: list[type]) -> bool:
        """Several converted classes from one call (a ``block_cls`` field): same arguments."""
        plans = []
        for c in classes:
            if self.ctx.user_classes.get(c.__name__) is not c or c.__name__ not in self.ctx.plans:
                return False
            plans.append(self.ctx.plans[c.__name__])
        first = plans[0]
        return all(
            [s.name for s in p.size_params] == [s.name for s in first.size_params]
            and p.removed_flags == first.removed_flags
            and p.call_params == first.call_params
            for p in plans[1:]
        )

    def name_sites(self, sites: Sequence[Site]) -> None:
        """Readable attribute names: ``name=`` as given, else the layer's kind (numbered)."""
        for s in sites:
            if s.name_arg is not None:
                s.attr = unique(identifier(s.name_arg), self.taken)
                self.taken.add(s.attr)
        counts: dict[str, int] = {}
        for s in sites:
            if s.name_arg is None and not s.is_list:
                counts[s.base] = counts.get(s.base, 0) + 1
        seen: dict[str, int] = {}
        for s in sites:
            if s.name_arg is not None:
                continue
            if s.is_list:
                base = s.base + ("es" if s.base.endswith("s") else "s")
            elif counts[s.base] > 1:
                seen[s.base] = seen.get(s.base, 0) + 1
                base = f"{s.base}{seen[s.base]}"
            else:
                base = s.base
            s.attr = unique(base, self.taken)
            self.taken.add(s.attr)

    # -- flags that only pick the mode -------------------------------------------------------

    def mode_exprs(self, method: cst.FunctionDef) -> list[cst.BaseExpression]:
        """The argument values that only choose train/eval behaviour in ``method``."""
        import functools

        out: list[cst.BaseExpression] = []
        for node, site in self.site_of.items():
            if site.kind == "layer":
                rule = rule_for(site.child_cls)
                assert rule is not None
                ctor_args = node.func.args if isinstance(node.func, cst.Call) else ()
                for a in (*ctor_args, *node.args):
                    if a.keyword is not None and a.keyword.value in rule.modes:
                        out.append(a.value)
            elif site.kind == "user":
                child = self.ctx.plans[site.child_cls.__name__]
                for i, a in enumerate(node.args):
                    name = a.keyword.value if a.keyword is not None else (
                        child.call_params[i] if i < len(child.call_params) else None)
                    if name in child.removed_flags:
                        out.append(a.value)
        conv = self

        class V(cst.CSTVisitor):
            def visit_Call(self, node):
                if conv.resolve(node.func) is functools.partial and node.args:
                    target = conv.resolve(node.args[0].value)
                    rule = rule_for(target) if isinstance(target, type) else None
                    for a in node.args[1:]:
                        if rule and a.keyword is not None and a.keyword.value in rule.modes:
                            out.append(a.value)

        method.body.visit(V())
        return out

    def decide_flags(self, method: cst.FunctionDef) -> None:
        params = [p.name.value for p in method.params.params][1:] + [
            p.name.value for p in method.params.kwonly_params
        ]
        self.plan.call_params = params
        if self.ctx.keep_signatures:
            return
        mode_counts: dict[str, int] = {}
        for e in self.mode_exprs(method):
            for n, k in _name_counts(e).items():
                mode_counts[n] = mode_counts.get(n, 0) + k
        total = _name_counts(method.body)
        for p in params:
            if total.get(p, 0) and total.get(p, 0) == mode_counts.get(p, 0):
                self.removed.add(p)
        self.plan.removed_flags = [p for p in params if p in self.removed]


def _name_counts(node: cst.CSTNode) -> dict[str, int]:
    counts: dict[str, int] = {}

    class V(cst.CSTVisitor):
        def visit_Attribute(self, n):
            n.value.visit(self)
            return False

        def visit_Arg(self, n):
            n.value.visit(self)
            return False

        def visit_Name(self, n):
            counts[n.value] = counts.get(n.value, 0) + 1

    node.visit(V())
    return counts


def _all_rules() -> list[Rule]:
    from ._rules import RULES

    return list(RULES.values())


class _Walker(_Converter):
    """The data-flow walk over a method body that writes ``__init__``."""

    method_locals: set[str]
    outs: dict[cst.CSTNode, str | None]
    mirrored: set[str]

    def emit(self, ind: int, text: str, binds: str | None = None) -> None:
        self.init_lines.append((ind, text, binds))

    def size_of(self, node: cst.BaseExpression, env: dict[str, str | None]) -> str | None:
        if isinstance(node, cst.Name):
            return env.get(node.value)
        if isinstance(node, cst.Call):
            if node in self.site_out:
                return self.site_out[node]
            f = node.func
            name = dotted(f)
            last = name.rsplit(".", 1)[-1] if name else None
            if node.args and last in _KEEPS_SIZE:
                return self.size_of(node.args[0].value, env)
            if node.args and is_self_attr(f) and f.attr.value in self.fields:
                return self.size_of(node.args[0].value, env)
            if isinstance(f, cst.Attribute) and f.attr.value in ("astype", "clip"):
                return self.size_of(f.value, env)
            return self.method_out(node, env)
        if isinstance(node, cst.BinaryOperation):
            sizes = [s for s in (self.size_of(node.left, env), self.size_of(node.right, env)) if s]
            return min(sizes, key=len) if sizes else None
        if isinstance(node, cst.UnaryOperation):
            return self.size_of(node.expression, env)
        return None

    def method_out(self, node: cst.Call, env) -> str | None:
        return None

    # -- statements ------------------------------------------------------------------------

    def walk(self, stmts, env, ind, dry, loops, conds=0) -> dict[str, str | None]:
        for stmt in stmts:
            if isinstance(stmt, cst.SimpleStatementLine):
                for small in stmt.body:
                    self.small(small, env, ind, dry, loops, conds)
            elif isinstance(stmt, cst.For):
                env = self.do_for(stmt, env, ind, dry, loops)
            elif isinstance(stmt, cst.If):
                env = self.do_if(stmt, env, ind, dry, loops, conds)
            else:
                if self.has_sites(stmt):
                    raise self.fail(
                        f"a submodule is created inside a {type(stmt).__name__.lower()} "
                        "statement", stmt,
                    )  # fmt: skip
                for n in _assigned(stmt):
                    env[n] = None
                    self.init_locals.discard(n)
        return env

    def has_sites(self, node: cst.CSTNode) -> bool:
        found = False
        conv = self

        class V(cst.CSTVisitor):
            def visit_Call(self, n):
                nonlocal found
                if n in conv.site_of or _is_var_call(n):
                    found = True

        node.visit(V())
        return found

    def small(self, node, env, ind, dry, loops, conds) -> None:
        calls: list[cst.Call] = []

        class V(cst.CSTVisitor):
            def leave_Call(self, n):
                calls.append(n)

        node.visit(V())
        for c in calls:
            if c in self.site_of:
                self.process_site(c, env, ind, dry, loops, conds)
            elif _is_var_call(c):
                self.process_var(c, env, ind, dry, loops)
        if isinstance(node, cst.Assign | cst.AnnAssign) and node.value is not None:
            tnodes = (
                [t.target for t in node.targets] if isinstance(node, cst.Assign) else [node.target]
            )
            simple = len(tnodes) == 1 and isinstance(tnodes[0], cst.Name)
            if simple:
                t = tnodes[0].value
                text = None
                if not any(c in self.site_of or _is_var_call(c) for c in calls):
                    text = self.init_expr(node.value, env, self.method_locals)
                if text is not None and t not in self.ctx.module_globals:
                    if not dry:
                        self.emit(ind, f"{t} = {text}", binds=t)
                    self.init_locals.add(t)
                    self.mirrored.add(t)
                else:
                    self.init_locals.discard(t)
                env[t] = self.size_of(node.value, env)
            else:
                for tn in tnodes:
                    for n in targets(tn):
                        env[n] = None
                        self.init_locals.discard(n)
        elif isinstance(node, cst.Return):
            self.outs[node] = None if node.value is None else self.size_of(node.value, env)

    def do_for(self, node: cst.For, env, ind, dry, loops):
        has = self.has_sites(node.body)
        if node.orelse is not None and self.has_sites(node.orelse):
            raise self.fail("a submodule is created in the else branch of a loop", node)
        loop_names = targets(node.target)
        iter_t = self.init_expr(node.iter, env, self.method_locals) if has else None
        if has and (iter_t is None or not loop_names):
            raise self.fail(
                "submodules are created in a loop over values that depend on the inputs", node
            )
        if has:
            self.init_locals.update(loop_names)
        env0 = dict(env)
        env_a = self.walk(node.body.body, dict(env0), ind + 1, True, [*loops, node])
        running: dict[str, str] = {}
        for v in set(env_a) | set(env0):
            if env_a.get(v) != env0.get(v):
                if has and env0.get(v) is not None and env_a.get(v) is not None:
                    if v not in self.running_names:
                        self.running_names[v] = unique(f"{v}_features", self.taken)
                        self.taken.add(self.running_names[v])
                    running[v] = self.running_names[v]
                else:
                    env0[v] = None
        if has and not dry:
            for v, rv in running.items():
                if env0[v] != rv:
                    self.emit(ind, f"{rv} = {env0[v]}")
            if not loops:
                for site in self.sites_in(node):
                    if site.is_list:
                        self.emit(ind, f"self.{site.attr} = nnx.List()")
            self.emit(ind, f"for {code(node.target)} in {iter_t}:")
        for v, rv in running.items():
            env0[v] = rv
            self.init_locals.add(rv)
        env_b = self.walk(node.body.body, dict(env0), ind + 1, dry, [*loops, node])
        if has and not dry:
            for v, rv in running.items():
                if env_b.get(v) is None:
                    raise self.fail(f"the size of {v!r} is lost inside the loop", node)
                if env_b[v] != rv:
                    self.emit(ind + 1, f"{rv} = {env_b[v]}")
        out = dict(env0)
        for v in set(env_b) | set(env0):
            if v in running:
                out[v] = running[v]
            elif env_b.get(v) != env0.get(v):
                out[v] = None
        if node.orelse is not None:
            out = self.walk(node.orelse.body.body, out, ind, dry, loops)
        return out

    def sites_in(self, node: cst.CSTNode) -> list[Site]:
        found: list[Site] = []
        conv = self

        class V(cst.CSTVisitor):
            def visit_Call(self, n):
                if n in conv.site_of:
                    found.append(conv.site_of[n])

        node.visit(V())
        return found

    def do_if(self, node: cst.If, env, ind, dry, loops, conds):
        cond_t = self.init_expr(node.test, env, self.method_locals)
        branches = [node.body.body]
        orelse = node.orelse
        else_body = None
        if isinstance(orelse, cst.Else):
            else_body = orelse.body.body
        elif isinstance(orelse, cst.If):
            else_body = [orelse]
        has = self.has_sites(node)
        if has and cond_t is None:
            raise self.fail(
                "submodules are created under a condition that depends on the call arguments "
                "or inputs", node,
            )  # fmt: skip
        mirror = cond_t is not None
        if mirror and not dry:
            self.emit(ind, f"if {cond_t}:")
        mark = len(self.init_lines)
        env_t = self.walk(branches[0], dict(env), ind + 1, dry or not mirror, loops, conds + 1)
        if mirror and not dry and len(self.init_lines) == mark:
            self.emit(ind + 1, "pass")
        env_f = dict(env)
        if else_body is not None:
            if mirror and not dry:
                self.emit(ind, "else:")
            mark = len(self.init_lines)
            env_f = self.walk(else_body, dict(env), ind + 1, dry or not mirror, loops, conds + 1)
            if mirror and not dry and len(self.init_lines) == mark:
                self.emit(ind + 1, "pass")
        out = {}
        for v in set(env_t) | set(env_f):
            a, b = env_t.get(v), env_f.get(v)
            if a == b:
                out[v] = a
            elif a is not None and b is not None and mirror:
                out[v] = f"({a} if {cond_t} else {b})"
            else:
                out[v] = None
        return out


def _is_var_call(node: cst.Call) -> bool:
    f = node.func
    return is_self_attr(f) and f.attr.value in ("param", "variable")


def _assigned(node: cst.CSTNode) -> set[str]:
    out: set[str] = set()

    class V(cst.CSTVisitor):
        def visit_AssignTarget(self, n):
            out.update(targets(n.target))

        def visit_AugAssign(self, n):
            out.update(targets(n.target))

        def visit_AnnAssign(self, n):
            out.update(targets(n.target))

        def visit_For(self, n):
            out.update(targets(n.target))

        def visit_WithItem(self, n):
            if n.asname is not None:
                out.update(targets(n.asname.name))

    node.visit(V())
    return out


class _Compact(_Walker):
    """``@nn.compact`` classes (and the shared site/variable handling)."""

    # -- one submodule call site -------------------------------------------------------------

    def target(self, site: Site, loops, conds) -> str:
        if not site.is_list:
            return f"self.{site.attr}"
        loop = loops[-1]
        it = loop.iter
        if (
            len(loops) == 1
            and conds == 0
            and isinstance(loop.target, cst.Name)
            and isinstance(it, cst.Call)
            and dotted(it.func) == "range"
            and len(it.args) == 1
            and sum(1 for s in self.sites_in(loop.body) if s is site) == 1
        ):
            return f"self.{site.attr}[{loop.target.value}]"
        name = f"{site.attr}_iter"
        stmts = self.insert_before.setdefault(loops[0], [])
        line = f"{name} = iter(self.{site.attr})"
        if line not in stmts:
            stmts.append(line)
        return f"next({name})"

    def arg_fields(self, node: cst.Call, cls: type) -> dict[str, cst.BaseExpression]:
        """The constructor arguments by Linen field name (positional ones mapped by order)."""
        fields = [f.name for f in linen_fields(cls)]
        out: dict[str, cst.BaseExpression] = {}
        for i, a in enumerate(node.args):
            if a.star:
                raise self.fail("*args/**kwargs in a submodule construction", node)
            if a.keyword is None:
                if i >= len(fields):
                    raise self.fail(f"too many positional arguments for {cls.__name__}", node)
                out[fields[i]] = a.value
            elif a.keyword.value != "name":
                out[a.keyword.value] = a.value
        return out

    def fallback(self, site: Site, what: str, get: Callable[..., Any], ann: str = "int") -> str:
        line = site.line

        def resolve(inst: Instance) -> Any:
            values = [get(c, inst) for c in site.calls_in(inst)]
            return one_value(values, f"{site.attr}: {what}", line)

        return self.add_size_param(f"{site.attr}_{what}", resolve, line, ann)

    def process_site(self, node: cst.Call, env, ind, dry, loops, conds) -> None:
        site = self.site_of[node]
        first = node.args[0].value if node.args and node.args[0].keyword is None else None
        in_expr = self.size_of(first, env) if first is not None else None
        ctor: cst.Call = node.func  # type: ignore[assignment]
        kw = self.arg_fields(ctor, site.child_cls)
        moved: list[str] = []
        drop_call_args: set[int] = set()
        out: str | None = None
        lines: list[str] = []
        if site.kind == "layer":
            rule = rule_for(site.child_cls)
            assert rule is not None
            for i, a in enumerate(node.args):
                if a.keyword is not None and a.keyword.value in rule.modes:
                    if names_in(a.value) & self.removed:
                        drop_call_args.add(i)
            args_t: dict[str, str] = {}
            for f, v in kw.items():
                if f in rule.modes:
                    names = names_in(v)
                    if names & self.removed:
                        continue
                    t = self.init_expr(v, env, self.method_locals)
                    if t is None:
                        if names <= set(self.plan.call_params) | {"not"}:
                            moved.append(f"{f}={code(v)}")
                            continue
                        raise self.fail(f"{f}= depends on values computed in the call", node)
                    args_t[f] = t
                    continue
                t = self.init_expr(v, env, self.method_locals)
                if t is None:
                    t = "?" if dry else self.fallback(site, f, _field_of(f))
                args_t[f] = t
            in_t = None if _other_axis(site) else in_expr
            if rule.needs_size and in_t is None and not dry:
                in_t = self.fallback(
                    site, rule.size_kw or "in_features", lambda c, i: _in_size(c, node, self),
                    "tuple[int, ...]" if _other_axis(site) else "int",
                )
            if rule.out == IN:
                out = in_t
            elif rule.out in args_t:
                out = args_t[rule.out]
            elif rule.out_default_in:
                out = in_t
            else:
                out = literal(field_default(site.child_cls, rule.out or ""))
            if not dry:
                lines = [self.layer_ctor(site, rule, ctor, args_t, in_t)]
        elif site.kind == "user":
            child = self.ctx.plans[site.child_cls.__name__]
            for i, a in enumerate(node.args):
                name = a.keyword.value if a.keyword is not None else (
                    child.call_params[i] if i < len(child.call_params) else None)
                if name in child.removed_flags:
                    drop_call_args.add(i)
            parts: list[str] = []
            for i, a in enumerate(ctor.args):
                if a.keyword is not None and a.keyword.value == "name":
                    continue
                t = self.init_expr(a.value, env, self.method_locals)
                if t is None:
                    f = a.keyword.value if a.keyword else linen_fields(site.child_cls)[i].name
                    t = "?" if dry else self.fallback(site, f, _field_of(f))
                    parts.append(f"{f}={t}")
                else:
                    parts.append(f"{a.keyword.value}={t}" if a.keyword else t)
            in_t = in_expr
            for sp in child.size_params:
                if sp.is_input and in_t is not None:
                    parts.append(f"{sp.name}={in_t}")
                    continue
                val = "?" if dry else self.fallback(
                    site, sp.name,
                    lambda c, i, n=sp.name: self.ctx.plans[c.cls.__name__].size_param(n).resolve(
                        i.tree[c.path]),
                    sp.annotation,
                )  # fmt: skip
                if sp.is_input:
                    in_t = None if dry else val
                parts.append(f"{sp.name}={val}")
            out = self.child_out(child, site.child_cls, kw, env, in_t)
            outs = {self.ctx.plans[c.cls.__name__].out_expr for _, c in site.execs}
            out = out if len(outs) == 1 else None
            if not dry:
                func = self.init_expr(ctor.func, env, self.method_locals)
                if func is None:
                    raise self.fail("the submodule class depends on call data", node)
                lines = [f"{func}({', '.join([*parts, 'rngs=rngs'])})"]
        else:  # kept as Linen: wrapped
            if loops:
                name = site.child_cls.__name__
                raise self.fail(
                    f"{name} is created in a loop, and {name} stays Linen "
                    f"({self.ctx.kept.get(name, 'not converted')})", node,
                )  # fmt: skip
            if not dry:
                lines = self.wrapped_ctor(site, ctor, env, node)
        if not dry:
            head = f"self.{site.attr}.append(" if site.is_list else f"self.{site.attr} = "
            tail = ")" if site.is_list else ""
            for extra in lines[:-1]:
                self.emit(ind, extra)
            self.emit(ind, head + lines[-1] + tail)
        self.site_out[node] = out
        target = self.target(site, loops, conds) if not dry else ""

        def replace(updated: cst.Call, target=target, drop=frozenset(drop_call_args)):
            args = [a for i, a in enumerate(updated.args) if i not in drop]
            for m in moved:
                k, _, v = m.partition("=")
                args.append(cst.Arg(
                    value=cst.parse_expression(v), keyword=cst.Name(k),
                    equal=cst.AssignEqual(whitespace_before=cst.SimpleWhitespace(""),
                                          whitespace_after=cst.SimpleWhitespace("")),
                ))  # fmt: skip
            if args:
                args[-1] = args[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
            return updated.with_changes(func=cst.parse_expression(target), args=args)

        if not dry:
            self.replacers[node] = replace

    def layer_ctor(self, site: Site, rule: Rule, ctor: cst.Call, args_t, in_t) -> str:
        allowed = nnx_kwargs(rule.nnx)
        named: dict[str, str] = {}
        for f, t in args_t.items():
            nkw = rule.rename.get(f, f)
            if nkw not in allowed:
                raise self.fail(f"nn.{rule.linen}({f}=...) has no nnx.{rule.nnx} argument", ctor)
            named[nkw] = t
        direct = self.resolve(ctor.func) is site.child_cls
        parts: list[str] = []
        if direct:
            func = f"nnx.{rule.nnx}"
            for slot in rule.positional:
                if slot == IN:
                    parts.append(str(in_t))
                    continue
                nkw = rule.rename.get(slot, slot)
                if nkw not in named:
                    break
                parts.append(named.pop(nkw))
        else:
            func = self.init_expr(ctor.func, {}, self.method_locals)
            if func is None:
                raise self.fail("the layer factory depends on call data", ctor)
            if rule.needs_size:
                parts.append(f"{rule.size_kw}={in_t}")
        parts += [f"{k}={v}" for k, v in named.items()]
        parts += [f"{k}={v}" for k, v in rule.extra.items() if k not in named]
        parts.append("rngs=rngs")
        return f"{func}({', '.join(parts)})"

    def wrapped_ctor(self, site: Site, ctor: cst.Call, env, node) -> list[str]:
        parts = []
        for a in ctor.args:
            if a.keyword is not None and a.keyword.value == "name":
                continue
            t = self.init_expr(a.value, env, self.method_locals)
            if t is None:
                raise self.fail("the wrapped module's arguments depend on call data", node)
            parts.append(f"{a.keyword.value}={t}" if a.keyword else t)
        func = self.init_expr(ctor.func, env, self.method_locals)
        call = site.execs[0][1]
        samples = [_sample(v, self, node) for v in call.args]
        samples += [f"{k}={_sample(v, self, node)}" for k, v in call.kwargs.items()]
        reason = self.ctx.kept.get(site.child_cls.__name__, "kept as Linen")
        self.plan.needs.update({"linnx", "jnp"})
        self.plan.wrapped_children.append((site.attr, site.child_cls.__name__, site.line))
        return [
            f"# TODO(linnx convert): {site.child_cls.__name__} stays Linen: {reason}",
            f"linnx.ToNNX({func}({', '.join(parts)}), rngs=rngs).lazy_init({', '.join(samples)})",
        ]

    def child_out(self, child, child_cls, kw, env, in_t) -> str | None:
        """The child's output size, its fields replaced by this call's arguments."""
        if child.out_expr is None:
            return None
        expr = cst.parse_expression(child.out_expr)
        bad = False
        conv = self
        in_name = next((sp.name for sp in child.size_params if sp.is_input), None)

        class T(cst.CSTTransformer):
            def leave_Attribute(self, original, updated):
                nonlocal bad
                if is_self_attr(updated):
                    f = updated.attr.value
                    if f in kw:
                        t = conv.init_expr(kw[f], env, conv.method_locals)
                    else:
                        t = literal(field_default(child_cls, f))
                    if t is None:
                        bad = True
                        return updated
                    return cst.parse_expression(f"({t})")
                return updated

            def leave_Name(self, original, updated):
                nonlocal bad
                if in_name is not None and updated.value == in_name:
                    if in_t is None:
                        bad = True
                        return updated
                    return cst.parse_expression(f"({in_t})")
                return updated

        new = expr.visit(T())
        if bad:
            return None
        text = code(new)
        return text[1:-1] if re.fullmatch(r"\([^()]*\)", text) else text

    # -- self.param / self.variable ----------------------------------------------------------

    def process_var(self, node: cst.Call, env, ind, dry, loops, attr: str | None = None) -> None:
        if dry:
            return
        if loops:
            raise self.fail("a variable is created inside a loop", node)
        kind = node.func.attr.value
        args = list(node.args)
        if any(a.keyword is not None or a.star for a in args):
            raise self.fail(f"self.{kind}(...) with keyword arguments", node)
        strs = 1 if kind == "param" else 2
        if len(args) < strs + 1 or not all(
            isinstance(a.value, cst.SimpleString) for a in args[:strs]
        ):
            raise self.fail(f"self.{kind}(...) without literal names and an init function", node)
        names = [a.value.evaluated_value for a in args[:strs]]
        col, name = ("params", names[0]) if kind == "param" else (names[0], names[1])
        if attr is None:
            attr = unique(identifier(name), self.taken)
            self.taken.add(attr)
        init = self.init_expr(args[strs].value, env, self.method_locals)
        if init is None:
            raise self.fail(f"the init function of {name!r} depends on call data", node)
        rest = [self.init_expr(a.value, env, self.method_locals) for a in args[strs + 1 :]]
        if any(r is None for r in rest):
            if len(rest) != 1:
                raise self.fail(f"the shape of {name!r} depends on call data", node)

            def resolve(inst: Instance, key=(col, name)) -> Any:
                leaf = inst.own_vars.get(key)
                return None if leaf is None else tuple(int(d) for d in leaf.shape)

            rest = [self.add_size_param(f"{attr}_shape", resolve, self.lineno(node),
                                        "tuple[int, ...]")]  # fmt: skip
        if kind == "param":
            value = f"nnx.Param({init}({', '.join(['rngs.params()', *rest])}))"
            replacement = f"self.{attr}.value"
        else:
            var_type = VAR_TYPES.get(col)
            if var_type is None:
                var_type = self.plan.var_classes.setdefault(
                    col, "".join(p.capitalize() for p in identifier(col).split("_") if p)
                )
            lam = args[strs].value
            if isinstance(lam, cst.Lambda) and not lam.params.params and not rest:
                value = f"{var_type}({self.init_expr(lam.body, env, self.method_locals)})"
            else:
                value = f"{var_type}({init}({', '.join(rest)}))"
            replacement = f"self.{attr}"
        self.emit(ind, f"self.{attr} = {value}")
        self.plan.var_attrs[(col, name)] = attr
        self.replacers[node] = lambda updated, r=replacement: cst.parse_expression(r)


def _field_of(name: str) -> Callable[[ChildCall, Instance], Any]:
    """Reads a field of the traced child module (a constructor argument computed in the call)."""
    return lambda c, i: getattr(c.module, name)


def _other_axis(site: Site) -> bool:
    """Whether the layer contracts other axes than the last (DenseGeneral(axis=...))."""
    axis = getattr(site.execs[0][1].module, "axis", -1)
    return site.child_cls.__name__ == "DenseGeneral" and axis not in (-1, (-1,))


def _in_size(call: ChildCall, node, conv) -> Any:
    a = call.args[0] if call.args else None
    if a is None or not hasattr(a, "shape") or not a.shape:
        raise conv.fail("the layer's input has no last axis to size it", node)
    axis = getattr(call.module, "axis", -1)
    if call.cls.__name__ == "DenseGeneral" and isinstance(axis, tuple | list):
        return tuple(int(a.shape[ax]) for ax in axis)
    return int(a.shape[axis if isinstance(axis, int) else -1])


def _sample(value: Any, conv, node) -> str:
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"jnp.zeros({literal(tuple(int(d) for d in value.shape))}, jnp.{value.dtype})"
    text = literal(value)
    if text is None:
        raise conv.fail(f"cannot write an example input of type {type(value).__name__}", node)
    return text
