"""What the worker does with one record of the change topic: a record that cannot be decoded
goes to the DLQ; a decoded change whose application fails is never dead-lettered and never
dropped: its partition waits, says so (since when, what for, why), and retries until it passes.
The worker is built as in production, on Faust's in-memory store; nothing is started."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from cdc.envelope import PaymentChange
from payments.settings import Settings
from streams.app import PaymentsWorker
from streams.sequence import Record

PID = str(uuid.uuid4())


@dataclass(frozen=True)
class FakeRecord:
    partition: int
    offset: int
    value: bytes | None
    topic: str = "dbserver1.public.payments"
    key: bytes | None = None


class NoBroker:
    """A broker holding nothing but the records the agent is handed: nothing to read back."""

    async def start(self, partition: int) -> int:
        return 0

    async def read(self, partition: int, start: int, end: int) -> Sequence[Record]:
        return []

    async def close(self) -> None:
        pass


def debezium_insert(**changes: Any) -> bytes:
    row = {
        "id": PID,
        "idempotency_key": "k-1",
        "amount_minor": 1234,
        "currency": "usd",
        "status": "pending",
        "provider_payment_id": None,
        "provider_status": None,
        "created_at": "2026-11-23T08:18:08.287545Z",
        "updated_at": "2026-11-23T08:18:08.287545Z",
        "version": 1,
        **changes,
    }
    return json.dumps({"op": "c", "before": None, "after": row, "source": {}}).encode()


@pytest.fixture
def worker() -> Iterator[PaymentsWorker]:
    built = PaymentsWorker(Settings(), store="memory://", reader=NoBroker())
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    built.blocks.sleep = no_wait
    yield built


def test_a_change_whose_application_fails_blocks_its_partition_until_it_passes(
    worker: PaymentsWorker,
) -> None:
    attempts: list[int] = []
    seen_blocked: list[dict[str, Any] | None] = []
    dead: list[Record] = []

    async def flaky_apply(change: PaymentChange, partition: int) -> None:
        attempts.append(partition)
        seen_blocked.append(worker.blocks.state())
        if len(attempts) <= 3:
            raise OSError("state store: No space left on device")

    async def dead_letter(message: Record, exc: Exception) -> None:
        dead.append(message)

    worker.apply_change = flaky_apply  # type: ignore[method-assign]
    worker._dead_letter = dead_letter  # type: ignore[method-assign]
    asyncio.run(worker._handle(FakeRecord(partition=4, offset=17, value=debezium_insert())))

    assert attempts == [4, 4, 4, 4], "tried until it passed"
    assert dead == [], "a change that decodes is never dead-lettered"
    assert seen_blocked[0] is None
    blocked = seen_blocked[3]
    assert blocked is not None
    assert blocked["partition"] == 4 and blocked["partitions"] == [4]
    assert blocked["attempts"] == 3
    assert blocked["waiting_for"] == "change applied to the worker's tables"
    assert blocked["payment_id"] == PID
    assert blocked["reason"] == "OSError: state store: No space left on device"
    assert worker.blocks.state() is None, "no longer blocked once it passed"
    assert worker.metrics.blocked._value.get() == 0
    assert worker.metrics.apply_retries._value.get() == 3


def test_while_blocked_the_gauges_say_since_when(worker: PaymentsWorker) -> None:
    gauges: list[tuple[float, float]] = []

    async def failing_twice(change: PaymentChange, partition: int) -> None:
        gauges.append(
            (worker.metrics.blocked._value.get(), worker.metrics.blocked_since._value.get())
        )
        if len(gauges) <= 2:
            raise TimeoutError("RocksDB write stalled")

    worker.apply_change = failing_twice  # type: ignore[method-assign]
    asyncio.run(worker._handle(FakeRecord(partition=1, offset=3, value=debezium_insert())))
    assert gauges[0] == (0, 0)
    assert gauges[1][0] == 1 and gauges[1][1] > 1_700_000_000
    assert gauges[2] == (1, gauges[1][1]), "since when the partition waits, unchanged"


@pytest.mark.parametrize(
    "value",
    [
        b"{not json",
        debezium_insert(amount_minor="12.34"),
        debezium_insert(status="settled"),
        debezium_insert(currency=None),
    ],
)
def test_a_record_that_cannot_be_decoded_goes_to_the_dlq_and_is_not_applied(
    worker: PaymentsWorker, value: bytes
) -> None:
    applied: list[PaymentChange] = []
    dead: list[tuple[Record, str]] = []

    async def apply(change: PaymentChange, partition: int) -> None:
        applied.append(change)

    async def dead_letter(message: Record, exc: Exception) -> None:
        dead.append((message, type(exc).__name__))

    worker.apply_change = apply  # type: ignore[method-assign]
    worker._dead_letter = dead_letter  # type: ignore[method-assign]
    record = FakeRecord(partition=2, offset=9, value=value)
    asyncio.run(worker._handle(record))
    assert applied == []
    assert dead == [(record, "DecodeError")]
    assert worker.blocks.state() is None
