"""Helpers of the converter tests: sources from spec 003's models, ruff on the output."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
from flax import nnx


def section_source(fn) -> str:
    """The classes of one spec-003 section function, as a module's source."""
    src = textwrap.dedent(inspect.getsource(fn))
    func = ast.parse(src).body[0]
    classes = [
        textwrap.dedent(ast.get_source_segment(src, node, padded=True))
        for node in func.body
        if isinstance(node, ast.ClassDef)
    ]
    body = "\n\n".join(classes) + "\n"
    header = "import flax.linen as nn\n"
    if "jax." in body:
        header += "import jax\n"
    if "jnp." in body:
        header += "import jax.numpy as jnp\n"
    return header + "\n\n" + body


def load(code: str, tmp_path: Path, name: str = "converted"):
    """Imports converted source text as a module."""
    import importlib.util

    path = tmp_path / f"{name}.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location(f"_conv_{name}_{abs(hash(code))}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def ruff(code: str, tmp_path: Path) -> str:
    """``ruff check`` on the code with the default rules plus pyflakes; '' when clean."""
    path = tmp_path / "ruff_target.py"
    path.write_text(code)
    ruff_bin = Path(sys.executable).parent / "ruff"
    proc = subprocess.run(
        [str(ruff_bin), "check", "--isolated", "--select", "E4,E7,E9,F", "--no-cache", str(path)],
        capture_output=True,
        text=True,
    )
    return "" if proc.returncode == 0 else proc.stdout + proc.stderr


def structure(model: nnx.Module) -> dict[str, tuple]:
    """Variable path -> (variable type, shape); module path -> module type."""
    out: dict[str, tuple] = {}
    for path, node in nnx.graph.iter_graph(model):
        key = "/".join(str(p) for p in path)
        if isinstance(node, nnx.Variable):
            out[key] = (type(node).__name__, tuple(jax.numpy.shape(node.value)))
        elif isinstance(node, nnx.Module):
            out[key] = (type(node).__name__,)
    return out
