"""The errors that weight migration raises.

Every class derives from :class:`linnx.LinnxError`. The three "the trees do not fit" errors
(:class:`MissingWeightsError`, :class:`UnusedWeightsError`, :class:`ShapeMismatchError`) also
derive from :class:`linnx.StructureMismatchError`, so their key paths are available as the
``missing`` / ``unexpected`` / ``mismatched`` attributes as well as in the message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .._errors import BridgeTypeError, LinnxError, StructureMismatchError
from .._public import public

__all__ = [
    "MigrationError",
    "MissingWeightsError",
    "UnusedWeightsError",
    "ShapeMismatchError",
    "AmbiguousPairingError",
    "RenameError",
    "TraceError",
    "VerificationError",
    "CheckpointError",
    "MigrationTypeError",
    "NonFiniteValuesError",
]

_PUBLIC_MODULE = "linnx.migrate"


@public(_PUBLIC_MODULE)
class MigrationError(LinnxError):
    """Base class of the errors raised by :mod:`linnx.migrate`.

    Example:
        One ``except`` catches every failure of :mod:`linnx.migrate` (and ``linnx.LinnxError``
        every failure of linnx):

        >>> import jax.numpy as jnp
        >>> from flax import linen as nn, nnx
        >>> from linnx import migrate
        >>> model = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
        >>> try:
        ...     migrate.match(nn.Dense(4), model, jnp.ones((2, 5)))  # 5 features, not 3
        ... except migrate.MigrationError as e:
        ...     print(type(e).__name__)
        TraceError
    """


@public(_PUBLIC_MODULE)
class MissingWeightsError(MigrationError, StructureMismatchError):
    """Some NNX variables would keep their initial values: nothing in the source fills them.

    ``missing`` lists the NNX variable paths (``'block/linear/kernel'``).

    Example:
        >>> from linnx import migrate
        >>> e = migrate.MissingWeightsError.from_paths(
        ...     'NNX variables', missing=['linear/bias'], fix='pass allow_missing=...')
        >>> e.missing
        ('linear/bias',)
    """


@public(_PUBLIC_MODULE)
class UnusedWeightsError(MigrationError, StructureMismatchError):
    """Some source leaves would be dropped: no NNX variable takes them.

    ``unexpected`` lists the source leaf paths (``'params/Dense_0/bias'``).

    Example:
        >>> from linnx import migrate
        >>> e = migrate.UnusedWeightsError.from_paths(
        ...     'Linen variables', unexpected=['params/Dense_1/kernel'], fix='...')
        >>> e.unexpected
        ('params/Dense_1/kernel',)
    """


@public(_PUBLIC_MODULE)
class ShapeMismatchError(MigrationError, StructureMismatchError):
    """A paired Linen leaf and NNX variable differ in shape or dtype.

    ``mismatched`` holds ``(path, expected, actual)`` triples.

    Example:
        >>> from linnx import migrate
        >>> e = migrate.ShapeMismatchError.from_paths(
        ...     'weights', mismatched=[('params/Dense_0/kernel -> linear/kernel',
        ...                             '(4, 6) float32', '(4, 5) float32')], fix='...')
        >>> len(e.mismatched)
        1
    """


@public(_PUBLIC_MODULE)
class AmbiguousPairingError(MigrationError, ValueError):
    """Several pairings explain the two models equally well; linnx will not guess.

    Attributes:
        candidates: for each Linen module path that could not be placed, the NNX module paths
            it could pair with (``None`` stands for "left unpaired").

    Example:
        >>> from linnx import migrate
        >>> e = migrate.AmbiguousPairingError('two choices', candidates={'Dense_0': ['a', 'b']})
        >>> e.candidates
        {'Dense_0': ('a', 'b')}
    """

    def __init__(
        self, message: str, *, candidates: Mapping[str, Sequence[str | None]] | None = None
    ):
        super().__init__(message)
        self.candidates = {k: tuple(v) for k, v in dict(candidates or {}).items()}


@public(_PUBLIC_MODULE)
class RenameError(MigrationError, ValueError):
    """A ``rename=`` rule is malformed or matches no Linen path.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import linen as nn, nnx
        >>> from linnx import migrate
        >>> model = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
        >>> try:
        ...     migrate.match(nn.Dense(4), model, jnp.ones((2, 3)), rename={'Dense_9': 'linear'})
        ... except migrate.RenameError as e:
        ...     print(str(e).splitlines()[0])
        rename: 'Dense_9' matched no Linen path.
    """


@public(_PUBLIC_MODULE)
class TraceError(MigrationError, RuntimeError):
    """A model could not be run abstractly on the sample inputs.

    The original exception is chained as ``__cause__``.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import linen as nn, nnx
        >>> from linnx import migrate
        >>> model = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
        >>> try:
        ...     migrate.match(nn.Dense(4), model, jnp.ones((2, 5)))  # 5 features, not 3
        ... except migrate.TraceError as e:
        ...     print(type(e.__cause__).__name__)
        TypeError
    """


@public(_PUBLIC_MODULE)
class VerificationError(MigrationError, RuntimeError):
    """The migrated NNX model does not reproduce the Linen model's outputs.

    Raised by :meth:`VerifyReport.raise_for_failure`.

    Example:
        >>> from linnx import migrate
        >>> report = migrate.VerifyReport(
        ...     [migrate.Difference('eval', 'output', 0.5, 0.5, False)], atol=1e-6, rtol=1e-6)
        >>> try:
        ...     report.raise_for_failure()
        ... except migrate.VerificationError as e:
        ...     print(str(e).splitlines()[0])
        The NNX model does not reproduce the Linen model.
    """


@public(_PUBLIC_MODULE)
class CheckpointError(MigrationError, ValueError):
    """A checkpoint directory has an unknown layout, or the destination is unusable.

    Example:
        >>> from linnx import migrate
        >>> try:
        ...     migrate.read_linen_checkpoint('/no/such/checkpoint')
        ... except migrate.CheckpointError as e:
        ...     print(str(e).splitlines()[0])
        '/no/such/checkpoint' does not exist.
    """


@public(_PUBLIC_MODULE)
class MigrationTypeError(MigrationError, BridgeTypeError):
    """An argument has the wrong kind: a class where a model is expected, ``None`` for a plan.

    It is also a :class:`linnx.BridgeTypeError` and a ``TypeError``.

    Example:
        >>> from flax import nnx
        >>> from linnx import migrate
        >>> try:
        ...     migrate.nnx_to_linen(nnx.Linear, plan=None)
        ... except migrate.MigrationTypeError as e:
        ...     print(str(e).splitlines()[0])
        nnx_to_linen(nnx_model=Linear): expected an NNX model instance, got the class itself.
    """


@public(_PUBLIC_MODULE)
class NonFiniteValuesError(MigrationError, ValueError):
    """Values to be migrated hold NaN or infinity (a diverged run, a corrupt checkpoint).

    Attributes:
        paths: ``(path, nan count, inf count)`` for each leaf that holds such values.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import linen as nn, nnx
        >>> from linnx import migrate
        >>> x = jnp.ones((1, 2))
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> plan = migrate.match(nn.Dense(3), model, x)
        >>> bad = {'params': {'kernel': jnp.full((2, 3), jnp.nan), 'bias': jnp.zeros(3)}}
        >>> try:
        ...     migrate.linen_to_nnx(bad, model, plan)
        ... except migrate.NonFiniteValuesError as e:
        ...     print(e.paths)
        (('params/kernel -> kernel', 6, 0),)
    """

    def __init__(self, message: str, *, paths: Sequence[tuple[str, int, int]] = ()):
        super().__init__(message)
        self.paths = tuple(paths)
