"""The in-memory repository obeys the status table exactly (the SQL one is checked against the
same matrix in tests/integration/test_api_repository.py)."""

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from payments.domain.errors import InvalidRequest
from payments.domain.money import Money
from payments.domain.status import TRANSITIONS, Source, Status
from payments.ports import NewPayment, PageCursor, TransitionOutcome
from tests.fakes import FakePaymentRepository

# A path from pending to each status, using allowed steps only.
PATH_TO = {
    Status.PENDING: [],
    Status.SUCCEEDED: [Status.SUCCEEDED],
    Status.FAILED: [Status.FAILED],
    Status.CANCELED: [Status.CANCELED],
    Status.EXPIRED: [Status.EXPIRED],
}
PAIRS = [(a, b) for a in Status for b in Status]


def expected(current: Status, to: Status) -> TransitionOutcome:
    if current is to:
        return TransitionOutcome.NOOP
    if to in TRANSITIONS[current]:
        return TransitionOutcome.APPLIED
    return TransitionOutcome.REFUSED


@pytest.mark.parametrize(("current", "to"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_fake_follows_the_transition_table(current: Status, to: Status) -> None:
    repo = FakePaymentRepository()
    payment = repo.insert_pending(NewPayment(uuid4(), "k", "h", Money(10, "usd"))).payment
    for step in PATH_TO[current]:
        assert repo.transition(payment.id, step, source=Source.API).applied
    before = len(repo.events(payment.id))
    result = repo.transition(payment.id, to, source=Source.WEBHOOK)
    assert result.outcome is expected(current, to)
    stored = repo.get(payment.id)
    assert stored is not None
    assert stored.status is (to if result.applied else current)
    assert len(repo.events(payment.id)) == before + (1 if result.applied else 0)


def test_cursor_round_trip_and_refusal() -> None:
    cursor = PageCursor(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), uuid4())
    assert PageCursor.decode(cursor.encode()) == cursor
    with pytest.raises(InvalidRequest) as refused:
        PageCursor.decode("not-a-cursor")
    assert refused.value.field == "after"
