"""The Stripe gateway against the stand-in (through a recording proxy): intents, events paged
with a durable cursor, the retry rule by error kind, our idempotency keys, one shared rate
budget across processes."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from payments.adapters.postgres.pools import make_primary_pool
from payments.adapters.postgres.rate_budget import PostgresRateBudget
from payments.adapters.rate_limit import RateLimiter
from payments.adapters.stripe_gateway import StripeGateway
from payments.domain.errors import ProviderDeclined, RetryableError
from payments.domain.money import Money
from payments.domain.payment import Payment
from payments.domain.status import Status
from payments.settings import Settings
from tests import support_api
from tests.stripe_proxy import Canned, RecordingProxy, most_in_one_second

pytestmark = pytest.mark.integration


def payment() -> Payment:
    now = datetime.now(UTC)
    return Payment(
        id=uuid4(),
        idempotency_key=f"gw-{uuid4()}",
        request_hash="h",
        money=Money(777, "usd"),
        status=Status.PENDING,
        version=1,
        created_at=now,
        updated_at=now,
        metadata={"case": "gateway"},
    )


@pytest.fixture
def proxy(s: Settings) -> RecordingProxy:
    with RecordingProxy(s.stripe_api_base) as recording:
        yield recording  # type: ignore[misc]


def gateway_via(proxy: RecordingProxy, s: Settings, **changes: object) -> StripeGateway:
    settings = s.model_copy(update={"stripe_api_base": proxy.url, **changes})
    return StripeGateway(settings, RateLimiter(1000, burst=100))


def test_intent_lifecycle(proxy: RecordingProxy, s: Settings) -> None:
    seen: list[tuple[str, str]] = []
    gateway = gateway_via(proxy, s)
    gateway.observer = lambda op, outcome: seen.append((op, outcome))
    p = payment()
    intent = gateway.create_intent(p)
    assert (intent.amount, intent.currency, intent.payment_id) == (777, "usd", str(p.id))
    status, paid = support_api.LocalStripe(s).pay(intent.id, "4242424242424242")
    assert status == 200, paid
    assert gateway.retrieve_intent(intent.id).status == "succeeded"
    with pytest.raises(ProviderDeclined):  # a succeeded intent cannot be canceled
        gateway.cancel_intent(intent.id, payment_id=p.id, reason="abandoned", decision=1)
    q = payment()
    other = gateway.create_intent(q)
    canceled = gateway.cancel_intent(other.id, payment_id=q.id, reason="abandoned", decision=1)
    assert canceled.status == "canceled"
    with pytest.raises(ProviderDeclined):
        gateway.retrieve_intent("pi_does_not_exist")
    assert ("create_intent", "ok") in seen and ("cancel_intent", "declined") in seen


def test_the_creation_key_is_ours_not_the_clients(proxy: RecordingProxy, s: Settings) -> None:
    """Stripe's idempotency keys are account-wide: a client's `order-1042` could collide with
    another integration's. The key sent is derived from our payment id."""
    gateway = gateway_via(proxy, s)
    p = payment()
    gateway.create_intent(p)
    (create,) = proxy.requests_to("/v1/payment_intents")
    sent = {k.lower(): v for k, v in create.headers.items()}
    assert sent["idempotency-key"] == f"pi-create-{p.id}"
    assert p.idempotency_key not in sent["idempotency-key"]


def test_429_and_503_are_retried_honouring_retry_after_a_decline_is_not(
    proxy: RecordingProxy, s: Settings
) -> None:
    gateway = gateway_via(proxy, s, stripe_max_retries=3)
    proxy.answer_next(
        Canned(429, {"Retry-After": "1"}, '{"error": {"type": "rate_limit_error"}}'),
        Canned(503),
    )
    intent = gateway.create_intent(payment())
    attempts = proxy.requests_to("/v1/payment_intents")
    assert [a.status for a in attempts] == [429, 503, 200]
    assert attempts[1].at - attempts[0].at >= 1.0, "Retry-After: 1 was honoured"
    assert intent.id.startswith("pi_")

    declined = '{"error": {"type": "card_error", "code": "card_declined", "message": "no"}}'
    proxy.answer_next(Canned(402, body=declined))
    before = len(proxy.seen)
    with pytest.raises(ProviderDeclined, match="declined"):
        gateway.create_intent(payment())
    assert len(proxy.seen) == before + 1, "a decline is never retried"

    proxy.answer_next(Canned(503, {"Stripe-Should-Retry": "false"}))
    before = len(proxy.seen)
    with pytest.raises(RetryableError):
        gateway.create_intent(payment())
    assert len(proxy.seen) == before + 1, "Stripe said not to retry"


def test_unreachable_stripe_is_retryable_within_the_retry_bound(s: Settings) -> None:
    down = s.model_copy(
        update={
            "stripe_api_base": f"http://127.0.0.1:{support_api.free_port()}",
            "stripe_max_retries": 1,
            "stripe_timeout_seconds": 2.0,
        }
    )
    limiter = RateLimiter(rate=1000, burst=10)
    gateway = StripeGateway(down, limiter)
    with pytest.raises(RetryableError, match="unreachable"):
        gateway.create_intent(payment())
    assert gateway.calls == 2 and limiter.acquired == 2  # the first attempt and one retry


def test_events_come_page_by_page_oldest_first_and_the_cursor_resumes(s: Settings) -> None:
    gateway = StripeGateway(s, RateLimiter(1000, burst=100))
    since = int(time.time()) - 1
    stripe = support_api.LocalStripe(s)
    first = [gateway.create_intent(payment()) for _ in range(3)]
    for intent in first:
        assert stripe.pay(intent.id, "4242424242424242")[0] == 200
    pages = list(gateway.event_pages(None, since=since))
    mine = [e.intent.id for p in pages for e in p.events if e.intent]
    assert {i.id for i in first} <= set(mine)
    created = [e.created for p in pages for e in p.events]
    assert created == sorted(created), "oldest first"
    cursor = pages[-1].cursor

    later = gateway.create_intent(payment())
    assert stripe.pay(later.id, "4242424242424242")[0] == 200
    resumed = list(gateway.event_pages(cursor, since=since))
    # First the overlap re-read (the last two minutes: Stripe's list is eventually
    # consistent), then only what came after the cursor.
    assert {i.id for i in first} <= {e.intent.id for e in resumed[0].events if e.intent}
    after_cursor = [e.intent.id for p in resumed[1:] for e in p.events if e.intent]
    assert later.id in after_cursor
    assert not {i.id for i in first} & set(after_cursor)


BURST_SCRIPT = """
import sys, time
from payments.adapters.postgres.pools import make_primary_pool
from payments.adapters.postgres.rate_budget import PostgresRateBudget
from payments.adapters.stripe_gateway import StripeGateway
from payments.settings import Settings

s = Settings(stripe_api_base=sys.argv[1], stripe_max_rps=float(sys.argv[2]))
pool = make_primary_pool(s, wait=True)
gateway = StripeGateway(s, PostgresRateBudget(pool, s.stripe_max_rps, name=sys.argv[3]))
for _ in range(int(sys.argv[4])):
    try:
        gateway.retrieve_intent("pi_burst")
    except Exception:
        pass  # unknown intent: a 404 still costs a call
pool.close()
"""


def test_every_process_together_stays_under_one_stripe_budget(
    proxy: RecordingProxy, s: Settings
) -> None:
    """Four processes (as two API processes and two workers would) call Stripe as fast as they
    can; the stand-in receives no more than the budget in any one second (every sliding
    window, +1 for a call on its boundary): one schedule for the deployment, no stored burst."""
    rate, calls_each, processes = 5.0, 10, 4
    budget = f"test-{uuid4().hex[:8]}"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", BURST_SCRIPT, proxy.url, str(rate), budget, str(calls_each)]
        )
        for _ in range(processes)
    ]
    for worker in workers:
        assert worker.wait(timeout=120) == 0
    arrivals = sorted(a.at for a in proxy.requests_to("/v1/payment_intents/pi_burst"))
    assert len(arrivals) == calls_each * processes
    assert most_in_one_second(arrivals) <= rate + 1, arrivals
    span = arrivals[-1] - arrivals[0]
    # 40 calls at most 5 a second: at least (40 - 1) / 5 = 7.8 s from the first to the last.
    assert span >= (len(arrivals) - 1) / rate * 0.9, span


def test_reconciliation_takes_at_most_half_the_budget_and_customers_the_rest(
    s: Settings,
) -> None:
    """Three workers' reconciliation and three API threads take from one budget of 10 a
    second, all as fast as they can for three seconds: the reconciliation gets at most half
    (5 a second), the customers at least as much as it."""
    from concurrent.futures import ThreadPoolExecutor

    pool = make_primary_pool(s, wait=True)
    rate, seconds = 10.0, 3.0
    name = f"test-{uuid4().hex[:8]}"
    try:

        def take_for(background: bool) -> int:
            budget = PostgresRateBudget(pool, rate, name=name, background=background)
            end, taken = time.monotonic() + seconds, 0
            while time.monotonic() < end:
                taken += budget.acquire(timeout=max(0.0, end - time.monotonic()))
            return taken

        with ThreadPoolExecutor(6) as threads:
            workers = [threads.submit(take_for, True) for _ in range(3)]
            customers = [threads.submit(take_for, False) for _ in range(3)]
            background = sum(f.result() for f in workers)
            customer = sum(f.result() for f in customers)
    finally:
        pool.close()
    assert 0 < background <= rate / 2 * seconds + 1, (background, customer)
    assert customer >= background, (background, customer)
    assert background + customer <= rate * seconds + 1, (background, customer)


def test_one_gateway_serves_many_threads_at_once(s: Settings) -> None:
    """The API's request threads (gthread) share one gateway: each call gets its own answer
    (the threads share one pool of connections) and every attempt is counted once."""
    from concurrent.futures import ThreadPoolExecutor

    gateway = StripeGateway(s, RateLimiter(1000, burst=100))
    payments = [payment() for _ in range(48)]
    with ThreadPoolExecutor(16) as pool:
        intents = list(pool.map(gateway.create_intent, payments))
    assert [i.payment_id for i in intents] == [str(p.id) for p in payments]
    assert len({i.id for i in intents}) == len(payments)
    assert gateway.calls == len(payments)


def test_the_stand_in_cannot_list_intents_by_creation_time(s: Settings) -> None:
    """localstripe refuses payment_intents.list's `created` filter: the gateway says so (None),
    and the workers retrieve their stale payments one by one (real Stripe lists them; the
    contract test checks that request against stripe-mock)."""
    gateway = StripeGateway(s, RateLimiter(1000, burst=100))
    assert gateway.intent_pages(int(time.time()) - 3600, int(time.time())) is None
    assert gateway.intent_pages(0, 1) is None
    assert gateway.calls == 1  # probed once
