"""Fixtures of the hostile-input suite, and the line that reports how many cases it tried."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
import pytest

from linnx import migrate

from . import _harness, models


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    # Registered only when this directory is collected, so only runs that include the suite
    # print the line.
    if _harness.TRIED:
        from .test_hostile_inputs import CASES

        terminalreporter.write_sep("-", "hostile-input suite")
        terminalreporter.write_line(_harness.summary(len(CASES)))


def _write_pristine(kind: str, path: Path) -> None:
    """The checkpoints that cases copy and then damage or misuse."""
    variables = models.linen_variables()
    if kind == "linen":  # written by linnx: carries file digests
        migrate.save_linen_checkpoint(path, variables)
    elif kind == "foreign":  # written by Orbax alone, as a Linen training script would
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(path, variables)
    elif kind == "train_state":
        tx = optax.adam(1e-3)
        tree = {**variables, "step": 3, "opt_state": tx.init(variables["params"])}
        migrate.save_linen_checkpoint(path, tree)
    elif kind == "nonfinite":
        params = jax.tree.map(lambda a: a, variables["params"])
        params["Dense_0"]["kernel"] = params["Dense_0"]["kernel"].at[0, 0].set(jnp.nan)
        params["Dense_0"]["bias"] = params["Dense_0"]["bias"].at[1].set(jnp.inf)
        migrate.save_linen_checkpoint(path, {**variables, "params": params})
    elif kind == "nnx":
        migrate.save_nnx_checkpoint(path, models.Port(seed=1))
    elif kind == "nnx_nonfinite":
        model = models.Port(seed=1)
        model.fc.bias.set_value(jnp.full((4,), jnp.nan))
        migrate.save_nnx_checkpoint(path, model)
    elif kind == "nnx_optimizer":
        model = models.Port(seed=1)
        migrate.save_nnx_checkpoint(path, model, optimizer=models.optimizer(model))
    else:
        raise KeyError(kind)


@pytest.fixture(scope="session")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    made: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in made:
            _write_pristine(kind, root / kind)
            made[kind] = root / kind
        return made[kind]

    return get


@pytest.fixture
def env(tmp_path, pristine):
    return _harness.Env(tmp=tmp_path, pristine=pristine)
