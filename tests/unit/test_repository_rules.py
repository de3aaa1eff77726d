"""The in-memory repository obeys the payment status rules exactly, as written out here (the SQL
one is checked against the same matrix in tests/integration/test_api_repository.py)."""

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from payments.domain.errors import InvalidRequest
from payments.domain.money import Money
from payments.domain.status import Source, Status
from payments.ports import NewPayment, PageCursor, StatusChange, TransitionOutcome
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
A, N, R = TransitionOutcome.APPLIED, TransitionOutcome.NOOP, TransitionOutcome.REFUSED
# The rules, spelled out: pending may become anything final; failed may still succeed, be
# canceled or expire (a later attempt on the same intent); succeeded, canceled, expired are final.
RULES = {
    #                  pending succeeded failed canceled expired
    Status.PENDING: dict(zip(Status, [N, A, A, A, A], strict=True)),
    Status.SUCCEEDED: dict(zip(Status, [R, N, R, R, R], strict=True)),
    Status.FAILED: dict(zip(Status, [R, A, N, A, A], strict=True)),
    Status.CANCELED: dict(zip(Status, [R, R, R, N, R], strict=True)),
    Status.EXPIRED: dict(zip(Status, [R, R, R, R, N], strict=True)),
}


def expected(current: Status, to: Status) -> TransitionOutcome:
    return RULES[current][to]


@pytest.mark.parametrize(("current", "to"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_fake_follows_the_transition_table(current: Status, to: Status) -> None:
    repo = FakePaymentRepository()
    payment = repo.insert_pending(NewPayment(uuid4(), "k", "h", Money(10, "usd"))).payment
    for step in PATH_TO[current]:
        assert repo.transition(payment.id, StatusChange(step, Source.API)).applied
    before = len(repo.events(payment.id))
    result = repo.transition(payment.id, StatusChange(to, Source.WEBHOOK))
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
