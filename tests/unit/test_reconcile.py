"""Reconciliation over fakes: what Stripe says ends up in the database, at a bounded cost.

Every expected status is written here from Stripe's side of the story (the intent succeeded,
was declined, canceled...), never computed with the product's own mapping.
"""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest

from payments.domain.errors import ProviderDeclined, RetryableError, TransitionRefused
from payments.domain.money import Money
from payments.domain.payment import Payment
from payments.domain.status import Source, Status
from payments.ports import NewPayment, StatusChange
from payments.reconcile import SWEEP_CURSOR, ReconcilePolicy, Reconciler
from payments.service import PaymentService
from tests.fakes import FakePaymentRepository, FakeStripeGateway, MemoryOpenPayments

POLICY = ReconcilePolicy(
    interval_seconds=600, stale_after_seconds=3600, ttl_seconds=86400, retry_after_seconds=60
)


class World:
    def __init__(self, policy: ReconcilePolicy = POLICY) -> None:
        self.repo = FakePaymentRepository()
        self.stripe = FakeStripeGateway()
        self.service = PaymentService(self.repo, self.stripe)
        self.now = time.time()
        self.ages: dict[uuid.UUID, float] = {}
        self.policy = policy
        self.restart()

    def restart(self) -> None:
        """A new worker process: the reconciler's memory is gone, the database stays."""
        self.reconciler = Reconciler(
            self.repo,
            self.stripe,
            self.service,
            self.policy,
            calls=lambda: self.stripe.calls,
            clock=lambda: self.now,
        )

    def payment(
        self, *, with_intent: bool = True, age: float = 60.0, amount: int = 1000
    ) -> Payment:
        result = self.repo.insert_pending(
            NewPayment(
                id=uuid.uuid4(),
                idempotency_key=f"k-{uuid.uuid4()}",
                request_hash="h",
                money=Money(amount, "usd"),
            )
        )
        payment = result.payment
        self.ages[payment.id] = age
        if with_intent:
            payment = self.repo.attach_intent(payment.id, self.stripe.create_intent(payment))
        else:
            self.repo.claims[payment.id] = None  # the API request that inserted it is gone
        return payment

    def intent_of(self, payment: Payment) -> str:
        stored = self.repo.get(payment.id)
        assert stored is not None and stored.provider_payment_id is not None
        return stored.provider_payment_id

    def table(self) -> MemoryOpenPayments:
        """The worker's table as the change stream would have built it: open payments by age."""
        return MemoryOpenPayments.of(
            dataclasses.replace(p, created_at=_at(self.now - self.ages[p.id]))
            for p in self.repo.payments.values()
        )

    def cycle(self, *, rps: float = 20, lead_sweep: bool = True):  # type: ignore[no-untyped-def]
        return self.reconciler.run(self.table(), [0], rps=rps, lead_sweep=lead_sweep)

    def status(self, payment: Payment) -> Status:
        stored = self.repo.get(payment.id)
        assert stored is not None
        return stored.status


def _at(epoch: float):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)


def test_the_sweep_resolves_what_changed_at_a_cost_independent_of_the_open_count() -> None:
    world = World()
    payments = [world.payment() for _ in range(300)]
    paid, declined, canceled = payments[:3]
    world.stripe.succeed(world.intent_of(paid))
    world.stripe.decline(world.intent_of(declined))
    world.stripe.cancel_elsewhere(world.intent_of(canceled), "requested_by_customer")
    world.stripe.calls = 0

    report = world.cycle()

    assert world.status(paid) is Status.SUCCEEDED
    assert world.status(declined) is Status.FAILED
    assert world.status(canceled) is Status.CANCELED
    assert all(world.status(p) is Status.PENDING for p in payments[3:])
    assert report.sweep is not None and report.sweep.applied == 3
    # One page of events and one (empty) page of the intents that turned an hour old, no
    # retrieves: 300 open payments cost two calls.
    assert report.retrieved == 0 and world.stripe.calls == 2


def test_a_declined_payment_later_paid_on_the_same_intent_ends_succeeded() -> None:
    """The customer's first card is declined, the second succeeds; the `succeeded` webhook is
    lost. The payment must not stay failed while Stripe holds the money."""
    world = World()
    payment = world.payment()
    world.stripe.decline(world.intent_of(payment))
    world.cycle()
    assert world.status(payment) is Status.FAILED
    world.stripe.succeed(world.intent_of(payment))
    world.now += 600
    world.cycle()
    assert world.status(payment) is Status.SUCCEEDED


def test_the_cursor_is_stored_page_by_page_and_a_failure_keeps_the_progress() -> None:
    world = World()
    world.stripe.page_size = 10
    payments = [world.payment() for _ in range(25)]
    for p in payments:
        world.stripe.succeed(world.intent_of(p))
    calls = {"n": 0}
    original = world.stripe._call

    def third_page_fails() -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RetryableError("Stripe: 429 Too Many Requests")
        original()

    world.stripe._call = third_page_fails  # type: ignore[method-assign]
    report = world.cycle()
    assert report.sweep is not None and not report.sweep.complete and report.sweep.pages == 2
    assert sum(world.status(p) is Status.SUCCEEDED for p in payments) == 20
    first_cursor = world.repo.get_cursor(SWEEP_CURSOR)
    assert first_cursor is not None

    world.stripe._call = original  # type: ignore[method-assign]
    world.now += 600
    report = world.cycle()
    assert report.sweep is not None and report.sweep.complete
    assert all(world.status(p) is Status.SUCCEEDED for p in payments)
    assert report.sweep.events == 5, "the next sweep starts where the last page ended"


def test_an_event_about_another_intent_is_refused() -> None:
    world = World()
    payment = world.payment()
    # An intent made elsewhere (another integration) that names our payment in its metadata.
    stranger = world.stripe.create_intent(dataclasses.replace(payment, id=uuid.uuid4()))
    world.stripe.intents[stranger.id].metadata["payment_id"] = str(payment.id)
    assert stranger.id != world.intent_of(payment)
    world.stripe.succeed(stranger.id)
    report = world.cycle()
    assert world.status(payment) is Status.PENDING
    assert report.sweep is not None and report.sweep.applied == 0


def test_an_intent_for_other_money_cannot_attach_to_a_payment_without_one() -> None:
    world = World()
    payment = world.payment(with_intent=False, age=5)  # still being created by its request
    other = world.payment(amount=999)
    world.stripe.intents[world.intent_of(other)].metadata["payment_id"] = str(payment.id)
    world.stripe.succeed(world.intent_of(other))
    world.cycle()
    assert world.status(payment) is Status.PENDING
    stored = world.repo.get(payment.id)
    assert stored is not None and stored.provider_payment_id is None


def test_past_the_ttl_the_intent_is_canceled_at_stripe_then_the_payment_expires() -> None:
    world = World()
    pending = world.payment(age=90_000)
    failed = world.payment(age=90_000)
    world.repo.transition(failed.id, StatusChange(Status.FAILED, Source.WEBHOOK))
    report = world.cycle(lead_sweep=False)
    assert world.status(pending) is Status.EXPIRED
    assert world.status(failed) is Status.EXPIRED, "a failed payment expires too"
    for p in (pending, failed):
        intent = world.stripe.retrieve_intent(world.intent_of(p))
        assert (intent.status, intent.cancellation_reason) == ("canceled", "abandoned")
    assert report.expired == 2


def test_past_the_ttl_a_payment_stripe_already_charged_succeeds_instead() -> None:
    world = World()
    payment = world.payment(age=90_000)
    world.stripe.succeed(world.intent_of(payment))
    world.stripe.events.clear()  # its webhook and event were lost
    world.cycle(lead_sweep=False)
    assert world.status(payment) is Status.SUCCEEDED


def test_past_the_ttl_a_payment_without_intent_expires_and_stripe_holds_no_open_intent() -> None:
    """Two payments without an intent here. For the first, the create reached Stripe and its
    answer was lost (a reset connection): Stripe holds an intent nobody here knows of. For the
    second, no create ever reached Stripe. Both expire, and every intent Stripe holds for them
    is canceled as abandoned: none is left open for a closed payment."""
    world = World()
    answer_lost = world.payment(with_intent=False, age=90_000)
    made_at_stripe = world.stripe.create_intent(answer_lost).id
    never_sent = world.payment(with_intent=False, age=90_000)
    report = world.cycle(lead_sweep=False)
    for payment in (answer_lost, never_sent):
        assert world.status(payment) is Status.EXPIRED
        intents = world.stripe.intents_for(payment.id)
        assert intents, "expired without asking Stripe whether it made an intent"
        assert [(i.status, i.cancellation_reason) for i in intents] == [("canceled", "abandoned")]
    assert [i.id for i in world.stripe.intents_for(answer_lost.id)] == [made_at_stripe]
    assert world.intent_of(answer_lost) == made_at_stripe
    assert report.expired == 2
    world.now += 600
    world.cycle(lead_sweep=False)
    assert len(world.stripe.intents_for(never_sent.id)) == 1, "no intent after the expiry"


def test_a_payment_without_intent_is_not_expired_while_stripe_cannot_say_if_it_made_one() -> None:
    """Stripe does not answer at the TTL: whether an intent exists is unknown, so the payment
    stays pending and is tried again later; once Stripe answers, it is expired and the intent
    it had made is canceled."""
    world = World()
    payment = world.payment(with_intent=False, age=90_000)
    made_at_stripe = world.stripe.create_intent(payment).id
    world.stripe.fail_with = RetryableError("Stripe: connection reset")
    report = world.cycle(lead_sweep=False)
    assert report.errors == 1 and world.status(payment) is Status.PENDING
    world.stripe.fail_with = None
    world.now += 61
    world.cycle(lead_sweep=False)
    assert world.status(payment) is Status.EXPIRED
    assert world.stripe.intents[made_at_stripe].status == "canceled"


def test_past_the_ttl_a_payment_stripe_refuses_to_create_expires_without_intent() -> None:
    world = World()
    payment = world.payment(with_intent=False, age=90_000)
    world.stripe.fail_with = ProviderDeclined(
        "Amount must be at least 50 cents", code="amount_too_small"
    )
    world.cycle(lead_sweep=False)
    world.stripe.fail_with = None
    assert world.status(payment) is Status.EXPIRED
    assert world.stripe.intents_for(payment.id) == []


def test_a_payment_that_cannot_be_expired_is_retried_later_with_a_growing_delay() -> None:
    world = World()
    payment = world.payment(age=90_000)
    world.stripe.intents[world.intent_of(payment)].status = "processing"
    first = world.cycle(lead_sweep=False)
    assert first.errors == 1 and world.status(payment) is Status.PENDING
    retry = world.reconciler.retries[payment.id]
    assert retry.attempts == 1 and retry.next_at == pytest.approx(world.now + 60)
    world.now += 30
    assert world.cycle(lead_sweep=False).checked == 0, "not first in line every cycle"
    world.now += 31
    world.cycle(lead_sweep=False)
    assert world.reconciler.retries[payment.id].next_at == pytest.approx(world.now + 120)
    world.stripe.intents[world.intent_of(payment)].status = "succeeded"
    world.now += 121
    world.cycle(lead_sweep=False)
    assert world.status(payment) is Status.SUCCEEDED
    assert payment.id not in world.reconciler.retries


def test_checks_that_keep_failing_never_starve_the_payments_behind_them() -> None:
    """Forty old payments past the TTL whose intents Stripe does not know (another account, a
    stand-in reset): each fails every time it is tried, and is never expired on that absence.
    A younger payment past the TTL and one still without an intent get their checks in the
    next cycle all the same, though the old ones alone fill the budget (10 a cycle), and though
    the worker restarted in between."""
    world = World(dataclasses.replace(POLICY, interval_seconds=10))
    unknown = [world.payment(age=100_000) for _ in range(40)]
    for payment in unknown:
        del world.stripe.intents[world.intent_of(payment)]
    for _ in range(4):
        world.cycle(rps=2, lead_sweep=False)
        world.now += 60
    world.restart()  # what failed is remembered across a restart

    expiring = world.payment(age=90_000)
    creating = world.payment(with_intent=False, age=120)
    world.cycle(rps=2, lead_sweep=False)

    assert world.status(expiring) is Status.EXPIRED
    assert world.stripe.intents[world.intent_of(expiring)].status == "canceled"
    assert world.repo.get(creating.id).provider_payment_id is not None  # type: ignore[union-attr]
    assert all(world.status(p) is Status.PENDING for p in unknown)


def test_a_waiting_customer_is_served_before_a_backlog_of_expiries() -> None:
    """The API answered 202 (Stripe was down); thirty payments reached their TTL meanwhile,
    three times the cycle's budget. The customer's intent is made in the next cycle."""
    world = World(dataclasses.replace(POLICY, interval_seconds=10))
    backlog = [world.payment(age=90_000) for _ in range(30)]
    waiting = world.payment(with_intent=False, age=60)
    report = world.cycle(rps=2, lead_sweep=False)  # budget: 10 calls
    assert world.repo.get(waiting.id).provider_payment_id is not None  # type: ignore[union-attr]
    assert report.deferred > 0 and sum(world.status(p) is Status.EXPIRED for p in backlog) > 0


def test_a_payment_without_intent_gets_one_once_its_request_is_gone() -> None:
    world = World()
    orphan = world.payment(with_intent=False, age=120)
    fresh = world.payment(with_intent=False, age=1)
    report = world.cycle(lead_sweep=False)
    assert report.created == 1
    assert len(world.stripe.intents_for(orphan.id)) == 1
    assert world.stripe.intents_for(fresh.id) == [], "a young payment is left to its API request"
    world.now += 600
    world.cycle(lead_sweep=False)
    assert len(world.stripe.intents_for(orphan.id)) == 1


def test_each_payment_is_retrieved_once_when_its_age_passes_the_stale_period() -> None:
    world = World()
    world.stripe.lists_intents_by_created = False  # one by one, as with the local stand-in
    lost = world.payment(age=3_900)  # passed 1 h within the last interval
    world.stripe.succeed(world.intent_of(lost))
    world.stripe.events.clear()  # the event was lost
    quiet = world.payment(age=3_900)
    young = world.payment(age=1_000)
    report = world.cycle(lead_sweep=False)
    assert world.status(lost) is Status.SUCCEEDED
    assert report.retrieved == 2 and report.resolved == 1
    later = 0
    for _ in range(10):  # the next 100 minutes: only `young` passes 1 h, once
        world.now += 600
        world.ages = {pid: age + 600 for pid, age in world.ages.items()}
        later += world.cycle(lead_sweep=False).retrieved
    assert later == 1
    assert world.status(quiet) is Status.PENDING and world.status(young) is Status.PENDING


def test_checks_over_the_budget_are_deferred_and_come_first_next_cycle() -> None:
    world = World(dataclasses.replace(POLICY, interval_seconds=10))
    world.stripe.lists_intents_by_created = False  # one by one, as with the local stand-in
    payments = [world.payment(age=3_605) for _ in range(30)]
    first = world.cycle(rps=2, lead_sweep=False)  # budget: 2/s x 10 s / 2 = 10
    assert (first.retrieved, first.deferred) == (10, 20)
    world.now += 10
    world.ages = {pid: age + 10 for pid, age in world.ages.items()}
    second = world.cycle(rps=2, lead_sweep=False)
    assert (second.retrieved, second.deferred) == (10, 10)
    assert len(payments) == 30


def test_a_final_status_is_never_overwritten() -> None:
    world = World()
    payment = world.payment()
    world.repo.transition(payment.id, StatusChange(Status.CANCELED, Source.OPERATOR))
    world.stripe.succeed(world.intent_of(payment))  # Stripe disagrees
    world.cycle()
    assert world.status(payment) is Status.CANCELED


def test_database_errors_end_the_cycle_without_raising() -> None:
    world = World()
    for _ in range(8):
        world.payment(age=90_000)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("connection to the primary lost")

    world.repo.transition = broken  # type: ignore[method-assign, assignment]
    report = world.cycle(lead_sweep=False)
    assert report.aborted is not None and report.errors == 5


def test_stale_intents_are_listed_by_the_leader_a_hundred_per_call() -> None:
    world = World()
    stale = [world.payment(age=3_900 + i) for i in range(250)]
    for p in stale:  # Stripe made each intent when its payment was stored
        world.stripe.intents[world.intent_of(p)].created = int(world.now - world.ages[p.id])
    lost = stale[7]
    world.stripe.succeed(world.intent_of(lost))
    world.stripe.events.clear()  # the event was lost
    young = world.payment(age=1_000)
    world.stripe.calls = 0
    report = world.cycle()
    assert world.status(lost) is Status.SUCCEEDED
    assert world.status(young) is Status.PENDING
    assert report.sweep is not None
    assert (report.sweep.stale_open, report.sweep.stale_applied) == (250, 1)
    # One page of (no) events, then 250 intents listed 100 a call: 4 calls, not 250.
    assert report.sweep.intent_pages == 3 and world.stripe.calls == 4
    assert (report.stale, report.retrieved) == (0, 0)
    # A worker that does not lead retrieves none of its own: the leader listed them all.
    other = world.cycle(lead_sweep=False)
    assert (other.stale, other.retrieved, other.stripe_calls) == (0, 0, 0)


def test_every_intent_is_listed_once_when_its_own_age_passes_the_stale_period() -> None:
    world = World()
    # The payment is old, but its intent was made just now (an abandoned creation finished).
    late = world.payment(age=3_950)
    world.stripe.succeed(world.intent_of(late))
    world.stripe.events.clear()
    looked = 0
    for _ in range(8):  # 80 minutes of cycles, 10 minutes apart
        report = world.cycle()
        assert report.sweep is not None
        looked += report.sweep.stale_open
        world.now += 600
        world.ages = {pid: age + 600 for pid, age in world.ages.items()}
    assert looked == 1
    assert world.status(late) is Status.SUCCEEDED


def test_checks_wait_on_stripe_side_by_side() -> None:
    """Expiries are canceled at Stripe several at a time: four cancels meet at a barrier that
    one-at-a-time checks could never pass (each would wait for the others, then time out)."""
    import threading

    world = World(dataclasses.replace(POLICY, concurrency=4))
    payments = [world.payment(age=90_000) for _ in range(8)]
    barrier = threading.Barrier(4, timeout=10)
    cancel = world.stripe.cancel_intent

    def cancel_together(intent_id: str, **kwargs):  # type: ignore[no-untyped-def]
        barrier.wait()
        return cancel(intent_id, **kwargs)

    world.stripe.cancel_intent = cancel_together  # type: ignore[method-assign]
    report = world.cycle(lead_sweep=False)
    assert (report.expired, report.errors) == (8, 0)
    assert all(world.status(p) is Status.EXPIRED for p in payments)


def test_each_expiry_attempt_is_a_new_cancel_at_stripe_not_a_replay_of_the_refusal() -> None:
    """Stripe answers a cancel key it has seen with its first answer, a refusal included, for
    24 hours. The first expiry is refused (the intent is processing); when the intent is back
    waiting for the customer, the next attempt cancels it with a key of its own."""
    world = World()  # honours idempotency keys as Stripe does
    payment = world.payment(age=90_000)
    intent_id = world.intent_of(payment)
    world.stripe.intents[intent_id].status = "processing"
    first = world.cycle(lead_sweep=False)
    assert first.errors == 1 and world.status(payment) is Status.PENDING
    world.stripe.intents[intent_id].status = "requires_payment_method"  # the charge failed
    world.now += 61
    world.cycle(lead_sweep=False)
    assert world.status(payment) is Status.EXPIRED
    assert world.stripe.cancel_keys == [
        f"pi-cancel-{payment.id}-abandoned-1",
        f"pi-cancel-{payment.id}-abandoned-2",
    ]
    intent = world.stripe.intents[intent_id]
    assert (intent.status, intent.cancellation_reason) == ("canceled", "abandoned")


def test_a_customers_refused_cancel_does_not_stand_in_for_the_expiry() -> None:
    """The customer's cancel (reason requested_by_customer) was refused while the intent was
    processing; the expiry's cancel is another request with another key, and goes through."""
    world = World()
    payment = world.payment(age=90_000)
    intent_id = world.intent_of(payment)
    world.stripe.intents[intent_id].status = "processing"
    version = world.repo.get(payment.id).version  # type: ignore[union-attr]
    with pytest.raises(TransitionRefused):
        world.service.cancel(payment.id)
    world.stripe.intents[intent_id].status = "requires_payment_method"
    world.cycle(lead_sweep=False)
    assert world.status(payment) is Status.EXPIRED
    assert world.stripe.cancel_keys == [
        f"pi-cancel-{payment.id}-requested_by_customer-{version}",
        f"pi-cancel-{payment.id}-abandoned-1",
    ]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (None, Status.CANCELED),  # canceled from the dashboard: no reason
        ("duplicate", Status.CANCELED),
        ("requested_by_customer", Status.CANCELED),
        ("abandoned", Status.EXPIRED),  # an earlier expiry of ours whose answer was lost
    ],
)
def test_past_the_ttl_an_intent_canceled_elsewhere_is_recorded_by_its_reason(
    reason: str | None, expected: Status
) -> None:
    """Only our expiry's cancel (reason `abandoned`) makes a payment `expired`; an intent
    someone else canceled, with any other reason or none, makes it `canceled`."""
    world = World()
    payment = world.payment(age=90_000)
    world.stripe.cancel_elsewhere(world.intent_of(payment), reason)
    world.stripe.events.clear()  # its webhook and event were lost
    world.cycle(lead_sweep=False)
    assert world.status(payment) is expected


@pytest.mark.parametrize(
    ("reason", "expected"),
    [(None, Status.CANCELED), ("abandoned", Status.EXPIRED), ("fraudulent", Status.CANCELED)],
)
def test_a_swept_cancel_is_recorded_by_its_reason(reason: str | None, expected: Status) -> None:
    world = World()
    payment = world.payment()
    world.stripe.cancel_elsewhere(world.intent_of(payment), reason)
    world.cycle()
    assert world.status(payment) is expected


def expiry_attempts(world: World, payment: Payment, attempts: int) -> list[Status]:
    """The payment's status after each of ``attempts`` expiry checks, each run when its retry
    is due."""
    statuses = []
    for _ in range(attempts):
        retry = world.reconciler.retries.get(payment.id)
        if retry is not None:
            world.now = max(world.now, retry.next_at)
        world.cycle(lead_sweep=False)
        statuses.append(world.status(payment))
    return statuses


UNKNOWN = dataclasses.replace(POLICY, ttl_seconds=1_000, retry_after_seconds=100)


def test_a_payment_whose_intent_stripe_does_not_know_expires_once_that_answer_held() -> None:
    """Past the TTL, Stripe answers 404 for the intent, every time. Waits of 100, 200, 400,
    800 s, then the cap (the TTL, 1,000 s): the sixth attempt is the first after a capped
    wait, 2,500 s (more than one TTL) into six answers in a row, and expires it, saying why."""
    world = World(UNKNOWN)
    payment = world.payment(age=1_100)
    del world.stripe.intents[world.intent_of(payment)]
    pending, expired = Status.PENDING, Status.EXPIRED
    assert expiry_attempts(world, payment, 6) == [pending] * 5 + [expired]
    stored = world.repo.get(payment.id)
    assert stored is not None and stored.failure_code == "intent_unknown_to_stripe"
    assert world.reconciler.retries.get(payment.id) is None


def test_a_timeout_or_a_5xx_is_never_taken_for_an_unknown_intent() -> None:
    """Five 404s, then a 503 (no answer about the intent): the run of 404s starts again, and
    the payment expires only after three more, spanning a TTL, at the ninth attempt."""
    world = World(UNKNOWN)
    payment = world.payment(age=1_100)
    del world.stripe.intents[world.intent_of(payment)]
    assert expiry_attempts(world, payment, 5) == [Status.PENDING] * 5
    world.stripe.fail_next = 1  # the next cancel: 503
    assert expiry_attempts(world, payment, 1) == [Status.PENDING]
    assert expiry_attempts(world, payment, 3) == [Status.PENDING] * 2 + [Status.EXPIRED]


def test_a_payment_stripe_never_answers_for_is_never_expired_on_that_silence() -> None:
    world = World(UNKNOWN)
    payment = world.payment(age=1_100)
    world.stripe.fail_with = RetryableError("Stripe: 503")
    assert expiry_attempts(world, payment, 12) == [Status.PENDING] * 12


def test_foreign_intents_are_counted_on_every_path() -> None:
    """Refused as not the payment's own, and counted in the cycle's report: a swept event
    about another intent naming the payment, a retrieved intent whose amount was changed at
    Stripe, and an expiry whose intent was changed the same way."""
    world = World()
    world.stripe.lists_intents_by_created = False  # stale payments are retrieved one by one
    swept = world.payment()
    stranger = world.stripe.create_intent(dataclasses.replace(swept, id=uuid.uuid4()))
    world.stripe.intents[stranger.id].metadata["payment_id"] = str(swept.id)
    world.stripe.succeed(stranger.id)
    retrieved = world.payment(age=3_900)  # passed the stale age within the last interval
    world.stripe.intents[world.intent_of(retrieved)].amount = 1
    world.stripe.succeed(world.intent_of(retrieved))
    world.stripe.events = [e for e in world.stripe.events if e.intent.id == stranger.id]  # type: ignore[union-attr]
    expiring = world.payment(age=90_000)
    world.stripe.intents[world.intent_of(expiring)].amount = 5
    report = world.cycle()
    assert report.sweep is not None and report.sweep.foreign == 1
    assert (report.retrieved, report.foreign) == (1, 3)
    assert [world.status(p) for p in (swept, retrieved, expiring)] == [Status.PENDING] * 3
    assert world.reconciler.retries[expiring.id].attempts == 1, "the expiry is tried again"
