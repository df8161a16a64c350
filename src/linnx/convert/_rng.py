"""``self.make_rng(name)`` and ``self.is_initializing()`` in converted classes.

* ``self.make_rng('noise')``: the class keeps a stream of its own, forked in ``__init__``
  from the ``rngs`` it is built with (``self.noise_rngs = rngs.noise.fork()``, as
  ``nnx.Dropout`` keeps its ``dropout`` stream), and draws a key from it
  (``self.noise_rngs()``). ``nnx.Rngs`` falls back to its ``default`` stream for a name it
  lacks, so ``Cls(..., rngs=nnx.Rngs(0))`` works for any stream name. The keys differ from
  Linen's (another key derivation), so equality holds on the paths that draw none (eval).
* ``self.is_initializing()``: ``False``. NNX initializes in ``__init__``, and ``__call__``
  never runs as part of it; what Linen's first call did only at init (creating a variable
  from the input, skipping an update) is ``__init__``'s business, and the weights moved from
  Linen carry its result.

These (and the cache queries of ``_cache.py``) convert in ``@nn.compact`` classes; a
``setup()`` class that uses them stays Linen.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, cast

import libcst as cst

from ._cache import CACHE_QUERIES
from ._cstutil import identifier, unique

if TYPE_CHECKING:
    from ._classes import Unsupported

__all__ = ["RngMixin", "CONVERTED_API", "stream_names"]

#: The Linen module API calls that a converted class may make (the rest is refused).
CONVERTED_API = CACHE_QUERIES | {"make_rng", "is_initializing"}

_MAKE_RNG = re.compile(r"""\.make_rng\(\s*(['"])([A-Za-z_]\w*)\1""")


def stream_names(source: str) -> tuple[str, ...]:
    """The stream names a source passes to ``make_rng`` (for tracing its examples)."""
    names = dict.fromkeys(m.group(2) for m in _MAKE_RNG.finditer(source))
    names.pop("params", None)
    names.pop("dropout", None)
    return tuple(names)


class RngMixin:
    """``make_rng`` and ``is_initializing`` for the class converter."""

    if TYPE_CHECKING:
        node: cst.ClassDef
        taken: set[str]
        replacers: dict[cst.CSTNode, Any]
        init_lines: list[tuple[int, str, str | None]]

        def fail(self, reason: str, node: cst.CSTNode | None = None) -> Unsupported: ...

        def convert_cache_query(self, node: cst.Call) -> None: ...

    _streams: dict[str, str] | None = None

    def convert_api_call(self, node: cst.Call) -> None:
        """A ``self.<Linen API>(...)`` call that converts (see :data:`CONVERTED_API`)."""
        what = cast(cst.Attribute, node.func).attr.value
        if any(
            isinstance(s, cst.FunctionDef) and s.name.value == "setup" for s in self.node.body.body
        ):
            raise self.fail(f"self.{what}(...) in a setup() class is not converted yet", node)
        if what in CACHE_QUERIES:
            self.convert_cache_query(node)
            return
        if what == "is_initializing":
            if node.args:
                raise self.fail("self.is_initializing(...) with arguments", node)
            self.replacers[node] = lambda updated: cst.Name("False")
            return
        # make_rng
        args = node.args
        if len(args) > 1 or (args and (args[0].keyword is not None or args[0].star)):
            raise self.fail("self.make_rng(...) with other arguments than a stream name", node)
        name = "params"
        if args:
            value = args[0].value
            raw = value.evaluated_value if isinstance(value, cst.SimpleString) else None
            if not isinstance(raw, str) or not raw.isidentifier():
                raise self.fail("self.make_rng(...) of a stream not named by a literal", node)
            name = raw
        if self._streams is None:
            self._streams = {}
        attr = self._streams.get(name)
        if attr is None:
            attr = unique(f"{identifier(name)}_rngs", self.taken)
            self.taken.add(attr)
            self._streams[name] = attr
        self.replacers[node] = lambda updated: cst.parse_expression(f"self.{attr}()")

    def stream_lines(self) -> None:
        """Puts the streams the class draws from first in ``__init__``."""
        if not self._streams:
            return
        lines = [(0, f"self.{a} = rngs.{n}.fork()", None) for n, a in self._streams.items()]
        self.init_lines[0:0] = lines

    def drop_init_branches(self, method: cst.FunctionDef) -> cst.FunctionDef:
        """``if self.is_initializing(): A else: B`` became ``if False: ...``: only B stays
        (``if not ...``: only A); ``if self.is_mutable_collection('cache'): A`` became
        ``if True: ...`` (NNX variables are always writable): only A stays."""

        def const(test: cst.BaseExpression) -> bool | None:
            name = test
            if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
                name = test.expression
            negated = name is not test
            if isinstance(name, cst.Name) and name.value in ("True", "False"):
                return (name.value == "True") != negated
            return None

        def inline(updated: cst.If, block: Any) -> Any:
            """The statements of ``block`` in place of the ``if``, keeping its comments."""
            body = list(block.body)
            if body and updated.leading_lines:
                lines = [*updated.leading_lines, *body[0].leading_lines]
                body[0] = body[0].with_changes(leading_lines=lines)
            return cst.FlattenSentinel(body)

        class T(cst.CSTTransformer):
            def leave_If(self, original, updated):
                taken = const(updated.test)
                if taken is True:
                    return inline(updated, updated.body)
                if taken is False:
                    orelse = updated.orelse
                    if orelse is None:
                        return cst.RemoveFromParent()
                    if isinstance(orelse, cst.If):
                        return orelse.with_changes(leading_lines=updated.leading_lines)
                    return inline(updated, orelse.body)
                return updated

        return cast(cst.FunctionDef, method.visit(T()))
