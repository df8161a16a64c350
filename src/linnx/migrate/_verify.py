"""Proving a migration: run both models on the same inputs and compare.

NNX and Linen draw different initial values from the same seed, so the only evidence that a
port is faithful is to copy the weights and compare outputs. Two modes are compared:

* **eval**: Linen with the caller's ``linen_kwargs`` (e.g. ``training=False``), NNX after
  ``.eval()``.
* **train**: Linen with the training flags flipped (``training``/``train`` -> True,
  ``deterministic``/``use_running_average`` -> False, or ``linen_train_kwargs``), NNX after
  ``.train()``. Besides the outputs, every collection the Linen call updates (BatchNorm's
  ``batch_stats``, counters) is compared with the NNX state after its call, read back through
  the plan. Dropout (layers and attention) is switched off on both sides in this mode: the
  two libraries cannot draw the same mask, and the point is the batch statistics path. What
  stays random is found and named in the report (see ``_deterministic.py``).

The caller's NNX model is never modified: each mode runs on a clone.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from flax import linen as nn
from flax import nnx

from .._errors import LinnxError
from .._keypath import path_str
from .._public import public
from ._checks import check_initialized, check_linen, check_mapping, check_nnx, check_plan
from ._deterministic import (
    LinenCalls,
    drawn_streams,
    first_random_call,
    linen_without_dropout,
    nnx_without_dropout,
    rng_counts,
)
from ._errors import MigrationTypeError, TraceError, VerificationError
from ._match import match
from ._paths import flatten_mapping, unboxed
from ._plan import Plan
from ._record import non_weight_leaf
from ._transfer import nnx_to_linen

__all__ = ["Difference", "VerifyReport", "verify", "train_kwargs_for"]

_TRAIN_TRUE = frozenset({"train", "training", "is_training"})
_TRAIN_FALSE = frozenset(
    {"deterministic", "use_running_average", "eval", "is_eval", "inference", "evaluation"}
)


@public("linnx.migrate")
@dataclass(frozen=True)
class Difference:
    """The largest difference between the Linen and NNX values of one compared quantity.

    ``max_rel`` is ``max_abs`` divided by the largest magnitude of the Linen values.

    Example:
        >>> from linnx import migrate
        >>> d = migrate.Difference('eval', 'output', 1e-7, 1e-7, True)
        >>> d.ok
        True
    """

    mode: str
    name: str
    max_abs: float
    max_rel: float
    ok: bool
    note: str = ""


@public("linnx.migrate")
class VerifyReport:
    """Outcome of :func:`verify`: one :class:`Difference` per output and updated collection.

    Example:
        >>> from linnx import migrate
        >>> report = migrate.VerifyReport(
        ...     [migrate.Difference('eval', 'output', 0.0, 0.0, True)], atol=1e-5, rtol=1e-5)
        >>> report.ok, report.max_abs
        (True, 0.0)
    """

    def __init__(
        self,
        differences: Sequence[Difference],
        *,
        atol: float,
        rtol: float,
        notes: Sequence[str] = (),
    ):
        self.differences = tuple(differences)
        self.atol = atol
        self.rtol = rtol
        self.notes = tuple(notes)

    @property
    def ok(self) -> bool:
        """True when every compared quantity is within tolerance."""
        return all(d.ok for d in self.differences)

    @property
    def max_abs(self) -> float:
        """The largest absolute difference over everything compared."""
        return max((d.max_abs for d in self.differences), default=0.0)

    @property
    def max_rel(self) -> float:
        """The largest relative difference over everything compared."""
        return max((d.max_rel for d in self.differences), default=0.0)

    def __str__(self) -> str:
        status = "passed" if self.ok else "FAILED"
        rows = [
            (
                d.mode,
                d.name,
                f"{d.max_abs:.3g}",
                f"{d.max_rel:.3g}",
                "ok" if d.ok else "FAIL",
                d.note,
            )
            for d in self.differences
        ]
        head = ("mode", "compared", "max abs diff", "max rel diff", "", "")
        widths = [max([len(head[c])] + [len(r[c]) for r in rows]) for c in range(6)]
        lines = [f"Verification {status} (atol={self.atol:g}, rtol={self.rtol:g})"]
        for r in [head, *rows]:
            lines.append("  " + "  ".join(r[c].ljust(widths[c]) for c in range(6)).rstrip())
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"VerifyReport(ok={self.ok}, max_abs={self.max_abs:.3g})"

    def raise_for_failure(self) -> None:
        """Raises :class:`VerificationError` (with the table) unless :attr:`ok`."""
        if not self.ok:
            raise VerificationError(
                f"The NNX model does not reproduce the Linen model.\n{self}\n"
                "Fix: check the rows marked FAIL: an output points at the forward pass (a "
                "missing activation, another epsilon or momentum), a collection at the "
                "update rule (BatchNorm momentum, counters)."
            )


@public("linnx.migrate")
def train_kwargs_for(linen_kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Flips the boolean training flags of Linen call arguments; says whether any was found.

    Example:
        >>> from linnx import migrate
        >>> migrate.train_kwargs_for({'training': False})
        ({'training': True}, True)
    """
    check_mapping(linen_kwargs, "train_kwargs_for", "linen_kwargs", "{'training': False}")
    out, flipped = dict(linen_kwargs), False
    for key, value in linen_kwargs.items():
        if isinstance(value, bool) and key in _TRAIN_TRUE:
            out[key], flipped = True, True
        elif isinstance(value, bool) and key in _TRAIN_FALSE:
            out[key], flipped = False, True
    return out, flipped


def _key_data(x: Any) -> Any:
    """Typed PRNG keys (RNG state of to_linen modules) compare by their key data."""
    dtype = getattr(x, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.extended):
        return jax.random.key_data(x)
    return x


def _compare(a: Any, b: Any, atol: float, rtol: float) -> tuple[float, float, bool, str]:
    a, b = _key_data(a), _key_data(b)
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        return math.inf, math.inf, False, f"shape {x.shape} (Linen) vs {y.shape} (NNX)"
    if x.size == 0:
        return 0.0, 0.0, True, ""
    diff = float(np.max(np.abs(x - y)))
    ref = float(np.max(np.abs(x)))
    rel = diff / ref if ref > 0 else (0.0 if diff == 0 else math.inf)
    return diff, rel, bool(diff <= atol + rtol * ref), ""


def _leaves(tree: Any) -> list[tuple[str, Any]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(p), leaf) for p, leaf in flat]


def _compare_outputs(mode, linen_out, nnx_out, atol, rtol) -> list[Difference]:
    la, na = _leaves(linen_out), _leaves(nnx_out)
    note = ""
    if [k for k, _ in la] != [k for k, _ in na]:
        if len(la) != len(na):
            return [
                Difference(
                    mode,
                    "output",
                    math.inf,
                    math.inf,
                    False,
                    f"{len(la)} Linen output leaves vs {len(na)} NNX ones",
                )
            ]
        note = "output structures differ; compared leaf by leaf"
    out = []
    for (key, a), (_, b) in zip(la, na, strict=True):
        d, r, ok, why = _compare(a, b, atol, rtol)
        out.append(Difference(mode, f"output{key}", d, r, ok, why or note))
    return out


def _compare_collections(mode, updates, after, atol, rtol) -> list[Difference]:
    out = []
    by_col: dict[str, list[tuple[str, Any]]] = {}
    for path, leaf in flatten_mapping(unboxed(updates)).items():
        if non_weight_leaf(leaf) is not None:
            continue  # a to_linen graphdef, params_axes names: structure, not state
        by_col.setdefault(str(path[0]), []).append((path_str(path), leaf))
    for col, leaves in sorted(by_col.items()):
        worst = (0.0, 0.0, True, "")
        missing = []
        for where, leaf in leaves:
            if where not in after:
                missing.append(where)
                continue
            res = _compare(leaf, after[where], atol, rtol)
            if (not res[2], res[0]) > (not worst[2], worst[0]):
                worst = (*res[:3], res[3] or where)
        if missing:
            out.append(
                Difference(
                    mode,
                    col,
                    math.inf,
                    math.inf,
                    False,
                    f"not on the NNX side: {', '.join(missing[:5])}",
                )
            )
        else:
            out.append(
                Difference(
                    mode,
                    col,
                    worst[0],
                    worst[1],
                    worst[2],
                    f"worst: {worst[3]}" if worst[3] else "",
                )
            )
    return out


def _apply_linen(module, variables, args, kwargs, method, key):
    mutable = [c for c in variables if c != "params"]
    res = module.apply(
        variables,
        *args,
        rngs={"dropout": key},
        method=method,
        mutable=mutable if mutable else False,
        **kwargs,
    )
    return res if mutable else (res, {})


def _run_linen(module, variables, args, kwargs, method, train, findings):
    if not train:
        return _apply_linen(module, variables, args, kwargs, method, jax.random.key(0))
    # Twice, with other dropout keys: whatever still differs is randomness the switches missed.
    first, second = LinenCalls(), LinenCalls()
    with linen_without_dropout(first):
        result = _apply_linen(module, variables, args, kwargs, method, jax.random.key(0))
    with linen_without_dropout(second):
        _apply_linen(module, variables, args, kwargs, method, jax.random.key(1))
    findings["linen_bypassed"] = len(first.bypassed)
    findings["linen_random"] = first_random_call(first, second)
    return result


def _run_nnx(model, plan, args, kwargs, method, train, findings):
    clone = nnx.clone(model)
    ctx = contextlib.nullcontext()
    if train:
        clone.train()
        findings["nnx_switched"] = len(nnx_without_dropout(clone))
        # A partly ported model may still run Linen layers through ToNNX: their dropout is
        # switched off the Linen way.
        ctx = linen_without_dropout(LinenCalls())
    else:
        clone.eval()
    counts = rng_counts(clone) if train else {}
    fn = clone if method is None else getattr(clone, method)
    with ctx:
        out = nnx.capture(fn, nnx.Intermediate)(*args, **kwargs)[0]  # see _record.record_nnx
    if train:
        findings["nnx_random"] = drawn_streams(clone, counts, rng_counts(clone))

    def after() -> dict[str, Any]:
        """The NNX state after the call, as Linen variables: only read when the Linen call
        updated collections (an eval call usually updates none, and reading every weight
        back would copy the stacked ones: a second copy of the model)."""
        # A NaN here is a finding of the comparison, not a reason to refuse it.
        back = nnx_to_linen(clone, plan, allow_missing="*", allow_unused="*", allow_nonfinite=True)
        return {path_str(p): v for p, v in flatten_mapping(back).items()}

    return out, after


def _train_notes(findings: Mapping[str, Any]) -> list[str]:
    """What train mode did about randomness: only what the run made true."""
    linen_random, nnx_random = findings["linen_random"], findings["nnx_random"]
    notes = []
    if linen_random is not None:
        path, cls = linen_random
        notes.append(
            f"train mode is not deterministic on the Linen side: {path} ({cls}) gave other "
            "outputs with another 'dropout' key after nn.Dropout and attention dropout were "
            "switched off, so its train-mode rows compare random draws (pass "
            "train=False, or make that module deterministic in linen_train_kwargs=)"
        )
    if nnx_random:
        where = ", ".join(f"{stream} of {owner}" for stream, owner in nnx_random[:3])
        notes.append(
            f"train mode is not deterministic on the NNX side: random numbers were drawn from "
            f"{where} after nnx.Dropout and nnx.MultiHeadAttention were made deterministic, "
            "so its train-mode rows compare random draws (pass train=False, or switch that "
            "module off in nnx_train_kwargs=)"
        )
    if not notes:
        notes.append(
            f"train mode ran without dropout on both sides (masks cannot agree): "
            f"{findings['linen_bypassed']} Linen dropout/attention layer(s) bypassed, "
            f"{findings['nnx_switched']} NNX module(s) made deterministic; neither side drew "
            "other random numbers"
        )
    return notes


@contextlib.contextmanager
def _running(side: str, mode: str, arg: str):
    """A model that fails on the sample inputs is a TraceError naming the side and the mode."""
    try:
        yield
    except LinnxError:
        raise
    except Exception as e:
        raise TraceError(
            f"verify: the {side} model could not run on the sample inputs in {mode} mode: "
            f"{type(e).__name__}: {e}\n"
            f"Fix: pass the sample inputs both models accept (the ones given to match), and "
            f"the call arguments the {side} model needs in {arg}=."
        ) from e


@public("linnx.migrate")
def verify(
    linen_module: nn.Module,
    variables: Mapping[str, Any],
    nnx_model: nnx.Module,
    *sample_args: Any,
    linen_kwargs: Mapping[str, Any] | None = None,
    nnx_kwargs: Mapping[str, Any] | None = None,
    plan: Plan | None = None,
    train: bool = True,
    linen_train_kwargs: Mapping[str, Any] | None = None,
    nnx_train_kwargs: Mapping[str, Any] | None = None,
    linen_method: str | None = None,
    nnx_method: str | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> VerifyReport:
    """Runs the Linen module and the migrated NNX model on the same inputs and compares them.

    Args:
        linen_module: the Linen module.
        variables: its variables (the ones migrated into ``nnx_model``).
        nnx_model: the NNX model, already filled (it is not modified).
        *sample_args: concrete inputs for both models.
        linen_kwargs: Linen call arguments for eval mode, e.g. ``{'training': False}``.
        nnx_kwargs: NNX call arguments.
        plan: the plan used for the migration (built with :func:`match` if omitted); it reads
            the NNX state back into the Linen layout to compare updated collections.
        train: also compare train mode (outputs and updated collections).
        linen_train_kwargs: Linen call arguments for train mode (default: ``linen_kwargs``
            with the training flags flipped).
        nnx_train_kwargs: NNX call arguments for train mode (default: ``nnx_kwargs``).
        linen_method / nnx_method: methods to call instead of ``__call__``.
        atol / rtol: a quantity passes when ``max_abs <= atol + rtol * max|linen|``.

    Returns:
        A :class:`VerifyReport`; ``report.ok`` says whether everything matched.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import linen as nn, nnx
        >>> from linnx import migrate
        >>> x = jnp.ones((2, 3))
        >>> variables = nn.Dense(4).init(jax.random.key(0), x)
        >>> model = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
        >>> plan = migrate.match(nn.Dense(4), model, x)
        >>> model = migrate.linen_to_nnx(variables, model, plan)
        >>> report = migrate.verify(nn.Dense(4), variables, model, x, plan=plan)
        >>> report.ok, report.max_abs
        (True, 0.0)
    """
    fn = "verify"
    check_linen(linen_module, fn)
    check_mapping(variables, fn, "variables", "{'params': ..., 'batch_stats': ...}")
    check_nnx(nnx_model, fn)
    check_initialized(nnx_model, fn)
    check_plan(plan, fn, optional=True)
    for arg, kw in (
        ("linen_kwargs", linen_kwargs),
        ("nnx_kwargs", nnx_kwargs),
        ("linen_train_kwargs", linen_train_kwargs),
        ("nnx_train_kwargs", nnx_train_kwargs),
    ):
        check_mapping(kw, fn, arg, "{'train': False}", optional=True)
    for arg, tol in (("atol", atol), ("rtol", rtol)):
        if isinstance(tol, bool) or not isinstance(tol, int | float) or not tol >= 0:
            raise MigrationTypeError(
                f"verify({arg}={tol!r}): expected a number >= 0.\nFix: e.g. {arg}=1e-5."
            )
    linen_kw = dict(linen_kwargs or {})
    nnx_kw = dict(nnx_kwargs or {})
    if plan is None:
        plan = match(
            linen_module,
            nnx_model,
            *sample_args,
            linen_kwargs=linen_kw,
            nnx_kwargs=nnx_kw,
            linen_method=linen_method,
            nnx_method=nnx_method,
        )
    notes = []
    diffs: list[Difference] = []
    modes = [("eval", linen_kw, nnx_kw, False)]
    if train:
        if linen_train_kwargs is None:
            linen_train_kw, flipped = train_kwargs_for(linen_kw)
            if not flipped:
                notes.append(
                    "no training flag in linen_kwargs; train mode ran Linen with the same "
                    "arguments (pass linen_train_kwargs= to choose them)"
                )
        else:
            linen_train_kw = dict(linen_train_kwargs)
        nnx_train_kw = dict(nnx_kw if nnx_train_kwargs is None else nnx_train_kwargs)
        modes.append(("train", linen_train_kw, nnx_train_kw, True))
    findings: dict[str, Any] = {}
    for mode, linen_call_kw, nnx_call_kw, is_train in modes:
        with _running("Linen", mode, "linen_kwargs" if mode == "eval" else "linen_train_kwargs"):
            linen_out, updates = _run_linen(
                linen_module,
                variables,
                sample_args,
                linen_call_kw,
                linen_method,
                is_train,
                findings,
            )
        with _running("NNX", mode, "nnx_kwargs" if mode == "eval" else "nnx_train_kwargs"):
            nnx_out, after = _run_nnx(
                nnx_model, plan, sample_args, nnx_call_kw, nnx_method, is_train, findings
            )
        diffs += _compare_outputs(mode, linen_out, nnx_out, atol, rtol)
        diffs += _compare_collections(mode, updates, after() if updates else {}, atol, rtol)
    if train:
        notes += _train_notes(findings)
    return VerifyReport(diffs, atol=atol, rtol=rtol, notes=notes)
