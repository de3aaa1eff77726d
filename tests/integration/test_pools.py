"""A pooled connection is pinged before use only when it sat idle (or is known broken): a
connection used moments ago costs no extra round trip. On the real primary, through the pool
the repository uses."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg_pool import ConnectionPool

from payments.adapters.postgres import pools
from payments.settings import Settings

pytestmark = pytest.mark.integration


def test_a_connection_is_checked_only_after_sitting_idle(monkeypatch: Any) -> None:
    pings: list[object] = []
    real_check = ConnectionPool.check_connection

    def counted(conn: Any) -> None:
        pings.append(conn)
        real_check(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(counted))
    now = [1000.0]
    pool = pools.make_pool(
        Settings().database_url, Settings(), name="test", wait=True, min_size=1, max_size=1
    )
    try:
        monkeypatch.setattr(pools.time, "monotonic", lambda: now[0])
        with pool.connection() as conn:  # never handed out before: checked
            conn.execute("SELECT 1")
        assert len(pings) == 1
        now[0] += 1.0
        with pool.connection() as conn:  # back a second ago: handed out as it is
            conn.execute("SELECT 1")
        assert len(pings) == 1
        now[0] += 5.0
        with pool.connection() as conn:  # idle for 5 s: checked
            conn.execute("SELECT 1")
        assert len(pings) == 2
    finally:
        pool.close()
