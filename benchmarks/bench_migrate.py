"""Checkpoint migration at real sizes: linnx against Orbax's own restore + save (issue 18).

Writes Linen Orbax checkpoints (as a Linen training script does: Orbax alone) of a deep MLP
(``Dense(width)`` x depth) and of a transformer whose blocks are stacked with ``nn.scan``, at
about 0.1 GiB and 1.5 GiB. The transformer is migrated into two NNX ports:

* ``scanned``: the form ``linnx convert`` writes for ``nn.scan`` (blocks built with
  ``nnx.vmap``, run with ``nnx.scan``, stacked on the axis Linen used), so every array is
  renamed as it is: what a user who converts gets;
* ``scanned-list``: an ``nnx.List`` of blocks, so every stacked array is cut into one array per
  layer (32 x 10 arrays written where the floor writes 10).

Then it runs, each in a fresh process and one after the other:

* ``floor``: Orbax restores the checkpoint (no target) and saves the same tree: what any
  migration must at least do;
* ``no-verify``: ``linnx migrate-weights --no-verify``;
* ``verify``: ``linnx migrate-weights --no-train-check`` (both models run on the sample);
* ``stream``: ``linnx migrate-weights --stream --no-verify``;
* ``stream+sums``: ``linnx migrate-weights --stream`` (checksums of every moved array).

Wall time is the work inside the process (its imports of JAX, Flax and Orbax excluded, which
are the same for every run); peak RSS is the process's (``ru_maxrss``). The table gives both
and their ratios to the floor, and checks issue 18's targets on the large checkpoints.

Usage::

    make bench-migrate                                    # both sizes (about 10 min, 6 GiB disk)
    .venv/bin/python benchmarks/bench_migrate.py --sizes small        # about 1 min
    .venv/bin/python benchmarks/bench_migrate.py --sizes tiny         # the smoke test's run
    .venv/bin/python benchmarks/bench_migrate.py --sizes large --models mlp --json out.json
    .venv/bin/python benchmarks/bench_migrate.py --sizes large --models scanned --runs floor,stream
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GIB = 1 << 30

#: model -> size -> (width, depth). MLP: depth x Dense(width). Transformer: depth blocks of
#: d_model=width (attention projections 4 d^2, MLP 8 d^2), stacked by nn.scan.
SIZES = {
    "mlp": {"tiny": (64, 3), "small": (2048, 6), "large": (4096, 24)},
    "scanned": {"tiny": (32, 2), "small": (512, 8), "large": (1024, 32)},
}
SIZES["scanned-list"] = SIZES["scanned"]  # the same Linen checkpoint, another NNX port
RUNS = {
    "floor": None,
    "no-verify": ["--no-verify"],
    "verify": ["--no-train-check"],
    "stream": ["--stream", "--no-verify"],
    "stream+sums": ["--stream"],
}
#: issue 18's targets on the large checkpoint: run -> (time ratio, RSS ratio, RSS bound)
TARGETS = {
    "no-verify": (1.1, 1.1, None),
    "verify": (1.3, None, None),
    "stream": (1.2, None, lambda ckpt: 0.25 * ckpt + GIB),
}


def _config() -> tuple[str, int, int]:
    model, size = os.environ["BENCH_MIGRATE_MODEL"].split(":")
    width, depth = SIZES[model][size]
    return model, width, depth


# -- the models (imported by the CLI as bench_migrate:linen_model / bench_migrate:nnx_model) --


def linen_model() -> Any:
    from flax import linen as nn

    model, width, depth = _config()
    if model == "mlp":

        class MLP(nn.Module):
            @nn.compact
            def __call__(self, x):
                for _ in range(depth):
                    x = nn.relu(nn.Dense(width)(x))
                return x

        return MLP()

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x, _):
            h = nn.LayerNorm()(x)
            q, k, v = (nn.Dense(width, use_bias=False)(h) for _ in range(3))
            att = nn.softmax(q @ k.swapaxes(-1, -2) / width**0.5) @ v
            x = x + nn.Dense(width, use_bias=False)(att)
            h = nn.LayerNorm()(x)
            return x + nn.Dense(width)(nn.gelu(nn.Dense(4 * width)(h))), None

    class Scanned(nn.Module):
        @nn.compact
        def __call__(self, x):
            blocks = nn.scan(
                Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=depth
            )
            return blocks()(x, None)[0]

    return Scanned()


def nnx_model() -> Any:
    from flax import nnx

    model, width, depth = _config()
    rngs = nnx.Rngs(0)
    if model == "mlp":

        class MLP(nnx.Module):
            def __init__(self):
                self.layers = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(depth)])

            def __call__(self, x):
                for layer in self.layers:
                    x = nnx.relu(layer(x))
                return x

        return MLP()

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.ln1 = nnx.LayerNorm(width, rngs=rngs)
            self.q, self.k, self.v, self.o = (
                nnx.Linear(width, width, use_bias=False, rngs=rngs) for _ in range(4)
            )
            self.ln2 = nnx.LayerNorm(width, rngs=rngs)
            self.up = nnx.Linear(width, 4 * width, rngs=rngs)
            self.down = nnx.Linear(4 * width, width, rngs=rngs)

        def __call__(self, x):
            h = self.ln1(x)
            att = nnx.softmax(self.q(h) @ self.k(h).swapaxes(-1, -2) / width**0.5) @ self.v(h)
            x = x + self.o(att)
            return x + self.down(nnx.gelu(self.up(self.ln2(x))))

    if model == "scanned":

        class Scanned(nnx.Module):
            """What ``linnx convert`` writes for the ``nn.scan`` stack: one stacked block."""

            def __init__(self):
                @nnx.split_rngs(splits=depth)
                @nnx.vmap(in_axes=(0,), out_axes=0)
                def make(rngs):
                    return Block(rngs)

                self.blocks = make(rngs)

            def __call__(self, x):
                @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
                def forward(x, block):
                    return block(x)

                return forward(x, self.blocks)

        return Scanned()

    class Unrolled(nnx.Module):
        def __init__(self):
            self.blocks = nnx.List([Block(rngs) for _ in range(depth)])

        def __call__(self, x):
            for block in self.blocks:
                x = block(x)
            return x

    return Unrolled()


def sample() -> str:
    model, width, _ = _config()
    return f"2,{width}:float32" if model == "mlp" else f"2,8,{width}:float32"


# -- children ----------------------------------------------------------------------------------


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child_write(dst: str) -> dict[str, Any]:
    """Writes the Linen checkpoint with Orbax alone, from random values (no init pass)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import orbax.checkpoint as ocp

    model, width, _ = _config()
    shape = (2, width) if model == "mlp" else (2, 8, width)
    abstract = jax.eval_shape(linen_model().init, jax.random.key(0), jnp.zeros(shape))
    rng = np.random.default_rng(0)
    tree = jax.tree.map(
        lambda s: rng.standard_normal(s.shape, np.float32) / np.float32(np.sqrt(s.shape[-1])),
        abstract,
    )
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(dst, tree)
    return {"bytes": sum(a.nbytes for a in jax.tree.leaves(tree))}


def _child_floor(src: str, dst: str) -> dict[str, Any]:
    import jax
    import orbax.checkpoint as ocp

    start = time.perf_counter()
    ckptr = ocp.Checkpointer(ocp.StandardCheckpointHandler())
    with ocp.PyTreeCheckpointer() as reader:
        tree = reader.metadata(src).item_metadata.tree
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        args = jax.tree.map(
            lambda m: ocp.ArrayRestoreArgs(sharding=device, global_shape=m.shape, dtype=m.dtype),
            tree,
        )
        restored = reader.restore(src, args=ocp.args.PyTreeRestore(restore_args=args))
    ckptr.save(dst, restored)
    ckptr.close()
    return {"seconds": time.perf_counter() - start}


def _child_cli(src: str, dst: str, extra: list[str]) -> dict[str, Any]:
    import flax  # noqa: F401 - imports outside the timed part, as for the floor
    import jax  # noqa: F401
    import orbax.checkpoint  # noqa: F401

    import linnx.migrate  # noqa: F401
    from linnx._cli import main

    models = ("--linen", "bench_migrate:linen_model", "--nnx", "bench_migrate:nnx_model")
    argv = ["migrate-weights", *models, "--sample", sample(), *extra, src, dst]
    start = time.perf_counter()
    code = main(argv)
    return {"seconds": time.perf_counter() - start, "exit": code}


def _child(argv: list[str]) -> None:
    kind, *rest = argv
    if kind == "write":
        out = _child_write(rest[0])
    elif kind == "floor":
        out = _child_floor(rest[0], rest[1])
    else:
        out = _child_cli(rest[0], rest[1], rest[2:])
    out["peak_rss"] = _peak_rss()
    print("BENCH-RESULT " + json.dumps(out), flush=True)


# -- the parent --------------------------------------------------------------------------------


def _spawn(model: str, size: str, *argv: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "BENCH_MIGRATE_MODEL": f"{model}:{size}",
        "PYTHONPATH": os.pathsep.join(
            [str(HERE), str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=HERE,
    )
    lines = [x for x in done.stdout.splitlines() if x.startswith("BENCH-RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(
            f"{model}:{size} {argv[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    result = json.loads(lines[-1].removeprefix("BENCH-RESULT "))
    if result.get("exit", 0) != 0:
        raise SystemExit(
            f"{model}:{size} {argv[0]} exited {result['exit']}:\n{done.stderr[-3000:]}"
        )
    return result


def _warm(path: Path) -> None:
    """Reads every file once so that each run finds the source in the page cache."""
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        _child(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,large")
    parser.add_argument("--models", default="mlp,scanned")
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--out", default="bench-out/migrate", help="scratch directory")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of runs; each row keeps its fastest time"
    )
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"linnx checkpoint migration benchmark: {os.cpu_count()} CPUs, load "
        f"{tuple(round(x, 2) for x in os.getloadavg())}",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    missed: list[str] = []
    for size in args.sizes.split(","):
        for model in args.models.split(","):
            src = out / f"{model}-{size}-linen"
            shutil.rmtree(src, ignore_errors=True)
            written = _spawn(model, size, "write", str(src))
            ckpt = written["bytes"]
            _warm(src)
            rows: dict[str, dict[str, Any]] = {}
            loads = [os.getloadavg()[0]]
            # Rounds of every run, interleaved: each row keeps its fastest time (what the
            # other jobs on a shared machine slowed least) and its largest peak RSS.
            for _ in range(args.repeat):
                for run in args.runs.split(","):
                    dst = out / f"{model}-{size}-{run}"
                    shutil.rmtree(dst, ignore_errors=True)
                    kind = ["floor"] if RUNS[run] is None else ["cli"]
                    got = _spawn(model, size, *kind, str(src), str(dst), *(RUNS[run] or []))
                    shutil.rmtree(dst, ignore_errors=True)
                    if run in rows:
                        got["seconds"] = min(got["seconds"], rows[run]["seconds"])
                        got["peak_rss"] = max(got["peak_rss"], rows[run]["peak_rss"])
                    rows[run] = got
                    loads.append(os.getloadavg()[0])
            if not args.keep:
                shutil.rmtree(src, ignore_errors=True)
            print(
                f"\n{model} {size}: {ckpt / GIB:.2f} GiB checkpoint; best of {args.repeat}, "
                f"load average {min(loads):.1f}-{max(loads):.1f}"
            )
            print(
                f"  {'run':<12} {'wall s':>7} {'peak RSS':>9} {'RSS/ckpt':>8} "
                f"{'time/floor':>10} {'RSS/floor':>9}  target"
            )
            floor = rows.get("floor")
            for run, row in rows.items():
                t_ratio = row["seconds"] / floor["seconds"] if floor else float("nan")
                m_ratio = row["peak_rss"] / floor["peak_rss"] if floor else float("nan")
                note = ""
                if size == "large" and run in TARGETS and floor:
                    t_max, m_max, bound = TARGETS[run]
                    ok = t_ratio <= t_max and (m_max is None or m_ratio <= m_max)
                    ok = ok and (bound is None or row["peak_rss"] <= bound(ckpt))
                    note = (
                        ("met" if ok else "MISSED")
                        + f" (time <= {t_max}x"
                        + (f", RSS <= {m_max}x" if m_max else "")
                        + (f", RSS <= {bound(ckpt) / GIB:.2f} GiB" if bound else "")
                        + ")"
                    )
                    if not ok:
                        missed.append(f"{model} {run}")
                print(
                    f"  {run:<12} {row['seconds']:>7.2f} {row['peak_rss'] / GIB:>7.2f} G "
                    f"{row['peak_rss'] / ckpt:>7.2f}x {t_ratio:>9.2f}x {m_ratio:>8.2f}x  "
                    f"{note}",
                    flush=True,
                )
                results.append(
                    {
                        "model": model,
                        "size": size,
                        "run": run,
                        "bytes": ckpt,
                        "load": [min(loads), max(loads)],
                        **row,
                    }
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if missed:
        print(f"\ntargets missed: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
