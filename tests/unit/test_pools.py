"""A pooled connection is pinged before use only when it sat idle (or is known broken): a
connection used moments ago costs no extra round trip."""

from __future__ import annotations

from typing import Any

from payments.adapters.postgres import pools


class FakeConnection:
    autocommit = True

    def __init__(self) -> None:
        self.broken = False
        self.queries: list[str] = []

    def execute(self, query: str) -> None:
        self.queries.append(query)


def test_a_connection_is_checked_only_after_sitting_idle(monkeypatch: Any) -> None:
    now = [100.0]
    monkeypatch.setattr(pools.time, "monotonic", lambda: now[0])
    idle = pools._IdleCheck(idle_after=2.0)
    conn: Any = FakeConnection()
    idle.check(conn)  # never returned to the pool yet: checked
    assert conn.queries == [""]
    idle.reset(conn)
    now[0] += 1.0
    idle.check(conn)  # back a second ago: handed out as it is
    assert conn.queries == [""]
    now[0] += 5.0
    idle.check(conn)  # idle for 6 s: checked
    assert conn.queries == ["", ""]
    idle.reset(conn)
    conn.broken = True
    idle.check(conn)  # known broken: checked (and so replaced by the pool)
    assert conn.queries == ["", "", ""]
