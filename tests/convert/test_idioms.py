"""Common Linen idioms convert (or stay Linen inside ``linnx.ToNNX`` with a reason), never a
crash or a converted model that differs from the Linen one.

Mixin base classes, ``@nn.nowrap`` factory helpers, submodules made in one branch only (on a
field, on a call argument, on the input's shape) and shared submodules called twice. Every
conversion here is verified by ``convert_source`` itself (both models run on the example).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from linnx import convert, migrate

from ._util import load, ruff

HEAD = "import flax.linen as nn\nimport jax.numpy as jnp\n\n\n"


def _convert(source: str, *examples: str) -> convert.ConversionResult:
    result = convert.convert_source(source, list(examples), path="idioms.py")
    assert result.ok, result.report()
    return result


def _class(code: str, name: str) -> str:
    return code.split(f"class {name}(", 1)[1].split("\nclass ", 1)[0]


# -- mixins -------------------------------------------------------------------------------------

MIXIN = (
    HEAD
    + '''\
class NormMixin(nn.Module):
    """Helpers that every block of the model shares."""

    eps: float = 1e-6

    def normalize(self, x):
        return x / jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)

    @nn.nowrap
    def act(self, x):
        return nn.gelu(x)


class Block(NormMixin):
    features: int = 8

    @nn.compact
    def __call__(self, x):
        return self.act(nn.Dense(self.features)(self.normalize(x)))


class Head(NormMixin):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(self.normalize(x))


class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
        return Head(eps=1e-3)(Block(features=6)(x))
'''
)


def test_a_mixin_base_becomes_an_nnx_base_class(tmp_path):
    result = _convert(MIXIN, "Model()(jnp.ones((2, 4)))")
    code = result.code
    assert {c.name for c in result.converted} == {"NormMixin", "Block", "Head", "Model"}
    mixin = _class(code, "NormMixin")
    assert mixin.startswith("nnx.Module):")
    assert '"""Helpers that every block of the model shares."""' in mixin
    assert "def normalize(self, x):" in mixin and "return nnx.gelu(x)" in mixin
    assert "eps: float" not in mixin and "@nn.nowrap" not in mixin
    # The subclass takes the inherited field first, in Linen's dataclass order.
    assert "class Block(NormMixin):" in code
    assert re.search(r"def __init__\(\s*self,\s*eps: float = 1e-6,\s*features: int = 8,", code)
    assert "self.eps = eps" in _class(code, "Head")
    assert "nn.Module" not in code and "import flax.linen" not in code
    assert ruff(code, tmp_path) == ""
    mod = load(code, tmp_path, "mixin_nnx")
    assert mod.Head(eps=1e-3, in_features=6, rngs=nnx.Rngs(0)).eps == 1e-3


def test_a_mixin_that_a_linen_class_still_uses_keeps_its_subclasses_linen():
    source = MIXIN + (
        "\n\nclass Unused(NormMixin):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return self.normalize(x)\n"
    )
    result = _convert(source, "Model()(jnp.ones((2, 4)))")
    reasons = {k.name: k.reason for k in result.kept}
    assert reasons == {
        "Block": "its base NormMixin is also the base of Unused, which stays Linen",
        "Head": "its base NormMixin is also the base of Unused, which stays Linen",
    }
    assert "class NormMixin(nn.Module):" in result.code  # kept as written
    assert "# TODO(linnx convert): Block stays Linen" in result.code


def test_a_base_that_builds_submodules_is_no_mixin():
    source = HEAD + (
        "class Base(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return nn.Dense(3)(x)\n\n\n"
        "class Derived(Base):\n"
        "    pass\n\n\n"
        "class Model(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return Derived()(nn.Dense(4)(x))\n"
    )
    result = _convert(source, "Model()(jnp.ones((2, 4)))")
    (kept,) = result.kept
    assert kept.name == "Derived"
    assert kept.reason.startswith("its base Base builds submodules (__call__)")


# -- @nn.nowrap factory helpers -----------------------------------------------------------------

HELPERS = '''\
import flax.linen as nn



class Tower(nn.Module):
    width: int = 8

    def setup(self):
        self.inp = self._dense(self.width)
        self.out = self._dense(2, bias=False)

    @nn.nowrap
    def _dense(self, features, bias=True):
        """A Dense with this tower's settings."""
        return nn.Dense(features, use_bias=bias)

    def __call__(self, x):
        return self.out(nn.relu(self.inp(x)))


class Stack(nn.Module):
    hidden: int = 8

    @nn.nowrap
    def _proj(self, features: int):
        return nn.Dense(features, use_bias=False)

    @nn.compact
    def __call__(self, x):
        x = nn.relu(self._proj(self.hidden)(x))
        return self._proj(2)(x) + Tower(name="tower")(x)
'''


def test_nowrap_factory_helpers_are_written_in_place(tmp_path):
    result = _convert(HELPERS, "Stack()(jnp.ones((2, 4)))")
    code = result.code
    assert "_dense" not in code and "_proj" not in code  # the helpers went with their use
    assert "self.inp = nnx.Linear(in_features, self.width, use_bias=True, rngs=rngs)" in code
    assert "self.out = nnx.Linear(self.width, 2, use_bias=False, rngs=rngs)" in code
    assert "self.linear1 = nnx.Linear(in_features, self.hidden, use_bias=False, rngs=rngs)" in code
    assert "self.linear2 = nnx.Linear(self.hidden, 2, use_bias=False, rngs=rngs)" in code
    assert result.path_map["tower/out/kernel"] == "tower/out/kernel"
    assert "tower/out/bias" not in result.path_map
    assert ruff(code, tmp_path) == ""


def test_a_helper_that_does_more_than_build_one_layer_is_wrapped():
    source = HEAD + (
        "class Odd(nn.Module):\n"
        "    def _dense(self, features):\n"
        "        features = features * 2\n"
        "        return nn.Dense(features)\n\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return self._dense(2)(x)\n\n\n"
        "class Model(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return Odd()(x)\n"
    )
    result = _convert(source, "Model()(jnp.ones((2, 4)))")
    (kept,) = result.kept
    assert (kept.name, kept.line) == ("Odd", 12)
    assert kept.reason == (
        "the submodule is built by the helper self._dense(), which does more than return one "
        "construction"
    )


# -- submodules made in one branch ------------------------------------------------------------

BRANCHES = """\
import flax.linen as nn



class Proj(nn.Module):
    use_proj: bool = True

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(4)(x)
        if self.use_proj:
            x = nn.Dense(4, name="proj")(x)
        return x


class Noisy(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(4)(x)
        if train:
            x = nn.Dropout(0.5, deterministic=False)(x)
        return x


class Shortcut(nn.Module):
    features: int = 8

    @nn.compact
    def __call__(self, x):
        y = nn.relu(nn.Dense(self.features)(x))
        if x.shape[0] > 1:  # on the batch size: the call keeps the test
            y = nn.LayerNorm()(y)
        if x.shape[-1] != self.features:
            x = nn.Dense(self.features, name="shortcut")(x)
        return x + y
"""


def test_a_branch_on_a_field_that_no_example_took_converts_from_the_source(tmp_path):
    result = _convert(BRANCHES, "Proj(use_proj=False)(jnp.ones((2, 3)))")
    proj = _class(result.code, "Proj")
    assert "        if self.use_proj:\n            self.proj = nnx.Linear(4, 4, rngs=rngs)" in proj
    assert "        if self.use_proj:\n            x = self.proj(x)" in proj
    assert "proj/kernel" not in result.path_map
    # The branch the example did not take runs like Linen's too.
    mod, linen_mod = load(result.code, tmp_path, "proj_nnx"), load(BRANCHES, tmp_path, "proj")
    x = jnp.linspace(-1, 1, 6).reshape(2, 3)
    linen = linen_mod.Proj(use_proj=True)
    variables = linen.init(jax.random.key(0), x)
    model = mod.Proj(use_proj=True, rngs=nnx.Rngs(0))
    rename = {
        "Dense_0/kernel": "linear/kernel",
        "Dense_0/bias": "linear/bias",
        "proj/kernel": "proj/kernel",
        "proj/bias": "proj/bias",
    }
    model = migrate.linen_to_nnx(variables, model, migrate.match(linen, model, x, rename=rename))
    np.testing.assert_allclose(model(x), linen.apply(variables, x), rtol=1e-6)


def test_a_branch_on_a_call_argument_builds_its_layer_in_init():
    result = _convert(BRANCHES, "Noisy()(jnp.ones((2, 3)), train=False)")
    noisy = _class(result.code, "Noisy")
    assert "self.dropout = nnx.Dropout(0.5, deterministic=False, rngs=rngs)" in noisy
    assert "    def __call__(self, x, train: bool = False):" in noisy
    assert "        if train:\n            x = self.dropout(x)" in noisy


def test_branches_on_the_input_shape_keep_their_tests(tmp_path):
    result = _convert(BRANCHES, "Shortcut()(jnp.ones((2, 3)))")
    code = _class(result.code, "Shortcut")
    # On the feature size: mirrored in __init__ as a test of the input size.
    assert (
        "        if in_features != self.features:\n            self.shortcut = nnx.Linear(" in code
    )
    # On the batch size: __init__ cannot know it; the layer is built, the call tests.
    assert "        self.layer_norm = nnx.LayerNorm(self.features, rngs=rngs)\n" in code
    assert "        if x.shape[0] > 1:  # on the batch size: the call keeps the test\n" in code
    assert ruff(result.code, tmp_path) == ""


def test_a_layer_with_weights_in_an_untaken_call_branch_is_wrapped():
    source = HEAD + (
        "class Gate(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x, train: bool = False):\n"
        "        x = nn.Dense(3)(x)\n"
        "        if train:\n"
        "            x = x + nn.Dense(x.shape[-1])(x)\n"
        "        return x\n\n\n"
        "class Model(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x, train: bool = False):\n"
        "        return Gate()(x, train=train)\n"
    )
    result = _convert(source, "Model()(jnp.ones((2, 4)), train=False)")
    (kept,) = result.kept
    assert (kept.name, kept.line) == ("Gate", 10)
    assert "no example took" in kept.reason and "add an --example that takes it" in kept.reason
    # Run where the branch is taken, it converts.
    result = _convert(source, "Model()(jnp.ones((2, 4)), train=True)")
    assert result.kept == []


def test_a_user_module_no_example_reached_is_wrapped():
    source = HEAD + (
        "class Inner(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return nn.Dense(3)(x)\n\n\n"
        "class Outer(nn.Module):\n"
        "    extra: bool = False\n\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        if self.extra:\n"
        "            x = Inner()(x)\n"
        "        return nn.Dense(3)(x)\n\n\n"
        "class Model(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return Outer()(nn.Dense(3)(x))\n"
    )
    result = _convert(source, "Model()(jnp.ones((2, 4)))")
    (kept,) = result.kept
    assert kept.name == "Outer" and kept.line == 17
    assert kept.reason == (
        "Inner() (line 17) builds a Inner that no example reached (e.g. a branch the examples "
        "did not take); add an --example that runs it"
    )


# -- shared submodules ------------------------------------------------------------------------

SHARED = (
    HEAD
    + """\
class Twice(nn.Module):
    @nn.compact
    def __call__(self, x):
        dense = nn.Dense(x.shape[-1])
        return dense(nn.relu(dense(x)))


class Codec(nn.Module):
    def setup(self):
        self.proj = nn.Dense(6)
        self.mix = nn.Dense(6)

    def encode(self, x):
        return self.proj(x)

    def decode(self, z):
        return self.proj(self.mix(z))

    def __call__(self, x):
        return self.decode(self.encode(x))


class Model(nn.Module):
    def setup(self):
        self.block = Twice()
        self.codec = Codec()

    def __call__(self, x):
        return self.codec(self.block(self.block(x)))
"""
)


def test_shared_submodules_stay_one_module():
    result = _convert(SHARED, "Model()(jnp.ones((2, 6)))")
    code = result.code
    assert "self.dense = nnx.Linear(in_features, in_features, rngs=rngs)" in _class(code, "Twice")
    assert _class(code, "Twice").count("nnx.Linear(") == 1
    assert "return self.proj(self.mix(z))" in _class(code, "Codec")
    assert "return self.codec(self.block(self.block(x)))" in code
    # One weight per Linen weight: the second calls reuse them.
    assert sorted(result.path_map.values()) == [
        "block/dense/bias",
        "block/dense/kernel",
        "codec/mix/bias",
        "codec/mix/kernel",
        "codec/proj/bias",
        "codec/proj/kernel",
    ]
