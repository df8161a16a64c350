"""The errors that ``linnx convert`` raises for input it cannot take.

Each names the file and line (or the example) at fault and says how to fix it. Nothing is
written when one is raised.
"""

from __future__ import annotations

from .._errors import LinnxError
from .._public import public

__all__ = [
    "ConvertError",
    "SourceSyntaxError",
    "ExampleError",
    "UnknownLayerError",
    "OutputPathError",
]


@public("linnx.convert")
class ConvertError(LinnxError):
    """Base class of the errors raised by :mod:`linnx.convert`.

    ``path`` and ``line`` say where the problem is, when it lies in the source file.

    Example:
        >>> import linnx
        >>> from linnx import convert
        >>> issubclass(convert.ConvertError, linnx.LinnxError)
        True
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        super().__init__(message)
        self.path = path
        self.line = line


@public("linnx.convert")
class SourceSyntaxError(ConvertError, SyntaxError):
    """The source file does not parse as Python.

    Example:
        >>> from linnx import convert
        >>> try:
        ...     convert.convert_source('class A(:\\n', examples=['A()(1)'], path='m.py')
        ... except convert.SourceSyntaxError as e:
        ...     print(str(e).splitlines()[0])
        m.py:1: the source does not parse: invalid syntax
    """

    def __str__(self) -> str:  # SyntaxError's own __str__ would hide the message
        return str(self.args[0]) if self.args else ""


@public("linnx.convert")
class ExampleError(ConvertError, ValueError):
    """An ``--example`` expression is malformed, or raised when it ran.

    Example:
        >>> from linnx import convert
        >>> issubclass(convert.ExampleError, ValueError)
        True
    """


@public("linnx.convert")
class UnknownLayerError(ConvertError, LookupError):
    """A reached Linen layer has no conversion rule and is not defined in the source file.

    Example:
        >>> from linnx import convert
        >>> issubclass(convert.UnknownLayerError, LookupError)
        True
    """


@public("linnx.convert")
class OutputPathError(ConvertError, ValueError):
    """The output path would overwrite the source file (or its path map would).

    Example:
        >>> from linnx import convert
        >>> try:
        ...     convert.convert_file('model.py', 'model.py', examples=['M()(1)'])
        ... except convert.OutputPathError as e:
        ...     print(str(e).splitlines()[0])
        -o model.py is the source file itself; the source is never overwritten.
    """
