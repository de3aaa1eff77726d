import threading

import pytest

from payments.adapters.rate_limit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_burst_then_refused_until_refilled() -> None:
    clock = FakeClock()
    bucket = RateLimiter(rate=2, burst=3, clock=clock, sleep=clock.sleep)
    assert [bucket.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_time() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.try_acquire()
    assert not bucket.try_acquire()


def test_tokens_never_exceed_burst() -> None:
    clock = FakeClock()
    bucket = RateLimiter(rate=10, burst=2, clock=clock, sleep=clock.sleep)
    clock.now += 1000
    assert [bucket.try_acquire() for _ in range(3)] == [True, True, False]


def test_blocking_acquire_waits_for_the_rate() -> None:
    clock = FakeClock()
    bucket = RateLimiter(rate=4, burst=1, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(9):
        assert bucket.acquire()
    # 1 from the burst, 8 more at 4 per second.
    assert clock.now - start == pytest.approx(2.0, abs=0.01)


def test_acquire_gives_up_at_timeout() -> None:
    clock = FakeClock()
    bucket = RateLimiter(rate=1, burst=1, clock=clock, sleep=clock.sleep)
    assert bucket.acquire()
    assert not bucket.acquire(timeout=0.5)
    assert bucket.acquire(timeout=1.5)


def test_threads_never_take_more_than_the_budget() -> None:
    clock = FakeClock()  # frozen: no refill, so only the burst can be handed out
    bucket = RateLimiter(rate=1, burst=50, clock=clock, sleep=clock.sleep)
    taken: list[bool] = []
    lock = threading.Lock()

    def grab() -> None:
        for _ in range(20):
            ok = bucket.try_acquire()
            with lock:
                taken.append(ok)

    threads = [threading.Thread(target=grab) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(taken) == 50


def test_rejects_nonsense_rates() -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        RateLimiter(rate=0)
