"""A payment's way through the pipeline, as the steps the checkout page shows.

Pure shaping: the payment and its audit and inbox rows (from the primary) and the emitted
``payment-status-update`` events (from Kafka) go in, JSON comes out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from api.emitted import EmittedEvents
from payments.domain.events import StatusUpdate
from payments.domain.intents import STATUS_EVENT_TYPES
from payments.domain.status import Status
from payments.ports import InboxEvent
from payments.service import PaymentHistory

DONE, WAITING, FAILED = "done", "waiting", "failed"


@dataclass(frozen=True)
class Step:
    key: str
    label: str
    state: str
    detail: str
    at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "state": self.state,
            "detail": self.detail,
            "at": self.at.isoformat() if self.at else None,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def steps(history: PaymentHistory, emitted: EmittedEvents) -> list[Step]:
    payment = history.payment
    status = payment.status
    out = [Step("stored", "Stored", DONE, f"{payment.money} stored as pending", payment.created_at)]

    if payment.provider_payment_id:
        out.append(Step("intent", "Intent created", DONE, payment.provider_payment_id))
    else:
        out.append(
            Step("intent", "Intent created", WAITING, "Stripe not reached yet; retried later")
        )

    outcome_hooks = [w for w in history.webhooks if w.type in STATUS_EVENT_TYPES]
    first_hook = outcome_hooks[0] if outcome_hooks else None
    reason = payment.failure_message or payment.failure_code or "declined"
    if status is Status.SUCCEEDED:
        confirm = Step("confirmed", "Confirmed at Stripe", DONE, "succeeded")
    elif status is Status.FAILED:
        code = f" ({payment.failure_code})" if payment.failure_code else ""
        confirm = Step("confirmed", "Confirmed at Stripe", FAILED, f"{reason}{code}")
    elif status in (Status.CANCELED, Status.EXPIRED):
        confirm = Step("confirmed", "Confirmed at Stripe", FAILED, f"payment {status.value}")
    elif payment.provider_status == "requires_action":
        confirm = Step("confirmed", "Confirmed at Stripe", WAITING, "3-D Secure required")
    elif payment.provider_status == "processing":
        confirm = Step("confirmed", "Confirmed at Stripe", DONE, "processing")
    else:
        confirm = Step("confirmed", "Confirmed at Stripe", WAITING, "waiting for the card")
    out.append(replace(confirm, at=_at(first_hook)))

    if first_hook is not None:
        detail = ", ".join(f"{w.type} ({w.outcome or 'received'})" for w in outcome_hooks)
        out.append(Step("webhook", "Webhook received", DONE, detail, first_hook.received_at))
    elif status is not Status.PENDING:
        out.append(Step("webhook", "Webhook received", DONE, "none; the status came another way"))
    else:
        out.append(Step("webhook", "Webhook received", WAITING, "waiting for Stripe"))

    change = next((e for e in reversed(history.audit) if e.to_status is status), None)
    if status is Status.PENDING or change is None:
        out.append(Step("database", "Status in the database", WAITING, "pending"))
    else:
        previous = change.from_status.value if change.from_status else "new"
        out.append(
            Step(
                "database",
                "Status in the database",
                DONE,
                f"{previous} → {status.value} by {change.source.value}, version {change.version}",
                change.created_at,
            )
        )

    event = _matching_event(history, emitted)
    if event is not None:
        out.append(
            Step("event", "payment-status-update emitted", DONE, event.event_id, event.occurred_at)
        )
    else:
        why = emitted.error or ("waiting for the worker" if status is not Status.PENDING else "")
        out.append(
            Step("event", "payment-status-update emitted", WAITING, why or "nothing to emit yet")
        )
    return out


def _at(hook: InboxEvent | None) -> datetime | None:
    return hook.received_at if hook is not None else None


def _matching_event(history: PaymentHistory, emitted: EmittedEvents) -> StatusUpdate | None:
    """The event of the current status: same status, and the version of its audit row."""
    status = history.payment.status
    change = next((e for e in reversed(history.audit) if e.to_status is status), None)
    for event in reversed(emitted.events):
        if event.status is status and (change is None or event.version == change.version):
            return event
    return None


def timeline(history: PaymentHistory, emitted: EmittedEvents) -> dict[str, Any]:
    """The JSON of ``GET /payments/<id>/timeline``."""
    payment = history.payment
    shaped = steps(history, emitted)
    finished = payment.status is not Status.PENDING and shaped[-1].state == DONE
    return {
        "payment": payment.public_dict(),
        "finished": finished,
        "steps": [s.to_dict() for s in shaped],
        "audit": [
            {
                "from_status": e.from_status.value if e.from_status else None,
                "to_status": e.to_status.value,
                "source": e.source.value,
                "provider_event_id": e.provider_event_id,
                "version": e.version,
                "created_at": e.created_at.isoformat(),
            }
            for e in history.audit
        ],
        "webhooks": [
            {
                "event_id": w.event_id,
                "type": w.type,
                "received_at": w.received_at.isoformat(),
                "processed_at": _iso(w.processed_at),
                "outcome": w.outcome,
            }
            for w in history.webhooks
        ],
        "emitted": {
            "events": [e.to_dict() for e in emitted.events],
            "complete": emitted.complete,
            "error": emitted.error,
            "partition": emitted.partition,
        },
    }
