"""The file-level rewrite: which classes convert, the new module text, and the path map.

Classes convert children first (a parent needs its children's size arguments and dropped
flags). A class that cannot convert stays Linen, and so does every class used inside it (a
Linen module cannot hold NNX ones); converted classes use kept ones through ``linnx.ToNNX``.
The module keeps every statement that is not a converted class as written; imports are
completed (``from flax import nnx``) and the ones that became unused are dropped.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import libcst as cst
from libcst.metadata import PositionProvider

from .._public import public
from ._build import convert_class
from ._classes import ClassPlan, Unsupported
from ._convert_class import Context
from ._cstutil import unique
from ._errors import ConvertError, UnknownLayerError
from ._idioms import mixin_conflicts, mixin_plans
from ._rnn import child_name
from ._sharding import is_axes_leaf
from ._trace import Instance, Trace, iter_vars

__all__ = ["Kept", "Rewrite", "rewrite"]


@public("linnx.convert")
@dataclass
class Kept:
    """A reached class that stays Linen (used through ``linnx.ToNNX``), and why.

    Example:
        >>> from linnx import convert
        >>> src = ('import flax.linen as nn\\n'
        ...        'class Inner(nn.Module):\\n'
        ...        '    @nn.compact\\n'
        ...        '    def __call__(self, x):\\n'
        ...        '        return nn.Sequential([\\n'
        ...        '            nn.Dense(2), nn.Dropout(0.5, deterministic=True)])(x)\\n'
        ...        'class Outer(nn.Module):\\n'
        ...        '    @nn.compact\\n'
        ...        '    def __call__(self, x):\\n'
        ...        '        return Inner()(nn.Dense(3)(x))\\n')
        >>> result = convert.convert_source(src, ['Outer()(jnp.ones((1, 4)))'])
        >>> (kept,) = result.kept
        >>> kept.name, kept.line, result.ok
        ('Inner', 6, True)
        >>> kept.reason
        'deterministic= (a train/eval switch) of a layer inside nn.Sequential is not converted yet'
    """

    name: str
    reason: str
    line: int


@dataclass
class Rewrite:
    """The converted module text and everything the report and verification need."""

    code: str
    plans: dict[str, ClassPlan]
    kept: list[Kept]
    path_maps: list[dict[str, str]] = field(default_factory=list)
    # per example: Linen module path -> NNX module path, and the wrapped modules' paths
    module_maps: list[tuple[dict, set]] = field(default_factory=list)


def _user_classes(mod: types.ModuleType) -> dict[str, type]:
    from flax import linen as nn

    return {
        k: v
        for k, v in vars(mod).items()
        if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == mod.__name__
    }


def _order(reached: dict[str, list[Instance]], user: dict[str, type]) -> list[str]:
    """Children before parents."""
    deps: dict[str, set[str]] = {n: set() for n in reached}
    for name, insts in reached.items():
        for inst in insts:
            for c in inst.calls:
                cname = c.cls.__name__
                if cname in reached and user.get(cname) is c.cls and cname != name:
                    deps[name].add(cname)
    out: list[str] = []
    seen: set[str] = set()

    def visit(n: str, stack: tuple[str, ...]) -> None:
        if n in seen or n in stack:
            return
        for d in sorted(deps[n]):
            visit(d, (*stack, n))
        seen.add(n)
        out.append(n)

    for n in reached:
        visit(n, ())
    return out


def _below(insts: Sequence[Instance], user: dict[str, type]) -> set[str]:
    """User classes used anywhere inside these instances."""
    out: set[str] = set()
    for inst in insts:
        for path, other in inst.tree.items():
            if path[: len(inst.path)] == inst.path and path != inst.path:
                if user.get(other.cls.__name__) is other.cls:
                    out.add(cast(type, other.cls).__name__)  # `is` above widens it for mypy
    return out


def rewrite(
    source: str,
    path: str,
    mod: types.ModuleType,
    traces: Sequence[Trace],
    *,
    keep_signatures: bool = False,
    wrap_unknown: bool = False,
) -> Rewrite:
    """Converts every class the traces reached; see the module docstring."""
    module = cst.parse_module(source)
    # The tree was just parsed here and nothing else holds it: no defensive deep copy.
    wrapper = cst.MetadataWrapper(module, unsafe_skip_copy=True)
    positions = wrapper.resolve(PositionProvider)
    tree = wrapper.module
    user = _user_classes(mod)
    class_nodes = {
        s.name.value: s for s in tree.body if isinstance(s, cst.ClassDef) and s.name.value in user
    }
    reached: dict[str, list[Instance]] = {}
    for t in traces:
        for inst in sorted(t.instances.values(), key=lambda i: len(i.path)):
            name = inst.cls.__name__
            if user.get(name) is inst.cls:
                reached.setdefault(name, []).append(inst)
    order = _order(reached, user)
    kept: dict[str, Kept] = {}
    for name in order:
        if name not in class_nodes:
            kept[name] = Kept(name, "it is not defined at the top level of the file", 0)
    from ._lifted import wrapped_targets

    for name, (reason, line) in wrapped_targets(class_nodes, vars(mod), positions).items():
        if name in reached and name not in kept:  # nn.remat_scan(Block): Block stays Linen
            kept[name] = Kept(name, reason, line)
    while True:
        plans: dict[str, ClassPlan] = {}
        ctx = Context(
            module_globals=vars(mod),
            src_lines=source.splitlines(),
            plans=plans,
            kept={k: v.reason for k, v in kept.items()},
            user_classes=user,
            keep_signatures=keep_signatures,
            path=path,
            class_nodes=class_nodes,
            reached=set(reached),
        )
        new_kept = dict(kept)
        for name in order:
            if name in new_kept:
                continue
            node = class_nodes[name]
            try:
                plans[name] = convert_class(node, positions, user[name], reached[name], ctx)
            except Unsupported as e:
                new_kept[name] = Kept(name, e.reason, e.line or positions[node].start.line)
                ctx.kept[name] = e.reason
            except UnknownLayerError as e:
                if not wrap_unknown:
                    raise
                reason = str(e).splitlines()[0].split(": ", 1)[-1]
                new_kept[name] = Kept(name, reason, e.line or positions[node].start.line)
                ctx.kept[name] = reason
        for name in list(new_kept):
            for below in _below(reached.get(name, []), user):
                if below not in new_kept:
                    line = positions[class_nodes[below]].start.line if below in class_nodes else 0
                    new_kept[below] = Kept(
                        below, f"it is used inside {name}, which stays Linen", line
                    )
        new_kept.update(mixin_conflicts(plans, new_kept, user, class_nodes, positions))
        if new_kept.keys() == kept.keys():
            kept = new_kept
            break
        kept = new_kept
    plans.update(mixin_plans(plans, user, class_nodes, positions, ctx))
    for t in traces:
        root_cls = t.instances[()].cls
        if user.get(root_cls.__name__) is not root_cls:
            raise ConvertError(
                f"--example {t.example.text!r}: the model is {root_cls.__module__}."
                f"{root_cls.__name__}, neither a class of {path} nor a Flax layer of the "
                "layer table (nn.Dense, nn.Conv, ...); there is nothing to convert.\n"
                "Fix: construct one of the file's nn.Module classes in the example.",
                path=path,
            )
        root = root_cls.__name__
        if root in kept:
            k = kept[root]
            raise ConvertError(
                f"{path}:{k.line}: the example's model class {root} cannot be converted: "
                f"{k.reason}.\nFix: rewrite that part of {root} (see the docs' list of what "
                "converts), or convert a class inside it.",
                path=path,
                line=k.line,
            )
    text = _assemble(tree, plans, kept)
    result = Rewrite(code=text, plans=plans, kept=list(kept.values()))
    result.path_maps = [path_map(t, plans, user) for t in traces]
    result.module_maps = [module_paths(t, plans, user) for t in traces]
    return result


# -- the module text ---------------------------------------------------------------------------


def _assemble(tree: cst.Module, plans: dict[str, ClassPlan], kept: dict[str, Kept]) -> str:
    bound = _bound_names(tree)
    var_classes: dict[str, str] = {}
    body: list[cst.BaseStatement] = []
    needs: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, cst.ClassDef) and stmt.name.value in plans:
            plan = plans[stmt.name.value]
            needs |= plan.needs
            for col, cname in plan.var_classes.items():
                if col not in var_classes:
                    var_classes[col] = unique(cname, bound)
                    bound.add(var_classes[col])
                    body.append(
                        cst.parse_statement(
                            f"class {var_classes[col]}(nnx.Variable):\n"
                            f'    """The variables of the Linen collection {col!r}."""\n'
                        ).with_changes(leading_lines=stmt.leading_lines)
                    )
                    blank = cst.EmptyLine(indent=False)
                    stmt = stmt.with_changes(leading_lines=[blank, blank])
            node = plan.node
            if var_classes:
                node = _rename_var_classes(node, plan, var_classes)
            body.append(node.with_changes(leading_lines=stmt.leading_lines))
        else:
            body.append(stmt)
    new = tree.with_changes(body=body)
    new = _fix_imports(tree, new, needs)
    return new.code


def _rename_var_classes(node, plan: ClassPlan, final: dict[str, str]):
    renames = {
        plan.var_classes[c]: final[c] for c in plan.var_classes if plan.var_classes[c] != final[c]
    }
    if not renames:
        return node

    class T(cst.CSTTransformer):
        def leave_Name(self, original, updated):
            return updated.with_changes(value=renames.get(updated.value, updated.value))

    return node.with_changes(body=node.body.visit(T()))


def _bound_names(tree: cst.Module) -> set[str]:
    out: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, cst.ClassDef | cst.FunctionDef):
            out.add(stmt.name.value)
        elif isinstance(stmt, cst.SimpleStatementLine):
            for s in stmt.body:
                if isinstance(s, cst.Assign):
                    for t in s.targets:
                        if isinstance(t.target, cst.Name):
                            out.add(t.target.value)
                elif isinstance(s, cst.Import | cst.ImportFrom) and not isinstance(
                    s.names, cst.ImportStar
                ):
                    for a in s.names:
                        out.add(_alias_name(a))
    return out


def _alias_name(a: cst.ImportAlias) -> str:
    if a.asname is not None:
        return a.asname.name.value  # type: ignore[union-attr]
    name = a.name
    while isinstance(name, cst.Attribute):
        name = cast("cst.Attribute | cst.Name", name.value)  # a dotted module name
    return name.value


def _name_counts(node: cst.Module) -> dict[str, int]:
    """How often each name is read, imports left out (Python's ast: LibCST visits are slow)."""
    import ast

    counts: dict[str, int] = {}
    for n in ast.walk(ast.parse(node.code)):
        if isinstance(n, ast.Name):
            counts[n.id] = counts.get(n.id, 0) + 1
    return counts


def _fix_imports(old: cst.Module, new: cst.Module, needs: set[str]) -> cst.Module:
    before, after = _name_counts(old), _name_counts(new)
    bound = _bound_names(new)
    body = list(new.body)
    anchor = None  # index of the statement that imports flax.linen
    out: list[cst.BaseStatement] = []
    orphan: list[cst.EmptyLine] = []  # comments above a dropped import
    anchor_lead: list[cst.EmptyLine] | None = None
    for stmt in body:
        if orphan and not _is_dropped_import(stmt, before, after):
            stmt = stmt.with_changes(leading_lines=[*orphan, *stmt.leading_lines])
            orphan = []
        if isinstance(stmt, cst.SimpleStatementLine) and any(
            isinstance(s, cst.Import | cst.ImportFrom) for s in stmt.body
        ):
            small = []
            for s in stmt.body:
                if isinstance(s, cst.Import | cst.ImportFrom) and not isinstance(
                    s.names, cst.ImportStar
                ):
                    if "linen" in cst.Module([]).code_for_node(s):
                        anchor = len(out)
                    names = [
                        a
                        for a in s.names
                        if not (before.get(_alias_name(a), 0) and not after.get(_alias_name(a), 0))
                    ]
                    if not names:
                        continue
                    names[-1] = names[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
                    s = s.with_changes(names=names)
                small.append(s)
            if not small:
                if anchor == len(out):
                    anchor -= 1
                    anchor_lead = [*orphan, *stmt.leading_lines]
                    orphan = []
                else:
                    orphan = [*orphan, *stmt.leading_lines]
                continue
            stmt = stmt.with_changes(body=small)
        out.append(stmt)
    extra = []
    if "nnx" not in bound:
        extra.append("from flax import nnx")
    if "linnx" in needs and "linnx" not in bound:
        extra.append("import linnx")
    if "jnp" in needs and "jnp" not in bound:
        extra.append("import jax.numpy as jnp")
    if extra:
        at = (anchor + 1) if anchor is not None else _after_imports(out)
        at = max(at, 0)
        new_stmts = [cst.parse_statement(e + "\n") for e in extra]
        if anchor_lead is not None:  # the dropped flax.linen import's comments stay on top
            new_stmts[0] = new_stmts[0].with_changes(leading_lines=anchor_lead)
        out[at:at] = new_stmts
    return new.with_changes(body=out)


def _is_dropped_import(stmt, before, after) -> bool:
    if not isinstance(stmt, cst.SimpleStatementLine):
        return False
    for s in stmt.body:
        if not isinstance(s, cst.Import | cst.ImportFrom) or isinstance(s.names, cst.ImportStar):
            return False
        for a in s.names:
            if not (before.get(_alias_name(a), 0) and not after.get(_alias_name(a), 0)):
                return False
    return True


def _after_imports(body: list[cst.BaseStatement]) -> int:
    at = 0
    for i, stmt in enumerate(body):
        if isinstance(stmt, cst.SimpleStatementLine) and any(
            isinstance(s, cst.Import | cst.ImportFrom) for s in stmt.body
        ):
            at = i + 1
        elif isinstance(stmt, cst.SimpleStatementLine) and i == 0:
            at = 1  # a module docstring
    return at


# -- the path map -------------------------------------------------------------------------------


def module_paths(
    trace: Trace, plans: dict[str, ClassPlan], user: dict[str, type]
) -> tuple[dict[tuple[str, ...], tuple[str, ...]], set[tuple[str, ...]]]:
    """Linen module path -> NNX module path for one example, and the Linen paths of the
    modules kept as Linen (wrapped in ``linnx.ToNNX``)."""
    nnx_of: dict[tuple[str, ...], tuple[str, ...]] = {(): ()}
    wrapped: set[tuple[str, ...]] = set()
    insts = sorted(trace.instances.values(), key=lambda i: len(i.path))
    for inst in insts:
        plan = plans.get(inst.cls.__name__) if user.get(inst.cls.__name__) is inst.cls else None
        if inst.path not in nnx_of:
            continue
        for c in inst.children().values():
            if plan is not None and not any(inst.path[: len(w)] == w for w in wrapped):
                site = plan.site_for(c)
                if site is None:
                    raise ConvertError(f"internal: no site for {'/'.join(c.path)}")
                if site.kind == "sequential" and c.name in site.members:
                    owner = (*nnx_of[inst.path], site.attr, "layers")
                    nnx_of[c.path] = (*owner, str(site.members[c.name]))
                elif site.kind == "rnn" and c.name in site.member_paths:
                    nnx_of[c.path] = (*nnx_of[inst.path], site.attr, *site.member_paths[c.name])
                elif site.is_list and site.index_from_name:
                    k = int(c.name.rsplit("_", 1)[1])
                    nnx_of[c.path] = (*nnx_of[inst.path], site.attr, str(k))
                elif site.is_list:
                    k = [x.path for x in site.calls_in(inst)].index(c.path)
                    nnx_of[c.path] = (*nnx_of[inst.path], site.attr, str(k))
                else:
                    nnx_of[c.path] = (*nnx_of[inst.path], site.attr)
                if site.kind == "kept":
                    wrapped.add(c.path)
            else:
                nnx_of[c.path] = (*nnx_of[inst.path], child_name(inst.cls, c.name))
    return nnx_of, wrapped


def path_map(trace: Trace, plans: dict[str, ClassPlan], user: dict[str, type]) -> dict[str, str]:
    """Linen variable path (without the collection) -> NNX variable path, for one example."""
    from ..migrate._record import non_weight_leaf

    nnx_of, wrapped = module_paths(trace, plans, user)
    out: dict[str, str] = {}
    for (col, *rest), leaf in iter_vars(trace.variables):
        if is_axes_leaf(leaf) or non_weight_leaf(leaf) is not None or col == "cache":
            continue  # params_axes (param_with_axes): NNX keeps them on the Param; values
            # sown into a collection that init keeps ('losses'): no weight
        owner, name = tuple(rest[:-1]), rest[-1]
        w = next((w for w in wrapped if owner[: len(w)] == w), None)
        if w is not None:
            # linnx.migrate names a ToNNX variable without its collection attribute
            nnx = (*nnx_of[w], *owner[len(w) :], name)
        else:
            inst = trace.instances.get(owner)
            plan = None
            if inst is not None and user.get(inst.cls.__name__) is inst.cls:
                plan = plans.get(inst.cls.__name__)
            if plan is not None:
                attr = plan.var_attrs.get((col, name))
                if attr is None:
                    raise ConvertError(f"internal: no attribute for {col}/{'/'.join(rest)}")
                nnx = (*nnx_of[owner], attr)
            else:
                nnx = (*nnx_of.get(owner, owner), name)
        out["/".join(rest)] = "/".join(nnx)
    return out
