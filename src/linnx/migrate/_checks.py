"""Argument checks shared by the public functions of :mod:`linnx.migrate`.

Each public function checks its arguments before doing any work, so a wrong kind of argument
(a model class, a Linen module where an NNX model goes, ``None`` for a plan) is reported in
terms of that function's own signature, not as an ``AttributeError`` from deep inside Flax.
The finiteness check is here too: NaN or infinity in the values to migrate is refused unless
allowed, since it nearly always means a diverged run or a damaged checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import nnx

from .._errors import NotInitializedError
from .._keypath import path_str
from ..bridge import ToNNX
from ._errors import MigrationTypeError, NonFiniteValuesError
from ._paths import matches_any, patterns
from ._plan import Plan

__all__ = [
    "check_nnx",
    "check_linen",
    "check_plan",
    "check_mapping",
    "check_path",
    "check_finite",
    "uninitialized_parts",
    "check_initialized",
]

Patterns = bool | str | Iterable[str] | None


def _kind(obj: Any) -> str:
    if isinstance(obj, type):
        return f"the class {obj.__name__}"
    return type(obj).__name__


def check_nnx(obj: Any, fn: str, arg: str = "nnx_model", optimizer: bool = False) -> None:
    """``obj`` must be an NNX model instance (or an ``nnx.Optimizer`` when ``optimizer``)."""
    want = nnx.Optimizer if optimizer else nnx.Module
    if isinstance(obj, want):
        return
    if isinstance(obj, type) and issubclass(obj, nnx.Pytree):
        raise MigrationTypeError(
            f"{fn}({arg}={obj.__name__}): expected an NNX model instance, got the class itself."
            f"\nFix: build it first, e.g. {fn}(..., {obj.__name__}(..., rngs=nnx.Rngs(0)), ...);"
            f" nnx.eval_shape(lambda: {obj.__name__}(...)) gives one without allocating."
        )
    if optimizer:
        fix = "wrap the model's parameters: nnx.Optimizer(model, tx, wrt=nnx.Param)."
    elif isinstance(obj, nn.Module) or (isinstance(obj, type) and issubclass(obj, nn.Module)):
        fix = "this argument is the hand-ported NNX model, not the original Linen module."
    else:
        fix = "pass the NNX model object, e.g. Model(..., rngs=nnx.Rngs(0))."
    what = "an nnx.Optimizer" if optimizer else "an NNX model (nnx.Module) instance"
    raise MigrationTypeError(f"{fn}({arg}=...): expected {what}, got {_kind(obj)}.\nFix: {fix}")


def uninitialized_parts(model: nnx.Module) -> list[str]:
    """Paths of the ``ToNNX`` parts of ``model`` whose ``lazy_init`` never ran (``''``: the
    model itself)."""
    return [
        path_str(path)
        for path, module in nnx.iter_modules(model)
        if isinstance(module, ToNNX) and not module.linen_collections
    ]


def check_initialized(model: Any, fn: str, arg: str = "nnx_model") -> None:
    """Raises ``NotInitializedError`` naming every ``ToNNX`` part that was never
    ``lazy_init``-ed: its variables do not exist yet, so nothing can be paired, loaded or
    saved, and "build the model as for the save" would be the wrong advice."""
    if not isinstance(model, nnx.Module):
        return
    parts = uninitialized_parts(model)
    if not parts:
        return
    shown = ", ".join(p or "<the model itself>" for p in parts[:10])
    raise NotInitializedError(
        f"{fn}({arg}=...): {len(parts)} ToNNX part(s) of {arg} have no variables yet "
        f"(lazy_init was never run): {shown}.\n"
        f"Fix: create them with a sample input before {fn}: "
        f"{arg} = linnx.lazy_init({arg}, x)."
    )


def check_linen(obj: Any, fn: str, arg: str = "linen_module") -> None:
    """``obj`` must be a Linen module instance."""
    if isinstance(obj, nn.Module):
        return
    if isinstance(obj, type) and issubclass(obj, nn.Module):
        fix = f"instantiate it with its fields, e.g. {obj.__name__}(...)."
    elif isinstance(obj, nnx.Pytree):
        fix = "this argument is the original Linen module; the NNX model goes to nnx_model=."
    else:
        fix = "pass the Linen module instance, e.g. ResNet(num_classes=10)."
    raise MigrationTypeError(
        f"{fn}({arg}=...): expected a Linen module instance, got {_kind(obj)}.\nFix: {fix}"
    )


def check_plan(plan: Any, fn: str, optional: bool = False) -> None:
    if isinstance(plan, Plan) or (optional and plan is None):
        return
    raise MigrationTypeError(
        f"{fn}(plan=...): expected the Plan that match(...) returns, got {_kind(plan)}.\n"
        "Fix: plan = migrate.match(linen_module, nnx_model, sample_input)."
    )


def check_mapping(obj: Any, fn: str, arg: str, example: str, optional: bool = False) -> None:
    if isinstance(obj, Mapping) or (optional and obj is None):
        return
    raise MigrationTypeError(
        f"{fn}({arg}=...): expected a dict, got {_kind(obj)}.\nFix: e.g. {arg}={example}."
    )


def check_path(path: Any, fn: str, arg: str = "path") -> None:
    if isinstance(path, str | os.PathLike) and str(path):
        return
    raise MigrationTypeError(
        f"{fn}({arg}={path!r}): expected a directory path (a str or pathlib.Path).\n"
        f"Fix: e.g. {fn}('/tmp/ckpt', ...)."
    )


def _nonfinite(value: Any) -> tuple[int, int] | None:
    """``(NaN count, inf count)`` of a floating array, or None when it is finite (or not float)."""
    dtype = getattr(value, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
        return None
    # Host arrays (what Orbax restores) stay in numpy; device arrays are reduced on device.
    xp = jnp if isinstance(value, jax.Array) else np
    if bool(xp.all(xp.isfinite(value))):
        return None
    return int(xp.sum(xp.isnan(value))), int(xp.sum(xp.isinf(value)))


def check_finite(named: Iterable[tuple[str, Any]], allow: Patterns, *, what: str, fn: str) -> None:
    """Raises :class:`NonFiniteValuesError` listing every leaf with NaN or inf, unless allowed."""
    if allow is True:
        return
    allowed = patterns(None if isinstance(allow, bool) else allow, "allow_nonfinite")
    bad: list[tuple[str, int, int]] = []
    for path, value in named:
        counts = _nonfinite(value)
        # A path may read "linen path -> nnx path": either side may be allowed.
        if counts is not None and not any(
            matches_any(part, allowed) for part in path.split(" -> ")
        ):
            bad.append((path, *counts))
    if not bad:
        return
    shown = "\n".join(f"  {p}: {n} NaN, {i} inf" for p, n, i in bad[:20])
    more = f"\n  ... ({len(bad) - 20} more)" if len(bad) > 20 else ""
    raise NonFiniteValuesError(
        f"{fn}: {len(bad)} {what} hold NaN or infinite values; nothing was changed.\n"
        f"{shown}{more}\n"
        "Fix: such values usually come from a diverged run or a damaged checkpoint: migrate an "
        "earlier checkpoint. If they are intended (e.g. -inf attention biases), pass "
        f"allow_nonfinite=True, or allow_nonfinite={[bad[0][0].split(' -> ')[0]]!r} for "
        "chosen paths.",
        paths=bad,
    )
