"""``convert_source`` / ``convert_file``: the converter's Python API and its result object."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .._public import public
from ._errors import ConvertError, ExampleError, OutputPathError, SourceSyntaxError
from ._layer import ConvertedLayer
from ._rewrite import Kept
from ._verify import ExampleCheck

__all__ = ["ConvertedClass", "ConversionResult", "convert_source", "convert_file"]


@public("linnx.convert")
@dataclass(frozen=True)
class ConvertedClass:
    """A class that became an ``nnx.Module``: its name, line, extra size arguments and the
    call flags that became ``model.train()``/``model.eval()``.

    Example:
        >>> from linnx import convert
        >>> src = ('import flax.linen as nn\\n'
        ...        'class M(nn.Module):\\n'
        ...        '    @nn.compact\\n'
        ...        '    def __call__(self, x, train: bool):\\n'
        ...        '        return nn.Dropout(0.1, deterministic=not train)(nn.Dense(2)(x))\\n')
        >>> convert.convert_source(src, ['M()(jnp.ones((1, 3)), train=False)']).converted
        [ConvertedClass(name='M', line=2, size_args=('in_features',), dropped_flags=('train',))]
    """

    name: str
    line: int
    size_args: tuple[str, ...] = ()
    dropped_flags: tuple[str, ...] = ()
    #: (Linen source line of a submodule call site or setup assignment, NNX attribute); the
    #: HTML report aligns the two sides of a class on them.
    layers: tuple[tuple[int, str], ...] = field(default=(), repr=False)
    #: (Linen variable name, NNX attribute) of the class's own ``self.param``/``self.variable``.
    variables: tuple[tuple[str, str], ...] = field(default=(), repr=False)


@public("linnx.convert")
@dataclass
class ConversionResult:
    """What :func:`convert_source` produced: the NNX source, the path map and the report.

    Attributes:
        code: the converted module's source text.
        path_map: Linen variable path (without collection) -> NNX variable path, the
            ``rename=`` form of :func:`linnx.migrate.match`.
        converted: the classes that became NNX modules.
        kept: the reached classes that stay Linen (used through ``linnx.ToNNX``), with the
            reason and line.
        checks: one verification per example (empty when ``verify=False``).
        path: the source path (used in messages).
        notes: remarks of the report (paths that map differently in two examples).
        source: the Linen source text that was converted (for :meth:`to_html`).
        layers: one entry per example whose model is a Flax layer itself
            (``nn.Dense(features=10)(x)``): no class to rewrite, and the NNX construction
            to use instead (``nnx.Linear(784, 10, rngs=nnx.Rngs(0))``).

    Example:
        >>> from linnx import convert
        >>> src = ('import flax.linen as nn\\n'
        ...        'class M(nn.Module):\\n'
        ...        '    @nn.compact\\n'
        ...        '    def __call__(self, x):\\n'
        ...        '        return nn.Dense(2, name="out")(x)\\n')
        >>> result = convert.convert_source(src, ['M()(jnp.ones((1, 3)))'], path='m.py')
        >>> result.ok, result.path_map
        (True, {'out/bias': 'out/bias', 'out/kernel': 'out/kernel'})
        >>> print(result.report().splitlines()[1])
        converted (1): M (line 2)
    """

    code: str
    path_map: dict[str, str]
    converted: list[ConvertedClass]
    kept: list[Kept]
    checks: list[ExampleCheck] = field(default_factory=list)
    path: str = "<source>"
    notes: list[str] = field(default_factory=list)
    source: str = field(default="", repr=False)
    layers: list[ConvertedLayer] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every example verified (vacuously true when nothing was verified)."""
        return all(c.ok for c in self.checks)

    def report(self) -> str:
        """The human-readable report: classes, wrapped classes, weights, differences."""
        lines = [f"linnx convert {self.path}"]
        conv = ", ".join(f"{c.name} (line {c.line})" for c in self.converted) or "none"
        lines.append(f"converted ({len(self.converted)}): {conv}")
        if self.kept:
            lines.append(f"kept as Linen, used through linnx.ToNNX ({len(self.kept)}):")
            lines += [f"  {k.name} (line {k.line}): {k.reason}" for k in self.kept]
        for c in self.converted:
            if c.size_args:
                lines.append(f"{c.name}: input sizes as arguments: {', '.join(c.size_args)}")
            if c.dropped_flags:
                lines.append(
                    f"{c.name}: {', '.join(c.dropped_flags)} became model.train()/model.eval()"
                )
        for layer in self.layers:
            lines.append(
                f"example {layer.example}: the model is a Flax layer, no class to rewrite; "
                f"in NNX: {layer.nnx}"
            )
        lines.append(f"weights in the path map: {len(self.path_map)}")
        lines += self.notes
        lines += [str(c) for c in self.checks]
        lines.append("result: " + ("OK" if self.ok else "FAILED"))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def to_html(self) -> str:
        """The report as one self-contained HTML page; see :func:`linnx.convert.write_html`.

        Example:
            >>> from linnx import convert
            >>> r = convert.ConversionResult(code='', path_map={}, converted=[], kept=[])
            >>> '0 classes converted' in r.to_html()
            True
        """
        from ._html import render_html

        return render_html(self)


def _check_syntax(source: str, path: str) -> None:
    try:
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as e:
        raise SourceSyntaxError(
            f"{path}:{e.lineno}: the source does not parse: {e.msg}\n"
            "Fix: correct the syntax (the file must run as Python) and convert again.",
            path=path,
            line=e.lineno,
        ) from None


@public("linnx.convert")
def convert_source(
    source: str,
    examples: Sequence[str],
    *,
    path: str = "<source>",
    keep_signatures: bool = False,
    wrap_unknown: bool = False,
    verify: bool = True,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> ConversionResult:
    """Converts the Linen modules of a source text into NNX modules, and proves it.

    Args:
        source: the Python source of a module that defines Linen modules.
        examples: call expressions such as ``"CNN()(jnp.ones((1, 28, 28, 1)))"``, evaluated
            with the source's globals plus ``jax``, ``jnp``, ``np`` and ``nn``. Every class
            they reach is converted.
        path: the file name used in messages.
        keep_signatures: keep call flags such as ``train`` as call arguments instead of
            turning them into ``model.train()``/``model.eval()``.
        wrap_unknown: keep a class that uses a layer without a conversion rule as Linen
            (wrapped with ``linnx.ToNNX``) instead of raising :class:`UnknownLayerError`.
        verify: run both models on every example and compare them.
        atol / rtol: verification tolerances.

    Returns:
        A :class:`ConversionResult`; ``result.ok`` says whether every example verified.

    Raises:
        SourceSyntaxError: the source does not parse.
        ExampleError: an example is malformed or raised.
        UnknownLayerError: a reached layer has no rule (and ``wrap_unknown`` is off).
        ConvertError: the source raised when it ran, or an example's own class cannot convert.

    Example:
        >>> from linnx import convert
        >>> src = '''
        ... import flax.linen as nn
        ...
        ... class MLP(nn.Module):
        ...     hidden: int
        ...
        ...     @nn.compact
        ...     def __call__(self, x):
        ...         x = nn.relu(nn.Dense(self.hidden)(x))
        ...         return nn.Dense(1)(x)
        ... '''
        >>> result = convert.convert_source(src, ['MLP(16)(jnp.ones((2, 3)))'])
        >>> print(result.code)
        <BLANKLINE>
        from flax import nnx
        <BLANKLINE>
        class MLP(nnx.Module):
            def __init__(self, hidden: int, *, in_features: int = 3, rngs: nnx.Rngs):
                self.hidden = hidden
                self.linear1 = nnx.Linear(in_features, self.hidden, rngs=rngs)
                self.linear2 = nnx.Linear(self.hidden, 1, rngs=rngs)
        <BLANKLINE>
            def __call__(self, x):
                x = nnx.relu(self.linear1(x))
                return self.linear2(x)
        <BLANKLINE>
        >>> result.path_map['Dense_1/kernel'], result.ok
        ('linear2/kernel', True)
    """
    from ._layer import convert_layer, is_layer_root
    from ._rewrite import Rewrite, rewrite
    from ._trace import build_example, load_source, trace
    from ._verify import check_example

    if isinstance(examples, str) or not examples:
        raise ExampleError(
            f"examples={examples!r}: expected a non-empty list of call expressions.\n"
            "Fix: e.g. examples=['CNN()(jnp.ones((1, 28, 28, 1)))']."
        )
    _check_syntax(source, path)
    try:
        mod = load_source(source, path)
    except Exception as e:
        line = _traceback_line(e, path)
        raise ConvertError(
            f"{path}:{line}: running the source raised {type(e).__name__}: {e}\n"
            "Fix: the file must import and run on its own (convert runs it to trace the "
            "examples).",
            path=path,
            line=line,
        ) from e
    dst_mod = None
    try:
        from ._rng import stream_names

        streams = stream_names(source)  # make_rng names, given to the trace
        traces = [trace(build_example(text, mod), mod, streams) for text in examples]
        # An example whose model is a Flax layer (nn.Dense(10)) has no class to rewrite.
        layer_of = {i: convert_layer(t) for i, t in enumerate(traces) if is_layer_root(t)}
        class_traces = [t for i, t in enumerate(traces) if i not in layer_of]
        if class_traces:
            rw = rewrite(
                source,
                path,
                mod,
                class_traces,
                keep_signatures=keep_signatures,
                wrap_unknown=wrap_unknown,
            )
        else:  # nothing to rewrite: the file is kept as written
            rw = Rewrite(code=source, plans={}, kept=[])
        class_maps = iter(zip(rw.path_maps, rw.module_maps, strict=True))
        maps: list[tuple[dict[str, str], tuple[dict, set] | None]] = [
            (layer_of[i][1], None) if i in layer_of else next(class_maps)
            for i in range(len(traces))
        ]  # in the examples' order
        merged: dict[str, str] = {}
        notes: list[str] = []
        for m, _ in maps:
            for k, v in m.items():
                if merged.setdefault(k, v) != v:
                    notes.append(
                        f"note: {k} maps to {merged[k]} and to {v} in different examples; the "
                        "path map keeps the first"
                    )
        result = ConversionResult(
            code=rw.code,
            path_map=merged,
            kept=rw.kept,
            path=path,
            notes=notes,
            source=source,
            converted=[
                ConvertedClass(
                    p.name,
                    p.line,
                    tuple(s.name for s in p.size_params),
                    tuple(p.removed_flags),
                    tuple((s.line, s.attr) for s in p.sites),
                    tuple((n, a) for (_, n), a in p.var_attrs.items()),
                )
                for p in rw.plans.values()
            ],
            layers=[layer for layer, _ in layer_of.values()],
        )
        if verify:
            dst_path = path[:-3] + "_nnx.py" if path.endswith(".py") else path + "_nnx"
            # With no class rewritten the code is the source itself: not run a second time.
            dst_mod = load_source(rw.code, dst_path) if class_traces else None
            for i, (t, (m, mm)) in enumerate(zip(traces, maps, strict=True)):
                if i in layer_of:
                    result.checks.append(
                        check_example(
                            t,
                            dst_mod or mod,
                            None,
                            m,
                            keep_signatures=keep_signatures,
                            atol=atol,
                            rtol=rtol,
                            layer_ctor=layer_of[i][0].nnx,
                        )
                    )
                    continue
                assert dst_mod is not None
                root = rw.plans[t.instances[()].cls.__name__]
                result.checks.append(
                    check_example(
                        t,
                        dst_mod,
                        root,
                        m,
                        keep_signatures=keep_signatures,
                        atol=atol,
                        rtol=rtol,
                        module_map=mm if "sow(" in source else None,  # else no second run
                    )
                )
        return result
    finally:
        sys.modules.pop(mod.__name__, None)
        if dst_mod is not None:
            sys.modules.pop(dst_mod.__name__, None)


def _traceback_line(err: BaseException, path: str) -> int | None:
    tb = err.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


@public("linnx.convert")
def paths_file(dst: str | os.PathLike) -> Path:
    """Where the path map of ``dst`` goes: ``model_nnx.py`` -> ``model_nnx.linen_paths.json``.

    Example:
        >>> from linnx import convert
        >>> convert.paths_file('out/model_nnx.py').as_posix()
        'out/model_nnx.linen_paths.json'
    """
    p = Path(dst)
    return p.with_name((p.stem if p.suffix == ".py" else p.name) + ".linen_paths.json")


@public("linnx.convert")
def convert_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    examples: Sequence[str],
    keep_signatures: bool = False,
    wrap_unknown: bool = False,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> ConversionResult:
    """Converts ``src`` into ``dst`` and writes ``dst``'s path map next to it.

    Both files are written only when every example verified; otherwise nothing is written
    and the returned result says why (``result.ok`` is False). Arguments as in
    :func:`convert_source`; the path map goes to ``<dst stem>.linen_paths.json``.

    Raises:
        OutputPathError: ``dst`` (or its path map) is ``src`` itself.
        SourceSyntaxError, ExampleError, UnknownLayerError, ConvertError: as
            :func:`convert_source`.

    Example:
        >>> import os, tempfile
        >>> from linnx import convert
        >>> d = tempfile.mkdtemp()
        >>> src = os.path.join(d, 'mlp.py')
        >>> with open(src, 'w') as f:
        ...     _ = f.write('import flax.linen as nn\\n\\n'
        ...                 'class MLP(nn.Module):\\n'
        ...                 '    @nn.compact\\n'
        ...                 '    def __call__(self, x):\\n'
        ...                 '        return nn.Dense(2)(x)\\n')
        >>> result = convert.convert_file(src, os.path.join(d, 'mlp_nnx.py'),
        ...                               examples=['MLP()(jnp.ones((1, 3)))'])
        >>> result.ok, sorted(os.listdir(d))
        (True, ['mlp.py', 'mlp_nnx.linen_paths.json', 'mlp_nnx.py'])
    """
    src_p, dst_p = Path(src), Path(dst)
    same = src_p.resolve() == dst_p.resolve() or paths_file(dst_p).resolve() == src_p.resolve()
    if same:
        raise OutputPathError(
            f"-o {dst} is the source file itself; the source is never overwritten.\n"
            "Fix: write the NNX module to a new file, e.g. -o "
            f"{src_p.with_name(src_p.stem + '_nnx.py')}.",
            path=str(src),
        )
    try:
        source = src_p.read_text()
    except OSError as e:
        raise ConvertError(
            f"{src}: cannot read the source file: {e.strerror}.\nFix: pass an existing file.",
            path=str(src),
        ) from None
    result = convert_source(
        source,
        examples,
        path=str(src),
        keep_signatures=keep_signatures,
        wrap_unknown=wrap_unknown,
        atol=atol,
        rtol=rtol,
    )
    if result.ok:
        dst_p.write_text(result.code)
        paths_file(dst_p).write_text(json.dumps(result.path_map, indent=2) + "\n")
    return result
