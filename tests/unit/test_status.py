"""The status rules every writer (API, webhook, reconciler, expiry) relies on."""

from __future__ import annotations

import itertools

import pytest

from payments.domain.status import TRANSITIONS, Status, allowed_from, can_transition, from_stripe

FINAL = {Status.SUCCEEDED, Status.CANCELED, Status.EXPIRED}


@pytest.mark.parametrize("final", sorted(FINAL))
def test_final_statuses_never_move(final: Status) -> None:
    assert final.is_final
    for target in Status:
        assert not can_transition(final, target), f"{final} -> {target} must be refused"


def test_pending_can_reach_every_outcome() -> None:
    assert {s for s in Status if can_transition(Status.PENDING, s)} == {
        Status.SUCCEEDED,
        Status.FAILED,
        Status.CANCELED,
        Status.EXPIRED,
    }


def test_failed_may_still_succeed_on_a_later_attempt() -> None:
    assert can_transition(Status.FAILED, Status.SUCCEEDED)
    assert not can_transition(Status.FAILED, Status.PENDING)
    assert not Status.FAILED.is_final


def test_writing_the_current_status_is_not_a_transition() -> None:
    for status in Status:
        assert not can_transition(status, status)


def test_allowed_from_is_the_inverse_of_the_table() -> None:
    for source, target in itertools.product(Status, Status):
        assert (source in allowed_from(target)) == (target in TRANSITIONS[source])


def test_nothing_ever_returns_to_pending() -> None:
    assert allowed_from(Status.PENDING) == []


@pytest.mark.parametrize(
    ("stripe_status", "had_error", "expected"),
    [
        ("succeeded", False, Status.SUCCEEDED),
        ("canceled", False, Status.CANCELED),
        ("requires_payment_method", True, Status.FAILED),
        ("requires_payment_method", False, None),
        ("requires_action", False, None),
        ("processing", False, None),
        ("something_new", False, None),
    ],
)
def test_stripe_status_mapping(
    stripe_status: str, had_error: bool, expected: Status | None
) -> None:
    assert from_stripe(stripe_status, last_payment_error=had_error) == expected
