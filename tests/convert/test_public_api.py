"""Every public name of ``linnx.convert`` shows ``linnx.convert`` as its home (not `_x`)."""

from __future__ import annotations

import types

import pytest

from linnx import convert

PUBLIC = sorted(
    name
    for name, obj in vars(convert).items()
    if not name.startswith("_") and not isinstance(obj, types.ModuleType)
)


def test_the_public_surface_is_not_empty():
    # A guard for the parametrized test below: an empty list would make it pass vacuously.
    assert {"convert_source", "convert_file", "ConvertError", "ConversionResult"} <= set(PUBLIC)


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_has_its_public_module(name):
    assert getattr(convert, name).__module__ == "linnx.convert"
