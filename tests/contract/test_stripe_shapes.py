"""Contract: the requests our gateway sends are valid against Stripe's own API description.

stripe-mock (``conftest.py``) validates every parameter against the published spec and answers
400 for an unknown or malformed one: each gateway call below would fail on a request Stripe
does not accept.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
import stripe

from payments.adapters.rate_limit import RateLimiter
from payments.adapters.stripe_gateway import StripeGateway
from payments.settings import Settings
from tests.support_api import sample_payment


@pytest.fixture
def gateway(stripe_mock: str) -> StripeGateway:
    return StripeGateway(
        Settings(
            stripe_api_base=stripe_mock, stripe_secret_key="sk_test_123", stripe_max_retries=0
        ),
        RateLimiter(100),
    )


def payment() -> Any:
    return sample_payment(idempotency_key=f"contract-{uuid4()}", metadata={"order": "A-17"})


def test_create_retrieve_cancel_and_list_events_match_stripes_spec(
    gateway: StripeGateway,
) -> None:
    p = payment()
    intent = gateway.create_intent(p)
    assert intent.id.startswith("pi_")
    assert intent.client_secret
    assert gateway.retrieve_intent(intent.id).id.startswith("pi_")
    canceled = gateway.cancel_intent(intent.id, payment_id=p.id, reason="abandoned", decision=1)
    assert canceled.id.startswith("pi_")
    pages = list(gateway.event_pages(None, since=1_700_000_000))
    events = [e for p in pages for e in p.events]
    # stripe-mock answers a list with its fixture event: an empty list would mean our request
    # or our reading of the answer went wrong, and all() over it would prove nothing.
    assert events, "events.list gave no event back"
    assert all(e.id.startswith("evt_") for e in events)


def test_confirm_matches_stripes_spec(gateway: StripeGateway) -> None:
    """The server-side confirmation (attach the payment method, then confirm): both requests
    pass Stripe's validation, and what comes back is read as an intent."""
    intent = gateway.create_intent(payment())
    calls = gateway.calls
    confirmed = gateway.confirm_intent(
        intent.id, "pm_card_visa", idempotency_key=f"contract-confirm-{uuid4()}"
    )
    assert confirmed.id.startswith("pi_")
    assert confirmed.status
    assert gateway.calls == calls + 2  # the update and the confirm, each accepted


def test_intents_are_listed_by_creation_time(gateway: StripeGateway) -> None:
    """The stale checks list intents by creation time (created[gte], created[lt], paged)."""
    gateway.create_intent(payment())
    listing = gateway.intent_pages(1_700_000_000, 1_700_086_400)
    assert listing is not None, "Stripe lists PaymentIntents by creation time"
    listed = [i for page in listing for i in page]
    assert listed and all(i.id.startswith("pi_") for i in listed)


def test_a_parameter_stripe_does_not_know_is_refused(stripe_mock: str) -> None:
    """Proves the mock really validates: the same client with a bogus parameter gets a 400."""
    mock = Settings(
        stripe_api_base=stripe_mock, stripe_secret_key="sk_test_1", stripe_max_retries=0
    )
    gateway = StripeGateway(mock, RateLimiter(100))
    with pytest.raises(stripe.InvalidRequestError, match="additional properties"):
        gateway.client.v1.payment_intents.create(
            params={"amount": 100, "currency": "eur", "no_such_param": "x"}  # type: ignore[typeddict-unknown-key]
        )
