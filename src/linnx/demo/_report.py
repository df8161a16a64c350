"""The demo's final table and plot."""

from __future__ import annotations

import json
import os

from ._stages import StageResult

#: Test accuracy the demo must reach at the end.
TARGET_ACCURACY = 0.95
#: Largest loss/logit difference accepted at a handover (float32 round-off).
HANDOVER_TOLERANCE = 1e-5


def report(stages: list[StageResult], handovers: dict[str, float], out: str) -> bool:
    """Prints the table, writes ``results.json`` and ``curves.png``; True when all checks pass."""
    print(f"\n{'stage':<10}{'steps':>7}{'test acc':>10}{'last loss':>11}{'ms/step':>9}")
    for s in stages:
        print(
            f"{s.name:<10}{len(s.losses):>7}{s.test_accuracy:>10.3f}"
            f"{s.losses[-1] if s.losses else float('nan'):>11.4f}{s.ms_per_step:>9.2f}"
        )
    ok = True
    for name, gap in handovers.items():
        exact = gap <= HANDOVER_TOLERANCE
        ok &= exact
        print(f"handover {name}: max difference {gap:.2e} ({'exact' if exact else 'BROKEN'})")
    final = stages[-1].test_accuracy
    ok &= final >= TARGET_ACCURACY
    print(f"final test accuracy {final:.3f} (target {TARGET_ACCURACY:.2f})")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"stages": [s.__dict__ for s in stages], "handovers": handovers}, f)
    _plot(stages, os.path.join(out, "curves.png"))
    print(f"wrote {out}/results.json and {out}/curves.png")
    return ok


def _plot(stages: list[StageResult], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    start = 0
    for s in stages:
        steps = range(start, start + len(s.losses))
        ax_loss.plot(steps, s.losses, label=f"stage {s.name}")
        start += len(s.losses)
        ax_acc.bar(s.name, s.test_accuracy)
    ax_loss.set(xlabel="step", ylabel="training loss", yscale="log", title="loss across stages")
    ax_loss.legend()
    ax_acc.set(ylabel="test accuracy", ylim=(0, 1), title="test accuracy after each stage")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
