"""What the worker does with each change: table membership and deduplicated events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from cdc.envelope import Op, PaymentChange, PaymentRow
from payments.domain.status import Status
from streams.handlers import decide

PID = uuid.uuid4()
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def row(status: Status, version: int, intent: str | None = None) -> PaymentRow:
    return PaymentRow(
        id=PID,
        status=status,
        version=version,
        amount_minor=500,
        currency="eur",
        idempotency_key="k",
        provider_payment_id=intent,
        provider_status=None,
        created_at=T0,
        updated_at=T0,
        status_source="webhook",
    )


def change(op: Op, before: PaymentRow | None, after: PaymentRow | None) -> PaymentChange:
    return PaymentChange(op=op, before=before, after=after, lsn=1, tx_id=1, committed_at_ms=1)


def test_a_new_pending_payment_enters_the_table_without_an_event() -> None:
    decision = decide(change(Op.CREATE, None, row(Status.PENDING, 1)), 3, None)
    assert decision.upsert is not None and decision.upsert.partition == 3
    assert decision.upsert.created_at == T0.timestamp()
    assert decision.emit is None and not decision.remove


def test_attaching_the_intent_updates_the_entry() -> None:
    decision = decide(
        change(Op.UPDATE, row(Status.PENDING, 1), row(Status.PENDING, 2, "pi_9")), 0, None
    )
    assert decision.upsert is not None and decision.upsert.provider_payment_id == "pi_9"
    assert decision.emit is None


def test_a_status_change_leaves_the_table_and_emits_one_event() -> None:
    decision = decide(
        change(Op.UPDATE, row(Status.PENDING, 2, "pi_9"), row(Status.SUCCEEDED, 3, "pi_9")), 0, None
    )
    assert decision.remove and decision.upsert is None
    assert decision.emit == {
        "event_id": f"{PID}:3",
        "payment_id": str(PID),
        "status": "succeeded",
        "previous_status": "pending",
        "amount_minor": 500,
        "currency": "eur",
        "provider_payment_id": "pi_9",
        "source": "webhook",
        "version": 3,
        "occurred_at": T0.isoformat(),
    }


def test_a_replayed_change_is_not_emitted_again() -> None:
    replay = change(Op.UPDATE, row(Status.PENDING, 2), row(Status.SUCCEEDED, 3))
    assert decide(replay, 0, last_emitted_version=3).emit is None
    assert decide(replay, 0, last_emitted_version=5).emit is None
    assert decide(replay, 0, last_emitted_version=2).emit is not None


def test_failed_then_succeeded_emits_both_changes() -> None:
    failed = decide(change(Op.UPDATE, row(Status.PENDING, 1), row(Status.FAILED, 2)), 0, None)
    assert failed.emit is not None and failed.remove
    later = decide(change(Op.UPDATE, row(Status.FAILED, 2), row(Status.SUCCEEDED, 3)), 0, 2)
    assert later.emit is not None and later.emit["previous_status"] == "failed"


def test_snapshot_of_a_settled_payment_is_not_an_event() -> None:
    decision = decide(change(Op.READ, None, row(Status.SUCCEEDED, 4)), 0, None)
    assert decision.remove and decision.emit is None


def test_delete_removes_the_entry() -> None:
    decision = decide(change(Op.DELETE, row(Status.PENDING, 1), None), 0, None)
    assert decision.remove and decision.emit is None
