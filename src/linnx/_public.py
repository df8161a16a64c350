"""The public home of a name: one decorator instead of ad-hoc ``__module__`` assignments.

linnx defines its public classes and functions in private ``_x`` modules and re-exports them
from a package ``__init__``. Setting ``__module__`` to that package makes ``repr``, error
tracebacks, pickling and the API docs show the name where users import it from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["public"]

T = TypeVar("T")


def public(module: str) -> Callable[[T], T]:
    """A decorator that records ``module`` as the public home of a class or function.

    The decorated object is returned unchanged apart from its ``__module__``; the package named
    must re-export it under the same name.

    Example:
        >>> from linnx._public import public
        >>> @public("linnx.example")
        ... class Thing:
        ...     pass
        >>> Thing.__module__
        'linnx.example'
    """

    def mark(obj: T) -> T:
        obj.__module__ = module
        return obj

    return mark
