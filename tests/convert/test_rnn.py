"""Recurrent layers: ``nn.RNN`` / ``nn.Bidirectional`` of Linen cells convert to ``nnx.RNN`` /
``nnx.Bidirectional``; cells whose weights NNX cannot hold keep their class as Linen."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from linnx import convert

from ._train import example_models, train_both
from ._util import load, ruff

CORPUS = Path(__file__).parent / "corpus"
HEAD = "import flax.linen as nn\n\n\n"
X = "jnp.ones((2, 5, 3))"


def _net(body: str, fields: str = "") -> str:
    return HEAD + (
        f"class Net(nn.Module):\n{fields}    @nn.compact\n    def __call__(self, x):\n{body}"
    )


@functools.cache
def _converted(stem: str):
    # converted once per test session: the conversion tests and the training test share it
    source = (CORPUS / f"{stem}.py").read_text()
    (example,) = re.findall(r"^# example: (.*)$", source, re.M)
    return source, example, convert.convert_source(source, [example], path=f"{stem}.py")


def _convert_corpus(stem: str, tmp_path):
    source, example, result = _converted(stem)
    assert result.ok and result.kept == [], result.report()
    return source, example, result


def test_the_lstm_classifier_becomes_nnx_rnn_of_an_lstm_cell(tmp_path):
    _, _, result = _convert_corpus("lstm_classifier", tmp_path)
    assert ruff(result.code, tmp_path) == ""
    assert (
        "self.encoder = nnx.RNN(\n"
        "            nnx.LSTMCell(self.embedding_size, self.hidden_size, rngs=rngs),\n"
        "            return_carry=True,\n"
    ) in result.code
    assert "self.encoder(embedded, seq_lengths=lengths)" in result.code
    # Linen stores the cell next to the caller's layers; NNX inside the RNN (`if` is a keyword)
    assert result.path_map["LSTMCell_0/if/kernel"] == "encoder/cell/if_/kernel"
    assert result.path_map["LSTMCell_0/hf/bias"] == "encoder/cell/hf/bias"
    (check,) = result.checks
    assert check.ok and check.weights == 17


def test_the_sst2_scan_of_a_cell_over_time_becomes_nnx_rnn(tmp_path):
    _, _, result = _convert_corpus("sst2_bilstm", tmp_path)
    assert ruff(result.code, tmp_path) == ""
    assert "nn.transforms.scan" not in result.code and "@functools.partial" not in result.code
    assert (
        "        self.rnn = nnx.RNN(\n"
        "            nnx.LSTMCell(rnn_in_features, self.hidden_size, rngs=rngs),\n"
        "            return_carry=True,\n"
    ) in result.code
    call = "    def __call__(self, carry, x):\n        return self.rnn(x, initial_carry=carry)\n"
    assert call in result.code
    # the carry of the detached Linen cell comes from the RNN's own cell
    assert (
        "return self.rnn.cell.initialize_carry(input_shape, rngs=nnx.Rngs(jax.random.key(0)))"
        in result.code
    )
    assert (
        result.path_map["encoder/backward_lstm/OptimizedLSTMCell_0/if/kernel"]
        == "encoder/backward_lstm/rnn/cell/if_/kernel"
    )
    (check,) = result.checks
    assert check.ok and check.weights == 2 * 12 + 3


@pytest.mark.parametrize("stem", ["lstm_classifier", "sst2_bilstm"])
def test_a_converted_lstm_classifier_trains_like_the_linen_one(stem, tmp_path):
    source, example, result = _convert_corpus(stem, tmp_path)
    linen_model, nnx_model, args, lkw, nkw = example_models(
        source, result, example, tmp_path, stem=stem
    )
    assert nkw == {}  # deterministic= became model.eval()
    linen_losses, nnx_losses = train_both(
        linen_model, nnx_model, result.path_map, args, linen_kwargs=lkw, nnx_kwargs=nkw
    )
    assert linen_losses[0] != linen_losses[-1]  # it did train
    np.testing.assert_allclose(nnx_losses, linen_losses, rtol=1e-5)


def test_a_bidirectional_lstm_converts_with_both_cells_in_place(tmp_path):
    source = _net(
        "        y = nn.Bidirectional(nn.RNN(nn.LSTMCell(self.hidden)),\n"
        "                             nn.RNN(nn.LSTMCell(self.hidden), reverse=True,\n"
        "                                    keep_order=True))(x)\n"
        "        return nn.Dense(2)(y)\n",
        "    hidden: int\n\n",
    )
    result = convert.convert_source(source, [f"Net(hidden=4)({X})"])
    assert result.ok and result.kept == [], result.report()
    assert ruff(result.code, tmp_path) == ""
    # the concatenated output is twice the hidden size: the head is sized from the field
    assert "nnx.Linear(2 * self.hidden, 2, rngs=rngs)" in result.code
    assert "reverse=True,keep_order=True,rngs=rngs)" in re.sub(r"\s+", "", result.code)
    model = load(result.code, tmp_path, "bidi").Net(hidden=4, rngs=nnx.Rngs(0))
    assert isinstance(model.bidirectional, nnx.Bidirectional)
    assert model.bidirectional.backward_rnn.reverse and model.bidirectional.backward_rnn.keep_order
    assert result.path_map["LSTMCell_0/ii/kernel"] == "bidirectional/forward_rnn/cell/ii/kernel"
    assert result.path_map["LSTMCell_1/if/kernel"] == "bidirectional/backward_rnn/cell/if_/kernel"
    (check,) = result.checks
    assert check.ok and check.weights == 2 * 12 + 2


def test_a_named_rnn_called_twice_is_one_nnx_rnn(tmp_path):
    source = _net(
        "        rnn = nn.RNN(nn.LSTMCell(4))\n"
        "        return nn.Dense(2)(rnn(x) + rnn(x[:, ::-1]))\n"
    )
    result = convert.convert_source(source, [f"Net()({X})"])
    assert result.ok and result.kept == [], result.report()
    assert ruff(result.code, tmp_path) == ""
    assert "def __init__(self, *, in_features: int = 3, rngs: nnx.Rngs):" in result.code
    assert "self.rnn = nnx.RNN(nnx.LSTMCell(in_features, 4, rngs=rngs), rngs=rngs)" in (result.code)
    assert "self.linear = nnx.Linear(4, 2, rngs=rngs)" in result.code
    assert result.checks[0].ok and result.checks[0].weights == 12 + 2


@pytest.mark.parametrize(
    ("cell", "nnx_cell", "renamed"),
    [
        ("OptimizedLSTMCell", "LSTMCell", ("OptimizedLSTMCell_0/if/kernel", "rnn/cell/if_/kernel")),
        ("SimpleCell", "SimpleCell", ("SimpleCell_0/i/bias", "rnn/cell/dense_i/bias")),
    ],
)
def test_cells_whose_weights_nnx_names_differently_move_by_the_path_map(
    cell, nnx_cell, renamed, tmp_path
):
    source = _net(
        f"        h = nn.RNN(nn.{cell}(6), time_major=True)(x)\n        return nn.Dense(2)(h)\n"
    )
    result = convert.convert_source(source, [f"Net()({X})"])
    assert result.ok and result.kept == [], result.report()
    flat = re.sub(r"\s+", "", result.code)
    assert f"nnx.RNN(nnx.{nnx_cell}(in_features,6," in flat and "time_major=True" in flat
    assert result.path_map[renamed[0]] == renamed[1]
    assert result.checks[0].ok


def test_a_time_major_scan_of_a_cell_and_a_bidirectional_in_setup_convert(tmp_path):
    source = (
        "import functools\n\nimport flax.linen as nn\nimport jax.numpy as jnp\n\n\n"
        "class TimeMajor(nn.Module):\n"
        "    hidden: int\n\n"
        "    @functools.partial(nn.scan, variable_broadcast='params',\n"
        "                       split_rngs={'params': False})\n"
        "    @nn.compact\n"
        "    def __call__(self, carry, x):\n"
        "        return nn.SimpleCell(self.hidden)(carry, x)\n\n\n"
        "class BiSetup(nn.Module):\n"
        "    def setup(self):\n"
        "        self.bi = nn.Bidirectional(nn.RNN(nn.LSTMCell(3)), nn.RNN(nn.SimpleCell(2)))\n"
        "        self.head = nn.Dense(2)\n\n"
        "    def __call__(self, x):\n"
        "        return self.head(self.bi(x))\n\n\n"
        "class Net(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        _, y = TimeMajor(4)(jnp.zeros((x.shape[1], 4)), x)\n"
        "        return BiSetup()(y)\n"
    )
    result = convert.convert_source(source, ["Net()(jnp.ones((5, 2, 3)))"])
    assert result.ok and result.kept == [], result.report()
    assert ruff(result.code, tmp_path) == ""
    flat = re.sub(r"\s+", "", result.code)
    assert "return_carry=True,time_major=True,rngs=rngs" in flat  # nn.scan's in_axes=0
    assert "self.head=nnx.Linear(3+2,2,rngs=rngs)" in flat
    # in setup() Linen keeps the cell inside its RNN: the paths only rename the gate
    assert result.path_map["BiSetup_0/bi/forward_rnn/cell/if/kernel"] == (
        "bi_setup/bi/forward_rnn/cell/if_/kernel"
    )
    assert result.path_map["TimeMajor_0/SimpleCell_0/h/kernel"] == (
        "time_major/rnn/cell/dense_h/kernel"
    )
    assert result.checks[0].ok


def test_a_cell_stepped_in_a_python_loop_is_built_once_in_init(tmp_path):
    source = "import jax\n" + _net(
        "        cell = nn.LSTMCell(self.hidden)\n"
        "        carry = cell.initialize_carry(jax.random.key(0), x[:, 0].shape)\n"
        "        for t in range(x.shape[1]):\n"
        "            carry, y = cell(carry, x[:, t])\n"
        "        return nn.Dense(2)(y)\n",
        "    hidden: int\n\n",
    )
    result = convert.convert_source(source, [f"Net(hidden=4)({X})"])
    assert result.ok and result.kept == [], result.report()
    assert ruff(result.code, tmp_path) == ""
    assert "self.cell = nnx.LSTMCell(cell_in_features, self.hidden, rngs=rngs)" in result.code
    assert "cell_in_features: int = 3" in result.code
    # NNX takes the shape first and draws the carry from rngs
    assert (
        "carry = cell.initialize_carry(x[:, 0].shape, rngs=nnx.Rngs(jax.random.key(0)))"
        in result.code
    )
    assert "    for t in range(x.shape[1]):\n            carry, y = cell(carry, x[:, t])" in (
        result.code
    )
    assert result.path_map["LSTMCell_0/if/kernel"] == "cell/if_/kernel"
    assert result.checks[0].ok and result.checks[0].weights == 12 + 2


def test_a_cell_built_inside_the_loop_keeps_the_class_as_linen():
    source = HEAD + (
        "class Enc(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        h = x[:, 0, :1] * 0.0\n"
        "        for t in range(x.shape[1]):\n"
        "            h, _ = nn.SimpleCell(1)(h, x[:, t])\n"
        "        return h\n\n\n"
        "class Net(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return nn.Dense(2)(Enc()(x))\n"
    )
    result = convert.convert_source(source, [f"Net()({X})"])
    assert result.ok, result.report()
    (kept,) = result.kept
    assert kept.name == "Enc" and kept.line == 9
    assert kept.reason.startswith("an RNN cell built inside a loop (build it once before")


def test_a_scanned_gru_cell_keeps_its_caller_as_linen_too():
    # The scanned module's calls are seen one time step at a time: a parent that wrapped it
    # in linnx.ToNNX would have no sample inputs for it, so the parent stays Linen as well.
    source = (CORPUS / "sst2_bilstm.py").read_text().replace("OptimizedLSTMCell", "GRUCell")
    (example,) = re.findall(r"^# example: (.*)$", source, re.M)
    result = convert.convert_source(source, [example])
    assert result.ok, result.report()
    assert [k.name for k in result.kept] == ["SimpleLSTM", "SimpleBiLSTM"]
    assert "nnx.GRUCell has no bias" in result.kept[0].reason
    assert "its __call__ is a Linen lifted transform" in result.kept[1].reason
    assert [c.name for c in result.converted] == ["TextClassifier"]


def test_a_gru_stays_linen_with_the_reason_and_the_model_still_verifies(tmp_path):
    source = HEAD + (
        "class GRUEncoder(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return nn.RNN(nn.GRUCell(4))(x)\n\n\n"
        "class Net(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return nn.Dense(2)(GRUEncoder()(nn.Dense(3)(x)))\n"
    )
    result = convert.convert_source(source, [f"Net()({X})"])
    assert result.ok, result.report()
    (kept,) = result.kept
    assert kept.name == "GRUEncoder" and kept.line == 7  # the nn.RNN line
    assert "nnx.GRUCell has no bias on the recurrent candidate term" in kept.reason
    assert "# TODO(linnx convert): GRUEncoder stays Linen: nn.GRUCell:" in result.code
    assert ruff(result.code, tmp_path) == ""
    assert result.checks[0].ok


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            "nn.RNN(nn.LSTMCell(4), variable_broadcast='params')(x)",
            r"nn.RNN\(variable_broadcast=...\): nnx.RNN spells the lifted scan",
        ),
        (
            "nn.RNN(nn.LSTMCell(4))(x, init_key=jax.random.key(1))",
            r"init_key=...\): nnx.RNN draws the initial carry from its rngs",
        ),
        (
            "nn.RNN(nn.LSTMCell(4, carry_init=nn.initializers.ones))(x)",
            r"carry_init= of a cell: nnx cells take it in initialize_carry",
        ),
        ("nn.RNN(nn.MGUCell(4))(x)", r"nn.MGUCell: flax.nnx has no MGUCell"),
    ],
)
def test_what_nnx_rnn_spells_differently_keeps_the_class_as_linen(body, reason):
    source = (
        "import jax\n"
        + HEAD
        + (
            "class Enc(nn.Module):\n"
            "    @nn.compact\n"
            "    def __call__(self, x):\n"
            f"        return {body}\n\n\n"
            "class Net(nn.Module):\n"
            "    @nn.compact\n"
            "    def __call__(self, x):\n"
            "        return nn.Dense(2)(Enc()(x))\n"
        )
    )
    result = convert.convert_source(source, [f"Net()({X})"])
    assert result.ok, result.report()
    assert [k.name for k in result.kept] == ["Enc"]
    assert re.search(reason, result.kept[0].reason), result.kept[0].reason
