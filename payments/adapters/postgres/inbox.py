"""`webhook_events`: the inbox of Stripe events, one row per event id (redeliveries dedupe)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from payments.adapters.postgres.rows import Cursor
from payments.ports import InboxEvent

INSERT_WEBHOOK = """
    INSERT INTO webhook_events (event_id, type, payload)
    VALUES (%(event_id)s, %(type)s, %(payload)s)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id"""

FINISH_WEBHOOK = """
    UPDATE webhook_events SET payment_id = %(payment_id)s, processed_at = now(),
                              outcome = %(outcome)s, reason = %(reason)s
     WHERE event_id = %(event_id)s"""

# The webhook inbox rows of one payment, oldest first (index from migration 0004).
SELECT_FOR_PAYMENT = """
    SELECT event_id, type, received_at, processed_at, outcome, reason
      FROM webhook_events WHERE payment_id = %(id)s
     ORDER BY received_at, event_id
     LIMIT %(limit)s"""


def receive(cur: Cursor, event_id: str, event_type: str, payload: Mapping[str, Any]) -> bool:
    """Store a new event; False when it was received before (a redelivery)."""
    row = cur.execute(
        INSERT_WEBHOOK, {"event_id": event_id, "type": event_type, "payload": Jsonb(dict(payload))}
    ).fetchone()
    return row is not None


def finish(
    cur: Cursor, event_id: str, payment_id: UUID | None, outcome: str, reason: str | None
) -> None:
    cur.execute(
        FINISH_WEBHOOK,
        {"event_id": event_id, "payment_id": payment_id, "outcome": outcome, "reason": reason},
    )


def for_payment(cur: Cursor, payment_id: UUID, limit: int) -> list[InboxEvent]:
    rows = cur.execute(SELECT_FOR_PAYMENT, {"id": payment_id, "limit": limit}).fetchall()
    return [
        InboxEvent(
            event_id=r["event_id"],
            type=r["type"],
            received_at=r["received_at"],
            processed_at=r["processed_at"],
            outcome=r["outcome"],
            reason=r["reason"],
        )
        for r in rows
    ]
