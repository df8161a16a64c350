"""Every Linen model of spec 003 (the migration guide) converts with one example, verifies,
and has the variable paths, shapes and layer types of the guide's own NNX version."""

from __future__ import annotations

import pytest
import spec003_linen
from flax import nnx

from linnx import convert
from tests.migrate import spec003_nnx

from ._util import load, ruff, section_source, structure

# section, example, guide NNX construction (built with rngs), renames guide -> converted
CASES = [
    (
        "basic",
        "Model(dmid=8, dout=4)(jnp.ones((2, 3)), training=False)",
        lambda ns: ns.Model(din=3, dmid=8, dout=4, rngs=nnx.Rngs(0)),
        {},
    ),
    (
        "collections",
        "Block(features=4)(jnp.ones((2, 3)), training=False)",
        lambda ns: ns.Block(in_features=3, out_features=4, rngs=nnx.Rngs(0)),
        # The guide renames setup()'s `dense` to `linear`; the converter keeps Linen's name.
        {"linear": "dense"},
    ),
    (
        "multiple_methods",
        "AutoEncoder(embed_dim=8, output_dim=5)(jnp.ones((2, 5)))",
        lambda ns: ns.AutoEncoder(in_dim=5, embed_dim=8, output_dim=5, rngs=nnx.Rngs(0)),
        {},
    ),
]


def _renamed(struct: dict, renames: dict[str, str]) -> dict:
    out = {}
    for path, v in struct.items():
        parts = [renames.get(p, p) for p in path.split("/")] if path else []
        out["/".join(parts)] = v
    return out


@pytest.mark.parametrize("section,example,guide,renames", CASES, ids=[c[0] for c in CASES])
def test_guide_model_converts_verifies_and_matches_the_guide(
    section, example, guide, renames, tmp_path
):
    source = section_source(getattr(spec003_linen, section))
    result = convert.convert_source(source, [example], path=f"{section}.py")
    assert result.ok, result.report()
    assert result.kept == []
    assert ruff(result.code, tmp_path) == ""
    mod = load(result.code, tmp_path, section)
    ctor = example.split(")(")[0] + ", rngs=nnx.Rngs(0))"
    converted = eval(ctor, {**vars(mod), "nnx": nnx})
    expected = guide(getattr(spec003_nnx, section)())
    assert structure(converted) == _renamed(structure(expected), renames)


def test_flags_become_train_and_eval_unless_signatures_are_kept(tmp_path):
    source = section_source(spec003_linen.basic)
    example = "Model(8, 4)(jnp.ones((2, 3)), False)"  # the flag given positionally
    idiomatic = convert.convert_source(source, [example])
    assert idiomatic.ok, idiomatic.report()
    assert "def __call__(self, x):" in idiomatic.code
    assert "training" not in idiomatic.code
    kept = convert.convert_source(source, [example], keep_signatures=True)
    assert kept.ok, kept.report()
    assert "def __call__(self, x, training: bool):" in kept.code
    assert "self.dropout(x, deterministic=not training)" in kept.code
    assert ruff(kept.code, tmp_path) == ""


def test_the_converted_model_trains_like_the_linen_one(tmp_path):
    """Weights moved by the path map give the same loss and gradients on both sides."""
    import jax
    import jax.numpy as jnp

    from linnx import migrate

    source = section_source(spec003_linen.collections)
    result = convert.convert_source(source, ["Block(4)(jnp.ones((2, 3)), training=False)"])
    mod = load(result.code, tmp_path, "train")
    linen_mod = load(source, tmp_path, "train_src")
    x = jnp.arange(6.0).reshape(2, 3)
    linen = linen_mod.Block(4)
    variables = linen.init(jax.random.key(1), x, training=False)
    model = mod.Block(4, rngs=nnx.Rngs(0))
    plan = migrate.match(linen, model, x, linen_kwargs={"training": False}, rename=result.path_map)
    model = migrate.linen_to_nnx(variables, model, plan)

    def linen_loss(params):
        out, _ = linen.apply(
            {**variables, "params": params}, x, training=True, mutable=["batch_stats", "counter"]
        )
        return (out**2).mean()

    model.train()
    loss_nnx = (nnx.clone(model)(x) ** 2).mean()
    grads = nnx.grad(lambda m: (m(x) ** 2).mean())(nnx.clone(model))
    assert jnp.allclose(linen_loss(variables["params"]), loss_nnx, atol=1e-6)
    g_linen = jax.grad(linen_loss)(variables["params"])
    g_nnx = grads["dense"]["kernel"]
    g_nnx = getattr(g_nnx, "value", g_nnx)
    assert jnp.allclose(g_linen["dense"]["kernel"], g_nnx, atol=1e-6)
