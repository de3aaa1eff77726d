"""Reconciliation cost and time, in-process: the project's ``Reconciler`` over N pending entries of
which 1% changed on the Stripe stand-in, vs the per-payment poller of the old design (one
retrieve per pending payment per cycle).

The stand-in is ``FakeStripeGateway`` (stateful: intents, events; counts calls) with, on every
call, the project's token bucket at 25 requests/s (Stripe's test-mode limit) and 30 ms of
injected latency; ``events.list`` costs one call per page of 100, as on Stripe.

Two pending populations:

* **fresh** — every payment younger than ``reconcile_stale_after_seconds`` (1 h): only the event
  sweep runs; measured in real time with the real limiter.
* **aged** — ages spread evenly over the 24 h TTL (what a steady state with slow customers looks
  like): payments whose age passes ``reconcile_stale_after_seconds`` in this cycle are also
  retrieved one by one, up to the per-cycle budget. That cycle may take minutes at 25/s, so it
  runs on a virtual clock (the limiter's and the latency's sleeps advance it) and its time is
  simulated, not waited for.

The reconciler reads the table by age (``tests.fakes.MemoryOpenPayments`` stands for the
worker's RocksDB table), as in the worker.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from bench.report import Figure, format_ratio, format_seconds, say
from bench.stack import Context
from payments.adapters.rate_limit import RateLimiter
from payments.bootstrap import reconcile_policy
from payments.domain.money import Money
from payments.domain.payment import Payment
from payments.domain.status import Status
from payments.reconcile import Reconciler
from payments.service import PaymentService
from payments.settings import Settings
from tests.fakes import (
    FakeIntent,
    FakePaymentRepository,
    FakeStripeGateway,
    MemoryOpenPayments,
    OpenEntryFake,
)

STRIPE_RPS = 25.0
LATENCY_SECONDS = 0.030
PAGE = 100
CHANGED_SHARE = 0.01
PARTITIONS = list(range(6))


class VirtualClock:
    """Time that passes only when something sleeps (single-threaded simulations)."""

    def __init__(self) -> None:
        self.epoch = time.time()
        self.elapsed = 0.0

    def monotonic(self) -> float:
        return self.elapsed

    def time(self) -> float:
        return self.epoch + self.elapsed

    def sleep(self, seconds: float) -> None:
        self.elapsed += max(0.0, seconds)


class LimitedStripe(FakeStripeGateway):
    """The fake Stripe behind the project's token bucket, with latency, paging like Stripe."""

    def __init__(self, limiter: RateLimiter, sleep: Callable[[float], None]) -> None:
        super().__init__()
        self.limiter = limiter
        self._pause = sleep

    page_size = PAGE

    def _call(self) -> None:
        self.limiter.acquire()
        super()._call()
        self._pause(LATENCY_SECONDS)


def build(
    total: int, ages: Callable[[int], float], now: float, stripe: LimitedStripe
) -> tuple[FakePaymentRepository, list[OpenEntryFake]]:
    """``total`` pending payments with intents; 1% of them changed on Stripe (succeeded,
    declined or canceled, with their events)."""
    repo = FakePaymentRepository()
    entries = []
    stamp = datetime.now(UTC)
    for i in range(total):
        pid = uuid.uuid4()
        intent_id = f"pi_bench{i:08d}"
        created = now - ages(i)
        repo.payments[pid] = Payment(
            id=pid,
            idempotency_key=f"bench-{pid}",
            request_hash="bench",
            money=Money(1999, "usd"),
            status=Status.PENDING,
            version=2,
            created_at=stamp,
            updated_at=stamp,
            provider_status="requires_payment_method",
            provider_payment_id=intent_id,
        )
        stripe.intents[intent_id] = FakeIntent(
            id=intent_id,
            status="requires_payment_method",
            amount=1999,
            currency="usd",
            client_secret=f"{intent_id}_secret",
            metadata={"payment_id": str(pid)},
            created=int(created),
        )
        entries.append(OpenEntryFake(pid, Status.PENDING, created, intent_id))
    changed = random.Random(7).sample(range(total), int(total * CHANGED_SHARE))
    for n, i in enumerate(changed):
        intent_id = entries[i].provider_payment_id or ""
        if n % 3 == 0:
            stripe.succeed(intent_id)
        elif n % 3 == 1:
            stripe.decline(intent_id)
        else:
            intent = stripe.intents[intent_id]
            intent.status = "canceled"
            stripe._emit("payment_intent.canceled", intent)
    return repo, entries


def cycle(
    total: int, ages: Callable[[int], float], *, virtual: bool
) -> tuple[int, float, float, dict[str, int]]:
    """One cycle: (Stripe calls, cycle seconds — simulated when ``virtual``, CPU wall seconds,
    report figures)."""
    clock = VirtualClock() if virtual else None
    sleep = clock.sleep if clock else time.sleep
    limiter = RateLimiter(
        STRIPE_RPS, clock=clock.monotonic if clock else time.monotonic, sleep=sleep
    )
    stripe = LimitedStripe(limiter, sleep)
    now = clock.time() if clock else time.time()
    repo, entries = build(total, ages, now, stripe)
    stripe.calls = 0
    reconciler = Reconciler(
        repo,
        stripe,
        PaymentService(repo, stripe),
        reconcile_policy(Settings()),
        calls=lambda: stripe.calls,
        clock=clock.time if clock else time.time,
    )
    wall = time.perf_counter()
    report = reconciler.run(MemoryOpenPayments(entries), PARTITIONS, rps=STRIPE_RPS)
    wall = time.perf_counter() - wall
    seconds = clock.elapsed if clock else wall
    figures = {
        k: getattr(report, k) for k in ("open", "resolved", "retrieved", "deferred", "errors")
    }
    figures["swept_events"] = report.sweep.events if report.sweep else 0
    return report.stripe_calls, seconds, wall, figures


def run(ctx: Context) -> list[Figure]:
    total = 100_000
    settings = Settings()
    stale = settings.reconcile_stale_after_seconds
    ttl = settings.pending_ttl_seconds
    interval = settings.reconcile_interval_seconds
    rng = random.Random(11)
    # Poller of the old design: one retrieve per pending payment, under the same limit.
    poller_calls = total
    poller_seconds = max(poller_calls / STRIPE_RPS, poller_calls * LATENCY_SECONDS)

    say(f"reconcile: fresh population, {total:,} pending (all < {stale:.0f}s old), real limiter")
    fresh_calls, fresh_seconds, _, fresh = cycle(
        total, lambda i: rng.uniform(60, stale - 600), virtual=False
    )
    say(f"reconcile: fresh cycle {fresh_calls} calls in {fresh_seconds:.2f}s {fresh}")
    say(f"reconcile: aged population, {total:,} pending over the {ttl:.0f}s TTL, virtual clock")
    aged_calls, aged_seconds, aged_wall, aged = cycle(
        total, lambda i: rng.uniform(60, ttl - 600), virtual=True
    )
    say(f"reconcile: aged cycle {aged_calls} calls, {aged_seconds:.0f}s simulated {aged}")

    stand_in = (
        f"FakeStripeGateway + project token bucket at {STRIPE_RPS:.0f}/s, "
        f"{LATENCY_SECONDS * 1000:.0f} ms latency/call, events.list paged by {PAGE}"
    )
    poller = f"{poller_calls:,} calls"
    poller_time = f"{format_seconds(poller_seconds)} (computed: calls / {STRIPE_RPS:.0f}/s)"
    fresh_ratio = fresh_calls / poller_calls
    aged_ratio = aged_calls / poller_calls
    return [
        Figure(
            "reconciliation cost (fresh)",
            f"{fresh_calls:,} calls",
            poller,
            fresh_ratio,
            "≤ 1/50",
            fresh_ratio <= 1 / 50,
            f"{total:,} pending, 1% changed, all younger than the 1 h stale period; {stand_in}; "
            f"resolved {fresh['resolved']:,}",
            {"calls": fresh_calls, "baseline_calls": poller_calls, **fresh},
        ),
        Figure(
            "reconciliation time (fresh)",
            format_seconds(fresh_seconds),
            poller_time,
            fresh_seconds / poller_seconds,
            "cycle < 600 s",
            fresh_seconds < interval,
            "measured with the real limiter (wall time, includes the CPU of 100,000 entries)",
            {"seconds": fresh_seconds, "baseline_seconds": poller_seconds},
        ),
        Figure(
            "reconciliation cost (aged over 24 h)",
            f"{aged_calls:,} calls",
            poller,
            aged_ratio,
            "≤ 1/50",
            aged_ratio <= 1 / 50,
            f"ages uniform over the TTL: {aged['retrieved']:,} stale payments retrieved one by "
            f"one (per-cycle budget = rps x interval / 2), {aged['deferred']:,} deferred to "
            f"later cycles; ratio {format_ratio(aged_ratio)}",
            {"calls": aged_calls, "baseline_calls": poller_calls, **aged},
        ),
        Figure(
            "reconciliation time (aged over 24 h)",
            format_seconds(aged_seconds),
            poller_time,
            aged_seconds / poller_seconds,
            "cycle < 600 s",
            aged_seconds < interval,
            f"simulated on a virtual clock (limiter + latency sleeps), CPU {aged_wall:.1f}s",
            {"seconds": aged_seconds, "baseline_seconds": poller_seconds, "cpu": aged_wall},
        ),
    ]
