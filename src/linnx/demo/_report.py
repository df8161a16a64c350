"""The demo's final table, ``results.json`` and ``curves.png``."""

from __future__ import annotations

import dataclasses
import json
import os

from ._pipeline import Outcome
from ._stages import StageResult

#: Test accuracy the demo must reach at the end.
TARGET_ACCURACY = 0.95
#: The table's training loss is the mean over this many last steps (dropout makes it noisy).
LOSS_WINDOW = 20


def train_loss(stage: StageResult) -> float:
    """The stage's mean training loss over its last :data:`LOSS_WINDOW` steps."""
    tail = stage.losses[-LOSS_WINDOW:]
    return sum(tail) / len(tail) if tail else float("nan")


def table(stages: list[StageResult]) -> str:
    """One row per stage: steps, test accuracy and loss, training loss, time per step."""
    rows = [
        f"{'stage':<10}{'steps':>7}{'test acc':>10}{'test loss':>11}{'train loss':>12}"
        f"{'ms/step':>9}"
    ]
    for s in stages:
        rows.append(
            f"{s.name:<10}{len(s.losses):>7}{s.test_accuracy:>10.3f}{s.test_loss:>11.4f}"
            f"{train_loss(s):>12.4f}{s.ms_per_step:>9.2f}"
        )
    return "\n".join(rows)


def report(outcome: Outcome, out: str) -> bool:
    """Prints the table, writes ``results.json`` and ``curves.png``; True when all checks pass.

    The checks: every handover is exact and the final (restored) model reaches
    :data:`TARGET_ACCURACY`.
    """
    print(f"\n{table(outcome.stages)}")
    exact = all(h.exact for h in outcome.handovers)
    print(f"handovers: {'all exact' if exact else 'SOME BROKEN'} ({len(outcome.handovers)})")
    reached = outcome.final_accuracy >= TARGET_ACCURACY
    print(
        f"final test accuracy {outcome.final_accuracy:.3f} (target {TARGET_ACCURACY:.2f}"
        f"{'' if reached else ', NOT REACHED'}), model restored from {outcome.checkpoint}"
    )
    os.makedirs(out, exist_ok=True)
    results = {
        "stages": [dict(dataclasses.asdict(s), train_loss=train_loss(s)) for s in outcome.stages],
        "handovers": [
            dict(dataclasses.asdict(h), gap=h.gap, exact=h.exact) for h in outcome.handovers
        ],
        "final_accuracy": outcome.final_accuracy,
        "target_accuracy": TARGET_ACCURACY,
        "checkpoint": outcome.checkpoint,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(outcome.stages, os.path.join(out, "curves.png"))
    print(f"wrote {out}/results.json and {out}/curves.png")
    return exact and reached


def plot(stages: list[StageResult], path: str) -> None:
    """Loss and test accuracy along the steps of all stages, one colour per stage.

    Left: the training loss of every step (thin) and the sampled test loss (dots), which
    goes on across each handover without a jump. Right: the sampled test accuracy.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    start, lowest = 0, 1.0
    for s in stages:
        (line,) = ax_loss.plot(
            range(start + 1, start + len(s.losses) + 1),
            s.losses,
            lw=0.6,
            alpha=0.6,
            label=f"stage {s.name}",
        )
        steps = [start + i for i, _, _ in s.curve]
        colour = line.get_color()
        ax_loss.plot(steps, [loss for _, _, loss in s.curve], "o-", ms=3, color=colour)
        ax_acc.plot(
            steps, [acc for _, acc, _ in s.curve], "o-", ms=3, color=colour, label=f"stage {s.name}"
        )
        lowest = min([lowest] + [acc for _, acc, _ in s.curve])
        start += len(s.losses)
        for ax in (ax_loss, ax_acc):
            ax.axvline(start + 0.5, color="grey", lw=0.5, ls="--")
    ax_loss.set(
        xlabel="training step",
        ylabel="cross-entropy",
        yscale="log",
        title="training loss (thin) and test loss (dots)",
    )
    ax_acc.axhline(TARGET_ACCURACY, color="black", lw=0.8, ls=":", label="target")
    ax_acc.set(
        xlabel="training step",
        ylabel="test accuracy",
        ylim=(min(lowest, TARGET_ACCURACY) - 0.02, 1.005),
        title="test accuracy across the four stages",
    )
    ax_loss.legend(fontsize=8)
    ax_acc.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
