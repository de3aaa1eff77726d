"""Retrying a broker call until it succeeds, for what must never be given up (a status event, a
dead letter, a change record read back): exponential backoff with jitter, capped at 10 s; the
caller hears of every failure (to log it, to report its partition blocked)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
BACKOFF_BASE_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 10.0


def backoff(attempt: int) -> float:
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


async def until_done(
    call: Callable[[], Awaitable[T]],
    on_failure: Callable[[int, Exception], None],
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[T, int]:
    """``call()``'s result and how many attempts failed before it; ``on_failure(attempt, exc)``
    after each failure. Cancellation is never swallowed."""
    attempt = 0
    while True:
        try:
            return await call(), attempt
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            attempt += 1
            on_failure(attempt, exc)
            await sleep(backoff(attempt))
