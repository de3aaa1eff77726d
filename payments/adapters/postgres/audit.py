"""`payment_events`: the append-only audit of every status change (same transaction)."""

from __future__ import annotations

from uuid import UUID

from payments.adapters.postgres.rows import Cursor
from payments.domain.status import Source, Status
from payments.ports import AuditEvent, StatusChange, TransitionResult

INSERT_EVENT = """
    INSERT INTO payment_events (payment_id, from_status, to_status, source, provider_event_id,
                                version)
    VALUES (%(payment_id)s, %(from_status)s::payment_status, %(to_status)s::payment_status,
            %(source)s::event_source, %(provider_event_id)s, %(version)s)"""

SELECT_EVENTS = """
    SELECT id, payment_id, from_status, to_status, source, provider_event_id, version, created_at
      FROM payment_events WHERE payment_id = %(id)s ORDER BY id"""


def record(cur: Cursor, change: StatusChange, result: TransitionResult) -> None:
    """The audit row of an applied transition."""
    assert result.payment is not None and result.previous_status is not None
    cur.execute(
        INSERT_EVENT,
        {
            "payment_id": result.payment.id,
            "from_status": result.previous_status.value,
            "to_status": change.to.value,
            "source": change.source.value,
            "provider_event_id": change.provider_event_id,
            "version": result.payment.version,
        },
    )


def events(cur: Cursor, payment_id: UUID) -> list[AuditEvent]:
    rows = cur.execute(SELECT_EVENTS, {"id": payment_id}).fetchall()
    return [
        AuditEvent(
            id=r["id"],
            payment_id=r["payment_id"],
            from_status=Status(r["from_status"]) if r["from_status"] else None,
            to_status=Status(r["to_status"]),
            source=Source(r["source"]),
            provider_event_id=r["provider_event_id"],
            version=r["version"],
            created_at=r["created_at"],
        )
        for r in rows
    ]
