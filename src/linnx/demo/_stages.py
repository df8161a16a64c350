"""The demo's stages: a Linen classifier trains, then moves into NNX and keeps training.

Stage 1 trains a Linen CNN with a classic ``init``/``apply`` + optax loop. Stage 2 wraps the
same Linen module with :class:`linnx.ToNNX`, loads the stage-1 weights, batch statistics and
optimizer state, and continues in an NNX loop (``nnx.Optimizer``, ``nnx.jit``). The handover
is checked: both sides give the same predictions and the same loss on the same batch.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax import nnx

import linnx

from ._data import Split


class LinenCNN(nn.Module):
    """A small Linen classifier: Conv + BatchNorm + Dropout + Dense."""

    @nn.compact
    def __call__(self, x: jax.Array, training: bool) -> jax.Array:
        x = nn.Conv(16, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not training, momentum=0.9)(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(64)(x))
        x = nn.Dropout(0.2, deterministic=not training)(x)
        return nn.Dense(10)(x)


def _xent(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@dataclasses.dataclass
class StageResult:
    """What one stage did: its losses, final test accuracy and speed."""

    name: str
    losses: list[float]
    test_accuracy: float
    ms_per_step: float


def _progress(total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=quiet, leave=True, ncols=80)


def linen_stage(
    train: Iterator, test: Split, steps: int, seed: int, quiet: bool
) -> tuple[StageResult, dict, optax.OptState, optax.GradientTransformation]:
    """Stage 1: native Linen training. Returns the result, variables and optimizer state."""
    model = LinenCNN()
    tx = optax.adam(3e-3)
    x0, _ = next(train)
    variables = model.init(jax.random.key(seed), jnp.asarray(x0), training=False)
    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)

    @jax.jit
    def step(params, batch_stats, opt_state, x, y, key):
        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": batch_stats}, x, training=True,
                rngs={"dropout": key}, mutable=["batch_stats"],
            )
            return _xent(logits, y), updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    losses, key = [], jax.random.key(seed + 1)
    start = time.perf_counter()
    with _progress(steps, "stage 1  Linen", quiet) as bar:
        for _ in range(steps):
            x, y = next(train)
            key, sub = jax.random.split(key)
            params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state, x, y, sub)
            losses.append(float(loss))
            bar.update()
    elapsed = (time.perf_counter() - start) / max(steps, 1)
    variables = {"params": params, "batch_stats": batch_stats}
    accuracy = _linen_accuracy(model, variables, test)
    return StageResult("1 Linen", losses, accuracy, 1e3 * elapsed), variables, opt_state, tx


def _linen_accuracy(model: nn.Module, variables: dict, test: Split) -> float:
    logits = model.apply(variables, jnp.asarray(test.images), training=False)
    return float(jnp.mean(jnp.argmax(logits, -1) == test.labels))


def _nnx_accuracy(model: linnx.ToNNX, test: Split) -> float:
    logits = model(jnp.asarray(test.images), training=False)
    return float(jnp.mean(jnp.argmax(logits, -1) == test.labels))


def to_nnx_handover(
    variables: dict, opt_state: optax.OptState, tx: optax.GradientTransformation,
    sample: np.ndarray, seed: int,
) -> tuple[linnx.ToNNX, nnx.Optimizer]:
    """Wraps the Linen CNN in ToNNX and loads stage 1's variables and optimizer state."""
    model = linnx.ToNNX(LinenCNN(), rngs=nnx.Rngs(params=seed, dropout=seed + 2))
    linnx.lazy_init(model, jnp.asarray(sample), training=False)
    nnx.update(model, {name: variables[name] for name in model.linen_collections})
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    # Both optimizer states flatten in the same order (dict keys sort the same way), so the
    # stage-1 leaves can be poured into the NNX optimizer's variables one for one.
    targets = jax.tree_util.tree_leaves(
        optimizer.opt_state, is_leaf=lambda v: isinstance(v, nnx.Variable)
    )
    sources = jax.tree_util.tree_leaves(opt_state)
    if len(targets) != len(sources):
        raise linnx.StructureMismatchError(
            f"optimizer states differ: {len(sources)} Linen leaves vs {len(targets)} NNX"
        )
    for target, source in zip(targets, sources, strict=True):
        target.set_value(source)
    return model, optimizer


def nnx_stage(
    model: linnx.ToNNX, optimizer: nnx.Optimizer, train: Iterator, test: Split, steps: int,
    quiet: bool,
) -> StageResult:
    """Stage 2: the same Linen module, wrapped by ToNNX, trained in an NNX loop."""

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss_fn(model):
            logits = model(x, training=True, mutable=["batch_stats"])
            return _xent(logits, y)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = []
    start = time.perf_counter()
    with _progress(steps, "stage 2  ToNNX", quiet) as bar:
        for _ in range(steps):
            x, y = next(train)
            losses.append(float(step(model, optimizer, jnp.asarray(x), jnp.asarray(y))))
            bar.update()
    elapsed = (time.perf_counter() - start) / max(steps, 1)
    return StageResult("2 ToNNX", losses, _nnx_accuracy(model, test), 1e3 * elapsed)


def handover_gap(variables: dict, model: linnx.ToNNX, x: np.ndarray, y: np.ndarray) -> float:
    """Largest difference between the Linen and the ToNNX eval loss and logits on one batch."""
    linen_logits = LinenCNN().apply(variables, jnp.asarray(x), training=False)
    nnx_logits = model(jnp.asarray(x), training=False)
    loss_gap = abs(float(_xent(linen_logits, y)) - float(_xent(nnx_logits, y)))
    return max(loss_gap, float(jnp.max(jnp.abs(linen_logits - nnx_logits))))
