"""What a Stripe PaymentIntent, and the events about it, mean for a payment.

One table of the intent statuses, one of the event types: the webhook handler, the reconciler's
sweep and its one-by-one checks all read their meaning from here.
"""

from __future__ import annotations

from payments.domain.status import Status

# PaymentIntent status -> ours. None: still in flight (nothing final is known yet).
INTENT_STATUS: dict[str, Status | None] = {
    "requires_payment_method": None,
    "requires_confirmation": None,
    "requires_action": None,
    "processing": None,
    "requires_capture": None,
    "succeeded": Status.SUCCEEDED,
    "canceled": Status.CANCELED,
}

# Our expiry cancels the intent with this reason; a canceled intent that says so was expired.
EXPIRY_CANCELLATION_REASON = "abandoned"
# The API's cancel (the customer or the merchant asked).
CANCEL_CANCELLATION_REASON = "requested_by_customer"

# The event types that can change a payment's status: the webhook applies them, the sweep lists
# them. Their meaning comes from the intent inside the event (its status), not from the name.
STATUS_EVENT_TYPES: tuple[str, ...] = (
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
)
# Events that only carry Stripe's own status (recorded, never a status change).
PROGRESS_EVENT_TYPES: tuple[str, ...] = (
    "payment_intent.processing",
    "payment_intent.requires_action",
)
HANDLED_EVENT_TYPES: tuple[str, ...] = STATUS_EVENT_TYPES + PROGRESS_EVENT_TYPES
# An event of this type is a failed attempt, whatever its intent snapshot carries.
FAILED_ATTEMPT_EVENT = "payment_intent.payment_failed"


def intent_outcome(
    intent_status: str, *, failed_attempt: bool = False, cancellation_reason: str | None = None
) -> Status | None:
    """Our status for a PaymentIntent, or None while nothing final is known.

    An intent back in ``requires_payment_method`` after a failed attempt is ``failed`` (the
    customer may still pay on the same intent: ``failed -> succeeded``). An intent canceled by
    our expiry (reason ``abandoned``) is ``expired``.
    """
    mapped = INTENT_STATUS.get(intent_status)
    if mapped is None:
        if intent_status == "requires_payment_method" and failed_attempt:
            return Status.FAILED
        return None
    if mapped is Status.CANCELED and cancellation_reason == EXPIRY_CANCELLATION_REASON:
        return Status.EXPIRED
    return mapped


def event_outcome(
    event_type: str,
    intent_status: str,
    *,
    failed_attempt: bool = False,
    cancellation_reason: str | None = None,
) -> Status | None:
    """Our status for a Stripe event about an intent: its intent's, where a
    ``payment_intent.payment_failed`` is a failed attempt even if its snapshot lost the error."""
    return intent_outcome(
        intent_status,
        failed_attempt=failed_attempt or event_type == FAILED_ATTEMPT_EVENT,
        cancellation_reason=cancellation_reason,
    )
