"""One call site, several user classes: a ``block_cls`` field (or a class chosen by a field)
that the examples give different classes.

Classes that one NNX call can build alike convert, and where their outputs differ in size the
next layer's input size becomes a choice on the class; the others stay Linen, wrapped, with
the reason (or, for the example's own class, a ConvertError saying it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from linnx import convert

from ._util import ruff

RESNET = (Path(__file__).parent / "corpus" / "resnet.py").read_text()


def test_resnet_with_basic_and_bottleneck_blocks_converts(tmp_path):
    # Flax's ImageNet example: ResNet18 uses ResNetBlock (output: filters), ResNet50 the
    # BottleneckResNetBlock (output: 4 * filters), through the same `block_cls` field.
    examples = [
        f"ResNet(stage_sizes=[1, 1], block_cls={block}, num_classes=3, num_filters=4)"
        "(jnp.ones((1, 8, 8, 3)), train=False)"
        for block in ("ResNetBlock", "BottleneckResNetBlock")
    ]
    result = convert.convert_source(RESNET, examples, path="resnet.py")
    assert result.ok, result.report()
    assert result.kept == []
    assert {c.name for c in result.converted} == {"ResNet", "ResNetBlock", "BottleneckResNetBlock"}
    assert [c.ok for c in result.checks] == [True, True]
    assert (
        "                x_features = (\n"
        "                    self.num_filters * 2**i\n"
        "                    if self.block_cls is ResNetBlock\n"
        "                    else (self.num_filters * 2**i) * 4\n"
        "                )\n"
    ) in result.code
    assert ruff(result.code, tmp_path) == ""


BLOCKS = """\
from typing import Any

import flax.linen as nn


class Dropped(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dropout(0.5, deterministic=not train)(nn.Dense(self.features)(x))


class Plain(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(self.features)(x)


class Net(nn.Module):
    block_cls: Any = Dropped

    @nn.compact
    def __call__(self, x, train: bool = False):
        return self.block_cls(4)(x, train)
"""

OUTER = """

class Outer(nn.Module):
    block_cls: Any = Dropped

    @nn.compact
    def __call__(self, x):
        return Net(self.block_cls)(nn.Dense(3)(x))
"""


def test_classes_one_call_cannot_build_alike_stay_linen_with_the_reason():
    result = convert.convert_source(
        BLOCKS + OUTER,
        ["Outer()(jnp.ones((2, 5)))", "Outer(block_cls=Plain)(jnp.ones((2, 5)))"],
    )
    assert result.ok, result.report()
    kept = {k.name: k.reason for k in result.kept}
    assert kept["Net"] == (
        "this call creates modules of several classes (Dropped, Plain) that one NNX call "
        "cannot build: the call flags that became model.train()/model.eval() differ: "
        "Dropped ['train'], Plain []"
    )
    assert "# TODO(linnx convert): Net stays Linen: this call creates" in result.code


def test_the_examples_own_class_is_a_convert_error():
    with pytest.raises(
        convert.ConvertError,
        match=r"<source>:27: the example's model class Net cannot be converted: this call "
        r"creates modules of several classes \(Dense, Plain\) that one NNX call cannot build: "
        r"Dense is a Flax layer, not a class of the file",
    ):
        convert.convert_source(
            BLOCKS.replace("block_cls: Any = Dropped", "block_cls: Any = nn.Dense").replace(
                "(x, train)", "(x)"
            ),
            ["Net()(jnp.ones((2, 5)))", "Net(block_cls=Plain)(jnp.ones((2, 5)))"],
        )


def test_a_class_chosen_by_a_field_converts(tmp_path):
    source = """\
import flax.linen as nn


class Narrow(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Dense(self.features)(x))


class Wide(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(2 * self.features)(x)


class Net(nn.Module):
    kind: str = "narrow"

    @nn.compact
    def __call__(self, x):
        block = Narrow if self.kind == "narrow" else Wide
        return nn.Dense(2)(block(4)(x))
"""
    result = convert.convert_source(
        source, ["Net()(jnp.ones((2, 5)))", 'Net(kind="wide")(jnp.ones((2, 5)))']
    )
    assert result.ok, result.report()
    assert [c.ok for c in result.checks] == [True, True]
    assert result.kept == []
    # The head's input size follows the class the field chose.
    assert "self.linear = nnx.Linear((4 if block is Narrow else 2 * " in result.code
    assert ruff(result.code, tmp_path) == ""
