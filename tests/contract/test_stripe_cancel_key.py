"""Contract: a cancel at Stripe carries an idempotency key made of our payment id, the reason and
the decision to cancel, the same on every retry of one call, another for a later decision.

Stripe answers a key it has seen with its first answer, a refusal included, for 24 hours: with
one key per intent (as before), the customer's cancel and our expiry shared one, and an expiry
refused once was refused again on every retry. The use cases run as in the API and the worker
(``bootstrap``: the real repository, the real gateway) against the stack's Stripe stand-in,
through the recording proxy of ``test_stripe_idempotency_key``, which fails requests on demand
(503: the gateway retries them) and keeps the ``Idempotency-Key`` of every attempt."""

from __future__ import annotations

import time
from collections.abc import Iterator
from uuid import UUID, uuid4

import pytest

from payments.bootstrap import Core, Role, bootstrap
from payments.domain.money import Money
from payments.domain.status import Status
from payments.reconcile import Check, Due, Plan
from payments.service import CreatePayment
from payments.settings import Settings
from tests.contract.test_stripe_idempotency_key import Recorder


@pytest.fixture
def recorder(settings: Settings) -> Iterator[Recorder]:
    with Recorder(settings.stripe_api_base) as rec:
        yield rec


def core_via(settings: Settings, rec: Recorder, role: Role) -> Core:
    changed = {"stripe_api_base": rec.url, "stripe_max_retries": 2}
    return bootstrap(settings.model_copy(update=changed), role=role)


def new_payment(core: Core) -> tuple[UUID, str]:
    request = CreatePayment(idempotency_key=f"client-key-{uuid4()}", money=Money(2300, "eur"))
    payment = core.service.create_payment(request).payment
    assert payment.provider_payment_id is not None
    return payment.id, payment.provider_payment_id


def test_the_api_cancel_sends_a_key_of_our_payment_the_reason_and_its_version(
    settings: Settings, recorder: Recorder
) -> None:
    core = core_via(settings, recorder, "api")
    try:
        pid, intent_id = new_payment(core)
        stored = core.repository.get(pid)
        assert stored is not None
        recorder.fail_next = 1  # the first attempt meets a 503: the gateway retries it
        assert core.service.cancel(pid).status is Status.CANCELED
    finally:
        core.close()
    keys = recorder.writes(f"/v1/payment_intents/{intent_id}/cancel")
    expected = f"pi-cancel-{pid}-requested_by_customer-{stored.version}"
    assert keys[:2] == [expected, expected], "the 503 and its retry: one key"
    assert set(keys) == {expected}
    assert stored.idempotency_key not in expected


def test_each_expiry_attempt_sends_a_key_of_its_own(settings: Settings, recorder: Recorder) -> None:
    """The first expiry of a payment meets three 503s (its call and both retries, one key) and
    is retried later; the second attempt is another decision, with another key, and expires
    it."""
    core = core_via(settings, recorder, "worker")
    try:
        pid, intent_id = new_payment(core)
        due = Due(Check.EXPIRE, pid, Status.PENDING, time.time() - 90_000, intent_id)

        def expire_once() -> int:
            plan = Plan([due], deferred=0, open=1, partitions=[0], started_at=time.time())
            return core.reconciler.check(plan).errors

        recorder.fail_next = 3
        assert expire_once() == 1
        assert core.repository.get(pid).status is Status.PENDING  # type: ignore[union-attr]
        assert expire_once() == 0
        assert core.repository.get(pid).status is Status.EXPIRED  # type: ignore[union-attr]
    finally:
        core.close()
    keys = recorder.writes(f"/v1/payment_intents/{intent_id}/cancel")
    first, second = f"pi-cancel-{pid}-abandoned-1", f"pi-cancel-{pid}-abandoned-2"
    assert keys[:3] == [first, first, first], "one call and its two retries: one key"
    assert keys[3:] and set(keys[3:]) == {second}
