"""Handing the classifier from one stage to the next with :mod:`linnx.migrate`, exactly.

Every NNX stage model is a port of :class:`~linnx.demo._models.LinenCNN`, whole or in part, so
one recipe moves the weights and the optimizer state between any two stages, through the
Linen layout that they all share:

1. Read the outgoing model back into Linen variables and a Linen optax state with its plan
   (``nnx_to_linen``, ``opt_state_to_linen``). Stage 1 already has them.
2. ``match`` the incoming model against ``LinenCNN``; ``linen_to_nnx`` and ``opt_state_to_nnx``
   fill it and a fresh ``nnx.Optimizer`` (both refuse to leave anything behind).
3. ``verify`` it against ``LinenCNN`` on the test set (eval and train mode, outputs and
   BatchNorm statistics), and compare its test-set predictions, test loss and optimizer state
   with the outgoing model's.

Stage 4 ends with the same check across an Orbax checkpoint on disk.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import migrate
from ._data import Split
from ._models import LinenCNN, build
from ._stages import make_optimizer, nnx_logits, scores

#: Largest difference accepted at a handover (float32 round-off; in practice it is 0).
HANDOVER_TOLERANCE = 1e-5
#: The Linen CNN's eval-mode call arguments, for match and verify.
EVAL_KWARGS = {"training": False}


@dataclasses.dataclass
class Port:
    """An NNX stage model, its optimizer, and the plan that maps it onto ``LinenCNN``."""

    model: nnx.Module
    optimizer: nnx.Optimizer
    plan: migrate.Plan

    def linen_view(self) -> tuple[dict[str, Any], Any]:
        """The model's variables and optimizer state in the Linen CNN's layout."""
        variables = migrate.nnx_to_linen(self.model, self.plan)
        return variables, migrate.opt_state_to_linen(self.optimizer, self.plan)


@dataclasses.dataclass
class Handover:
    """How exactly one model took over from the previous one.

    Attributes:
        name: e.g. ``'1 Linen -> 2 ToNNX'``.
        prediction_gap: the largest difference of test-set logits (eval mode), before vs after.
        loss_before / loss_after: the test-set cross-entropy before and after.
        optimizer_gap: the largest difference of the optimizer state's leaves (read in the
            Linen layout), before vs after.
        verified: whether :func:`linnx.migrate.verify` passed; None where it does not apply.
        plan: the migration plan's one-line summary, or what the handover was.
    """

    name: str
    prediction_gap: float
    loss_before: float
    loss_after: float
    optimizer_gap: float
    verified: bool | None
    plan: str

    @property
    def gap(self) -> float:
        """The largest of the prediction, loss and optimizer-state differences."""
        loss_gap = abs(self.loss_after - self.loss_before)
        return max(self.prediction_gap, loss_gap, self.optimizer_gap)

    @property
    def exact(self) -> bool:
        """True when nothing changed beyond round-off and verification (if any) passed."""
        return self.gap <= HANDOVER_TOLERANCE and self.verified is not False

    def __str__(self) -> str:
        checks = [
            f"predictions max diff {self.prediction_gap:.1e}",
            f"test loss {self.loss_before:.4f} -> {self.loss_after:.4f}",
            f"optimizer state max diff {self.optimizer_gap:.1e}",
        ]
        if self.verified is not None:
            checks.append(f"verify {'passed' if self.verified else 'FAILED'}")
        return f"handover {self.name}: {', '.join(checks)} ({'exact' if self.exact else 'BROKEN'})"


def tree_gap(a: Any, b: Any) -> float:
    """The largest absolute difference between two trees with the same paths and shapes.

    Example:
        >>> import numpy as np
        >>> tree_gap({'w': np.ones(2), 'n': 3}, {'w': np.zeros(2), 'n': 3})
        1.0
    """
    flat_a = dict(jax.tree_util.tree_flatten_with_path(a)[0])
    flat_b = dict(jax.tree_util.tree_flatten_with_path(b)[0])
    if flat_a.keys() != flat_b.keys():
        return float("inf")
    gaps = [
        np.max(
            np.abs(np.asarray(flat_a[k], np.float64) - np.asarray(flat_b[k], np.float64)),
            initial=0.0,
        )
        for k in flat_a
    ]
    return float(max(gaps, default=0.0))


def migrate_into(
    cls: type[nnx.Module],
    variables: dict[str, Any],
    opt_state: Any,
    before: jax.Array,
    test: Split,
    seed: int,
    name: str,
) -> tuple[Port, Handover, migrate.VerifyReport]:
    """Builds the next stage's model and fills it and its optimizer from the Linen layout.

    Args:
        cls: the incoming stage's model class (``WrappedCNN``, ``HybridCNN``, ``CNN``).
        variables: the outgoing model's variables in the Linen CNN's layout.
        opt_state: the outgoing optimizer state in the Linen CNN's layout.
        before: the outgoing model's test-set logits (eval mode).
        test: the test set, on which the new model is verified.
        seed: seeds the new model's initial values (all overwritten) and its dropout stream.
        name: the handover's name.

    Returns:
        The new model with its optimizer and plan, the handover's checks, and the
        :class:`linnx.migrate.VerifyReport`.

    Raises:
        linnx.migrate.MigrationError: some weight or optimizer slot would be left behind, or
            the verification failed.
    """
    images = jnp.asarray(test.images)
    model = build(cls, images[:1], seed)
    plan = migrate.match(LinenCNN(), model, images[:1], linen_kwargs=EVAL_KWARGS)
    migrate.linen_to_nnx(variables, model, plan)
    optimizer = nnx.Optimizer(model, make_optimizer(), wrt=nnx.Param)
    migrate.opt_state_to_nnx(opt_state, optimizer, plan)
    report = migrate.verify(
        LinenCNN(), variables, model, images, linen_kwargs=EVAL_KWARGS, plan=plan
    )
    report.raise_for_failure()
    port = Port(model, optimizer, plan)
    after = nnx_logits(model, test.images)
    handover = Handover(
        name=name,
        prediction_gap=tree_gap(before, after),
        loss_before=scores(before, test)[1],
        loss_after=scores(after, test)[1],
        optimizer_gap=tree_gap(opt_state, port.linen_view()[1]),
        verified=report.ok,
        plan=plan.summary(),
    )
    return port, handover, report


def restore_from_disk(port: Port, path: str, test: Split, seed: int) -> tuple[Port, Handover]:
    """Saves a model and its optimizer with Orbax and restores them into fresh objects.

    Args:
        port: the model, optimizer and plan to save.
        path: the checkpoint directory (replaced if it exists).
        test: the test set, on which the restored model is compared.
        seed: seeds the fresh model's initial values, which the restore overwrites.

    Returns:
        The restored model with its optimizer (and the same plan), and the checks.
    """
    path = os.path.abspath(path)
    migrate.save_nnx_checkpoint(
        path,
        port.model,
        optimizer=port.optimizer,
        overwrite=True,
        metadata={"model": f"{type(port.model).__module__}.{type(port.model).__qualname__}"},
    )
    model = build(type(port.model), jnp.asarray(test.images[:1]), seed)
    optimizer = nnx.Optimizer(model, make_optimizer(), wrt=nnx.Param)
    migrate.load_nnx_checkpoint(path, model, optimizer=optimizer)
    restored = Port(model, optimizer, port.plan)
    before, after = nnx_logits(port.model, test.images), nnx_logits(model, test.images)
    handover = Handover(
        name="4 NNX -> disk -> 4 NNX",
        prediction_gap=tree_gap(before, after),
        loss_before=scores(before, test)[1],
        loss_after=scores(after, test)[1],
        optimizer_gap=tree_gap(port.linen_view()[1], restored.linen_view()[1]),
        verified=None,
        plan=f"Orbax checkpoint {path}",
    )
    return restored, handover
