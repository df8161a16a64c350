"""Every private Flax/JAX internal linnx relies on looks as expected, and only
``linnx._flax_internals`` touches any.

A Flax or JAX upgrade that changes one of them fails here, by name, instead of somewhere deep
in the bridge.
"""

from __future__ import annotations

import ast
import pathlib

import flax.core.scope
import flax.linen.module
import flax.nnx.graphlib
import flax.nnx.pytreelib
import flax.nnx.rnglib
import flax.nnx.variablelib
import jax
import pytest
from flax import linen as nn
from flax import nnx

from linnx import _flax_internals

SRC = pathlib.Path(_flax_internals.__file__).parent
INTERNALS = pathlib.Path(_flax_internals.__file__)


@pytest.mark.parametrize("name", sorted(_flax_internals.CHECKS))
def test_every_guarded_internal_looks_as_expected(name: str) -> None:
    assert _flax_internals.CHECKS[name], f"Flax/JAX changed: {name}"


def test_orbax_internals_look_as_expected() -> None:
    # Checked on first use (Orbax is not imported by `import linnx`), so asserted here.
    assert _flax_internals.orbax_join_available()


def test_the_checks_cover_every_internal() -> None:
    # One check per group of accesses in _flax_internals (see its sections).
    assert len(_flax_internals.CHECKS) >= 14


def _private_names() -> frozenset[str]:
    """Every private (single-underscore) attribute of the Flax/JAX objects linnx works with."""
    owners = [
        nn.Module,
        nnx.Module,
        nnx.Pytree,
        type(nnx.Module),
        nnx.Variable,
        nnx.Param,
        nnx.Rngs,
        nnx.RngStream,
        nnx.GraphDef,
        flax.core.scope.Scope,
        nn.LogicallyPartitioned,
        flax.linen.module,
        flax.core.scope,
        flax.nnx.variablelib,
        flax.nnx.graphlib,
        flax.nnx.pytreelib,
        flax.nnx.rnglib,
        jax,
        jax.sharding,
        jax.tree_util,
        jax.core,
        type(jax.numpy.zeros(())),
    ]
    names = set()
    for owner in owners:
        names.update(n for n in dir(owner) if n.startswith("_") and not n.startswith("__"))
    names.update(vars(nnx.Param(jax.numpy.zeros(()))))  # instance attributes
    names.update(vars(nnx.Module()))
    return frozenset(n for n in names if n.startswith("_") and not n.endswith("__"))


PRIVATE = _private_names()


def _violations(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    # A method with a private Flax name overrides it; a module-level function does not.
    methods = {
        id(item) for cls in ast.walk(tree) if isinstance(cls, ast.ClassDef) for item in cls.body
    }
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(SRC.parent)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE:
            found.append(f"{where}: .{node.attr}")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and (node.value in PRIVATE or node.value.startswith("_pytree__"))
        ):
            found.append(f"{where}: {node.value!r}")
        elif isinstance(node, ast.FunctionDef) and node.name in PRIVATE and id(node) in methods:
            found.append(f"{where}: def {node.name}")
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and (
                node.module.split(".")[0] in ("jax", "flax", "jaxlib", "orbax")
                and any(part.startswith("_") for part in node.module.split("."))
            )
        ):
            found.append(f"{where}: from {node.module} import ...")
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] in ("jax", "flax")
        ):
            found += [f"{where}: import {a.name}" for a in node.names if a.name in PRIVATE]
    return found


def test_no_other_module_names_a_private_flax_or_jax_attribute() -> None:
    files = [p for p in sorted(SRC.rglob("*.py")) if p != INTERNALS]
    assert len(files) > 20
    violations = [v for path in files for v in _violations(path)]
    assert violations == [], (
        "private Flax/JAX internals belong in linnx/_flax_internals.py, behind a check:\n"
        + "\n".join(violations)
    )


def test_the_grep_sees_the_internals_module_itself() -> None:
    # The scan is not vacuous: the one module allowed to touch internals does.
    found = _violations(INTERNALS)
    assert any("_var_metadata" in v for v in found)
    assert any("_pytree__nodes" in v for v in found)
    assert any("from jax._src" in v for v in found)
