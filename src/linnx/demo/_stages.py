"""The demo's training loops: a classic Linen ``init``/``apply`` loop and an NNX loop.

Stage 1 trains :class:`~linnx.demo._models.LinenCNN` the way Linen code always has: explicit
``params``/``batch_stats`` trees, ``jax.jit``, ``optax`` by hand. Stages 2 to 4 share one NNX
loop (``nnx.Optimizer``, ``nnx.jit``, ``model.train()``/``model.eval()``): the models differ in
how much of them is still Linen, not in how they are trained. Every loop also samples the test
accuracy along the way for the plot, and times its steps.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ._data import Split
from ._models import LinenCNN

#: Adam's learning rate; the same transformation serves every stage, so its state carries over.
LEARNING_RATE = 3e-3
#: Test accuracy is sampled about this many times per stage for the plot.
CURVE_POINTS = 15


def make_optimizer() -> optax.GradientTransformation:
    """The optax transformation of every stage."""
    return optax.adam(LEARNING_RATE)


def xent(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@dataclasses.dataclass
class StageResult:
    """What one stage did.

    Attributes:
        name: ``'1 Linen'`` ... ``'4 NNX'``.
        losses: the training loss of every step.
        curve: ``(step, test accuracy, test loss)`` samples, steps counted from the stage's
            start.
        test_accuracy: on the test set at the end of the stage.
        test_loss: the cross-entropy on the test set at the end of the stage.
        ms_per_step: mean wall time of a training step, compilation excluded.
    """

    name: str
    losses: list[float]
    curve: list[tuple[int, float, float]]
    test_accuracy: float
    test_loss: float
    ms_per_step: float


def _progress(total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=quiet, leave=True, ncols=80)


def _sample_every(steps: int) -> int:
    return max(1, steps // CURVE_POINTS)


def scores(logits: jax.Array, test: Split) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of test-set logits."""
    accuracy = float(jnp.mean(jnp.argmax(logits, -1) == test.labels))
    return accuracy, float(xent(logits, jnp.asarray(test.labels)))


@jax.jit
def linen_logits(variables: dict, images: jax.Array) -> jax.Array:
    """The Linen CNN's eval-mode logits."""
    # apply returns (output, mutated variables) only when mutable= is given.
    return cast(jax.Array, LinenCNN().apply(variables, images, training=False))


@nnx.jit
def _nnx_logits(model: nnx.Module, images: jax.Array) -> jax.Array:
    return model(images)


def nnx_logits(model: nnx.Module, images: np.ndarray) -> jax.Array:
    """An NNX model's eval-mode logits; the model is left in eval mode."""
    model.eval()
    return _nnx_logits(model, jnp.asarray(images))


class _Timer:
    """Sums the wall time of the steps after the first, whose time is mostly compilation."""

    def __init__(self) -> None:
        self.total, self.count = 0.0, -1

    def add(self, seconds: float) -> None:
        self.count += 1
        if self.count > 0:
            self.total += seconds

    @property
    def ms_per_step(self) -> float:
        return 1e3 * self.total / self.count if self.count > 0 else float("nan")


def linen_stage(
    train: Iterator, test: Split, steps: int, seed: int, quiet: bool
) -> tuple[StageResult, dict, optax.OptState]:
    """Stage 1: trains the Linen CNN from scratch in an ``init``/``apply`` loop.

    Returns:
        The stage's result, the trained variables (``params`` and ``batch_stats``) and the
        optax state, which is what a Linen training script would hand over.
    """
    model, tx = LinenCNN(), make_optimizer()
    x0, _ = next(train)
    variables = model.init(jax.random.key(seed), jnp.asarray(x0), training=False)
    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)

    @jax.jit
    def step(params, batch_stats, opt_state, x, y, key):
        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": batch_stats},
                x,
                training=True,
                rngs={"dropout": key},
                mutable=["batch_stats"],
            )
            return xent(logits, y), updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    losses, curve, timer = [], [], _Timer()
    key, every = jax.random.key(seed + 1), _sample_every(steps)
    with _progress(steps, "stage 1  Linen", quiet) as bar:
        for i in range(1, steps + 1):
            x, y = next(train)
            key, sub = jax.random.split(key)
            start = time.perf_counter()
            params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state, x, y, sub)
            losses.append(float(loss))  # float() waits for the step to finish
            timer.add(time.perf_counter() - start)
            if i % every == 0 or i == steps:
                logits = linen_logits({"params": params, "batch_stats": batch_stats}, test.images)
                curve.append((i, *scores(logits, test)))
            bar.update()
    variables = {"params": params, "batch_stats": batch_stats}
    accuracy, test_loss = scores(linen_logits(variables, test.images), test)
    result = StageResult("1 Linen", losses, curve, accuracy, test_loss, timer.ms_per_step)
    return result, variables, opt_state


@nnx.jit
def _nnx_step(model: nnx.Module, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array):
    def loss_fn(model):
        return xent(model(x), y)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def nnx_stage(
    name: str,
    model: nnx.Module,
    optimizer: nnx.Optimizer,
    train: Iterator,
    test: Split,
    steps: int,
    quiet: bool,
) -> StageResult:
    """Stages 2 to 4: trains an NNX model (partly Linen or not) in an NNX loop, in place.

    The model is left in eval mode.
    """
    # Sampled before the first step too: the curve then starts where the last stage's ended.
    losses, curve, timer = [], [(0, *scores(nnx_logits(model, test.images), test))], _Timer()
    every = _sample_every(steps)
    model.train()
    # nnx.jit walks the model and optimizer graphs on every call; cached_partial walks them
    # once (their structure does not change while training), which halves a step's time here.
    step = nnx.cached_partial(_nnx_step, model, optimizer)
    with _progress(steps, f"stage {name}", quiet) as bar:
        for i in range(1, steps + 1):
            x, y = next(train)
            start = time.perf_counter()
            losses.append(float(step(jnp.asarray(x), jnp.asarray(y))))
            timer.add(time.perf_counter() - start)
            if i % every == 0 or i == steps:
                curve.append((i, *scores(nnx_logits(model, test.images), test)))
                model.train()
            bar.update()
    accuracy, test_loss = scores(nnx_logits(model, test.images), test)
    return StageResult(name, losses, curve, accuracy, test_loss, timer.ms_per_step)
