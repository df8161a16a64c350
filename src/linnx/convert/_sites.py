"""Submodule call sites and variables of ``@nn.compact`` methods, written for ``__init__``.

A site ``nn.Dense(self.features)(x)`` becomes ``self.linear = nnx.Linear(<in>,
self.features, rngs=rngs)`` in ``__init__`` and ``self.linear(x)`` in the call; a user class
gets its input-size arguments; a class kept as Linen is wrapped with ``linnx.ToNNX`` and
``lazy_init``; ``self.param`` / ``self.variable`` become ``nnx.Param`` / variable attributes.
Sizes that cannot be computed from the fields become keyword arguments of the class, whose
defaults are read from the traced Linen instance.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, cast

import libcst as cst

from ._cache import CacheMixin, is_cache_var
from ._classes import (
    VAR_TYPES,
    Site,
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
    keyword_arg,
    names_in,
    operand,
    unique,
)
from ._rng import RngMixin
from ._rnn import lifted_method, rnn_call, rnn_ctor
from ._rules import IN, Rule, call_mode, nnx_kwargs, rule_for
from ._sharding import axes_call, unwrap_annotation
from ._trace import ChildCall, Instance
from ._walk import _Walker

__all__ = ["_Compact"]


class _Compact(CacheMixin, RngMixin, _Walker):
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
            if loop.target.value == "_":
                # `for _ in range(n)` over lists of layers: loop over the lists themselves
                items = self.loop_over.setdefault(loop, {})
                if site.attr not in items:
                    taken = self.method_locals | set(self.fields) | names_in(loop.body)
                    items[site.attr] = unique(_singular(site.attr), taken)
                    self.method_locals.add(items[site.attr])
                return items[site.attr]
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
        if not site.execs:  # a layer no example reached: nothing to read the value from
            raise Unsupported(
                f"{site.attr}: its {what} cannot be computed from the fields, and no example "
                "reached the layer to learn it; add an --example that runs it",
                line,
            )

        def resolve(inst: Instance) -> Any:
            values = [get(c, inst) for c in site.calls_in(inst)]
            return one_value(values, f"{site.attr}: {what}", line)

        return self.add_size_param(f"{site.attr}_{what}", resolve, line, ann)

    def process_site(self, node: cst.Call, env, ind, dry, loops, conds) -> None:
        site = self.site_of[node]
        first = node.args[0].value if node.args and node.args[0].keyword is None else None
        in_expr = self.size_of(first, env) if first is not None else None
        ctor: cst.Call = site.ctor
        kw = self.arg_fields(ctor, site.child_cls)
        moved: list[str] = []
        drop_call_args: set[int] = set()
        keyword_call_args: dict[int, str] = {}
        out: str | None = None
        lines: list[str] = []
        if site.kind == "layer":
            rule = rule_for(site.child_cls)
            assert rule is not None
            if not site.execs and self.unconditional and rule.linen != "Dropout":
                raise self.fail(
                    f"nn.{rule.linen} is created under a condition on the call's arguments "
                    "that no example took: Linen makes its weights only when the branch runs; "
                    "add an --example that takes it",
                    node,
                )
            for i, a in enumerate(node.args):
                mode = call_mode(rule, i, a)
                if mode is not None and names_in(a.value) & self.removed:
                    drop_call_args.add(i)
                elif mode is not None and a.keyword is None:
                    keyword_call_args[i] = mode  # NNX takes it by keyword only
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
                    site,
                    rule.size_kw or "in_features",
                    lambda c, i: _in_size(c, node, self),
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
                if "decode" in args_t:
                    self.attention_decode(site, node, env, self.method_locals)
        elif site.kind == "sequential":
            lines, out = self.sequential_ctor(site, in_expr, env, dry)
        elif site.kind == "rnn":
            lines, out = rnn_ctor(self, site, node, in_expr, env, dry)
        elif site.kind == "user":
            child = self.ctx.plans[site.child_cls.__name__]
            drop_call_args.update(child.flag_args(node.args))
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
                val = "?"
                if not dry:
                    val = self.fallback(
                        site,
                        sp.name,
                        lambda c, i, n=sp.name: (
                            self.ctx.plans[c.cls.__name__].size_param(n).resolve(i.tree[c.path])
                        ),
                        sp.annotation,
                    )
                if sp.is_input:
                    in_t = None if dry else val
                parts.append(f"{sp.name}={val}")
            out = self.choice_out(site, env, in_t)
            if not dry:
                func_node = site.lift.target if site.lift is not None else ctor.func
                func = self.init_expr(func_node, env, self.method_locals)
                if func is None:
                    raise self.fail("the submodule class depends on call data", node)
                lines = [f"{func}({', '.join([*parts, 'rngs=rngs'])})"]
        else:  # kept as Linen: wrapped
            if loops:
                name = site.child_cls.__name__
                raise self.fail(
                    f"{name} is created in a loop, and {name} stays Linen "
                    f"({self.ctx.kept.get(name, 'not converted')})",
                    node,
                )
            if not dry:
                lines = self.wrapped_ctor(site, ctor, env, node)
        if site.lift is not None:
            # `ScanBlock = nn.scan(...)`: not needed in __init__, gone from the call when unused
            self.mirrored |= site.lift.names
            self.init_lines = [t for t in self.init_lines if t[2] not in site.lift.names]
        if site.lift is not None and site.kind in ("user", "layer"):
            from ._lifted import creation

            if moved:
                raise self.fail("a train/eval switch of a layer under a lifted transform", node)
            if not dry and lines and id(site) not in self.emitted:
                lines = [creation(self, site, node, lines[-1], env, ind)]
            out = out if site.lift.stacking is None else None
        if site.named and not dry:
            if id(site) in self.emitted:
                lines = []  # the second call of a named submodule: created once
            else:
                self.replacers[ctor] = cast(
                    "Callable[[Any], cst.CSTNode]",
                    lambda updated, a=site.attr: cst.parse_expression(f"self.{a}"),
                )
        if not dry and lines:
            self.emitted.add(id(site))
            head = f"self.{site.attr}.append(" if site.is_list else f"self.{site.attr} = "
            tail = ")" if site.is_list else ""
            for extra in lines[:-1]:
                self.emit(ind, extra)
            self.emit(ind, head + lines[-1] + tail)
        self.site_out[node] = out
        target = self.target(site, loops, conds) if not dry and not site.named else ""

        def replace(updated: cst.Call, target=target, drop=frozenset(drop_call_args)):
            args = [
                keyword_arg(keyword_call_args[i], a) if i in keyword_call_args else a
                for i, a in enumerate(updated.args)
                if i not in drop
            ]
            for m in moved:
                k, _, v = m.partition("=")
                args.append(keyword_arg(k, cst.Arg(value=cst.parse_expression(v))))
            if args:
                args[-1] = args[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
            func = cst.parse_expression(target) if target else updated.func
            return updated.with_changes(func=func, args=args)

        if not dry and site.lift is not None and site.kind in ("user", "layer"):
            from ._lifted import call_replacer

            self.replacers[node] = call_replacer(self, site, node, target, drop_call_args)
        elif not dry:
            self.replacers[node] = rnn_call(self, site, node, replace)

    def sequential_ctor(self, site: Site, in_t, env, dry) -> tuple[list[str], str | None]:
        """``nnx.Sequential(...)`` of the converted layers, each sized by the one before it
        (functions that keep the last axis keep the size), and the output size."""
        from ._convert_class import _KEEPS_SIZE

        parts: list[str] = []
        for k, el in enumerate(site.ctor.args[0].value.elements):
            v = el.value
            if not isinstance(v, cst.Call):
                t = self.init_expr(v, env, self.method_locals)
                if t is None:
                    raise self.fail("an nn.Sequential entry depends on call data", v)
                name = dotted(v)
                if name is None or name.rsplit(".", 1)[-1] not in _KEEPS_SIZE:
                    in_t = None  # a function that may change the last axis
                parts.append(t)
                continue
            cls = self.resolve(v.func)
            rule = rule_for(cls) if isinstance(cls, type) else None
            if rule is None:
                raise self.fail(
                    f"an nn.Sequential entry other than a Flax layer with a rule or a function: "
                    f"{code(v.func)}",
                    v,
                )
            names = {n for n, i in site.members.items() if i == k}
            sub = Site(
                key=v,
                child_cls=cls,
                kind="layer",
                line=self.lineno(v),
                base="",
                ctor=v,
                attr=f"{site.attr}_{k}",
                execs=[(i, c) for i, c in site.inner if c.name in names],
            )
            args_t: dict[str, str] = {}
            for f, val in self.arg_fields(v, cls).items():
                if f in rule.modes:
                    raise self.fail(
                        f"{f}= (a train/eval switch) of a layer inside nn.Sequential is not "
                        "converted yet",
                        v,
                    )
                t = self.init_expr(val, env, self.method_locals)
                if t is None:
                    t = "?" if dry else self.fallback(sub, f, _field_of(f))
                args_t[f] = t
            if rule.needs_size and in_t is None:
                in_t = (
                    "?"
                    if dry
                    else self.fallback(
                        sub, rule.size_kw or "in_features", lambda c, i, v=v: _in_size(c, v, self)
                    )
                )
            parts.append("?" if dry else self.layer_ctor(sub, rule, v, args_t, in_t))
            if rule.out == IN:
                pass
            elif rule.out in args_t:
                in_t = args_t[rule.out]
            elif not rule.out_default_in:
                in_t = literal(field_default(cls, rule.out or ""))
        return [f"nnx.Sequential({', '.join(parts)})"], in_t

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
        func: str | None
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
        if lifted_method(site.child_cls):
            name = site.child_cls.__name__
            raise self.fail(
                f"{name} stays Linen ({self.ctx.kept.get(name, 'not converted')}) and its "
                "__call__ is a Linen lifted transform: the example shows its inputs one step "
                "at a time, so linnx.ToNNX cannot be given sample inputs",
                node,
            )
        parts = []
        for a in ctor.args:
            if a.keyword is not None and a.keyword.value == "name":
                continue
            t = self.init_expr(a.value, env, self.method_locals)
            if t is None:
                raise self.fail("the wrapped module's arguments depend on call data", node)
            parts.append(f"{a.keyword.value}={t}" if a.keyword else t)
        func_node = site.lift.expr if site.lift is not None else ctor.func  # nn.remat_scan
        func = self.init_expr(func_node, env, self.method_locals)
        if func is None:
            raise self.fail("the wrapped module's class depends on call data", node)
        # the sample inputs of lazy_init: a __call__ (the parent may call another method
        # first, e.g. the SST-2 LSTM's initialize_carry)
        call = next((c for _, c in site.execs if c.method == "__call__"), site.execs[0][1])
        samples = [_sample(v, self, node) for v in call.args]
        samples += [f"{k}={_sample(v, self, node)}" for k, v in call.kwargs.items()]
        reason = self.ctx.kept.get(site.child_cls.__name__, "kept as Linen")
        self.plan.needs.update({"linnx", "jnp"})
        self.plan.wrapped_children.append((site.attr, site.child_cls.__name__, site.line))
        return [
            f"# TODO(linnx convert): {site.child_cls.__name__} stays Linen: {reason}",
            f"linnx.ToNNX({func}({', '.join(parts)}), rngs=rngs).lazy_init({', '.join(samples)})",
        ]

    def choice_out(self, site: Site, env, in_t) -> str | None:
        """The output size of a user-class site; when the examples gave the site several
        classes (a ``block_cls`` field) whose outputs differ, a choice on the class:
        ``(self.filters * 4 if self.block_cls is Bottleneck else self.filters)``."""
        classes = list(dict.fromkeys(c.cls for _, c in site.execs))
        outs: list[str] = []
        for cls in classes:
            plan = self.ctx.plans[cls.__name__]
            out = self.child_out(plan, cls, self.arg_fields(site.ctor, cls), env, in_t)
            if out is None:
                return None
            outs.append(out)
        if len(set(outs)) == 1:
            return outs[0]
        func = self.init_expr(site.ctor.func, env, self.method_locals)
        if func is None or not re.fullmatch(r"[\w.]+", func):
            return None
        text = outs[-1]
        for cls, out in reversed(list(zip(classes[:-1], outs[:-1], strict=True))):
            text = f"{out} if {func} is {cls.__name__} else {text}"
        return f"({text})"

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
                    return cst.parse_expression(operand(t))
                return updated

            def leave_Name(self, original, updated):
                nonlocal bad
                if in_name is not None and updated.value == in_name:
                    if in_t is None:
                        bad = True
                        return updated
                    return cst.parse_expression(operand(in_t))
                return updated

        new = expr.visit(T())
        if bad:
            return None
        text = code(cast(cst.CSTNode, new))
        return text[1:-1] if re.fullmatch(r"\([^()]*\)", text) else text

    # -- self.param / self.variable ----------------------------------------------------------

    def process_var(self, node: cst.Call, env, ind, dry, loops, attr: str | None = None) -> None:
        if is_cache_var(node):
            return self.process_cache_var(node, env, ind, dry, loops)
        if dry:
            return
        if loops:
            raise self.fail("a variable is created inside a loop", node)
        meta: list[tuple[str, Any]] = []  # NNX variable metadata (out_sharding=...)
        axes = axes_call(self, node)  # Flax's param_with_axes / variable_with_axes
        if axes is not None:
            kind, args, meta = axes
        else:
            kind = cast(cst.Attribute, node.func).attr.value  # a self.param/self.variable call
            args = list(node.args)
        if any(a.keyword is not None or a.star for a in args):
            raise self.fail(f"self.{kind}(...) with keyword arguments", node)
        strs = 1 if kind == "param" else 2
        if len(args) < strs + 1 or not all(
            isinstance(a.value, cst.SimpleString) for a in args[:strs]
        ):
            raise self.fail(f"self.{kind}(...) without literal names and an init function", node)
        names: list[str] = []
        for a in args[:strs]:
            value = cast(cst.SimpleString, a.value).evaluated_value
            if not isinstance(value, str):  # b"..." names nothing in Linen
                raise self.fail(
                    f"self.{kind}(...) without literal names and an init function", node
                )
            names.append(value)
        col, name = ("params", names[0]) if kind == "param" else (names[0], names[1])
        if attr is None:
            attr = unique(identifier(name), self.taken)
            self.taken.add(attr)
        init_node = args[strs].value
        unwrapped = unwrap_annotation(self, init_node) if kind == "param" else None
        if unwrapped is not None:  # self.param(name, nn.with_partitioning(f, names), ...)
            init_node, more = unwrapped
            meta += more
        init = self.init_expr(init_node, env, self.method_locals)
        if init is None:
            raise self.fail(f"the init function of {name!r} depends on call data", node)
        metadata = []
        for key, m in meta:
            text = self.init_expr(m, env, self.method_locals)
            if text is None:
                raise self.fail(f"the {key} of {name!r} depends on call data", node)
            metadata.append(f"{key}={text}")
        rest = [self.init_expr(a.value, env, self.method_locals) for a in args[strs + 1 :]]
        if any(r is None for r in rest):
            if len(rest) != 1:
                raise self.fail(f"the shape of {name!r} depends on call data", node)

            def resolve(inst: Instance, key=(col, name)) -> Any:
                leaf = inst.own_vars.get(key)
                return None if leaf is None else tuple(int(d) for d in leaf.shape)

            rest = [
                self.add_size_param(f"{attr}_shape", resolve, self.lineno(node), "tuple[int, ...]")
            ]
        if kind == "param":
            made = f"{init}({', '.join(['rngs.params()', *cast('list[str]', rest)])})"
            made = f"nnx.Param({', '.join([made, *metadata])})"
            replacement = f"self.{attr}.value"
        else:
            var_type = VAR_TYPES.get(col)
            if var_type is None:
                camel = "".join(p.capitalize() for p in identifier(col).split("_") if p)
                var_type = self.plan.var_classes.setdefault(
                    col,
                    unique(camel, self.ctx.module_globals),  # not a name the file uses
                )
            lam = args[strs].value
            body = None
            if isinstance(lam, cst.Lambda) and not lam.params.params and not rest:
                body = self.init_expr(lam.body, env, self.method_locals)
            made = body or f"{init}({', '.join(cast('list[str]', rest))})"
            made = f"{var_type}({', '.join([made, *metadata])})"
            replacement = f"self.{attr}"
        self.emit(ind, f"self.{attr} = {made}")
        self.plan.var_attrs[(col, name)] = attr
        self.replacers[node] = cast(
            "Callable[[Any], cst.CSTNode]",
            lambda updated, r=replacement: cst.parse_expression(r),
        )


def _field_of(name: str) -> Callable[[ChildCall, Instance], Any]:
    """Reads a field of the traced child module (a constructor argument computed in the call)."""
    return lambda c, i: getattr(c.module, name)


def _other_axis(site: Site) -> bool:
    """Whether the layer contracts other axes than the last (DenseGeneral(axis=...))."""
    if not site.execs:  # not reached: static_site took only layers without axis=
        return False
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


def _singular(attr: str) -> str:
    """A name for one item of the list ``attr`` (``linears`` -> ``linear``)."""
    return attr[:-1] if attr.endswith("s") and len(attr) > 1 else f"{attr}_item"
