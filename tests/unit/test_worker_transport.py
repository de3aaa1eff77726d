"""The worker's consumer fetches in batches: the broker holds a fetch until a megabyte of
changes is there or 50 ms have passed, instead of answering for every record (at a steady
500 changes a second the worker spent more on fetches than on changes and fell seconds behind).

Checked on the worker as built in production (nothing started, no broker): the consumer Faust
would start is asked to wait, and aiokafka still hands those two settings to its fetcher."""

from __future__ import annotations

import inspect

import aiokafka
from aiokafka.consumer.fetcher import Fetcher

from payments.settings import Settings
from streams import transport
from streams.app import PaymentsWorker
from tests.unit.test_worker_records import NoBroker


def test_the_workers_consumer_waits_for_a_batch_but_no_longer_than_50_ms() -> None:
    worker = PaymentsWorker(Settings(), store="memory://", reader=NoBroker())
    thread = worker.app.consumer._thread  # type: ignore[attr-defined]
    assert isinstance(thread, transport.ConsumerThread)

    async def create() -> aiokafka.AIOKafkaConsumer:  # aiokafka takes the running loop
        return thread._create_worker_consumer(worker.app.transport)

    consumer = worker.app.loop.run_until_complete(create())

    assert isinstance(consumer, aiokafka.AIOKafkaConsumer)
    assert consumer._fetch_max_wait_ms == 50
    assert consumer._fetch_min_bytes == 1024**2
    # Everything else is Faust's: the group, manual commits, the assignor it needs.
    assert consumer._group_id == worker.settings.worker_app_id
    assert consumer._enable_auto_commit is False
    worker.app.loop.run_until_complete(consumer.stop())


def test_aiokafka_still_builds_its_fetcher_from_the_two_settings_overridden() -> None:
    # The override sets private attributes that aiokafka reads when the consumer starts; an
    # upgrade that stops passing them on must fail here, not slow the worker down unnoticed.
    start = inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    assert "fetch_min_bytes=self._fetch_min_bytes" in start
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in start
    assert {"fetch_min_bytes", "fetch_max_wait_ms"} <= set(
        inspect.signature(Fetcher.__init__).parameters
    )
