"""The worker's event-loop lag (``payments_worker_loop_lag_seconds``): a loop held by blocking
work shows as a late wakeup of the sampling task, a free loop as none; held past the limit, the
watch logs the stack that holds it."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from payments.logs import configure_logging
from streams.app import LoopWatch, sample_loop_lag
from streams.metrics import WorkerMetrics


def test_a_held_loop_shows_as_lag_and_a_free_one_does_not() -> None:
    metrics = WorkerMetrics()

    async def scenario() -> None:
        sampler = asyncio.create_task(sample_loop_lag(metrics.loop_lag.observe, 0.02))
        await asyncio.sleep(0.2)  # a free loop: about ten samples
        time.sleep(0.4)  # something holds the loop (a blocking call in a callback)
        await asyncio.sleep(0.1)
        sampler.cancel()

    asyncio.run(scenario())

    registry = metrics.registry
    count = registry.get_sample_value("payments_worker_loop_lag_seconds_count")
    on_time = registry.get_sample_value("payments_worker_loop_lag_seconds_bucket", {"le": "0.1"})
    within = registry.get_sample_value("payments_worker_loop_lag_seconds_bucket", {"le": "0.25"})
    assert count is not None and on_time is not None and within is not None
    assert count >= 5
    assert count - within >= 1  # the wakeup the held loop delayed, by about 0.4 s
    assert on_time >= 4


def test_a_loop_held_past_the_limit_is_logged_once_with_what_holds_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The loop sits in a blocking call for 0.6 s with a 0.2 s limit: one warning, naming the
    function that blocks (its stack), not one per check of the watch."""
    configure_logging("INFO")
    watch = LoopWatch(held_seconds=0.2)

    def blocking_call_in_a_callback() -> None:
        time.sleep(0.6)

    async def scenario() -> None:
        watch.start()
        sampler = asyncio.create_task(sample_loop_lag(lambda lag: None, 0.02, watch.beat))
        await asyncio.sleep(0.1)
        blocking_call_in_a_callback()
        await asyncio.sleep(0.3)
        sampler.cancel()
        watch.stop()

    asyncio.run(scenario())

    held = [json.loads(line) for line in capsys.readouterr().err.splitlines() if "held" in line]
    assert len(held) == 1
    assert held[0]["event"] == "event loop held"
    assert "blocking_call_in_a_callback" in held[0]["stack"]
    assert held[0]["held_seconds"] >= 0.2
