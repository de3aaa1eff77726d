"""The SQL repository against the real PostgreSQL: guarded transitions, audit, inbox, reads."""

from __future__ import annotations

import threading
from uuid import UUID, uuid4

import pytest
from psycopg_pool import ConnectionPool

from payments.adapters.postgres.pools import make_pool
from payments.adapters.postgres.repository import PostgresRepository
from payments.domain.errors import Conflict
from payments.domain.money import Money
from payments.domain.status import Source, Status
from payments.ports import (
    Intent,
    NewPayment,
    PageCursor,
    ProviderEvent,
    Retry,
    StatusChange,
    TransitionOutcome,
)
from payments.settings import Settings
from tests import support_api
from tests.stack_support import ReplayPaused

pytestmark = pytest.mark.integration


def new_payment(repo: PostgresRepository, amount: int = 1000) -> UUID:
    result = repo.insert_pending(
        NewPayment(uuid4(), f"repo-{uuid4()}", "hash", Money(amount, "usd"), metadata={"a": "b"})
    )
    assert result.created
    return result.payment.id


def test_insert_is_idempotent_per_key(repo: PostgresRepository) -> None:
    key = f"repo-{uuid4()}"
    first = repo.insert_pending(NewPayment(uuid4(), key, "h1", Money(5, "usd")))
    second = repo.insert_pending(NewPayment(uuid4(), key, "h2", Money(6, "usd")))
    assert first.created and not second.created
    assert second.payment.id == first.payment.id
    assert second.payment.request_hash == "h1"
    assert second.creation_claimed_at is not None


def intent(pid: UUID, intent_id: str, status: str, amount: int = 1000, **extra: object) -> Intent:
    fields: dict[str, object] = {
        "id": intent_id,
        "status": status,
        "amount": amount,
        "currency": "usd",
        "client_secret": None,
        "payment_id": str(pid),
        "failure_code": None,
        "failure_message": None,
        "created": 0,
        **extra,
    }
    return Intent(**fields)  # type: ignore[arg-type]


def test_guarded_transitions_and_exact_audit(repo: PostgresRepository) -> None:
    pid = new_payment(repo)
    own = f"pi_{pid.hex}"
    declined = intent(pid, own, "requires_payment_method", failure_code="card_declined")
    failed = repo.transition(
        pid,
        StatusChange(Status.FAILED, Source.WEBHOOK, declined, "e1", "card_declined", "declined"),
    )
    assert failed.outcome is TransitionOutcome.APPLIED
    assert failed.previous_status is Status.PENDING
    assert failed.payment is not None and failed.payment.version == 2
    assert failed.payment.provider_payment_id == own, "the intent made for it is attached"
    again = intent(pid, own, "requires_payment_method", failure_code="card_declined")
    noop = repo.transition(pid, StatusChange(Status.FAILED, Source.RECONCILER, again))
    assert noop.outcome is TransitionOutcome.NOOP
    paid = intent(pid, own, "succeeded")
    won = repo.transition(pid, StatusChange(Status.SUCCEEDED, Source.WEBHOOK, paid, "e2"))
    assert won.outcome is TransitionOutcome.APPLIED
    late = repo.transition(pid, StatusChange(Status.FAILED, Source.WEBHOOK, declined, "e0"))
    assert late.outcome is TransitionOutcome.REFUSED
    assert late.payment is not None and late.payment.status is Status.SUCCEEDED
    missing = repo.transition(uuid4(), StatusChange(Status.FAILED, Source.API))
    assert missing.outcome is TransitionOutcome.NOT_FOUND
    trail = [
        (e.from_status, e.to_status, e.source, e.provider_event_id, e.version)
        for e in repo.events(pid)
    ]
    assert trail == [
        (Status.PENDING, Status.FAILED, Source.WEBHOOK, "e1", 2),
        (Status.FAILED, Status.SUCCEEDED, Source.WEBHOOK, "e2", 3),
    ]


def test_only_the_payments_own_intent_moves_it_in_sql(repo: PostgresRepository) -> None:
    """The ownership rule is in the UPDATE's WHERE clause, not only in Python."""
    pid = new_payment(repo)
    own = f"pi_{pid.hex}"
    repo.release_creation(pid)
    attached = repo.attach_intent(pid, intent(pid, own, "requires_payment_method"))
    assert attached.provider_payment_id == own
    foreign = repo.transition(
        pid, StatusChange(Status.SUCCEEDED, Source.WEBHOOK, intent(pid, "pi_other", "succeeded"))
    )
    assert foreign.outcome is TransitionOutcome.FOREIGN_INTENT
    assert "pi_other" in foreign.reason and own in foreign.reason
    other_money = repo.transition(
        pid, StatusChange(Status.SUCCEEDED, Source.WEBHOOK, intent(pid, own, "succeeded", 999))
    )
    assert other_money.outcome is TransitionOutcome.FOREIGN_INTENT
    stored = repo.get(pid)
    assert stored is not None and stored.status is Status.PENDING and repo.events(pid) == []

    fresh = new_payment(repo)  # no intent yet
    stranger = intent(fresh, "pi_stranger", "succeeded", 5)  # names it, other money
    refused = repo.transition(fresh, StatusChange(Status.SUCCEEDED, Source.WEBHOOK, stranger))
    assert refused.outcome is TransitionOutcome.FOREIGN_INTENT
    elsewhere = intent(uuid4(), "pi_elsewhere", "succeeded")  # names another payment
    refused = repo.transition(fresh, StatusChange(Status.SUCCEEDED, Source.WEBHOOK, elsewhere))
    assert refused.outcome is TransitionOutcome.FOREIGN_INTENT
    row = repo.get(fresh)
    assert row is not None and row.provider_payment_id is None and row.status is Status.PENDING


def test_racing_final_transitions_one_wins(repo: PostgresRepository) -> None:
    for _ in range(5):
        pid = new_payment(repo)
        outcomes: list[TransitionOutcome] = []
        barrier = threading.Barrier(6)

        def go(
            to: Status,
            pid: UUID = pid,
            outcomes: list[TransitionOutcome] = outcomes,
            barrier: threading.Barrier = barrier,
        ) -> None:
            barrier.wait()
            outcomes.append(repo.transition(pid, StatusChange(to, Source.WEBHOOK)).outcome)

        targets = [Status.SUCCEEDED, Status.CANCELED, Status.EXPIRED] * 2
        threads = [threading.Thread(target=go, args=(t,)) for t in targets]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes.count(TransitionOutcome.APPLIED) == 1
        assert len(repo.events(pid)) == 1


def test_intent_attach_and_creation_claim(repo: PostgresRepository) -> None:
    pid = new_payment(repo)
    own = f"pi_{pid.hex}"
    assert repo.claim_creation(pid, lease_seconds=60) is None  # the inserter holds it
    repo.release_creation(pid)
    claimed = repo.claim_creation(pid, lease_seconds=60)
    assert claimed is not None
    assert repo.claim_creation(pid, lease_seconds=60) is None
    made = intent(pid, own, "requires_payment_method", client_secret="cs")
    attached = repo.attach_intent(pid, made)
    assert attached.provider_payment_id == own
    again = repo.attach_intent(pid, intent(pid, own, "requires_payment_method"))
    assert again.client_secret == "cs"
    with pytest.raises(Conflict, match="not payment"):
        repo.attach_intent(pid, intent(pid, "pi_other", "requires_payment_method"))
    assert repo.claim_creation(pid, lease_seconds=0) is None
    assert repo.open_payments_by_intent([own]) == {own: repo.get(pid)}


def test_webhook_inbox_dedupes_in_one_transaction(repo: PostgresRepository) -> None:
    pid = new_payment(repo)
    event_id = f"evt_{uuid4().hex}"
    paid = intent(pid, f"pi_{pid.hex}", "succeeded")
    event = ProviderEvent(event_id, "payment_intent.succeeded", 1, paid)
    change = StatusChange(Status.SUCCEEDED, Source.WEBHOOK, paid, event_id)
    first = repo.apply_webhook(event, {"id": event_id}, change)
    second = repo.apply_webhook(event, {"id": event_id}, change)
    assert (first.duplicate, first.outcome) == (False, "applied")
    assert (second.duplicate, second.outcome) == (True, "duplicate")
    assert len(repo.events(pid)) == 1

    forged_id = f"evt_{uuid4().hex}"
    forged = ProviderEvent(
        forged_id, "payment_intent.succeeded", 1, intent(pid, "pi_x", "succeeded")
    )
    refused = repo.apply_webhook(
        forged, {"id": forged_id}, StatusChange(Status.SUCCEEDED, Source.WEBHOOK, forged.intent)
    )
    assert refused.outcome == "foreign_intent" and refused.reason
    kept = [w for w in repo.webhooks(pid) if w.event_id == forged_id]
    assert [(w.outcome, bool(w.reason)) for w in kept] == [("foreign_intent", True)]


def test_keyset_pages_and_cursors(repo: PostgresRepository, s: Settings) -> None:
    ids = {new_payment(repo, amount=77) for _ in range(5)}
    seen: list[UUID] = []
    after: PageCursor | None = None
    while True:
        page, after = repo.list_page(limit=3, after=after)
        seen += [p.id for p in page]
        if after is None:
            break
        assert PageCursor.decode(after.encode()) == after
    assert ids <= set(seen)
    assert len(seen) == len(set(seen))
    pending_only, _ = repo.list_page(status=Status.PENDING, limit=100)
    assert all(p.status is Status.PENDING for p in pending_only)
    name = f"cursor-{uuid4()}"
    assert repo.get_cursor(name) is None
    repo.set_cursor(name, "1")
    repo.set_cursor(name, "2")
    assert repo.get_cursor(name) == "2"


def test_failed_checks_are_kept_until_they_pass_or_are_long_forgotten(
    repo: PostgresRepository,
) -> None:
    failing, passing, forgotten = (new_payment(repo) for _ in range(3))
    now = 1_800_000_000.0
    unknown = "Stripe: no such PaymentIntent"
    repo.save_retry(failing, Retry(1, now + 60, unknown, unknown_since=now, unknown_attempts=1))
    repo.save_retry(failing, Retry(2, now + 120, unknown, unknown_since=now, unknown_attempts=2))
    repo.save_retry(passing, Retry(1, now + 60, "timeout"))
    repo.save_retry(forgotten, Retry(3, now - 90_000, "timeout"))
    repo.drop_retry(passing)
    kept = repo.load_retries(forget_before=now - 86_400)
    assert kept.get(failing) == Retry(2, now + 120, unknown, unknown_since=now, unknown_attempts=2)
    assert passing not in kept and forgotten not in kept
    assert forgotten not in repo.load_retries(forget_before=0.0), "forgotten for good"


def test_an_expiry_keeps_the_reason_it_gives(repo: PostgresRepository) -> None:
    payment_id = new_payment(repo)
    result = repo.transition(
        payment_id,
        StatusChange(
            Status.EXPIRED,
            Source.EXPIRY,
            failure_code="intent_unknown_to_stripe",
            failure_message="Stripe has no PaymentIntent pi_gone",
        ),
    )
    assert result.payment is not None and result.payment.status is Status.EXPIRED
    assert result.payment.failure_code == "intent_unknown_to_stripe"
    assert result.payment.failure_message == "Stripe has no PaymentIntent pi_gone"


def test_reads_come_from_a_replica_and_fall_back_to_the_primary(
    repo: PostgresRepository, s: Settings
) -> None:
    replicas = make_pool(s.database_read_url, s, name="test-replicas", wait=True)
    reader = PostgresRepository(repo.pool, replicas)
    dead = make_pool("postgresql://payments@127.0.0.1:1/payments", s, name="dead")
    try:
        pid = new_payment(repo)
        support_api.wait_for(lambda: _on_replica(replicas, pid), timeout=30)
        # The primary is unreachable here: the answer can only come from a replica.
        replica_only = PostgresRepository(dead, replicas, read_timeout_seconds=0.5)
        found = replica_only.get_for_read(pid)
        assert found is not None and found.id == pid
        with ReplayPaused(s):
            # The primary moves on; the replicas do not apply it yet.
            assert repo.transition(pid, StatusChange(Status.FAILED, Source.API)).applied
            primary = repo.get(pid)
            assert primary is not None and primary.status is Status.FAILED
            # So a read that answers "pending" was served by a replica, not the primary.
            seen = reader.get_for_read(pid)
            assert seen is not None and seen.status is Status.PENDING
            # A payment no replica has yet is read from the primary (the fallback).
            fresh = new_payment(repo)
            assert not _on_replica(replicas, fresh)
            fallback = reader.get_for_read(fresh)
            assert fallback is not None and fallback.id == fresh
        # Replay resumed: the replicas catch up and answer the new status.
        support_api.wait_for(
            lambda: (p := reader.get_for_read(pid)) is not None and p.status is Status.FAILED,
            timeout=30,
        )
        # No replica answers at all: the primary does.
        broken = PostgresRepository(repo.pool, dead, read_timeout_seconds=0.5)
        assert broken.get_for_read(pid) == repo.get(pid)
    finally:
        replicas.close()
        dead.close()


def _on_replica(pool: ConnectionPool, pid: UUID) -> bool:
    """Whether the replica the pool hands out has the row (and is a replica)."""
    with pool.connection() as conn:
        in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        row = conn.execute("SELECT 1 FROM payments WHERE id = %s", (pid,)).fetchone()
    assert in_recovery == (True,), "the read pool reached the primary, not a replica"
    return row is not None


PATH_TO = {
    Status.PENDING: [],
    Status.SUCCEEDED: [Status.SUCCEEDED],
    Status.FAILED: [Status.FAILED],
    Status.CANCELED: [Status.CANCELED],
    Status.EXPIRED: [Status.EXPIRED],
}
PAIRS = [(a, b) for a in Status for b in Status]
A, N, R = TransitionOutcome.APPLIED, TransitionOutcome.NOOP, TransitionOutcome.REFUSED
# Written out: pending may become anything final; failed may still succeed, be canceled or
# expire; succeeded, canceled and expired are final.
RULES = {
    #                  pending succeeded failed canceled expired
    Status.PENDING: dict(zip(Status, [N, A, A, A, A], strict=True)),
    Status.SUCCEEDED: dict(zip(Status, [R, N, R, R, R], strict=True)),
    Status.FAILED: dict(zip(Status, [R, A, N, A, A], strict=True)),
    Status.CANCELED: dict(zip(Status, [R, R, R, N, R], strict=True)),
    Status.EXPIRED: dict(zip(Status, [R, R, R, R, N], strict=True)),
}


@pytest.mark.parametrize(("current", "to"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_sql_follows_the_status_rules(
    repo: PostgresRepository, current: Status, to: Status
) -> None:
    pid = new_payment(repo)
    for step in PATH_TO[current]:
        assert repo.transition(pid, StatusChange(step, Source.API)).applied
    before = len(repo.events(pid))
    result = repo.transition(pid, StatusChange(to, Source.WEBHOOK))
    assert result.outcome is RULES[current][to]
    if result.applied:
        assert result.previous_status is current
    stored = repo.get(pid)
    assert stored is not None
    assert stored.status is (to if result.applied else current)
    assert len(repo.events(pid)) == before + (1 if result.applied else 0)
