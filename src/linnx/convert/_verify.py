"""Proof of a conversion: both models run on each example with the same weights.

For every example: the Linen model is initialized for real, the converted NNX class is built
from the same construction (``rngs=nnx.Rngs(0)`` added) in the converted module, the weights
move with :func:`linnx.migrate.match` (given the converter's path map, so nothing is guessed)
and :func:`linnx.migrate.linen_to_nnx`, and :func:`linnx.migrate.verify` compares the outputs
in eval mode and, when a call flag was turned into ``model.train()``/``model.eval()``, in
train mode with the updated BatchNorm statistics too.
"""

from __future__ import annotations

import ast
import types
from dataclasses import dataclass, field
from typing import Any

from ._classes import ClassPlan, literal
from ._trace import Trace, example_namespace, parse_example

__all__ = ["ExampleCheck", "check_example", "call_arguments"]


@dataclass
class ExampleCheck:
    """The verification of one example: ``ok``, the weights moved, and the
    :class:`linnx.migrate.VerifyReport` (or the error that stopped it).

    Example:
        >>> from linnx import convert
        >>> src = ('import flax.linen as nn\\n'
        ...        'class M(nn.Module):\\n'
        ...        '    @nn.compact\\n'
        ...        '    def __call__(self, x):\\n'
        ...        '        return nn.Dense(2)(x)\\n')
        >>> check, = convert.convert_source(src, ['M()(jnp.ones((1, 3)))']).checks
        >>> check.ok, check.weights, check.report.max_abs
        (True, 2, 0.0)
    """

    example: str
    ok: bool
    weights: int = 0
    report: Any = None  # linnx.migrate.VerifyReport
    error: str | None = None
    plan: Any = field(default=None, repr=False)  # linnx.migrate.Plan, for the HTML report

    def __str__(self) -> str:
        head = f"example {self.example}"
        if self.error is not None:
            return f"{head}\n  FAILED: {self.error}"
        body = "\n".join("  " + line for line in str(self.report).splitlines())
        return f"{head}\n  weights moved: {self.weights}\n{body}"


def call_arguments(trace: Trace, root: ClassPlan, keep_signatures: bool):
    """Linen and NNX call arguments for an example (flags removed on the NNX side)."""
    ex = trace.example
    lkw = dict(ex.kwargs)
    nargs: list[Any] = []
    largs: list[Any] = []
    for i, a in enumerate(ex.args):
        name = root.call_params[i] if i < len(root.call_params) else None
        if name is not None and name in root.removed_flags and isinstance(a, bool):
            lkw[name] = a  # as a keyword, so that train mode can flip it
            continue
        largs.append(a)
        nargs.append(a)
    nkw = {k: v for k, v in lkw.items() if k not in root.removed_flags}
    return largs, lkw, nargs, nkw


def filled(abstract: Any, seed: int = 0) -> Any:
    """Concrete values for abstract Linen variables, drawn on the host.

    Initializing the Linen model for real would compile every initializer for every shape
    (seconds per model on a CPU); any generic values prove the conversion as well. Weights
    get a fan-in scaled normal draw, scales stay near one, variances positive, integer
    variables (counters) zero.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(seed)

    def leaf(path, a):
        name = str(getattr(path[-1], "key", path[-1])) if path else ""
        dtype = np.dtype(a.dtype)
        if not np.issubdtype(dtype, np.floating):
            return jnp.asarray(np.zeros(a.shape, dtype))
        fan_in = int(np.prod(a.shape[:-1])) if len(a.shape) >= 2 else 1
        x = rng.standard_normal(a.shape) / np.sqrt(max(fan_in, 1))
        if name in ("scale", "var"):
            x = 1.0 + 0.1 * np.abs(rng.standard_normal(a.shape))
        elif len(a.shape) < 2:
            x = 0.1 * rng.standard_normal(a.shape)
        # Drawn on the host and put on the device: no per-shape XLA program compiled here.
        return jnp.asarray(np.asarray(x, dtype))

    return jax.tree_util.tree_map_with_path(leaf, abstract)


def _concrete(model: Any) -> Any:
    """Gives the state that no Linen variable fills (rng keys and counts) concrete values."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    def leaf(x):
        if not isinstance(x, jax.ShapeDtypeStruct):
            return x
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            key = jax.random.key(0)
            return jax.random.split(key, x.shape) if x.shape else key
        return jnp.zeros(x.shape, x.dtype)

    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.tree.map(leaf, state))


def check_example(
    trace: Trace,
    dst: types.ModuleType,
    root: ClassPlan,
    path_map: dict[str, str],
    *,
    keep_signatures: bool,
    atol: float,
    rtol: float,
) -> ExampleCheck:
    """Builds both models for one example, moves the weights and compares the outputs."""
    from flax import nnx

    from .. import migrate

    ex = trace.example
    largs, lkw, nargs, nkw = call_arguments(trace, root, keep_signatures)
    ctor, _, _, _ = parse_example(ex.text)
    sizes = []  # the example's own input sizes, where they differ from the defaults
    for sp in root.size_params:
        value = literal(sp.resolve(trace.instances[()]))
        if value is not None and value != sp.default:
            sizes.append(ast.keyword(sp.name, ast.parse(value, mode="eval").body))
    rngs = ast.keyword("rngs", ast.parse("nnx.Rngs(0)", mode="eval").body)
    ctor = ast.Call(func=ctor.func, args=ctor.args, keywords=[*ctor.keywords, *sizes, rngs])
    ast.fix_missing_locations(ctor)
    ns = example_namespace(dst)
    ns["nnx"] = nnx
    build = compile(ast.Expression(ctor), "<example>", "eval")
    try:
        # Abstract: every weight is overwritten by the Linen one, so nothing is initialized.
        model = nnx.eval_shape(lambda: eval(build, ns))
    except Exception as e:
        return ExampleCheck(ex.text, False, error=f"the NNX model could not be built: "
                            f"{type(e).__name__}: {e}")  # fmt: skip
    if largs != nargs:  # pragma: no cover - positional flags are moved to keywords above
        raise AssertionError("internal: positional arguments differ")
    variables = filled(trace.variables)
    # Train mode matters for BatchNorm statistics; dropout is off on both sides there anyway.
    flags = [k for k in lkw if k in root.removed_flags or keep_signatures]
    train = bool(flags) and "batch_stats" in variables
    try:
        plan = migrate.match(
            ex.module, model, *largs, linen_kwargs=lkw, nnx_kwargs=nkw, rename=path_map
        )
        # The values are drawn on the host and finite: no need to scan them on the device.
        model = _concrete(migrate.linen_to_nnx(variables, model, plan, allow_nonfinite=True))
        ntkw = migrate.train_kwargs_for(nkw)[0] if keep_signatures else None
        report = migrate.verify(
            ex.module, variables, model, *largs, linen_kwargs=lkw, nnx_kwargs=nkw, plan=plan,
            train=train, nnx_train_kwargs=ntkw, atol=atol, rtol=rtol,
        )  # fmt: skip
    except Exception as e:
        return ExampleCheck(ex.text, False, error=f"{type(e).__name__}: {e}")
    return ExampleCheck(ex.text, report.ok, weights=len(plan.pairs), report=report, plan=plan)
