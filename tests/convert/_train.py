"""Training after conversion: the converted NNX model, given the Linen weights, trains step
for step like the Linen model (same optimizer, same batches, dropout off).

Used by the tests of converted models:

    losses_linen, losses_nnx = train_both(linen_model, nnx_model, path_map, (x,),
                                          linen_kwargs={"train": False})
    np.testing.assert_allclose(losses_nnx, losses_linen, rtol=1e-5)
"""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from linnx import migrate

from ._util import load


def _loss(out: Any) -> jax.Array:
    # A loss every model has: the mean square of its (first) float output.
    leaves = [x for x in jax.tree.leaves(out) if jnp.issubdtype(jnp.result_type(x), jnp.floating)]
    return jnp.mean(jnp.square(leaves[0].astype(jnp.float32)))


def train_both(
    linen_model: Any,
    nnx_model: nnx.Module,
    path_map: Mapping[str, str],
    args: Sequence[Any],
    *,
    linen_kwargs: Mapping[str, Any] | None = None,
    nnx_kwargs: Mapping[str, Any] | None = None,
    steps: int = 3,
    optimizer: Callable[[], optax.GradientTransformation] = lambda: optax.adam(1e-2),
    linen_method: str | None = None,
    context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> tuple[list[float], list[float]]:
    """Initializes the Linen model, moves its weights into ``nnx_model`` with ``path_map``,
    then takes ``steps`` optimizer steps on both and returns both loss curves.

    ``linen_kwargs`` holds the call's flags as the Linen model wants them for evaluation
    (``train=False``, ``deterministic=True``); the NNX model is put in ``eval()`` mode and
    called with ``nnx_kwargs`` (the flags the converter removed are left out). Only ``params``
    train; every other collection is held fixed, as in eval mode. The training steps (and the
    NNX optimizer's creation) run inside ``context()``, e.g. a mesh and logical axis rules.
    """
    lkw = dict(linen_kwargs or {})
    nkw = dict(nnx_kwargs if nnx_kwargs is not None else lkw)
    method = getattr(type(linen_model), linen_method) if linen_method else None
    variables = linen_model.init(jax.random.key(0), *args, **lkw, method=method)
    plan = migrate.match(
        linen_model,
        nnx_model,
        *args,
        linen_kwargs=lkw,
        nnx_kwargs=nkw,
        rename=dict(path_map),
        linen_method=linen_method,
        nnx_method=linen_method,
    )
    nnx_model = migrate.linen_to_nnx(variables, nnx_model, plan)
    nnx_model.eval()

    params = variables["params"]
    rest = {k: v for k, v in variables.items() if k != "params"}
    tx = optimizer()
    opt_state = tx.init(params)

    @jax.jit
    def linen_step(params, opt_state):
        def loss_fn(p):
            return _loss(linen_model.apply({"params": p, **rest}, *args, **lkw, method=method))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    with context():  # sharded variables: the optimizer state is laid out like them
        opt = nnx.Optimizer(nnx_model, optimizer(), wrt=nnx.Param)

    @nnx.jit
    def nnx_step(model, opt):
        def loss_fn(m):
            call = getattr(m, linen_method) if linen_method else m
            # a model that sows runs under nnx.capture, as today's Flax asks
            return _loss(nnx.capture(call, nnx.Intermediate)(*args, **nkw)[0])

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    linen_losses, nnx_losses = [], []
    with context():
        for _ in range(steps):
            params, opt_state, loss = linen_step(params, opt_state)
            linen_losses.append(float(loss))
            nnx_losses.append(float(nnx_step(nnx_model, opt)))
    return linen_losses, nnx_losses


def example_models(
    source: str, result: Any, example: str, tmp_path: Path, *, stem: str = "m"
) -> tuple[Any, nnx.Module, list[Any], dict[str, Any], dict[str, Any]]:
    """The Linen model and the converted NNX model of one ``--example``, with its call
    arguments: ``(linen_model, nnx_model, args, linen_kwargs, nnx_kwargs)``.

    The NNX model is built from the converted code with the example's constructor
    arguments (classes passed as arguments are swapped for their converted namesakes) and
    ``rngs=nnx.Rngs(0)``; the flags the converter removed are left out of ``nnx_kwargs``.
    Only examples that call ``__call__`` are handled.
    """
    linen_mod = load(source, tmp_path, f"{stem}_linen")
    nnx_mod = load(result.code, tmp_path, f"{stem}_nnx")
    ns = {"jax": jax, "jnp": jnp, "np": np, "nn": nn, **vars(linen_mod)}

    def ev(node: ast.expr) -> Any:
        return eval(compile(ast.Expression(node), "<example>", "eval"), ns)

    call = ast.parse(example, mode="eval").body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Call)):
        raise ValueError(f"{example!r} is not of the form Cls(...)(...)")
    ctor = call.func
    linen_model = ev(ctor)
    args = [ev(a) for a in call.args]
    lkw = {k.arg: ev(k.value) for k in call.keywords}
    ckw = {k.arg: ev(k.value) for k in ctor.keywords}
    ckw = {
        k: getattr(nnx_mod, v.__name__)
        if isinstance(v, type) and hasattr(nnx_mod, v.__name__)
        else v
        for k, v in ckw.items()
    }
    cls = getattr(nnx_mod, type(linen_model).__name__)
    nnx_model = cls(*[ev(a) for a in ctor.args], **ckw, rngs=nnx.Rngs(0))
    dropped = {f for c in result.converted for f in c.dropped_flags}
    nkw = {k: v for k, v in lkw.items() if k not in dropped}
    return linen_model, nnx_model, args, lkw, nkw
