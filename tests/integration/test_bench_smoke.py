"""`python -m bench --smoke` against the running stack: every benchmark still runs, at tiny sizes
and with no threshold, so that none can rot unnoticed. A benchmark that raises, or whose load the
system refused (an intake that made no payment because the API wanted a key the benchmark did
not send, as happened once), fails here; the figures themselves are for `make bench`.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.stack_support import ROOT

pytestmark = pytest.mark.integration


def test_every_benchmark_runs_and_does_the_work_it_reports(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    figures: dict[str, dict[str, Any]] = {
        f["figure"]: f["data"] for f in json.loads(out.read_text())["figures"]
    }

    def figure(start: str) -> dict[str, Any]:
        """The one figure named ``start`` (sizes and latencies follow in some names)."""
        if start in figures:
            return figures[start]
        found = [data for name, data in figures.items() if name.startswith(start)]
        assert len(found) == 1, f"no single figure '{start}…' in {sorted(figures)}"
        return found[0]

    zero = figure("payment intake (zero-latency Stripe)")
    assert zero["requests"] > 0 and zero["api_failures"] == 0 and zero["sql_failures"] == 0
    slow = figure("payment intake at 250 ms")
    assert slow["payments"] > 0 and slow["failures"] == 0
    hooks = figure("webhooks while intake is saturated")
    assert hooks["webhooks"] > 0 and hooks["failures"] == 0
    assert figure("API /metrics under intake load")["scrapes"] > 0

    cdc = figure("CDC delay at 100/s")
    assert cdc["rows"] > 0 and math.isfinite(cdc["p99_seconds"])

    throughput = figure("stream throughput")
    assert throughput["records"] > 0 and throughput["worker_rate"] > 0
    changes = figure("stream throughput (status changes)")
    # Every status change the worker applied was announced once.
    assert changes["changes"] > 0
    assert changes["events"] == changes["distinct_events"] == changes["changes"]

    fresh = figure("reconciliation cost (fresh)")
    assert fresh["resolved"] > 0 and 0 < fresh["calls"] < fresh["baseline_calls"]
    per_workers = figure("reconciliation calls per cycle")
    assert {"1", "2", "3"} <= set(per_workers)

    recovery = figure("recovery (")
    assert recovery["entries"] > 0
    assert math.isfinite(recovery["restart_seconds"]) and math.isfinite(recovery["rebuild_seconds"])
    assert figure("memory (")["rss_mib_full"] > 0
