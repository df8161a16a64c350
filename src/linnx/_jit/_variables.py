"""Reading and writing the stored values of many ``nnx.Variable``s per call, cheaply.

The fast path reads every variable of a step's arguments before the call and writes the
changed ones back after it, so these four functions run once per variable per step. The
accessors come from :func:`linnx._flax_internals.variable_slot_accessors` (the slots of
``nnx.Variable``: one C call each, no per-variable trace-level check; the fast path checks
the trace level once per call instead, see ``_entry.Entry.trace``). Writing the raw value is
what ``nnx.jit`` itself does to apply a step's updates: no ``on_set_value`` hook runs, in
both.

Where the slots are not what that module expects (another Flax version), the public methods
are used instead: slower, same results.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from .. import _flax_internals

__all__ = ["get_raw", "set_raw", "metadata_of", "is_plain_variable"]


get_raw, set_raw, metadata_of = _flax_internals.variable_slot_accessors()


def is_plain_variable(var: Any) -> bool:
    """Whether ``var`` is an ordinary ``nnx.Variable`` the fast path may read and write.

    Hijax variables (another class, which ``isinstance`` accepts) and variables holding array
    refs (``ref=True``) are read and written through JAX's own machinery, which the fast
    path does not reproduce.
    """
    if not issubclass(type(var), nnx.Variable):
        return False
    metadata = var.get_metadata()
    return not metadata.get("hijax", False) and not metadata.get("ref", False)
