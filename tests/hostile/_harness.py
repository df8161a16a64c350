"""The machinery of the hostile-input suite: cases, snapshots, and the record of what ran.

A :class:`Case` is one misuse of a public linnx function or class. Its ``setup`` builds what
the misuse needs and returns the misuse itself (a thunk) and the objects it touches: NNX
modules and optimizers, Linen variables dicts, directories and files, or :data:`REGISTRY`.
:func:`run_case` snapshots those objects, runs the misuse, and requires

* the exact linnx error type (every one derives from ``linnx.LinnxError``), raised by linnx's
  own code rather than from deep inside Flax, JAX or Orbax;
* a message that names the argument or key path (``says``) and the fix (``fix``);
* every touched object unchanged: the same graph and bit-identical values for NNX objects, the
  same structure and values for trees, the same listing and bytes for files.
"""

from __future__ import annotations

import hashlib
import re
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _trees import fingerprint
from flax import nnx

import linnx

LINNX_SRC = Path(linnx.__file__).resolve().parent

#: Stands for the global collection <-> variable type registry in a case's touched objects.
REGISTRY = object()

#: Case ids that were tried, and those that passed; the terminal summary counts them.
TRIED: list[str] = []
PASSED: list[str] = []


@dataclass(frozen=True)
class Case:
    """One misuse: the error it must raise, what the message must say, how to set it up."""

    id: str
    error: type[BaseException]
    says: str  # regex: the argument or key path the message names
    fix: str  # regex: the remedy the message gives
    setup: Callable[[Env], Any]  # -> misuse thunk, or (misuse thunk, *touched objects)
    marks: tuple = ()  # pytest marks for this case

    def __post_init__(self) -> None:
        assert issubclass(self.error, linnx.LinnxError), self.id


class Table:
    """The cases of one part of linnx, declared with the :meth:`case` decorator."""

    def __init__(self, part: str, marks: tuple = ()):
        self.part = part
        self.marks = marks  # pytest marks for every case of the table
        self.cases: list[Case] = []

    def case(self, name: str, error: type[BaseException], says: str, fix: str):
        def register(setup: Callable[[Env], tuple]) -> Callable[[Env], tuple]:
            self.cases.append(Case(f"{self.part}/{name}", error, says, fix, setup, self.marks))
            return setup

        return register


@dataclass
class Env:
    """What a case's setup may use: a fresh directory, and pristine checkpoints to copy."""

    tmp: Path
    pristine: Callable[[str], Path]

    def copy_of(self, kind: str, name: str | None = None) -> Path:
        """A private copy of a pristine checkpoint (see ``conftest.py``) under ``tmp``."""
        import shutil

        dst = self.tmp / (name or kind)
        shutil.copytree(self.pristine(kind), dst)
        return dst


# -- snapshots ----------------------------------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(obj: Any) -> Any:
    """A comparable record of everything observable about ``obj``."""
    if obj is REGISTRY:
        return tuple(sorted((k, id(v)) for k, v in linnx.registered_pairs().items()))
    if isinstance(obj, Path):
        if not obj.exists():
            return ("absent",)
        if obj.is_file():
            return ("file", _digest(obj))
        return (
            "dir",
            tuple(
                (p.relative_to(obj).as_posix(), _digest(p) if p.is_file() else "dir")
                for p in sorted(obj.rglob("*"))
            ),
        )
    if isinstance(obj, nnx.Pytree):
        graphdef, state = nnx.split(obj)
        return ("nnx", graphdef, fingerprint(state))
    return ("tree", fingerprint(obj))


# -- running ------------------------------------------------------------------------------


def _raised_by_linnx(error: BaseException) -> bool:
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and LINNX_SRC in Path(frames[-1].filename).resolve().parents


def run_case(case: Case, env: Env) -> None:
    TRIED.append(case.id)
    made = case.setup(env)
    # A setup returns the misuse alone, or the misuse followed by the objects it touches.
    misuse, *touched = (made,) if callable(made) else made
    before = [snapshot(t) for t in touched]
    try:
        misuse()
    except case.error as error:
        # The exact class, or the same class made also the Flax/builtin error it stands in
        # for (`linnx._errors.standing_in_for`), which keeps its name and first base.
        exact = type(error) is case.error or (
            type(error).__name__ == case.error.__name__ and type(error).__bases__[0] is case.error
        )
        assert exact, (
            f"{case.id}: expected {case.error.__name__}, got its subclass {type(error).__name__}"
        )
        message = str(error)
        where = traceback.extract_tb(error.__traceback__)[-1]
        assert _raised_by_linnx(error), (
            f"{case.id}: raised from {where.filename}:{where.lineno}, not by linnx itself"
        )
        assert re.search(case.says, message), f"{case.id}: does not name {case.says!r}:\n{message}"
        assert re.search(case.fix, message), f"{case.id}: gives no fix {case.fix!r}:\n{message}"
    except Exception as error:
        raise AssertionError(
            f"{case.id}: expected {case.error.__name__}, got {type(error).__name__}: {error}"
        ) from error
    else:
        raise AssertionError(f"{case.id}: expected {case.error.__name__}, nothing was raised")
    after = [snapshot(t) for t in touched]
    for i, (b, a) in enumerate(zip(before, after, strict=True)):
        assert b == a, f"{case.id}: touched object #{i} ({touched[i]!r:.80}) changed"
    PASSED.append(case.id)


def summary(planned: int) -> str:
    by_part = Counter(i.split("/", 1)[0] for i in TRIED)
    parts = ", ".join(f"{part} {n}" for part, n in sorted(by_part.items()))
    return (
        f"hostile inputs: {len(TRIED)} of {planned} cases tried ({parts}); {len(PASSED)} raised "
        f"their typed linnx error naming the argument or key path and the fix, and left every "
        f"module, variable and file they touched unchanged"
    )
