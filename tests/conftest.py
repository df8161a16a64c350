"""Shared test setup: the Linen model zoo in tests/models is importable as ``linen_zoo``."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent / "models"))

# Hypothesis profiles for the property tests (tests/bridge/test_roundtrip_properties.py).
# `default` (CI, `make test`): few examples, derandomized so that every run tries the same
# ones and a failure always reproduces. `pytest --hypothesis-profile=thorough`: many random
# examples, to go looking for new failures (hypothesis prints how to reproduce one).
# Examples build and compile small modules, so their run time varies: no deadline, and no
# too_slow health check.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "default",
    max_examples=10,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("default")
