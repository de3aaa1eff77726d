"""Payment statuses and the one transition table every writer uses."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return not TRANSITIONS[self]


class Source(StrEnum):
    """Who caused a status change (the ``source`` of an audit row and an event)."""

    API = "api"
    WEBHOOK = "webhook"
    RECONCILER = "reconciler"
    EXPIRY = "expiry"
    OPERATOR = "operator"


# to-status -> nothing; from-status -> the statuses it may move to.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED, Status.EXPIRED}),
    # A later attempt on the same PaymentIntent may still succeed.
    Status.FAILED: frozenset({Status.SUCCEEDED, Status.CANCELED, Status.EXPIRED}),
    Status.SUCCEEDED: frozenset(),
    Status.CANCELED: frozenset(),
    Status.EXPIRED: frozenset(),
}


def can_transition(from_status: Status, to_status: Status) -> bool:
    """True when ``from_status -> to_status`` is a real, allowed change."""
    return to_status in TRANSITIONS[from_status]


def allowed_from(to_status: Status) -> list[Status]:
    """Every status a payment may be in for a write of ``to_status`` to apply."""
    return [s for s, targets in TRANSITIONS.items() if to_status in targets]


# Stripe PaymentIntent status -> our status. ``None`` means "still in flight".
_STRIPE_STATUS: dict[str, Status | None] = {
    "requires_payment_method": None,
    "requires_confirmation": None,
    "requires_action": None,
    "processing": None,
    "requires_capture": None,
    "succeeded": Status.SUCCEEDED,
    "canceled": Status.CANCELED,
}


def from_stripe(intent_status: str, *, last_payment_error: bool = False) -> Status | None:
    """Map a PaymentIntent status to ours, or ``None`` when nothing final is known yet.

    An intent back in ``requires_payment_method`` after a failed attempt is ``failed``
    (the customer may retry on the same intent, which ``failed -> succeeded`` allows).
    """
    if intent_status not in _STRIPE_STATUS:
        return None
    mapped = _STRIPE_STATUS[intent_status]
    if mapped is None and intent_status == "requires_payment_method" and last_payment_error:
        return Status.FAILED
    return mapped
