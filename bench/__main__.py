"""``python -m bench [--quick|--full] [--only NAME] [--json PATH]``: run the benchmarks against
the running stack (``make up``), print progress, then the table; write the figures as JSON."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from bench.report import Figure, render_table, say
from bench.stack import Context, run_id, wait_worker_caught_up
from payments.settings import Settings

# name -> module (each has ``run(ctx) -> list[Figure]``), in the order they run.
BENCHMARKS = {
    "intake": "bench.intake",
    "cdc": "bench.cdc_delay",
    "throughput": "bench.throughput",
    "reconcile": "bench.reconcile",
    "recovery": "bench.recovery",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        dest="full",
        action="store_false",
        help="small runs that finish in a few minutes (default)",
    )
    size.add_argument(
        "--full",
        dest="full",
        action="store_true",
        help="the issue's sizes: 100,000 pending to reconcile, 1,000,000 for recovery/memory",
    )
    size.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, no thresholds: only proves the benchmarks still run (make test)",
    )
    parser.set_defaults(full=False)
    parser.add_argument(
        "--stripe-latency-ms",
        type=float,
        default=250.0,
        help="latency of each fake Stripe call in the intake benchmark (default 250)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench/results/latest.json"),
        help="where to write the figures (default: bench/results/latest.json)",
    )
    return parser.parse_args(argv)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (the machine is shared: every figure is a ratio
    against a baseline of the same run, but the load says how noisy the run was)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n for n in BENCHMARKS if not args.only or n in args.only]
    ctx = Context(
        Settings(),
        full=args.full,
        run=run_id(),
        smoke=args.smoke,
        stripe_latency_ms=args.stripe_latency_ms,
    )
    mode = "smoke" if args.smoke else "full" if args.full else "quick"
    machine = f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    say(f"benchmarks {', '.join(names)} ({mode}), run {ctx.run}; load average {load_average()}")
    say(f"machine: {machine}")
    figures: list[Figure] = []
    failed: list[str] = []
    try:
        for name in names:
            module = importlib.import_module(BENCHMARKS[name])
            say(f"== {name}")
            try:
                wait_worker_caught_up(ctx)
                figures += module.run(ctx)
            except Exception as exc:
                traceback.print_exc()
                failed.append(name)
                figures.append(
                    Figure(name, "failed", "—", None, "—", False, f"{type(exc).__name__}: {exc}")
                )
    finally:
        ctx.close()
    print()
    print(f"{time.strftime('%Y-%m-%d %H:%M')} · {machine} · {mode} · load average {load_average()}")
    print(render_table(figures))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "run": ctx.run,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": machine,
                "cpus": os.cpu_count(),
                "mode": mode,
                "load_average": load_average(),
                "figures": [f.to_dict() for f in figures],
            },
            indent=2,
        )
    )
    print(f"\nfigures written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
