"""The shared base of the class converters: names, init-context expressions, call sites.

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
from typing import Any, cast

import libcst as cst

from ._classes import (
    ClassPlan,
    Site,
    SizeParam,
    Unsupported,
    linen_fields,
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
from ._idioms import inline_helper, module_factory, static_site
from ._rng import CONVERTED_API
from ._rnn import add_rnn_calls, is_cell, is_recurrent, rnn_site
from ._rules import Rule, call_mode, nnx_function, nnx_kwargs, rule_for
from ._sharding import annotation_call, is_axes_call
from ._trace import ChildCall, Instance

__all__ = ["Context"]

# Functions that keep the last axis of their first argument.
_KEEPS_SIZE = frozenset(
    "relu gelu silu swish tanh sigmoid elu celu selu leaky_relu softplus softmax log_softmax "
    "max_pool avg_pool min_pool asarray hard_tanh relu6 mish soft_sign log_sigmoid dropout "
    "normalize standardize abs exp square sqrt clip where with_logical_constraint "
    "with_sharding_constraint".split()
)
_LINEN_API = frozenset(
    "make_rng sow is_initializing is_mutable_collection put_variable get_variable has_variable "
    "has_rng scope variables perturb apply init bind unbind lazy_init path".split()
)
_BASE_NAMES = {
    "Linear": "linear",
    "LinearGeneral": "linear",
    "Conv": "conv",
    "ConvTranspose": "conv_transpose",
    "Embed": "embed",
    "LayerNorm": "layer_norm",
    "RMSNorm": "rms_norm",
    "GroupNorm": "group_norm",
    "BatchNorm": "batch_norm",
    "Dropout": "dropout",
    "MultiHeadAttention": "attention",
}


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
    class_nodes: dict[str, cst.ClassDef] = dataclasses.field(default_factory=dict)
    reached: set[str] = dataclasses.field(default_factory=set)  # classes the examples built


def _constructions(method: cst.FunctionDef) -> dict[str, cst.Call]:
    """Names the method assigns exactly once, to a call (``dense = nn.Dense(4)``)."""
    seen: dict[str, list] = {}

    class V(cst.CSTVisitor):
        def visit_Assign(self, n):
            for t in n.targets:
                if isinstance(t.target, cst.Name):
                    seen.setdefault(t.target.value, []).append(n.value)

        def visit_AugAssign(self, n):
            if isinstance(n.target, cst.Name):
                seen.setdefault(n.target.value, []).append(None)

        def visit_For(self, n):
            for name in targets(n.target):
                seen.setdefault(name, []).append(None)

    method.body.visit(V())
    return {k: v[0] for k, v in seen.items() if len(v) == 1 and isinstance(v[0], cst.Call)}


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
        self.site_of: dict[cst.Call, Site] = {}
        self.replacers: dict[cst.CSTNode, Callable[[Any], cst.CSTNode]] = {}
        self.site_out: dict[cst.CSTNode, str | None] = {}
        self.init_lines: list[tuple[int, str, str | None]] = []  # (indent, text, binds)
        self.init_locals: set[str] = set()
        self.removed: set[str] = set()
        self.mode_loads: dict[str, int] = {}
        self.insert_before: dict[cst.CSTNode, list[str]] = {}
        self.loop_over: dict[cst.CSTNode, dict[str, str]] = {}  # loop -> {list attr: item}
        self.taken: set[str] = set(self.fields) | {"rngs"}
        self.running_names: dict[str, str] = {}
        self.named: dict[cst.Call, Site] = {}  # constructions assigned to a name, by node
        self.emitted: set[int] = set()  # sites whose __init__ line is written
        self.inlined: dict[str, int] = {}  # factory helper -> constructions written in place
        self.hoisted: set[int] = set()  # sites written where they are constructed (_rnn)
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

    def is_var_call(self, node: cst.Call) -> bool:
        """``self.param``/``self.variable``, or Flax's ``param_with_axes`` and
        ``variable_with_axes``."""
        f = node.func
        if is_self_attr(f) and f.attr.value in ("param", "variable"):
            return True
        return is_axes_call(self, node)

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
        self, node: cst.CSTNode, env: dict[str, str | None], method_locals: set[str]
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
                sharded = annotation_call(conv, original, updated)
                if sharded is not None:  # nn.with_(logical_)partitioning
                    return sharded
                return conv.convert_partial(updated)

        return cast(cst.CSTNode, node.visit(T()))

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
        by_pos: dict[tuple | None, list[tuple[Instance, ChildCall]]] = {}
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
        assigns = _constructions(method)
        self.lift_assigns = assigns  # `ScanBlock = nn.scan(Block, ...)` (see _lifted)

        ctors = set(assigns.values())

        class V(cst.CSTVisitor):
            def __init__(self) -> None:
                self.loops = 0
                self.fn = 0
                self.loop_ctors: set[cst.Call] = set()

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
                if self.loops and node in ctors:
                    self.loop_ctors.add(node)
                execs = by_pos.pop(conv.pos_key(node), None)
                f = node.func
                if is_self_attr(f) and f.attr.value == "sow":
                    conv.convert_sow(node)
                elif is_self_attr(f) and f.attr.value in CONVERTED_API:
                    conv.convert_api_call(node)
                elif is_self_attr(f) and f.attr.value in _LINEN_API:
                    raise conv.fail(f"self.{f.attr.value}(...) is not converted yet", node)
                if execs is None and not self.loops and not self.fn:
                    execs = static_site(conv, node)  # a Flax layer no example reached: []
                if execs is None:
                    return
                if self.fn:
                    raise conv.fail("a submodule is created inside a nested function", node)
                if (
                    isinstance(f, cst.Attribute)
                    and isinstance(f.value, cst.Name)
                    and f.value.value in assigns
                ):
                    # `rnn.initial_state(...)`: another method of a named submodule, kept
                    method_calls.setdefault(assigns[f.value.value], []).extend(execs)
                    return
                var = f.value if isinstance(f, cst.Name) else None
                if var is not None and var in assigns:
                    # `dense = nn.Dense(4)` ... `dense(x)`: one submodule, maybe called twice
                    ctor = assigns[var]
                    # an RNN cell built before a loop and stepped inside it: created in
                    # __init__ where the construction is (see _rnn._cell_site)
                    hoist = (
                        self.loops
                        and ctor not in self.loop_ctors
                        and all(is_cell(c.cls) for _, c in execs)
                    )
                    if self.loops and not hoist:
                        raise conv.fail("a named submodule is created in a loop", node)
                    site = conv.named.get(ctor)
                    if site is None:
                        site = conv.make_site(node, execs, False, ctor=ctor, var=var)
                        conv.named[ctor] = site
                    elif site.kind == "rnn":
                        add_rnn_calls(conv, site, execs, node)
                    else:
                        site.execs.extend(execs)
                    if hoist:
                        conv.hoisted.add(id(site))
                    conv.site_of[node] = site
                    return
                conv.site_of[node] = conv.make_site(node, execs, self.loops > 0)

        method_calls: dict[cst.Call, list] = {}
        method.body.visit(V())
        for ctor, execs in method_calls.items():
            if ctor not in self.named:
                raise self.fail("a method of a submodule that is never called itself", ctor)
            self.named[ctor].execs.extend(execs)
        if by_pos:
            raise self.fail("a submodule call could not be matched to the source")

    def literal_name(self, ctor: cst.Call, default: str | None, node: cst.CSTNode) -> str | None:
        """The ``name=`` a construction gives (a plain string literal), else ``default``."""
        for a in ctor.args:
            if a.keyword is not None and a.keyword.value == "name":
                value = a.value.evaluated_value if isinstance(a.value, cst.SimpleString) else None
                if not isinstance(value, str):  # b"..." or an expression: no name to read
                    raise self.fail("name= is not a plain string", node)
                return value
        return default

    def convert_sow(self, node: cst.Call) -> None:
        """``self.sow('intermediates', name, value, ...)`` -> ``self.sow(nnx.Intermediate,
        name, value, ...)``: NNX's sow takes the same name, value, ``reduce_fn`` and
        ``init_fn`` (and the same defaults: values appended to a tuple)."""
        args = node.args
        first = args[0] if args else None
        if (
            first is None
            or first.keyword is not None
            or first.star
            or not isinstance(first.value, cst.SimpleString)
            or first.value.evaluated_value != "intermediates"
        ):
            raise self.fail(
                "self.sow(...) into a collection other than a literal 'intermediates' is not "
                "converted yet",
                node,
            )
        if any(a.star for a in args):
            raise self.fail("self.sow(...) with *args or **kwargs", node)

        def replace(updated: cst.Call) -> cst.Call:
            head = updated.args[0].with_changes(value=cst.parse_expression("nnx.Intermediate"))
            return updated.with_changes(args=[head, *updated.args[1:]])

        self.replacers[node] = replace

    def make_site(
        self,
        node: cst.Call,
        execs,
        in_loop: bool,
        ctor: cst.Call | None = None,
        var: str | None = None,
    ) -> Site:
        from flax import linen as nn

        if any(c.cls is nn.Sequential for _, c in execs):
            return self.sequential_site(node, execs, in_loop, ctor, var)
        if any(is_recurrent(c.cls) for _, c in execs):
            return rnn_site(self, node, execs, in_loop, ctor, var)  # type: ignore[arg-type]
        classes = list(dict.fromkeys(c.cls for _, c in execs))
        if not execs:  # not reached by the examples: the class is in the source
            classes = [cast(type, module_factory(self, cast(cst.Call, node.func).func))]
        norule = [c for c in classes if c.__module__.startswith("flax.") and not rule_for(c)]
        if norule:
            raise self.fail(f"nn.{norule[0].__name__} has no conversion rule yet", node)
        why = self.incompatible(classes) if len(classes) != 1 else None
        if why is not None:
            names = ", ".join(c.__name__ for c in classes)
            raise self.fail(
                f"this call creates modules of several classes ({names}) that one NNX call "
                f"cannot build: {why}",
                node,
            )
        child_cls: type = classes[0]
        rule = rule_for(child_cls)
        name_arg = None
        loop_base = None
        if ctor is None and isinstance(node.func, cst.Call):
            ctor = inline_helper(self, node.func)  # `self._dense(4)(x)`: the helper's layer
        if ctor is not None:
            for a in ctor.args:
                if a.keyword is not None and a.keyword.value == "name":
                    if isinstance(a.value, cst.SimpleString):
                        value = a.value.evaluated_value
                        if not isinstance(value, str):  # b"..." names nothing in Linen
                            raise self.fail("name= is not a plain string", node)
                        name_arg = value
                    elif isinstance(a.value, cst.FormattedString) and in_loop:
                        head = a.value.parts[0] if a.value.parts else None
                        if isinstance(head, cst.FormattedStringText):
                            loop_base = identifier(head.value.rstrip("_-")) if head.value else None
                    else:
                        raise self.fail("name= is not a plain string", node)
        else:
            raise self.fail("the submodule is created in one statement and called in another", node)
        user = self.ctx.user_classes.get(child_cls.__name__)
        name_arg = name_arg or var
        factory = dotted(ctor.func)
        if factory is not None and self.resolve(ctor.func) is child_cls:
            factory = None  # a class named directly: name the attribute after the layer kind
        from ._lifted import base_name, site_lift

        lift = site_lift(self, ctor)  # nn.scan(Block, ...)(...): see _lifted
        if lift is not None:
            factory = None
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
                "not converted yet",
                node,
            )
        else:
            from ._errors import UnknownLayerError

            mod = child_cls.__module__
            raise UnknownLayerError(
                f"{self.ctx.path}:{self.lineno(node)}: {mod}.{child_cls.__name__} has no "
                "conversion rule and is not defined in the source file.\nFix: convert that "
                "file first, or pass --wrap-unknown to keep the calling class as Linen "
                "inside linnx.ToNNX.",
                path=self.ctx.path,
                line=self.lineno(node),
            )
        if factory is not None:
            last = factory.split(".")[-1]
            base = re.sub(r"_(cls|class|def|fn|factory)$", "", last) or base
        if loop_base:
            base = loop_base
        if lift is not None:
            base = base_name(self, lift, child_cls, base)
        return Site(
            key=node,
            child_cls=child_cls,
            kind=kind,
            execs=execs,
            line=self.lineno(node),
            base=base,
            is_list=in_loop,
            name_arg=name_arg,
            ctor=ctor,
            named=var is not None,
            lift=lift,
        )

    def sequential_site(self, node: cst.Call, execs, in_loop: bool, ctor, var) -> Site:
        """``nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])(x)``: one site; the layers
        built inline (Linen names them after the calling module) are its members."""
        from flax import linen as nn

        if in_loop:
            raise self.fail("nn.Sequential created in a loop", node)
        if ctor is None and isinstance(node.func, cst.Call):
            ctor = node.func
        if ctor is None:
            raise self.fail("nn.Sequential built in one statement and called in another", node)
        layers = ctor.args[0].value if ctor.args and ctor.args[0].keyword is None else None
        if (
            not isinstance(layers, cst.List | cst.Tuple)
            or any(a.keyword is not None and a.keyword.value != "name" for a in ctor.args[1:])
            or any(isinstance(e, cst.StarredElement) for e in layers.elements)
        ):
            raise self.fail("nn.Sequential(...) without a literal list of layers", node)
        name_arg = self.literal_name(ctor, var, node)
        seq = [(i, c) for i, c in execs if c.cls is nn.Sequential]
        inner = [(i, c) for i, c in execs if c.cls is not nn.Sequential]
        modules = [k for k, e in enumerate(layers.elements) if isinstance(e.value, cst.Call)]
        members: dict[str, int] = {}
        for inst in {id(i): i for i, _ in seq}.values():
            names = list(dict.fromkeys(c.name for i, c in inner if i is inst))
            if len(names) != len(modules):
                raise self.fail("nn.Sequential's layers could not be matched to its list", node)
            for name, k in zip(names, modules, strict=True):
                if members.setdefault(name, k) != k:
                    raise self.fail("nn.Sequential's layers are named differently per call", node)
        return Site(
            key=node,
            child_cls=nn.Sequential,
            kind="sequential",
            execs=seq,
            line=self.lineno(node),
            base="sequential",
            name_arg=name_arg,
            ctor=ctor,
            inner=inner,
            members=members,
            named=var is not None,
        )

    def incompatible(self, classes: list[type]) -> str | None:
        """Why one call site cannot create these converted classes alike (a ``block_cls``
        field given several classes by the examples), or None when it can: they must be
        converted classes of the file taking the same size arguments and call arguments."""
        plans = []
        for c in classes:
            if self.ctx.user_classes.get(c.__name__) is not c:
                flax_layer = c.__module__.startswith("flax.")
                what = "a Flax layer, not a class" if flax_layer else "not a class"
                return (
                    f"{c.__name__} is {what} of the file: the class given at the construction "
                    "sites would have to become an NNX one"
                )
            if c.__name__ not in self.ctx.plans:
                return f"{c.__name__} stays Linen ({self.ctx.kept.get(c.__name__, 'kept')})"
            plans.append(self.ctx.plans[c.__name__])
        first = plans[0]
        for p in plans[1:]:
            a = [s.name for s in first.size_params]
            b = [s.name for s in p.size_params]
            if a != b:
                return f"{first.name} takes the size arguments {a}, {p.name} {b}"
            if p.removed_flags != first.removed_flags:
                return (
                    f"the call flags that became model.train()/model.eval() differ: "
                    f"{first.name} {first.removed_flags}, {p.name} {p.removed_flags}"
                )
            if p.call_params != first.call_params:
                return (
                    f"their calls take other arguments: {first.name} {first.call_params}, "
                    f"{p.name} {p.call_params}"
                )
        return None

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
        seen: set[int] = set()
        for node, site in self.site_of.items():
            if site.kind == "layer":
                rule = rule_for(site.child_cls)
                assert rule is not None
                ctor_args = () if id(site) in seen else site.ctor.args
                seen.add(id(site))
                for a in ctor_args:
                    if a.keyword is not None and a.keyword.value in rule.modes:
                        out.append(a.value)
                out += [a.value for i, a in enumerate(node.args) if call_mode(rule, i, a)]
            elif site.kind == "user":
                child = self.ctx.plans[site.child_cls.__name__]
                out += [node.args[i].value for i in child.flag_args(node.args)]
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
