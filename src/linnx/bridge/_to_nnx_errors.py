"""The messages of ``ToNNX``'s errors, and the errors built from Linen's.

A ``ToNNX`` call runs Linen's ``apply``; the Flax errors it can raise are turned here into
linnx errors that say what to do in NNX terms (call ``lazy_init``, pass ``mutable=``, give
the wrapper ``rngs``) and are also the Flax errors they replace (``standing_in_for``).
"""

from __future__ import annotations

from typing import Any

import flax.errors
import jax

from .._errors import RngStreamError, StructureMismatchError, standing_in_for
from .._flax_internals import rng_stream_in, shape_mismatch_in

__all__ = [
    "NOT_INITIALIZED",
    "MISSING_VARIABLES",
    "IMMUTABLE",
    "FROZEN",
    "NOT_INIT_ERRORS",
    "kind_of",
    "rngs_argument",
    "rngs_error",
    "shape_error",
]

NOT_INITIALIZED = (
    "{name} has no variables yet: it was called before initialization.\n"
    "Fix: create them with a sample input first, as Linen's `init` would:\n"
    "  model = linnx.lazy_init({call}, x)       # or: model.lazy_init(x)\n"
    "lazy_init also works on an NNX module that contains this ToNNX anywhere inside it.\n"
    "Detail: {cause}"
)

MISSING_VARIABLES = (
    "{name} lacks variables that this call needs: its initialization did not create them "
    "(for instance it ran through another method).\n"
    "Fix: create the missing ones with a sample input; existing variables are kept:\n"
    "  linnx.lazy_init({call}, x)\n"
    "Linen said: {cause}"
)

IMMUTABLE = (
    "{name} writes the collection {collection!r}, which this call did not mark mutable.\n"
    "Fix: pass it, e.g. model(x, mutable=[{collection!r}]) (or mutable=True for all); the "
    "new values are written back into the module.\n"
    "Linen said: {cause}"
)

FROZEN = (
    "{name} cannot store the collections this call updated ({what}): they belong to an "
    "outer JAX trace. This happens when a JAX transform such as jax.jit, jax.grad or "
    "jax.vmap closes over the module instead of receiving it.\n"
    "Fix: use the NNX transform (nnx.jit, nnx.grad, nnx.vmap...) and pass the module as an "
    "argument, or pass its state explicitly with nnx.split / nnx.merge; or call without "
    "`mutable` to leave the module unchanged (run lazy_init outside such transforms)."
)

NOT_INIT_ERRORS = (
    flax.errors.ScopeParamNotFoundError,
    flax.errors.ScopeCollectionNotFound,
    flax.errors.ScopeVariableNotFoundError,
)


def kind_of(value: Any) -> str:
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        return "a jax.random.key"
    return type(value).__name__


def rngs_argument(value: Any) -> str:
    """What to put inside ``nnx.Rngs(...)`` in the fix, without printing an array."""
    if isinstance(value, int) and not isinstance(value, bool):
        return repr(value)
    if isinstance(value, jax.Array):
        return "key" if kind_of(value) == "a jax.random.key" else "0"
    if isinstance(value, dict):
        return ", ".join(f"{k}=..." for k in value if isinstance(k, str)) or "0"
    return "0"


def rngs_error(wrapper: Any, cause: Exception, frozen: list[str]) -> RngStreamError:
    name = f"ToNNX({type(wrapper.module).__name__})"
    error = standing_in_for(RngStreamError, type(cause))
    if frozen:
        return error(
            f"{name} needs an rng stream that cannot advance here: {cause}\n"
            f"The streams {frozen} belong to an outer JAX trace: a JAX transform such as "
            f"jax.jit or jax.eval_shape closes over the module instead of receiving it, so "
            f"drawing a key (which counts the draw) is impossible.\n"
            f"Fix: use the NNX transform (nnx.jit...) and pass the module as an argument, or "
            f"give this call its own keys, e.g. model(x, rngs={{'dropout': key}})."
        )
    stream = rng_stream_in(cause)
    needs = f"the rng stream {stream!r}" if stream else "an rng stream"
    fix = (
        "Fix: create the wrapper with rngs=nnx.Rngs(0) (a default stream serves every name), "
        "or name the stream, e.g. rngs=nnx.Rngs(params=0, dropout=1)."
    )
    if wrapper.rngs is None:
        return error(
            f"{name} needs {needs}, but it has no rngs (rngs=None).\nLinen said: {cause}\n{fix}"
        )
    return error(
        f"{name} needs {needs}, which its rngs do not have (streams: {sorted(wrapper.rngs)}).\n"
        f"Linen said: {cause}\n{fix}"
    )


def shape_error(name: str, cause: Exception) -> StructureMismatchError:
    """Linen's ``ScopeParamShapeError`` as a typed error naming the variable's path."""
    found = shape_mismatch_in(cause)
    if found is None:
        mismatched = [("params", "another shape", str(cause))]
    else:
        leaf, scope, needed, stored = found
        path = "/".join(["params", *[k for k in scope.split("/") if k], leaf])
        mismatched = [(path, f"shape {needed} for this input", f"shape {stored}")]
    return standing_in_for(StructureMismatchError, type(cause)).from_paths(
        f"The variables of {name}",
        mismatched=mismatched,
        fix="call with inputs shaped like the sample given to lazy_init; for another shape, "
        "create a new wrapper and lazy_init it with that shape. If you replaced the variable "
        "yourself, give it its original shape.",
    )
