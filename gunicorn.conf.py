"""gunicorn settings picked up from the working directory (``gunicorn 'api:create_app()'``).

Several workers share one Prometheus view through ``PROMETHEUS_MULTIPROC_DIR``: the master makes
a fresh directory before any worker imports prometheus_client, and forgets dead workers.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="payments-metrics-")


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
