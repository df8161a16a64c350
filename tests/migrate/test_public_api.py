"""The documented surface of ``linnx.migrate`` exists, and shows its public path."""

import argparse
import inspect

import pytest

import linnx
from linnx import migrate

# By topic: plans, weights, optimizer state, verification, checkpoints, streaming, errors.
PUBLIC = """
    match Plan Pair Layout Mismatch
    linen_to_nnx nnx_to_linen to_nnx_value to_linen_value
    opt_state_to_nnx opt_state_to_linen
    verify VerifyReport Difference train_kwargs_for
    LinenCheckpoint read_linen_checkpoint linen_checkpoint_to_nnx
    save_nnx_checkpoint load_nnx_checkpoint save_linen_checkpoint nnx_checkpoint_to_linen
    stream_linen_checkpoint_to_nnx StreamReport parse_mesh
    MigrationError MissingWeightsError UnusedWeightsError ShapeMismatchError
    AmbiguousPairingError RenameError TraceError VerificationError CheckpointError
    MigrationTypeError NonFiniteValuesError
""".split()


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name(name):
    obj = getattr(migrate, name)
    assert obj.__module__ == "linnx.migrate"
    doc = inspect.getdoc(obj) or ""
    assert ">>>" in doc, f"{name} has no doctest example"


def test_exported_names_are_exactly_the_documented_ones():
    exported = {
        n for n, v in vars(migrate).items() if not n.startswith("_") and not inspect.ismodule(v)
    }
    assert exported == set(PUBLIC)


def test_errors_belong_to_the_linnx_family():
    for name in PUBLIC:
        obj = getattr(migrate, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, migrate.MigrationError)
            assert issubclass(obj, linnx.LinnxError)
    for cls in (
        migrate.MissingWeightsError,
        migrate.UnusedWeightsError,
        migrate.ShapeMismatchError,
    ):
        assert issubclass(cls, linnx.StructureMismatchError)


def test_cli_arguments():
    from linnx.migrate import _cli

    parser = argparse.ArgumentParser()
    _cli.add_arguments(parser)
    argv = "--linen m:f --nnx m:g --sample 2,3 --rename Dense_0=linear src dst".split()
    args = parser.parse_args(argv)
    assert (args.src, args.dst) == ("src", "dst")
    assert (args.sample, args.rename) == (["2,3"], ["Dense_0=linear"])
