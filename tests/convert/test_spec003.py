"""Every Linen model of spec 003 (the migration guide) converts with one example, verifies,
and has the variable paths, shapes and layer types of the guide's own NNX version: Block/Model,
the counter/BatchNorm block, the multi-method auto-encoder, and the TrainState example (whose
model is a bare `nn.Dense`). Where names differ from the guide's, GUIDE_NAMES says which and
why."""

from __future__ import annotations

import inspect

import pytest
import spec003_linen
from flax import nnx

from linnx import convert
from tests.migrate import spec003_nnx

from ._util import load, ruff, section_source, structure

# section, example, the guide's NNX construction (built with rngs)
CASES = [
    (
        "basic",
        "Model(dmid=8, dout=4)(jnp.ones((2, 3)), training=False)",
        lambda ns: ns.Model(din=3, dmid=8, dout=4, rngs=nnx.Rngs(0)),
    ),
    (
        "collections",
        "Block(features=4)(jnp.ones((2, 3)), training=False)",
        lambda ns: ns.Block(in_features=3, out_features=4, rngs=nnx.Rngs(0)),
    ),
    (
        "multiple_methods",
        "AutoEncoder(embed_dim=8, output_dim=5)(jnp.ones((2, 5)))",
        lambda ns: ns.AutoEncoder(in_dim=5, embed_dim=8, output_dim=5, rngs=nnx.Rngs(0)),
    ),
]

# The names of the guide's NNX versions that do not follow from the Linen code, by section:
# (class, name in the guide) -> name in the converted code. Everything else is equal: the
# classes and their names, every method and its parameters, the constructor's other
# parameters, and the variable paths, shapes, variable types and layer types.
#
# * Attributes: the guide renames setup()'s `self.dense = nn.Dense(...)` to `self.linear` in
#   NNX; nothing in the Linen code says so, and the converter keeps setup() attribute names
#   (so the Linen path `dense/kernel` stays `dense/kernel`). Auto-named compact layers get
#   the guide's names (`nn.Dense(...)(x)` -> `self.linear`), so `basic` has no rename.
# * Constructor parameters: the guide adds each model's input size as a first positional
#   parameter under a name it picks per model (`in_features`, `din`, `in_dim`) and renames
#   Linen's field `features` to `out_features`. The converter keeps every Linen field's name,
#   position and default (so Linen construction sites keep working) and adds the input size
#   as the keyword-only `in_features`, whose default is the example's size; the parameters'
#   order and kind therefore differ, and are not compared.
GUIDE_NAMES: dict[str, dict[tuple[str, str], str]] = {
    "basic": {("Block", "out_features"): "features", ("Model", "din"): "in_features"},
    "collections": {("Block", "linear"): "dense", ("Block", "out_features"): "features"},
    "multiple_methods": {("AutoEncoder", "in_dim"): "in_features"},
}


def _renamed(struct: dict, renames: dict[str, str]) -> dict:
    out = {}
    for path, v in struct.items():
        parts = [renames.get(p, p) for p in path.split("/")] if path else []
        out["/".join(parts)] = v
    return out


def _classes(ns) -> dict[str, type]:
    """The NNX modules and variable types of a namespace (a module or the guide's section)."""
    return {
        k: v
        for k, v in vars(ns).items()
        if isinstance(v, type)
        and issubclass(v, nnx.Module | nnx.Variable)
        and v.__module__ not in ("flax.nnx",)
        and not v.__module__.startswith("flax.")
    }


def _interface(cls: type, renames: dict[tuple[str, str], str]) -> dict[str, object]:
    """Method -> its parameter names (the guide's renamed to the converted ones); the
    constructor's as a set, without ``rngs`` (see GUIDE_NAMES on order and kind)."""
    out: dict[str, object] = {}
    for name, fn in vars(cls).items():
        if not callable(fn) or (name.startswith("_") and name not in ("__init__", "__call__")):
            continue
        params = [
            renames.get((cls.__name__, p), p)
            for p in inspect.signature(fn).parameters
            if p != "self"
        ]
        out[name] = {p for p in params if p != "rngs"} if name == "__init__" else params
    return out


@pytest.mark.parametrize("section,example,guide", CASES, ids=[c[0] for c in CASES])
def test_guide_model_converts_verifies_and_matches_the_guide(section, example, guide, tmp_path):
    source = section_source(getattr(spec003_linen, section))
    result = convert.convert_source(source, [example], path=f"{section}.py")
    assert result.ok, result.report()
    assert result.kept == []
    assert ruff(result.code, tmp_path) == ""
    mod = load(result.code, tmp_path, section)
    ctor = example.split(")(")[0] + ", rngs=nnx.Rngs(0))"
    converted = eval(ctor, {**vars(mod), "nnx": nnx})
    guide_ns = getattr(spec003_nnx, section)()
    expected = guide(guide_ns)
    names = GUIDE_NAMES[section]
    attrs = {guide_name: ours for (_, guide_name), ours in names.items()}
    assert structure(converted) == _renamed(structure(expected), attrs)
    ours, theirs = _classes(mod), _classes(guide_ns)
    assert ours.keys() == theirs.keys()
    for name, cls in theirs.items():
        assert _interface(ours[name], {}) == _interface(cls, names), name


# Spec 003, "Using TrainState in Flax NNX", Linen side, as a script: its model is `nn.Dense`
# itself, and the guide's NNX side builds `nnx.Linear(784, 10, rngs=nnx.Rngs(0))`.
TRAIN_STATE_LINEN = """\
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

sample_x = jnp.ones((1, 784))
model = nn.Dense(features=10)
params = model.init(jax.random.key(0), sample_x)['params']

state = train_state.TrainState.create(
  apply_fn=model.apply,
  params=params,
  tx=optax.adam(1e-3)
)

@jax.jit
def train_step(key, state, inputs, labels):
  def loss_fn(params):
    logits = state.apply_fn(
      {'params': params},
      inputs, # <== inputs
      rngs={'dropout': key}
    )
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  grads = jax.grad(loss_fn)(state.params)
  state = state.apply_gradients(grads=grads)
  return state
"""


def test_train_state_example_whose_model_is_a_flax_layer():
    result = convert.convert_source(
        TRAIN_STATE_LINEN, ["nn.Dense(features=10)(sample_x)"], path="train_state.py"
    )
    assert result.ok, result.report()
    assert (result.converted, result.kept) == ([], [])
    assert result.code == TRAIN_STATE_LINEN  # no class to rewrite: the script is kept
    (layer,) = result.layers
    assert layer.nnx == "nnx.Linear(784, 10, rngs=nnx.Rngs(0))"  # the guide's line
    assert structure(eval(layer.nnx, {"nnx": nnx})) == structure(
        nnx.Linear(784, 10, rngs=nnx.Rngs(0))
    )
    assert result.path_map == {"bias": "bias", "kernel": "kernel"}
    assert result.checks[0].weights == 2
    assert "in NNX: nnx.Linear(784, 10, rngs=nnx.Rngs(0))" in result.report()
    assert "in NNX: <code>nnx.Linear(784, 10, rngs=nnx.Rngs(0))</code>" in result.to_html()


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
