"""The ``payment-status-update`` events of one payment, read straight from Kafka.

The worker keys every event by the payment id and Faust's producer (aiokafka) picks the
partition with Kafka's default partitioner: murmur2 of the key bytes, made positive, modulo the
partition count. kafka-python implements the same function, so the API computes the one
partition that can hold a payment's events and reads only that partition, from the offset of
the payment's creation time (``offsets_for_times``), within a time and record budget. This needs
no worker: it answers the same with one worker or ten, and after a worker restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from payments.domain.events import EventFormatError, StatusUpdate
from payments.logs import get_logger
from payments.settings import Settings

log = get_logger(__name__)

# Producer and API clocks may differ a little: start the scan this much before creation.
CLOCK_SLACK = timedelta(seconds=30)


def partition_for(key: bytes, partition_count: int) -> int:
    """Kafka's default partitioner (Java client, aiokafka, kafka-python) for a keyed record."""
    return (int(murmur2(key)) & 0x7FFFFFFF) % partition_count


@dataclass(frozen=True)
class EmittedEvents:
    """What was found. ``complete`` is False when the budget ran out or Kafka did not answer
    (then ``error`` says why); the events found so far are still returned."""

    events: list[StatusUpdate] = field(default_factory=list)
    complete: bool = True
    error: str | None = None
    partition: int | None = None


class StatusEventSource(Protocol):
    def events_for(self, payment_id: UUID, since: datetime) -> EmittedEvents: ...


class KafkaStatusEvents:
    """One assigned (group-less) consumer per API process, built on first use, used under a
    lock; it is rebuilt after a Kafka error."""

    def __init__(
        self,
        settings: Settings,
        *,
        budget_seconds: float = 2.0,
        max_records: int = 5_000,
        consumer_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.topic = settings.status_topic
        self.bootstrap = settings.kafka_bootstrap_servers
        self.budget_seconds = budget_seconds
        self.max_records = max_records
        self._factory = consumer_factory or self._new_consumer
        self._consumer: Any = None
        self._lock = threading.Lock()

    def _new_consumer(self) -> KafkaConsumer:
        return KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=5_000,
            fetch_max_wait_ms=100,
            max_poll_records=500,
            reconnect_backoff_max_ms=1_000,
        )

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None

    def events_for(self, payment_id: UUID, since: datetime) -> EmittedEvents:
        with self._lock:
            try:
                return self._read(str(payment_id).encode(), since)
            except (KafkaError, OSError, AssertionError) as exc:
                log.warning(
                    "status events unreadable",
                    payment_id=str(payment_id),
                    topic=self.topic,
                    error=repr(exc),
                )
                if self._consumer is not None:
                    self._consumer.close()
                    self._consumer = None
                # The browser sees this text: no broker address, no exception (both are logged).
                return EmittedEvents(complete=False, error="Kafka did not answer; retried shortly")

    def _read(self, key: bytes, since: datetime) -> EmittedEvents:
        if self._consumer is None:
            self._consumer = self._factory()
        consumer = self._consumer
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            return EmittedEvents(complete=True, error=f"topic {self.topic} does not exist yet")
        partition = partition_for(key, len(partitions))
        tp = TopicPartition(self.topic, partition)
        consumer.assign([tp])
        end = consumer.end_offsets([tp])[tp]
        start_ms = int((since - CLOCK_SLACK).timestamp() * 1000)
        found = consumer.offsets_for_times({tp: start_ms})[tp]
        if found is None:  # nothing written since the payment was created
            return EmittedEvents(partition=partition)
        consumer.seek(tp, found.offset)
        events: list[StatusUpdate] = []
        scanned = 0
        deadline = time.monotonic() + self.budget_seconds
        position = found.offset
        while position < end and scanned < self.max_records and time.monotonic() < deadline:
            for record in consumer.poll(timeout_ms=200).get(tp, []):
                scanned += 1
                position = record.offset + 1
                if record.offset >= end:
                    break
                if record.key == key and record.value is not None:
                    try:
                        events.append(StatusUpdate.from_json(record.value))
                    except EventFormatError as exc:  # not ours to show
                        log.warning("unreadable status event", offset=record.offset, error=str(exc))
        complete = position >= end
        return EmittedEvents(
            events=events,
            complete=complete,
            error=None
            if complete
            else f"read {scanned} records of partition {partition} "
            "within the budget; more may follow",
            partition=partition,
        )
