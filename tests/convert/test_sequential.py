"""``nn.Sequential([...])`` converts to ``nnx.Sequential(...)`` of converted layers."""

from __future__ import annotations

from pathlib import Path

from flax import nnx

from linnx import convert

from ._util import load, ruff

CORPUS = Path(__file__).parent / "corpus" / "sequential_stem.py"
EXAMPLE = "Classifier(width=16, num_classes=10)(jnp.ones((2, 8, 8, 3)))"
HEAD = "import flax.linen as nn\nimport jax.numpy as jnp\n\n\n"


def test_sequential_stacks_become_nnx_sequential(tmp_path):
    result = convert.convert_source(CORPUS.read_text(), [EXAMPLE])
    assert result.ok, result.report()
    assert result.kept == []
    assert ruff(result.code, tmp_path) == ""
    assert "nn.Sequential(" not in result.code and "nnx.Sequential(" in result.code
    dst = load(result.code, tmp_path, "seq_nnx")
    model = dst.Classifier(width=16, num_classes=10, rngs=nnx.Rngs(0))
    stem = model.stem.sequential
    assert isinstance(stem, nnx.Sequential) and isinstance(model.head, nnx.Sequential)
    kinds = [
        type(layer).__name__ if isinstance(layer, nnx.Module) else layer.__name__
        for layer in stem.layers
    ]
    assert kinds == ["Conv", "gelu", "LayerNorm", "Conv", "relu"]
    # each layer sized by the one before it: 3 -> 16 -> (norm over 16) -> 32
    assert stem.layers[0].kernel.shape == (3, 3, 3, 16)
    assert stem.layers[2].scale.shape == (16,)
    assert stem.layers[3].kernel.shape == (3, 3, 16, 32)
    assert model.head.layers[2].kernel.shape == (32, 10)
    # Linen names the layers after the module that builds them; NNX indexes the list.
    assert result.path_map["Stem_0/Conv_1/kernel"] == "stem/sequential/layers/3/kernel"
    assert result.path_map["Stem_0/LayerNorm_0/scale"] == "stem/sequential/layers/2/scale"
    assert result.path_map["Dense_1/bias"] == "head/layers/2/bias"  # name='head' kept
    (check,) = result.checks
    assert check.ok and check.weights == 10


def test_a_user_module_inside_sequential_keeps_the_class_as_linen():
    source = HEAD + (
        "class Block(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return nn.relu(nn.Dense(4)(x))\n\n\n"
        "class Tower(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return nn.Sequential([Block(), Block()])(x)\n\n\n"
        "class Net(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return Tower()(nn.Dense(3)(x))\n"
    )
    result = convert.convert_source(source, ["Net()(jnp.ones((1, 4)))"])
    assert result.ok, result.report()
    kept = {k.name: k for k in result.kept}["Tower"]  # Block, used only inside, stays too
    assert kept.line == 14
    assert "an nn.Sequential entry other than a Flax layer with a rule" in kept.reason


def test_a_size_changing_function_in_sequential_becomes_a_size_argument(tmp_path):
    source = HEAD + (
        "class Net(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        flat = lambda y: y.reshape((y.shape[0], -1))\n"
        "        return nn.Sequential([nn.Conv(2, (3, 3)), flat, nn.Dense(5)])(x)\n"
    )
    result = convert.convert_source(source, ["Net()(jnp.ones((1, 4, 4, 1)))"])
    assert result.kept == [] and result.ok, result.report()
    assert "sequential_2_in_features: int = 32" in result.code  # 4 * 4 * 2 after flattening
