"""Sending a status event so that it is never lost: the partition waits until the broker
acknowledged it.

``topic.send()`` only puts a record in the producer's buffer; its delivery may fail later. The
emitter awaits the broker's acknowledgement, and on any failure retries with exponential backoff
and jitter, for as long as it takes: the change that caused the event is not acknowledged (its
offset is not committed, the table says nothing was emitted) until the event is on the topic.
Meanwhile the partition is reported blocked (``streams.blocking``: ``/stats/``, ``/healthz``,
metrics), with since when and why.
"""

from __future__ import annotations

from typing import Any

import faust
from cloudevents.core.bindings.kafka import to_binary_event
from cloudevents.core.v1.event import CloudEvent

from payments.domain.events import StatusUpdate
from streams.blocking import STATUS_EVENT, PartitionBlocks
from streams.metrics import WorkerMetrics


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
        self, topic: faust.TopicT, metrics: WorkerMetrics, blocks: PartitionBlocks
    ) -> None:
        self.topic = topic
        self.metrics = metrics
        self.blocks = blocks

    async def emit(self, partition: int, update: StatusUpdate) -> None:
        """Return once the broker acknowledged the event; retry until it does (the partition
        is reported blocked meanwhile)."""
        key, value, headers = cloudevent_record(update)

        async def deliver() -> None:
            delivery = await self.topic.send(key=key, value=value, headers=headers)
            await delivery  # the broker's acknowledgement (acks=all)

        await self.blocks.until_done(
            partition,
            deliver,
            waiting_for=STATUS_EVENT,
            payment_id=str(update.payment_id),
            retries=self.metrics.emit_retries,
            event_id=update.event_id,
        )
        self.metrics.emitted.labels(update.status.value).inc()
