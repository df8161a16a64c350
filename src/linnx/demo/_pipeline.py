"""The demo from start to end: train in Linen, then move into NNX one part at a time.

1. ``1 Linen``: ``LinenCNN`` trains from scratch in a Linen ``init``/``apply`` loop.
2. ``2 ToNNX``: both Linen parts wrapped by ``ToNNX``; training goes on in an NNX loop.
3. ``3 hybrid``: the head is ported to NNX, the backbone still Linen inside ``ToNNX``.
4. ``4 NNX``: the whole model in NNX; at the end it is saved with Orbax and restored.

Each handover carries the weights, the BatchNorm statistics and the Adam state, and is
checked (see ``_handover.py``); training goes on from exactly where it stopped.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any, cast

from . import _data
from ._handover import Handover, Port, migrate_into, restore_from_disk
from ._models import CNN, HybridCNN, WrappedCNN
from ._stages import StageResult, linen_logits, linen_stage, nnx_logits, nnx_stage, scores

BATCH_SIZE = 64
#: The NNX stages, in order, with the model class each trains.
NNX_STAGES = (("2 ToNNX", WrappedCNN), ("3 hybrid", HybridCNN), ("4 NNX", CNN))
CHECKPOINT_DIR = "checkpoint"


@dataclasses.dataclass
class Outcome:
    """Everything the demo measured.

    Attributes:
        stages: one result per stage, in order.
        handovers: one per model change: three migrations and the round trip through disk.
        final: the stage-4 model restored from disk, with its optimizer and plan.
        final_accuracy: the restored model's test accuracy.
        checkpoint: the Orbax checkpoint's directory.
    """

    stages: list[StageResult]
    handovers: list[Handover]
    final: Port
    final_accuracy: float
    checkpoint: str


#: Called at each migration with the Linen-layout variables and optimizer state handed over
#: and the incoming model, before it trains.
HandoverHook = Callable[[dict[str, Any], Any, Port], None]


def run(
    steps: int,
    seed: int,
    out: str,
    quiet: bool,
    log: Callable[[str], None] = print,
    on_handover: HandoverHook | None = None,
) -> Outcome:
    """Runs the four stages, ``steps`` training steps each; writes the checkpoint in ``out``.

    Args:
        steps: training steps per stage.
        seed: seeds the data split and order, the initial weights and dropout.
        out: the output folder (created if missing).
        quiet: no progress bars.
        log: where the handover lines, the stage-4 plan and its verification go.
        on_handover: a check to run at each migration (the tests take one training step on
            both sides of it).

    Raises:
        linnx.migrate.MigrationError: a handover would drop or miss a weight or optimizer
            slot, or the migrated model does not reproduce the Linen one.
    """
    train_set, test = _data.load_digits_split(seed)
    train = _data.batches(train_set, BATCH_SIZE, seed)
    stage, variables, opt_state = linen_stage(train, test, steps, seed, quiet)
    stages, handovers = [stage], []
    before = linen_logits(variables, test.images)
    port: Port | None = None
    for name, cls in NNX_STAGES:
        if port is not None:
            # The outgoing model, read back in the Linen CNN's layout through its own plan.
            variables, opt_state = port.linen_view()
            before = nnx_logits(port.model, test.images)
        port, handover, report = migrate_into(
            cls, variables, opt_state, before, test, seed, f"{stages[-1].name} -> {name}"
        )
        handovers.append(handover)
        log(str(handover))
        if on_handover is not None:
            on_handover(variables, opt_state, port)
        if cls is CNN:
            log(f"{port.plan}\n{report}")
        stages.append(nnx_stage(name, port.model, port.optimizer, train, test, steps, quiet))
    os.makedirs(out, exist_ok=True)
    checkpoint = os.path.join(out, CHECKPOINT_DIR)
    # NNX_STAGES is not empty, so the loop has set port.
    final, handover = restore_from_disk(cast(Port, port), checkpoint, test, seed + 1)
    handovers.append(handover)
    log(str(handover))
    accuracy = scores(nnx_logits(final.model, test.images), test)[0]
    return Outcome(stages, handovers, final, accuracy, os.path.abspath(checkpoint))
