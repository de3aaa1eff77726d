"""Connection pools for the primary and the replicas. Built closed, opened in the factory.

Call these from an app factory or a worker's startup (after any fork), never at import time.

Connections are in autocommit: a single statement is one round trip and commits on its own;
a use case that needs several statements in one transaction opens one (``conn.transaction()``,
an explicit BEGIN ... COMMIT). A connection is checked (an empty query) before it is handed out
only when it sat idle in the pool for a while: a connection used moments ago is alive, and the
check would be one more round trip on every checkout.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from payments.settings import Settings

# A connection idle for longer than this is checked before use (the server may have gone).
CHECK_IDLE_AFTER_SECONDS = 2.0


def _connect_kwargs(settings: Settings) -> dict[str, Any]:
    return {
        "connect_timeout": settings.db_connect_timeout_seconds,
        # Every statement is bounded; a stuck query must not hold a request forever.
        "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
        "application_name": "payments",
        "autocommit": True,
    }


class _Pool(ConnectionPool):
    """psycopg's pool, remembering when each connection came back, so that its ``check`` pings
    only a connection that sat idle longer than ``idle_after`` seconds (or is known bad).

    The time is noted in ``putconn``, in the returning thread: a pool ``reset`` callback would
    do the same, but psycopg then hands every returned connection to a pool worker thread,
    a queue hand-over and a thread wake-up per checkout."""

    def __init__(self, *args: Any, idle_after: float = CHECK_IDLE_AFTER_SECONDS, **kwargs: Any):
        self.idle_after = idle_after
        self._returned: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        super().__init__(*args, check=self._check_if_idle, **kwargs)

    def putconn(self, conn: psycopg.Connection[Any]) -> None:
        self._returned[conn] = time.monotonic()
        super().putconn(conn)

    def _check_if_idle(self, conn: psycopg.Connection[Any]) -> None:
        returned = self._returned.get(conn)
        if conn.broken or returned is None or time.monotonic() - returned > self.idle_after:
            ConnectionPool.check_connection(conn)


def make_pool(
    conninfo: str,
    settings: Settings,
    *,
    name: str,
    wait: bool = False,
    min_size: int | None = None,
    max_size: int | None = None,
) -> ConnectionPool:
    """A pool on ``conninfo``, opened now. ``wait`` blocks until ``min_size`` connections exist
    (raising ``PoolTimeout`` after the connect timeout); otherwise it fills in the background."""
    pool = _Pool(
        conninfo,
        min_size=min_size if min_size is not None else settings.db_pool_min,
        max_size=max_size if max_size is not None else settings.db_pool_max,
        kwargs=_connect_kwargs(settings),
        open=False,
        name=name,
        timeout=float(settings.db_connect_timeout_seconds) * 2,
        reconnect_timeout=60.0,
    )
    pool.open(wait=wait, timeout=float(settings.db_connect_timeout_seconds) * 2)
    return pool


def make_primary_pool(settings: Settings, *, wait: bool = False) -> ConnectionPool:
    return make_pool(settings.database_url, settings, name="primary", wait=wait)


def make_read_pool(settings: Settings) -> ConnectionPool | None:
    """The replica pool (libpq multi-host with ``load_balance_hosts``), or None when
    ``DATABASE_READ_URL`` is empty (reads then go to the primary)."""
    if not settings.database_read_url:
        return None
    return make_pool(settings.database_read_url, settings, name="replicas", wait=False)


def check_each_host(conninfo: str, *, timeout_seconds: int = 2) -> dict[str, str]:
    """Connect to every host of a (multi-host) conninfo on its own; ``host:port -> "ok"`` or
    the error. Used by readiness checks: libpq multi-host would hide a dead replica."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(conninfo)
    hosts = str(params.get("host") or "127.0.0.1").split(",")
    ports = str(params.get("port") or "5432").split(",")
    if len(ports) == 1:
        ports = ports * len(hosts)
    results: dict[str, str] = {}
    for host, port in zip(hosts, ports, strict=False):
        single = {
            k: v
            for k, v in params.items()
            if k not in ("host", "port", "load_balance_hosts", "target_session_attrs")
        }
        single.update(host=host, port=port, connect_timeout=timeout_seconds)
        try:
            with psycopg.connect(make_conninfo("", **single)) as conn:
                conn.execute("SELECT 1")
            results[f"{host}:{port}"] = "ok"
        except psycopg.Error as exc:
            results[f"{host}:{port}"] = f"unreachable: {str(exc).strip()[:200]}"
    return results
