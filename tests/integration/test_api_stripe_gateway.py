"""The Stripe gateway against localstripe: intents, events, error translation, call counting."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from payments.adapters.rate_limit import RateLimiter
from payments.adapters.stripe_gateway import StripeGateway
from payments.domain.errors import ProviderDeclined, RetryableError
from payments.domain.money import Money
from payments.domain.payment import Payment
from payments.domain.status import Status
from tests import support_api

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


def test_intent_lifecycle_and_events() -> None:
    s = support_api.settings()
    seen: list[tuple[str, str]] = []
    gateway = StripeGateway(s, observer=lambda op, outcome: seen.append((op, outcome)))
    since = int(time.time()) - 2
    p = payment()
    intent = gateway.create_intent(p)
    assert (intent.amount, intent.currency, intent.payment_id) == (777, "usd", str(p.id))
    assert intent.outcome() is None
    status, paid = support_api.LocalStripe(s).pay(intent.id, "4242424242424242")
    assert status == 200, paid
    assert gateway.retrieve_intent(intent.id).outcome() is Status.SUCCEEDED
    events = list(gateway.list_events("payment_intent.succeeded", created_gt=since))
    mine = [e for e in events if e.intent and e.intent.id == intent.id]
    assert len(mine) == 1 and mine[0].intent is not None
    assert mine[0].intent.payment_id == str(p.id)
    with pytest.raises(ProviderDeclined):
        gateway.cancel_intent(intent.id)  # a succeeded intent cannot be canceled
    other = gateway.create_intent(payment())
    assert gateway.cancel_intent(other.id).outcome() is Status.CANCELED
    with pytest.raises(ProviderDeclined):
        gateway.retrieve_intent("pi_does_not_exist")
    assert gateway.calls >= 7
    assert ("create_intent", "ok") in seen and ("cancel_intent", "declined") in seen


def test_unreachable_stripe_is_retryable_and_rate_limited_calls_are_counted() -> None:
    s = support_api.settings()
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
    assert gateway.calls == 2  # the first attempt and one retry
    assert limiter.acquired == 2
