"""What must never be given up is retried until it succeeds, with growing waits, and the caller
hears of every failure; a cancellation is never swallowed."""

from __future__ import annotations

import asyncio

import pytest

from streams.retry import BACKOFF_MAX_SECONDS, backoff, until_done


def test_a_call_that_fails_three_times_is_retried_until_it_succeeds() -> None:
    outcomes: list[Exception | str] = [OSError("down"), TimeoutError(), OSError("down"), "sent"]
    failures: list[tuple[int, str]] = []
    waits: list[float] = []

    async def call() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    result = asyncio.run(
        until_done(call, lambda n, exc: failures.append((n, type(exc).__name__)), sleep=sleep)
    )
    assert result == ("sent", 3)
    assert failures == [(1, "OSError"), (2, "TimeoutError"), (3, "OSError")]
    assert len(waits) == 3 and 0.1 <= waits[0] <= 0.2 and 0.4 <= waits[2] <= 0.8


def test_a_cancelled_call_is_not_retried() -> None:
    async def call() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(until_done(call, lambda n, exc: None))


def test_the_wait_grows_to_a_cap() -> None:
    assert all(BACKOFF_MAX_SECONDS / 2 <= backoff(n) <= BACKOFF_MAX_SECONDS for n in (7, 20, 60))
