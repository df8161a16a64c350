"""Reading and writing the stored values of many ``nnx.Variable``s per call, cheaply.

The fast path reads every variable of a step's arguments before the call and writes the
changed ones back after it, so these four functions run once per variable per step. Flax
0.12 stores a variable's value and metadata in two slots of ``nnx.Variable``
(``_raw_value``, ``_var_metadata``); their slot descriptors read and write a variable in one
C call, where ``get_raw_value()``/``set_raw_value()`` add a method call and a trace-level
check each (the fast path checks the trace level once per call instead, see
``_entry.Entry.trace``). Writing the raw value is what ``nnx.jit`` itself does to apply a
step's updates: no ``on_set_value`` hook runs, in both.

Where the slots are not what this expects (another Flax version), the public methods are
used instead: slower, same results.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from flax import nnx

__all__ = ["get_raw", "set_raw", "metadata_of", "is_plain_variable"]


# private Flax access: move to the internals module
def _slot_accessors() -> tuple[Callable[..., Any], Callable[[Any, Any], None], Callable[..., Any]]:
    raw = vars(nnx.Variable).get("_raw_value")
    meta = vars(nnx.Variable).get("_var_metadata")
    if isinstance(raw, types.MemberDescriptorType) and isinstance(
        meta, types.MemberDescriptorType
    ):
        return raw.__get__, raw.__set__, meta.__get__

    def set_value(var: nnx.Variable, value: Any) -> None:
        var.set_raw_value(value)

    return nnx.Variable.get_raw_value, set_value, nnx.Variable.get_metadata


#: ``get_raw(var)``: the stored value; ``set_raw(var, value)``: store a value (no hooks, no
#: trace-level check); ``metadata_of(var)``: the metadata mapping, compared from call to call.
get_raw, set_raw, metadata_of = _slot_accessors()


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
