"""What the examples show: every submodule call of the Linen model, with where it was made.

The source runs as a fresh module; each ``--example`` expression is split into the module
construction and its call, and the model is initialized abstractly (:func:`jax.eval_shape`:
no compute, no allocation) under :func:`flax.linen.intercept_methods`. For each submodule
call the interceptor records the child's path and class, its input shapes, and the *position*
of the call in the source (Python 3.11 keeps a line and column range for every bytecode
instruction), so the rewrite can tell which call expression created which submodule.
"""

from __future__ import annotations

import ast
import itertools
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..migrate._paths import unboxed
from ._errors import ExampleError

__all__ = ["Example", "ChildCall", "Instance", "Trace", "load_source", "parse_example", "trace"]

_counter = itertools.count()

#: A source position: (line, end_line, col, end_col), as ``co_positions`` gives it.
Pos = tuple[int, int, int, int]


@dataclass
class Example:
    """One ``--example``: the construction and call, split and evaluated."""

    text: str
    ctor_src: str  # the construction expression, e.g. "ResNet(num_classes=10)"
    method: str  # the called method ("__call__")
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    module: Any  # the Linen module built by ctor_src


@dataclass
class ChildCall:
    """A submodule called by a module of the source, in the order the calls happened."""

    path: tuple[str, ...]
    name: str
    cls: type
    module: Any
    pos: Pos | None
    frame_qualname: str | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    method: str = "__call__"  # the child's method that was called


@dataclass
class Instance:
    """One module instance of the traced model."""

    path: tuple[str, ...]
    cls: type
    module: Any
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    calls: list[ChildCall] = field(default_factory=list)
    called: bool = False
    tree: dict = field(default_factory=dict, repr=False)  # every instance of the trace
    own_vars: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    def in_size(self) -> int | None:
        """The last axis of the first positional input (the input size NNX layers take)."""
        if self.args and hasattr(self.args[0], "shape") and len(self.args[0].shape) >= 1:
            return int(self.args[0].shape[-1])
        return None

    def children(self) -> dict[tuple[str, ...], ChildCall]:
        """The first call of each child, by child path, in call order."""
        out: dict[tuple[str, ...], ChildCall] = {}
        for c in self.calls:
            out.setdefault(c.path, c)
        return out


@dataclass
class Trace:
    """The instances of one example's model, by path (root: ``()``)."""

    example: Example
    instances: dict[tuple[str, ...], Instance]
    variables: Any  # the abstract variables ({collection: {...}} of ShapeDtypeStruct)
    rng_names: tuple[str, ...]


def load_source(source: str, path: str) -> types.ModuleType:
    """Runs the source as a fresh module (registered in ``sys.modules`` for dataclasses)."""
    name = f"_linnx_convert_src_{next(_counter)}"
    mod = types.ModuleType(name)
    mod.__file__ = path
    sys.modules[name] = mod
    try:
        exec(compile(source, path, "exec"), mod.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def example_namespace(mod: types.ModuleType) -> dict[str, Any]:
    """The globals an example is evaluated in: the source's, plus jax, jnp, np and nn."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import linen as nn

    ns = {"jax": jax, "jnp": jnp, "np": np, "nn": nn}
    ns.update(mod.__dict__)
    return ns


def parse_example(text: str) -> tuple[ast.Call, str, list[ast.expr], list[ast.keyword]]:
    """Splits ``Ctor(...)(args)`` / ``Ctor(...).method(args)`` into its parts."""
    fix = (
        "Fix: write a construction followed by a call, e.g. "
        '--example "CNN()(jnp.ones((1, 28, 28, 1)))".'
    )
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ExampleError(f"--example {text!r} does not parse: {e.msg}.\n{fix}") from None
    call = tree.body
    if not isinstance(call, ast.Call):
        raise ExampleError(f"--example {text!r} is not a call.\n{fix}")
    if isinstance(call.func, ast.Call):
        ctor, method = call.func, "__call__"
    elif isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Call):
        ctor, method = call.func.value, call.func.attr
    else:
        raise ExampleError(
            f"--example {text!r}: the called object is not a module construction.\n{fix}"
        )
    if any(isinstance(a, ast.Starred) for a in call.args) or any(
        k.arg is None for k in call.keywords
    ):
        raise ExampleError(
            f"--example {text!r}: *args and **kwargs are not supported; write each argument."
        )
    return ctor, method, list(call.args), list(call.keywords)


def build_example(text: str, mod: types.ModuleType) -> Example:
    """Evaluates an example's construction and arguments with the source's globals."""
    from flax import linen as nn

    ctor, method, args, keywords = parse_example(text)
    ns = example_namespace(mod)

    def ev(node: ast.expr, what: str) -> Any:
        try:
            return eval(compile(ast.Expression(node), "<example>", "eval"), ns)
        except Exception as e:
            raise ExampleError(
                f"--example {text!r}: evaluating {what} {ast.unparse(node)!r} raised "
                f"{type(e).__name__}: {e}\nFix: the example runs with the source's globals "
                "plus jax, jnp, np and nn; check the names and arguments."
            ) from e

    module = ev(ctor, "the construction")
    if not isinstance(module, nn.Module):
        raise ExampleError(
            f"--example {text!r}: {ast.unparse(ctor)!r} is a {type(module).__name__}, not a "
            "Linen module.\nFix: construct one of the source's nn.Module classes."
        )
    if method != "__call__" and (
        method.startswith("_")
        or hasattr(nn.Module, method)  # setup, init, apply...
        or not callable(getattr(type(module), method, None))
    ):
        raise ExampleError(
            f"--example {text!r}: {type(module).__name__} has no public method {method!r}.\n"
            f"Fix: call the module itself ({ast.unparse(ctor)}(x)) or one of its methods "
            f"({ast.unparse(ctor)}.encode(x))."
        )
    return Example(
        text=text,
        ctor_src=ast.unparse(ctor),
        method=method,
        args=tuple(ev(a, "the argument") for a in args),
        kwargs={k.arg: ev(k.value, f"the argument {k.arg}=") for k in keywords if k.arg},
        module=module,
    )


def _site(frame: Any, src_globals: dict) -> tuple[Pos | None, str | None]:
    f = frame
    while f is not None and f.f_globals is not src_globals:
        f = f.f_back
    if f is None:
        return None, None
    positions = list(f.f_code.co_positions())
    pos = positions[f.f_lasti // 2] if f.f_lasti // 2 < len(positions) else None
    if pos is None or None in pos:
        return None, f.f_code.co_qualname
    return (pos[0], pos[1], pos[2], pos[3]), f.f_code.co_qualname


def _abstract(tree: Any) -> Any:
    import jax

    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype) if hasattr(a, "shape") else a, tree
    )


def _module_class(module: Any) -> type:
    """The module's class; for an instance of a lifted class (``nn.scan(Cell)``, whose
    methods other than ``__call__`` run on it directly) the Linen class it lifts."""
    cls = type(module)
    if cls.__module__ == "flax.linen.transforms":
        return next((b for b in cls.__mro__[1:] if b.__module__ != cls.__module__), cls)
    return cls


def trace(example: Example, mod: types.ModuleType, rng_names: tuple[str, ...]) -> Trace:
    """Initializes the example's model abstractly and records every submodule call."""
    import jax
    from flax import linen as nn

    src_globals = mod.__dict__
    instances: dict[tuple[str, ...], Instance] = {}
    running: list[tuple[str, ...]] = []  # the paths of the module methods now running

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "setup" or module.scope is None:
            return next_fun(*args, **kwargs)
        path = tuple(module.scope.path)
        inst = instances.get(path)
        if inst is None:
            inst = instances[path] = Instance(path=path, cls=_module_class(module), module=module)
        if not inst.called:
            inst.called = True
            inst.args, inst.kwargs = _abstract(tuple(args)), _abstract(dict(kwargs))
        # A module calling its own methods (a mixin's helper, `self.encode` in `__call__`)
        # makes no call of its parent's: only calls from outside the module are recorded.
        inside = bool(running) and running[-1] == path
        if path and not inside:
            parent = instances.get(path[:-1])
            if parent is not None:
                pos, qual = _site(sys._getframe(1), src_globals)
                parent.calls.append(
                    ChildCall(
                        path=path,
                        name=path[-1],
                        cls=_module_class(module),
                        module=module,
                        pos=pos,
                        frame_qualname=qual,
                        args=_abstract(tuple(args)),
                        kwargs=_abstract(dict(kwargs)),
                        method=context.method_name,
                    )
                )
        running.append(path)
        try:
            return next_fun(*args, **kwargs)
        finally:
            running.pop()

    key = jax.random.key(0)
    rngs = {name: key for name in ("params", "dropout", *rng_names)}

    def init():
        method = None if example.method == "__call__" else example.method
        return example.module.init(rngs, *example.args, method=method, **example.kwargs)

    try:
        with nn.intercept_methods(interceptor):
            variables = jax.eval_shape(init)
    except Exception as e:
        raise ExampleError(
            f"--example {example.text!r}: the model raised {type(e).__name__} when it ran: "
            f"{e}\nFix: pass inputs of the shapes and dtypes the model expects, and every "
            "call argument it needs (e.g. train=False)."
        ) from e

    for inst in instances.values():
        inst.tree = instances
    for (col, *rest), leaf in iter_vars(variables):
        owner = instances.get(tuple(rest[:-1]))
        if owner is not None:
            owner.own_vars[(col, rest[-1])] = unboxed(leaf)  # nn.Partitioned: its value
    return Trace(example, instances, variables, rng_names)


def iter_vars(tree: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Flattens nested variable dicts to (path, leaf) pairs."""
    if hasattr(tree, "items") and not hasattr(tree, "shape"):
        for k, v in tree.items():
            yield from iter_vars(v, (*prefix, str(k)))
    else:
        yield prefix, tree
