"""The reconciliation cycle over fakes of the repository and of Stripe (counting calls)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import replace

import pytest

from payments.domain.errors import RetryableError
from payments.domain.money import Money
from payments.domain.payment import Payment
from payments.domain.status import Source, Status
from payments.ports import NewPayment
from payments.reconcile import EVENT_TYPES, PendingEntry, ReconcilePolicy, Reconciler, cursor_name
from payments.service import PaymentService
from tests.fakes import FakePaymentRepository, FakeStripeGateway

POLICY = ReconcilePolicy(interval_seconds=600, stale_after_seconds=3600, ttl_seconds=86400)


class World:
    def __init__(self, policy: ReconcilePolicy = POLICY) -> None:
        self.repo = FakePaymentRepository()
        self.stripe = FakeStripeGateway()
        self.service = PaymentService(self.repo, self.stripe)
        self.now = time.time()
        self.reconciler = Reconciler(
            self.repo,
            self.stripe,
            self.service,
            policy,
            calls=lambda: self.stripe.calls,
            clock=lambda: self.now,
        )

    def payment(self, *, with_intent: bool = True) -> Payment:
        result = self.repo.insert_pending(
            NewPayment(
                id=uuid.uuid4(),
                idempotency_key=f"k-{uuid.uuid4()}",
                request_hash="h",
                money=Money(1000, "usd"),
            )
        )
        payment = result.payment
        if with_intent:
            intent = self.stripe.create_intent(payment)
            payment = self.repo.attach_intent(
                payment.id,
                provider_payment_id=intent.id,
                provider_status=intent.status,
                client_secret=None,
            )
        else:
            self.repo.claims[payment.id] = None  # the API request that inserted it is gone
        return payment

    def entry(self, payment: Payment, *, age: float = 60.0, partition: int = 0) -> PendingEntry:
        current = self.repo.get(payment.id) or payment
        return PendingEntry(
            payment_id=payment.id,
            partition=partition,
            version=current.version,
            created_at=self.now - age,
            provider_payment_id=current.provider_payment_id,
        )

    def status(self, payment: Payment) -> Status:
        stored = self.repo.get(payment.id)
        assert stored is not None
        return stored.status


def test_events_resolve_payments_at_a_cost_independent_of_the_pending_count() -> None:
    world = World()
    payments = [world.payment() for _ in range(300)]
    changed = payments[:3]
    world.stripe.succeed(changed[0].provider_payment_id or "")
    world.stripe.decline(changed[1].provider_payment_id or "")
    world.stripe.cancel_intent(changed[2].provider_payment_id or "")
    world.stripe.calls = 0

    report = world.reconciler.run([world.entry(p) for p in payments], [0], rps=20)

    assert [world.status(p) for p in changed] == [Status.SUCCEEDED, Status.FAILED, Status.CANCELED]
    assert all(world.status(p) is Status.PENDING for p in payments[3:])
    assert report.resolved == 3 and report.retrieved == 0
    # One events.list per type, no matter how many payments are pending.
    assert report.stripe_calls == world.stripe.calls == len(EVENT_TYPES)
    assert report.pending == 300 and len(report.owned_ids) == 300


def test_only_partitions_this_worker_owns_are_reconciled() -> None:
    world = World()
    mine, theirs = world.payment(), world.payment()
    world.stripe.succeed(mine.provider_payment_id or "")
    world.stripe.succeed(theirs.provider_payment_id or "")
    report = world.reconciler.run(
        [world.entry(mine, partition=1), world.entry(theirs, partition=2)], [1], rps=20
    )
    assert world.status(mine) is Status.SUCCEEDED
    assert world.status(theirs) is Status.PENDING
    assert report.owned_ids == [str(mine.id)]


def test_the_event_cursor_is_durable_per_partition_and_moves_forward() -> None:
    world = World()
    payment = world.payment()
    world.stripe.succeed(payment.provider_payment_id or "")
    world.reconciler.run([world.entry(payment)], [0, 3], rps=20)
    first = world.repo.get_cursor(cursor_name(0))
    assert first is not None and first == world.repo.get_cursor(cursor_name(3))
    assert int(first) >= world.stripe.events[-1].created


def test_a_failed_sweep_keeps_the_cursor_and_counts_the_error() -> None:
    world = World()
    payment = world.payment()
    world.repo.set_cursor(cursor_name(0), "1000")
    world.stripe.fail_with = RetryableError("Stripe: 503")
    report = world.reconciler.run([world.entry(payment)], [0], rps=20)
    assert report.errors >= 1
    assert world.repo.get_cursor(cursor_name(0)) == "1000"


def test_a_payment_without_intent_gets_one_with_its_idempotency_key() -> None:
    world = World()
    orphan, fresh = world.payment(with_intent=False), world.payment(with_intent=False)
    report = world.reconciler.run(
        [world.entry(orphan, age=120), world.entry(fresh, age=1)], [0], rps=20
    )
    assert report.created == 1
    assert len(world.stripe.intents_for(orphan.id)) == 1
    assert world.stripe.intents_for(fresh.id) == [], "a young payment is left to its API request"
    stored = world.repo.get(orphan.id)
    assert stored is not None and stored.provider_payment_id is not None
    # Next cycle: nothing to create again.
    world.reconciler.run([world.entry(orphan, age=180)], [0], rps=20)
    assert len(world.stripe.intents_for(orphan.id)) == 1


def test_stale_payments_are_retrieved_as_their_age_doubles_past_the_stale_period() -> None:
    world = World()
    stale = world.payment()
    world.stripe.succeed(stale.provider_payment_id or "")
    world.stripe.events.clear()  # the event was lost (older than the sweep window)
    quiet = world.payment()
    entries = [world.entry(stale, age=7200), world.entry(quiet, age=7200)]  # crossed 2 h
    report = world.reconciler.run(entries, [0], rps=20)
    assert world.status(stale) is Status.SUCCEEDED
    assert report.retrieved == 2 and report.resolved == 1
    for age in range(7800, 14400, 600):  # every cycle until the 4 h checkpoint: nothing
        world.now += 600
        assert world.reconciler.run([world.entry(quiet, age=age)], [0], rps=20).retrieved == 0
    world.now += 600
    assert world.reconciler.run([world.entry(quiet, age=14400)], [0], rps=20).retrieved == 1


def test_a_restarted_reconciler_does_not_retrieve_every_old_payment_at_once() -> None:
    world = World()
    between_checkpoints = [world.entry(world.payment(), age=5000) for _ in range(20)]
    report = world.reconciler.run(between_checkpoints, [0], rps=20)
    assert report.retrieved == 0


def test_checks_deferred_by_the_budget_come_first_next_cycle() -> None:
    world = World(replace_policy(interval_seconds=10))
    payments = [world.payment() for _ in range(30)]
    first = world.reconciler.run([world.entry(p, age=3600) for p in payments], [0], rps=2)
    assert (first.retrieved, first.deferred) == (10, 20)
    world.now += 10  # the checkpoint is now out of the window; the owed checks still happen
    second = world.reconciler.run([world.entry(p, age=3610) for p in payments], [0], rps=2)
    assert (second.retrieved, second.deferred) == (10, 10)
    checked = set(first.checked_ids) | set(second.checked_ids)
    assert len(checked) == 20


def test_individual_checks_stay_within_the_cycle_budget() -> None:
    world = World(replace_policy(interval_seconds=10))
    payments = [world.payment() for _ in range(30)]
    report = world.reconciler.run([world.entry(p, age=3600) for p in payments], [0], rps=2)
    assert report.retrieved == world.reconciler.individual_budget(2) == 10
    assert report.deferred == 20


def replace_policy(**changes: float) -> ReconcilePolicy:
    return dataclasses.replace(POLICY, **changes)


@pytest.mark.parametrize("stripe_final", [False, True])
def test_payments_past_the_ttl_expire_unless_stripe_has_a_final_status(
    stripe_final: bool,
) -> None:
    world = World()
    payment = world.payment()
    if stripe_final:
        world.stripe.succeed(payment.provider_payment_id or "")
        world.stripe.events.clear()
    report = world.reconciler.run([world.entry(payment, age=90000)], [0], rps=20)
    intent = world.stripe.retrieve_intent(payment.provider_payment_id or "")
    if stripe_final:
        assert world.status(payment) is Status.SUCCEEDED and intent.status == "succeeded"
    else:
        assert world.status(payment) is Status.EXPIRED and report.expired == 1
        assert intent.status == "canceled", "the intent is canceled so it can never be paid"


def test_a_final_status_is_never_overwritten() -> None:
    world = World()
    payment = world.payment()
    world.repo.transition(payment.id, Status.CANCELED, source=Source.OPERATOR)
    world.stripe.succeed(payment.provider_payment_id or "")  # Stripe disagrees
    entry = replace(world.entry(payment), version=1)
    world.reconciler.run([entry], [0], rps=20)
    assert world.status(payment) is Status.CANCELED
