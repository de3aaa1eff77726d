"""What the worker does with one change of a payment: plain functions, testable without Kafka."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cdc.envelope import Op, PaymentChange, PaymentRow
from payments.domain.status import Status
from payments.reconcile import PendingEntry


@dataclass(frozen=True, slots=True)
class Decision:
    """``upsert``: the table entry to store; ``remove``: drop the entry;
    ``emit``: the payment-status-update event to send (already deduplicated)."""

    upsert: PendingEntry | None = None
    remove: bool = False
    emit: dict[str, Any] | None = None


def pending_entry(row: PaymentRow, partition: int) -> PendingEntry:
    return PendingEntry(
        payment_id=row.id,
        partition=partition,
        version=row.version,
        created_at=row.created_at.timestamp(),
        provider_payment_id=row.provider_payment_id,
    )


def status_event(change: PaymentChange) -> dict[str, Any]:
    """The ``payment-status-update`` value for a status change (DESIGN.md shape)."""
    before, after = change.before, change.after
    assert before is not None and after is not None
    return {
        "event_id": f"{after.id}:{after.version}",
        "payment_id": str(after.id),
        "status": after.status.value,
        "previous_status": before.status.value,
        "amount_minor": after.amount_minor,
        "currency": after.currency,
        "provider_payment_id": after.provider_payment_id,
        "source": after.status_source,
        "version": after.version,
        "occurred_at": after.updated_at.isoformat(),
    }


def decide(change: PaymentChange, partition: int, last_emitted_version: int | None) -> Decision:
    """The table update and the event for one change.

    A payment is in the pending table exactly while its latest row is ``pending``. An event is
    emitted for an update whose status differs from the row before it, unless a version this
    new was already emitted (a replay after a Connect or worker restart): same input, same
    output, and never twice.
    """
    if change.op is Op.DELETE:
        return Decision(remove=True)
    after = change.after
    assert after is not None
    emit = None
    if change.status_changed and (
        last_emitted_version is None or after.version > last_emitted_version
    ):
        emit = status_event(change)
    if after.status is Status.PENDING:
        return Decision(upsert=pending_entry(after, partition), emit=emit)
    return Decision(remove=True, emit=emit)
