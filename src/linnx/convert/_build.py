"""Builds one converted class: runs the converter over its method(s) and writes the new node.

``convert_class`` is the entry point: it picks the class style (``@nn.compact`` or
``setup()``), decides which call flags go (they only switch Dropout/BatchNorm), walks the
methods, computes the defaults of the extra size arguments from the trace, and assembles the
``nnx.Module`` class: the fields as ``__init__`` arguments, ``__init__`` itself, and the
methods with their submodule calls rewritten. Everything else in the class body is kept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import libcst as cst

from ._classes import ClassPlan, Unsupported, literal
from ._convert_class import Context
from ._cstutil import bracket_pairs, code, dotted, is_self_attr, names_in, split_args, targets
from ._idioms import check_unreached, mixin_bases, mixin_fields, unused_helpers
from ._rng import CONVERTED_API
from ._rnn import claim_time_scan
from ._sites import _Compact
from ._trace import Instance

__all__ = ["convert_class"]


if TYPE_CHECKING:
    _Stmt = cst.SimpleStatementLine | cst.BaseCompoundStatement


class _Builder(_Compact):
    def field_nodes(self) -> dict[str, cst.AnnAssign]:
        out: dict[str, cst.AnnAssign] = {}
        for stmt in self.node.body.body:
            if isinstance(stmt, cst.SimpleStatementLine):
                for small in stmt.body:
                    if isinstance(small, cst.AnnAssign) and isinstance(small.target, cst.Name):
                        if small.target.value in self.fields:
                            out[small.target.value] = small
        missing = [f for f in self.fields if f not in out]
        if missing and self.plan.mixins:
            out.update(mixin_fields(self, missing))  # declared in a mixin base
            missing = [f for f in self.fields if f not in out]
        if missing:
            raise self.fail(f"fields {missing} are inherited or generated, not written here")
        for name, node in out.items():
            if node.value is not None and isinstance(node.value, cst.Call):
                func = dotted(node.value.func) or ""
                if func.endswith("field"):
                    raise self.fail(f"the field {name!r} uses dataclasses.field(...)", node)
        return out

    def methods(self) -> tuple[cst.FunctionDef | None, cst.FunctionDef | None]:
        compact = setup = None
        for stmt in self.node.body.body:
            if not isinstance(stmt, cst.FunctionDef):
                continue
            decos = [dotted(d.decorator) for d in stmt.decorators]
            if any(d and d.endswith("compact") for d in decos):
                if stmt.name.value != "__call__":
                    raise self.fail(
                        f"@nn.compact on {stmt.name.value}() (only __call__ is "
                        "converted in this version)",
                        stmt,
                    )
                compact = stmt
            elif stmt.name.value == "setup":
                setup = stmt
            for d in decos:
                if d and d.split(".")[-1] in ("jit", "remat", "checkpoint", "vmap", "scan"):
                    raise self.fail(f"the method {stmt.name.value} is decorated with {d}", stmt)
        if compact is not None and setup is not None:
            compact = None  # setup() made the submodules; @nn.compact there only decorates
        return compact, setup

    def check_bases(self) -> None:
        self.plan.mixins = mixin_bases(self)  # the file's mixins, else only nn.Module

    # -- the compact style ---------------------------------------------------------------

    def convert_compact(self, method: cst.FunctionDef) -> cst.FunctionDef:
        self.collect_sites(method, None)
        self.plan.sites = list({id(s): s for s in self.site_of.values()}.values())
        self.name_sites(self.plan.sites)
        self.decide_flags(method)
        self.method_locals = {p.name.value for p in method.params.params} | _assigned_names(method)
        self.method_locals.discard("self")
        self.outs = {}
        self.mirrored = set()
        params = [p for p in method.params.params if p.name.value != "self"]
        env: dict[str, str | None] = {}
        if params:
            env[params[0].name.value] = self.in_name
        self.walk(method.body.body, env, 0, False, [])
        return self.rewrite_method(method, drop_mirrored=True)

    def rewrite_method(self, method: cst.FunctionDef, drop_mirrored: bool) -> cst.FunctionDef:
        replacers = self.replacers
        inserts = self.insert_before
        conv = self

        class T(cst.CSTTransformer):
            def leave_Call(self, original, updated):
                fn = replacers.get(original)
                return updated if fn is None else fn(updated)

            def leave_For(self, original, updated):
                items = conv.loop_over.get(original)
                if items:  # `for _ in range(n)` over the lists it indexed
                    lists = ", ".join(f"self.{attr}" for attr in items)
                    many = len(items) > 1
                    updated = updated.with_changes(
                        target=cst.parse_expression(", ".join(items.values())),
                        iter=cst.parse_expression(f"zip({lists}, strict=True)" if many else lists),
                    )
                extra = inserts.get(original)
                if not extra:
                    return updated
                return cst.FlattenSentinel([*(cst.parse_statement(e) for e in extra), updated])

            def leave_SimpleStatementLine(self, original, updated):
                new = conv.cache_statement(original, updated)  # decode caches (_cache.py)
                extra = inserts.get(original)
                if not extra:
                    return new
                return cst.FlattenSentinel([*(cst.parse_statement(e) for e in extra), new])

        new = cast(cst.FunctionDef, method.visit(T()))  # T leaves the FunctionDef itself
        new = cast(cst.FunctionDef, conv.to_nnx_refs(new))
        new = conv.cache_values(new)
        new = conv.drop_init_branches(new)
        decorators = [
            d
            for d in new.decorators
            if (dotted(d.decorator) or "").split(".")[-1] not in ("compact", "nowrap")
        ]
        params = _drop_params(new.params, self.removed)
        new = new.with_changes(decorators=decorators, params=params)
        if drop_mirrored:
            new = _drop_unused_assignments(new, self.mirrored | _pure_assigned(method))
            # statements of an indented block: SimpleStatementLine or compound ones
            body = cast("list[_Stmt]", list(new.body.body))
            if (
                body
                and body[0].leading_lines
                and not cast("_Stmt", method.body.body[0]).leading_lines
            ):
                body[0] = body[0].with_changes(
                    leading_lines=[ln for ln in body[0].leading_lines if ln.comment is not None]
                )
                new = new.with_changes(body=new.body.with_changes(body=body))
        return new

    # -- assembly ---------------------------------------------------------------------------

    def finish_size_params(self) -> None:
        text = "\n".join(t for _, t, _ in self.init_lines)
        bare = rf"(?<![\w.]){self.in_name}\b(?!\s*=[^=])"
        if re.search(bare, text) or (self.plan.out_expr and re.search(bare, self.plan.out_expr)):
            self.size_params = {
                self.in_name: _input_param(self.in_name, self.line),
                **self.size_params,
            }
        for sp in self.size_params.values():
            values = [sp.resolve(inst) for inst in self.instances]
            known = [v for v in values if v is not None]
            default = literal(known[0]) if known else None
            if known and default is None:
                raise Unsupported(f"{sp.name}: the value {known[0]!r} cannot be written", sp.line)
            sp.default = default if default is not None else "None"
        self.plan.size_params = list(self.size_params.values())

    def out_expr(self) -> str | None:
        outs = set(self.outs.values())
        if len(outs) != 1:
            return None
        (out,) = outs
        if out is None:
            return None
        names = names_in(cst.parse_expression(out))
        if names - {"self", self.in_name}:
            return None
        return out

    def init_text(self, fields: dict[str, cst.AnnAssign]) -> str:
        params = []
        for name in self.fields:
            node = fields[name]
            ann = code(node.annotation.annotation)
            if node.value is not None:
                default = code(self.to_nnx_refs(node.value, init=True))
                params.append(f"{name}: {ann} = {default}")
            else:
                params.append(f"{name}: {ann}")
        params.append("*")
        for sp in self.plan.size_params:
            params.append(f"{sp.name}: {sp.annotation} = {sp.default}")
        params.append("rngs: nnx.Rngs")
        head = f"def __init__(self, {', '.join(params)}):"
        if len(head) > 88:
            head = "def __init__(\n" + "".join(f"    {p},\n" for p in ["self", *params]) + "):"
        body = [f"self.{f} = {f}" for f in self.fields]
        lines = _prune(self.init_lines)
        for ind, text in lines:
            text = _one_line(text, 99 - 8 - 4 * ind)
            pad = "    " * ind
            body.append(pad + text.replace("\n", "\n    " + pad) if text else "")
        if not body:
            body = ["pass"]
        return head + "\n" + "".join(f"    {b}\n" if b else "\n" for b in body)

    def check_transforms(self) -> None:
        """Linen's lifted transforms (nn.scan, nn.remat...) and the rest of the Linen-only
        module API (``self.put_variable``...) are not converted yet; ``self.sow`` into
        ``'intermediates'``, ``make_rng``, ``is_initializing`` and the cache queries are."""
        from flax import linen as nn

        from ._rules import LIFTED

        lifted = {id(getattr(nn, n)): n for n in LIFTED if hasattr(nn, n)}
        conv = self
        from ._lifted import allowed_funcs

        allowed = allowed_funcs(self)  # nn.scan(Block, ...) and the like: see _lifted

        from ._convert_class import _LINEN_API

        class V(cst.CSTVisitor):
            def visit_Call(self, node):
                f = node.func
                if is_self_attr(f) and f.attr.value == "sow":
                    conv.convert_sow(node)
                elif is_self_attr(f) and f.attr.value in CONVERTED_API:
                    conv.convert_api_call(node)
                elif is_self_attr(f) and f.attr.value in _LINEN_API:
                    raise conv.fail(f"self.{f.attr.value}(...) is not converted yet", node)

            def visit_Attribute(self, node):
                value = conv.resolve(node)
                if value is not None and id(value) in lifted and id(node) not in allowed:
                    raise conv.fail(
                        f"the lifted transform nn.{lifted[id(value)]} is not converted yet", node
                    )

        for stmt in self.node.body.body:
            if isinstance(stmt, cst.FunctionDef):
                stmt.visit(V())

    def build(self) -> ClassPlan:
        self.check_bases()
        claim_time_scan(self)  # nn.scan of a cell over time: becomes nnx.RNN (see _rnn)
        self.check_transforms()
        fields = self.field_nodes()
        compact, setup = self.methods()
        self.in_name = "in_features" if "in_features" not in self.fields else "input_features"
        self.taken.add(self.in_name)
        new_methods: dict[cst.FunctionDef, cst.FunctionDef | None] = {}
        if compact is not None:
            new_methods[compact] = self.convert_compact(compact)
        elif setup is not None:
            from ._setup import convert_setup

            self.check_setup_caches(setup)  # _cache.py
            new_methods.update(convert_setup(self, setup))
        else:
            self.plan.call_params = []
        self.plan.out_expr = self.out_expr() if compact is not None or setup is not None else None
        self.dropped_helpers = unused_helpers(self)  # factory helpers written in place
        check_unreached(
            self,
            [s for s in self.node.body.body if isinstance(s, cst.FunctionDef)],
            [
                n
                for site in self.plan.sites
                for n in (site.ctor, site.key)
                if isinstance(n, cst.CSTNode)
            ],
        )
        self.finish_size_params()
        self.stream_lines()  # make_rng streams (_rng.py)
        init = cst.parse_statement(self.init_text(fields))
        body: list[cst.BaseStatement | cst.BaseSmallStatement] = []
        placed = False
        call: cst.FunctionDef | None = None
        for stmt in self.node.body.body:
            if isinstance(stmt, cst.SimpleStatementLine) and any(
                isinstance(s, cst.AnnAssign)
                and isinstance(s.target, cst.Name)
                and s.target.value in self.fields
                for s in stmt.body
            ):
                continue
            if isinstance(stmt, cst.FunctionDef) and stmt.name.value in self.dropped_helpers:
                continue
            if isinstance(stmt, cst.FunctionDef):
                first = not placed
                if first:
                    lead = stmt.leading_lines if body else []
                    body.append(init.with_changes(leading_lines=lead))
                    placed = True
                if stmt in new_methods:
                    out = new_methods[stmt]
                else:
                    out = self.rewrite_method(stmt, drop_mirrored=False)
                if out is not None and out.name.value == "__call__":
                    call = out
                if out is not None:
                    if first:
                        out = out.with_changes(leading_lines=[cst.EmptyLine(indent=False)])
                    body.append(out)
                continue
            body.append(stmt)
        if not placed:
            body.append(init)
        init_cache = self.init_cache_method(call)  # decode caches (_cache.py)
        if init_cache is not None:
            body.append(init_cache)
        node = self.node.with_changes(
            bases=[cst.Arg(cst.parse_expression(b)) for b in self.plan.mixins or ["nnx.Module"]],
            body=self.node.body.with_changes(body=body),
        )
        self.plan.node = node
        return self.plan


def _one_line(text: str, width: int) -> str:
    """A generated line: a multi-line expression joined, a long call wrapped one argument a
    line (as a formatter would)."""
    if "\n" in text and "#" not in text and '"""' not in text and "'''" not in text:
        text = re.sub(r"\s*\n\s*", " ", text)
        text = re.sub(r"([(\[{]) ", r"\1", text)
        text = re.sub(r",? ([)\]}])", r"\1", text)
    if len(text) <= width or "\n" in text or text.startswith("#"):
        return text
    parts = _split_call(text)
    if parts is None:
        return _split_choice(text) or text
    head, args, tail = parts
    return head + "\n" + "".join(f"    {a},\n" for a in args) + tail


def _split_choice(text: str) -> str | None:
    """``a = (x if c else y)`` -> one part a line, as a formatter would write it."""
    m = re.fullmatch(r"([\w.]+ = )\((.*)\)", text)
    if m is None or bracket_pairs(text).get(len(m.group(1))) != len(text) - 1:
        return None
    body, parts, cur, depth, i = m.group(2), [], "", 0, 0
    while i < len(body):
        c = body[i]
        depth += (c in "([{") - (c in ")]}")
        word = next((w for w in (" if ", " else ") if depth == 0 and body.startswith(w, i)), None)
        if word is not None:
            parts.append(cur)
            cur, i = word.strip() + " ", i + len(word)
            continue
        cur += c
        i += 1
    parts.append(cur)
    if len(parts) < 3:
        return None
    return m.group(1) + "(\n" + "".join(f"    {p}\n" for p in parts) + ")"


def _split_call(text: str) -> tuple[str, list[str], str] | None:
    """``a = f(x, y=g(1, 2))`` -> ('a = f(', ['x', 'y=g(1, 2)'], ')'): the outermost call
    (that closes at the end of the line) with at least two arguments."""
    pairs = bracket_pairs(text)
    for start in sorted(pairs):
        end = pairs[start]
        if text[start] != "(" or text[end + 1 :].strip(")") != "":
            continue
        args = split_args(text[start + 1 : end])
        if len(args) >= 2:
            return text[: start + 1], args, text[end:]
    return None


def _drop_params(params: cst.Parameters, removed: set[str]) -> cst.Parameters:
    """The parameters without the removed flags (a bare ``*`` goes when nothing follows)."""
    pos = [p for p in params.params if p.name.value not in removed]
    kwonly = [p for p in params.kwonly_params if p.name.value not in removed]
    star = params.star_arg
    if not kwonly and isinstance(star, cst.ParamStar):
        star = cst.MaybeSentinel.DEFAULT
    if not isinstance(params.star_kwarg, cst.Param):
        if kwonly:
            kwonly[-1] = kwonly[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
        elif not isinstance(star, cst.Param) and pos:
            pos[-1] = pos[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
    return params.with_changes(params=pos, kwonly_params=kwonly, star_arg=star)


def _input_param(name: str, line: int):
    from ._classes import SizeParam

    return SizeParam(name, "int", lambda inst: inst.in_size(), line, is_input=True)


def _assigned_names(method: cst.FunctionDef) -> set[str]:
    from ._walk import _assigned

    return _assigned(method.body)


def _prune(lines: list[tuple[int, str, str | None]]) -> list[tuple[int, str]]:
    """Drops mirrored assignments that ``__init__`` never reads, then fixes empty blocks."""
    lines = list(lines)
    changed = True
    while changed:
        changed = False
        for i, (_, _, binds) in enumerate(lines):
            if binds is None:
                continue
            rest = "\n".join(t for _, t, _ in lines[i + 1 :])
            if not re.search(rf"\b{re.escape(binds)}\b", rest):
                del lines[i]
                changed = True
                break
    out: list[tuple[int, str]] = []
    for i, (ind, text, _) in enumerate(lines):
        out.append((ind, text))
        if text.endswith(":") and not text.startswith("#"):
            nxt = lines[i + 1][0] if i + 1 < len(lines) else -1
            if nxt <= ind:
                out.append((ind + 1, "pass"))
    return out


def _pure_assigned(method: cst.FunctionDef) -> set[str]:
    """Names the method assigns from call-free expressions (shapes, tuples): such a line may
    go when the conversion took away its only reader (a ``self.param`` shape)."""
    out: set[str] = set()

    class V(cst.CSTVisitor):
        def visit_Assign(self, n):
            has_call = False

            class C(cst.CSTVisitor):
                def visit_Call(self, c):
                    nonlocal has_call
                    has_call = True

            n.value.visit(C())
            if not has_call and len(n.targets) == 1:
                out.update(targets(n.targets[0].target))

    method.body.visit(V())
    return out


def _drop_unused_assignments(method: cst.FunctionDef, names: set[str]) -> cst.FunctionDef:
    """Removes ``conv = partial(...)``-style lines that only the submodules read."""
    counts: dict[str, int] = {}

    class Count(cst.CSTVisitor):
        def visit_Attribute(self, n):
            n.value.visit(self)
            return False

        def visit_Arg(self, n):
            n.value.visit(self)
            return False

        def visit_AssignTarget(self, n):
            return False

        def visit_Name(self, n):
            counts[n.value] = counts.get(n.value, 0) + 1

    method.body.visit(Count())
    dead = {n for n in names if counts.get(n, 0) == 0}
    if not dead:
        return method

    class Drop(cst.CSTTransformer):
        def leave_SimpleStatementLine(self, original, updated):
            keep = [
                s
                for s in updated.body
                if not (
                    isinstance(s, cst.Assign)
                    and len(s.targets) == 1
                    and set(targets(s.targets[0].target)) <= dead
                    and targets(s.targets[0].target)
                )
            ]
            if not keep:
                return cst.RemoveFromParent()
            return updated.with_changes(body=keep)

    return cast(cst.FunctionDef, method.visit(Drop()))  # Drop leaves the FunctionDef itself


def convert_class(
    node: cst.ClassDef,
    positions: Any,
    cls: type,
    instances: Sequence[Instance],
    ctx: Context,
) -> ClassPlan:
    """Converts one Linen class; raises :class:`Unsupported` for what it cannot convert."""
    return _Builder(node, positions, cls, instances, ctx).build()
