"""Orbax checkpoints: Linen layouts in, NNX checkpoints out (atomically), and back."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import linen as nn
from flax import nnx

from linnx import migrate

from . import resnet_models

X = jnp.ones((2, 3))


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(4)(x)
        return nn.BatchNorm(use_running_average=not train)(x)


class Port(nnx.Module):
    def __init__(self, rngs):
        self.fc = nnx.Linear(3, 4, rngs=rngs)
        self.norm = nnx.BatchNorm(4, rngs=rngs)

    def __call__(self, x):
        return self.norm(self.fc(x))


def _plan(model):
    return migrate.match(Net(), model, X, linen_kwargs={"train": False})


def test_variables_dict_checkpoint_round_trip(tmp_path):
    variables = Net().init(jax.random.key(0), X)
    _, upd = Net().apply(variables, X * 3, train=True, mutable=["batch_stats"])
    variables = {**variables, **upd}
    migrate.save_linen_checkpoint(tmp_path / "linen", variables)
    ckpt = migrate.read_linen_checkpoint(tmp_path / "linen")
    assert ckpt.kind == "variables" and ckpt.opt_state is None
    assert set(ckpt.variables) == {"params", "batch_stats"}

    model = Port(nnx.Rngs(0))
    migrate.linen_checkpoint_to_nnx(tmp_path / "linen", model, _plan(model))
    np.testing.assert_array_equal(
        model.norm.var[...], variables["batch_stats"]["BatchNorm_0"]["var"]
    )

    migrate.save_nnx_checkpoint(tmp_path / "nnx", model)
    fresh = migrate.load_nnx_checkpoint(tmp_path / "nnx", Port(nnx.Rngs(1)))
    np.testing.assert_array_equal(fresh.fc.kernel[...], model.fc.kernel[...])
    with pytest.raises(migrate.CheckpointError, match="no 'optimizer' item"):
        migrate.load_nnx_checkpoint(
            tmp_path / "nnx",
            fresh,
            optimizer=nnx.Optimizer(fresh, resnet_models.make_tx(), wrt=nnx.Param),
        )

    migrate.nnx_checkpoint_to_linen(
        tmp_path / "nnx", tmp_path / "back", Port(nnx.Rngs(2)), _plan(model)
    )
    back = migrate.read_linen_checkpoint(tmp_path / "back").variables
    np.testing.assert_allclose(Net().apply(back, X), Net().apply(variables, X), atol=1e-6)


def test_checkpoint_manager_root_resolves_to_latest_step(tmp_path):
    variables = Net().init(jax.random.key(0), X)
    with ocp.CheckpointManager(tmp_path / "run") as manager:
        for step in (1, 7):
            scaled = jax.tree.map(lambda a, s=step: a * s, variables)
            manager.save(step, args=ocp.args.StandardSave(scaled))
        manager.wait_until_finished()
    ckpt = migrate.read_linen_checkpoint(tmp_path / "run")
    np.testing.assert_allclose(
        ckpt.variables["params"]["Dense_0"]["kernel"], 7 * variables["params"]["Dense_0"]["kernel"]
    )


def test_writes_are_atomic_and_do_not_clobber(tmp_path):
    model = Port(nnx.Rngs(0))
    migrate.save_nnx_checkpoint(tmp_path / "nnx", model)
    with pytest.raises(migrate.CheckpointError, match="already exists(.|\n)*overwrite=True"):
        migrate.save_nnx_checkpoint(tmp_path / "nnx", model)

    # A refused write leaves neither the destination nor a temporary directory behind.
    with pytest.raises(migrate.CheckpointError, match=r"Cannot save \['params'\]\['w'\]"):
        migrate.save_linen_checkpoint(tmp_path / "broken", {"params": {"w": object()}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nnx"]

    other = Port(nnx.Rngs(5))
    migrate.save_nnx_checkpoint(tmp_path / "nnx", other, overwrite=True)
    restored = migrate.load_nnx_checkpoint(tmp_path / "nnx", Port(nnx.Rngs(0)))
    np.testing.assert_array_equal(restored.fc.kernel[...], other.fc.kernel[...])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nnx"]


def test_unknown_layouts_are_refused(tmp_path):
    with pytest.raises(migrate.CheckpointError, match="not an Orbax checkpoint"):
        migrate.read_linen_checkpoint(tmp_path)
    migrate.save_linen_checkpoint(tmp_path / "other", {"weights": {"w": np.ones(2)}})
    with pytest.raises(migrate.CheckpointError, match=r"neither a Linen variables dict"):
        migrate.read_linen_checkpoint(tmp_path / "other")
    migrate.save_linen_checkpoint(tmp_path / "vars", Net().init(jax.random.key(0), X))
    model = Port(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, resnet_models.make_tx(), wrt=nnx.Param)
    with pytest.raises(migrate.CheckpointError, match="without optimizer state"):
        migrate.linen_checkpoint_to_nnx(tmp_path / "vars", model, _plan(model), optimizer=optimizer)


def test_train_state_checkpoint_parts(trained_resnet):
    state, _, src = trained_resnet
    ckpt = migrate.read_linen_checkpoint(src)
    assert ckpt.kind == "train_state" and ckpt.step == 3
    assert set(ckpt.variables) == {"params", "batch_stats"}
    np.testing.assert_array_equal(
        ckpt.opt_state[0]["mu"]["Dense_0"]["bias"], state.opt_state[0].mu["Dense_0"]["bias"]
    )


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from linnx.migrate import _checkpoint_files

    first = Port(nnx.Rngs(0))
    migrate.save_nnx_checkpoint(tmp_path / "nnx", first)
    real_rename = _checkpoint_files.os.rename

    def failing_rename(a, b):
        if "linnx-tmp" in Path(a).parent.name and Path(a).name == Path(b).name:
            raise OSError("disk gone")  # publishing the finished checkpoint fails
        return real_rename(a, b)

    monkeypatch.setattr(_checkpoint_files.os, "rename", failing_rename)
    with pytest.raises(migrate.CheckpointError, match=r"OSError: disk gone(.|\n)*is unchanged"):
        migrate.save_nnx_checkpoint(tmp_path / "nnx", Port(nnx.Rngs(3)), overwrite=True)
    with pytest.raises(migrate.CheckpointError, match="disk gone(.|\n)*nothing was created"):
        migrate.save_nnx_checkpoint(tmp_path / "new", Port(nnx.Rngs(3)))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nnx"]
    restored = migrate.load_nnx_checkpoint(tmp_path / "nnx", Port(nnx.Rngs(1)))
    np.testing.assert_array_equal(restored.fc.kernel[...], first.fc.kernel[...])


# -- boxed parameters (nn.with_partitioning, nn.with_logical_partitioning) -------------------


class Boxed(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(
            4, kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), (None, "model"))
        )(x)
        logical = nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), ("embed", "mlp"), rules=(("mlp", "model"),)
        )
        return nn.Dense(2, kernel_init=logical)(x)


class BoxedPort(nnx.Module):
    def __init__(self, rngs):
        self.a = nnx.Linear(3, 4, rngs=rngs)
        self.b = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.b(self.a(x))


@pytest.mark.parametrize("writer", ["linnx", "orbax"])
def test_boxed_params_are_read_as_the_boxes_they_were(tmp_path, writer):
    variables = Boxed().init(jax.random.key(0), X)
    if writer == "linnx":
        migrate.save_linen_checkpoint(tmp_path / "ckpt", variables)
    else:  # as a Linen training script saves it: Orbax alone, no record of the names
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(tmp_path / "ckpt", variables)
    ckpt = migrate.read_linen_checkpoint(tmp_path / "ckpt")
    kernel = ckpt.variables["params"]["Dense_0"]["kernel"]
    assert not isinstance(kernel, dict)  # no trailing .../kernel/value level
    np.testing.assert_array_equal(
        nn.meta.unbox(kernel), variables["params"]["Dense_0"]["kernel"].value
    )
    assert set(ckpt.boxes) == {"params/Dense_0/kernel", "params/Dense_1/kernel"}

    model = BoxedPort(nnx.Rngs(1))
    plan = migrate.match(Boxed(), model, X)
    migrate.linen_checkpoint_to_nnx(tmp_path / "ckpt", model, plan)
    np.testing.assert_array_equal(model(X), Boxed().apply(variables, X))
    meta_b = model.b.kernel.get_metadata()
    if writer == "linnx":  # the names come along as the NNX variables' sharding metadata
        assert isinstance(kernel, nn.Partitioned) and kernel.names == (None, "model")
        assert model.a.kernel.get_metadata()["out_sharding"] == (None, "model")
        assert meta_b["out_sharding"] == ("embed", "mlp")
        assert meta_b["sharding_rules"] == (("mlp", "model"),)
        # what nnx.get_partition_spec reads: 'mlp' resolved by the rules, 'embed' kept
        assert nnx.get_partition_spec(nnx.state(model))["b"]["kernel"].get_value() == (
            jax.sharding.PartitionSpec("embed", "model")
        )
    else:  # Orbax kept no names: the box is folded away, and nothing is made up
        assert ckpt.boxes["params/Dense_0/kernel"] is None
        assert not meta_b.get("out_sharding")


class ValueParam(nn.Module):
    """A submodule whose only parameter is called 'value': stored exactly like a box."""

    @nn.compact
    def __call__(self, x):
        return x * self.param("value", nn.initializers.ones, (3,))


class HasValueParam(nn.Module):
    @nn.compact
    def __call__(self, x):
        return ValueParam(name="scale")(x)


class ValuePort(nnx.Module):
    def __init__(self):
        self.scale = nnx.Param(jnp.zeros(3))

    def __call__(self, x):
        return x * self.scale[...]


def test_a_parameter_named_value_is_not_taken_for_a_box(tmp_path):
    variables = jax.tree.map(lambda a: a * 3, HasValueParam().init(jax.random.key(0), X))
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp_path / "ckpt", variables)
    model = ValuePort()
    plan = migrate.match(HasValueParam(), model, X)
    assert list(plan.linen_leaves) == ["params/scale/value"]
    migrate.linen_checkpoint_to_nnx(tmp_path / "ckpt", model, plan)
    np.testing.assert_array_equal(model.scale[...], np.full(3, 3.0))


def test_linen_checkpoint_repr_summarizes(trained_resnet):
    ckpt = migrate.read_linen_checkpoint(trained_resnet[2])
    text = repr(ckpt)
    assert text.startswith("LinenCheckpoint(kind='train_state', step=3, variables={")
    assert "'params': 20 arrays" in text and "'batch_stats': 12 arrays" in text
    assert "array(" not in text and "[[" not in text and len(text) < 300
    assert "MiB" in text or "KiB" in text


def test_loading_into_a_tonnx_never_lazy_initialized_says_call_lazy_init(tmp_path):
    import linnx

    saved = linnx.lazy_init(linnx.ToNNX(nn.Dense(2), rngs=nnx.Rngs(0)), X)
    migrate.save_nnx_checkpoint(tmp_path / "nnx", saved)
    fresh = linnx.ToNNX(nn.Dense(2), rngs=nnx.Rngs(1))
    with pytest.raises(migrate.CheckpointError, match=r"never initialized(.|\n)*call lazy_init"):
        migrate.load_nnx_checkpoint(tmp_path / "nnx", fresh)
    linnx.lazy_init(fresh, X)
    migrate.load_nnx_checkpoint(tmp_path / "nnx", fresh)
    np.testing.assert_array_equal(fresh.params["kernel"][...], saved.params["kernel"][...])


def test_digests_recorded_with_sha256_by_earlier_versions_are_still_checked(tmp_path):
    import hashlib
    import json

    migrate.save_linen_checkpoint(tmp_path / "ckpt", Net().init(jax.random.key(0), X))
    record = tmp_path / "ckpt" / "linnx.json"
    info = json.loads(record.read_text())
    assert all(set(e) == {"bytes", "xxh3_128"} for e in info["files"].values())
    for rel, entry in info["files"].items():
        del entry["xxh3_128"]
        entry["sha256"] = hashlib.sha256((tmp_path / "ckpt" / rel).read_bytes()).hexdigest()
    record.write_text(json.dumps(info))
    migrate.read_linen_checkpoint(tmp_path / "ckpt")
    data = max(
        (p for p in (tmp_path / "ckpt").rglob("*") if p.is_file() and p.parent.name == "d"),
        key=lambda p: p.stat().st_size,
    )
    data.write_bytes(bytes(b ^ 1 for b in data.read_bytes()))
    with pytest.raises(migrate.CheckpointError, match=r"contents changed since it was written"):
        migrate.read_linen_checkpoint(tmp_path / "ckpt")
