"""gunicorn settings picked up from the working directory (``gunicorn 'api:create_app()'``), for
the pool ``API_POOL`` names (``api/pools.py``: ``intake``, the default, or ``hooks``).

Threads, not processes, carry the concurrency: a payment's request spends most of its time
waiting on Stripe (hundreds of ms), during which a sync worker could serve nobody else. Each
worker process runs ``API_THREADS`` request threads (gthread), and its database pools may grow
to as many connections, so no thread waits for a connection another thread only holds while
Stripe answers. A reserve of those threads is kept for the requests that do not call Stripe
(``API_RESERVED_THREADS``, an eighth; ``api/capacity.py``). ``API_NICE`` (0) lowers the CPU
priority of the pool's workers. Workers are never recycled (``max_requests = 0``): a restart
drops the pools, the metrics' process files and in-flight Stripe calls for nothing.

Several workers share one Prometheus view through ``PROMETHEUS_MULTIPROC_DIR``: the master makes
a fresh directory before any worker imports prometheus_client, and forgets dead workers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

# The directory this master made (removed when it exits), or None when one was given.
MADE_METRICS_DIR: str | None = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    MADE_METRICS_DIR = tempfile.mkdtemp(prefix="payments-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = MADE_METRICS_DIR

# After the directory is set: importing the api package imports prometheus_client, which picks
# its multiprocess mode from the environment at import.
from api.pools import pool_named  # noqa: E402

POOL = pool_named(os.environ.get("API_POOL", "intake"))
worker_class = "gthread"
threads = int(os.environ.get("API_THREADS", str(POOL.threads)))
NICE = int(os.environ.get("API_NICE", "0"))
max_requests = 0
# The settings (payments.settings) read DB_POOL_MAX: one connection per thread at most.
os.environ.setdefault("DB_POOL_MAX", str(threads))
# Threads no request that calls Stripe may take (api/capacity.py): webhooks, /metrics and reads
# find one free however slow Stripe is. The settings read API_STRIPE_SLOTS.
reserved_threads = int(os.environ.get("API_RESERVED_THREADS", str(max(2, threads // 8))))
os.environ.setdefault("API_STRIPE_SLOTS", str(max(1, threads - reserved_threads)))


def post_fork(server: Any, worker: Any) -> None:
    if not NICE:
        return
    # For this worker's threads (they inherit it: they start after this), and for its session's
    # group where the kernel shares the CPU between sessions first (autogroup; the stack starts
    # each pool in a session of its own): there a thread's nice counts only within its session.
    os.nice(NICE)
    try:
        with open("/proc/self/autogroup", "w") as group:
            group.write(str(NICE))
    except OSError:  # no autogroup in this kernel, or not allowed: the threads' nice stands
        pass


def post_worker_init(worker: Any) -> None:
    # The app is loaded (modules, pools): keep the collector's full scans off it.
    from payments.bootstrap import freeze_startup_heap

    freeze_startup_heap()


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if MADE_METRICS_DIR is not None:
        shutil.rmtree(MADE_METRICS_DIR, ignore_errors=True)
