"""Partitions that wait: one step of a change (its status event, its application to the tables)
failed and is retried, with backoff and jitter, until it passes; the change is not acknowledged
meanwhile, so its partition goes no further.

One mechanism for every such step: each failure marks the partition blocked (since when, how
many attempts, what it waits for and why), for ``/healthz``, ``/stats/``, ``/ops`` and the
``payments_status_emit_blocked_*`` gauges; the step passing clears it. A retry cancelled (the
worker stops, the partition is revoked) clears it too: the next owner handles the change again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import Counter

from payments.logs import get_logger
from streams.metrics import WorkerMetrics
from streams.retry import until_done

log = get_logger("streams.blocking")
T = TypeVar("T")

# What a blocked partition waits for (the ``waiting_for`` of its state).
STATUS_EVENT = "status event acknowledged by the broker"
CHANGE_APPLIED = "change applied to the worker's tables"


@dataclass
class Blocked:
    since: float
    attempts: int
    reason: str
    waiting_for: str
    payment_id: str


class PartitionBlocks:
    def __init__(
        self,
        metrics: WorkerMetrics,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.metrics = metrics
        self.sleep = sleep
        self.blocked: dict[int, Blocked] = {}

    async def until_done(
        self,
        partition: int,
        call: Callable[[], Awaitable[T]],
        *,
        waiting_for: str,
        payment_id: str,
        retries: Counter,
        **log_fields: Any,
    ) -> T:
        """``call()``'s result once it passes; each failure blocks ``partition`` and counts in
        ``retries``. Cancellation is never swallowed."""

        def failed(attempt: int, exc: Exception) -> None:
            reason = f"{type(exc).__name__}: {exc}"[:500]
            state = self.blocked.get(partition)
            if state is None:
                state = self.blocked[partition] = Blocked(
                    time.time(), 0, reason, waiting_for, payment_id
                )
            state.attempts, state.reason = attempt, reason
            state.waiting_for, state.payment_id = waiting_for, payment_id
            retries.inc()
            self._export()
            log.warning(
                "partition waits and retries",
                waiting_for=waiting_for,
                payment_id=payment_id,
                partition=partition,
                attempt=attempt,
                error=reason,
                **log_fields,
            )

        try:
            result, failures = await until_done(call, failed, sleep=self.sleep)
        except asyncio.CancelledError:
            self._clear(partition)
            raise
        if failures and self._clear(partition):
            log.info(
                "partition moves on after retries",
                waiting_for=waiting_for,
                payment_id=payment_id,
                partition=partition,
                attempts=failures,
                **log_fields,
            )
        return result

    def _clear(self, partition: int) -> bool:
        if self.blocked.pop(partition, None) is None:
            return False
        self._export()
        return True

    def _export(self) -> None:
        self.metrics.blocked.set(len(self.blocked))
        oldest = min((b.since for b in self.blocked.values()), default=0.0)
        self.metrics.blocked_since.set(oldest)

    def state(self) -> dict[str, Any] | None:
        """The oldest blocked partition, for /stats/ and /healthz; None when none waits."""
        if not self.blocked:
            return None
        partition, oldest = min(self.blocked.items(), key=lambda item: item[1].since)
        return {
            "partition": partition,
            "since": oldest.since,
            "seconds": round(time.time() - oldest.since, 1),
            "attempts": oldest.attempts,
            "waiting_for": oldest.waiting_for,
            "payment_id": oldest.payment_id,
            "reason": oldest.reason,
            "partitions": sorted(self.blocked),
        }
