"""One Stripe rate budget for the whole deployment: a token bucket in a PostgreSQL row.

Stripe limits requests per account, not per process. Every API process and every worker takes
its tokens from the same row (`rate_budgets`), refilled at ``rate`` per second by the primary's
clock, so N processes together stay under ``STRIPE_MAX_RPS`` whatever N is. One statement per
token: the row lock serialises takers, the clock is the database's.

Background callers (the reconciler) leave a reserve: they take a token only while more than
``reserve`` tokens are left, so a burst of reconciliation never starves customers' requests.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

ENSURE = """
    INSERT INTO rate_budgets (name, tokens) VALUES (%(name)s, %(burst)s)
    ON CONFLICT (name) DO NOTHING"""

TAKE = """
    UPDATE rate_budgets AS b
       SET tokens = s.available - CASE WHEN s.available >= %(need)s THEN 1 ELSE 0 END,
           updated_at = s.now
      FROM (SELECT name, clock_timestamp() AS now,
                   LEAST(%(burst)s::float8,
                         tokens + GREATEST(0, EXTRACT(EPOCH FROM clock_timestamp() - updated_at))
                                  ::float8 * %(rate)s) AS available
              FROM rate_budgets WHERE name = %(name)s FOR UPDATE) AS s
     WHERE b.name = s.name
    RETURNING s.available >= %(need)s AS granted, s.available AS available"""


class RateBudgetUnavailable(Exception):
    """The shared budget could not be asked (the primary is unreachable)."""


class PostgresRateBudget:
    """``acquire(timeout)`` blocks until a token of the shared bucket is taken."""

    def __init__(
        self,
        pool: ConnectionPool,
        rate: float,
        *,
        name: str = "stripe",
        burst: float | None = None,
        background: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive tokens per second, got {rate!r}")
        self.pool = pool
        self.name = name
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(1.0, self.rate)
        # A background caller needs this many tokens left to take one.
        self.need = 1.0 + (self.burst / 2 if background else 0.0)
        self._sleep = sleep
        self._clock = clock
        self._ensured = False
        self.waited_seconds = 0.0

    def _take(self) -> tuple[bool, float]:
        params = {"name": self.name, "burst": self.burst, "rate": self.rate, "need": self.need}
        try:
            with self.pool.connection(timeout=5.0) as conn:
                if not self._ensured:
                    conn.execute(ENSURE, params)
                    self._ensured = True
                row = conn.execute(TAKE, params).fetchone()
        except (psycopg.Error, PoolTimeout) as exc:
            raise RateBudgetUnavailable(f"Stripe rate budget unreadable: {exc}") from exc
        assert row is not None
        granted, available = bool(row[0]), float(row[1])
        return granted, max(0.0, (self.need - available) / self.rate)

    def acquire(self, *, timeout: float) -> bool:
        """True once a token is taken; False when none comes within ``timeout`` seconds."""
        deadline = self._clock() + timeout
        while True:
            granted, wait = self._take()
            if granted:
                return True
            remaining = deadline - self._clock()
            if remaining <= 0 or wait > remaining:
                return False
            # Wake a little late (and spread the takers), rather than spin.
            pause = wait + random.uniform(0, 1 / self.rate)
            self.waited_seconds += pause
            self._sleep(min(pause, remaining))
