"""The API runs as two pools of gunicorn processes, the same app in both, each on its own port:

* **intake**: the merchants' and the customers' requests (create, cancel, confirm, reads, the
  checkout page). Most of their time is a wait on Stripe, and at saturation they fill every
  core of a small host with their work before and after it.
* **hooks**: Stripe's webhooks (the fast path of every status change) and the operators'
  scrapes (``/metrics``, ``/ops``). Short requests, none calls Stripe.

Apart, a webhook never waits for a thread or the GIL behind a wave of intake: its pool has its
own processes (and, started as the stack starts them, its own session: where the kernel shares
the CPU between sessions, its own share). ``API_NICE`` lowers a pool's CPU priority, for a host
where webhooks must win the cores from intake (README, "Two pools": it costs intake). Both write
their metrics to one ``PROMETHEUS_MULTIPROC_DIR``, so the hooks pool's ``/metrics`` is the
whole API's (intake counted in). Stripe's endpoint and Prometheus point at the hooks pool;
either pool answers every route, so nothing breaks when a caller uses the other.

``gunicorn.conf.py`` reads ``API_POOL`` and sizes the pool; ``command`` is the one command
line that starts a pool (the stack, the benchmark and the tests use it).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pool:
    name: str
    threads: int  # per process (gthread)
    workers: int | None  # processes; None: the caller's choice (the stack's API_WORKERS)


INTAKE = Pool("intake", threads=64, workers=None)
HOOKS = Pool("hooks", threads=16, workers=1)
POOLS = {pool.name: pool for pool in (INTAKE, HOOKS)}

APP = "api:create_app()"


def pool_named(name: str) -> Pool:
    try:
        return POOLS[name]
    except KeyError:
        raise ValueError(f"API_POOL must be one of {', '.join(POOLS)}, got {name!r}") from None


def command(pool: Pool, bind: str, *, workers: int | None = None, app: str = APP) -> list[str]:
    """gunicorn for ``pool`` on ``bind`` (``host:port``), from this interpreter's environment;
    run it with ``API_POOL=pool.name`` in its environment and the project as its directory
    (``gunicorn.conf.py`` is read from there)."""
    count = workers if workers is not None else pool.workers
    if count is None:
        raise ValueError(f"the {pool.name} pool's worker count is the caller's to give")
    gunicorn = Path(sys.executable).parent / "gunicorn"
    return [str(gunicorn), "--bind", bind, "--workers", str(count), "--timeout", "30", app]
