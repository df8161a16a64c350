"""The data-flow walk over a method body that writes ``__init__``.

Each local variable carries the size of its last axis as an expression of the fields (or
None when unknown). Statements are walked in order; loops are walked twice (a dry pass finds
the variables whose size changes from one iteration to the next: ``__init__`` then keeps a
running size variable, ``x_features``); conditions on fields are mirrored in ``__init__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import libcst as cst

from ._classes import Site
from ._convert_class import _KEEPS_SIZE, _Converter
from ._cstutil import calls_in, code, dotted, is_self_attr, targets, unique

__all__ = ["_Walker"]


class _Walker(_Converter):
    """The data-flow walk over a method body that writes ``__init__``."""

    method_locals: set[str]
    outs: dict[cst.CSTNode | None, str | None]
    mirrored: set[str]
    unconditional = 0  # inside a branch on call data, whose submodules __init__ always builds

    if TYPE_CHECKING:  # defined by the subclass (_sites._Compact)

        def process_site(self, node: cst.Call, env, ind, dry, loops, conds) -> None: ...

        def process_var(
            self, node: cst.Call, env, ind, dry, loops, attr: str | None = None
        ) -> None: ...

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
            if isinstance(node.operator, cst.MatrixMultiply):
                return None  # the right operand's last axis, which no local tracks
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
                        f"a submodule is created inside a {type(stmt).__name__.lower()} statement",
                        stmt,
                    )
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
                site = conv.site_of.get(n)
                if (site is not None and id(site) not in conv.hoisted) or conv.is_var_call(n):
                    found = True

        node.visit(V())
        return found

    def small(self, node, env, ind, dry, loops, conds) -> None:
        calls = calls_in(node)
        for c in calls:
            if c in self.named and id(self.named[c]) in self.hoisted:
                # a cell stepped in a loop: written to __init__ at its construction
                self.process_site(self.named[c].key, env, ind, dry, loops, conds)
            elif c in self.site_of:
                self.process_site(c, env, ind, dry, loops, conds)
            elif self.is_var_call(c):
                self.process_var(c, env, ind, dry, loops)
        if isinstance(node, cst.Assign | cst.AnnAssign) and node.value is not None:
            tnodes = (
                [t.target for t in node.targets] if isinstance(node, cst.Assign) else [node.target]
            )
            simple = len(tnodes) == 1 and isinstance(tnodes[0], cst.Name)
            if simple:
                t = cast(cst.Name, tnodes[0]).value
                text = None
                if not any(
                    c in self.site_of or c in self.named or self.is_var_call(c) for c in calls
                ):
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
                from ._lifted import carry_size

                carry = carry_size(self, node.value, tnodes, env)  # `x, _ = <nn.scan>(x)`
                for tn in tnodes:
                    for n in targets(tn):
                        env[n] = None
                        self.init_locals.discard(n)
                env.update(carry)
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
            if loops:
                raise self.fail(
                    "submodules are created in a loop under a condition that depends on the "
                    "call arguments or inputs",
                    node,
                )
            # `if train:` / `if x.shape != y.shape:`: NNX builds the submodules in __init__
            # whatever the call will do (the examples ran the branch: it has sizes), and the
            # call keeps the condition.
            self.unconditional += 1
            env_t = self.walk(branches[0], dict(env), ind, dry, loops, conds + 1)
            env_f = dict(env)
            if else_body is not None:
                env_f = self.walk(else_body, dict(env), ind, dry, loops, conds + 1)
            self.unconditional -= 1
            return {
                v: env_t.get(v) if env_t.get(v) == env_f.get(v) else None
                for v in set(env_t) | set(env_f)
            }
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
