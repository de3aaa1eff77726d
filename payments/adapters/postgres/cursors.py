"""The reconciler's durable state: ``reconcile_cursors`` (its place in Stripe's lists) and
``reconcile_retries`` (checks that failed, and when each may run again)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from payments.adapters.postgres.rows import Cursor
from payments.ports import Retry

GET_CURSOR = "SELECT value FROM reconcile_cursors WHERE name = %(name)s"
SET_CURSOR = """
    INSERT INTO reconcile_cursors (name, value) VALUES (%(name)s, %(value)s)
    ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()"""


def get(cur: Cursor, name: str) -> str | None:
    row = cur.execute(GET_CURSOR, {"name": name}).fetchone()
    return str(row["value"]) if row else None


def put(cur: Cursor, name: str, value: str) -> None:
    cur.execute(SET_CURSOR, {"name": name, "value": value})


FORGET_RETRIES = "DELETE FROM reconcile_retries WHERE next_at < %(before)s"
LOAD_RETRIES = """
    SELECT payment_id, attempts, next_at, reason, unknown_since, unknown_attempts
      FROM reconcile_retries"""
SAVE_RETRY = """
    INSERT INTO reconcile_retries
           (payment_id, attempts, next_at, reason, unknown_since, unknown_attempts)
    VALUES (%(id)s, %(attempts)s, %(next_at)s, %(reason)s, %(unknown_since)s,
            %(unknown_attempts)s)
    ON CONFLICT (payment_id) DO UPDATE SET attempts = EXCLUDED.attempts,
        next_at = EXCLUDED.next_at, reason = EXCLUDED.reason,
        unknown_since = EXCLUDED.unknown_since, unknown_attempts = EXCLUDED.unknown_attempts,
        updated_at = now()"""
DROP_RETRY = "DELETE FROM reconcile_retries WHERE payment_id = %(id)s"


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _stamp(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def load_retries(cur: Cursor, forget_before: float) -> dict[UUID, Retry]:
    cur.execute(FORGET_RETRIES, {"before": datetime.fromtimestamp(forget_before, UTC)})
    return {
        row["payment_id"]: Retry(
            int(row["attempts"]),
            row["next_at"].timestamp(),
            row["reason"],
            unknown_since=_epoch(row["unknown_since"]),
            unknown_attempts=int(row["unknown_attempts"]),
        )
        for row in cur.execute(LOAD_RETRIES).fetchall()
    }


def save_retry(cur: Cursor, payment_id: UUID, retry: Retry) -> None:
    params = {
        "id": payment_id,
        "attempts": retry.attempts,
        "next_at": datetime.fromtimestamp(retry.next_at, UTC),
        "reason": retry.reason,
        "unknown_since": _stamp(retry.unknown_since),
        "unknown_attempts": retry.unknown_attempts,
    }
    cur.execute(SAVE_RETRY, params)


def drop_retry(cur: Cursor, payment_id: UUID) -> None:
    cur.execute(DROP_RETRY, {"id": payment_id})
