"""PostgreSQL: replication slots and streaming replicas, as the primary sees them (the role
needs ``pg_monitor``). One short connection per question, with connect and statement
timeouts."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import psycopg

from ops.common import DEFAULT_TIMEOUT_SECONDS, ObserveError

SLOTS_SQL = """
    SELECT slot_name, slot_type, coalesce(plugin, '') AS plugin, active,
           coalesce(wal_status, '') AS wal_status,
           pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(confirmed_flush_lsn, restart_lsn))::bigint
               AS lag_bytes,
           pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_bytes
      FROM pg_replication_slots
     ORDER BY slot_name"""

REPLICAS_SQL = """
    SELECT r.application_name, host(r.client_addr) AS client_addr, r.state, r.sync_state,
           s.slot_name,
           pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint AS replay_lag_bytes,
           extract(epoch FROM r.replay_lag)::float8 AS replay_lag_seconds
      FROM pg_stat_replication r
      LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
     WHERE s.slot_type IS DISTINCT FROM 'logical'
     ORDER BY r.application_name"""


class PostgresSource:
    def __init__(self, database_url: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.database_url = database_url
        self.timeout = timeout
        parts = urlsplit(database_url)
        self.where = f"PostgreSQL primary at {parts.hostname}:{parts.port or 5432}"

    def _rows(self, sql: str) -> list[dict[str, Any]]:
        try:
            with psycopg.connect(
                self.database_url,
                connect_timeout=max(1, round(self.timeout)),
                options=f"-c statement_timeout={int(self.timeout * 1000)}",
                autocommit=True,
                application_name="payments-ops",
            ) as conn:
                cur = conn.execute(sql.encode())
                names = [d.name for d in cur.description or []]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        except psycopg.OperationalError as exc:
            reason = " ".join(str(exc).split())[:500]
            raise ObserveError(f"{self.where} unreachable: {reason}") from exc

    def slots(self) -> list[dict[str, Any]]:
        return self._rows(SLOTS_SQL)

    def replicas(self) -> list[dict[str, Any]]:
        return self._rows(REPLICAS_SQL)
