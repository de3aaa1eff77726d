"""The SQL repository against the real PostgreSQL: guarded transitions, audit, inbox, reads."""

from __future__ import annotations

import threading
from uuid import UUID, uuid4

import pytest
from psycopg_pool import ConnectionPool

from payments.adapters.postgres.pools import make_pool
from payments.adapters.postgres.repository import PostgresRepository
from payments.domain.money import Money
from payments.domain.status import Source, Status
from payments.ports import NewPayment, PageCursor, TransitionOutcome
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


def test_guarded_transitions_and_exact_audit(repo: PostgresRepository) -> None:
    pid = new_payment(repo)
    failed = repo.transition(
        pid,
        Status.FAILED,
        source=Source.WEBHOOK,
        provider_event_id="e1",
        failure_code="card_declined",
        failure_message="declined",
    )
    assert failed.outcome is TransitionOutcome.APPLIED
    assert failed.previous_status is Status.PENDING
    assert failed.payment is not None and failed.payment.version == 2
    noop = repo.transition(
        pid, Status.FAILED, source=Source.RECONCILER, provider_status="requires_payment_method"
    )
    assert noop.outcome is TransitionOutcome.NOOP
    assert noop.payment is not None
    assert noop.payment.provider_status == "requires_payment_method"
    won = repo.transition(pid, Status.SUCCEEDED, source=Source.WEBHOOK, provider_event_id="e2")
    assert won.outcome is TransitionOutcome.APPLIED
    refused = repo.transition(pid, Status.FAILED, source=Source.WEBHOOK, provider_event_id="e0")
    assert refused.outcome is TransitionOutcome.REFUSED
    assert refused.payment is not None and refused.payment.status is Status.SUCCEEDED
    assert repo.transition(uuid4(), Status.FAILED, source=Source.API).outcome is (
        TransitionOutcome.NOT_FOUND
    )
    trail = [
        (e.from_status, e.to_status, e.source, e.provider_event_id, e.version)
        for e in repo.events(pid)
    ]
    assert trail == [
        (Status.PENDING, Status.FAILED, Source.WEBHOOK, "e1", 2),
        (Status.FAILED, Status.SUCCEEDED, Source.WEBHOOK, "e2", 4),
    ]


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
            outcomes.append(repo.transition(pid, to, source=Source.WEBHOOK).outcome)

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
    assert repo.claim_creation(pid, lease_seconds=60) is None  # the inserter holds it
    repo.release_creation(pid)
    claimed = repo.claim_creation(pid, lease_seconds=60)
    assert claimed is not None
    assert repo.claim_creation(pid, lease_seconds=60) is None
    attached = repo.attach_intent(
        pid,
        provider_payment_id=f"pi_{pid.hex}",
        provider_status="requires_payment_method",
        client_secret="cs",
    )
    assert attached.provider_payment_id == f"pi_{pid.hex}"
    again = repo.attach_intent(
        pid,
        provider_payment_id=f"pi_{pid.hex}",
        provider_status="requires_payment_method",
        client_secret=None,
    )
    assert again.client_secret == "cs"
    with pytest.raises(Exception, match="already has intent"):
        repo.attach_intent(
            pid, provider_payment_id="pi_other", provider_status="x", client_secret=None
        )
    assert repo.claim_creation(pid, lease_seconds=0) is None
    assert repo.get_by_provider_id(f"pi_{pid.hex}") == repo.get(pid)


def test_webhook_inbox_dedupes_in_one_transaction(repo: PostgresRepository) -> None:
    pid = new_payment(repo)
    event_id = f"evt_{uuid4().hex}"
    kwargs = dict(
        event_id=event_id,
        event_type="payment_intent.succeeded",
        payload={"id": event_id},
        payment_id=pid,
        provider_payment_id=None,
        to=Status.SUCCEEDED,
        provider_status="succeeded",
    )
    first = repo.apply_webhook(**kwargs)  # type: ignore[arg-type]
    second = repo.apply_webhook(**kwargs)  # type: ignore[arg-type]
    assert (first.duplicate, first.outcome) == (False, "applied")
    assert (second.duplicate, second.outcome) == (True, "duplicate")
    assert len(repo.events(pid)) == 1


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


def test_reads_come_from_a_replica_and_fall_back_to_the_primary(
    repo: PostgresRepository, s: Settings
) -> None:
    replicas = make_pool(s.database_read_url, s, name="test-replicas", wait=True)
    reader = PostgresRepository(repo.pool, replicas)
    try:
        pid = new_payment(repo)
        support_api.wait_for(lambda: _on_replica(replicas, pid), timeout=30)
        with ReplayPaused(s):
            # The primary moves on; the replicas do not apply it yet.
            assert repo.transition(pid, Status.FAILED, source=Source.API).applied
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
    finally:
        replicas.close()
    # No replica answers at all: the primary does.
    dead = make_pool("postgresql://payments:payments@127.0.0.1:1/payments", s, name="dead")
    try:
        broken = PostgresRepository(repo.pool, dead, read_timeout_seconds=0.5)
        assert broken.get_for_read(pid) == repo.get(pid)
    finally:
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


@pytest.mark.parametrize(("current", "to"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_sql_follows_the_transition_table(
    repo: PostgresRepository, current: Status, to: Status
) -> None:
    from payments.domain.status import TRANSITIONS

    pid = new_payment(repo)
    for step in PATH_TO[current]:
        assert repo.transition(pid, step, source=Source.API).applied
    before = len(repo.events(pid))
    result = repo.transition(pid, to, source=Source.WEBHOOK)
    if current is to:
        assert result.outcome is TransitionOutcome.NOOP
    elif to in TRANSITIONS[current]:
        assert result.outcome is TransitionOutcome.APPLIED
        assert result.previous_status is current
    else:
        assert result.outcome is TransitionOutcome.REFUSED
    stored = repo.get(pid)
    assert stored is not None
    assert stored.status is (to if result.applied else current)
    assert len(repo.events(pid)) == before + (1 if result.applied else 0)
