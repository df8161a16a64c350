"""What a Linen-style module needs to know about the call it runs in.

Three pieces of per-thread state, each a ``ContextVar`` so threads and async tasks never see
each other's:

* **Frames.** A stack with one entry per module whose method is running. A ``compact`` frame
  owns the auto-naming counters of one call of a compact method (Linen restarts ``Dense_0``,
  ``Dense_1``... at every call, which is what makes the names stable from call to call). A
  ``method`` or ``setup`` frame marks code where submodules are *not* named by call order: they
  get the name of the attribute they are assigned to.
* **Rngs.** The ``nnx.Rngs`` that ``make_rng`` draws from. Only a module given ``rngs=`` holds
  one (as its ``rngs`` attribute); its submodules find it here while one of its methods runs,
  as a Linen submodule finds the keys of the enclosing ``apply``. Keeping a single owner avoids
  shared references between modules, so the tree also works with NNX's tree mode.
* **Mode.** ``'init'`` while a ``lazy_init`` pass or ``Module.init`` runs (variables and
  submodules may be created), ``'apply'`` while ``Module.apply`` runs (their values come from a
  variables dict, see :class:`Binding`), ``'call'`` otherwise (a plain NNX call: everything must
  already exist).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, cast

import jax
from flax import nnx

from ..bridge import _rngs as bridge_rngs

__all__ = [
    "COMPACT",
    "METHOD",
    "SETUP",
    "Frame",
    "Binding",
    "entering",
    "isolated",
    "top_frame",
    "frames",
    "mode",
    "current_rngs",
    "construction_rngs",
    "binding",
    "bound",
    "init_sow_policy",
    "init_may_sow",
    "scope_path",
    "dummy_key",
]

COMPACT, METHOD, SETUP = "compact", "method", "setup"


@dataclasses.dataclass
class Frame:
    """One running method of one module."""

    module: Any
    kind: str
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    used: set[str] = dataclasses.field(default_factory=set)

    def next_name(self, prefix: str) -> str:
        n = self.counters.get(prefix, 0)
        self.counters[prefix] = n + 1
        return f"{prefix}_{n}"


_frames: contextvars.ContextVar[tuple[Frame, ...]] = contextvars.ContextVar(
    "linnx_module_frames", default=()
)
_rngs: contextvars.ContextVar[nnx.Rngs | None] = contextvars.ContextVar(
    "linnx_module_rngs", default=None
)
_binding: contextvars.ContextVar[Binding | None] = contextvars.ContextVar(
    "linnx_module_binding", default=None
)
# Collections that `sow` may write during initialization; None means Linen's default (all but
# 'intermediates'), True means all.
_init_sow: contextvars.ContextVar[frozenset[str] | bool | None] = contextvars.ContextVar(
    "linnx_module_init_sow", default=None
)


def top_frame() -> Frame | None:
    stack = _frames.get()
    return stack[-1] if stack else None


def frames() -> tuple[Frame, ...]:
    return _frames.get()


@contextlib.contextmanager
def entering(module: Any, kind: str) -> Iterator[Frame]:
    """Runs a method of ``module``: pushes a frame (unless one can be reused) and its rngs.

    A helper method called from a method of the same module reuses that frame, so submodules
    it creates are named as if the calling method had created them. A compact method reuses
    only a compact frame of its module; ``setup`` always gets a frame of its own.
    """
    top = top_frame()
    reuse = (
        top is not None
        and top.module is module
        and kind != SETUP
        and (kind == METHOD or top.kind == COMPACT)
    )
    own_rngs = vars(module).get("rngs")
    rng_token = _rngs.set(own_rngs) if isinstance(own_rngs, nnx.Rngs) else None
    if reuse:
        frame_token = None
        frame = cast(Frame, top)  # `reuse` implies a top frame
    else:
        frame = Frame(module, kind)
        frame_token = _frames.set((*_frames.get(), frame))
    try:
        yield frame
    finally:
        if frame_token is not None:
            _frames.reset(frame_token)
        if rng_token is not None:
            _rngs.reset(rng_token)


@contextlib.contextmanager
def isolated(rngs: nnx.Rngs | None = None) -> Iterator[None]:
    """A fresh context: no frames, no binding, the given rngs (for ``init`` and ``apply``)."""
    tokens = (_frames.set(()), _binding.set(None), _rngs.set(rngs))
    try:
        yield
    finally:
        _rngs.reset(tokens[2])
        _binding.reset(tokens[1])
        _frames.reset(tokens[0])


@contextlib.contextmanager
def init_sow_policy(policy: frozenset[str] | bool | None) -> Iterator[None]:
    token = _init_sow.set(policy)
    try:
        yield
    finally:
        _init_sow.reset(token)


def init_may_sow(collection: str) -> bool:
    policy = _init_sow.get()
    if policy is None:
        return collection != "intermediates"
    if isinstance(policy, bool):
        return policy
    return collection in policy


def current_rngs() -> nnx.Rngs | None:
    """The rngs that ``make_rng`` draws from when the module holds none of its own."""
    return _rngs.get()


def construction_rngs() -> nnx.Rngs | None:
    """The rngs handed to NNX layers built inside a module (``self.rngs``).

    Under ``apply`` this has a ``params`` stream even when the call was given none: the layers
    need one to be constructed, and the values it draws are replaced by the given variables.
    """
    bound = _binding.get()
    if bound is not None:
        return bound.construction_rngs
    return _rngs.get()


def mode() -> str:
    if _binding.get() is not None:
        return "apply"
    if bridge_rngs.in_initialization_pass():
        return "init"
    return "call"


def binding() -> Binding | None:
    return _binding.get()


@contextlib.contextmanager
def bound(frame: Binding) -> Iterator[Binding]:
    token = _binding.set(frame)
    try:
        yield frame
    finally:
        _binding.reset(token)


def scope_path(module: Any) -> str:
    """A Linen-like path of ``module`` for messages, from the frames and the binding."""
    bound_frame = _binding.get()
    if bound_frame is not None and id(module) in bound_frame.paths:
        path = bound_frame.paths[id(module)]
        return "/".join((type(bound_frame.root).__name__, *path))
    names: list[str] = []
    last = None
    for frame in _frames.get():
        if frame.module is last:
            continue
        last = frame.module
        names.append(_label(frame.module, first=not names))
        if frame.module is module:
            return "/".join(names)
    return _label(module, first=True)


def _label(module: Any, first: bool) -> str:
    name = vars(module).get("name")
    if first or not name:
        return type(module).__name__
    return name


@dataclasses.dataclass
class Binding:
    """The state of one ``Module.apply`` call: where each module's variables come from.

    ``scopes`` maps ``id(module)`` to that module's slice of the variables dict
    (``{collection: subtree}``); ``keep`` holds the modules so the ids stay valid. ``loaded``
    remembers every variable filled from the dict, to find writes to immutable collections.
    """

    root: Any
    variables: Mapping[str, Any]
    mutable: frozenset[str] | bool
    construction_rngs: nnx.Rngs
    scopes: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    paths: dict[int, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    keep: list[Any] = dataclasses.field(default_factory=list)
    loaded: list[tuple[nnx.Variable, Any, str, str]] = dataclasses.field(default_factory=list)
    seen: set[int] = dataclasses.field(default_factory=set)

    def is_mutable(self, collection: str) -> bool:
        return self.mutable is True or (self.mutable is not False and collection in self.mutable)

    def register(self, module: Any, scope: dict[str, Any], path: tuple[str, ...]) -> None:
        self.scopes[id(module)] = scope
        self.paths[id(module)] = path
        self.keep.append(module)

    def scope_of(self, module: Any) -> tuple[dict[str, Any], tuple[str, ...]] | None:
        scope = self.scopes.get(id(module))
        if scope is None:
            return None
        return scope, self.paths[id(module)]

    def record(self, var: nnx.Variable, collection: str, path: str) -> None:
        self.loaded.append((var, var.get_raw_value(), collection, path))
        self.seen.add(id(var))

    def immutable_writes(self) -> list[tuple[str, str]]:
        """``(collection, path)`` of loaded variables of immutable collections that changed."""
        return [
            (collection, path)
            for var, original, collection, path in self.loaded
            if not self.is_mutable(collection) and var.get_raw_value() is not original
        ]


def dummy_key() -> jax.Array:
    return jax.random.key(0)
