"""The status rules every writer (API, webhook, reconciler, expiry) relies on."""

from __future__ import annotations

import itertools

import pytest

from payments.domain.intents import intent_outcome
from payments.domain.status import TRANSITIONS, Status, allowed_from

FINAL = {Status.SUCCEEDED, Status.CANCELED, Status.EXPIRED}


@pytest.mark.parametrize("final", sorted(FINAL))
def test_final_statuses_never_move(final: Status) -> None:
    assert final.is_final
    for target in Status:
        assert final not in allowed_from(target), f"{final} -> {target} must be refused"


def test_pending_can_reach_every_outcome() -> None:
    assert {s for s in Status if Status.PENDING in allowed_from(s)} == {
        Status.SUCCEEDED,
        Status.FAILED,
        Status.CANCELED,
        Status.EXPIRED,
    }


def test_failed_may_still_succeed_on_a_later_attempt() -> None:
    assert Status.FAILED in allowed_from(Status.SUCCEEDED)
    assert Status.FAILED not in allowed_from(Status.PENDING)
    assert not Status.FAILED.is_final


def test_writing_the_current_status_is_not_a_transition() -> None:
    for status in Status:
        assert status not in allowed_from(status)


def test_allowed_from_is_the_inverse_of_the_table() -> None:
    for source, target in itertools.product(Status, Status):
        assert (source in allowed_from(target)) == (target in TRANSITIONS[source])


def test_nothing_ever_returns_to_pending() -> None:
    assert allowed_from(Status.PENDING) == []


@pytest.mark.parametrize(
    ("stripe_status", "had_error", "reason", "expected"),
    [
        ("succeeded", False, None, Status.SUCCEEDED),
        ("canceled", False, None, Status.CANCELED),
        ("canceled", False, "requested_by_customer", Status.CANCELED),
        ("canceled", False, "abandoned", Status.EXPIRED),
        ("canceled", False, "duplicate", Status.CANCELED),
        ("canceled", False, "fraudulent", Status.CANCELED),
        ("canceled", False, "automatic", Status.CANCELED),
        ("requires_payment_method", True, None, Status.FAILED),
        ("requires_payment_method", False, None, None),
        ("requires_action", False, None, None),
        ("processing", False, None, None),
        ("something_new", False, None, None),
    ],
)
def test_stripe_intent_mapping(
    stripe_status: str, had_error: bool, reason: str | None, expected: Status | None
) -> None:
    got = intent_outcome(stripe_status, failed_attempt=had_error, cancellation_reason=reason)
    assert got == expected
