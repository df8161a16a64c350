"""The demo hands a trained Linen model over to NNX exactly, and the CLI writes its outputs."""

import json

import jax
import numpy as np
from flax import nnx

from linnx import _cli
from linnx.demo import _data, _stages


def test_handover_keeps_predictions_and_optimizer_state():
    train_set, test_set = _data.load_digits_split(seed=0)
    train = _data.batches(train_set, 32, seed=0)
    stage1, variables, opt_state, tx = _stages.linen_stage(train, test_set, 5, 0, quiet=True)
    x, y = next(train)
    model, optimizer = _stages.to_nnx_handover(variables, opt_state, tx, x, seed=0)

    assert _stages.handover_gap(variables, model, x, y) == 0.0
    assert _stages._nnx_accuracy(model, test_set) == stage1.test_accuracy
    linen_mu = jax.tree_util.tree_leaves(opt_state[0].mu)
    nnx_mu = [
        v.get_value()
        for v in jax.tree_util.tree_leaves(
            optimizer.opt_state[0].mu, is_leaf=lambda v: isinstance(v, nnx.Variable)
        )
    ]
    assert len(linen_mu) == len(nnx_mu) > 0
    for a, b in zip(linen_mu, nnx_mu, strict=True):
        np.testing.assert_array_equal(a, b)

    stage2 = _stages.nnx_stage(model, optimizer, train, test_set, 5, quiet=True)
    assert len(stage2.losses) == 5 and all(np.isfinite(stage2.losses))


def test_cli_writes_results_and_plot(tmp_path):
    rc = _cli.main(["demo", "--steps", "3", "--quiet", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert [s["name"] for s in results["stages"]] == ["1 Linen", "2 ToNNX"]
    assert results["handovers"]["Linen -> ToNNX"] == 0.0
    assert (tmp_path / "curves.png").stat().st_size > 0
    # Three steps cannot reach the accuracy target, and the exit code says so.
    assert rc == 1
