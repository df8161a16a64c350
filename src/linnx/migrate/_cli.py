"""``linnx migrate-weights``: a Linen Orbax checkpoint into a hand-ported NNX model, verified.

Steps: read the checkpoint, build both models from their factories, match them on the sample
inputs (the plan is printed as a table), copy the weights (and the optimizer state with
``--tx``), verify outputs and BatchNorm statistics, and save the NNX checkpoint. Nothing is
written when verification fails (exit code 1); a migration that cannot be done (missing or
unused weights, shape mismatches, ambiguous pairing) exits with code 2 and the error's list of
key paths.

JAX and Flax are imported inside :func:`run`, so ``linnx migrate-weights --help`` stays light.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import sys
from typing import Any

__all__ = ["add_arguments", "run"]

EXIT_OK, EXIT_VERIFY_FAILED, EXIT_ERROR = 0, 1, 2


class _UsageError(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declares the options of ``linnx migrate-weights``."""
    parser.add_argument("src", metavar="SRC_CKPT", help="Linen Orbax checkpoint directory")
    parser.add_argument("dst", metavar="DST_CKPT", help="NNX checkpoint directory to write")
    parser.add_argument(
        "--linen",
        required=True,
        metavar="MODULE:FACTORY",
        help="a Linen module instance, or a function returning one (called without arguments)",
    )
    parser.add_argument(
        "--nnx",
        required=True,
        metavar="MODULE:FACTORY",
        help="an NNX model instance, or a function returning one (called without arguments)",
    )
    parser.add_argument(
        "--sample",
        required=True,
        action="append",
        metavar="SHAPE[:DTYPE[:LOW..HIGH]]|FILE.npy",
        help="a sample input, e.g. 8,32,32,3:float32, 8,128:int32 (integers range over the "
        "vocabulary of a first nn.Embed), 8,128:int32:0..32000, or a .npy file (repeatable)",
    )
    parser.add_argument(
        "--rename",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="pair a Linen path fragment with an NNX one, e.g. Dense_0=linear (repeatable)",
    )
    parser.add_argument(
        "--path-map",
        default=None,
        metavar="FILE.json",
        help="a JSON object Linen path -> NNX path (as `linnx convert` writes it next to DST)",
    )
    parser.add_argument(
        "--linen-kwargs",
        default="{}",
        metavar="JSON",
        help="Linen call arguments in eval mode, e.g. '{\"train\": false}'",
    )
    parser.add_argument("--nnx-kwargs", default="{}", metavar="JSON", help="NNX call arguments")
    parser.add_argument(
        "--linen-train-kwargs",
        default=None,
        metavar="JSON",
        help="Linen call arguments in train mode (default: flags flipped)",
    )
    parser.add_argument(
        "--tx",
        default=None,
        metavar="MODULE:FACTORY",
        help="optax transformation: also migrate a TrainState's optimizer state",
    )
    parser.add_argument(
        "--allow-missing",
        action="append",
        default=[],
        metavar="PATTERN",
        help="NNX variable paths that may keep their initial values",
    )
    parser.add_argument(
        "--allow-unused",
        action="append",
        default=[],
        metavar="PATTERN",
        help="Linen leaf paths that may be dropped",
    )
    parser.add_argument(
        "--allow-nonfinite",
        action="append",
        default=[],
        metavar="PATTERN",
        help="paths whose NaN/inf values may be migrated ('*' for all; refused by default)",
    )
    parser.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance")
    parser.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance")
    parser.add_argument(
        "--no-train-check",
        action="store_true",
        help="compare eval mode only (skip the BatchNorm statistics check)",
    )
    parser.add_argument("--no-verify", action="store_true", help="save without verifying")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="move the checkpoint group by group (memory: about --group-mib or the largest "
        "array restored whole, not the checkpoint); verification then compares a checksum of "
        "every moved array with the source instead of running the models",
    )
    parser.add_argument(
        "--group-mib",
        type=int,
        default=256,
        metavar="MIB",
        help="how many MiB of Linen arrays are read, changed and written at a time (256)",
    )
    parser.add_argument(
        "--no-share-data",
        action="store_true",
        help="restore and write every array; by default an array that is only renamed gets "
        "its new name in the written checkpoint's index, and its data file is a hard link to "
        "the source's (nothing decoded or rewritten)",
    )
    parser.add_argument(
        "--mesh",
        default=None,
        metavar="AXIS=SIZE,...",
        help="restore and save the NNX side sharded as its variables' annotations ask, on a "
        "mesh of the visible devices, e.g. data=2,model=4",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace DST_CKPT if it exists")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random sample inputs")


def _load(spec: str, what: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise _UsageError(f"--{what} {spec!r}: expected MODULE:FACTORY, e.g. mymodels:make_model")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise _UsageError(f"--{what} {spec!r}: cannot import {module_name!r}: {err}") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise _UsageError(f"--{what} {spec!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _instance(spec: str, what: str, base: type, abstract: bool = False, mesh: Any = None) -> Any:
    obj = _load(spec, what)
    if isinstance(obj, base):
        return obj
    if not callable(obj):
        raise _UsageError(f"--{what} {spec!r}: {obj!r} is neither a model nor a factory")
    import contextlib

    import jax
    from flax import nnx

    with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
        made = nnx.eval_shape(obj) if abstract else obj()
    if not isinstance(made, base):
        raise _UsageError(
            f"--{what} {spec!r}: the factory returned {type(made).__name__}, expected a "
            f"{base.__module__}.{base.__name__}"
        )
    return made


_DEFAULT_INT_HIGH = 2


def _sample_spec(spec: str) -> tuple[tuple[int, ...], Any, tuple[int, int] | None]:
    """``'8,128:int32:0..32000'`` -> shape, dtype and the value range (``None``: not given)."""
    import jax.numpy as jnp

    shape_s, _, rest = spec.partition(":")
    dtype_s, _, range_s = rest.partition(":")
    try:
        shape = tuple(int(d) for d in shape_s.replace("x", ",").split(",") if d.strip())
        dtype = jnp.dtype(dtype_s or "float32")
        bounds = None
        if range_s:
            low, sep, high = range_s.partition("..")
            if not sep or int(high) <= int(low):
                raise ValueError(range_s)
            bounds = (int(low), int(high))
    except (TypeError, ValueError) as err:
        raise _UsageError(
            f"--sample {spec!r}: expected SHAPE[:DTYPE[:LOW..HIGH]] (e.g. 2,28,28,1 or "
            "8,128:int32:0..32000) or a .npy file"
        ) from err
    return shape, dtype, bounds


def _load_npy(spec: str) -> Any:
    import numpy as np

    path = os.path.expanduser(spec)
    if not os.path.isfile(path):
        raise _UsageError(f"--sample {spec!r}: no such file (a .npy sample must exist)")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise _UsageError(f"--sample {spec!r}: not a readable .npy array ({err})") from err


def _first_embed_size(linen_module: Any, samples: list[Any], kwargs: dict[str, Any]) -> int | None:
    """The vocabulary size of the ``nn.Embed`` that first receives an integer input, if the
    first layer the model calls on an integer array is one (traced abstractly, no weights)."""
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    found: list[Any] = []
    depth = [0]

    def watch(next_fun: Any, args: Any, kwargs_: Any, context: Any) -> Any:
        depth[0] += 1
        try:
            ints = any(
                getattr(a, "dtype", None) is not None and jnp.issubdtype(a.dtype, jnp.integer)
                for a in jax.tree_util.tree_leaves(args)
            )
            if depth[0] > 1 and not found and ints and context.method_name == "__call__":
                found.append(context.module)
            return next_fun(*args, **kwargs_)
        finally:
            depth[0] -= 1

    try:
        with nn.intercept_methods(watch):
            jax.eval_shape(
                lambda *xs: linen_module.init(jax.random.key(0), *xs, **kwargs), *samples
            )
    except Exception:
        return None  # match() reports what is wrong with the model or the sample
    module = found[0] if found else None
    return int(module.num_embeddings) if isinstance(module, nn.Embed) else None


def _samples(
    specs: list[str],
    seed: int,
    linen_module: Any = None,
    linen_kwargs: dict[str, Any] | None = None,
    say: Any = None,
    concrete: bool = True,
) -> list[Any]:
    """The sample inputs: ``.npy`` files as they are, the others drawn at random.

    Integers are drawn over their real range: the ``LOW..HIGH`` given, else the vocabulary of
    the ``nn.Embed`` the model first feeds them to, else {0, 1} (with a note saying so).
    """
    import jax
    import jax.numpy as jnp

    parsed = [None if s.endswith(".npy") else _sample_spec(s) for s in specs]
    abstract = [
        jnp.asarray(_load_npy(s)) if p is None else jax.ShapeDtypeStruct(p[0], p[1])
        for s, p in zip(specs, parsed, strict=True)
    ]
    vocab = None
    if any(p is not None and p[2] is None and jnp.issubdtype(p[1], jnp.integer) for p in parsed):
        if linen_module is not None:
            vocab = _first_embed_size(linen_module, abstract, linen_kwargs or {})
        if vocab is None and say is not None:
            say(
                f"Note: integer samples are drawn from 0..{_DEFAULT_INT_HIGH - 1} (the model's "
                "first layer is no nn.Embed); give their range as SHAPE:DTYPE:LOW..HIGH or "
                "pass a .npy file."
            )
    if not concrete:  # matching traces the models abstractly: shapes and dtypes suffice
        return abstract
    out = []
    key = jax.random.key(seed)
    for p, given in zip(parsed, abstract, strict=True):
        key, sub = jax.random.split(key)
        if p is None:
            out.append(given)
            continue
        shape, dtype, bounds = p
        if jnp.issubdtype(dtype, jnp.floating):
            out.append(jax.random.normal(sub, shape, dtype))
        elif jnp.issubdtype(dtype, jnp.integer):
            low, high = bounds or (0, vocab or _DEFAULT_INT_HIGH)
            out.append(jax.random.randint(sub, shape, low, high, dtype))
        else:
            out.append(jnp.zeros(shape, dtype))
    return out


def _has_unfilled_abstract(model: Any, plan: Any) -> bool:
    """Whether an abstract model has variables that no Linen leaf fills (so they need values)."""
    import jax
    from flax import nnx

    filled = {p.nnx for p in plan.pairs}
    return any(
        "/".join(map(str, path)) not in filled and isinstance(var.get_value(), jax.ShapeDtypeStruct)
        for path, var in nnx.to_flat_state(nnx.state(model))
    )


def _migrate_with_optimizer(
    args: argparse.Namespace,
    linen_module: Any,
    nnx_model: Any,
    plan: Any,
    samples: list[Any],
    metadata: dict[str, Any],
    verify_kwargs: dict[str, Any],
    step: Any,
    say: Any,
) -> int:
    """``--tx``: the weights and a TrainState's optimizer state, in memory."""
    from flax import nnx

    from . import _checkpoint, _verify

    step("migrate")
    ckpt = _checkpoint.read_linen_checkpoint(args.src)
    tx = _load(args.tx, "tx")
    tx = tx() if not hasattr(tx, "init") else tx
    if ckpt.opt_state is None:
        raise _UsageError(f"--tx: {args.src!r} holds no optimizer state")
    optimizer = nnx.Optimizer(nnx_model, tx, wrt=nnx.Param)
    _checkpoint.linen_checkpoint_to_nnx(
        ckpt,
        nnx_model,
        plan,
        optimizer=optimizer,
        allow_missing=args.allow_missing,
        allow_unused=args.allow_unused,
        allow_nonfinite=args.allow_nonfinite,
    )
    if not args.no_verify:
        step("verify")
        report = _verify.verify(linen_module, ckpt.variables, nnx_model, *samples, **verify_kwargs)
        say(str(report))
        if not report.ok:
            print(f"error: verification failed; {args.dst!r} was not written.", file=sys.stderr)
            return EXIT_VERIFY_FAILED
        metadata["verified"] = {
            "ok": report.ok,
            "max_abs": report.max_abs,
            "max_rel": report.max_rel,
        }
    step("save")
    _checkpoint.save_nnx_checkpoint(
        args.dst, nnx_model, optimizer=optimizer, overwrite=args.overwrite, metadata=metadata
    )
    say(f"Saved the NNX checkpoint to {args.dst}")
    return EXIT_OK


def _json(text: str | None, flag: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise _UsageError(f"{flag} {text!r}: not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise _UsageError(f"{flag} {text!r}: expected a JSON object")
    return value


def _path_map(path: str | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        with open(path) as f:
            value = json.load(f)
    except OSError as err:
        raise _UsageError(f"--path-map {path!r}: cannot read it ({err.strerror})") from err
    except json.JSONDecodeError as err:
        raise _UsageError(f"--path-map {path!r}: not valid JSON ({err})") from err
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _UsageError(
            f"--path-map {path!r}: expected a JSON object of Linen path -> NNX path strings"
        )
    return value


def _renames(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise _UsageError(f"--rename {item!r}: expected OLD=NEW, e.g. Dense_0=linear")
        out[old] = new
    return out


class _OrbaxNoiseFilter:
    """Wraps stderr and drops the tracebacks Orbax's cleanup prints after a failed read.

    When Orbax gives up on a damaged checkpoint it closes its event loop while TensorStore
    reads are still in flight; each one then prints a ``RuntimeError: Event loop is closed``
    traceback from a background thread, often after linnx has reported the problem. They
    only mislead. Each thread's writes are assembled separately (several threads print at
    once, piece by piece); everything but those tracebacks passes through unchanged.
    """

    NOISE = "RuntimeError: Event loop is closed"

    def __init__(self, stream: Any):
        import threading

        self.stream = stream
        self.lock = threading.Lock()
        self.threads: dict[int, list[Any]] = {}  # thread id -> [held traceback lines, partial]

    def _state(self) -> list[Any]:
        import threading

        return self.threads.setdefault(threading.get_ident(), [[], ""])

    def write(self, text: str) -> int:
        with self.lock:
            state = self._state()
            state[1] += text
            while "\n" in state[1]:
                line, state[1] = state[1].split("\n", 1)
                self._line(state, line + "\n")
            if state[1] and not state[0] and not "Traceback".startswith(state[1][:9]):
                self.stream.write(state[1])  # progress bars write without a newline
                state[1] = ""
        return len(text)

    def _line(self, state: list[Any], line: str) -> None:
        held = state[0]
        if line.startswith("Traceback (most recent call last)"):
            self.stream.write("".join(held))
            state[0] = [line]
        elif held:
            held.append(line)
            if not line.startswith((" ", "\t")):  # the exception line ends a traceback
                if not line.startswith(self.NOISE):
                    self.stream.write("".join(held))
                state[0] = []
        else:
            self.stream.write(line)

    def flush(self) -> None:
        with self.lock:
            for state in self.threads.values():
                if any(
                    "_check_closed" in line or "call_soon_threadsafe" in line for line in state[0]
                ):
                    continue  # the noise, still being printed: its last line drops it
                self.stream.write("".join(state[0]) + state[1])
                state[0], state[1] = [], ""
            self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _drop_abandoned_orbax_reads(hook: Any) -> Any:
    """An unraisable-exception hook that drops the reads Orbax abandons after a failed one.

    When one array of a damaged checkpoint cannot be read, Orbax gives up on the other reads
    of that restore; each of their coroutines raises again when it is closed, whenever the
    garbage collector gets to it, and Python prints that as "Exception ignored in:
    <coroutine ...>" with two tracebacks. linnx has already named the damaged arrays.
    """

    def quiet(unraisable: Any) -> None:
        code = getattr(unraisable.object, "cr_code", None)
        if code is not None and "orbax" in code.co_filename:
            return
        hook(unraisable)

    return quiet


def run(args: argparse.Namespace) -> int:
    """Runs ``linnx migrate-weights``; returns the exit code."""
    real, real_hook = sys.stderr, sys.unraisablehook
    sys.stderr = quiet = _OrbaxNoiseFilter(real)
    sys.unraisablehook = _drop_abandoned_orbax_reads(real_hook)
    try:
        return _run(args)
    finally:
        quiet.flush()
        if real is sys.__stderr__:
            # The tracebacks come when Orbax's reads wind down, which can be after run()
            # returns: as the process's own command, the filter stays until exit.
            atexit.register(quiet.flush)
        else:
            # Called in-process (tests, scripts): put their stream and hook back.
            sys.stderr, sys.unraisablehook = real, real_hook


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from .._errors import LinnxError

    steps = ["build", "match", "migrate", "save"]
    # A progress bar is for a person at a terminal; in a log file it is only noise.
    bar = tqdm(
        total=len(steps),
        desc="migrate-weights",
        unit="step",
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
    )

    def step(name: str) -> None:
        bar.set_postfix_str(name)

    def say(text: str) -> None:
        tqdm.write(text, file=sys.stdout)

    try:
        if Path(args.dst).exists() and not args.overwrite:
            raise _UsageError(f"{args.dst!r} already exists; pass --overwrite to replace it")
        renames = {**_path_map(args.path_map), **_renames(args.rename)}
        linen_kwargs = _json(args.linen_kwargs, "--linen-kwargs") or {}
        nnx_kwargs = _json(args.nnx_kwargs, "--nnx-kwargs") or {}
        linen_train_kwargs = _json(args.linen_train_kwargs, "--linen-train-kwargs")

        from flax import linen as nn
        from flax import nnx

        from . import _checkpoint_stream, _plan, _verify

        if args.stream and args.tx is not None:
            raise _UsageError("--stream moves the weights only; leave out --tx (or --stream)")
        if args.group_mib <= 0:
            raise _UsageError(f"--group-mib {args.group_mib}: expected a positive size")
        mesh = _checkpoint_stream.parse_mesh(args.mesh) if args.mesh else None
        step("build")
        linen_module = _instance(args.linen, "linen", nn.Module)
        # Without --tx the NNX model is built abstractly: its weights come from the
        # checkpoint, so initializing them first would only cost time and memory.
        nnx_model = _instance(args.nnx, "nnx", nnx.Module, abstract=args.tx is None, mesh=mesh)
        run_models = not args.stream and not args.no_verify
        samples = _samples(
            args.sample,
            args.seed,
            linen_module,
            linen_kwargs,
            say,
            concrete=run_models or args.tx is not None,
        )
        bar.update()
        step("match")
        plan = _plan.match(
            linen_module,
            nnx_model,
            *samples,
            linen_kwargs=linen_kwargs,
            nnx_kwargs=nnx_kwargs,
            rename=renames or None,
        )
        say(str(plan))
        bar.update()
        metadata: dict[str, Any] = {
            "source": str(Path(args.src).resolve()),
            "linen": args.linen,
            "nnx": args.nnx,
            "plan": plan.to_dict(),
            "verified": None,
        }
        verify_kwargs = dict(
            linen_kwargs=linen_kwargs,
            nnx_kwargs=nnx_kwargs,
            plan=plan,
            train=not args.no_train_check,
            linen_train_kwargs=linen_train_kwargs,
            atol=args.atol,
            rtol=args.rtol,
        )
        if args.tx is not None:
            code = _migrate_with_optimizer(
                args, linen_module, nnx_model, plan, samples, metadata, verify_kwargs, step, say
            )
            bar.update(2)
            bar.close()
            return code
        step("migrate")
        if _has_unfilled_abstract(nnx_model, plan):
            # RNG state or allowed-missing variables are saved as the model holds them.
            nnx_model = _instance(args.nnx, "nnx", nnx.Module, mesh=mesh)
        failed: list[Any] = []

        def check(report: Any) -> bool:
            """Runs both models on the samples before anything is published."""
            step("verify")
            bar.update()
            live = {"/".join(map(str, p)): v for p, v in nnx.to_flat_state(nnx.state(nnx_model))}
            for path, value in report.kept["nnx"].items():
                live[path].set_value(value)
            variables: dict[str, Any] = {}
            for path, value in report.kept["linen"].items():
                node = variables
                *head, last = path.split("/")
                for key in head:
                    node = node.setdefault(key, {})
                node[last] = value
            result = _verify.verify(linen_module, variables, nnx_model, *samples, **verify_kwargs)
            say(str(result))
            metadata["verified"] = {
                "ok": result.ok,
                "max_abs": result.max_abs,
                "max_rel": result.max_rel,
            }
            failed.extend([] if result.ok else [result])
            return result.ok

        report = _checkpoint_stream.stream_linen_checkpoint_to_nnx(
            args.src,
            args.dst,
            nnx_model,
            plan,
            allow_missing=args.allow_missing,
            allow_unused=args.allow_unused,
            allow_nonfinite=args.allow_nonfinite,
            mesh=mesh,
            verify=args.stream and not args.no_verify,
            group_bytes=args.group_mib << 20,
            metadata=metadata,
            overwrite=args.overwrite,
            keep=run_models,
            check=check if run_models else None,
            share_data=not args.no_share_data,
        )
        if args.stream:
            say(str(report))
        if report.left_out:
            say(
                f"Note: the checkpoint's {', '.join(report.left_out)} were not migrated "
                "(pass --tx, without --stream, for a TrainState's optimizer state)."
            )
        bar.update(2)
        bar.close()
        if failed or not report.ok:
            print(f"error: verification failed; {args.dst!r} was not written.", file=sys.stderr)
            return EXIT_VERIFY_FAILED
        say(f"Saved the NNX checkpoint to {args.dst}")
        return EXIT_OK
    except (_UsageError, LinnxError) as err:
        bar.close()
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
