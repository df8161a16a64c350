"""Migrating Linen weights, optimizer state and Orbax checkpoints to hand-ported NNX models.

``plan = match(linen_module, nnx_model, x)`` pairs the variables of the two models (by tracing
both abstractly and aligning their layer calls), ``linen_to_nnx(variables, nnx_model, plan)``
copies the values and refuses to leave anything behind, ``verify(...)`` proves the result by
comparing outputs and BatchNorm statistics, and ``nnx_to_linen`` goes back.
"""

from ._checkpoint import LinenCheckpoint as LinenCheckpoint
from ._checkpoint import linen_checkpoint_to_nnx as linen_checkpoint_to_nnx
from ._checkpoint import load_nnx_checkpoint as load_nnx_checkpoint
from ._checkpoint import nnx_checkpoint_to_linen as nnx_checkpoint_to_linen
from ._checkpoint import read_linen_checkpoint as read_linen_checkpoint
from ._checkpoint import save_linen_checkpoint as save_linen_checkpoint
from ._checkpoint import save_nnx_checkpoint as save_nnx_checkpoint
from ._checkpoint_stream import StreamReport as StreamReport
from ._checkpoint_stream import parse_mesh as parse_mesh
from ._checkpoint_stream import stream_linen_checkpoint_to_nnx as stream_linen_checkpoint_to_nnx
from ._errors import AmbiguousPairingError as AmbiguousPairingError
from ._errors import CheckpointError as CheckpointError
from ._errors import MigrationError as MigrationError
from ._errors import MigrationTypeError as MigrationTypeError
from ._errors import MissingWeightsError as MissingWeightsError
from ._errors import NonFiniteValuesError as NonFiniteValuesError
from ._errors import RenameError as RenameError
from ._errors import ShapeMismatchError as ShapeMismatchError
from ._errors import TraceError as TraceError
from ._errors import UnusedWeightsError as UnusedWeightsError
from ._errors import VerificationError as VerificationError
from ._match import match as match
from ._optim import opt_state_to_linen as opt_state_to_linen
from ._optim import opt_state_to_nnx as opt_state_to_nnx
from ._plan import Layout as Layout
from ._plan import Mismatch as Mismatch
from ._plan import Pair as Pair
from ._plan import Plan as Plan
from ._transfer import linen_to_nnx as linen_to_nnx
from ._transfer import nnx_to_linen as nnx_to_linen
from ._transfer import to_linen_value as to_linen_value
from ._transfer import to_nnx_value as to_nnx_value
from ._verify import Difference as Difference
from ._verify import VerifyReport as VerifyReport
from ._verify import train_kwargs_for as train_kwargs_for
from ._verify import verify as verify
