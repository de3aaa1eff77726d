"""The worker's Kafka consumer, fetching in batches of up to ``FETCH_MAX_WAIT_MS``.

Faust builds aiokafka's consumer with ``fetch_min_bytes=1`` (and a wait of 1.5 s that then
never applies): the broker answers a fetch as soon as one record is there. At a steady 500
changes a second that is a fetch, a hand-over from the consumer's thread and a wake-up of the
agent for every few records, and on two shared cores the worker spent more on that than on the
changes: it fell 1-2 s behind and stayed there (``make bench``'s CDC delay, p50 1.3-4.4 s in
18 runs). Here the broker holds a fetch until ``FETCH_MIN_BYTES`` are there or
``FETCH_MAX_WAIT_MS`` has passed, so a change waits at most that long for its fetch, and a
backlog is still fetched at once.

``_fetch_min_bytes`` and ``_fetch_max_wait_ms`` are private to aiokafka's consumer, read when it
starts (its fetcher is built then): aiokafka and faust-streaming are pinned, and a unit test
fails if the consumer stops passing them on.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TransportT

# A fetch waits for this much data...
FETCH_MIN_BYTES = 1024**2
# ...or this long, whichever comes first (the delay a change may gain when changes are few).
FETCH_MAX_WAIT_MS = 50


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_min_bytes = FETCH_MIN_BYTES
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


class App(faust.App):
    """``faust.App`` whose consumer is the one above (the producer is Faust's own)."""

    def _new_transport(self) -> TransportT:
        return Transport(self.conf.broker_consumer, self)
