"""Arrays that a migration only renames: renamed in the written checkpoint's index, their data
files shared with the source, and still checked (damage, NaN/inf, checksums)."""

import errno
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import linen as nn
from flax import nnx

from linnx import migrate
from linnx.migrate import _checkpoint_rename

X = jnp.ones((2, 4))


class Twin(nn.Module):
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(4, param_dtype=self.dtype)(x)
        return nn.Dense(4, param_dtype=self.dtype)(x)


class TwinPort(nnx.Module):
    def __init__(self, rngs, dtype=jnp.float32):
        self.a = nnx.Linear(4, 4, param_dtype=dtype, rngs=rngs)
        self.b = nnx.Linear(4, 4, param_dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.b(self.a(x))


def _save(tmp_path, tree):
    with ocp.StandardCheckpointer() as ckptr:  # Orbax alone, as a Linen training script saves
        ckptr.save(tmp_path / "linen", tree)


def _variables(dtype=jnp.float32):
    return jax.tree.map(np.array, Twin(dtype).init(jax.random.key(0), X))  # writable copies


def _stream(tmp_path, dst="nnx", dtype=jnp.float32, **kwargs):
    abstract = nnx.eval_shape(lambda: TwinPort(nnx.Rngs(0), dtype))
    plan = migrate.match(Twin(dtype), abstract, X)
    return migrate.stream_linen_checkpoint_to_nnx(
        tmp_path / "linen", tmp_path / dst, abstract, plan, **kwargs
    )


def _loaded(path, dtype=jnp.float32):
    model = migrate.load_nnx_checkpoint(path, TwinPort(nnx.Rngs(5), dtype))
    return {
        "/".join(map(str, p)): np.asarray(v.get_value())
        for p, v in nnx.to_flat_state(nnx.state(model))
    }


def test_renamed_and_rewritten_checkpoints_hold_the_same_values(tmp_path):
    variables = _variables()
    _save(tmp_path, variables)
    shared = _stream(tmp_path, "shared")
    written = _stream(tmp_path, "written", share_data=False)
    assert (shared.renamed, written.renamed) == (4, 0)
    assert shared.ok and shared.checked == written.checked == 4
    assert "4 of them were renamed in place" in str(shared)
    a, b = _loaded(tmp_path / "shared"), _loaded(tmp_path / "written")
    assert a.keys() == b.keys() == {"a/bias", "a/kernel", "b/bias", "b/kernel"}
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    expected = variables["params"]["Dense_1"]["kernel"]
    assert a["b/kernel"].tobytes() == expected.tobytes()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_nan_in_a_renamed_array_is_refused_unless_allowed(tmp_path, dtype):
    variables = _variables(dtype)
    variables["params"]["Dense_1"]["kernel"][2, 3] = np.nan
    _save(tmp_path, variables)
    with pytest.raises(migrate.NonFiniteValuesError, match=r"params/Dense_1/kernel -> b/kernel"):
        _stream(tmp_path, dtype=dtype)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linen"]
    report = _stream(tmp_path, dtype=dtype, allow_nonfinite="params/Dense_1/kernel")
    assert report.ok and report.renamed == 4
    loaded = _loaded(tmp_path / "nnx", dtype)["b/kernel"]
    assert loaded.dtype == dtype and np.isnan(loaded[2, 3].astype(np.float32))


def test_verification_finds_arrays_renamed_to_the_wrong_name(tmp_path, monkeypatch):
    _save(tmp_path, _variables())
    real = _checkpoint_rename.rename_in_place

    def crossed(where, db, moves):  # the two kernels (same shape) swap names
        names = {new: old for old, new in moves}
        a, b = "a.kernel.value", "b.kernel.value"
        names[a], names[b] = names[b], names[a]
        real(where, db, [(old, new) for new, old in names.items()])

    monkeypatch.setattr(_checkpoint_rename, "rename_in_place", crossed)
    report = _stream(tmp_path)
    assert not report.ok
    assert set(report.differing) == {"params/Dense_0/kernel", "params/Dense_1/kernel"}
    assert not (tmp_path / "nnx").exists()


def test_without_hard_links_every_array_is_restored_and_written(tmp_path, monkeypatch):
    _save(tmp_path, _variables())

    def no_link(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(_checkpoint_rename.os, "link", no_link)
    report = _stream(tmp_path)
    assert report.ok and report.renamed == 0 and report.checked == 4
    assert _loaded(tmp_path / "nnx").keys() == {"a/bias", "a/kernel", "b/bias", "b/kernel"}


def test_an_optimizer_state_beside_the_weights_is_not_carried_along(tmp_path):
    variables = _variables()
    opt = jax.tree.map(lambda a: np.zeros((64, *a.shape), a.dtype), variables["params"])
    _save(tmp_path, {"params": variables["params"], "opt_state": opt})
    report = _stream(tmp_path)
    assert report.ok and report.renamed == 0 and report.left_out == ("opt_state",)


class Mixed(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(1024)(x)
        return nn.Dense(2, param_dtype=jnp.bfloat16)(x)


class MixedPort(nnx.Module):
    def __init__(self, rngs):
        self.a = nnx.Linear(16, 1024, rngs=rngs)
        self.b = nnx.Linear(1024, 2, rngs=rngs)  # float32: the bf16 layer is cast

    def __call__(self, x):
        return self.b(self.a(x))


def test_renamed_and_cast_arrays_in_one_run(tmp_path):
    x = jnp.ones((2, 16))
    variables = jax.tree.map(np.array, Mixed().init(jax.random.key(0), x))
    variables["params"]["Dense_1"]["kernel"][5, 1] = np.inf
    _save(tmp_path, variables)
    abstract = nnx.eval_shape(lambda: MixedPort(nnx.Rngs(0)))
    plan = migrate.match(Mixed(), abstract, x)

    def stream(**kwargs):
        return migrate.stream_linen_checkpoint_to_nnx(
            tmp_path / "linen", tmp_path / "nnx", abstract, plan, cast=True, **kwargs
        )

    with pytest.raises(migrate.NonFiniteValuesError, match=r"params/Dense_1/kernel -> b/kernel"):
        stream()
    report = stream(allow_nonfinite="params/Dense_1/kernel")
    assert report.ok and report.renamed == 2 and report.checked == 4, str(report)
    loaded = migrate.load_nnx_checkpoint(tmp_path / "nnx", MixedPort(nnx.Rngs(3)))
    assert loaded.b.kernel.dtype == jnp.float32 and np.isinf(loaded.b.kernel[5, 1])
    np.testing.assert_array_equal(loaded.a.kernel[...], variables["params"]["Dense_0"]["kernel"])
