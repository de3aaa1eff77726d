"""Every record of a change partition is applied once, in order, even when the consumer skips
some (as Faust's fetcher does around a rebalance): the agent reads the skipped ones back from
the broker first. The broker here is a list of offsets; expected outcomes are written out."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from streams.sequence import ChangeSequence, Record


@dataclass(frozen=True)
class FakeRecord:
    partition: int
    offset: int
    topic: str = "changes"
    key: bytes | None = None
    value: bytes | None = None


class FakeBroker:
    """A partition's records (offsets; an offset absent is a transaction marker or compacted
    record, offsets below the first were removed by retention) and the group's committed
    offsets (a partition missing from them was never committed)."""

    def __init__(self, offsets: dict[int, list[int]], committed: dict[int, int]) -> None:
        self.offsets = offsets
        self.committed_offsets = committed
        self.reads: list[tuple[int, int, int]] = []

    async def start(self, partition: int) -> int:
        committed = self.committed_offsets.get(partition)
        return min(self.offsets[partition]) if committed is None else committed

    async def read(self, partition: int, start: int, end: int) -> Sequence[Record]:
        self.reads.append((partition, start, end))
        return [FakeRecord(partition, o) for o in self.offsets[partition] if start <= o < end]

    async def close(self) -> None:
        pass


def deliver(sequence: ChangeSequence, deliveries: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """What the agent applies, in order, for the records the consumer hands it."""

    applied: list[tuple[int, int]] = []

    async def apply(record: Record) -> None:
        applied.append((record.partition, record.offset))

    async def run() -> list[tuple[int, int]]:
        for partition, offset in deliveries:
            await sequence.apply_in_order(FakeRecord(partition, offset), apply)
        return applied

    return asyncio.run(run())


def test_records_in_order_are_applied_as_they_come_without_reading_the_broker() -> None:
    broker = FakeBroker({0: list(range(10, 20))}, {0: 10})
    applied = deliver(ChangeSequence(broker), [(0, o) for o in range(10, 20)])
    assert applied == [(0, o) for o in range(10, 20)]
    assert broker.reads == []


def test_records_the_consumer_skipped_are_read_back_and_applied_first() -> None:
    # The failover case: 347 and 355 arrive, then 370; 356-369 never reach the agent.
    broker = FakeBroker({4: list(range(347, 380))}, {4: 347})
    delivered = [(4, o) for o in range(347, 356)] + [(4, o) for o in range(370, 380)]
    applied = deliver(ChangeSequence(broker), delivered)
    assert applied == [(4, o) for o in range(347, 380)]
    assert broker.reads == [(4, 356, 370)]


def test_offsets_without_a_record_are_not_waited_for() -> None:
    # 12 and 13 hold no record (transaction markers): nothing to apply there, and no stall.
    broker = FakeBroker({0: [10, 11, 14, 15]}, {0: 10})
    applied = deliver(ChangeSequence(broker), [(0, 10), (0, 15)])
    assert applied == [(0, 10), (0, 11), (0, 14), (0, 15)]


def test_a_second_delivery_within_an_assignment_is_not_applied_again() -> None:
    broker = FakeBroker({1: list(range(0, 10))}, {1: 0})
    delivered = [(1, o) for o in range(0, 6)] + [(1, o) for o in range(2, 10)]
    applied = deliver(ChangeSequence(broker), delivered)
    assert applied == [(1, o) for o in range(0, 10)]


def test_a_hole_at_the_start_of_an_assignment_is_found_from_the_committed_offset() -> None:
    broker = FakeBroker({2: list(range(0, 30))}, {2: 20})
    applied = deliver(ChangeSequence(broker), [(2, 24), (2, 25)])
    assert applied == [(2, 20), (2, 21), (2, 22), (2, 23), (2, 24), (2, 25)]


def test_a_hole_at_the_start_of_a_never_committed_partition_is_filled_from_the_first() -> None:
    # A new group (or partition): Faust dropped offset 0 around a rebalance and handed over 1.
    broker = FakeBroker({5: list(range(0, 10))}, {})
    applied = deliver(ChangeSequence(broker), [(5, 1), (5, 2)])
    assert applied == [(5, 0), (5, 1), (5, 2)]


def test_a_partition_never_committed_starts_at_the_first_record_retention_kept() -> None:
    broker = FakeBroker({5: list(range(40, 50))}, {})
    applied = deliver(ChangeSequence(broker), [(5, 42)])
    assert applied == [(5, 40), (5, 41), (5, 42)]
    assert broker.reads == [(5, 40, 42)]


def test_a_record_before_the_committed_offset_is_still_applied() -> None:
    # The committed offset only reveals holes; it never makes the agent skip a record.
    broker = FakeBroker({2: list(range(0, 30))}, {2: 20})
    applied = deliver(ChangeSequence(broker), [(2, 18), (2, 19), (2, 20)])
    assert applied == [(2, 18), (2, 19), (2, 20)]


def test_a_revoked_partition_starts_again_from_the_committed_offset() -> None:
    broker = FakeBroker({3: list(range(0, 40))}, {3: 5})
    sequence = ChangeSequence(broker)
    assert deliver(sequence, [(3, 5), (3, 6)]) == [(3, 5), (3, 6)]
    sequence.forget({3})
    # Given back later, from its committed offset (another worker moved it on to 30): the
    # records before 30 are not "already applied" any more, the ones from 30 are new.
    broker.committed_offsets[3] = 30
    assert deliver(sequence, [(3, 31)]) == [(3, 30), (3, 31)]


def test_partitions_are_independent() -> None:
    broker = FakeBroker({0: list(range(0, 10)), 1: list(range(0, 10))}, {0: 0, 1: 0})
    applied = deliver(ChangeSequence(broker), [(0, 0), (1, 0), (0, 3), (1, 1)])
    assert applied == [(0, 0), (1, 0), (0, 1), (0, 2), (0, 3), (1, 1)]
