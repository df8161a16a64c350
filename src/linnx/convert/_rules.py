"""The layer table: which Flax Linen layer becomes which NNX layer, and how its arguments move.

Linen layers learn their input sizes on the first call; NNX layers take them in ``__init__``.
Each :class:`Rule` says where the input size goes (the ``<in>`` slot of ``positional``), which
Linen fields are renamed (``features`` -> ``out_features``), which fields only pick the mode
(``deterministic``, ``use_running_average``: ``model.train()``/``model.eval()`` set them in
NNX), and how the output's last axis follows (for the next layer's input size). Variable names
are the same on both sides for every layer here (``kernel``, ``bias``, ``scale``, ``mean``,
``var``, ``embedding``, and MultiHeadAttention's ``query``/``key``/``value``/``out``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Rule", "RULES", "IN", "rule_for", "nnx_kwargs", "nnx_function"]

#: The slot of ``Rule.positional`` that receives the input size.
IN = "<in>"


@dataclass(frozen=True)
class Rule:
    """How one Linen layer class converts.

    Attributes:
        linen: the Linen class name (``'Dense'``).
        nnx: the NNX class name (``'Linear'``).
        positional: the NNX positional arguments in order: Linen field names, and ``IN``
            where the input size goes. Other fields are written as keywords.
        size_kw: the NNX keyword of the input size (used when a factory is called).
        rename: Linen field -> NNX argument name.
        modes: Linen fields (and call arguments) that only choose train/eval behaviour.
        call_modes: position -> name of such an argument where the Linen layer's call takes
            it positionally (``nn.Dropout(rate)(x, deterministic)``).
        out: the Linen field that gives the output's last axis; ``IN`` when it keeps the
            input's; ``None`` when unknown.
        out_default_in: ``out`` falls back to the input size when the field is unset.
        extra: NNX arguments to write when the Linen code did not set the field (Linen's
            default differs from NNX's).
    """

    linen: str
    nnx: str
    positional: tuple[str, ...]
    size_kw: str | None = None
    rename: Mapping[str, str] = field(default_factory=dict)
    modes: tuple[str, ...] = ()
    call_modes: Mapping[int, str] = field(default_factory=dict)
    out: str | None = IN
    out_default_in: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)  # NNX arguments Linen implies

    @property
    def needs_size(self) -> bool:
        return IN in self.positional


_ATTENTION: dict[str, Any] = dict(
    positional=("num_heads", IN),
    size_kw="in_features",
    modes=("deterministic",),
    out="out_features",
    out_default_in=True,
    extra={"decode": "False", "deterministic": "False"},
)

RULES: dict[str, Rule] = {
    r.linen: r
    for r in (
        Rule(
            "Dense",
            "Linear",
            (IN, "features"),
            "in_features",
            {"features": "out_features"},
            out="features",
        ),
        Rule(
            "DenseGeneral",
            "LinearGeneral",
            (IN, "features"),
            "in_features",
            {"features": "out_features"},
            out="features",
        ),
        Rule(
            "Conv",
            "Conv",
            (IN, "features", "kernel_size"),
            "in_features",
            {"features": "out_features"},
            out="features",
        ),
        Rule(
            "ConvTranspose",
            "ConvTranspose",
            (IN, "features", "kernel_size"),
            "in_features",
            {"features": "out_features"},
            out="features",
        ),
        Rule("Embed", "Embed", ("num_embeddings", "features"), out="features"),
        Rule("LayerNorm", "LayerNorm", (IN,), "num_features"),
        Rule("RMSNorm", "RMSNorm", (IN,), "num_features"),
        Rule("GroupNorm", "GroupNorm", (IN,), "num_features"),
        Rule(
            "BatchNorm",
            "BatchNorm",
            (IN,),
            "num_features",
            modes=("use_running_average",),
            call_modes={1: "use_running_average"},
        ),
        Rule(
            "Dropout",
            "Dropout",
            ("rate",),
            modes=("deterministic",),
            call_modes={1: "deterministic"},
        ),
        Rule("MultiHeadDotProductAttention", "MultiHeadAttention", **_ATTENTION),
        Rule("MultiHeadAttention", "MultiHeadAttention", **_ATTENTION),
        Rule("SelfAttention", "MultiHeadAttention", **_ATTENTION),
    )
}


def call_mode(rule: Rule, index: int, arg: Any) -> str | None:
    """The train/eval argument that argument ``index`` (a ``cst.Arg``) of a call of the
    layer sets, by keyword or by position; ``None`` for any other argument."""
    if arg.keyword is not None:
        return arg.keyword.value if arg.keyword.value in rule.modes else None
    return rule.call_modes.get(index) if not arg.star else None


def rule_for(cls: type) -> Rule | None:
    """The rule of a Flax Linen layer class (``None`` for anything else)."""
    if not getattr(cls, "__module__", "").startswith("flax.linen"):
        return None
    return RULES.get(cls.__name__)


@functools.cache
def nnx_kwargs(nnx_name: str) -> frozenset[str]:
    """The argument names that the NNX layer's ``__init__`` accepts."""
    from flax import nnx

    sig = inspect.signature(getattr(nnx, nnx_name).__init__)
    return frozenset(p for p in sig.parameters if p != "self")


#: Linen's lifted transforms: their NNX forms differ in signature and meaning (issue 20).
LIFTED = frozenset(
    "scan vmap jit remat checkpoint remat_scan map_variables while_loop cond switch "
    "custom_vjp jvp vjp grad value_and_grad named_call fold_rngs add_metadata_axis "
    "shard_map".split()
)


@functools.cache
def nnx_function(name: str) -> bool:
    """Whether ``nn.<name>`` (an activation, pooling, initializers...) is ``nnx.<name>`` too."""
    from flax import linen as nn
    from flax import nnx

    if name in LIFTED:
        return False
    ours = getattr(nn, name, None)
    theirs = getattr(nnx, name, None)
    if ours is None or theirs is None or isinstance(ours, type):
        return False
    return ours is theirs or getattr(ours, "__name__", None) == getattr(theirs, "__name__", 0)
