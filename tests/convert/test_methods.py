"""Examples that call another method than ``__call__`` (``VAE(...).generate(z)``) trace and
verify that method; every method of a converted class is converted."""

from __future__ import annotations

from pathlib import Path

import pytest
import spec003_linen
from flax import nnx

from linnx import convert
from tests.migrate import spec003_nnx

from ._util import load, ruff, section_source, structure

VAE = (Path(__file__).parent / "corpus" / "vae.py").read_text()


def test_the_guides_auto_encoder_converts_from_its_encode_and_decode(tmp_path):
    source = section_source(spec003_linen.multiple_methods)
    examples = [
        "AutoEncoder(embed_dim=8, output_dim=5).encode(jnp.ones((2, 5)))",
        "AutoEncoder(embed_dim=8, output_dim=5).decode(jnp.ones((2, 8)))",
    ]
    result = convert.convert_source(source, examples, path="multiple_methods.py")
    assert result.ok, result.report()
    assert result.kept == []
    assert ruff(result.code, tmp_path) == ""
    # each example moves (and checks) the weights of the layer its method reaches
    assert [(c.ok, c.weights) for c in result.checks] == [(True, 2), (True, 2)]
    assert result.path_map["encoder/kernel"] == "encoder/kernel"
    assert result.path_map["decoder/kernel"] == "decoder/kernel"
    mod = load(result.code, tmp_path, "mm")
    converted = mod.AutoEncoder(embed_dim=8, output_dim=5, rngs=nnx.Rngs(0))
    guide = spec003_nnx.multiple_methods().AutoEncoder(
        in_dim=5, embed_dim=8, output_dim=5, rngs=nnx.Rngs(0)
    )
    assert structure(converted) == structure(guide)
    assert "    def encode(self, x):\n        return self.encoder(x)\n" in result.code
    assert "    def decode(self, x):\n        return self.decoder(x)\n" in result.code


def test_a_method_example_verifies_next_to_the_call_example():
    examples = [
        "VAE(latents=8)(jnp.ones((2, 784)), jax.random.PRNGKey(0))",
        "VAE(latents=8).generate(jnp.ones((3, 8)))",
    ]
    result = convert.convert_source(VAE, examples, path="vae.py")
    assert result.ok, result.report()
    call, generate = result.checks
    assert call.weights == 10  # encoder: 3 Dense, decoder: 2 Dense
    assert generate.ok and generate.weights == 4  # generate reaches the decoder only
    assert "example VAE(latents=8).generate(jnp.ones((3, 8)))" in result.report()
    assert "return nnx.sigmoid(self.decoder(z))" in result.code


def test_a_submodule_no_example_reaches_is_an_error_not_a_linen_leftover():
    with pytest.raises(
        convert.ConvertError,
        match=(
            r"vae\.py:47: .*self\.encoder \(Encoder\) is not called by any example; add an "
            r"example that reaches it"
        ),
    ):
        convert.convert_source(VAE, ["VAE(latents=8).generate(jnp.ones((3, 8)))"], path="vae.py")


@pytest.mark.parametrize("method", ["nope", "setup", "_private", "init"])
def test_an_example_calling_no_public_method_is_an_example_error(method):
    with pytest.raises(
        convert.ExampleError,
        match=(
            rf"VAE\(latents=8\)\.{method}\(jnp.ones\(\(3, 8\)\)\)'?: VAE has no public method "
            rf"'{method}'.\nFix: call the module itself"
        ),
    ):
        convert.convert_source(VAE, [f"VAE(latents=8).{method}(jnp.ones((3, 8)))"])
