"""Proof of a conversion: both models run on each example with the same weights.

For every example: the Linen model is initialized for real, the converted NNX class is built
from the same construction (``rngs=nnx.Rngs(0)`` added) in the converted module, the weights
move with :func:`linnx.migrate.match` (given the converter's path map, so nothing is guessed)
and :func:`linnx.migrate.linen_to_nnx`, and :func:`linnx.migrate.verify` compares the outputs
in eval mode and, when a call flag was turned into ``model.train()``/``model.eval()``, in
train mode with the updated BatchNorm statistics too. Values that the Linen model sows into
``'intermediates'`` are compared too: the converted model's ``nnx.Intermediate`` values,
captured with ``nnx.capture``, must equal them path by path.
"""

from __future__ import annotations

import ast
import types
from dataclasses import dataclass, field
from typing import Any

from .._public import public
from ._classes import ClassPlan, literal
from ._trace import Trace, example_namespace, parse_example

__all__ = ["ExampleCheck", "check_example", "call_arguments"]


@public("linnx.convert")
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
    intermediates: int = 0  # sown values compared (eval mode)

    def __str__(self) -> str:
        head = f"example {self.example}"
        if self.error is not None:
            return f"{head}\n  FAILED: {self.error}"
        body = "\n".join("  " + line for line in str(self.report).splitlines())
        sown = f"\n  sown intermediates equal: {self.intermediates}" if self.intermediates else ""
        return f"{head}\n  weights moved: {self.weights}{sown}\n{body}"


def call_arguments(trace: Trace, root: ClassPlan, keep_signatures: bool):
    """Linen and NNX call arguments for an example (flags removed on the NNX side)."""
    ex = trace.example
    lkw = dict(ex.kwargs)
    nargs: list[Any] = []
    largs: list[Any] = []
    if ex.method != "__call__":  # flags are taken off __call__ only: the rest is as written
        return list(ex.args), lkw, list(ex.args), dict(lkw)
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
    import numpy as np

    rng = np.random.default_rng(seed)

    def leaf(path, a):
        name = str(getattr(path[-1], "key", path[-1])) if path else ""
        dtype = np.dtype(a.dtype)
        if not np.issubdtype(dtype, np.floating):
            return jax.device_put(np.zeros(a.shape, dtype))
        fan_in = int(np.prod(a.shape[:-1])) if len(a.shape) >= 2 else 1
        x = rng.standard_normal(a.shape) / np.sqrt(max(fan_in, 1))
        if name in ("scale", "var"):
            x = 1.0 + 0.1 * np.abs(rng.standard_normal(a.shape))
        elif len(a.shape) < 2:
            x = 0.1 * rng.standard_normal(a.shape)
        # Drawn on the host and put on the device (device_put: jnp.asarray would compile a
        # staging program per shape).
        return jax.device_put(np.asarray(x, dtype))

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
    root: ClassPlan | None,
    path_map: dict[str, str],
    *,
    keep_signatures: bool,
    atol: float,
    rtol: float,
    module_map: tuple[dict, set] | None = None,
    layer_ctor: str | None = None,
) -> ExampleCheck:
    """Builds both models for one example, moves the weights and compares the outputs.

    ``root`` is the plan of the example's class; for an example whose model is a Flax layer
    (``root`` None), ``layer_ctor`` is the NNX construction to build and the call's
    arguments are passed to both sides as written.
    """
    from flax import nnx

    ex = trace.example
    if root is None:
        assert layer_ctor is not None
        largs, lkw, nargs, nkw = list(ex.args), dict(ex.kwargs), list(ex.args), dict(ex.kwargs)
        ctor = ast.parse(layer_ctor, mode="eval").body
        train = False  # no flag became model.train(): the call's own arguments choose the mode
    else:
        largs, lkw, nargs, nkw = call_arguments(trace, root, keep_signatures)
        ctor, _, _, _ = parse_example(ex.text)
        sizes = []  # the example's own input sizes, where they differ from the defaults
        for sp in root.size_params:
            value = literal(sp.resolve(trace.instances[()]))
            if value is not None and value != sp.default:
                sizes.append(ast.keyword(sp.name, ast.parse(value, mode="eval").body))
        rngs = ast.keyword("rngs", ast.parse("nnx.Rngs(0)", mode="eval").body)
        ctor = ast.Call(func=ctor.func, args=ctor.args, keywords=[*ctor.keywords, *sizes, rngs])
        # Train mode matters for BatchNorm statistics; dropout is off on both sides there.
        flags = [k for k in lkw if k in root.removed_flags or keep_signatures]
        train = bool(flags) and "batch_stats" in trace.variables
    ast.fix_missing_locations(ctor)
    ns = example_namespace(dst)
    ns["nnx"] = nnx
    build = compile(ast.Expression(ctor), "<example>", "eval")
    try:
        # Abstract: every weight is overwritten by the Linen one, so nothing is initialized.
        # Built without eager sharding: sharding annotations need a mesh to act on, and the
        # comparison is about values (Linen's init ignores them the same way).
        with nnx.use_eager_sharding(False):
            model = nnx.eval_shape(lambda: eval(build, ns))
    except Exception as e:
        return ExampleCheck(
            ex.text, False, error=f"the NNX model could not be built: {type(e).__name__}: {e}"
        )
    if largs != nargs:  # pragma: no cover - positional flags are moved to keywords above
        raise AssertionError("internal: positional arguments differ")
    return _compare(
        trace,
        model,
        (largs, lkw, nargs, nkw),
        path_map,
        train=train,
        keep_signatures=keep_signatures,
        atol=atol,
        rtol=rtol,
        module_map=module_map,
    )


def _compare(
    trace: Trace,
    model: Any,
    call: tuple[list, dict, list, dict],
    path_map: dict[str, str],
    *,
    train: bool,
    keep_signatures: bool,
    atol: float,
    rtol: float,
    module_map: tuple[dict, set] | None,
) -> ExampleCheck:
    from flax import nnx

    from .. import migrate

    ex = trace.example
    largs, lkw, nargs, nkw = call
    variables = filled(trace.variables)
    method = None if ex.method == "__call__" else ex.method
    try:
        plan = migrate.match(
            ex.module,
            model,
            *largs,
            linen_kwargs=lkw,
            nnx_kwargs=nkw,
            rename=path_map,
            linen_method=method,
            nnx_method=method,
        )
        # The values are drawn on the host and finite: no need to scan them on the device.
        unreached: list[str] = []
        if method is not None:  # another method may not reach every layer
            mapped = set(path_map.values())
            flat = nnx.to_flat_state(nnx.state(model, nnx.Not(nnx.RngState)))
            paths = ("/".join(map(str, k)) for k, _ in flat)
            unreached = [p for p in paths if p not in mapped]
        model = _concrete(
            migrate.linen_to_nnx(
                variables, model, plan, allow_nonfinite=True, allow_missing=unreached
            )
        )
        ntkw = migrate.train_kwargs_for(nkw)[0] if keep_signatures else None
        report = migrate.verify(
            ex.module,
            variables,
            model,
            *largs,
            linen_kwargs=lkw,
            nnx_kwargs=nkw,
            plan=plan,
            train=train,
            nnx_train_kwargs=ntkw,
            atol=atol,
            rtol=rtol,
            linen_method=method,
            nnx_method=method,
        )
        sown, error = 0, None
        if report.ok and module_map is not None:
            sown, error = compare_intermediates(
                ex.module,
                variables,
                model,
                (largs, lkw, nargs, nkw),
                module_map,
                atol,
                rtol,
                method=method,
            )
    except Exception as e:
        return ExampleCheck(ex.text, False, error=f"{type(e).__name__}: {e}")
    if error is not None:
        return ExampleCheck(ex.text, False, weights=len(plan.pairs), error=error, plan=plan)
    return ExampleCheck(
        ex.text, report.ok, weights=len(plan.pairs), report=report, plan=plan, intermediates=sown
    )


def compare_intermediates(
    linen_module: Any,
    variables: Any,
    model: Any,
    call: tuple[list, dict, list, dict],
    module_map: tuple[dict, set],
    atol: float,
    rtol: float,
    method: str | None = None,
) -> tuple[int, str | None]:
    """Runs both models once more in eval mode, collecting what they sow; returns the number
    of sown values compared and the first difference (None when all are equal).

    Values sown inside a class kept as Linen are not compared: ``linnx.ToNNX`` does not
    return them.
    """
    import jax
    import numpy as np
    from flax import nnx, traverse_util

    largs, lkw, nargs, nkw = call
    _, state = linen_module.apply(variables, *largs, **lkw, method=method, mutable=True)
    linen = traverse_util.flatten_dict(dict(state.get("intermediates", {})))
    if not linen:
        return 0, None
    nnx_of, wrapped = module_map
    model.eval()

    def run(m):
        return (m if method is None else getattr(m, method))(*nargs, **nkw)

    # flax's overloads: a Variable type also matches the Callable one, so mypy picks that
    _, captured = nnx.capture(nnx.Intermediate)(run)(model)  # type: ignore[operator]
    got = {
        tuple(str(k) for k in path): var.get_value() for path, var in nnx.to_flat_state(captured)
    }
    count = 0
    for key, value in linen.items():
        owner, name = tuple(key[:-1]), key[-1]
        if any(owner[: len(w)] == w for w in wrapped):
            continue
        where = "/".join(key)
        nnx_key = (*nnx_of.get(owner, owner), name)
        if nnx_key not in got:
            return count, f"the Linen model sows {where}; the NNX model sows no {'/'.join(nnx_key)}"
        a, b = jax.tree.leaves(value), jax.tree.leaves(got[nnx_key])
        if len(a) != len(b) or not all(
            np.shape(x) == np.shape(y) and np.allclose(x, y, atol=atol, rtol=rtol)
            for x, y in zip(a, b, strict=False)
        ):
            return count, f"the sown intermediate {where} differs from the NNX model's"
        count += 1
    return count, None
