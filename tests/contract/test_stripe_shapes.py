"""Contract: the requests our gateway sends are valid against Stripe's own API description.

stripe-mock (Stripe's OpenAPI-driven mock) validates every parameter against the published
spec and answers 400 for an unknown or malformed one. Found as ``.stack/bin/stripe-mock``
(installed by the stack), ``STRIPE_MOCK_BIN``, or on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest
import requests
import stripe

from payments.adapters.rate_limit import RateLimiter
from payments.adapters.stripe_gateway import StripeGateway
from payments.domain.money import Money
from payments.domain.payment import Payment
from payments.domain.status import Status
from payments.settings import Settings
from tests.support_api import free_port

ROOT = Path(__file__).resolve().parents[2]


def stripe_mock_binary() -> str:
    candidates = [
        os.environ.get("STRIPE_MOCK_BIN", ""),
        str(ROOT / ".stack/bin/stripe-mock"),
        shutil.which("stripe-mock") or "",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    raise AssertionError(
        "stripe-mock not found: run `scripts/stack up`, or install it with "
        "`GOBIN=$PWD/.stack/bin go install github.com/stripe/stripe-mock@v0.197.0`"
    )


@pytest.fixture(scope="module")
def stripe_mock() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [stripe_mock_binary(), "-http-addr", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(
                    f"{base}/v1/balance", timeout=1, headers={"Authorization": "Bearer sk_test_123"}
                )
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("stripe-mock did not start") from None
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def gateway(stripe_mock: str) -> StripeGateway:
    return StripeGateway(
        Settings(
            stripe_api_base=stripe_mock, stripe_secret_key="sk_test_123", stripe_max_retries=0
        ),
        RateLimiter(100),
    )


def payment() -> Payment:
    now = datetime.now(UTC)
    return Payment(
        id=uuid4(),
        idempotency_key=f"contract-{uuid4()}",
        request_hash="h",
        money=Money(1999, "eur"),
        status=Status.PENDING,
        version=1,
        created_at=now,
        updated_at=now,
        metadata={"order": "A-17"},
    )


def test_create_retrieve_cancel_and_list_events_match_stripes_spec(
    gateway: StripeGateway,
) -> None:
    intent = gateway.create_intent(payment())
    assert intent.id.startswith("pi_")
    assert intent.client_secret
    assert gateway.retrieve_intent(intent.id).id.startswith("pi_")
    assert gateway.cancel_intent(intent.id, reason="abandoned").id.startswith("pi_")
    pages = list(gateway.event_pages(None, since=1_700_000_000))
    events = [e for p in pages for e in p.events]
    assert events, "stripe-mock answers a list fixture: the shape is checked on real items"
    assert all(e.id.startswith("evt_") for e in events)
    confirmed = gateway.confirm_intent(intent.id, "pm_card_visa", idempotency_key="contract-1")
    assert confirmed.id.startswith("pi_")
    # The stale checks list intents by creation time (created[gte], created[lt], paged).
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
