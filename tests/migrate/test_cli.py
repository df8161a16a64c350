"""``linnx migrate-weights``: a trained Linen ResNet checkpoint into the hand-ported NNX ResNet."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import linnx
from linnx import migrate
from linnx._cli import main
from linnx.migrate import _cli

from . import cli_models, resnet_models

MOD = resnet_models.__name__


def _args(src, dst, *extra, nnx_factory="nnx_resnet"):
    models = ("--linen", f"{MOD}:linen_resnet", "--nnx", f"{MOD}:{nnx_factory}")
    inputs = ("--sample", "2,8,8,3:float32", "--linen-kwargs", '{"train": false}')
    return ["migrate-weights", *models, *inputs, *extra, str(src), str(dst)]


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
    assert "migrate-weights" not in out.err  # no progress bar: stderr is not a terminal
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


# -- a language model with boxed parameters and an nn.Embed first -----------------------------

LM = cli_models.__name__


@pytest.fixture(scope="module")
def lm_checkpoint(tmp_path_factory):
    """A Linen LM's variables saved by Orbax alone, as a training script saves them."""
    variables = cli_models.linen_lm().init(jax.random.key(0), jnp.zeros((2, 5), jnp.int32))
    path = tmp_path_factory.mktemp("lm") / "linen_ckpt"
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, variables)
    return variables, path


def _lm_args(src, dst, *extra):
    models = ("--linen", f"{LM}:linen_lm", "--nnx", f"{LM}:nnx_lm")
    return ["migrate-weights", *models, *extra, str(src), str(dst)]


def test_boxed_language_model_through_the_cli(lm_checkpoint, tmp_path, capsys):
    variables, src = lm_checkpoint
    dst = tmp_path / "nnx"
    assert main(_lm_args(src, dst, "--sample", "4,16:int32")) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "params/Dense_0/kernel " in out and "kernel/value" not in out
    assert "Verification passed" in out
    model = migrate.load_nnx_checkpoint(dst, cli_models.nnx_lm())
    tokens = jnp.arange(10).reshape(2, 5) * 97
    np.testing.assert_allclose(
        model(tokens), cli_models.linen_lm().apply(variables, tokens), atol=1e-6
    )


def test_integer_samples_range_over_the_embedding_vocabulary():
    (tokens,) = _cli._samples(["64,32:int32"], 0, cli_models.linen_lm(), {})
    assert tokens.dtype == jnp.int32 and tokens.shape == (64, 32)
    assert int(tokens.min()) >= 0 and int(tokens.max()) < cli_models.VOCAB
    assert len(np.unique(tokens)) > cli_models.VOCAB // 2  # not {0, 1}
    (given,) = _cli._samples(["8,8:int32:5..9"], 0, cli_models.linen_lm(), {})
    assert set(np.unique(given).tolist()) <= {5, 6, 7, 8}
    notes = []
    (other,) = _cli._samples(["4:int32"], 0, resnet_models.linen_resnet(), {}, notes.append)
    assert int(other.max()) <= 1 and "LOW..HIGH" in notes[0]


def test_sample_from_a_npy_file(lm_checkpoint, tmp_path, capsys):
    _, src = lm_checkpoint
    tokens = np.array([[1, 998, 500, 7, 3]], np.int32)
    np.save(tmp_path / "tokens.npy", tokens)
    (loaded,) = _cli._samples([str(tmp_path / "tokens.npy")], 0)
    np.testing.assert_array_equal(loaded, tokens)
    npy = str(tmp_path / "tokens.npy")
    assert main(_lm_args(src, tmp_path / "nnx", "--sample", npy)) == 0
    assert "Verification passed" in capsys.readouterr().out
    assert main(_lm_args(src, tmp_path / "nnx2", "--sample", str(tmp_path / "no.npy"))) == 2
    assert "no.npy': no such file" in capsys.readouterr().err


def test_progress_bar_only_on_a_terminal(lm_checkpoint, tmp_path, capsys, monkeypatch):
    _, src = lm_checkpoint
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(_lm_args(src, tmp_path / "nnx", "--sample", "2,5:int32", "--no-verify")) == 0
    assert "migrate-weights: 100%" in capsys.readouterr().err


def test_orbax_event_loop_tracebacks_never_reach_the_user(lm_checkpoint, tmp_path):
    _, src = lm_checkpoint
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(src, bad)
    for data in (bad / "d").iterdir():  # the merged index: Orbax fails reading the metadata
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(linnx.__file__).parents[1]), str(Path(__file__).parents[2])]
        ),
    }
    args = [a.replace(LM, "tests.migrate.cli_models") for a in _lm_args(bad, tmp_path / "o")]
    done = subprocess.run(
        [sys.executable, "-m", "linnx._cli", *args, "--sample", "2,5:int32"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "is truncated or damaged" in done.stderr
    assert "Event loop is closed" not in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_noise_filter_drops_only_event_loop_tracebacks():
    import io

    sink = io.StringIO()
    quiet = _cli._OrbaxNoiseFilter(sink)
    noise = (
        "Traceback (most recent call last):\n"
        '  File "asyncio/base_events.py", line 806, in call_soon_threadsafe\n'
        "    self._check_closed()\n"
        "RuntimeError: Event loop is closed\n"
    )
    other = noise.replace("RuntimeError: Event loop is closed", "ValueError: a real problem")
    quiet.write("\rbar 1/6")
    quiet.write(noise[:50])
    quiet.write(noise[50:] + "error: the checkpoint is damaged\n" + other)
    quiet.flush()
    assert sink.getvalue() == "\rbar 1/6error: the checkpoint is damaged\n" + other


def test_streamed_and_sharded_through_the_cli(lm_checkpoint, tmp_path, capsys):
    variables, src = lm_checkpoint
    args = _lm_args(
        src, tmp_path / "streamed", "--sample", "2,5:int32", "--stream", "--group-mib", "1"
    )
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "Verification passed: the checksum (XXH3-128) of each of the 5 Linen arrays" in out
    assert "the models were not run" in out
    info = json.loads((tmp_path / "streamed" / "linnx.json").read_text())
    assert info["streamed"]["verified"] == "checksums" and info["plan"]["pairs"]
    tokens = jnp.arange(10).reshape(2, 5) * 97
    model = migrate.load_nnx_checkpoint(tmp_path / "streamed", cli_models.nnx_lm())
    np.testing.assert_allclose(
        model(tokens), cli_models.linen_lm().apply(variables, tokens), atol=1e-6
    )
    # Every array only renamed: renamed in place, or (--no-share-data) restored and written.
    assert info["streamed"]["renamed"] == 5
    rewritten = _lm_args(src, tmp_path / "rewritten", "--sample", "2,5:int32", "--no-verify")
    assert main([*rewritten, "--no-share-data"]) == 0, capsys.readouterr().err
    info = json.loads((tmp_path / "rewritten" / "linnx.json").read_text())
    assert info["streamed"]["renamed"] == 0
    again = migrate.load_nnx_checkpoint(tmp_path / "rewritten", cli_models.nnx_lm())
    assert jax.tree.all(jax.tree.map(np.array_equal, nnx.state(again), nnx.state(model)))
    if len(jax.devices()) >= 8:
        args = _lm_args(
            src, tmp_path / "sharded", "--sample", "2,5:int32", "--mesh", "data=2,model=4"
        )
        assert main(args) == 0, capsys.readouterr().err
        assert "Verification passed" in capsys.readouterr().out
    assert main(_lm_args(src, tmp_path / "x", "--sample", "2,5:int32", "--mesh", "data")) == 2
    assert "expected NAME=SIZE" in capsys.readouterr().err
    with_tx = ("--stream", "--tx", f"{MOD}:make_tx")
    assert main(_lm_args(src, tmp_path / "x", "--sample", "2,5:int32", *with_tx)) == 2
    assert "--stream moves the weights only" in capsys.readouterr().err


def test_noise_filter_separates_threads_printing_at_once():
    import io
    import threading

    sink = io.StringIO()
    quiet = _cli._OrbaxNoiseFilter(sink)
    noise = (
        "Traceback (most recent call last):\n"
        '  File "asyncio/base_events.py", line 519, in _check_closed\n'
        "    raise RuntimeError('Event loop is closed')\n"
        "RuntimeError: Event loop is closed\n"
    )
    half = threading.Event()

    def background():
        quiet.write(noise[:40])
        half.set()
        quiet.write(noise[40:])

    thread = threading.Thread(target=background)
    thread.start()
    half.wait()
    quiet.write("error: damaged")  # the main thread, between the other thread's pieces
    thread.join()
    quiet.write("\nFix: copy it again\n")
    quiet.flush()
    assert sink.getvalue() == "error: damaged\nFix: copy it again\n"

    # A flush (at exit) in the middle of a noise traceback keeps it back until its end.
    quiet.write(noise[:120])
    quiet.flush()
    quiet.write(noise[120:])
    quiet.flush()
    assert sink.getvalue() == "error: damaged\nFix: copy it again\n"


def test_only_orbax_coroutines_are_dropped_from_unraisable_reports():
    import types

    seen = []
    hook = _cli._drop_abandoned_orbax_reads(seen.append)

    async def ours():
        pass

    mine = ours()
    theirs = types.SimpleNamespace(
        cr_code=types.SimpleNamespace(
            co_filename="/site-packages/orbax/checkpoint/_src/serialization/serialization.py"
        )
    )
    hook(types.SimpleNamespace(object=theirs))
    hook(types.SimpleNamespace(object=mine))
    hook(types.SimpleNamespace(object=None))
    mine.close()
    assert [u.object for u in seen] == [mine, None]
