"""Apply `payments/migrations/*.sql` in order, once each, under an advisory lock.

Run as ``payments-migrate`` (uses ``DATABASE_URL``). Safe to run concurrently and repeatedly.
"""

from __future__ import annotations

import sys
from importlib import resources

import psycopg

from payments.settings import Settings

_LOCK_ID = 0x5041594D  # "PAYM"
CREATE_LEDGER = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        name       text PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now()
    )"""
APPLIED = "SELECT name FROM schema_migrations"
RECORD = "INSERT INTO schema_migrations (name) VALUES (%s)"


def migration_files() -> list[tuple[str, str]]:
    """(name, sql) for every migration, sorted by name."""
    folder = resources.files("payments") / "migrations"
    files = sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )
    return files


def migrate(database_url: str, *, connect_timeout: int = 10) -> list[str]:
    """Apply what is missing; return the names applied now."""
    applied_now: list[str] = []
    with psycopg.connect(database_url, connect_timeout=connect_timeout) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            conn.execute(CREATE_LEDGER)
            conn.commit()
            done = {row[0] for row in conn.execute(APPLIED)}
            for name, sql in migration_files():
                if name in done:
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute(RECORD, (name,))
                applied_now.append(name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied_now


def main() -> int:
    settings = Settings()
    try:
        applied = migrate(settings.database_url)
    except psycopg.OperationalError as exc:
        print(f"payments-migrate: cannot reach the primary database: {exc}", file=sys.stderr)
        return 1
    print(f"payments-migrate: applied {len(applied)} migration(s): {', '.join(applied) or '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
