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
from bench.stack import PARTITION_COUNT, Context
from payments.adapters.rate_limit import RateLimiter
from payments.bootstrap import bootstrap
from payments.domain.money import Money
from payments.domain.payment import Payment
from payments.domain.status import Status
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
# The change topic's partitions, as many as the settings give it.
PARTITIONS = list(range(PARTITION_COUNT))


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


def limited_stripe(limiter: RateLimiter, sleep: Callable[[float], None]) -> FakeStripeGateway:
    """The fake Stripe behind the project's token bucket, with latency, paging like Stripe."""

    def each_call() -> None:
        limiter.acquire()
        sleep(LATENCY_SECONDS)

    stripe = FakeStripeGateway(on_call=each_call)
    stripe.page_size = PAGE
    return stripe


def build(
    total: int, ages: Callable[[int], float], now: float, stripe: FakeStripeGateway
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
            stripe.cancel_from_dashboard(intent_id)
    return repo, entries


def assignment(workers: int) -> list[list[int]]:
    """How Kafka's range assignor splits the partitions between ``workers``."""
    per, extra = divmod(len(PARTITIONS), workers)
    parts, start = [], 0
    for w in range(workers):
        size = per + (1 if w < extra else 0)
        parts.append(PARTITIONS[start : start + size])
        start += size
    return parts


def cycle(
    total: int, ages: Callable[[int], float], *, virtual: bool, workers: int = 1
) -> tuple[int, float, float, dict[str, int]]:
    """One cycle of the deployment: (Stripe calls of all its workers, cycle seconds —
    simulated when ``virtual``, CPU wall seconds, report figures summed over the workers).
    Each worker reconciles the entries of its partitions with its share of the rate, and the
    one owning partition 0 sweeps the events, as ``streams.app`` decides."""
    clock = VirtualClock() if virtual else None
    sleep = clock.sleep if clock else time.sleep
    limiter = RateLimiter(
        STRIPE_RPS, clock=clock.monotonic if clock else time.monotonic, sleep=sleep
    )
    stripe = limited_stripe(limiter, sleep)
    now = clock.time() if clock else time.time()
    repo, entries = build(total, ages, now, stripe)
    stripe.calls = 0
    by_partition: dict[int, list[OpenEntryFake]] = {p: [] for p in PARTITIONS}
    for entry in entries:
        by_partition[entry.payment_id.int % len(PARTITIONS)].append(entry)
    figures: dict[str, int] = {}
    wall = time.perf_counter()
    seconds = 0.0
    for parts in assignment(workers):
        started = clock.elapsed if clock else time.perf_counter()
        # One worker's core, as the worker builds it, over the fakes.
        core = bootstrap(
            Settings(),
            role="worker",
            repository=repo,
            gateway=stripe,
            clock=clock.time if clock else time.time,
        )
        table = MemoryOpenPayments(e for p in parts for e in by_partition[p])
        share = STRIPE_RPS * len(parts) / len(PARTITIONS)
        report = core.reconciler.run(table, parts, rps=share, lead_sweep=0 in parts)
        # The workers run side by side: the cycle lasts as long as the slowest one.
        took = (clock.elapsed if clock else time.perf_counter()) - started
        seconds = max(seconds, took)
        for k in ("open", "resolved", "stale", "retrieved", "expired", "deferred", "errors"):
            figures[k] = figures.get(k, 0) + getattr(report, k)
        sweep = report.sweep
        if sweep is not None:
            figures["sweepers"] = figures.get("sweepers", 0) + 1
            figures["swept_events"] = figures.get("swept_events", 0) + sweep.events
            figures["sweep_calls"] = figures.get("sweep_calls", 0) + sweep.stripe_calls
            figures["intent_pages"] = figures.get("intent_pages", 0) + sweep.intent_pages
            figures["stale_listed"] = figures.get("stale_listed", 0) + sweep.stale_open
    wall = time.perf_counter() - wall
    return stripe.calls, seconds, wall, figures


def run(ctx: Context) -> list[Figure]:
    total = 2_000 if ctx.smoke else 100_000
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
    say("reconcile: steady state, ages over the TTL and one interval past it (expiries due)")
    steady_calls, steady_seconds, _, steady = cycle(
        total, lambda i: rng.uniform(60, ttl + interval), virtual=True
    )
    say(f"reconcile: steady cycle {steady_calls} calls, {steady_seconds:.0f}s simulated {steady}")
    per_workers: dict[int, tuple[int, dict[str, int]]] = {}
    for workers in (1, 2, 3):
        calls, _, _, figs = cycle(
            total, lambda i: rng.uniform(60, ttl - 600), virtual=True, workers=workers
        )
        per_workers[workers] = (calls, figs)
        say(f"reconcile: {workers} worker(s): {calls} calls, {figs}")

    stand_in = (
        f"FakeStripeGateway + project token bucket at {STRIPE_RPS:.0f}/s, "
        f"{LATENCY_SECONDS * 1000:.0f} ms latency/call, events.list and payment_intents.list "
        f"paged by {PAGE}"
    )
    poller = f"{poller_calls:,} calls"
    poller_time = f"{format_seconds(poller_seconds)} (computed: calls / {STRIPE_RPS:.0f}/s)"
    fresh_ratio = fresh_calls / poller_calls
    aged_ratio = aged_calls / poller_calls
    steady_ratio = steady_calls / poller_calls
    sweep_1 = per_workers[1][1].get("sweep_calls", 0)
    calls_3 = per_workers[3][0]
    every_worker = calls_3 + 2 * sweep_1
    workers_text = ", ".join(
        f"{w}: {c:,} (sweep {f.get('sweep_calls', 0)}, checks {c - f.get('sweep_calls', 0):,})"
        for w, (c, f) in per_workers.items()
    )
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
            f"measured with the real limiter (wall time, includes the CPU of {total:,} entries)",
            {"seconds": fresh_seconds, "baseline_seconds": poller_seconds},
        ),
        Figure(
            "reconciliation cost (aged over the 24 h TTL)",
            f"{aged_calls:,} calls",
            poller,
            aged_ratio,
            "≤ 1/50 (stretch 1/500)",
            aged_ratio <= 1 / 50,
            f"ages uniform over the TTL, none past it: {aged.get('stale_listed', 0):,} payments "
            f"whose intent passed the 1 h stale age this cycle, seen in "
            f"{aged.get('intent_pages', 0)} payment_intents.list calls by the leader's sweep "
            f"(sweep {aged.get('sweep_calls', 0)} calls in all), {aged['retrieved']:,} retrieved "
            f"one by one, {aged['deferred']:,} deferred; ratio {format_ratio(aged_ratio)}",
            {"calls": aged_calls, "baseline_calls": poller_calls, **aged},
        ),
        Figure(
            "reconciliation time (aged over the 24 h TTL)",
            format_seconds(aged_seconds),
            poller_time,
            aged_seconds / poller_seconds,
            "cycle < 600 s",
            aged_seconds < interval,
            f"simulated on a virtual clock (limiter + latency sleeps), CPU {aged_wall:.1f}s",
            {"seconds": aged_seconds, "baseline_seconds": poller_seconds, "cpu": aged_wall},
        ),
        Figure(
            "reconciliation cost (steady state, expiries due)",
            f"{steady_calls:,} calls",
            poller,
            steady_ratio,
            "(context: one cancel per expiring payment)",
            None,
            f"ages uniform over the TTL plus one interval: {steady['expired']:,} payments "
            f"expired this cycle (one cancel each at Stripe: the floor, a poller makes them "
            f"too), {steady['deferred']:,} deferred past the budget, "
            f"{steady.get('stale_listed', 0):,} stale seen in {steady.get('intent_pages', 0)} "
            f"listings; {format_seconds(steady_seconds)} simulated",
            {"calls": steady_calls, "baseline_calls": poller_calls, **steady},
        ),
        Figure(
            "reconciliation calls per cycle, 1/2/3 workers",
            f"{calls_3:,} calls (3 workers)",
            f"{every_worker:,} (each worker sweeping)",
            calls_3 / every_worker if every_worker else None,
            "events listed once per deployment",
            all(f.get("sweepers", 0) == 1 for _, f in per_workers.values()),
            f"aged population split over the {len(PARTITIONS)} partitions as Kafka's range "
            "assignor does; "
            f"calls per cycle for {workers_text}; only the owner of partition 0 sweeps",
            {str(w): {"calls": c, **f} for w, (c, f) in per_workers.items()},
        ),
    ]
