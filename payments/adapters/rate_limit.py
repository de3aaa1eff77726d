"""An in-process token bucket: the rate budget of one process (the benchmarks, the tests).

A deployment shares one budget across processes (``postgres.rate_budget``); this bucket is the
same contract for one process: ``acquire(timeout=...)`` blocks until a token is taken.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Token bucket: ``rate`` tokens per second, at most ``burst`` stored.

    ``acquire`` blocks (bounded by ``timeout``); asyncio code calls ``try_acquire`` and,
    when it is refused, ``await asyncio.sleep(limiter.wait_time())``.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive tokens per second, got {rate!r}")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(1.0, self.rate)
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1 token, got {burst!r}")
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._updated = clock()
        self.acquired = 0
        self.waited_seconds = 0.0

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._updated = now

    def try_acquire(self, tokens: float = 1.0) -> bool:
        """Take ``tokens`` now if available; never blocks."""
        with self._lock:
            self._refill()
            if self._tokens >= tokens:
                self._tokens -= tokens
                self.acquired += 1
                return True
            return False

    def wait_time(self, tokens: float = 1.0) -> float:
        """Seconds until ``tokens`` would be available (0 when they are now)."""
        with self._lock:
            self._refill()
            missing = tokens - self._tokens
            return 0.0 if missing <= 0 else missing / self.rate

    def acquire(self, *, timeout: float | None = None, tokens: float = 1.0) -> bool:
        """Block until ``tokens`` are taken; False when ``timeout`` seconds would pass first."""
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            if self.try_acquire(tokens):
                return True
            delay = self.wait_time(tokens)
            if deadline is not None:
                remaining = deadline - self._clock()
                if remaining <= 0 or delay > remaining:
                    return False
            # Wake a little late rather than spin; other threads may take the token first.
            pause = max(delay, 0.001)
            self.waited_seconds += pause
            self._sleep(pause)
