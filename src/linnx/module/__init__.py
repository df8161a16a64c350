"""Linen-style NNX modules: write Linen, get an NNX module.

:class:`Module` is an ``nnx.Module`` with Linen's authoring API (``@compact``, ``setup``,
``self.param``, ``self.variable``, ``self.make_rng``, ``self.sow``) and Linen's ``init`` /
``apply``; :mod:`linnx.module.nn` holds Linen-style layers that need no input size; and
:func:`functional` gives any NNX module class pure ``init``/``apply`` functions.
"""

from . import nn as nn
from ._construction import compact as compact
from ._errors import ModuleDefinitionError as ModuleDefinitionError
from ._errors import NameInUseError as NameInUseError
from ._functional import Functional as Functional
from ._functional import functional as functional
from ._module import Module as Module
