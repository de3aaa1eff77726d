"""Use cases over the in-memory fakes: idempotency, Stripe outages, declines, webhooks, cancel."""

import threading
from uuid import uuid4

import pytest

from payments.domain.errors import NotFound, ProviderDeclined, RetryableError, TransitionRefused
from payments.domain.money import Money
from payments.domain.status import Source, Status
from payments.ports import ProviderEvent
from payments.service import (
    CreateOutcome,
    CreatePayment,
    CreationInProgress,
    IdempotencyKeyReused,
    PaymentDeclined,
    PaymentService,
)
from tests.fakes import FakePaymentRepository, FakeStripeGateway


@pytest.fixture
def repo() -> FakePaymentRepository:
    return FakePaymentRepository()


@pytest.fixture
def stripe() -> FakeStripeGateway:
    # Like localstripe: the one-intent guarantee must come from our own logic.
    return FakeStripeGateway(honour_idempotency=False)


@pytest.fixture
def service(repo: FakePaymentRepository, stripe: FakeStripeGateway) -> PaymentService:
    return PaymentService(repo, stripe)


def request(key: str = "key-1", amount: int = 1500, **extra: object) -> CreatePayment:
    return CreatePayment(idempotency_key=key, money=Money(amount, "eur"), **extra)  # type: ignore[arg-type]


def test_create_stores_pending_payment_with_its_intent(
    service: PaymentService, stripe: FakeStripeGateway
) -> None:
    result = service.create_payment(request(metadata={"order": "42"}))
    assert result.outcome is CreateOutcome.CREATED
    payment = result.payment
    assert payment.status is Status.PENDING
    assert payment.provider_payment_id is not None
    assert payment.client_secret
    (intent,) = stripe.intents_for(payment.id)
    assert intent.id == payment.provider_payment_id
    assert (intent.amount, intent.currency) == (1500, "eur")


def test_same_key_same_body_replays_without_second_row_or_intent(
    service: PaymentService, repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    first = service.create_payment(request())
    again = service.create_payment(request())
    assert again.outcome is CreateOutcome.REPLAYED
    assert again.payment.id == first.payment.id
    assert again.payment.client_secret == first.payment.client_secret
    assert len(repo.payments) == 1
    assert len(stripe.intents) == 1


def test_same_key_other_body_is_refused(service: PaymentService) -> None:
    service.create_payment(request(amount=1500))
    with pytest.raises(IdempotencyKeyReused, match="different request body"):
        service.create_payment(request(amount=1600))


def test_concurrent_creates_with_one_key_make_one_payment_one_intent(
    service: PaymentService, repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    stripe.latency_seconds = 0.01  # keep the first creation in flight while others arrive
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(40)

    def create() -> None:
        barrier.wait()
        try:
            outcome = service.create_payment(request()).outcome.value
        except CreationInProgress:
            outcome = "in_progress"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=create) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(repo.payments) == 1
    assert len(stripe.intents) == 1
    assert outcomes.count("created") == 1
    assert set(outcomes) <= {"created", "replayed", "in_progress"}


def test_stripe_down_leaves_pending_without_intent_then_retry_completes(
    service: PaymentService, repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    stripe.fail_with = RetryableError("connection refused")
    deferred = service.create_payment(request())
    assert deferred.outcome is CreateOutcome.DEFERRED
    assert deferred.payment.provider_payment_id is None
    assert "retry with the same Idempotency-Key" in (deferred.detail or "")
    stripe.fail_with = None
    retried = service.create_payment(request())
    assert retried.outcome is CreateOutcome.CREATED
    assert retried.payment.id == deferred.payment.id
    assert len(stripe.intents) == 1


def test_worker_finishes_a_creation_once(
    service: PaymentService, repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    stripe.fail_with = RetryableError("timeout")
    payment = service.create_payment(request()).payment
    with pytest.raises(RetryableError):
        service.finish_creation(payment.id)
    stripe.fail_with = None
    finished = service.finish_creation(payment.id)
    assert finished is not None and finished.provider_payment_id is not None
    again = service.finish_creation(payment.id)
    assert again is not None and again.provider_payment_id == finished.provider_payment_id
    assert len(stripe.intents) == 1
    assert service.finish_creation(uuid4()) is None


def test_worker_does_not_create_while_the_api_holds_the_claim(
    service: PaymentService, repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    from payments.adapters.postgres.repository import NewPayment

    inserted = repo.insert_pending(
        NewPayment(uuid4(), "k", "h", Money(100, "usd"))
    )  # as if an API request were still at Stripe
    assert service.finish_creation(inserted.payment.id) == inserted.payment
    assert stripe.calls == 0


def test_decline_marks_failed_and_replays_the_refusal(
    service: PaymentService, repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    stripe.fail_with = ProviderDeclined("amount too small", code="amount_too_small", field="amount")
    with pytest.raises(PaymentDeclined) as declined:
        service.create_payment(request(amount=60))
    payment = declined.value.payment
    assert payment.status is Status.FAILED
    assert payment.failure_code == "amount_too_small"
    assert [e.source for e in repo.events(payment.id)] == [Source.API]
    with pytest.raises(PaymentDeclined):
        service.create_payment(request(amount=60))
    assert len(repo.payments) == 1


def apply(service: PaymentService, event: ProviderEvent) -> str:
    return service.apply_webhook_event(event, {"id": event.id}).outcome


def test_webhook_success_duplicate_and_out_of_order(
    service: PaymentService, repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    payment = service.create_payment(request()).payment
    assert payment.provider_payment_id
    failed = stripe.decline(payment.provider_payment_id)
    succeeded = stripe.succeed(payment.provider_payment_id)
    assert apply(service, succeeded) == "applied"
    assert apply(service, succeeded) == "duplicate"
    assert apply(service, failed) == "refused"  # older event after a newer final one
    stored = repo.get(payment.id)
    assert stored is not None and stored.status is Status.SUCCEEDED
    trail = [(e.from_status, e.to_status, e.provider_event_id) for e in repo.events(payment.id)]
    assert trail == [(Status.PENDING, Status.SUCCEEDED, succeeded.id)]


def test_failed_payment_may_still_succeed(
    service: PaymentService, repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    payment = service.create_payment(request()).payment
    assert payment.provider_payment_id
    assert apply(service, stripe.decline(payment.provider_payment_id)) == "applied"
    failed = repo.get(payment.id)
    assert failed is not None and failed.failure_code == "card_declined"
    assert apply(service, stripe.succeed(payment.provider_payment_id)) == "applied"
    assert [e.to_status for e in repo.events(payment.id)] == [Status.FAILED, Status.SUCCEEDED]


def test_unknown_payment_and_unknown_type_are_acknowledged(
    service: PaymentService, stripe: FakeStripeGateway
) -> None:
    other = FakeStripeGateway()
    stranger = other.create_intent(
        service.create_payment(request("other")).payment
    )  # an intent whose payment id we change below
    event = ProviderEvent("evt_x", "payment_intent.succeeded", 1, intent=None)
    assert apply(service, event) == "ignored"
    from dataclasses import replace

    unknown = ProviderEvent(
        "evt_y",
        "payment_intent.succeeded",
        1,
        intent=replace(stranger, id="pi_unknown", payment_id=str(uuid4())),
    )
    assert apply(service, unknown) == "unknown_payment"
    charge = ProviderEvent("evt_z", "charge.refunded", 1, intent=None)
    assert apply(service, charge) == "ignored"


def test_requires_action_only_records_stripe_status(
    service: PaymentService, repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    from dataclasses import replace

    payment = service.create_payment(request()).payment
    assert payment.provider_payment_id
    intent = stripe.retrieve_intent(payment.provider_payment_id)
    event = ProviderEvent(
        "evt_a",
        "payment_intent.requires_action",
        1,
        intent=replace(intent, status="requires_action"),
    )
    assert apply(service, event) == "provider_status"
    stored = repo.get(payment.id)
    assert stored is not None
    assert (stored.status, stored.provider_status) == (Status.PENDING, "requires_action")
    assert repo.events(payment.id) == []


def test_cancel_cancels_intent_and_is_idempotent(
    service: PaymentService, repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    payment = service.create_payment(request()).payment
    canceled = service.cancel(payment.id)
    assert canceled.status is Status.CANCELED
    assert canceled.provider_status == "canceled"
    assert service.cancel(payment.id).status is Status.CANCELED
    assert len(repo.events(payment.id)) == 1


def test_a_cancel_stripe_answers_404_for_is_refused_and_the_payment_stays_open(
    service: PaymentService, repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    # A stand-in reset looks like this, and so does an account switched under a pending
    # payment, whose intent can still be paid in the account that made it.
    payment = service.create_payment(request()).payment
    assert payment.provider_payment_id
    del stripe.intents[payment.provider_payment_id]
    with pytest.raises(TransitionRefused, match="Stripe has no PaymentIntent"):
        service.cancel(payment.id)
    stored = repo.get(payment.id)
    assert stored is not None and stored.status is Status.PENDING
    assert repo.events(payment.id) == []


def test_cancel_of_succeeded_payment_is_refused(
    service: PaymentService, stripe: FakeStripeGateway
) -> None:
    payment = service.create_payment(request()).payment
    assert payment.provider_payment_id
    apply(service, stripe.succeed(payment.provider_payment_id))
    with pytest.raises(TransitionRefused, match="already succeeded"):
        service.cancel(payment.id)
    with pytest.raises(NotFound):
        service.cancel(uuid4())


def test_cancel_when_stripe_already_succeeded_records_success(
    service: PaymentService, repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    payment = service.create_payment(request()).payment
    assert payment.provider_payment_id
    stripe.succeed(payment.provider_payment_id)  # webhook not delivered yet
    with pytest.raises(TransitionRefused, match="succeeded at Stripe"):
        service.cancel(payment.id)
    stored = repo.get(payment.id)
    assert stored is not None and stored.status is Status.SUCCEEDED


def test_cancel_of_payment_without_intent_blocks_later_creation(
    service: PaymentService, repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    stripe.fail_with = RetryableError("down")
    payment = service.create_payment(request()).payment
    stripe.fail_with = None
    assert service.cancel(payment.id).status is Status.CANCELED
    after = service.finish_creation(payment.id)
    assert after is not None and after.status is Status.CANCELED
    assert [i.status for i in stripe.intents_for(payment.id)] in ([], ["canceled"])


def test_cancel_of_a_payment_whose_create_answer_was_lost_cancels_stripes_intent(
    repo: FakePaymentRepository,
) -> None:
    """The create reached Stripe and made the intent, then the connection was reset before its
    answer came back: the API answered 202 with no intent. The customer cancels: the intent
    Stripe holds is canceled with the payment, not left open."""
    stripe = FakeStripeGateway()  # Stripe's idempotent requests
    service = PaymentService(repo, stripe)
    stripe.fail_next = 1
    payment = service.create_payment(request()).payment
    assert payment.provider_payment_id is None
    made_at_stripe = stripe.create_intent(payment).id  # what the lost answer carried
    canceled = service.cancel(payment.id)
    assert canceled.status is Status.CANCELED
    assert canceled.provider_payment_id == made_at_stripe
    assert [(i.id, i.status) for i in stripe.intents_for(payment.id)] == [
        (made_at_stripe, "canceled")
    ]


def test_a_cancel_without_intent_while_stripe_cannot_say_changes_nothing(
    service: PaymentService, stripe: FakeStripeGateway
) -> None:
    stripe.fail_with = RetryableError("down")
    payment = service.create_payment(request()).payment
    with pytest.raises(RetryableError):
        service.cancel(payment.id)
    stripe.fail_with = None
    assert service.get(payment.id).status is Status.PENDING
    created = service.finish_creation(payment.id)
    assert created is not None and created.provider_payment_id is not None, "claim released"


def test_a_webhook_about_another_intent_is_refused_and_kept_with_its_reason(
    service: PaymentService, repo: FakePaymentRepository
) -> None:
    """Any intent can carry our metadata; only the payment's own may move it."""
    from dataclasses import replace

    payment = service.create_payment(request()).payment
    own = payment.provider_payment_id
    assert own is not None
    stranger = FakeStripeGateway().create_intent(payment)  # another integration's intent
    assert stranger.id != own
    event = ProviderEvent(
        "evt_foreign",
        "payment_intent.succeeded",
        1,
        intent=replace(stranger, status="succeeded"),
    )
    result = service.apply_webhook_event(event, {"id": event.id})
    assert result.outcome == "foreign_intent"
    assert result.reason and stranger.id in result.reason and own in result.reason
    stored = repo.get(payment.id)
    assert stored is not None and stored.status is Status.PENDING
    assert repo.inbox["evt_foreign"]["outcome"] == "foreign_intent"
    assert repo.events(payment.id) == []


def test_an_intent_for_other_money_is_refused(
    service: PaymentService, repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    from dataclasses import replace

    payment = service.create_payment(request(amount=1500)).payment
    assert payment.provider_payment_id
    intent = stripe.retrieve_intent(payment.provider_payment_id)
    for forged in (replace(intent, amount=1), replace(intent, currency="usd")):
        event = ProviderEvent(
            f"evt_{forged.amount}_{forged.currency}",
            "payment_intent.succeeded",
            1,
            intent=replace(forged, status="succeeded"),
        )
        assert apply(service, event) == "foreign_intent"
    stored = repo.get(payment.id)
    assert stored is not None and stored.status is Status.PENDING


def test_an_intent_made_for_a_payment_without_one_is_attached_by_its_first_event(
    service: PaymentService, repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    """Stripe answered the creation after our timeout: its webhook brings the intent."""
    stripe.fail_with = RetryableError("timed out")
    payment = service.create_payment(request()).payment
    stripe.fail_with = None
    assert payment.provider_payment_id is None
    intent = stripe.create_intent(payment)
    event = stripe.succeed(intent.id)
    assert apply(service, event) == "applied"
    stored = repo.get(payment.id)
    assert stored is not None
    assert (stored.status, stored.provider_payment_id) == (Status.SUCCEEDED, intent.id)


def test_stripe_refusing_the_idempotency_key_releases_the_creation_claim(
    service: PaymentService, repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    from payments.domain.errors import IdempotencyKeyConflict

    stripe.fail_with = IdempotencyKeyConflict("Keys for idempotent requests can only be used ...")
    with pytest.raises(IdempotencyKeyConflict):
        service.create_payment(request())
    stored = next(iter(repo.payments.values()))
    assert repo.claims[stored.id] is None, "a corrected retry may claim at once"
    stripe.fail_with = None
    done = service.create_payment(request())
    assert done.outcome is CreateOutcome.CREATED and done.payment.provider_payment_id


@pytest.mark.parametrize(
    ("amount", "currency", "why"),
    [
        (49, "usd", "minimum charge in USD is 0.50 USD"),
        (29, "gbp", "minimum charge in GBP is 0.30 GBP"),
        (49, "jpy", "minimum charge in JPY is 50 JPY"),
        (17_499, "huf", "minimum charge in HUF is 175.00 HUF"),
        (1_235, "kwd", "last of the three decimals to be 0"),
        (1_050, "isk", "whole units only"),
    ],
)
def test_amounts_stripe_would_refuse_are_refused_at_intake_naming_the_field(
    service: PaymentService, repo: FakePaymentRepository, amount: int, currency: str, why: str
) -> None:
    from payments.domain.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match=why) as refused:
        service.create_payment(CreatePayment("k", Money(amount, currency)))
    assert refused.value.field == "amount_minor"
    assert repo.payments == {}, "nothing is stored for a refused amount"


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (50, "usd", "0.50 USD"),
        (1_230, "kwd", "1.230 KWD"),
        (1_000, "isk", "10.00 ISK"),
        (17_550, "huf", "175.50 HUF"),
        (50, "jpy", "50 JPY"),
    ],
)
def test_amounts_stripe_takes_are_stored_as_given(
    service: PaymentService, amount: int, currency: str, shown: str
) -> None:
    payment = service.create_payment(
        CreatePayment(f"k-{currency}", Money(amount, currency))
    ).payment
    assert (payment.money.amount_minor, str(payment.money)) == (amount, shown)


def test_a_cancel_whose_key_stripe_holds_records_what_the_intent_says(
    repo: FakePaymentRepository,
) -> None:
    """Stripe answers an IdempotencyError (another request with this cancel's key is still in
    flight, and has just canceled the intent): the payment is not left pending, it is canceled
    as the intent says."""
    from payments.domain.errors import IdempotencyKeyConflict

    stripe = FakeStripeGateway()
    service = PaymentService(repo, stripe)
    payment = service.create_payment(request()).payment
    assert payment.provider_payment_id is not None
    stripe.cancel_elsewhere(payment.provider_payment_id, "requested_by_customer")

    def key_in_use(intent_id: str, **kwargs: object) -> None:
        raise IdempotencyKeyConflict(f"canceling PaymentIntent {intent_id}: key in use")

    stripe.cancel_intent = key_in_use  # type: ignore[method-assign, assignment]
    canceled = service.cancel(payment.id)
    assert canceled.status is Status.CANCELED
    assert repo.get(payment.id).status is Status.CANCELED  # type: ignore[union-attr]
