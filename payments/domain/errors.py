"""One base exception for the core, split by what the caller should do."""

from __future__ import annotations


class PaymentsError(Exception):
    """Base of every error the core raises on purpose."""


class InvalidRequest(PaymentsError):
    """The caller's input is wrong; retrying the same input will fail again.

    ``field`` names the offending field (a JSON pointer-ish dotted path) when known.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(PaymentsError):
    """The named object does not exist."""


class Conflict(PaymentsError):
    """The request contradicts stored state (e.g. an idempotency key reused with another body)."""


class TransitionRefused(Conflict):
    """A status change that the status rules do not allow."""


class IdempotencyKeyConflict(Conflict):
    """The provider refused an idempotency key: it was used before with other parameters."""


class RetryableError(PaymentsError):
    """A dependency failed in a way that may pass on retry (network, 5xx, 429)."""


class ProviderDeclined(PaymentsError):
    """The payment provider refused the request for a reason the caller must fix (card, params)."""

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


class StoreUnavailable(Exception):
    """The payments database did not answer (refused, lost, pool exhausted, statement timed
    out): the same request may pass shortly. Raised by the repository, translated from the
    driver's errors once, at its boundary.

    Not a ``PaymentsError`` on purpose: those are the core's refusals, which a caller handles
    per payment; an outage is what the reconciler counts to stop a cycle after a few in a row.
    """


class ProviderObjectMissing(ProviderDeclined):
    """The provider answered that the object does not exist (404): a definite answer, unlike
    a timeout or a 5xx, which say nothing about it."""
