"""The open-payments table of one worker, read by age (the ``OpenPayments`` port).

Keys are ``i|n<created ms>:<id>`` (see ``streams.handlers``); RocksDB keeps them sorted, so
"created before T" and "created between A and B" are range reads over each active partition's
database, merged by age: the reconciler and ``/pending/`` read what they need, never a walk
over a million entries. Counts by status are kept per partition as changes are applied, and
recounted once for partitions this worker is given; ``/metrics`` and ``/stats/`` read those.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any
from uuid import UUID

import faust
from faust.types import TP

from payments.domain.status import Status
from streams.handlers import (
    WITH_INTENT,
    WITHOUT_INTENT,
    Decision,
    OpenEntry,
    decode,
    encode,
    entry_key,
    range_key,
    status_of,
)

# Faust keeps its own bookkeeping row in every partition database.
_OFFSET_KEY = b"__faust\x00offset__"


class OpenTable:
    """``OpenPayments`` over a Faust table (RocksDB in the worker, memory in tests)."""

    def __init__(self, app: faust.App, table: Any, *, partitions: list[int] | None = None) -> None:
        self.app = app
        self.table = table
        # partition -> open payments by status, for the partitions this worker holds.
        self.counts: dict[int, Counter[Status]] = {}
        self._pinned = partitions

    def pinned(self, partitions: Iterable[int]) -> OpenTable:
        """A reader of these partitions only, whatever the assignment does meanwhile: for the
        reconciliation cycle, which reads the table from the executor's thread (RocksDB takes
        reads concurrent with the agent's writes). It shares the counts."""
        view = OpenTable(self.app, self.table, partitions=sorted(partitions))
        view.counts = self.counts
        return view

    # -- writes (inside the change agent: Faust writes the changelog of the event's partition)

    def apply(self, partition: int, decision: Decision) -> None:
        counts = self.counts.setdefault(partition, Counter())
        for key in decision.stale_keys:
            old = self.table.get(key)
            if old is not None:
                del self.table[key]
                counts[status_of(old)] -= 1
        entry = decision.entry
        if entry is None:
            return
        value = encode(entry.to_json())
        old = self.table.get(entry.key)
        if old == value:
            return  # nothing the reconciler reads changed: no changelog write
        self.table[entry.key] = value
        if old is not None:
            counts[status_of(old)] -= 1
        counts[entry.status] += 1

    # -- reads --------------------------------------------------------------------------------

    def active_partitions(self) -> list[int]:
        if self._pinned is not None:
            return list(self._pinned)
        topic = self.table.changelog_topic.get_topic_name()
        return sorted(
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic
        )

    def count(self) -> int:
        return sum(self.by_status().values())

    def by_status(self) -> dict[str, int]:
        total: Counter[Status] = Counter()
        for partition in self.active_partitions():
            total.update(self.counts.get(partition, Counter()).copy())
        return {s.value: max(0, total[s]) for s in (Status.PENDING, Status.FAILED)}

    def created_between(self, start: float, end: float) -> Iterator[OpenEntry]:
        """Oldest first, ``start <= created_at < end``, with and without an intent."""
        streams = [self._scan(prefix, start, end) for prefix in (WITH_INTENT, WITHOUT_INTENT)]
        for _, entry in heapq.merge(*streams, key=lambda item: item[0][1:]):
            yield entry

    def without_intent(self, created_before: float) -> Iterator[OpenEntry]:
        for _, entry in self._scan(WITHOUT_INTENT, 0.0, created_before):
            yield entry

    def find(self, payment_id: UUID, created_at: float) -> OpenEntry | None:
        """The entry of one payment, if this worker holds it open (active partitions only)."""
        for with_intent in (True, False):
            key = entry_key(payment_id, created_at, with_intent)
            for partition in self.active_partitions():
                for found, value in self._partition_items(partition, key, key + b"\x00"):
                    if found == key:
                        return OpenEntry.from_json(value)
        return None

    def oldest(self, n: int) -> list[OpenEntry]:
        return [e for _, e in zip(range(n), self.created_between(0.0, 1e13), strict=False)]

    def recount(self, partitions: Iterable[int]) -> None:
        """Count the entries of newly held partitions once (after recovery): the status is
        read from each value's first bytes, nothing is decoded."""
        for partition in partitions:
            counts: Counter[Status] = Counter()
            if partition == min(self.active_partitions(), default=partition) or _stored(self.table):
                for _, raw in partition_raw_items(self.table, partition, b"", None):
                    counts[status_of(raw)] += 1
            self.counts[partition] = counts

    def forget(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self.counts.pop(partition, None)

    # -- range reads over the store -----------------------------------------------------------

    def _scan(self, prefix: bytes, start: float, end: float) -> Iterator[tuple[bytes, OpenEntry]]:
        low, high = range_key(prefix, start), range_key(prefix, end)
        streams = [
            self._partition_items(partition, low, high) for partition in self.active_partitions()
        ]
        for key, value in heapq.merge(*streams, key=lambda item: item[0]):
            yield key, OpenEntry.from_json(value)

    def _partition_items(
        self, partition: int, low: bytes, high: bytes | None
    ) -> Iterator[tuple[bytes, dict[str, Any]]]:
        if partition != min(self.active_partitions(), default=partition) and not _stored(
            self.table
        ):
            return  # the memory store is not partitioned: hand it out once
        yield from partition_items(self.table, partition, low, high)


def _stored(table: Any) -> bool:
    return getattr(table.data, "_dbs", None) is not None


def partition_items(
    table: Any, partition: int, low: bytes, high: bytes | None
) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """``low <= key < high`` of one partition of a Faust table, in key order, decoded."""
    for key, raw in partition_raw_items(table, partition, low, high):
        yield key, decode(raw)


def partition_raw_items(
    table: Any, partition: int, low: bytes, high: bytes | None
) -> Iterator[tuple[bytes, bytes]]:
    """``low <= key < high`` of one partition of a Faust table, in key order, as stored,
    straight from its RocksDB database (the in-memory store: every key, sorted)."""
    if not _stored(table):
        for key in sorted(k for k in table if low <= k and (high is None or k < high)):
            yield key, table[key]
        return
    db = table.data._dbs.get(partition)
    if db is None:
        return
    for key, value in db.items(from_key=low):
        if high is not None and key >= high:
            return
        if key == _OFFSET_KEY:
            continue
        yield key, value


def partitions_of(tps: Iterable[TP], topic: str) -> set[int]:
    return {tp.partition for tp in tps if tp.topic == topic}
