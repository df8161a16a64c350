"""Shared test setup: the Linen model zoo in tests/models is importable as ``linen_zoo``."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent / "models"))
