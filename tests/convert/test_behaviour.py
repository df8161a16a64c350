"""What the converter does with particular code: kept text, wrapped classes, names, sizes."""

from __future__ import annotations

import pytest

from linnx import convert

from ._util import ruff

HEAD = "import flax.linen as nn\nimport jax.numpy as jnp\n\n\n"


def test_unreached_code_and_comments_are_kept_as_written():
    source = HEAD + (
        "# A constant the model reads.\n"
        "SCALE  =  2.0   # odd spacing survives\n\n\n"
        "class Unused(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return nn.Dense(3)(x)   # never reached: stays Linen, byte for byte\n\n\n"
        "class Net(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        # scale first\n"
        "        x = x * SCALE\n"
        "        return nn.Dense(2)(x)  # the head\n"
    )
    result = convert.convert_source(source, ["Net()(jnp.ones((1, 4)))"])
    assert result.ok, result.report()
    assert "SCALE  =  2.0   # odd spacing survives" in result.code
    unused = source.split("class Unused")[1].split("class Net")[0]
    assert "class Unused" + unused in result.code
    assert "        # scale first\n        x = x * SCALE\n" in result.code
    assert "return self.linear(x)  # the head" in result.code
    assert "import flax.linen as nn" in result.code  # Unused still needs it


def test_a_class_that_cannot_convert_is_wrapped_with_a_todo(tmp_path):
    source = HEAD + (
        "class Branchy(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        while x.shape[-1] < 8:  # submodules made until the input is wide enough\n"
        "            x = nn.Dense(2 * x.shape[-1])(x)\n"
        "        return x\n\n\n"
        "class Net(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        x = nn.Dense(4)(x)\n"
        "        return Branchy(name='branchy')(x)\n"
    )
    result = convert.convert_source(source, ["Net()(jnp.ones((2, 3)))"])
    assert result.ok, result.report()
    assert [(k.name, k.line) for k in result.kept] == [("Branchy", 8)]
    assert "a submodule is created inside a while statement" in result.kept[0].reason
    assert "# TODO(linnx convert): Branchy stays Linen" in result.code
    assert "linnx.ToNNX(Branchy(), rngs=rngs).lazy_init(" in result.code
    assert "class Branchy(nn.Module):" in result.code
    assert result.path_map["branchy/Dense_0/kernel"] == "branchy/Dense_0/kernel"
    assert "kept as Linen, used through linnx.ToNNX (1):" in result.report()
    assert ruff(result.code, tmp_path) == ""


def test_unknown_layers_raise_unless_wrapped():
    source = HEAD + (
        "from linen_zoo import AutoEncoder\n\n\n"
        "class Net(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return AutoEncoder()(x)\n"
    )
    example = ["Net()(jnp.ones((2, 16)))"]
    with pytest.raises(convert.UnknownLayerError, match=r"<source>:\d+: linen_zoo\.AutoEncoder"):
        convert.convert_source(source, example)
    with pytest.raises(convert.ConvertError, match="the example's model class Net cannot be"):
        convert.convert_source(source, example, wrap_unknown=True)


def test_attribute_names_avoid_fields_and_methods():
    source = HEAD + (
        "class Net(nn.Module):\n"
        "    linear: int = 3\n\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return self.dropout(nn.Dense(self.linear)(x))\n\n"
        "    def dropout(self, x):\n"
        "        return x\n"
    )
    result = convert.convert_source(source, ["Net()(jnp.ones((1, 2)))"])
    assert result.ok, result.report()
    assert "self.linear_2 = nnx.Linear(in_features, self.linear, rngs=rngs)" in result.code
    assert "return self.dropout(self.linear_2(x))" in result.code


def test_sizes_follow_the_data_through_layers_and_loops():
    source = HEAD + (
        "class Tower(nn.Module):\n"
        "    widths: tuple = (8, 16, 4)\n\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        x = nn.LayerNorm()(x)\n"
        "        for w in self.widths:\n"
        "            x = nn.relu(nn.Dense(w)(x))\n"
        "        return nn.Dense(x.shape[-1] * 2)(x)\n"
    )
    result = convert.convert_source(source, ["Tower()(jnp.ones((2, 5)))"])
    assert result.ok, result.report()
    code = result.code
    assert "self.layer_norm = nnx.LayerNorm(in_features, rngs=rngs)" in code
    assert "x_features = in_features" in code
    assert "self.linears.append(nnx.Linear(x_features, w, rngs=rngs))" in code
    assert "x_features = w" in code
    assert "self.linear = nnx.Linear(x_features, x_features * 2, rngs=rngs)" in code
    assert "x = nnx.relu(self.linears[" not in code  # the loop is over values, not range()
    assert "linears_iter = iter(self.linears)" in code
    assert [c.size_args for c in result.converted] == [("in_features",)]


def test_setup_classes_keep_signatures_on_request():
    source = HEAD + (
        "class Net(nn.Module):\n"
        "    def setup(self):\n"
        "        self.dense = nn.Dense(4)\n"
        "        self.drop = nn.Dropout(0.5)\n\n"
        "    def __call__(self, x, train: bool):\n"
        "        return self.drop(self.dense(x), deterministic=not train)\n"
    )
    example = ["Net()(jnp.ones((1, 3)), train=False)"]
    idiomatic = convert.convert_source(source, example)
    assert idiomatic.ok, idiomatic.report()
    assert "def __call__(self, x):\n        return self.drop(self.dense(x))" in idiomatic.code
    kept = convert.convert_source(source, example, keep_signatures=True)
    assert kept.ok, kept.report()
    assert "return self.drop(self.dense(x), deterministic=not train)" in kept.code


def test_custom_collections_become_variable_types(tmp_path):
    source = HEAD + (
        "class Counter(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        n = self.variable('counter', 'calls', lambda: jnp.zeros((), jnp.int32))\n"
        "        n.value += 1\n"
        "        return nn.Dense(2)(x)\n"
    )
    result = convert.convert_source(source, ["Counter()(jnp.ones((1, 3)))"])
    assert result.ok, result.report()
    # The class name is taken by the model: the variable type gets another one.
    assert "class Counter_2(nnx.Variable):" in result.code
    assert "self.calls = Counter_2(jnp.zeros((), jnp.int32))" in result.code
    assert "n = self.calls\n" in result.code
    assert result.path_map["calls"] == "calls"
    assert ruff(result.code, tmp_path) == ""


def test_a_submodule_made_in_one_statement_and_called_twice_is_one_attribute(tmp_path):
    source = "import flax.linen as nn\n\n\n" + (
        "class Tied(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x, train: bool = False):\n"
        "        proj = nn.Dense(x.shape[-1])\n"
        "        drop = nn.Dropout(0.1)\n"
        "        y = drop(proj(x), deterministic=not train)\n"
        "        return proj(y)  # the same layer again: shared weights\n"
    )
    result = convert.convert_source(source, ["Tied()(jnp.ones((2, 3)), train=False)"])
    assert result.ok, result.report()
    assert "self.proj = nnx.Linear(in_features, in_features, rngs=rngs)" in result.code
    assert "proj = self.proj\n" in result.code
    assert "y = drop(proj(x))\n" in result.code
    assert "def __call__(self, x):" in result.code
    assert result.path_map == {"Dense_0/bias": "proj/bias", "Dense_0/kernel": "proj/kernel"}
    assert ruff(result.code, tmp_path) == ""


POSITIONAL = {
    # big_vision's style: the train/eval flag passed positionally to the layer's call
    "compact": (
        "class Net(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x, train: bool = False):\n"
        "        x = nn.BatchNorm(momentum=0.9)(nn.Dense(4)(x), not train)\n"
        "        return nn.Dropout(0.5)(nn.Dropout(0.1)(x, True), not train)\n",
        "return self.dropout1(self.dropout2(x, deterministic=True))",
    ),
    "setup": (
        "class Net(nn.Module):\n"
        "    def setup(self):\n"
        "        self.dense = nn.Dense(4)\n"
        "        self.drop = nn.Dropout(0.5)\n\n"
        "    def __call__(self, x, train: bool):\n"
        "        return self.drop(self.dense(x), not train)\n",
        "return self.drop(self.dense(x))",
    ),
}


@pytest.mark.parametrize("style", sorted(POSITIONAL))
def test_a_train_flag_passed_positionally_is_a_mode_switch(style):
    body, call = POSITIONAL[style]
    example = ["Net()(jnp.ones((2, 3)), train=False)"]
    result = convert.convert_source(HEAD + body, example)
    assert result.ok, result.report()
    assert "def __call__(self, x):" in result.code and call in result.code, result.code
    kept = convert.convert_source(HEAD + body, example, keep_signatures=True)
    assert kept.ok, kept.report()
    assert "deterministic=not train" in kept.code, kept.code


def test_a_child_output_size_reads_as_written():
    source = HEAD + (
        "class Block(nn.Module):\n"
        "    hidden: int\n\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return nn.Dense(2 * self.hidden)(x)\n\n\n"
        "class Net(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return nn.Dense(3)(Block(4)(x))\n"
    )
    result = convert.convert_source(source, ["Net()(jnp.ones((2, 5)))"])
    assert result.ok, result.report()
    # The field's value stands in the size as written (not `2 * (4)`).
    assert "nnx.Linear(2 * 4, 3, rngs=rngs)" in result.code, result.code


LOOPS = {
    "one list": (
        "x = nn.relu(nn.Dense(8)(x))",
        "for linear in self.linears:\n            x = nnx.relu(linear(x))\n",
    ),
    "two lists": (
        "x = nn.LayerNorm()(nn.relu(nn.Dense(8)(x)))",
        "for linear, layer_norm in zip(self.linears, self.layer_norms, strict=True):\n"
        "            x = layer_norm(nnx.relu(linear(x)))\n",
    ),
}


@pytest.mark.parametrize("case", sorted(LOOPS))
def test_a_range_loop_over_lists_of_layers_loops_over_the_lists(case):
    body, loop = LOOPS[case]
    source = HEAD + (
        "class MLP(nn.Module):\n"
        "    depth: int = 3\n\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        for _ in range(self.depth):\n"
        f"            {body}\n"
        "        return nn.Dense(2)(x)\n"
    )
    result = convert.convert_source(source, ["MLP()(jnp.ones((2, 5)))"])
    assert result.ok, result.report()
    assert f"        {loop}" in result.code and "[_]" not in result.code, result.code
