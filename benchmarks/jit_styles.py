"""What a Linen user sees when a `jax.jit` training step becomes an NNX one around `ToNNX`.

The same small ResNet (Linen, BatchNorm, SGD with momentum) is trained one step at a time
four ways, and the per-step time of each is printed relative to plain Linen:

- ``linen jax.jit``: ``jax.jit`` over ``model.apply`` on the variables dict (the baseline);
- ``ToNNX nnx.jit``: ``nnx.jit`` over a step that takes the ``ToNNX`` model and an
  ``nnx.Optimizer``, as NNX's guides write it;
- ``ToNNX split/merge + jax.jit``: ``nnx.split`` once, ``jax.jit`` over a step that
  ``nnx.merge``\\ s the state inside and returns the new state;
- ``ToNNX nnx.cached_partial``: the ``nnx.jit`` step with model and optimizer bound by
  ``nnx.cached_partial``, which caches the graph traversal.

The compiled programs do the same arithmetic; the differences are Python work per call
(walking the module graph, flattening ``nnx.State``), which matters for small models whose
step takes a millisecond or so. Steps are timed in interleaved slices (``A B C D D C B A``...)
and the median slice is reported.

Run: ``python benchmarks/jit_styles.py`` (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax import nnx

import linnx

BATCH, IMAGE, CLASSES = 8, (16, 16, 3), 10


class Block(nn.Module):
    filters: int
    strides: tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x, train: bool = True):
        conv = partial(nn.Conv, use_bias=False)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
        y = nn.relu(norm()(conv(self.filters, (3, 3), self.strides)(x)))
        y = norm()(conv(self.filters, (3, 3))(y))
        if x.shape != y.shape:
            x = norm()(conv(self.filters, (1, 1), self.strides)(x))
        return nn.relu(x + y)


class ResNet(nn.Module):
    """A ResNet-10-like network, 8 to 64 filters: 4 stages of 1 block."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.relu(
            nn.BatchNorm(use_running_average=not train, momentum=0.9)(
                nn.Conv(8, (3, 3), use_bias=False)(x)
            )
        )
        for i, filters in enumerate((8, 16, 32, 64)):
            x = Block(filters, (2, 2) if i else (1, 1))(x, train)
        return nn.Dense(CLASSES)(jnp.mean(x, axis=(1, 2)))


def _loss(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_steps(batch: int = BATCH):
    """Returns {name: a no-argument function running one training step}."""
    x = jax.random.normal(jax.random.key(1), (batch, *IMAGE))
    y = jnp.arange(batch) % CLASSES
    tx = optax.sgd(0.01, momentum=0.9)
    linen_model = ResNet()

    variables = linen_model.init(jax.random.key(0), x)
    linen_state = [variables["params"], variables["batch_stats"], tx.init(variables["params"])]

    @jax.jit
    def linen_step(params, batch_stats, opt_state, x, y):
        def loss_fn(params):
            logits, updates = linen_model.apply(
                {"params": params, "batch_stats": batch_stats}, x, mutable=["batch_stats"]
            )
            return _loss(logits, y), updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return loss, optax.apply_updates(params, updates), batch_stats, opt_state

    def run_linen():
        loss, *linen_state[:] = linen_step(*linen_state, x, y)
        return loss

    def nnx_model_and_optimizer():
        model = linnx.ToNNX(linen_model, rngs=nnx.Rngs(0)).lazy_init(x)
        return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

    def train_step(model, optimizer, x, y):
        def loss_fn(model):
            return _loss(model(x, mutable=["batch_stats"]), y)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    model, optimizer = nnx_model_and_optimizer()
    nnx_step = nnx.jit(train_step)

    def run_nnx_jit():
        return nnx_step(model, optimizer, x, y)

    graphdef, state = nnx.split(nnx_model_and_optimizer())
    split_state = [state]

    @jax.jit
    def pure_step(state, x, y):
        model, optimizer = nnx.merge(graphdef, state)
        loss = train_step(model, optimizer, x, y)
        return loss, nnx.state((model, optimizer))

    def run_split_merge():
        loss, split_state[0] = pure_step(split_state[0], x, y)
        return loss

    cached = nnx.cached_partial(nnx.jit(train_step), *nnx_model_and_optimizer())

    def run_cached():
        return cached(x, y)

    return {
        "linen jax.jit": run_linen,
        "ToNNX nnx.jit": run_nnx_jit,
        "ToNNX split/merge + jax.jit": run_split_merge,
        "ToNNX nnx.cached_partial": run_cached,
    }


def time_steps(steps, rounds: int, calls: int) -> dict[str, float]:
    """Median seconds per step over `rounds` interleaved slices of `calls` steps each."""
    for run in steps.values():  # compile and warm up
        jax.block_until_ready(run())
        jax.block_until_ready(run())
    names = list(steps)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            run = steps[name]
            start = time.perf_counter()
            for _ in range(calls):
                out = run()
            jax.block_until_ready(out)
            samples[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(s) for name, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--batch", type=int, default=BATCH)
    args = parser.parse_args()
    medians = time_steps(make_steps(args.batch), args.rounds, args.calls)
    base = medians["linen jax.jit"]
    print(
        f"small ResNet train step, batch {args.batch}, {IMAGE}, jax {jax.__version__}, "
        f"{jax.devices()[0].platform}; median of {args.rounds} slices of {args.calls} steps"
    )
    for name, seconds in medians.items():
        print(f"  {name:30s} {seconds * 1e3:8.3f} ms  {seconds / base:5.2f}x")


if __name__ == "__main__":
    main()
