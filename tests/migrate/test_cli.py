"""``linnx migrate-weights``: a trained Linen ResNet checkpoint into the hand-ported NNX ResNet."""

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from linnx import migrate
from linnx._cli import main

from . import resnet_models

MOD = resnet_models.__name__


def _args(src, dst, *extra, nnx_factory="nnx_resnet"):
    return [
        "migrate-weights",
        "--linen", f"{MOD}:linen_resnet",
        "--nnx", f"{MOD}:{nnx_factory}",
        "--sample", "2,8,8,3:float32",
        "--linen-kwargs", '{"train": false}',
        *extra,
        str(src),
        str(dst),
    ]  # fmt: skip


def _linen_predictions(state, x):
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return resnet_models.linen_resnet().apply(variables, x, train=False)


def test_trained_resnet_through_the_cli(trained_resnet, tmp_path, capsys):
    state, x, src = trained_resnet
    dst = tmp_path / "nnx_ckpt"
    assert main(_args(src, dst, "--tx", f"{MOD}:make_tx")) == 0
    out = capsys.readouterr()
    assert "Migration plan: 32 pairs" in out.out
    assert "params/LinenBlock_1/conv_proj/kernel" in out.out
    assert "Verification passed" in out.out
    assert "migrate-weights" in out.err  # the progress bar
    assert sorted(p.name for p in dst.iterdir()) == ["linnx.json", "model", "optimizer"]
    assert json.loads((dst / "linnx.json").read_text())["verified"]["ok"] is True

    # Restore with the standard NNX recipe: abstract model, nnx.state target, nnx.update.
    model = nnx.eval_shape(resnet_models.nnx_resnet)
    with ocp.StandardCheckpointer() as ckptr:
        nnx.update(model, ckptr.restore(dst / "model", nnx.state(model)))
    model.eval()
    np.testing.assert_allclose(model(x), _linen_predictions(state, x), atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(
        model.blocks[1].bn2.mean[...], state.batch_stats["LinenBlock_1"]["BatchNorm_1"]["mean"]
    )

    # And the optimizer, through nnx.Optimizer.
    optimizer = nnx.Optimizer(model, resnet_models.make_tx(), wrt=nnx.Param)
    with ocp.StandardCheckpointer() as ckptr:
        nnx.update(optimizer, ckptr.restore(dst / "optimizer", nnx.state(optimizer)))
    assert int(optimizer.step[...]) == int(state.step) == 3
    np.testing.assert_array_equal(
        optimizer.opt_state[0].nu["head"]["kernel"][...], state.opt_state[0].nu["Dense_0"]["kernel"]
    )


def test_back_to_a_linen_checkpoint(trained_resnet, tmp_path):
    state, x, src = trained_resnet
    dst = tmp_path / "nnx_ckpt"
    assert main(_args(src, dst, "--tx", f"{MOD}:make_tx")) == 0
    model = resnet_models.nnx_resnet()
    optimizer = nnx.Optimizer(model, resnet_models.make_tx(), wrt=nnx.Param)
    plan = migrate.match(resnet_models.linen_resnet(), model, x, linen_kwargs={"train": False})
    tree = migrate.nnx_checkpoint_to_linen(
        dst, tmp_path / "linen_again", model, plan, optimizer=optimizer
    )
    assert tree["step"] == 3
    back = migrate.read_linen_checkpoint(tmp_path / "linen_again")
    assert back.kind == "train_state" and back.step == 3
    out = resnet_models.linen_resnet().apply(back.variables, x, train=False)
    np.testing.assert_allclose(out, _linen_predictions(state, x), atol=1e-6)
    np.testing.assert_array_equal(
        back.opt_state[0]["mu"]["conv_init"]["kernel"], state.opt_state[0].mu["conv_init"]["kernel"]
    )
    assert jax.tree.structure(dict(back.variables["batch_stats"])) == jax.tree.structure(
        dict(state.batch_stats)
    )


def test_failed_verification_writes_nothing(trained_resnet, tmp_path, capsys):
    _, _, src = trained_resnet
    dst = tmp_path / "nnx_ckpt"
    assert main(_args(src, dst, nnx_factory="nnx_resnet_wrong_momentum")) == 1
    out = capsys.readouterr()
    assert "Verification FAILED" in out.out
    assert "verification failed" in out.err
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_errors_exit_with_code_2(trained_resnet, tmp_path, capsys):
    _, _, src = trained_resnet
    dst = tmp_path / "nnx_ckpt"
    assert main(_args(src, dst, "--rename", "Dense_9=head")) == 2
    assert "'Dense_9' matched no Linen path" in capsys.readouterr().err
    assert main(_args(src, dst, "--sample", "oops")) == 2
    assert "--sample 'oops'" in capsys.readouterr().err
    assert main(_args(src / "nowhere", dst)) == 2
    assert "nowhere' does not exist" in capsys.readouterr().err
    dst.mkdir()
    assert main(_args(src, dst)) == 2
    assert "already exists" in capsys.readouterr().err
