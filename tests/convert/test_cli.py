"""``linnx convert`` from the shell: the written files, exit codes, and the walk of the docs
(convert, then ``linnx migrate-weights --path-map`` restores a Linen checkpoint)."""

from __future__ import annotations

import json
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from linnx import migrate
from linnx._cli import main

SOURCE = '''\
"""A small CNN."""

import flax.linen as nn


class CNN(nn.Module):
    num_classes: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x)
        x = x.reshape((x.shape[0], -1))  # flatten
        return nn.Dense(self.num_classes, name="head")(x)


def make():
    return CNN()
'''
EXAMPLE = "CNN()(jnp.ones((2, 6, 6, 1)), train=False)"


def test_convert_writes_the_module_and_the_path_map(tmp_path, capsys):
    src, dst = tmp_path / "cnn.py", tmp_path / "cnn_nnx.py"
    src.write_text(SOURCE)
    assert main(["convert", str(src), "-o", str(dst), "--example", EXAMPLE]) == 0
    out = capsys.readouterr().out
    assert "converted (1): CNN (line 6)" in out
    assert "Verification passed" in out
    paths = json.loads((tmp_path / "cnn_nnx.linen_paths.json").read_text())
    assert paths == {
        "BatchNorm_0/bias": "batch_norm/bias",
        "BatchNorm_0/mean": "batch_norm/mean",
        "BatchNorm_0/scale": "batch_norm/scale",
        "BatchNorm_0/var": "batch_norm/var",
        "Conv_0/bias": "conv/bias",
        "Conv_0/kernel": "conv/kernel",
        "head/bias": "head/bias",
        "head/kernel": "head/kernel",
    }
    code = dst.read_text()
    assert code.startswith('"""A small CNN."""')
    assert "def make():\n    return CNN()" in code  # helpers are kept as written


def test_the_docs_walk_restores_a_linen_checkpoint(tmp_path, monkeypatch, capsys):
    """convert, save a Linen checkpoint, migrate-weights with --path-map, restore in NNX."""
    src, dst = tmp_path / "cnn.py", tmp_path / "cnn_nnx.py"
    src.write_text(SOURCE)
    assert main(["convert", str(src), "-o", str(dst), "--example", EXAMPLE]) == 0
    (tmp_path / "factories.py").write_text(
        "from flax import nnx\nimport cnn_nnx\n\n\ndef make_nnx():\n"
        "    return cnn_nnx.CNN(in_features=1, head_in_features=144, rngs=nnx.Rngs(0))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import cnn

    x = jax.random.normal(jax.random.key(3), (2, 6, 6, 1))
    variables = cnn.make().init(jax.random.key(1), x)
    ckpt = tmp_path / "linen_ckpt"
    migrate.save_linen_checkpoint(ckpt, variables)
    models = ("--linen", "cnn:make", "--nnx", "factories:make_nnx")
    inputs = ("--sample", "2,6,6,1", "--linen-kwargs", '{"train": false}')
    path_map = ("--path-map", str(tmp_path / "cnn_nnx.linen_paths.json"))
    dirs = (str(ckpt), str(tmp_path / "nnx_ckpt"))
    rc = main(["migrate-weights", *dirs, *models, *inputs, *path_map])
    assert rc == 0, capsys.readouterr()
    import factories

    model = nnx.eval_shape(factories.make_nnx)
    with ocp.StandardCheckpointer() as ckptr:
        nnx.update(model, ckptr.restore(tmp_path / "nnx_ckpt" / "model", nnx.state(model)))
    model.eval()
    np.testing.assert_allclose(model(x), cnn.make().apply(variables, x), atol=1e-5, rtol=1e-5)
    for name in ("cnn", "cnn_nnx", "factories"):
        sys.modules.pop(name, None)


def test_verification_failure_writes_nothing_and_exits_1(tmp_path, capsys):
    # The model adds a fresh Python random number on every call: no two runs agree.
    src, dst = tmp_path / "m.py", tmp_path / "m_nnx.py"
    src.write_text(
        "import flax.linen as nn\nimport jax.numpy as jnp\n\n\n"
        "class M(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        y = nn.Dense(2)(x)\n"
        "        return y + jnp.asarray(__import__('random').random())\n"
    )
    rc = main(["convert", str(src), "-o", str(dst), "--example", "M()(jnp.ones((1, 3)))"])
    captured = capsys.readouterr()
    assert rc == 1, captured
    assert "verification failed" in captured.err
    assert not dst.exists() and not (tmp_path / "m_nnx.linen_paths.json").exists()


def test_bad_input_exits_2_with_file_and_line(tmp_path, capsys):
    src = tmp_path / "broken.py"
    src.write_text("import flax.linen as nn\n\nclass A(nn.Module)\n    pass\n")
    rc = main(["convert", str(src), "-o", str(tmp_path / "out.py"), "--example", "A()(1)"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "broken.py:3: the source does not parse" in err
    assert not (tmp_path / "out.py").exists()


def test_convert_help_lists_the_options(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    out = capsys.readouterr().out
    for flag in ("--example", "--keep-signatures", "--wrap-unknown", "-o"):
        assert flag in out
