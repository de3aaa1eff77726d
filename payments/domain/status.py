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


# from-status -> the statuses it may move to.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED, Status.EXPIRED}),
    # A later attempt on the same PaymentIntent may still succeed.
    Status.FAILED: frozenset({Status.SUCCEEDED, Status.CANCELED, Status.EXPIRED}),
    Status.SUCCEEDED: frozenset(),
    Status.CANCELED: frozenset(),
    Status.EXPIRED: frozenset(),
}

# Not final: something (the worker) must look at these again until they are.
OPEN_STATUSES: frozenset[Status] = frozenset(s for s, targets in TRANSITIONS.items() if targets)


def allowed_from(to_status: Status) -> list[Status]:
    """Every status a payment may be in for a write of ``to_status`` to apply."""
    return [s for s, targets in TRANSITIONS.items() if to_status in targets]
