"""linnx: run Flax Linen and Flax NNX together, and migrate Linen to NNX.

``import linnx as bridge`` gives the API of Flax's bridge guide: :class:`ToNNX` and
:func:`lazy_init` (Linen inside NNX), :class:`ToLinen` and :func:`to_linen` (NNX inside
Linen), :class:`NNXMeta`, and the collection <-> variable type registry. :class:`Module`,
:func:`compact`, :mod:`nn` (Linen-style layers) and :func:`functional` write Linen-style
modules that are NNX modules. :func:`jit` compiles NNX train steps with ``nnx.jit``'s
semantics at the speed of a Linen ``jax.jit`` step.
"""

from ._errors import AmbiguousNameError as AmbiguousNameError
from ._errors import BridgeTypeError as BridgeTypeError
from ._errors import LinnxError as LinnxError
from ._errors import MutableCollectionError as MutableCollectionError
from ._errors import NotInitializedError as NotInitializedError
from ._errors import RegistryConflictError as RegistryConflictError
from ._errors import RngStreamError as RngStreamError
from ._errors import ShardingRulesError as ShardingRulesError
from ._errors import StructureMismatchError as StructureMismatchError
from ._errors import UnknownMethodError as UnknownMethodError
from ._jit import JitArgumentError as JitArgumentError
from ._jit import JitFallbackWarning as JitFallbackWarning
from ._jit import JitTypeError as JitTypeError
from ._jit import JitWrapped as JitWrapped
from ._jit import jit as jit
from .bridge import NNXMeta as NNXMeta
from .bridge import ToLinen as ToLinen
from .bridge import ToNNX as ToNNX
from .bridge import lazy_init as lazy_init
from .bridge import register_variable_name as register_variable_name
from .bridge import register_variable_name_type_pair as register_variable_name_type_pair
from .bridge import registered_pairs as registered_pairs
from .bridge import to_linen as to_linen
from .bridge import to_linen_class as to_linen_class
from .bridge import variable_name_from_type as variable_name_from_type
from .bridge import variable_type_from_name as variable_type_from_name
from .module import Functional as Functional
from .module import Module as Module
from .module import ModuleDefinitionError as ModuleDefinitionError
from .module import NameInUseError as NameInUseError
from .module import compact as compact
from .module import functional as functional
from .module import nn as nn

__version__ = "0.1.0"


def __getattr__(name: str):
    # `linnx.migrate` imports Orbax and `linnx.convert` LibCST (and migrate): load them on
    # first use so `import linnx` stays light.
    if name in ("migrate", "convert"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'linnx' has no attribute {name!r}")
