"""Decode caches: Linen's ``'cache'`` collection becomes ``nnx.Cache`` attributes.

Linen code that decodes autoregressively (Flax's lm1b/wmt examples) keeps keys, values and
a position in the ``'cache'`` collection: ``self.has_variable('cache', 'cached_key')`` tells
the first (cache-creating, full-length) call from the decoding ones, and
``self.variable('cache', 'cached_key', jnp.zeros, k.shape, k.dtype)`` creates the cache with
a shape that only that first call knows. Linen makes the caches in ``init``; the NNX form
follows Flax's own NNX ports (``self.cached_key: nnx.Cache | None = nnx.data(None)`` in
``__init__``) and keeps Linen's rule that the first call with no cache creates it:

* ``self.variable('cache', name, init, *args)`` -> ``self.<name>`` created (``nnx.Cache``)
  just before the statement when it is still ``None``; ``var.value`` -> ``var[...]``;
* ``self.has_variable('cache', name)`` -> ``self.<name> is not None``;
  ``self.is_mutable_collection('cache')`` -> ``True`` (NNX variables are always writable);
* ``nn.MultiHeadDotProductAttention(decode=...)`` -> ``nnx.MultiHeadAttention(decode=...)``,
  whose first call (no cache yet) makes its cache with ``init_cache`` and runs undecoded;
* every class that holds a cache, itself or through a converted child, gets the explicit
  ``init_cache(...)`` method: it takes ``__call__``'s arguments (full-length inputs, as
  Linen's ``init`` does), drops every cache and runs the model once to make fresh ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import libcst as cst

from ._cstutil import code, identifier, is_self_attr, names_in, unique

if TYPE_CHECKING:
    from ._classes import Site, Unsupported

__all__ = ["CacheMixin", "CACHE_QUERIES", "is_cache_var"]

#: The Linen module API calls about the cache that convert.
CACHE_QUERIES = frozenset({"has_variable", "is_mutable_collection"})

_INIT_CACHE_DOC = (
    '"""Makes fresh decode caches for inputs of these shapes (full length), as Linen\'s\n'
    "        ``init`` does: every cache is dropped, then one call creates them (zeros).\n"
    '        """'
)


def _str(node: cst.BaseExpression) -> str | None:
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    return None


def is_cache_var(node: cst.Call) -> bool:
    """``self.variable('cache', ...)``."""
    f = node.func
    return (
        is_self_attr(f)
        and f.attr.value == "variable"
        and bool(node.args)
        and node.args[0].keyword is None
        and _str(node.args[0].value) == "cache"
    )


class CacheMixin:
    """The cache handling of the class converter (mixed into ``_sites._Compact``)."""

    if TYPE_CHECKING:
        node: cst.ClassDef
        taken: set[str]
        replacers: dict[cst.CSTNode, Any]
        insert_before: dict[cst.CSTNode, list[str]]
        plan: Any
        ctx: Any
        instances: list

        def fail(self, reason: str, node: cst.CSTNode | None = None) -> Unsupported: ...

        def emit(self, ind: int, text: str, binds: str | None = None) -> None: ...

        def init_expr(self, node, env, method_locals) -> str | None: ...

        def resolve(self, node: cst.BaseExpression) -> Any: ...

    _cache_scan: dict[str, Any] | None = None

    # -- what the class holds -------------------------------------------------------------

    def cache_scan(self) -> dict[str, Any]:
        """The class's cache variable names (-> attribute), and each call's statement line."""
        if self._cache_scan is not None:
            return self._cache_scan
        attrs: dict[str, str] = {}
        line_of: dict[cst.Call, cst.SimpleStatementLine] = {}
        conv = self

        class V(cst.CSTVisitor):
            def __init__(self) -> None:
                self.line: list[cst.SimpleStatementLine] = []

            def visit_SimpleStatementLine(self, n):
                self.line.append(n)

            def leave_SimpleStatementLine(self, n):
                self.line.pop()

            def visit_Call(self, n):
                if self.line:
                    line_of[n] = self.line[-1]
                if is_cache_var(n) and len(n.args) > 1:
                    name = _str(n.args[1].value)
                    if name is not None and name not in attrs:
                        attrs[name] = unique(identifier(name), conv.taken)
                        conv.taken.add(attrs[name])

        self.node.visit(V())
        self._cache_scan = {"attrs": attrs, "line_of": line_of, "locals": {}, "attention": {}}
        return self._cache_scan

    # -- self.has_variable / self.is_mutable_collection ----------------------------------------

    def convert_cache_query(self, node: cst.Call) -> None:
        f = cast(cst.Attribute, node.func)
        what = f"self.{f.attr.value}(...)"
        args = node.args
        strs = [_str(a.value) if a.keyword is None and not a.star else None for a in args]
        if not strs or strs[0] != "cache":
            raise self.fail(
                f"{what} of a collection other than a literal 'cache' is not converted yet", node
            )
        if f.attr.value == "is_mutable_collection":
            if len(args) != 1:
                raise self.fail(f"{what} with more than the collection name", node)
            self.plan.has_cache = True
            self.replacers[node] = lambda updated: cst.Name("True")
            return
        attrs = self.cache_scan()["attrs"]
        if len(args) != 2 or strs[1] is None:
            raise self.fail(f"{what} without a literal variable name", node)
        if strs[1] not in attrs:
            raise self.fail(
                f"self.has_variable('cache', {strs[1]!r}): this class creates no such cache "
                "variable",
                node,
            )
        attr = attrs[strs[1]]
        self.plan.has_cache = True
        self.replacers[node] = lambda updated: cst.parse_expression(f"self.{attr} is not None")

    # -- self.variable('cache', ...) -----------------------------------------------------------

    def process_cache_var(self, node: cst.Call, env, ind, dry, loops) -> None:
        if any(
            isinstance(s, cst.FunctionDef) and s.name.value == "setup" for s in self.node.body.body
        ):
            raise self.fail("a cache variable in a setup() class is not converted yet", node)
        if dry:
            return
        if loops:
            raise self.fail("a cache variable is created inside a loop", node)
        args = node.args
        if any(a.keyword is not None or a.star for a in args) or len(args) < 3:
            raise self.fail(
                "self.variable('cache', ...) without a literal name and an init function "
                "(keyword arguments are not converted yet)",
                node,
            )
        name = _str(args[1].value)
        if name is None:
            raise self.fail("self.variable('cache', ...) without a literal name", node)
        scan = self.cache_scan()
        attr = scan["attrs"][name]
        line = scan["line_of"].get(node)
        if line is None or len(line.body) != 1:
            raise self.fail("self.variable('cache', ...) outside a statement of its own", node)
        stmt = line.body[0]
        init = args[2].value
        if isinstance(init, cst.Lambda) and not init.params.params and len(args) == 3:
            value = code(init.body)
        else:
            value = f"{code(init)}({', '.join(code(a.value) for a in args[3:])})"
        self.emit(ind, f"self.{attr}: nnx.Cache | None = nnx.data(None)")
        # Linen creates the cache in the first call (init); so does the NNX model.
        before = self.insert_before.setdefault(line, [])
        before.append(f"if self.{attr} is None:\n    self.{attr} = nnx.Cache({value})\n")
        if isinstance(stmt, cst.Assign) and len(stmt.targets) == 1:
            target = stmt.targets[0].target
            if isinstance(target, cst.Name):
                scan["locals"][target.value] = attr
        self.plan.has_cache = True
        self.replacers[node] = lambda updated: cst.parse_expression(f"self.{attr}")

    # -- nn.MultiHeadDotProductAttention(decode=...) -------------------------------------------

    def attention_decode(self, site: Site, node: cst.Call, env, method_locals) -> None:
        """An attention layer built with ``decode=`` (not literally False): its first call
        makes its cache (``init_cache``) and runs undecoded, as Linen's ``init`` does."""
        decode = next(
            (a.value for a in site.ctor.args if a.keyword and a.keyword.value == "decode"), None
        )
        if decode is None or (isinstance(decode, cst.Name) and decode.value == "False"):
            return
        if self.init_expr(decode, env, method_locals) is None:
            raise self.fail(
                "decode= of an attention layer set from call data (NNX takes it in __init__ "
                "or as the call's decode=) is not converted yet",
                node,
            )
        if site.is_list or site.named:
            raise self.fail(
                "an attention layer with decode= built in a loop or in a statement "
                "of its own is not converted yet",
                node,
            )
        line = self.cache_scan()["line_of"].get(node)
        if line is None or len(line.body) != 1 or not node.args or node.args[0].keyword:
            raise self.fail(
                "an attention layer with decode= called inside another statement than a plain line",
                node,
            )
        self.plan.has_cache = True
        self.cache_scan()["attention"][line] = (node, site)

    def check_setup_caches(self, setup: cst.FunctionDef) -> None:
        """An attention layer built in ``setup()`` with ``decode=`` (not literally False):
        not converted yet (its first call would need ``init_cache``)."""
        from ._rules import rule_for

        conv = self

        class V(cst.CSTVisitor):
            def visit_Call(self, n):
                value = conv.resolve(n.func)
                rule = rule_for(value) if isinstance(value, type) else None
                if rule is None or rule.nnx != "MultiHeadAttention":
                    return
                for a in n.args:
                    if a.keyword is not None and a.keyword.value == "decode":
                        if not (isinstance(a.value, cst.Name) and a.value.value == "False"):
                            raise conv.fail(
                                "an attention layer with decode= built in setup() "
                                "is not converted yet",
                                n,
                            )

        setup.visit(V())

    # -- the rewritten method ------------------------------------------------------------------

    def cache_statement(self, original: cst.SimpleStatementLine, updated):
        """The first-call branch around a line that calls an attention layer with decode=."""
        entry = self.cache_scan()["attention"].get(original)
        if entry is None:
            return updated
        _, site = entry
        attr = f"self.{site.attr}"
        found: list[cst.Call] = []

        class Find(cst.CSTVisitor):
            def visit_Call(self, n):
                if code(n.func) == attr:
                    found.append(n)

        updated.visit(Find())
        if len(found) != 1:  # pragma: no cover - the site is rewritten to exactly this call
            raise self.fail("internal: the attention call was not found after the rewrite")
        call = found[0]
        q = code(call.args[0].value)
        args = [code(a.with_changes(comma=cst.MaybeSentinel.DEFAULT)).strip() for a in call.args]
        hoist = ""
        if not isinstance(call.args[0].value, cst.Name | cst.Attribute):
            # the query computed once: its shape sizes the cache, then it is attended over
            name = unique("inputs_q", names_in(updated) | self.taken)
            hoist, q, args[0] = f"    {name} = {q}\n", name, name
        undecoded = cst.parse_expression(f"{attr}({', '.join([*args, 'decode=False'])})")
        first = cast(cst.SimpleStatementLine, updated.deep_replace(call, undecoded))
        body = cst.parse_statement(
            f"if {attr}.decode and {attr}.cached_key is None:\n"
            "    # the first call makes the cache, as Linen's init does (full-length inputs)\n"
            f"{hoist}"
            f"    {attr}.init_cache({q}.shape, {q}.dtype)\n"
            "else:\n    pass\n"
        )
        body = cast(cst.If, body)
        then = body.body.with_changes(body=[*body.body.body, first.with_changes(leading_lines=[])])
        orelse = cast(cst.Else, body.orelse)
        orelse = orelse.with_changes(
            body=orelse.body.with_changes(body=[updated.with_changes(leading_lines=[])])
        )
        return body.with_changes(body=then, orelse=orelse, leading_lines=updated.leading_lines)

    def cache_values(self, method: cst.FunctionDef) -> cst.FunctionDef:
        """``cached_key.value`` -> ``cached_key[...]`` on cache variables (NNX deprecates
        ``.value``)."""
        scan = self.cache_scan()
        local = set(scan["locals"])
        attrs = {f"self.{a}" for a in scan["attrs"].values()}
        if not local and not attrs:
            return method

        class T(cst.CSTTransformer):
            def leave_Attribute(self, original, updated):
                if updated.attr.value != "value":
                    return updated
                base = updated.value
                if (isinstance(base, cst.Name) and base.value in local) or code(base) in attrs:
                    return cst.Subscript(base, [cst.SubscriptElement(cst.Index(cst.Ellipsis()))])
                return updated

        return cast(cst.FunctionDef, method.visit(T()))

    # -- init_cache ----------------------------------------------------------------------------

    def holds_cache(self) -> bool:
        """A cache of its own, or one in a converted child."""
        if getattr(self.plan, "has_cache", False):
            return True
        user = self.ctx.user_classes
        for inst in self.instances:
            for c in inst.calls:
                name = c.cls.__name__
                if user.get(name) is c.cls and name in self.ctx.plans:
                    if self.ctx.plans[name].has_cache:
                        return True
        return False

    def init_cache_method(self, call: cst.FunctionDef | None) -> cst.FunctionDef | None:
        """``init_cache(<__call__'s arguments>)`` for a class that holds a cache."""
        if call is None or not self.holds_cache():
            return None
        self.plan.has_cache = True
        if "init_cache" in {
            s.name.value for s in self.node.body.body if isinstance(s, cst.FunctionDef)
        }:
            raise self.fail("the class has an init_cache method of its own, and holds a cache")
        p = call.params
        params = code(p.with_changes()).strip()
        fwd: list[str] = [q.name.value for q in p.params if q.name.value != "self"]
        if isinstance(p.star_arg, cst.Param):
            fwd.append(f"*{p.star_arg.name.value}")
        fwd += [f"{q.name.value}={q.name.value}" for q in p.kwonly_params]
        if isinstance(p.star_kwarg, cst.Param):
            fwd.append(f"**{p.star_kwarg.name.value}")
        text = (
            f"def init_cache({params}):\n"
            f"    {_INIT_CACHE_DOC}\n"
            "    for _, module in nnx.iter_modules(self):\n"
            "        for name, value in list(vars(module).items()):\n"
            "            if isinstance(value, nnx.Cache):\n"
            "                setattr(module, name, None)\n"
            f"    self({', '.join(fwd)})\n"
        )
        node = cast(cst.FunctionDef, cst.parse_statement(text))
        return node.with_changes(leading_lines=[cst.EmptyLine(indent=False)])
