"""Which arguments of a step are static or donated, by position and by name.

``jax.jit`` infers ``static_argnames`` from ``static_argnums`` (and the reverse, and the same
for donation) through the function's signature, unless both are given. The fast path calls
``jax.jit`` on a wrapper of the user's function whose signature differs (NNX arguments are
passed as flat lists), so it resolves both sides here, once, from the user's signature and
passes ``jax.jit`` the complete lists: the same arguments end up static or donated as under
``nnx.jit``, whether the caller passes them by position or by name.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable
from typing import Any, cast

from ._errors import JitArgumentError

__all__ = ["ArgSpec", "resolve"]


@dataclasses.dataclass(frozen=True)
class ArgSpec:
    """Static and donated arguments, each by position and by name (both complete)."""

    static_argnums: tuple[int, ...] = ()
    static_argnames: tuple[str, ...] = ()
    donate_argnums: tuple[int, ...] = ()
    donate_argnames: tuple[str, ...] = ()

    def is_static(self, key: int | str) -> bool:
        """Whether the positional index or keyword name ``key`` is static."""
        return key in (self.static_argnums if isinstance(key, int) else self.static_argnames)

    def is_donated(self, key: int | str) -> bool:
        """Whether the positional index or keyword name ``key`` is donated."""
        return key in (self.donate_argnums if isinstance(key, int) else self.donate_argnames)


def _as_tuple(value: Any, kind: type, what: str, label: str) -> tuple:
    if value is None:
        return ()
    items = (value,) if isinstance(value, kind) else value
    try:
        items = tuple(items)
    except TypeError:
        items = (value,)
    for item in items:
        if not isinstance(item, kind) or isinstance(item, bool):
            raise JitArgumentError(
                f"linnx.jit({label}, {what}={value!r}): expected "
                f"{'an int or a sequence of ints' if kind is int else 'a str or a sequence of str'}"
                f", got {type(item).__name__} {item!r}.\n"
                f"Fix: pass {what}={'(0, 1)' if kind is int else repr(('train',))}-style values."
            )
        if kind is int and cast(int, item) < 0:
            raise JitArgumentError(
                f"linnx.jit({label}, {what}={value!r}): negative positions are not supported.\n"
                f"Fix: count positions from 0 (the first argument of {label})."
            )
    return items


def _infer(
    params: list[inspect.Parameter] | None,
    nums: tuple[int, ...],
    names: tuple[str, ...],
    nums_given: bool,
    names_given: bool,
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """jax.jit's rule: infer the missing side from the signature when only one side is given."""
    if params is None or (nums_given and names_given):
        return nums, names
    by_position = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if nums_given:
        names = tuple(
            by_position[i].name
            for i in nums
            if i < len(by_position)
            and by_position[i].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
    elif names_given:
        nums = tuple(
            i
            for i, p in enumerate(by_position)
            if p.name in names and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
    return nums, names


def _check(
    params: list[inspect.Parameter] | None,
    nums: Iterable[int],
    names: Iterable[str],
    what: str,
    label: str,
) -> None:
    if params is None:
        return
    kinds = {p.kind for p in params}
    n_positional = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
    if inspect.Parameter.VAR_POSITIONAL not in kinds:
        for i in nums:
            if i >= n_positional:
                raise JitArgumentError(
                    f"linnx.jit({label}, {what}_argnums={i}): {label} takes {n_positional} "
                    f"positional argument(s), so position {i} does not exist.\n"
                    f"Fix: count positions from 0, or name the argument with {what}_argnames."
                )
    if inspect.Parameter.VAR_KEYWORD not in kinds:
        known = {p.name for p in params if p.kind is not p.POSITIONAL_ONLY}
        for name in names:
            if name not in known:
                raise JitArgumentError(
                    f"linnx.jit({label}, {what}_argnames={name!r}): {label} has no parameter "
                    f"named {name!r}.\nFix: use one of {sorted(known)}."
                )


def resolve(
    fun: Callable[..., Any],
    label: str,
    static_argnums: Any = None,
    static_argnames: Any = None,
    donate_argnums: Any = None,
    donate_argnames: Any = None,
) -> ArgSpec:
    """Validates the four options against ``fun``'s signature and completes each pair."""
    try:
        params: list[inspect.Parameter] | None = list(inspect.signature(fun).parameters.values())
    except (TypeError, ValueError):  # no signature (a builtin): take the options as given
        params = None
    s_nums = _as_tuple(static_argnums, int, "static_argnums", label)
    s_names = _as_tuple(static_argnames, str, "static_argnames", label)
    d_nums = _as_tuple(donate_argnums, int, "donate_argnums", label)
    d_names = _as_tuple(donate_argnames, str, "donate_argnames", label)
    # Names first: the message for an unknown name is the more useful one.
    _check(params, (), s_names, "static", label)
    _check(params, (), d_names, "donate", label)
    _check(params, s_nums, (), "static", label)
    _check(params, d_nums, (), "donate", label)
    s_nums, s_names = _infer(
        params, s_nums, s_names, static_argnums is not None, static_argnames is not None
    )
    d_nums, d_names = _infer(
        params, d_nums, d_names, donate_argnums is not None, donate_argnames is not None
    )
    both: list[int] | list[str] = sorted(set(s_nums) & set(d_nums)) or sorted(
        set(s_names) & set(d_names)
    )
    if both:
        raise JitArgumentError(
            f"linnx.jit({label}): argument {both[0]!r} is both static and donated; a static "
            f"argument has no buffers to donate.\nFix: remove it from donate_argnums/"
            f"donate_argnames or from static_argnums/static_argnames."
        )
    return ArgSpec(
        tuple(sorted(set(s_nums))),
        tuple(sorted(set(s_names))),
        tuple(sorted(set(d_nums))),
        tuple(sorted(set(d_names))),
    )
