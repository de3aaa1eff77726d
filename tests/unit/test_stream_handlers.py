"""What the worker does with each change: which payments it keeps open, and which changes are
announced, once each. Expected events are written out here."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from cdc.envelope import Op, PaymentChange, PaymentRow
from payments.domain.status import Status
from streams.handlers import Emitted, decide, entry_key

PID = uuid.uuid4()
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 23, 8, 5, tzinfo=UTC)


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
        updated_at=T1,
        status_source="webhook",
        tenant_id="acme",
    )


def change(op: Op, before: PaymentRow | None, after: PaymentRow | None) -> PaymentChange:
    return PaymentChange(op=op, before=before, after=after, lsn=1, tx_id=1, committed_at_ms=1)


NO_INTENT_KEY = entry_key(PID, T0.timestamp(), False)
INTENT_KEY = entry_key(PID, T0.timestamp(), True)


def test_a_new_pending_payment_is_open_without_an_event() -> None:
    decision = decide(change(Op.CREATE, None, row(Status.PENDING, 1)), None)
    assert decision.entry is not None and decision.entry.key == NO_INTENT_KEY
    assert decision.entry.created_at == T0.timestamp()
    assert decision.emit is None
    assert decision.stale_keys == (INTENT_KEY,)


def test_keys_sort_by_age() -> None:
    older = entry_key(uuid.uuid4(), 1_700_000_000.5, True)
    newer = entry_key(uuid.uuid4(), 1_700_000_001.0, True)
    assert older < newer


def test_attaching_the_intent_moves_the_entry_to_its_with_intent_key() -> None:
    decision = decide(
        change(Op.UPDATE, row(Status.PENDING, 1), row(Status.PENDING, 2, "pi_9")), None
    )
    assert decision.entry is not None and decision.entry.key == INTENT_KEY
    assert decision.entry.provider_payment_id == "pi_9"
    assert decision.stale_keys == (NO_INTENT_KEY,)
    assert decision.emit is None


def test_a_status_change_to_final_closes_the_entry_and_emits_one_event() -> None:
    decision = decide(
        change(Op.UPDATE, row(Status.PENDING, 2, "pi_9"), row(Status.SUCCEEDED, 3, "pi_9")), None
    )
    assert decision.entry is None
    assert set(decision.stale_keys) == {NO_INTENT_KEY, INTENT_KEY}
    assert decision.emit is not None
    assert decision.emit.to_dict() == {
        "event_id": f"{PID}:3",
        "payment_id": str(PID),
        "tenant_id": "acme",
        "status": "succeeded",
        "previous_status": "pending",
        "amount_minor": 500,
        "currency": "eur",
        "provider_payment_id": "pi_9",
        "source": "webhook",
        "version": 3,
        "occurred_at": T1.isoformat(),
    }


def test_a_failed_payment_stays_open_and_its_later_success_is_announced_too() -> None:
    failed = decide(
        change(Op.UPDATE, row(Status.PENDING, 2, "pi_9"), row(Status.FAILED, 3, "pi_9")), None
    )
    assert failed.entry is not None and failed.entry.status is Status.FAILED
    assert failed.emit is not None and failed.emit.status is Status.FAILED
    paid = decide(
        change(Op.UPDATE, row(Status.FAILED, 3, "pi_9"), row(Status.SUCCEEDED, 4, "pi_9")),
        Emitted(3, Status.FAILED),
    )
    assert paid.entry is None
    assert paid.emit is not None
    assert (paid.emit.previous_status, paid.emit.status) == (Status.FAILED, Status.SUCCEEDED)


def test_a_replay_of_an_announced_change_emits_nothing() -> None:
    replay = change(Op.UPDATE, row(Status.PENDING, 2), row(Status.SUCCEEDED, 3))
    assert decide(replay, Emitted(3, Status.SUCCEEDED)).emit is None
    assert decide(replay, Emitted(5, Status.SUCCEEDED)).emit is None
    assert decide(replay, Emitted(2, Status.PENDING)).emit is not None


def test_a_change_that_keeps_the_status_is_not_an_event() -> None:
    refresh = change(Op.UPDATE, row(Status.FAILED, 4, "pi_9"), row(Status.FAILED, 5, "pi_9"))
    assert decide(refresh, Emitted(4, Status.FAILED)).emit is None


def test_a_snapshot_announces_a_change_made_while_the_stream_was_broken() -> None:
    """After a slot loss the connector re-snapshots: a payment that became final meanwhile was
    never announced, and is now, once."""
    snapshot = change(Op.READ, None, row(Status.SUCCEEDED, 4, "pi_9"))
    decision = decide(snapshot, None)
    assert decision.emit is not None and decision.emit.event_id == f"{PID}:4"
    assert decision.emit.previous_status is Status.PENDING
    again = decide(snapshot, Emitted(4, Status.SUCCEEDED))
    assert again.emit is None
    after_failed = decide(snapshot, Emitted(2, Status.FAILED))
    assert after_failed.emit is not None and after_failed.emit.previous_status is Status.FAILED


def test_a_snapshot_of_an_unchanged_payment_emits_nothing() -> None:
    assert decide(change(Op.READ, None, row(Status.PENDING, 7)), None).emit is None
    assert (
        decide(change(Op.READ, None, row(Status.SUCCEEDED, 4)), Emitted(4, Status.SUCCEEDED)).emit
        is None
    )


def test_delete_removes_the_entry() -> None:
    decision = decide(change(Op.DELETE, row(Status.PENDING, 1), None), None)
    assert decision.entry is None and decision.emit is None
    assert set(decision.stale_keys) == {NO_INTENT_KEY, INTENT_KEY}


def test_a_stored_entry_tells_its_status_from_its_first_bytes() -> None:
    from streams.handlers import OpenEntry, decode, encode, status_of

    for status in (Status.PENDING, Status.FAILED):
        entry = OpenEntry(uuid.uuid4(), status, 1_700_000_000.5, "pi_1", 1999, "usd")
        raw = encode(entry.to_json())
        assert status_of(raw) is status
        assert OpenEntry.from_json(decode(raw)) == entry
    # An entry stored before (another key order, spaces) is decoded instead.
    old = b'{"payment_id": "x", "status": "failed", "created_at": 1.0}'
    assert status_of(old) is Status.FAILED
