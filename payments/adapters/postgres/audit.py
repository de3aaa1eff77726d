"""`payment_events`: the append-only audit of every status change. The row is written by the
guarded transition itself (``payment_store.TRANSITION``, one statement); this module reads it."""

from __future__ import annotations

from uuid import UUID

from payments.adapters.postgres.rows import Cursor
from payments.domain.status import Source, Status
from payments.ports import AuditEvent

SELECT_EVENTS = """
    SELECT id, payment_id, from_status, to_status, source, provider_event_id, version, created_at
      FROM payment_events WHERE payment_id = %(id)s ORDER BY id"""


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
