"""`reconcile_cursors`: durable positions (the reconciler's place in Stripe's event list)."""

from __future__ import annotations

from payments.adapters.postgres.rows import Cursor

GET_CURSOR = "SELECT value FROM reconcile_cursors WHERE name = %(name)s"
SET_CURSOR = """
    INSERT INTO reconcile_cursors (name, value) VALUES (%(name)s, %(value)s)
    ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()"""


def get(cur: Cursor, name: str) -> str | None:
    row = cur.execute(GET_CURSOR, {"name": name}).fetchone()
    return str(row["value"]) if row else None


def put(cur: Cursor, name: str, value: str) -> None:
    cur.execute(SET_CURSOR, {"name": name, "value": value})
