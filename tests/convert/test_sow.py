"""``self.sow('intermediates', ...)`` converts to ``self.sow(nnx.Intermediate, ...)`` and the
verification compares what both models sow."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import nnx, traverse_util

from linnx import convert
from linnx.convert._verify import compare_intermediates

from ._util import load, ruff

CORPUS = Path(__file__).parent / "corpus" / "sown_features.py"
EXAMPLE = "Probed(depth=2, width=16)(jnp.ones((2, 5, 8)))"


def test_sown_values_convert_and_are_compared(tmp_path):
    result = convert.convert_source(CORPUS.read_text(), [EXAMPLE])
    assert result.ok, result.report()
    assert result.kept == []
    assert ruff(result.code, tmp_path) == ""
    assert 'self.sow(nnx.Intermediate, "hidden", h)' in result.code
    assert "reduce_fn=lambda prev, new: prev + new, init_fn=lambda: jnp.zeros(())" in result.code
    assert "'intermediates'" not in result.code and '"intermediates"' not in result.code
    # Every value the Linen model sows was compared: 2 per block, one at the top.
    src = load(CORPUS.read_text(), tmp_path, "sown_linen")
    linen = src.Probed(depth=2, width=16)
    x = jnp.ones((2, 5, 8))
    variables = linen.init(jax.random.key(0), x)
    _, state = linen.apply(variables, x, mutable=["intermediates"])
    n_linen = len(traverse_util.flatten_dict(state["intermediates"]))
    (check,) = result.checks
    assert check.intermediates == n_linen == 5
    assert "sown intermediates equal: 5" in result.report()


def test_converted_model_sows_readable_with_capture(tmp_path):
    result = convert.convert_source(CORPUS.read_text(), [EXAMPLE])
    dst = load(result.code, tmp_path, "sown_nnx")
    model = dst.Probed(depth=2, width=16, rngs=nnx.Rngs(0))
    _, sown = nnx.capture(nnx.Intermediate)(lambda m, x: m(x))(model, jnp.ones((2, 5, 8)))
    paths = {tuple(str(k) for k in p) for p, _ in nnx.to_flat_state(sown)}
    assert paths == {
        ("final",),
        *((b, str(i), n) for b in ["mlp_blocks"] for i in range(2) for n in ("hidden", "norm_sum")),
    }
    hidden = sown["mlp_blocks"][0]["hidden"].get_value()
    assert isinstance(hidden, tuple) and hidden[0].shape == (2, 5, 16)  # appended, as Linen
    assert sown["mlp_blocks"][1]["norm_sum"].get_value().shape == ()  # reduced by reduce_fn


class _LinenSows(nn.Module):
    @nn.compact
    def __call__(self, x):
        self.sow("intermediates", "h", x + 1.0)
        return x


class _NNXSows(nnx.Module):
    def __init__(self, shift: float):
        self.shift = shift

    def __call__(self, x):
        self.sow(nnx.Intermediate, "h", x + self.shift)
        return x


def test_a_different_sown_value_fails_the_comparison():
    x = jnp.ones((2, 3))
    call = ([x], {}, [x], {})
    maps = ({(): ()}, set())
    assert compare_intermediates(_LinenSows(), {}, _NNXSows(1.0), call, maps, 1e-5, 1e-5) == (
        1,
        None,
    )
    count, error = compare_intermediates(_LinenSows(), {}, _NNXSows(2.0), call, maps, 1e-5, 1e-5)
    assert count == 0 and "the sown intermediate h differs" in error


def test_a_sow_the_nnx_model_lacks_fails_the_comparison():
    class Silent(nnx.Module):
        def __call__(self, x):
            return x

    x = np.ones((2, 3), np.float32)
    count, error = compare_intermediates(
        _LinenSows(), {}, Silent(), ([x], {}, [x], {}), ({(): ()}, set()), 1e-5, 1e-5
    )
    assert count == 0 and "sows h; the NNX model sows no h" in error


def test_sow_into_a_collection_named_by_a_variable_keeps_the_class_as_linen():
    source = (
        "import flax.linen as nn\nimport jax.numpy as jnp\n\nCOLLECTION = 'intermediates'\n\n\n"
        "class Inner(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        self.sow(COLLECTION, 'l2', (x ** 2).sum())\n"
        "        return nn.Dense(2)(x)\n\n\n"
        "class Net(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return Inner()(nn.Dense(3)(x))\n"
    )
    result = convert.convert_source(source, ["Net()(jnp.ones((1, 4)))"])
    assert result.ok, result.report()
    (kept,) = result.kept
    assert kept.name == "Inner" and kept.line == 10
    assert "other than a literal 'intermediates'" in kept.reason


def test_a_kept_class_that_sows_into_a_collection_init_keeps_verifies():
    # Linen's init keeps every collection but 'intermediates': the sown 'losses' tuple is in
    # the variables, and ToNNX keeps it as a tuple of variables. Neither is a weight (this
    # failed with "AttributeError: 'tuple' object has no attribute 'shape'" before).
    source = (
        "import flax.linen as nn\n\n\n"
        "class Inner(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        self.sow('losses', 'l2', (x ** 2).sum())\n"
        "        return nn.Dense(2)(x)\n\n\n"
        "class Net(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return Inner()(nn.Dense(3)(x))\n"
    )
    result = convert.convert_source(source, ["Net()(jnp.ones((1, 4)))"])
    assert result.ok, result.report()
    assert [k.name for k in result.kept] == ["Inner"]
    (check,) = result.checks
    assert check.weights == 4  # the two Dense layers; the sown value is no weight
    assert "Inner_0/l2" not in result.path_map
