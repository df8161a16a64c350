"""Small models for the ``linnx.jit`` tests: native NNX, Linen through ``ToNNX``, ``linnx.Module``.

Each :class:`StepCase` builds a fresh model (and optimizer) deterministically, so a test can
build two identical copies, train one with ``nnx.jit`` and one with ``linnx.jit``, and compare
them bit for bit. The native models cover what a train step updates besides parameters:
BatchNorm statistics, dropout rng counts (streams stored in the module or passed as an
``nnx.Rngs`` argument), sown values, a variable shared by two layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import linen_zoo
import optax
from flax import nnx

import linnx
import linnx.module as lm

__all__ = ["StepCase", "CASES", "Tied", "ConvBnDrop", "SowMLP", "RngArgMLP"]


class ConvBnDrop(nnx.Module):
    """Conv -> BatchNorm -> relu -> Dropout -> Linear; dropout rngs kept in the module."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(4, momentum=0.8, rngs=rngs)
        self.drop = nnx.Dropout(0.3, rngs=rngs)
        self.head = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.drop(nnx.relu(self.bn(self.conv(x))))
        return self.head(jnp.mean(h, axis=(1, 2)))


class Tied(nnx.Module):
    """An embedding whose table is also the output projection: one variable, two owners."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.embed = nnx.Embed(11, 6, rngs=rngs)
        self.mid = nnx.Linear(6, 6, rngs=rngs)
        self.out = nnx.Embed(11, 6, rngs=rngs)
        self.out.embedding = self.embed.embedding  # shared

    def __call__(self, tokens: jax.Array) -> jax.Array:
        h = nnx.gelu(self.mid(self.embed(tokens)))
        return self.out.attend(jnp.mean(h, axis=1))


class SowMLP(nnx.Module):
    """Sows its hidden activations (``nnx.Intermediate``) and a running count."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.fc1 = nnx.Linear(6, 8, rngs=rngs)
        self.fc2 = nnx.Linear(8, 6, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = nnx.relu(self.fc1(x))
        self.sow(nnx.Intermediate, "hidden", h)
        return self.fc2(h)


class RngArgMLP(nnx.Module):
    """Dropout that draws from an ``nnx.Rngs`` passed with each call."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.fc1 = nnx.Linear(6, 8, rngs=rngs)
        self.drop = nnx.Dropout(0.5)
        self.fc2 = nnx.Linear(8, 6, rngs=rngs)

    def __call__(self, x: jax.Array, rngs: nnx.Rngs) -> jax.Array:
        return self.fc2(self.drop(nnx.relu(self.fc1(x)), rngs=rngs))


class LinenStyleNet(lm.Module):
    """A ``linnx.Module`` with BatchNorm and Dropout, written the Linen way."""

    @lm.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        x = lm.nn.Dense(8)(x)
        x = lm.nn.BatchNorm(use_running_average=not train)(x)
        x = lm.nn.Dropout(0.3, deterministic=not train)(nnx.relu(x))
        return lm.nn.Dense(6)(x)


def _vectors() -> tuple[jax.Array, jax.Array]:
    x = jax.random.normal(jax.random.key(3), (4, 6))
    return x, jnp.flip(x, -1)


def _images() -> tuple[jax.Array, jax.Array]:
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    return x, jnp.array([0, 1, 2, 1])


def _tokens() -> tuple[jax.Array, jax.Array]:
    x = jax.random.randint(jax.random.key(2), (3, 5), 0, 11)
    return x, jnp.array([0, 2, 1])


def _mse(out: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean((out - y) ** 2)


def _xent(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], -1))


@dataclasses.dataclass(frozen=True)
class StepCase:
    """A model and its train step.

    ``make()`` returns the step's NNX arguments in order (model, optimizer, maybe ``Rngs``);
    ``step(*objs, x, y)`` is the undecorated train step, returning a dict of arrays.
    """

    name: str
    make: Callable[[], tuple[Any, ...]]
    step: Callable[..., Any]
    batch: Callable[[], tuple[jax.Array, jax.Array]]

    def __repr__(self) -> str:
        return self.name


def _with_adam(model: nnx.Module) -> tuple[nnx.Module, nnx.Optimizer]:
    return model, nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)


def _train_step(call: Callable[..., jax.Array], loss: Callable[..., jax.Array]):
    def step(model, opt, x, y):
        def loss_fn(model):
            out = call(model, x)
            return loss(out, y), out

        (value, out), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        opt.update(model, grads)
        return {"loss": value, "out": out}

    return step


def _rng_arg_step(model, opt, rngs, x, y):
    def loss_fn(model, rngs):  # rngs passed through grad, so its count may change inside
        return _mse(model(x, rngs), y)

    value, grads = nnx.value_and_grad(loss_fn)(model, rngs)
    opt.update(model, grads)
    return {"loss": value}


def _capture_step(model, opt, x, y):
    def loss_fn(model):
        out, inter = nnx.capture(model, nnx.Intermediate)(x)
        return _mse(out, y), inter

    (value, inter), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    opt.update(model, grads)
    return {"loss": value, "hidden": nnx.to_pure_dict(inter)}


def _to_nnx(case: linen_zoo.ZooCase) -> Callable[[], tuple[Any, ...]]:
    def make() -> tuple[Any, ...]:
        x, _ = case.batch()
        rngs = nnx.Rngs(params=0, dropout=1)
        model = linnx.ToNNX(case.make(), rngs=rngs).lazy_init(x, **case.eval_kwargs)
        return _with_adam(model)

    return make


def _zoo_step(case: linen_zoo.ZooCase):
    def call(model: linnx.ToNNX, x: jax.Array) -> jax.Array:
        return model(x, mutable=list(case.mutable) or False, **case.train_kwargs)

    return _train_step(call, case.loss)


def _linen_style() -> tuple[Any, ...]:
    x, _ = _vectors()
    return _with_adam(linnx.lazy_init(LinenStyleNet(rngs=nnx.Rngs(0, dropout=1)), x))


CASES: tuple[StepCase, ...] = (
    StepCase(
        "nnx_mlp",
        lambda: _with_adam(
            nnx.Sequential(
                nnx.Linear(6, 8, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(8, 6, rngs=nnx.Rngs(1))
            )
        ),
        _train_step(lambda m, x: m(x), _mse),
        _vectors,
    ),
    StepCase(
        "nnx_conv_bn_dropout",
        lambda: _with_adam(ConvBnDrop(rngs=nnx.Rngs(0, dropout=1))),
        _train_step(lambda m, x: m(x), _xent),
        _images,
    ),
    StepCase(
        "nnx_tied",
        lambda: _with_adam(Tied(rngs=nnx.Rngs(0))),
        _train_step(lambda m, x: m(x), _xent),
        _tokens,
    ),
    StepCase(
        "nnx_rngs_argument",
        lambda: (*_with_adam(RngArgMLP(rngs=nnx.Rngs(0))), nnx.Rngs(dropout=5)),
        _rng_arg_step,
        _vectors,
    ),
    StepCase(
        "nnx_sow_capture", lambda: _with_adam(SowMLP(rngs=nnx.Rngs(0))), _capture_step, _vectors
    ),
    StepCase("linnx_module", _linen_style, _train_step(lambda m, x: m(x), _mse), _vectors),
    *(
        StepCase(f"to_nnx_{case.name}", _to_nnx(case), _zoo_step(case), case.batch)
        for case in linen_zoo.ZOO
    ),
)
