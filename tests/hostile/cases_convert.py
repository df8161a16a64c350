"""Hostile inputs to the converter: broken sources, bad examples, layers without a rule, an
output path that is the source itself. Every one must leave no file behind."""

from __future__ import annotations

from linnx import convert

from ._harness import Table

table = Table("convert")
case = table.case

GOOD = """\
import flax.linen as nn


class MLP(nn.Module):
    hidden: int = 4

    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.relu(nn.Dense(self.hidden)(x)))
"""

EXAMPLE = "MLP()(jnp.ones((1, 3)))"


def _files(env, source: str, name: str = "model.py"):
    src = env.tmp / name
    src.write_text(source)
    dst = env.tmp / "model_nnx.py"
    return src, dst, convert.paths_file(dst)


def _convert(env, source: str, examples, **kw):
    src, dst, paths = _files(env, source)
    return (lambda: convert.convert_file(src, dst, examples=examples, **kw)), src, dst, paths


@case(
    "source-does-not-parse",
    convert.SourceSyntaxError,
    r"model\.py:8: the source does not "
    r"parse",
    r"correct the syntax",
)
def _(env):
    return _convert(env, GOOD.replace("def __call__(self, x):", "def __call__(self, x)"), [EXAMPLE])


@case(
    "source-raises-when-run",
    convert.ConvertError,
    r"model\.py:3: running the source raised "
    r"ZeroDivisionError",
    r"must import and run on its own",
)
def _(env):
    return _convert(env, "import flax.linen as nn\n\nSCALE = 1 / 0\n", [EXAMPLE])


@case(
    "source-file-missing",
    convert.ConvertError,
    r"missing\.py: cannot read the source",
    r"pass an existing file",
)
def _(env):
    dst = env.tmp / "out.py"
    return (lambda: convert.convert_file(env.tmp / "missing.py", dst, examples=[EXAMPLE])), dst


@case(
    "output-is-the-source",
    convert.OutputPathError,
    r"-o .*model\.py is the source file",
    r"write the NNX module to a new file",
)
def _(env):
    src, _, paths = _files(env, GOOD)
    return (lambda: convert.convert_file(src, src, examples=[EXAMPLE])), src, paths


@case(
    "output-is-the-source-by-another-path",
    convert.OutputPathError,
    r"is the source file itself",
    r"model_nnx\.py",
)
def _(env):
    src, _, _ = _files(env, GOOD)
    other = env.tmp / "." / "sub" / ".." / "model.py"
    (env.tmp / "sub").mkdir()
    return (lambda: convert.convert_file(src, other, examples=[EXAMPLE])), src


@case("no-examples", convert.ExampleError, r"examples=\[\]", r"examples=\['CNN\(\)")
def _(env):
    return _convert(env, GOOD, [])


@case(
    "examples-is-a-string",
    convert.ExampleError,
    r"examples='MLP\(\)",
    r"non-empty list of call expressions",
)
def _(env):
    return _convert(env, GOOD, EXAMPLE)


@case(
    "example-does-not-parse",
    convert.ExampleError,
    r"--example 'MLP\(\)\(' does not parse",
    r"write a construction followed by a call",
)
def _(env):
    return _convert(env, GOOD, ["MLP()("])


@case(
    "example-is-not-a-call",
    convert.ExampleError,
    r"--example 'MLP' is not a call",
    r"write a construction followed by a call",
)
def _(env):
    return _convert(env, GOOD, ["MLP"])


@case(
    "example-calls-a-function",
    convert.ExampleError,
    r"called object is not a module "
    r"construction",
    r"write a construction followed by a call",
)
def _(env):
    return _convert(env, GOOD, ["jnp.ones((1, 3))"])


@case(
    "example-unknown-name",
    convert.ExampleError,
    r"evaluating the construction 'Mlp\(\)' "
    r"raised NameError",
    r"check the names and arguments",
)
def _(env):
    return _convert(env, GOOD, ["Mlp()(jnp.ones((1, 3)))"])


@case(
    "example-builds-no-module",
    convert.ExampleError,
    r"'dict\(\)' is a dict, not a Linen "
    r"module",
    r"construct one of the source's nn\.Module classes",
)
def _(env):
    return _convert(env, GOOD, ["dict()(1)"])


@case(
    "example-wrong-input-shape",
    convert.ExampleError,
    r"--example 'MLP\(\)\(jnp\.ones\(\(3,"
    r"\)\)\)\)'|the model raised",
    r"pass inputs of the shapes and dtypes",
)
def _(env):
    return _convert(env, GOOD, ["MLP()(jnp.ones((2, 3)), jnp.ones((4,)))"])


@case(
    "example-star-args",
    convert.ExampleError,
    r"\*args and \*\*kwargs are not supported",
    r"write each argument",
)
def _(env):
    return _convert(env, GOOD, ["MLP()(*[jnp.ones((1, 3))])"])


@case(
    "example-unknown-method",
    convert.ExampleError,
    r"MLP has no public method 'encode'",
    r"call the module itself \(MLP\(\)\(x\)\) or one of its methods",
)
def _(env):
    return _convert(env, GOOD, ["MLP().encode(jnp.ones((1, 3)))"])


@case(
    "example-calls-linen-api",
    convert.ExampleError,
    r"MLP has no public method 'apply'",
    r"call the module itself",
)
def _(env):
    return _convert(env, GOOD, ["MLP().apply({}, jnp.ones((1, 3)))"])


@case(
    "method-example-leaves-a-submodule-unreached",
    convert.ConvertError,
    r"model\.py:7: .*self\.encoder \(nn\.Dense\) is not called by any example",
    r"add an example that reaches it",
)
def _(env):
    source = (
        "import flax.linen as nn\n\n\n"
        "class AE(nn.Module):\n"
        "    def setup(self):\n"
        "        self.decoder = nn.Dense(3)\n"
        "        self.encoder = nn.Dense(2)\n\n"
        "    def decode(self, z):\n"
        "        return self.decoder(z)\n\n"
        "    def __call__(self, x):\n"
        "        return self.decode(self.encoder(x))\n"
    )
    return _convert(env, source, ["AE().decode(jnp.ones((1, 2)))"])


@case(
    "layer-without-rule",
    convert.UnknownLayerError,
    r"model\.py:8: linen_zoo\.ResBlock has "
    r"no conversion rule",
    r"convert that file first, or pass --wrap-unknown",
)
def _(env):
    source = (
        "import flax.linen as nn\nfrom linen_zoo import ResBlock\n\n\n"
        "class Net(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return ResBlock(4)(x, train=False)\n"
    )
    return _convert(env, source, ["Net()(jnp.ones((1, 8, 8, 3)))"])


@case(
    "root-class-cannot-convert",
    convert.ConvertError,
    r"model\.py:\d+: the example's model "
    r"class Scan cannot be converted: .*(not converted yet|no conversion rule)",
    r"rewrite that part of Scan",
)
def _(env):
    source = (
        "import flax.linen as nn\n\n\n"
        "class Cell(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, c, x):\n"
        "        return c, nn.Dense(3)(x)\n\n\n"
        "class Scan(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        scan = nn.scan(Cell, variable_broadcast='params', split_rngs={'params': False},"
        " in_axes=1, out_axes=1, variable_carry='counter')\n"
        "        return scan()(x[:, 0], x)[1]\n"
    )
    return _convert(env, source, ["Scan()(jnp.ones((2, 5, 3)))"])


def _scanned(options: str, block: str = "x + nn.Dense(4)(x)") -> str:
    return (
        "import flax.linen as nn\n\n\n"
        "class Block(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x, _):\n"
        f"        return {block}, None\n\n\n"
        "class Stack(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x, xs):\n"
        f"        return nn.scan(Block, {options})()(x, xs)[0]\n"
    )


@case(
    "scan-length-undetermined",
    convert.ConvertError,
    r"model\.py:\d+: the example's model class Stack cannot be converted: nn\.scan without "
    r"length= over a module with no stacked variables: the number of layers cannot be determined",
    r"pass length= to nn\.scan",
)
def _(env):
    # The layers are counted from xs at run time; nothing in __init__ can tell how many.
    source = _scanned("variable_axes={'params': 0}, split_rngs={'params': True}", "x * 2")
    return _convert(env, source, ["Stack()(jnp.ones((2, 4)), jnp.ones((3, 2)))"])


@case(
    "scan-stacked-on-axis-1",
    convert.ConvertError,
    r"model\.py:\d+: .*class Stack cannot be converted: nn\.scan\(variable_axes=\{'params': 1\}\): "
    r"stacking on an axis other than 0 is not converted yet",
    r"rewrite that part of Stack",
)
def _(env):
    source = _scanned("variable_axes={'params': 1}, split_rngs={'params': True}, length=3")
    return _convert(env, source, ["Stack()(jnp.ones((2, 4)), None)"])


@case(
    "example-root-is-a-flax-layer-without-a-rule",
    convert.ConvertError,
    r"the model is flax\.linen\.combinators\.Sequential, neither a class of .*model\.py nor "
    r"a Flax layer of the layer table",
    r"construct one of the file's nn\.Module classes",
)
def _(env):
    return _convert(env, GOOD, ["nn.Sequential([nn.Dense(3)])(jnp.ones((1, 2)))"])


@case(
    "example-root-layer-argument-without-nnx-counterpart",
    convert.ConvertError,
    r"nn\.Dense\(dot_general_cls=\.\.\.\) has no nnx\.Linear argument",
    r"leave dot_general_cls= out of the example's construction",
)
def _(env):
    return _convert(env, GOOD, ["nn.Dense(3, dot_general_cls=None)(jnp.ones((1, 2)))"])


@case(
    "example-class-call-site-creates-incompatible-classes",
    convert.ConvertError,
    r"model\.py:23: the example's model class Net cannot be converted: this call creates "
    r"modules of several classes \(A, B\) that one NNX call cannot build: A takes the size "
    r"arguments \['in_features'\], B \['in_features', 'h_shape'\]",
    r"rewrite that part of Net",
)
def _(env):
    source = (
        "from typing import Any\n\nimport flax.linen as nn\n\n\n"
        "class A(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return nn.Dense(2)(x)\n\n\n"
        "class B(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return nn.Dense(2)(x) + self.param('h', nn.initializers.zeros, (x.shape[0], 2))\n"
        "\n\nclass Net(nn.Module):\n"
        "    block_cls: Any = A\n\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return self.block_cls()(x)\n"
    )
    return _convert(env, source, ["Net()(jnp.ones((1, 3)))", "Net(block_cls=B)(jnp.ones((1, 3)))"])


@case(
    "submodule-in-a-branch-no-example-took",
    convert.ConvertError,
    r"model\.py:16: the example's model class Net cannot be converted: Inner\(\) \(line 16\) "
    r"builds a Inner that no example reached",
    r"add an --example that runs it",
)
def _(env):
    source = (
        "import flax.linen as nn\n\n\n"
        "class Inner(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return nn.Dense(3)(x)\n\n\n"
        "class Net(nn.Module):\n"
        "    deep: bool = False\n\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        if self.deep:\n"
        "            x = Inner()(x)\n"
        "        return nn.Dense(2)(x)\n"
    )
    return _convert(env, source, ["Net()(jnp.ones((1, 3)))"])


@case(
    "param-with-axes-on-another-module",
    convert.ConvertError,
    r"model\.py:\d+: the example's model class Net cannot be converted: "
    r"param_with_axes\(\.\.\., module=self\) is not converted",
    r"rewrite that part of Net",
)
def _(env):
    source = (
        "import flax.linen as nn\n"
        "from flax.linen.partitioning import param_with_axes\n\n\n"
        "class Net(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        w = param_with_axes('w', nn.initializers.ones, (3,), axes=('embed',), "
        "module=self)\n"
        "        return x * w\n"
    )
    return _convert(env, source, ["Net()(jnp.ones((1, 3)))"])


@case(
    "base-class-is-no-mixin",
    convert.ConvertError,
    r"model\.py:\d+: the example's model class Net cannot be converted: its base Base builds "
    r"submodules \(__call__\)",
    r"rewrite that part of Net",
)
def _(env):
    source = (
        "import flax.linen as nn\n\n\n"
        "class Base(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return nn.Dense(3)(x)\n\n\n"
        "class Net(Base):\n"
        "    def extra(self, x):\n"
        "        return x\n"
    )
    return _convert(env, source, ["Net()(jnp.ones((1, 3)))"])


def _report_result(src):
    """A conversion result of GOOD (built directly: these cases are about the report path)."""
    return convert.ConversionResult(
        code=GOOD, path_map={}, converted=[], kept=[], path=str(src), source=GOOD
    )


@case(
    "html-report-is-the-source",
    convert.OutputPathError,
    r"--html .*model\.py is .*model"
    r"\.py, a file the conversion reads",
    r"write the report to its own file",
)
def _(env):
    src, _, _ = _files(env, GOOD)
    return (lambda: convert.write_html(_report_result(src), src)), src


@case(
    "html-report-directory-missing",
    convert.ConvertError,
    r"--html .*nowhere/r\.html: "
    r"cannot write the report",
    r"existing, writable directory",
)
def _(env):
    src, _, _ = _files(env, GOOD)
    report = env.tmp / "nowhere" / "r.html"
    return (lambda: convert.write_html(_report_result(src), report)), src, env.tmp


# -- recurrent layers (convert/_rnn.py): what NNX cannot hold is refused with the reason --------


@case(
    "rnn-root-gru-cell",
    convert.ConvertError,
    r"model\.py:7: the example's model class Net cannot be converted: nn\.GRUCell: "
    r"nnx\.GRUCell has no bias on the recurrent candidate term",
    r"rewrite that part of Net",
)
def _(env):
    source = (
        "import flax.linen as nn\n\n\n"
        "class Net(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return nn.RNN(nn.GRUCell(4))(x)\n"
    )
    return _convert(env, source, ["Net()(jnp.ones((2, 5, 3)))"])


@case(
    "rnn-scan-of-a-cell-over-the-feature-axis",
    convert.ConvertError,
    r"model\.py:\d+: the example's model class Net cannot be converted: nn\.scan of a cell "
    r"over time with in_axes=2, out_axes=2",
    r"rewrite that part of Net",
)
def _(env):
    source = (
        "import functools\n\nimport flax.linen as nn\n\n\n"
        "class Net(nn.Module):\n"
        "    @functools.partial(nn.scan, variable_broadcast='params', in_axes=2, out_axes=2,\n"
        "                       split_rngs={'params': False})\n"
        "    @nn.compact\n"
        "    def __call__(self, c, x):\n"
        "        return nn.SimpleCell(3)(c, x)\n"
    )
    return _convert(env, source, ["Net()(jnp.zeros((2, 3)), jnp.ones((2, 4, 5)))"])


@case(
    "rnn-initialize-carry-by-keyword",
    convert.ConvertError,
    r"model\.py:9: the example's model class Net cannot be converted: "
    r"cell\.initialize_carry\(\.\.\.\) other than \(key, shape\)",
    r"rewrite that part of Net",
)
def _(env):
    source = (
        "import flax.linen as nn\nimport jax\n\n\n"
        "class Net(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        cell = nn.LSTMCell(4)\n"
        "        c = cell.initialize_carry(jax.random.key(0), input_shape=x[:, 0].shape)\n"
        "        for t in range(x.shape[1]):\n"
        "            c, y = cell(c, x[:, t])\n"
        "        return y\n"
    )
    return _convert(env, source, ["Net()(jnp.ones((2, 5, 3)))"])


@case(
    "root-class-asks-for-a-cache-it-never-creates",
    convert.ConvertError,
    r"model\.py:\d+: the example's model class Decoder cannot be converted: "
    r"self\.has_variable\('cache', 'cached_key'\): this class creates no such cache variable",
    r"rewrite that part of Decoder",
)
def _(env):
    source = (
        "import flax.linen as nn\n\n\n"
        "class Decoder(nn.Module):\n"
        "    decode: bool = False\n\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        if self.decode and self.has_variable('cache', 'cached_key'):\n"
        "            x = x * 2\n"
        "        return nn.Dense(3)(x)\n"
    )
    return _convert(env, source, ["Decoder()(jnp.ones((1, 4)))"])


CASES = table.cases
