"""Contract: every write to Stripe carries an idempotency key derived from our own ids, the same
key on every retry, so that a retried call can never make a second intent or charge.

The gateway talks to stripe-mock through a recording proxy that can fail a request once (503:
stripe-python retries it), and the test reads the ``Idempotency-Key`` headers that went out.
Keys Stripe-python makes up itself (a random UUID per call) do not pass: they differ between two
calls for the same payment.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest

from payments.adapters.rate_limit import RateLimiter
from payments.adapters.stripe_gateway import StripeGateway
from payments.settings import Settings
from tests.support_api import StripeProxy, sample_payment


class Recorder(StripeProxy):
    """The proxy, remembering (method, path, Idempotency-Key) of every HTTP attempt as it
    arrives: before it is answered, so the caller cannot see an answer the test has not heard of."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.sent: list[tuple[str, str, str | None]] = []

    def _answer(self, handler: Any) -> str:
        self.sent.append((handler.command, handler.path, handler.headers.get("Idempotency-Key")))
        return super()._answer(handler)

    def writes(self, path_start: str) -> list[str | None]:
        return [
            key
            for method, path, key in self.sent
            if method == "POST" and path.startswith(path_start)
        ]


@pytest.fixture
def recorder(stripe_mock: str) -> Iterator[tuple[Recorder, str]]:
    rec = Recorder(stripe_mock)
    with rec:
        yield rec, rec.url


def gateway_via(base: str) -> StripeGateway:
    return StripeGateway(
        Settings(stripe_api_base=base, stripe_secret_key="sk_test_123", stripe_max_retries=2),
        RateLimiter(100),
    )


def payment() -> Any:
    return sample_payment(idempotency_key=f"client-key-{uuid4()}")


def test_creating_an_intent_sends_a_key_made_of_the_payment_id(
    recorder: tuple[Recorder, str],
) -> None:
    rec, base = recorder
    p = payment()
    gateway_via(base).create_intent(p)
    gateway_via(base).create_intent(p)  # the worker finishing the same creation later
    assert rec.writes("/v1/payment_intents") == [f"pi-create-{p.id}"] * 2


def test_a_retried_create_sends_the_same_key(recorder: tuple[Recorder, str]) -> None:
    rec, base = recorder
    p = payment()
    rec.fail_next = 1
    gateway_via(base).create_intent(p)
    keys = rec.writes("/v1/payment_intents")
    assert len(keys) == 2, rec.sent  # the 503, then the retry
    assert keys[0] == keys[1]
    assert keys[0] == f"pi-create-{p.id}"


def test_confirming_sends_keys_derived_from_the_callers_key_on_every_attempt(
    recorder: tuple[Recorder, str],
) -> None:
    rec, base = recorder
    intent = gateway_via(base).create_intent(payment())
    own = f"confirm-{uuid4()}"
    rec.sent.clear()
    rec.fail_next = 1
    gateway_via(base).confirm_intent(intent.id, "pm_card_visa", idempotency_key=own)
    gateway_via(base).confirm_intent(intent.id, "pm_card_visa", idempotency_key=own)
    keys = rec.writes(f"/v1/payment_intents/{intent.id}")
    assert len(keys) == 5, rec.sent  # (503 + retry + confirm) + (attach + confirm)
    assert all(k and own in k for k in keys), keys
    first, second = keys[1:3], keys[3:5]
    assert keys[0] == keys[1]  # the retry of the failed attempt: same key
    assert first == second  # the same confirmation again: the same keys, so Stripe replays
