"""What the worker does with each change: which payments it keeps open, and which changes are
announced, once each. Expected events are written out here."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from cdc.envelope import Op, PaymentChange, PaymentRow
from payments.domain.status import Status
from streams.handlers import Decision, Emitted, entry_key
from streams.handlers import decide as decide_at

PID = uuid.uuid4()
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 23, 8, 5, tzinfo=UTC)
# The worker's clock: a minute after the last change of the rows below.
NOW = T1.timestamp() + 60
DAY = 86_400.0


def decide(change: PaymentChange, last: Emitted | None) -> Decision:
    return decide_at(change, last, now=NOW)


def row(
    status: Status, version: int, intent: str | None = None, updated_at: datetime = T1
) -> PaymentRow:
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
        updated_at=updated_at,
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
    never announced, and is now, once; `previous_status` is what consumers last heard."""
    snapshot = change(Op.READ, None, row(Status.SUCCEEDED, 4, "pi_9"))
    after_failed = decide(snapshot, Emitted(2, Status.FAILED))
    assert after_failed.emit is not None
    assert after_failed.emit.event_id == f"{PID}:4"
    assert (after_failed.emit.previous_status, after_failed.emit.status) == (
        Status.FAILED,
        Status.SUCCEEDED,
    )
    again = decide(snapshot, Emitted(4, Status.SUCCEEDED))
    assert again.emit is None


def test_a_snapshot_of_a_payment_never_announced_emits_it_from_pending() -> None:
    """Final a day ago, no entry: the stream broke before its change was announced."""
    yesterday = datetime.fromtimestamp(NOW - 1 * DAY, UTC)
    snapshot = change(Op.READ, None, row(Status.SUCCEEDED, 4, "pi_9", updated_at=yesterday))
    decision = decide(snapshot, None)
    assert decision.emit is not None and decision.emit.event_id == f"{PID}:4"
    assert decision.emit.previous_status is Status.PENDING


def test_a_snapshot_of_a_payment_final_for_longer_than_the_retention_emits_nothing() -> None:
    """Its `last emitted` entry was dropped 30 days after it became final: it was announced
    then, and a re-snapshot must not announce it again with a made-up previous status."""
    long_ago = datetime.fromtimestamp(NOW - 31 * DAY, UTC)
    for status in (Status.SUCCEEDED, Status.CANCELED, Status.EXPIRED):
        snapshot = change(Op.READ, None, row(status, 3, "pi_9", updated_at=long_ago))
        decision = decide(snapshot, None)
        assert decision.emit is None, status
        assert decision.entry is None, "a final payment is not open"
        assert set(decision.stale_keys) == {NO_INTENT_KEY, INTENT_KEY}


def test_a_replayed_update_of_a_payment_final_for_longer_than_the_retention_emits_nothing() -> None:
    long_ago = datetime.fromtimestamp(NOW - 45 * DAY, UTC)
    replay = change(
        Op.UPDATE, row(Status.PENDING, 2, "pi_9"), row(Status.SUCCEEDED, 3, "pi_9", long_ago)
    )
    assert decide(replay, None).emit is None


def test_a_snapshot_inside_the_retention_with_no_entry_still_emits_once() -> None:
    """29 days final and no entry: never purged, so never announced."""
    recent = datetime.fromtimestamp(NOW - 29 * DAY, UTC)
    snapshot = change(Op.READ, None, row(Status.CANCELED, 3, "pi_9", updated_at=recent))
    decision = decide(snapshot, None)
    assert decision.emit is not None
    assert (decision.emit.previous_status, decision.emit.status, decision.emit.version) == (
        Status.PENDING,
        Status.CANCELED,
        3,
    )


def test_a_failed_payment_is_never_forgotten_however_old() -> None:
    """`failed` is not final (its entry is never dropped): a snapshot of one never announced
    is announced, whatever its age."""
    long_ago = datetime.fromtimestamp(NOW - 60 * DAY, UTC)
    snapshot = change(Op.READ, None, row(Status.FAILED, 3, "pi_9", updated_at=long_ago))
    decision = decide(snapshot, None)
    assert decision.emit is not None and decision.emit.status is Status.FAILED
    assert decision.entry is not None and decision.entry.status is Status.FAILED


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
