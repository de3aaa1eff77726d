"""One Stripe rate budget for the whole deployment: a pacing schedule in a PostgreSQL row.

Stripe limits requests per account, not per process. Every API process and every worker takes
its turn from the same row (`rate_budgets`), by the primary's clock, so N processes together
stay under ``STRIPE_MAX_RPS`` whatever N is, in any one-second window: calls are paced at least
``1 / rate`` apart (no burst is stored up; a bucket of a second's worth of tokens let about
twice the rate through in one second). One statement per call: the row lock serialises takers.

Background callers (the reconciler) are paced at half the rate on a second schedule of the
same row, on top of the shared one: together they take at most half the budget, so customers'
calls (the API) always have the other half, and all of it while the workers are idle.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

ENSURE = """
    INSERT INTO rate_budgets (name) VALUES (%(name)s)
    ON CONFLICT (name) DO NOTHING"""

# Granted when the shared schedule (and, for a background caller, its own) has come; the next
# call of anyone is then due `spacing` later. Otherwise the seconds to wait.
TAKE = """
    WITH clock AS (SELECT clock_timestamp() AS now),
    turn AS (
        SELECT b.name, clock.now, b.next_at, b.background_next_at,
               b.next_at <= clock.now
               AND (NOT %(background)s OR b.background_next_at <= clock.now) AS granted
          FROM rate_budgets AS b, clock
         WHERE b.name = %(name)s
           FOR UPDATE OF b)
    UPDATE rate_budgets AS b
       SET next_at = CASE WHEN turn.granted
                          THEN turn.now + make_interval(secs => %(spacing)s)
                          ELSE b.next_at END,
           background_next_at = CASE WHEN turn.granted AND %(background)s
                                     THEN turn.now + make_interval(secs => 2 * %(spacing)s)
                                     ELSE b.background_next_at END
      FROM turn
     WHERE b.name = turn.name
    RETURNING turn.granted,
              GREATEST(0, EXTRACT(EPOCH FROM turn.next_at - turn.now),
                       CASE WHEN %(background)s
                            THEN EXTRACT(EPOCH FROM turn.background_next_at - turn.now)
                            ELSE 0 END)::float8 AS wait"""


class RateBudgetUnavailable(Exception):
    """The shared budget could not be asked (the primary is unreachable)."""


class PostgresRateBudget:
    """``acquire(timeout)`` blocks until this process's turn of the shared schedule comes."""

    def __init__(
        self,
        pool: ConnectionPool,
        rate: float,
        *,
        name: str = "stripe",
        background: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive calls per second, got {rate!r}")
        self.pool = pool
        self.name = name
        self.rate = float(rate)
        self.background = background
        self._sleep = sleep
        self._clock = clock
        self._ensured = False
        self.waited_seconds = 0.0
        # One thread of this process asks the row at a time, the others wait their turn here:
        # a process's threads polling the row together would cost a round trip each per call
        # granted (a cycle's 8 check threads, the API's 64 request threads).
        self._asking = threading.Lock()

    def _take(self) -> tuple[bool, float]:
        params = {"name": self.name, "spacing": 1 / self.rate, "background": self.background}
        try:
            with self.pool.connection(timeout=5.0) as conn:
                if not self._ensured:
                    conn.execute(ENSURE, params)
                    self._ensured = True
                row = conn.execute(TAKE, params).fetchone()
        except (psycopg.Error, PoolTimeout) as exc:
            raise RateBudgetUnavailable(f"Stripe rate budget unreadable: {exc}") from exc
        assert row is not None
        return bool(row[0]), float(row[1])

    def acquire(self, *, timeout: float) -> bool:
        """True once a turn is taken; False when none comes within ``timeout`` seconds."""
        deadline = self._clock() + timeout
        if not self._asking.acquire(timeout=max(0.0, timeout)):
            return False
        try:
            return self._poll(deadline)
        finally:
            self._asking.release()

    def _poll(self, deadline: float) -> bool:
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
