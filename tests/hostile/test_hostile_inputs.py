"""The hostile-input suite: every case of every table, and a floor on how many there are.

Each case misuses one public function or class of linnx (wrong kinds and shapes, missing or
extra collections, unknown paths, conflicting registrations, NaN in checkpoints, truncated or
damaged checkpoint directories, failures in the middle of a save) and must get a typed linnx
error that names the argument or key path and the fix, with nothing it touched changed. See
``_harness.py`` for what is checked, and the ``cases_*.py`` tables for the cases.
"""

from __future__ import annotations

import pytest

from . import (
    cases_bridge,
    cases_checkpoint,
    cases_convert,
    cases_jit,
    cases_migrate,
    cases_module,
)
from ._harness import run_case

CASES = [
    *cases_bridge.CASES,
    *cases_module.CASES,
    *cases_migrate.CASES,
    *cases_checkpoint.CASES,
    *cases_convert.CASES,
    *cases_jit.CASES,
]


@pytest.mark.parametrize("case", [pytest.param(c, marks=c.marks, id=c.id) for c in CASES])
def test_hostile_input(case, env):
    run_case(case, env)


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


def test_the_suite_covers_many_cases():
    assert len(CASES) >= 200


def test_a_double_failure_keeps_the_previous_checkpoint_and_says_where(tmp_path):
    """Publishing fails, and so does moving the old checkpoint back: it must survive anyway."""
    from pathlib import Path
    from unittest import mock

    from linnx import migrate
    from linnx.migrate import _checkpoint_files

    from ._harness import snapshot
    from .models import Port

    ckpt = tmp_path / "nnx"
    migrate.save_nnx_checkpoint(ckpt, Port(seed=1))
    before = snapshot(ckpt)
    real_rename = _checkpoint_files.os.rename

    def rename(a, b):
        if Path(b) == ckpt:  # both the new checkpoint and the old one back
            raise OSError("rename refused")
        return real_rename(a, b)

    with mock.patch.object(_checkpoint_files.os, "rename", rename):
        with pytest.raises(
            migrate.CheckpointError,
            match=r"(?s)moving the previous checkpoint "
            r"back failed too.*It is intact at '(.*)'.*Fix: move it back",
        ) as e:
            migrate.save_nnx_checkpoint(ckpt, Port(seed=2), overwrite=True)
    kept = Path(e.value.args[0].split("It is intact at '")[1].split("'")[0])
    assert snapshot(kept) == before


def test_the_cli_refuses_a_checkpoint_with_nan_and_writes_nothing(pristine, tmp_path, capsys):
    from linnx._cli import main

    from . import models
    from ._harness import snapshot

    src = pristine("nonfinite")
    before = snapshot(src)
    ports = ("--linen", f"{models.__name__}:Net", "--nnx", f"{models.__name__}:Port")
    inputs = ("--sample", "2,3", "--linen-kwargs", '{"train": false}')
    code = main(["migrate-weights", *ports, *inputs, str(src), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "params/Dense_0/kernel -> fc/kernel: 1 NaN, 0 inf" in err
    assert "allow_nonfinite=True" in err
    assert not (tmp_path / "out").exists() and snapshot(src) == before
