"""What ``linnx --help`` loads: the subcommands and their heavy dependencies only when chosen.

Checked in a fresh interpreter (``sys.modules`` of the test process already holds everything).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Run the CLI as the `linnx` script does, then report which modules it loaded.
_PROBE = """
import json, sys
from linnx._cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""

# What only one subcommand needs: `demo` (scikit-learn, matplotlib) and `migrate-weights`
# (orbax-checkpoint, linnx.migrate).
_SUBCOMMAND_ONLY = {
    "linnx.demo._cli",
    "linnx.demo",
    "linnx.migrate._cli",
    "linnx.migrate",
    "sklearn",
    "matplotlib",
    "orbax",
}


def _loaded(*argv: str) -> tuple[int, set[str], str]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    *help_lines, last = proc.stdout.strip().splitlines()
    report = json.loads(last)
    return report["code"], set(report["modules"]), "\n".join(help_lines)


@pytest.fixture(scope="module")
def top_help() -> tuple[int, set[str], str]:
    return _loaded("--help")


def test_help_lists_the_subcommands(top_help: tuple[int, set[str], str]) -> None:
    code, _, text = top_help
    assert code == 0
    assert "demo" in text and "migrate-weights" in text


def test_help_imports_no_subcommand(top_help: tuple[int, set[str], str]) -> None:
    _, modules, _ = top_help
    assert not _SUBCOMMAND_ONLY & modules


def test_subcommand_help_imports_only_that_subcommand() -> None:
    code, modules, text = _loaded("migrate-weights", "--help")
    assert code == 0 and "--" in text
    assert "linnx.migrate._cli" in modules
    assert not {"linnx.demo._cli", "sklearn", "matplotlib"} & modules
