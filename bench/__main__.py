"""`python -m bench [names...] [--backend sqlite|postgres|both] [--quick] [--large]`.

Runs the benchmarks one at a time (each starts its own servers on fresh databases), prints each
figure with its same-run baseline, then a summary table. Exit status is 0 unless one crashed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from types import ModuleType

from bench._common import Ctx, Result, fmt

MODULES = (
    "step_overhead",
    "dispatch_latency",
    "log_ingest",
    "sse_idle",
    "amqp_dispatch",
    "buildbot_peer",
    "list_builds",
    "sse_fanout",
    "artifacts",
)


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"bench.{name}")


def table(results: list[Result]) -> str:
    header = ("benchmark", "backend", "metric", "value", "baseline", "ratio", "target", "verdict")
    rows = [header]
    for r in results:
        rows.append(
            (
                r.bench,
                r.backend,
                r.metric,
                f"{fmt(r.value)} {r.unit}",
                f"{fmt(r.baseline)} {r.unit} ({r.baseline_label})"
                if r.baseline is not None
                else "-",
                f"{r.ratio:.2f}x" if r.ratio is not None else "-",
                r.target or "-",
                {True: "PASS", False: "MISS", None: "-"}[r.passed],
            )
        )
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "---|" * len(header))
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Run the ci-executor benchmarks (see bench/RESULTS.md)."
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all): {', '.join(MODULES)}",
    )
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a fast check")
    parser.add_argument(
        "--large",
        action="store_true",
        help="also the biggest scaling sizes (1,000 MB of log, 1M builds); takes long here",
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in MODULES]
    if unknown:
        parser.error(
            f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(MODULES)}"
        )
    backends = ("postgres", "sqlite") if args.backend == "both" else (args.backend,)
    ctx = Ctx(quick=args.quick, large=args.large)
    crashed: list[str] = []
    started = time.monotonic()
    print(
        f"ci-executor benchmarks {'(quick) ' if args.quick else ''}"
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, python {platform.python_version()}",
        flush=True,
    )
    for name in args.names or MODULES:
        module = _load(name)
        for backend in backends:
            if backend not in module.BACKENDS:
                continue
            print(f"== {name} on {backend}", flush=True)
            t0 = time.monotonic()
            try:
                await module.run(ctx, backend)
            except Exception:
                traceback.print_exc()
                crashed.append(f"{name}/{backend}")
            print(f"   ({time.monotonic() - t0:.1f} s)", flush=True)
    print(f"\n{table(ctx.results)}\n")
    print(f"total {time.monotonic() - started:.0f} s")
    if crashed:
        print(f"crashed: {', '.join(crashed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
