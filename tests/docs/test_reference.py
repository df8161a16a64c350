"""The API reference names every public name, and the CLI reference is the parsers' help."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
import types
from pathlib import Path

import pytest

import linnx

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference"
_DIRECTIVE = re.compile(r"^::: ([\w.]+)\s*$", re.MULTILINE)


def _public_modules() -> list[types.ModuleType]:
    """``linnx`` and every public subpackage (``linnx.migrate``, ``linnx.module.nn``...)."""
    found = [linnx]
    for info in pkgutil.walk_packages(linnx.__path__, "linnx."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        if info.name.startswith("linnx.demo") or not info.ispkg and info.name.count(".") < 2:
            continue  # the demo is a program, not API; plain modules of linnx are private
        found.append(importlib.import_module(info.name))
    return found


def _resolve(dotted: str) -> object:
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for part in parts[1:]:
        obj = getattr(obj, part)
    return obj


def documented_objects() -> dict[int, str]:
    """id(object) -> the ``:::`` entry of the API reference that documents it."""
    entries = {}
    for page in sorted(REFERENCE.glob("*.md")):
        for dotted in _DIRECTIVE.findall(page.read_text()):
            entries[id(_resolve(dotted))] = dotted
    return entries


def test_every_public_name_has_a_reference_entry():
    documented = documented_objects()
    missing = []
    for module in _public_modules():
        for name, obj in vars(module).items():
            if name.startswith("_") or isinstance(obj, types.ModuleType):
                continue
            if id(obj) not in documented:
                missing.append(f"{module.__name__}.{name}")
    assert not missing, (
        f"public names without an entry in docs/reference/*.md: {missing}\n"
        "Fix: add a line `::: <module>.<name>` to the reference page of that module (or a new "
        "page under docs/reference/, listed in mkdocs.yml's nav)."
    )


def test_public_modules_include_the_documented_ones():
    names = {m.__name__ for m in _public_modules()}
    assert {"linnx", "linnx.migrate", "linnx.module", "linnx.module.nn"} <= names


def test_every_reference_entry_resolves():
    # documented_objects() raises AttributeError naming an entry that points at nothing.
    assert len(documented_objects()) >= 60


def _hook():
    path = ROOT / "docs" / "hooks" / "linnx_docs.py"
    spec = importlib.util.spec_from_file_location("linnx_docs_hook", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_has_every_subcommand_and_option():
    from linnx import _cli

    text = _hook().cli_reference_markdown()
    for name, (_module, help_line) in _cli._SUBCOMMANDS.items():
        assert f"## `linnx {name}` {{#linnx-{name}}}" in text
        assert help_line in text
        parser = _hook().cli_parsers()[f"linnx {name}"]
        for action in parser._actions:
            for flag in action.option_strings:
                assert flag in text, (name, flag)
    assert "--linen MODULE:FACTORY" in text and "--steps STEPS" in text


def test_cli_reference_replaces_its_marker_only():
    hook = _hook()
    page = f"# CLI\n\n{hook.CLI_MARKER}\n"
    assert hook.CLI_MARKER not in hook.on_page_markdown(page, None, None, None)
    assert hook.on_page_markdown("# other\n", None, None, None) == "# other\n"


@pytest.mark.parametrize(
    ("html", "shown"),
    [
        (":class:<code>ToNNX</code> wraps", "<code>ToNNX</code> wraps"),
        (":func:<code>~linnx.lazy_init</code>", "<code>lazy_init</code>"),
        ("a :meth:<code>ToLinen.apply</code>.", "a <code>ToLinen.apply</code>."),
        ("time: <code>12:30</code>", "time: <code>12:30</code>"),
    ],
)
def test_sphinx_roles_render_as_code(html, shown):
    assert _hook().on_page_content(html, None, None, None) == shown
