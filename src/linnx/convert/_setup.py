"""``setup()`` classes: the setup body becomes ``__init__``, every method is kept.

The input size of each submodule comes from a data-flow walk over the traced method
(``__call__``) that follows calls into the class's own methods (``self.encode(x)``): the first
call of ``self.dense(...)`` says what its input's last axis is, in terms of the fields.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import libcst as cst

from ._classes import Site, literal
from ._convert_class import _BASE_NAMES
from ._cstutil import calls_in, code, dotted, is_self_attr, keyword_arg, names_in, snake, targets
from ._idioms import inline_helper
from ._rnn import is_recurrent, setup_rnn
from ._rules import IN, call_mode, rule_for
from ._sharding import axes_call

if TYPE_CHECKING:
    from ._build import _Builder

__all__ = ["convert_setup"]


def _self_call(node: cst.CSTNode) -> str | None:
    if isinstance(node, cst.Call) and is_self_attr(node.func):
        return node.func.attr.value
    return None


def convert_setup(b: _Builder, setup: cst.FunctionDef) -> dict:
    methods = {
        s.name.value: s
        for s in b.node.body.body
        if isinstance(s, cst.FunctionDef) and s.name.value != "setup"
    }
    call = methods.get("__call__")
    # -- the submodules setup() assigns --------------------------------------------------------
    execs: dict[str, list] = {}
    for inst in b.instances:
        for c in inst.calls:
            if c.path[:-1] == inst.path:
                execs.setdefault(c.name, []).append((inst, c))
    sites: dict[str, Site] = {}
    lists: dict[str, cst.ListComp] = {}
    assigned: dict[str, cst.Call] = {}
    params: set[str] = set()
    for stmt in setup.body.body:
        if not isinstance(stmt, cst.SimpleStatementLine):
            raise b.fail("setup() holds a compound statement", stmt)
        for small in stmt.body:
            if not (
                isinstance(small, cst.Assign)
                and len(small.targets) == 1
                and is_self_attr(small.targets[0].target)
            ):
                continue
            attr = small.targets[0].target.attr.value
            value = small.value
            axes = axes_call(b, value) if isinstance(value, cst.Call) else None
            if isinstance(value, cst.Call) and (
                _self_call(value) == "param" or (axes is not None and axes[0] == "param")
            ):
                params.add(attr)
                continue
            if isinstance(value, cst.Call) and (_self_call(value) == "variable" or axes):
                continue
            if attr in execs:
                if not isinstance(value, cst.Call):
                    raise b.fail(f"self.{attr} is not a single module construction", small)
                value = inline_helper(b, value)  # `self.proj = self._dense(4)`: its layer
                assigned[attr] = value
                site = _make_site(b, attr, value, execs.pop(attr))
                sites[attr] = site
            elif isinstance(value, cst.Call) and _is_module_class(b.resolve(value.func)):
                # No example called it: its sizes (and whether it converts) are unknown.
                raise b.fail(
                    f"self.{attr} ({code(value.func)}) is not called by any example; add an "
                    "example that reaches it (the model's __call__ or another method)",
                    small,
                )
            elif isinstance(value, cst.ListComp) and any(
                re.fullmatch(rf"{re.escape(attr)}_\d+", n) for n in execs
            ):
                names = [n for n in execs if re.fullmatch(rf"{re.escape(attr)}_\d+", n)]
                if (
                    value.for_in.inner_for_in is not None
                    or value.for_in.ifs
                    or not isinstance(value.elt, cst.Call)
                ):
                    raise b.fail(f"self.{attr}: only [Layer(...) for x in ...] converts", small)
                assigned[attr] = value.elt
                lists[attr] = value
                site = _make_site(b, attr, value.elt, [e for n in names for e in execs.pop(n)])
                site.is_list = site.index_from_name = True
                sites[attr] = site
            elif isinstance(value, cst.List | cst.ListComp | cst.Tuple):
                raise b.fail(f"self.{attr} is a list of submodules (not converted yet)", small)
    if execs:
        names = sorted(execs)
        raise b.fail(f"submodules {names} are not created by a plain assignment in setup()")
    b.plan.sites = list(sites.values())
    b.taken |= set(sites)
    # -- flags of __call__ and the data flow ------------------------------------------------
    call_args = [*call.params.params[1:], *call.params.kwonly_params] if call else []
    b.plan.call_params = [p.name.value for p in call_args]
    mode_nodes: list[cst.BaseExpression] = []
    if call is not None:
        _collect_modes(b, call, sites, mode_nodes)
        if not b.ctx.keep_signatures:
            from ._convert_class import _name_counts

            modes: dict[str, int] = {}
            for e in mode_nodes:
                for n, k in _name_counts(e).items():
                    modes[n] = modes.get(n, 0) + k
            total = _name_counts(call.body)
            for p in b.plan.call_params:
                if total.get(p, 0) and total.get(p, 0) == modes.get(p, 0):
                    b.removed.add(p)
            b.plan.removed_flags = [p for p in b.plan.call_params if p in b.removed]
    in_sizes: dict[str, str | None] = {}
    flow = _Flow(b, sites, assigned, methods, in_sizes)
    b.method_locals = set()
    b.outs = {}
    b.mirrored = set()
    if call is not None:
        b.outs = {None: flow.method(call, b.in_name)}
    # -- __init__: the setup body -------------------------------------------------------------
    for stmt in setup.body.body:
        for small in stmt.body:  # type: ignore[union-attr]
            if (
                isinstance(small, cst.Assign)
                and len(small.targets) == 1
                and is_self_attr(small.targets[0].target)
            ):
                attr = small.targets[0].target.attr.value
                value = small.value
                if attr in lists:
                    _emit_list(b, sites[attr], lists[attr])
                    continue
                if attr in sites:
                    _emit_site(b, sites[attr], assigned[attr], in_sizes.get(attr))
                    continue
                if isinstance(value, cst.Call) and b.is_var_call(value):
                    b.process_var(value, {}, 0, False, [], attr=attr)
                    continue
            text = b.init_expr(small, {}, set()) if not isinstance(small, cst.Expr) else None
            if text is None:
                raise b.fail("setup() holds a statement that __init__ cannot run", small)
            b.emit(0, text)
    # -- the methods ----------------------------------------------------------------------------
    out: dict = {setup: None}
    for name, m in methods.items():
        out[m] = _rewrite_method(b, m, sites, params, drop_flags=name == "__call__")
    return out


def _make_site(b, attr: str, ctor: cst.Call, execs) -> Site:
    classes = {c.cls for _, c in execs}
    if len(classes) != 1:
        raise b.fail(f"self.{attr} holds modules of several classes", ctor)
    (cls,) = classes
    rule = rule_for(cls)
    user = b.ctx.user_classes.get(cls.__name__)
    if is_recurrent(cls):
        kind = "rnn"
    elif rule is not None:
        kind = "layer"
    elif user is cls and cls.__name__ in b.ctx.plans:
        kind = "user"
    elif user is cls:
        kind = "kept"
    else:
        raise b.fail(f"self.{attr} is a {cls.__name__}, which has no conversion rule", ctor)
    base = _BASE_NAMES.get(rule.nnx, snake(rule.nnx)) if rule else snake(cls.__name__)
    return Site(
        key=attr,
        child_cls=cls,
        kind=kind,
        execs=execs,
        line=b.lineno(ctor),
        base=base,
        attr=attr,
        ctor=ctor,
    )


def _collect_modes(b, method, sites, out) -> None:
    class V(cst.CSTVisitor):
        def visit_Call(self, node):
            name = _self_call(node)
            site = sites.get(name) if name else None
            if site is not None and site.kind == "layer":
                rule = rule_for(site.child_cls)
                for i, a in enumerate(node.args):
                    if call_mode(rule, i, a) is not None:
                        out.append(a.value)
            elif site is not None and site.kind == "user":
                child = b.ctx.plans[site.child_cls.__name__]
                for i, a in enumerate(node.args):
                    n = (
                        a.keyword.value
                        if a.keyword is not None
                        else (child.call_params[i] if i < len(child.call_params) else None)
                    )
                    if n in child.removed_flags:
                        out.append(a.value)

    method.body.visit(V())


class _Flow:
    """Follows the last axis of each local through the methods; records each input size."""

    def __init__(self, b, sites, assigned, methods, in_sizes):
        self.b, self.sites, self.assigned = b, sites, assigned
        self.methods, self.in_sizes = methods, in_sizes
        self.stack: list[str] = []
        b.method_out = self.call_out
        self.orig_small = b.small
        b.small = self.small

    def small(self, node, env, ind, dry, loops, conds) -> None:
        for c in calls_in(node):
            if _self_call(c):
                self.call_out(c, env)
        if isinstance(node, cst.Return):
            self.returns.append(None if node.value is None else self.b.size_of(node.value, env))
            return
        if isinstance(node, cst.Assign | cst.AnnAssign | cst.AugAssign):
            tnodes = (
                [t.target for t in node.targets] if isinstance(node, cst.Assign) else [node.target]
            )
            size = self.b.size_of(node.value, env) if node.value is not None else None
            for t in tnodes:
                names = targets(t)
                for n in names:
                    if isinstance(node, cst.AugAssign):
                        continue
                    env[n] = size if len(names) == 1 and isinstance(t, cst.Name) else None

    def method(self, fn: cst.FunctionDef, first: str | None) -> str | None:
        env: dict[str, str | None] = {}
        ps = [p.name.value for p in fn.params.params][1:]
        if ps and first is not None:
            env[ps[0]] = first
        saved = getattr(self, "returns", None)
        self.returns: list[str | None] = []
        self.stack.append(fn.name.value)
        self.b.walk(fn.body.body, env, 0, True, [])
        self.stack.pop()
        outs = set(self.returns)
        self.returns = saved  # type: ignore[assignment]
        return outs.pop() if len(outs) == 1 else None

    def call_out(self, node: cst.Call, env) -> str | None:
        name = _self_call(node)
        if name is None:
            return None
        first = node.args[0].value if node.args and node.args[0].keyword is None else None
        size = self.b.size_of(first, env) if first is not None else None
        if name in self.sites:
            site = self.sites[name]
            if name not in self.in_sizes:
                self.in_sizes[name] = size
            elif self.in_sizes[name] != size:
                self.in_sizes[name] = None
            return _site_out(self.b, site, self.assigned[name], size)
        if name in self.methods and name not in self.stack:
            return self.method(self.methods[name], size)
        return None


def _ctor_fields(b, ctor: cst.Call, cls) -> dict[str, cst.BaseExpression]:
    return b.arg_fields(ctor, cls)


def _site_out(b, site: Site, ctor: cst.Call, in_t: str | None) -> str | None:
    rule = rule_for(site.child_cls)
    kw = _ctor_fields(b, ctor, site.child_cls)
    if rule is not None:
        if rule.out == IN:
            return in_t
        if rule.out in kw:
            return b.init_expr(kw[rule.out], {}, set())
        if rule.out_default_in:
            return in_t
        return literal(_default(site.child_cls, rule.out))
    if site.kind == "user":
        child = b.ctx.plans[site.child_cls.__name__]
        return b.child_out(child, site.child_cls, kw, {}, in_t)
    if site.kind == "rnn":
        return setup_rnn(b, site, ctor, in_t, emit=False)[1]
    return None


def _default(cls, name):
    from ._classes import field_default

    return field_default(cls, name or "")


def _emit_site(b, site: Site, ctor: cst.Call, in_expr: str | None) -> None:
    kw = _ctor_fields(b, ctor, site.child_cls)
    if site.kind == "layer":
        rule = rule_for(site.child_cls)
        assert rule is not None  # a "layer" site is one whose class has a rule
        args_t: dict[str, str] = {}
        for f, v in kw.items():
            t = b.init_expr(v, {}, set())
            if f in rule.modes and t is None:
                continue
            if t is None:
                t = b.fallback(site, f, lambda c, i, f=f: getattr(c.module, f))
            args_t[f] = t
        from ._sites import _in_size, _other_axis

        in_t = None if _other_axis(site) else in_expr
        if rule.needs_size and in_t is None:
            in_t = b.fallback(
                site,
                rule.size_kw or "in_features",
                lambda c, i: _in_size(c, ctor, b),
                "tuple[int, ...]" if _other_axis(site) else "int",
            )
        b.emit(0, f"self.{site.attr} = {b.layer_ctor(site, rule, ctor, args_t, in_t)}")
        return
    if site.kind == "rnn":
        b.emit(0, f"self.{site.attr} = {setup_rnn(b, site, ctor, in_expr, emit=True)[0]}")
        return
    if site.kind == "kept":
        lines = b.wrapped_ctor(site, ctor, {}, ctor)
        b.emit(0, lines[0])
        b.emit(0, f"self.{site.attr} = {lines[1]}")
        return
    child = b.ctx.plans[site.child_cls.__name__]
    parts: list[str] = []
    for a in ctor.args:
        if a.keyword is not None and a.keyword.value == "name":
            continue
        t = b.init_expr(a.value, {}, set())
        if t is None:
            raise b.fail(f"the arguments of self.{site.attr} depend on call data", ctor)
        parts.append(f"{a.keyword.value}={t}" if a.keyword else t)
    for sp in child.size_params:
        if sp.is_input and in_expr is not None:
            parts.append(f"{sp.name}={in_expr}")
            continue
        val = b.fallback(
            site, sp.name, lambda c, i, sp=sp: sp.resolve(i.tree[c.path]), sp.annotation
        )
        parts.append(f"{sp.name}={val}")
    func = b.init_expr(ctor.func, {}, set())
    b.emit(0, f"self.{site.attr} = {func}({', '.join([*parts, 'rngs=rngs'])})")


def _emit_list(b, site: Site, comp: cst.ListComp) -> None:
    """``self.layers = [nn.Dense(f) for f in self.features]``: an ``nnx.List`` built in a loop,
    each entry taking the previous entry's output size (checked on every traced instance)."""
    ctor: cst.Call = comp.elt  # type: ignore[assignment]
    rule = rule_for(site.child_cls)
    if site.kind != "layer" or rule is None or not rule.needs_size or rule.out in (None, IN):
        raise b.fail(
            f"self.{site.attr}: a list of {site.child_cls.__name__} (not converted yet)", comp
        )
    first_from_input = True
    for inst in b.instances:
        entries = sorted(site.calls_in(inst), key=lambda c: int(c.name.rsplit("_", 1)[1]))
        sizes = [int(c.args[0].shape[-1]) for c in entries]
        outs = [getattr(c.module, rule.out) for c in entries]
        if sizes[1:] != outs[:-1]:
            raise b.fail(
                f"self.{site.attr}: an entry's input is not the previous entry's output", comp
            )
        if sizes and sizes[0] != inst.in_size():
            first_from_input = False
    iter_t = b.init_expr(comp.for_in.iter, {}, set())
    names = targets(comp.for_in.target)
    if iter_t is None or not names:
        raise b.fail(f"self.{site.attr}: the list is built over call data", comp)
    running = f"{site.attr}_features"
    b.taken.add(running)
    if first_from_input:
        start = b.in_name
    else:
        start = b.fallback(site, "in_features", lambda c, i: int(c.args[0].shape[-1]))
    b.init_locals.update(names)
    b.init_locals.add(running)
    kw = b.arg_fields(ctor, site.child_cls)
    args_t = {}
    for f, v in kw.items():
        t = b.init_expr(v, {}, set())
        if t is None:
            raise b.fail(f"self.{site.attr}: {f}= depends on call data", comp)
        if f not in rule.modes:
            args_t[f] = t
    if rule.out not in args_t:
        raise b.fail(f"self.{site.attr}: the entries' output size is not given", comp)
    b.emit(0, f"self.{site.attr} = nnx.List()")
    b.emit(0, f"{running} = {start}")
    b.emit(0, f"for {code(comp.for_in.target)} in {iter_t}:")
    b.emit(1, f"self.{site.attr}.append({b.layer_ctor(site, rule, ctor, args_t, running)})")
    b.emit(1, f"{running} = {args_t[rule.out]}")


def _rewrite_method(b, m: cst.FunctionDef, sites, params, drop_flags: bool):
    removed = b.removed if drop_flags else set()
    children = {
        name: b.ctx.plans[s.child_cls.__name__] for name, s in sites.items() if s.kind == "user"
    }

    class T(cst.CSTTransformer):
        def leave_Call(self, original, updated):
            name = _self_call(updated)
            if name not in sites:
                return updated
            site = sites[name]
            rule = rule_for(site.child_cls)
            child = children.get(name)
            args = []
            for i, a in enumerate(updated.args):
                kw = a.keyword.value if a.keyword is not None else None
                mode = call_mode(rule, i, a) if rule is not None else None
                if mode is not None and names_in(a.value) & removed:
                    continue
                if mode is not None and kw is None:
                    a = keyword_arg(mode, a)  # NNX takes it by keyword only
                if child is not None:
                    pname = kw or (child.call_params[i] if i < len(child.call_params) else None)
                    if pname in child.removed_flags:
                        continue
                args.append(a)
            if args:
                args[-1] = args[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
            return updated.with_changes(args=args)

        def leave_Attribute(self, original, updated):
            if is_self_attr(updated) and updated.attr.value in params:
                return cst.Attribute(value=updated, attr=cst.Name("value"))
            return updated

        def leave_AssignTarget(self, original, updated):
            return updated

    saved = b.removed
    b.removed = removed
    new = m.visit(T())
    new = b.to_nnx_refs(new)
    b.removed = saved
    decorators = [
        d
        for d in new.decorators
        if (dotted(d.decorator) or "").split(".")[-1] not in ("compact", "nowrap")
    ]
    from ._build import _drop_params

    return new.with_changes(decorators=decorators, params=_drop_params(new.params, removed))


def _is_module_class(value) -> bool:
    import functools

    from flax import linen as nn

    if isinstance(value, functools.partial):
        value = value.func
    return isinstance(value, type) and issubclass(value, nn.Module)
