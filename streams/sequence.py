"""Every change of a partition reaches the agent once, in order, or the agent fetches it itself.

A partition of the change topic is a sequence, and the agent's table and events are right only
if it applies every record of it in order. Faust does not promise that around a rebalance: its
fetcher can drop records it already took from the broker (a batch fetched while the assignment
changes), and it fills such a hole in the offsets as if the records were handled, so they are
committed without ever reaching an agent. Seen in the failover test: a worker that took over a
partition applied offsets 347 and 355, then 370; 356-369 (five payments' `succeeded`) were
never announced.

``ChangeSequence`` keeps, per partition, the next offset the agent expects:

* a record beyond it means records were skipped: they are read from the broker (a consumer of
  its own, not in the group) and applied first, in order. An offset with no record (a
  transaction marker, a compacted record) simply is not there;
* a record before it was already applied in this assignment (a second delivery): it is left;
* the first record after the partition is (re)assigned is compared with where the group's
  reading starts: its committed offset, or, for a partition the group never committed, the
  first offset the broker holds. A hole at the very start of an assignment is filled too, even
  on a new group or partition (seen in the failover test: a worker got its partitions, Faust
  dropped offset 0 of one around the next rebalance, and the payment it created was never
  held open by any worker).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from payments.logs import get_logger
from streams.retry import until_done

log = get_logger("streams.sequence")
T = TypeVar("T")
READ_TIMEOUT_SECONDS = 30.0


class Record(Protocol):
    """A record of the change topic as the agent handles it: a Faust message, or an aiokafka
    record read back here."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class RangeReader(Protocol):
    async def start(self, partition: int) -> int:
        """Where the group's reading of ``partition`` starts: its committed offset (the next
        to read), or the first offset the broker holds if the group never committed one."""
        ...

    async def read(self, partition: int, start: int, end: int) -> Sequence[Record]:
        """The records of ``partition`` with ``start <= offset < end``, in order."""
        ...

    async def close(self) -> None: ...


class ChangeSequence:
    def __init__(self, reader: RangeReader) -> None:
        self.reader = reader
        self._next: dict[int, int] = {}

    def forget(self, partitions: Iterable[int]) -> None:
        """The partitions were revoked: their next assignment starts where the group's does."""
        for partition in partitions:
            self._next.pop(partition, None)

    async def apply_in_order(
        self, record: Record, apply: Callable[[Record], Awaitable[None]]
    ) -> int | None:
        """``apply`` the partition's records the consumer skipped before ``record`` (read back
        from the broker), then ``record``; return how many were read back, or None when
        ``record`` was already applied in this assignment (it is not applied again)."""
        missing = await self._missing_before(record.partition, record.offset)
        if missing is None:
            return None
        for skipped in (*missing, record):
            await apply(skipped)
            self._next[skipped.partition] = skipped.offset + 1
        return len(missing)

    async def _missing_before(self, partition: int, offset: int) -> Sequence[Record] | None:
        """The records to apply before the one at ``offset`` (usually none), or None when that
        one was already applied (do not apply it again)."""
        expected = self._next.get(partition)
        if expected is None:
            # Never skip on the strength of the committed offset: it only reveals a hole.
            expected = min(await self.reader.start(partition), offset)
        if offset < expected:
            return None
        if offset == expected:
            return ()
        missing = await self.reader.read(partition, expected, offset)
        log.warning(
            "records skipped by the consumer were read from the broker and applied first",
            partition=partition,
            from_offset=expected,
            to_offset=offset - 1,
            records=len(missing),
        )
        return missing


class KafkaRangeReader:
    """``RangeReader`` over a consumer of its own: assigned partitions, never in the group (it
    reads the group's committed offsets, it commits nothing). A call that gets no answer (or a
    read that makes no progress) for 30 s fails and is retried with backoff until the broker
    answers: a record is never given up."""

    def __init__(self, bootstrap_servers: str, topic: str, group: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.group = group
        self._consumer: AIOKafkaConsumer | None = None

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers.split(","),
                group_id=self.group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                request_timeout_ms=int(READ_TIMEOUT_SECONDS * 1000),
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def _retried(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        def failed(attempt: int, exc: Exception) -> None:
            log.warning("change topic read failed; retrying", what=what, error=str(exc))

        result, _ = await until_done(call, failed)
        return result

    async def start(self, partition: int) -> int:
        tp = TopicPartition(self.topic, partition)

        async def call() -> int:
            consumer = await self._started()
            committed: int | None = await asyncio.wait_for(
                consumer.committed(tp), READ_TIMEOUT_SECONDS
            )
            if committed is not None:
                return committed
            first = await asyncio.wait_for(consumer.beginning_offsets([tp]), READ_TIMEOUT_SECONDS)
            return int(first[tp])

        return await self._retried("start offset", call)

    async def read(self, partition: int, start: int, end: int) -> Sequence[Record]:
        tp = TopicPartition(self.topic, partition)

        async def call() -> list[Any]:
            consumer = await self._started()
            consumer.assign([tp])
            consumer.seek(tp, start)
            records: list[Any] = []
            position, moved_at = start, time.monotonic()
            while position < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                records.extend(r for r in batch.get(tp, ()) if start <= r.offset < end)
                if (now := await consumer.position(tp)) > position:
                    position, moved_at = now, time.monotonic()
                elif time.monotonic() - moved_at > READ_TIMEOUT_SECONDS:
                    raise TimeoutError(
                        f"no progress past offset {position} for {READ_TIMEOUT_SECONDS:.0f} s"
                    )
            return records

        return await self._retried(f"offsets {start}-{end - 1}", call)

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
