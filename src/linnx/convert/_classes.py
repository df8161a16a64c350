"""What a converted class is made of, and the pieces both class styles share.

A :class:`ClassPlan` is the result of converting one Linen class: its new CST node, which NNX
attribute each submodule call site and each variable became (for the path map), the extra
constructor arguments that carry input sizes (:class:`SizeParam`, each with a way to read its
value from a traced Linen instance), the call flags it dropped, and the size of its output in
terms of its own fields (so the parent can compute the next layer's input size).

:class:`Unsupported` is raised by the converters for a construct they do not handle; the class
then stays Linen and its users wrap it with ``linnx.ToNNX``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import libcst as cst

from ._trace import ChildCall, Instance

__all__ = ["Unsupported", "SizeParam", "Site", "ClassPlan", "literal", "one_value", "VAR_TYPES"]

#: Linen collection -> the NNX variable type its variables become.
VAR_TYPES = {
    "params": "nnx.Param",
    "batch_stats": "nnx.BatchStat",
    "cache": "nnx.Cache",
    "intermediates": "nnx.Intermediate",
}


class Unsupported(Exception):
    """A construct the converter does not handle; the class stays Linen (wrapped)."""

    def __init__(self, reason: str, line: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.line = line


def literal(value: Any) -> str | None:
    """Python source for a plain value (ints, floats, strings, tuples...), else None."""
    if value is None or isinstance(value, bool | int | float | str):
        return repr(value)
    if isinstance(value, tuple | list):
        items = [literal(v) for v in value]
        if any(i is None for i in items):
            return None
        strs = cast("list[str]", items)  # no None: checked above
        if isinstance(value, tuple):
            return "(" + ", ".join(strs) + ("," if len(items) == 1 else "") + ")"
        return "[" + ", ".join(strs) + "]"
    try:
        import numpy as np

        if isinstance(value, np.integer | np.floating):
            return repr(value.item())
    except ImportError:  # pragma: no cover
        pass
    return None


def one_value(values: list[Any], what: str, line: int | None) -> Any:
    """The single value that every execution saw, or Unsupported when they differ."""
    if not values:
        return None
    first = values[0]
    for v in values[1:]:
        if v != first:
            raise Unsupported(
                f"{what} differs between the calls of one module ({first!r} vs {v!r}) and "
                "cannot be computed from the fields",
                line,
            )
    return first


@dataclass
class SizeParam:
    """An extra keyword argument of a converted ``__init__`` (an input size or other value).

    ``resolve(instance)`` reads its value from a traced Linen instance of the class.
    """

    name: str
    annotation: str
    resolve: Callable[[Instance], Any]
    line: int | None = None
    default: str | None = None
    is_input: bool = False  # the size of the first call argument (``in_features``)


@dataclass
class Site:
    """A submodule call site (compact) or a submodule attribute (setup)."""

    key: Any
    child_cls: type
    kind: str  # 'layer' (a Flax layer with a rule), 'user' (converted), 'kept' (wrapped),
    # 'sequential' (nn.Sequential of layers with rules and functions), 'rnn' (nn.RNN and
    # nn.Bidirectional with their cells)
    execs: list[tuple[Instance, ChildCall]]
    line: int
    base: str
    attr: str = ""
    is_list: bool = False
    name_arg: str | None = None
    index_from_name: bool = False  # setup() lists: entry k is the Linen child `<attr>_<k>`
    ctor: Any = None  # the construction call node (compact sites)
    named: bool = False  # constructed in its own statement (``dense = nn.Dense(4)``)
    # nn.Sequential sites: the layers' calls, and Linen child name -> index in ``layers``
    inner: list[tuple[Instance, ChildCall]] = field(default_factory=list)
    members: dict[str, int] = field(default_factory=dict)
    # nn.RNN/nn.Bidirectional sites: Linen child name of a cell or inner RNN -> its NNX path
    # below the site's attribute (``('forward_rnn', 'cell')``)
    member_paths: dict[str, tuple[str, ...]] = field(default_factory=dict)
    lift: Any = None  # a _lifted.LiftChain: nn.scan/nn.vmap/nn.remat around the class

    def calls_in(self, inst: Instance) -> list[ChildCall]:
        """The distinct children this site made in one instance, in call order."""
        seen: dict[tuple[str, ...], ChildCall] = {}
        for i, c in self.execs:
            if i is inst:
                seen.setdefault(c.path, c)
        return list(seen.values())


@dataclass
class ClassPlan:
    """One converted class."""

    name: str
    node: cst.ClassDef
    line: int
    sites: list[Site] = field(default_factory=list)
    var_attrs: dict[tuple[str, str], str] = field(default_factory=dict)
    size_params: list[SizeParam] = field(default_factory=list)
    removed_flags: list[str] = field(default_factory=list)
    call_params: list[str] = field(default_factory=list)
    out_expr: str | None = None
    var_classes: dict[str, str] = field(default_factory=dict)  # collection -> class name
    needs: set[str] = field(default_factory=set)  # extra imports: 'linnx', 'jnp'
    has_cache: bool = False  # holds a decode cache (see _cache.py): gets init_cache()
    wrapped_children: list[tuple[str, str, int]] = field(default_factory=list)
    mixins: list[str] = field(default_factory=list)  # the file's mixin bases of the class

    def size_param(self, name: str) -> SizeParam:
        return next(p for p in self.size_params if p.name == name)

    def flag_args(self, args: Sequence[cst.Arg]) -> list[int]:
        """Indices of the arguments of a call of this class that are removed flags (they
        became ``model.train()``/``model.eval()``), by keyword or by position."""
        found = []
        for i, a in enumerate(args):
            if a.keyword is not None:
                name: str | None = a.keyword.value
            else:
                name = self.call_params[i] if i < len(self.call_params) else None
            if name in self.removed_flags:
                found.append(i)
        return found

    def site_for(self, call: ChildCall) -> Site | None:
        for s in self.sites:
            if any(c is call for _, c in (*s.execs, *s.inner)):
                return s
        return None


def linen_fields(cls: type) -> list[dataclasses.Field]:
    """The user fields of a Linen module class (``parent`` and ``name`` left out)."""
    return [f for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]


def field_default(cls: type, name: str) -> Any:
    """A field's default value, or ``dataclasses.MISSING``."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.default
    return dataclasses.MISSING
