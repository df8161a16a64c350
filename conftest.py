"""Test-wide setup for the tests and the docstring examples (``--doctest-modules``).

* 8 host CPU devices for the sharding tests, set before jax is imported.
* The collection <-> variable type registry is global, and the docstring examples register
  pairs as a user would (``register_variable_name_type_pair('counts', Count)``): each runs
  inside ``linnx.bridge._registry.scoped()``, so none leaks into a later test, whatever the
  order the tests run in.
"""

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"


@pytest.fixture(autouse=True)
def _doctest_registry_scoped(request: pytest.FixtureRequest) -> Iterator[None]:
    if not isinstance(request.node, pytest.DoctestItem):
        yield
        return
    from linnx.bridge._registry import scoped

    with scoped():
        yield
