"""Lifted transforms: ``nn.scan`` over layers, ``nn.remat``, ``nn.vmap`` convert to the guide's
NNX forms (``nnx.split_rngs`` + ``nnx.vmap`` creation, ``nnx.scan``/``nnx.remat``/``nnx.vmap``
calls), verify, and train like Linen; ``nn.remat_scan`` is recognised and wrapped."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import spec003_linen
from flax import nnx

from linnx import convert
from tests.migrate import spec003_nnx

from ._train import example_models, train_both
from ._util import load, ruff, section_source, structure

CORPUS = Path(__file__).parent / "corpus"


def test_the_guides_scan_over_layers_converts_to_the_guides_structure(tmp_path):
    source = section_source(spec003_linen.scan_over_layers)
    example = "MLP(8, num_layers=3)(jnp.ones((2, 8)), training=False)"
    result = convert.convert_source(source, [example], path="scan_over_layers.py")
    assert result.ok, result.report()
    assert result.kept == []
    assert ruff(result.code, tmp_path) == ""
    # The guide's NNX idiom: blocks stacked by nnx.vmap with split rngs, run by nnx.scan.
    assert "@nnx.split_rngs(splits=self.num_layers)" in result.code
    assert "@nnx.vmap(in_axes=(0,), out_axes=0)" in result.code
    assert "nnx.scan(" in result.code and "nn.scan" not in result.code
    assert result.path_map == {
        "ScanBlock_0/Dense_0/kernel": "blocks/linear/kernel",
        "ScanBlock_0/Dense_0/bias": "blocks/linear/bias",
    }
    mod = load(result.code, tmp_path, "scan_over_layers")
    converted = mod.MLP(8, num_layers=3, rngs=nnx.Rngs(0))
    guide = spec003_nnx.scan_over_layers().MLP(8, num_layers=3, rngs=nnx.Rngs(0))
    assert structure(converted) == structure(guide)
    assert structure(converted)["blocks/linear/kernel"] == ("Param", (3, 8, 8))


def test_a_vit_with_scanned_remat_blocks_verifies_and_trains_like_linen(tmp_path):
    source = (CORPUS / "vit_scan.py").read_text()
    (example,) = re.findall(r"^# example: (.*)$", source, re.M)
    # verified by the corpus test; here: the code, then training
    result = convert.convert_source(source, [example], path="vit_scan.py", verify=False)
    assert result.kept == []
    code = result.code
    assert "@nnx.split_rngs(splits=self.depth)" in code
    assert (
        "nnx.remat(\n                Encoder1DBlock.__call__,\n                prevent_cse=False,"
        in code
    )
    # the carry leaves the scan with the size it entered: the final norm is sized from it
    assert "self.encoder_norm = nnx.LayerNorm(in_features, rngs=rngs)" in code
    # deterministic became model.eval(): it leaves the call and remat's static_argnums
    assert "static_argnums" not in code
    assert result.path_map["Transformer/encoderblock/MlpBlock_0/Dense_0/kernel"] == (
        "Transformer/encoderblock/mlp_block/linear1/kernel"
    )
    linen_model, nnx_model, args, lkw, nkw = example_models(source, result, example, tmp_path)
    assert nnx_model.Transformer.encoderblock.attention.query.kernel.value.shape[0] == 2
    linen_losses, nnx_losses = train_both(
        linen_model, nnx_model, result.path_map, args, linen_kwargs=lkw, nnx_kwargs=nkw
    )
    assert linen_losses[0] != linen_losses[-1]  # it did train
    np.testing.assert_allclose(nnx_losses, linen_losses, rtol=1e-5)


REMAT = """\
import flax.linen as nn
import jax


class Block(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x, deterministic: bool):
        y = nn.Dense(self.features)(x)
        y = nn.Dropout(0.5, deterministic=deterministic)(y)
        return x + y


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic: bool):
        policy = jax.checkpoint_policies.nothing_saveable
        block = nn.remat(Block, static_argnums=(2,), policy=policy)
        return block(x.shape[-1], name="body")(x, deterministic)
"""


def test_remat_with_static_argnums_becomes_nnx_remat(tmp_path):
    example = "Net()(jnp.ones((2, 4)), deterministic=True)"
    kept = convert.convert_source(REMAT, [example], keep_signatures=True)
    assert kept.ok, kept.report()
    assert ruff(kept.code, tmp_path) == ""
    # Linen counts self as argument 0; so does nnx.remat of Block.__call__ (the block first).
    assert (
        "nnx.remat(\n            Block.__call__,\n            static_argnums=(2,),\n"
        "            policy=policy,\n        )"
        "(self.body, x, deterministic)"
    ) in kept.code
    assert "self.body = Block(" in kept.code
    assert kept.path_map == {
        "body/Dense_0/kernel": "body/linear/kernel",
        "body/Dense_0/bias": "body/linear/bias",
    }
    # The flag became model.eval(): the static argument goes with it.
    idiomatic = convert.convert_source(REMAT, [example], verify=False)
    assert "static_argnums" not in idiomatic.code
    assert "(self.body, x)" in idiomatic.code


ENSEMBLE = """\
import flax.linen as nn


class Head(nn.Module):
    classes: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.classes)(nn.relu(nn.Dense(8)(x)))


class Ensemble(nn.Module):
    members: int = 3

    @nn.compact
    def __call__(self, x):
        heads = nn.vmap(
            Head, variable_axes={"params": 0}, split_rngs={"params": True},
            in_axes=None, out_axes=0, axis_size=self.members,
        )
        return heads(5, name="heads")(x).mean(axis=0)
"""


def test_vmap_over_an_ensemble_axis_becomes_nnx_vmap(tmp_path):
    example = "Ensemble()(jnp.ones((2, 4)))"
    result = convert.convert_source(ENSEMBLE, [example])
    assert result.ok, result.report()
    assert ruff(result.code, tmp_path) == ""
    assert "@nnx.split_rngs(splits=self.members)" in result.code
    assert "nnx.vmap(Head.__call__, in_axes=(0, None), out_axes=0)(self.heads, x)" in result.code
    mod = load(result.code, tmp_path, "ensemble")
    model = mod.Ensemble(rngs=nnx.Rngs(0))
    assert structure(model)["heads/linear2/kernel"] == ("Param", (3, 4, 8))  # Dense(8)
    # every member starts from its own parameters (the rngs were split)
    k = model.heads.linear2.kernel.value
    assert not np.allclose(k[0], k[1])


WRAPPED = """\
import flax.linen as nn


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x + nn.Dense(x.shape[-1])(x)


class Deep(nn.Module):
    @nn.compact
    def __call__(self, x):
        stack = LIFTED
        return stack(name="stack")(x)
"""


@pytest.mark.parametrize(
    "lifted,kind",
    [("nn.remat_scan(Block, lengths=(2, 2))", "remat_scan"), ("nn.jit(Block)", "jit")],
)
def test_remat_scan_and_jit_are_recognised_and_wrapped(lifted, kind, tmp_path):
    source = WRAPPED.replace("LIFTED", lifted)
    result = convert.convert_source(source, ["Deep()(jnp.ones((2, 4)))"], path="deep.py")
    assert result.ok, result.report()
    assert ruff(result.code, tmp_path) == ""
    reason = f"it is lifted with nn.{kind}, which is not converted yet"
    assert [(k.name, k.line, k.reason) for k in result.kept] == [("Block", 13, reason)]
    assert f"# TODO(linnx convert): Block stays Linen: {reason}" in result.code
    assert f"self.stack = linnx.ToNNX({lifted}(), rngs=rngs)" in result.code
    assert "stack = nn." not in result.code  # the local name of the lifted class is gone
    assert [c.name for c in result.converted] == ["Deep"]
    assert f"Block (line 13): {reason}" in result.report()


@pytest.mark.parametrize(
    "options,reason",
    [
        (
            "variable_axes={'params': 1}, split_rngs={'params': True}, length=2",
            r"stacking on an axis other than 0 is not converted yet",
        ),
        (
            "variable_axes={'params': 0}, split_rngs={'params': True}, length=2, "
            "variable_carry='counter'",
            r"variable_carry=\.\.\.\) .* is not converted yet",
        ),
        (
            "variable_axes={'params': 0}, split_rngs={'params': False}, length=2",
            r"without split_rngs=\{'params': True\}",
        ),
    ],
)
def test_scan_options_without_an_nnx_form_keep_the_class_linen(options, reason):
    source = SCANNED.replace("OPTIONS", options)
    result = convert.convert_source(source, ["Outer()(jnp.ones((2, 4)))"], path="s.py")
    assert result.ok, result.report()
    (kept,) = [k for k in result.kept if k.name == "Stack"]
    assert re.search(reason, kept.reason), kept.reason
    assert "# TODO(linnx convert): Stack stays Linen" in result.code


SCANNED = """\
import flax.linen as nn


class Block(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        return x + nn.Dense(4)(x), None


class Stack(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.scan(Block, OPTIONS)()(x, None)[0]


class Outer(nn.Module):
    @nn.compact
    def __call__(self, x):
        return Stack()(nn.Dense(4)(x))
"""


BROADCAST = """\
import flax.linen as nn
import jax.numpy as jnp


class Cell(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, c, x):
        c = nn.tanh(nn.Dense(self.hidden)(jnp.concatenate([c, x], axis=-1)))
        return c, c


class Encoder(nn.Module):
    hidden: int = 4

    @nn.compact
    def __call__(self, x):
        scan = nn.scan(
            Cell, variable_broadcast="params", split_rngs={"params": False}, in_axes=1, out_axes=1
        )
        c = jnp.zeros((x.shape[0], self.hidden))
        c, ys = scan(self.hidden, name="cell")(c, x)
        return ys
"""


def test_a_scan_that_broadcasts_its_parameters_keeps_one_cell(tmp_path):
    result = convert.convert_source(BROADCAST, ["Encoder()(jnp.ones((2, 5, 3)))"])
    assert result.ok, result.report()
    assert ruff(result.code, tmp_path) == ""
    assert "self.cell = Cell(self.hidden, " in result.code  # one cell, no nnx.vmap
    assert "nnx.vmap" not in result.code and "split_rngs" not in result.code
    assert (
        "nnx.scan(\n            Cell.__call__,\n            in_axes=(None, nnx.Carry, 1),\n"
        "            out_axes=(nnx.Carry, 1),\n        )(self.cell, c, x)"
    ) in result.code
    assert result.path_map == {
        "cell/Dense_0/kernel": "cell/linear/kernel",
        "cell/Dense_0/bias": "cell/linear/bias",
    }


def test_the_guides_rnn_scan_converts_to_the_guides_structure(tmp_path):
    """The guide's "Transformations" RNN: a cell scanned over time with its parameters
    broadcast, and another method of the scanned cell (``initial_state``) called first."""
    source = section_source(spec003_linen.transformations)
    result = convert.convert_source(source, ["RNN(8)(x=jnp.ones((2, 5, 3)))"], path="rnn.py")
    assert result.ok, result.report()
    assert result.kept == []
    assert ruff(result.code, tmp_path) == ""
    assert "carry = rnn.initial_state(x.shape[0])" in result.code
    assert "in_axes=(None, nnx.Carry, 1),\n            out_axes=(nnx.Carry, 1)," in result.code
    mod = load(result.code, tmp_path, "rnn")
    converted = mod.RNN(8, rngs=nnx.Rngs(0))
    guide = spec003_nnx.transformations().RNN(3, 8, rngs=nnx.Rngs(0))
    # The guide names the cell `cell`; the converter keeps the Linen variable's name, `rnn`.
    renamed = {k.replace("cell", "rnn", 1): v for k, v in structure(guide).items()}
    assert structure(converted) == renamed


BROADCAST_FLAG = """\
import flax.linen as nn


class Block(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic):
        y = nn.Dropout(0.5)(nn.Dense(x.shape[-1])(x), deterministic=deterministic)
        return x + y, None


class Stack(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic: bool):
        block = nn.remat(Block, static_argnums=(2,))
        x, _ = nn.scan(
            block, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
            in_axes=nn.broadcast, length=2,
        )()(x, deterministic)
        return x
"""


def test_a_broadcast_flag_kept_in_the_signature_is_closed_over(tmp_path):
    """Linen hands nn.broadcast arguments to every step as they are (a Python flag stays one,
    so remat's static_argnums can name it); nnx.scan would trace them: the call closes over
    them instead."""
    example = "Stack()(jnp.ones((2, 4)), deterministic=True)"
    result = convert.convert_source(BROADCAST_FLAG, [example], keep_signatures=True)
    assert result.ok, result.report()
    assert ruff(result.code, tmp_path) == ""
    assert (
        "            lambda layer, x: nnx.remat(\n"
        "                Block.__call__,\n"
        "                static_argnums=(2,),\n"
        "            )(layer, x, deterministic),\n"
        "            in_axes=(0, nnx.Carry),\n"
    ) in result.code
    # In the default mode the flag became model.eval(): nothing is broadcast, no lambda.
    idiomatic = convert.convert_source(BROADCAST_FLAG, [example], verify=False)
    assert "lambda" not in idiomatic.code and "static_argnums" not in idiomatic.code


REMAT_LOOP = """\
import flax.linen as nn


class Block(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic):
        y = nn.Dropout(0.5)(nn.Dense(x.shape[-1])(x), deterministic=deterministic)
        return x + y, None


class Encoder(nn.Module):
    depth: int = 2

    @nn.compact
    def __call__(self, x, deterministic: bool):
        block = nn.remat(Block, static_argnums=(2,))
        for lyr in range(self.depth):
            x, _ = block(name=f"encoderblock_{lyr}")(x, deterministic)
        return x
"""


def test_remat_blocks_created_in_a_loop_become_an_nnx_list_run_under_nnx_remat(tmp_path):
    """big_vision's encoder without scan: one rematerialized block per layer."""
    result = convert.convert_source(REMAT_LOOP, ["Encoder()(jnp.ones((2, 4)), deterministic=True)"])
    assert result.ok, result.report()
    assert ruff(result.code, tmp_path) == ""
    assert "self.encoderblocks.append(Block(" in result.code
    assert "x, _ = nnx.remat(Block.__call__)(self.encoderblocks[lyr], x)" in result.code
    assert result.path_map["encoderblock_1/Dense_0/kernel"] == "encoderblocks/1/linear/kernel"
