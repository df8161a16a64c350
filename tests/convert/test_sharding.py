"""Sharding annotations convert: the converted model shards like the Linen one on a mesh.

Linen's ``nn.with_partitioning`` / ``nn.with_logical_partitioning`` initializers and
flaxformer's ``param_with_axes`` become NNX variable metadata (``nnx.with_partitioning``,
``out_sharding=``, ``sharding_rules=``). On a (2, 4) mesh of host devices the corpus model
``partitioned_mlp`` gets the same PartitionSpec for every weight on both sides, runs sharded
and trains step for step like the Linen model.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax import nnx
from flax.linen import partitioning

from linnx import convert, migrate

from ._train import example_models, train_both
from ._util import load, ruff

P = jax.sharding.PartitionSpec
CORPUS = Path(__file__).parent / "corpus"

needs_8 = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (host) devices")

ANNOTATED = """\
import flax.linen as nn
import jax.numpy as jnp
from flax.linen.partitioning import param_with_axes, variable_with_axes

MESH_RULES = (("embed", None), ("mlp", "model"))


class Annotated(nn.Module):
    @nn.compact
    def __call__(self, x):
        w = self.param(
            "w", nn.with_partitioning(nn.initializers.zeros, (None, "model")), (x.shape[-1], 4)
        )
        b = param_with_axes("b", nn.initializers.zeros, (4,), axes=("mlp",))
        count = variable_with_axes("counts", "seen", jnp.zeros, (4,), axes=("mlp",))
        x = nn.Dense(
            4,
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.lecun_normal(), ("mlp", "embed"), rules=MESH_RULES
            ),
        )(x @ w + b)
        return x + count.value
"""


@pytest.fixture(scope="module")
def annotated():
    result = convert.convert_source(ANNOTATED, ["Annotated()(jnp.ones((2, 3)))"], path="a.py")
    assert result.ok, result.report()
    return result


def test_annotations_become_nnx_metadata(annotated, tmp_path):
    result = annotated
    code = result.code
    flat = re.sub(r"\s+", "", code)  # the layout of long lines is the formatter's business

    def has(text: str) -> bool:
        return re.sub(r"\s+", "", text) in flat

    # self.param with an annotated initializer: the names move onto the Param.
    assert has(
        "nnx.Param(nnx.initializers.zeros(rngs.params(), (in_features, 4)), "
        'out_sharding=(None, "model"),)'
    )
    # param_with_axes: a plain Param with the axes; no params_axes collection on the NNX side.
    assert has('nnx.Param(nnx.initializers.zeros(rngs.params(), (4,)), out_sharding=("mlp",))')
    assert has('self.seen = Counts(jnp.zeros((4,)), out_sharding=("mlp",))')
    assert "param_with_axes" not in code and "variable_with_axes" not in code
    # A layer initializer: nnx.with_partitioning, the Linen rules kept as sharding_rules.
    assert has(
        'kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(), ("mlp", '
        '"embed"), sharding_rules=MESH_RULES)'
    )
    assert "nn." not in code.split("class Annotated", 1)[1]
    assert ruff(code, tmp_path) == ""
    # The weights map without the params_axes entries, which are no weights.
    assert result.path_map == {
        "Dense_0/bias": "linear/bias",
        "Dense_0/kernel": "linear/kernel",
        "b": "b",
        "seen": "seen",
        "w": "w",
    }


def test_converted_variables_carry_the_linen_names(annotated, tmp_path):
    mod = load(annotated.code, tmp_path, "annotated_nnx")
    with nnx.use_eager_sharding(False):  # no mesh here: the names stay metadata
        model = mod.Annotated(rngs=nnx.Rngs(0))
    assert model.w.get_metadata()["out_sharding"] == (None, "model")
    assert model.b.get_metadata()["out_sharding"] == ("mlp",)
    assert model.seen.get_metadata()["out_sharding"] == ("mlp",)
    kernel = model.linear.kernel.get_metadata()
    assert kernel["out_sharding"] == ("mlp", "embed")
    assert kernel["sharding_rules"] == (("embed", None), ("mlp", "model"))
    # Under the rules, NNX resolves the names to the mesh axes Linen's rules give.
    with nn.logical_axis_rules(mod.MESH_RULES):
        specs = nnx.get_partition_spec(nnx.state(model))
    assert specs["linear"]["kernel"].get_value() == P("model", None)
    assert specs["w"].get_value() == P(None, "model")


# -- the corpus model on a (2, 4) mesh ----------------------------------------------------------


@pytest.fixture(scope="module")
def corpus():
    source = (CORPUS / "partitioned_mlp.py").read_text()
    (example,) = re.findall(r"^# example: (.*)$", source, re.M)
    result = convert.convert_source(source, [example], path="partitioned_mlp.py")
    assert result.ok, result.report()
    return source, example, result


def _linen_mesh_specs(variables, rules) -> dict[str, P]:
    """Each Linen weight's mesh PartitionSpec (path without the collection): boxed names
    through ``nn.get_partition_spec``, ``param_with_axes`` names from ``params_axes``, both
    mapped to the mesh with the rules as ``nn.logical_to_mesh`` does."""
    specs = nn.get_partition_spec(variables["params"])
    flat = {
        "/".join(str(getattr(k, "key", k)) for k in path): spec
        for path, spec in jax.tree_util.tree_flatten_with_path(
            specs, is_leaf=lambda x: isinstance(x, P)
        )[0]
    }
    axes = partitioning.get_axis_names(variables.get("params_axes", {}))
    for path, spec in jax.tree_util.tree_flatten_with_path(
        axes, is_leaf=lambda x: isinstance(x, P)
    )[0]:
        flat["/".join(str(getattr(k, "key", k)) for k in path)] = spec
    return {k: nn.logical_to_mesh_axes(tuple(v), rules) for k, v in flat.items()}


@contextlib.contextmanager
def _on(mesh: jax.sharding.Mesh, rules):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def _mesh() -> jax.sharding.Mesh:
    # Auto axes: Linen's logical constraints (weights unboxed in apply) are sharding hints
    # there; on Explicit axes (jax.make_mesh's default) they assert instead.
    return jax.make_mesh((2, 4), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


@needs_8
def test_the_converted_model_shards_like_linen_on_a_2x4_mesh(corpus, tmp_path):
    source, example, result = corpus
    mesh = _mesh()
    with jax.set_mesh(mesh), nn.logical_axis_rules(load(source, tmp_path, "lm").LOGICAL_RULES):
        linen_model, nnx_model, args, lkw, nkw = example_models(
            source, result, example, tmp_path, stem="partitioned"
        )
        rules = nn.get_logical_axis_rules()
        variables = jax.jit(linen_model.init)(jax.random.key(0), *args)
        linen_specs = _linen_mesh_specs(variables, rules)
        nnx_specs = {
            "/".join(map(str, k)): v.get_value()
            for k, v in nnx.to_flat_state(nnx.get_partition_spec(nnx.state(nnx_model, nnx.Param)))
        }
        # Every Linen weight has the same PartitionSpec as its NNX counterpart.
        assert set(linen_specs) == set(result.path_map)
        for lpath, npath in result.path_map.items():
            assert nnx_specs[npath] == linen_specs[lpath], lpath
        # Some weights are split over both mesh axes' devices: the test is not vacuous.
        assert linen_specs["token_embed/embedding"] == P("model", None)
        assert linen_specs["mlp/wi/kernel"] == P(None, "model")
        # Built under the mesh, the NNX weights are laid out by their names already.
        kernel = nnx_model.mlp_2.wi.kernel.get_value()
        assert kernel.sharding.spec == P(None, "model")
        assert len(kernel.addressable_shards) == 8
    # Move the Linen weights; matching under the mesh and its rules (boxed weights: their
    # sharding constraints must not run on the trace's abstract values) gives the same plan.
    plan = migrate.match(linen_model, nnx_model, *args, rename=result.path_map)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        on_mesh = migrate.match(linen_model, nnx_model, *args, rename=result.path_map)
    assert on_mesh.to_dict() == plan.to_dict() and len(plan.pairs) == len(result.path_map)
    nnx_model = migrate.linen_to_nnx(variables, nnx_model, plan)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        # ... shard the NNX state by its own names, and run both models on the mesh.
        state = nnx.state(nnx_model)
        nnx.update(nnx_model, jax.device_put(state, nnx.get_named_sharding(state, mesh)))
        for npath, spec in nnx_specs.items():
            value = nnx_model
            for part in npath.split("/"):
                value = getattr(value, part)
            assert value.get_value().sharding.spec == spec, npath
        want = jax.jit(linen_model.apply)(variables, *args)
        got = nnx.jit(lambda m, *a: m(*a))(nnx_model, *args)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


@needs_8
def test_the_converted_model_trains_like_linen_on_the_mesh(corpus, tmp_path):
    source, example, result = corpus
    mesh = _mesh()
    rules = load(source, tmp_path, "lm2").LOGICAL_RULES
    with _on(mesh, rules):
        linen_model, nnx_model, args, lkw, nkw = example_models(
            source, result, example, tmp_path, stem="partitioned_train"
        )
        assert nnx_model.mlp_2.wo.kernel.get_value().sharding.spec == P("model", None)
    # Both train from the same weights (linnx.migrate traces the Linen model without a mesh);
    # the steps and the NNX optimizer run on the mesh, under the rules.
    linen_losses, nnx_losses = train_both(
        linen_model,
        nnx_model,
        result.path_map,
        args,
        linen_kwargs=lkw,
        nnx_kwargs=nkw,
        context=lambda: _on(mesh, rules),
    )
    assert linen_losses[0] != linen_losses[-1]  # it did train
    np.testing.assert_allclose(nnx_losses, linen_losses, rtol=1e-5)
