"""Sending a status event so that it is never lost: the partition waits until the broker
acknowledged it.

``topic.send()`` only puts a record in the producer's buffer; its delivery may fail later. The
emitter awaits the broker's acknowledgement, and on any failure retries with exponential backoff
and jitter, for as long as it takes: the change that caused the event is not acknowledged (its
offset is not committed, the table says nothing was emitted) until the event is on the topic.
Meanwhile the partition is reported blocked (``/stats/``, ``/healthz``, metrics), with since when.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import faust
from cloudevents.core.bindings.kafka import to_binary_event
from cloudevents.core.v1.event import CloudEvent

from payments.domain.events import StatusUpdate
from payments.logs import get_logger
from streams.metrics import WorkerMetrics
from streams.retry import until_done

log = get_logger("streams.emitter")


@dataclass
class Blocked:
    since: float
    attempts: int
    reason: str


def cloudevent_record(update: StatusUpdate) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers): the CloudEvents Kafka binding, binary content mode. The value is
    the event's JSON body as before; ``ce_id`` is its ``event_id``; the key its payment id."""
    attributes: dict[str, Any] = update.cloudevent_attributes()
    attributes["time"] = update.occurred_at
    event = CloudEvent(attributes=attributes, data=update.to_dict())
    message = to_binary_event(event, key_mapper=lambda _: str(update.payment_id))
    key = message.key.encode() if isinstance(message.key, str) else (message.key or b"")
    return key, message.value, sorted(message.headers.items())


class StatusEmitter:
    def __init__(
        self,
        topic: faust.TopicT,
        metrics: WorkerMetrics,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.topic = topic
        self.metrics = metrics
        self._sleep = sleep
        self.blocked: dict[int, Blocked] = {}

    async def emit(self, partition: int, update: StatusUpdate) -> None:
        """Return once the broker acknowledged the event; retry until it does."""
        key, value, headers = cloudevent_record(update)

        async def deliver() -> None:
            delivery = await self.topic.send(key=key, value=value, headers=headers)
            await delivery  # the broker's acknowledgement (acks=all)

        def failed(attempt: int, exc: Exception) -> None:
            self._block(partition, attempt, f"{type(exc).__name__}: {exc}", update)

        _, attempt = await until_done(deliver, failed, sleep=self._sleep)
        self._unblock(partition, update, attempt)
        self.metrics.emitted.labels(update.status.value).inc()

    def _block(self, partition: int, attempt: int, reason: str, update: StatusUpdate) -> None:
        state = self.blocked.get(partition)
        if state is None:
            state = self.blocked[partition] = Blocked(time.time(), 0, reason)
        state.attempts, state.reason = attempt, reason[:500]
        self.metrics.emit_retries.inc()
        self._export()
        log.warning(
            "status event not acknowledged; partition waits and retries",
            payment_id=str(update.payment_id),
            event_id=update.event_id,
            partition=partition,
            attempt=attempt,
            error=reason,
        )

    def _unblock(self, partition: int, update: StatusUpdate, attempts: int) -> None:
        if self.blocked.pop(partition, None) is not None:
            self._export()
            log.info(
                "status event acknowledged after retries",
                payment_id=str(update.payment_id),
                event_id=update.event_id,
                attempts=attempts,
            )

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
            "reason": oldest.reason,
            "partitions": sorted(self.blocked),
        }
