"""``linnx.jit``: NNX train steps with ``nnx.jit``'s semantics at the speed of ``jax.jit``."""

from ._errors import JitArgumentError as JitArgumentError
from ._errors import JitFallbackWarning as JitFallbackWarning
from ._errors import JitTypeError as JitTypeError
from ._wrapper import JitWrapped as JitWrapped
from ._wrapper import jit as jit
