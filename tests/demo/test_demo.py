"""The demo hands its classifier from stage to stage exactly, and the CLI writes its outputs.

"Exactly" is checked three ways at each handover: the new model's test-set predictions and
loss equal the old one's, its optimizer state reads back equal, and the next training step
(dropout off, the two sides cannot draw the same masks) gives the same loss and the same
weights after it as the same step taken in Linen from the handed-over variables and Adam
state. The last check fails if any Adam moment or the step count were left behind.
"""

import json

import jax
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import linnx
from linnx import _cli
from linnx.demo import _data, _pipeline, _stages
from linnx.demo._models import CNN, HybridCNN, LinenCNN, WrappedCNN

STEPS = 3


def _no_dropout(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Dropout):
        return args[0]
    return next_fun(*args, **kwargs)


def _linen_next_step(variables, opt_state, x, y, test):
    """One Linen training step without dropout; its loss and the test logits after it.

    Both next steps run eagerly, op by op, so that they compute bit for bit the same thing:
    under jit, XLA fuses the two programs differently, and Adam's first steps magnify the
    last-bit differences of near-zero gradients into visible ones.
    """

    def loss_fn(params):
        logits, updates = LinenCNN().apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            x,
            training=True,
            mutable=["batch_stats"],
        )
        return _stages.xent(logits, y), updates["batch_stats"]

    params = variables["params"]
    with nn.intercept_methods(_no_dropout):
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, _ = _stages.make_optimizer().update(grads, opt_state, params)
    after = {"params": optax.apply_updates(params, updates), "batch_stats": stats}
    return float(loss), np.asarray(_stages.linen_logits(after, test.images))


def _nnx_next_step(port, x, y, test):
    """The same step on a copy of an NNX stage model and its optimizer."""
    model, optimizer = nnx.clone((port.model, port.optimizer))
    model.train()
    model.set_attributes(nnx.Dropout, deterministic=True, raise_if_not_found=False)
    with nn.intercept_methods(_no_dropout):  # the Linen parts' dropout, inside ToNNX
        loss, grads = nnx.value_and_grad(lambda m: _stages.xent(m(x), y))(model)
    optimizer.update(model, grads)
    return float(loss), np.asarray(_stages.nnx_logits(model, test.images))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One run of the whole demo with few steps, shared by the tests (training is slow)."""
    out = tmp_path_factory.mktemp("demo-out")
    train_set, test = _data.load_digits_split(seed=0)
    x, y = train_set.images[: _pipeline.BATCH_SIZE], train_set.labels[: _pipeline.BATCH_SIZE]
    next_steps, lines = [], []

    def next_step_on_both_sides(variables, opt_state, port):
        next_steps.append(
            (_linen_next_step(variables, opt_state, x, y, test), _nnx_next_step(port, x, y, test))
        )

    outcome = _pipeline.run(
        STEPS, 0, str(out), quiet=True, log=lines.append, on_handover=next_step_on_both_sides
    )
    return outcome, next_steps, lines, out


def test_every_handover_keeps_predictions_loss_and_optimizer_state(demo):
    outcome, _, lines, _ = demo
    assert [h.name for h in outcome.handovers] == [
        "1 Linen -> 2 ToNNX",
        "2 ToNNX -> 3 hybrid",
        "3 hybrid -> 4 NNX",
        "4 NNX -> disk -> 4 NNX",
    ]
    for h in outcome.handovers:
        assert h.exact, str(h)
        assert h.prediction_gap == 0.0 and h.optimizer_gap == 0.0, str(h)
        assert h.loss_after == h.loss_before, str(h)
    assert [h.verified for h in outcome.handovers] == [True, True, True, None]
    assert all(str(h) in lines for h in outcome.handovers)
    assert any(line.startswith("Migration plan: 10 pairs") for line in lines)
    assert any("Verification passed" in line for line in lines)


def test_every_handover_continues_training_exactly(demo):
    outcome, next_steps, _, _ = demo
    # One per migration; the restored optimizer state is compared leaf by leaf instead.
    migrations = outcome.handovers[:-1]
    for h, ((linen_loss, linen_after), (nnx_loss, nnx_after)) in zip(
        migrations, next_steps, strict=True
    ):
        assert nnx_loss == pytest.approx(linen_loss, abs=1e-6), h.name
        np.testing.assert_allclose(nnx_after, linen_after, atol=1e-5, err_msg=h.name)


def test_stages_train_and_their_curves_join(demo):
    outcome, _, _, _ = demo
    assert [s.name for s in outcome.stages] == ["1 Linen", "2 ToNNX", "3 hybrid", "4 NNX"]
    for s in outcome.stages:
        assert len(s.losses) == STEPS and all(np.isfinite(s.losses))
    for previous, stage in zip(outcome.stages, outcome.stages[1:], strict=False):
        # Each NNX stage samples its test scores before its first step: the last stage's.
        assert stage.curve[0] == (0, previous.test_accuracy, previous.test_loss)
    assert outcome.final_accuracy == outcome.stages[-1].test_accuracy


def test_final_model_is_pure_nnx_and_restored_from_disk(demo):
    outcome, _, _, out = demo
    model = outcome.final.model
    assert isinstance(model, CNN)
    assert not any(isinstance(m, linnx.ToNNX) for _, m in nnx.iter_modules(model))
    assert outcome.checkpoint == str(out / "checkpoint")
    for item in ("model", "optimizer", "linnx.json"):
        assert (out / "checkpoint" / item).exists()
    assert [cls for _, cls in _pipeline.NNX_STAGES] == [WrappedCNN, HybridCNN, CNN]


def test_cli_prints_the_table_and_writes_results_and_plot(demo, tmp_path, capsys, monkeypatch):
    outcome = demo[0]
    # The CLI around the run: the run itself is the fixture's, not a second one.
    monkeypatch.setattr(_pipeline, "run", lambda steps, seed, out, quiet: outcome)
    rc = _cli.main(["demo", "--steps", str(STEPS), "--quiet", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    for name in ("1 Linen", "2 ToNNX", "3 hybrid", "4 NNX", "handovers: all exact"):
        assert name in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert [s["name"] for s in results["stages"]] == [s.name for s in outcome.stages]
    assert all(h["exact"] and h["gap"] == 0.0 for h in results["handovers"])
    assert (tmp_path / "curves.png").stat().st_size > 0
    # Three steps per stage cannot reach the accuracy target, and the exit code says so.
    assert results["final_accuracy"] < results["target_accuracy"] and rc == 1


def test_cli_refuses_zero_steps(tmp_path, capsys):
    assert _cli.main(["demo", "--steps", "0", "--out", str(tmp_path)]) == 2
    assert "--steps" in capsys.readouterr().out
