"""Small LibCST helpers shared by the rewrite: rendering, names, and expression edits."""

from __future__ import annotations

import builtins
import keyword
import re
from collections.abc import Callable, Iterable
from typing import TypeGuard, cast

import libcst as cst

__all__ = [
    "code",
    "calls_in",
    "names_in",
    "is_self_attr",
    "dotted",
    "snake",
    "identifier",
    "BUILTINS",
    "replace_shape_last",
    "map_nodes",
]

BUILTINS = frozenset(dir(builtins))
_EMPTY = cst.Module(body=[])


def code(node: cst.CSTNode) -> str:
    """The source text of a node, as LibCST renders it (its own formatting kept)."""
    return _EMPTY.code_for_node(node)


class _Names(cst.CSTVisitor):
    """Free names of an expression (the bound ones of lambdas/comprehensions left out)."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.bound: list[set[str]] = []

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        node.value.visit(self)
        return False

    def visit_Arg(self, node: cst.Arg) -> bool:
        node.value.visit(self)  # not the keyword's name
        return False

    def visit_Name(self, node: cst.Name) -> None:
        if not any(node.value in b for b in self.bound):
            self.names.add(node.value)

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        self.bound.append({p.name.value for p in node.params.params})
        node.body.visit(self)
        self.bound.pop()
        return False

    def _comp(self, node, elts) -> bool:
        bound: set[str] = set()
        f = node.for_in
        while f is not None:
            f.iter.visit(self)
            for n in _targets(f.target):
                bound.add(n)
            f = f.inner_for_in
        self.bound.append(bound)
        for e in elts:
            e.visit(self)
        f = node.for_in
        while f is not None:
            for cond in f.ifs:
                cond.visit(self)
            f = f.inner_for_in
        self.bound.pop()
        return False

    def visit_ListComp(self, node: cst.ListComp) -> bool:
        return self._comp(node, [node.elt])

    def visit_GeneratorExp(self, node: cst.GeneratorExp) -> bool:
        return self._comp(node, [node.elt])

    def visit_SetComp(self, node: cst.SetComp) -> bool:
        return self._comp(node, [node.elt])

    def visit_DictComp(self, node: cst.DictComp) -> bool:
        return self._comp(node, [node.key, node.value])


def _targets(node: cst.BaseExpression) -> list[str]:
    if isinstance(node, cst.Name):
        return [node.value]
    if isinstance(node, cst.Tuple | cst.List):
        return [n for e in node.elements for n in _targets(e.value)]
    return []


def targets(node: cst.BaseExpression) -> list[str]:
    """The plain names an assignment target binds (``a``, ``a, b``)."""
    return _targets(node)


class _Calls(cst.CSTVisitor):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[cst.Call] = []

    def leave_Call(self, original_node: cst.Call) -> None:
        self.calls.append(original_node)


def calls_in(node: cst.CSTNode) -> list[cst.Call]:
    """Every call inside ``node`` (``node`` too), in the order they run: a call's arguments
    before the call itself, left to right."""
    visitor = _Calls()
    node.visit(visitor)
    return visitor.calls


def bracket_pairs(text: str) -> dict[int, int]:
    """Positions of matching brackets in source text (string literals skipped)."""
    pairs, stack, quote = {}, [], None
    for i, c in enumerate(text):
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c in "([{":
            stack.append(i)
        elif c in ")]}" and stack:
            pairs[stack.pop()] = i
    return pairs


def split_args(text: str) -> list[str]:
    """Top-level comma-separated parts of an argument list's text (a lambda's parameters
    stay with it)."""
    parts, depth, cur, quote = [], 0, "", None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif (
            ch == "," and depth == 0 and not (cur.lstrip().startswith("lambda") and ":" not in cur)
        ):
            parts.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def operand(expr: str) -> str:
    """``expr`` ready to stand inside a larger expression: a name, number or attribute as
    is, anything compound in parentheses (``2 * self.hidden`` -> ``2 * 4``, not ``2 * (4)``)."""
    return expr if re.fullmatch(r"[\w.]+", expr) else f"({expr})"


def keyword_arg(name: str, arg: cst.Arg) -> cst.Arg:
    """``arg`` passed as ``name=value`` (no spaces around ``=``, as black writes it)."""
    tight = cst.SimpleWhitespace("")
    return arg.with_changes(
        keyword=cst.Name(name),
        equal=cst.AssignEqual(whitespace_before=tight, whitespace_after=tight),
    )


def names_in(node: cst.CSTNode) -> set[str]:
    """The free names an expression reads."""
    v = _Names()
    node.visit(v)
    return v.names


def self_attrs(node: cst.CSTNode) -> set[str]:
    """The attributes read from ``self`` in an expression (``self.features`` -> features)."""
    out: set[str] = set()

    class V(cst.CSTVisitor):
        def visit_Attribute(self, n: cst.Attribute) -> None:
            if isinstance(n.value, cst.Name) and n.value.value == "self":
                out.add(n.attr.value)

    node.visit(V())
    return out


def is_self_attr(node: cst.CSTNode, attr: str | None = None) -> TypeGuard[cst.Attribute]:
    """Whether the node is ``self.<attr>`` (any attribute when ``attr`` is None)."""
    return (
        isinstance(node, cst.Attribute)
        and isinstance(node.value, cst.Name)
        and node.value.value == "self"
        and (attr is None or node.attr.value == attr)
    )


def dotted(node: cst.CSTNode) -> str | None:
    """``nn.Dense`` -> 'nn.Dense'; None for anything but a dotted name."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        head = dotted(node.value)
        return None if head is None else f"{head}.{node.attr.value}"
    return None


def snake(name: str) -> str:
    """``BatchNorm`` -> 'batch_norm', ``MLPBlock`` -> 'mlp_block'."""
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    return s.lower()


def identifier(name: str) -> str:
    """A valid Python identifier close to ``name`` (Linen names may hold any character)."""
    s = re.sub(r"\W", "_", name)
    if not s or s[0].isdigit():
        s = "_" + s
    if keyword.iskeyword(s):
        s += "_"
    return s


def unique(base: str, taken: Iterable[str]) -> str:
    """``base``, or ``base_2``, ``base_3``... whichever is free."""
    taken = set(taken)
    if base not in taken:
        return base
    i = 2
    while f"{base}_{i}" in taken:
        i += 1
    return f"{base}_{i}"


def replace_shape_last(node: cst.CSTNode, size_of: Callable[[str], str | None]) -> cst.CSTNode:
    """Replaces ``v.shape[-1]`` by the size expression that ``size_of(v)`` knows."""

    class T(cst.CSTTransformer):
        def leave_Subscript(self, original, updated):
            v = updated.value
            if (
                isinstance(v, cst.Attribute)
                and v.attr.value == "shape"
                and isinstance(v.value, cst.Name)
                and len(updated.slice) == 1
                and isinstance(updated.slice[0].slice, cst.Index)
                and code(updated.slice[0].slice.value).replace(" ", "") == "-1"
            ):
                size = size_of(v.value.value)
                if size is not None:
                    return cst.parse_expression(size)
            return updated

    return cast(cst.CSTNode, node.visit(T()))


def map_nodes(
    node: cst.CSTNode, replace: Callable[[cst.CSTNode, cst.CSTNode], cst.CSTNode | None]
) -> cst.CSTNode:
    """Rebuilds ``node`` bottom-up; ``replace(original, updated)`` may swap any node."""

    class T(cst.CSTTransformer):
        def on_leave(self, original, updated):
            new = replace(original, updated)
            return updated if new is None else new

    return cast(cst.CSTNode, node.visit(T()))
