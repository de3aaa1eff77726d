"""The ports: what the use cases speak. Records they exchange with the adapters, and the
Protocols the adapters (PostgreSQL, Stripe) and the test fakes implement. Domain imports only."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

from payments.domain.errors import InvalidRequest
from payments.domain.intents import event_outcome, intent_outcome
from payments.domain.money import Money
from payments.domain.payment import DEFAULT_TENANT, IntentFacts, Payment
from payments.domain.status import Source, Status


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Intent:
    """The part of a Stripe PaymentIntent this system uses."""

    id: str
    status: str
    amount: int
    currency: str
    client_secret: str | None
    payment_id: str | None  # metadata.payment_id
    failure_code: str | None
    failure_message: str | None
    created: int
    cancellation_reason: str | None = None

    def outcome(self) -> Status | None:
        """Our status for this intent, or None while nothing final is known."""
        return intent_outcome(
            self.status,
            failed_attempt=self.failure_code is not None or self.failure_message is not None,
            cancellation_reason=self.cancellation_reason,
        )

    @property
    def payment_uuid(self) -> UUID | None:
        """The payment its metadata names, when that is a payment id at all."""
        try:
            return UUID(self.payment_id) if self.payment_id else None
        except ValueError:
            return None

    @property
    def facts(self) -> IntentFacts:
        return IntentFacts(self.id, self.payment_id, self.amount, self.currency)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Intent:
        metadata = data.get("metadata") or {}
        error = data.get("last_payment_error") or {}
        code = error.get("decline_code") or error.get("code") if error else None
        return cls(
            id=str(data["id"]),
            status=str(data.get("status") or ""),
            amount=int(data.get("amount") or 0),
            currency=str(data.get("currency") or ""),
            client_secret=_str_or_none(data.get("client_secret")),
            payment_id=_str_or_none(metadata.get("payment_id")),
            failure_code=_str_or_none(code),
            failure_message=_str_or_none(error.get("message")) if error else None,
            created=int(data.get("created") or 0),
            cancellation_reason=_str_or_none(data.get("cancellation_reason")),
        )


@dataclass(frozen=True)
class ProviderEvent:
    """A Stripe event; ``intent`` is set when its object is a PaymentIntent."""

    id: str
    type: str
    created: int
    intent: Intent | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProviderEvent:
        obj = (data.get("data") or {}).get("object") or {}
        intent = Intent.from_dict(obj) if obj.get("object") == "payment_intent" else None
        return cls(
            id=str(data["id"]),
            type=str(data.get("type") or ""),
            created=int(data.get("created") or 0),
            intent=intent,
        )


@dataclass(frozen=True)
class EventPage:
    """One page of Stripe events, oldest first, and the cursor to store once it is applied."""

    events: list[ProviderEvent]
    cursor: str


@dataclass(frozen=True)
class StatusChange:
    """A guarded status write. With ``intent`` (Stripe said so), only the payment's own intent
    may apply it — or, while the payment has none, an intent made for it, which is attached."""

    to: Status
    source: Source
    intent: Intent | None = None
    provider_event_id: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None

    @classmethod
    def from_intent(
        cls, intent: Intent, source: Source, event: ProviderEvent | None = None
    ) -> StatusChange | None:
        """What Stripe says (the intent, in an event or retrieved), as a change; None while
        nothing final is known."""
        if event is None:
            target = intent.outcome()
        else:
            target = event_outcome(
                event.type,
                intent.status,
                failed_attempt=intent.failure_code is not None
                or intent.failure_message is not None,
                cancellation_reason=intent.cancellation_reason,
            )
        if target is None:
            return None
        failed = target is Status.FAILED
        return cls(
            target,
            source,
            intent,
            event.id if event else None,
            (intent.failure_code or "payment_failed") if failed else None,
            intent.failure_message if failed else None,
        )


class TransitionOutcome(StrEnum):
    APPLIED = "applied"
    NOOP = "noop"  # already in that status (Stripe's own status may have been refreshed)
    REFUSED = "refused"  # the status rules forbid it (e.g. the payment is final)
    FOREIGN_INTENT = "foreign_intent"  # the intent is not the payment's own
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class TransitionResult:
    outcome: TransitionOutcome
    payment: Payment | None
    previous_status: Status | None
    reason: str = ""

    @property
    def applied(self) -> bool:
        return self.outcome is TransitionOutcome.APPLIED


@dataclass(frozen=True)
class NewPayment:
    """What the API asks to store: validated input plus the idempotency key and request hash."""

    id: UUID
    idempotency_key: str
    request_hash: str
    money: Money
    customer_email: str | None = None
    description: str | None = None
    metadata: Mapping[str, str] | None = None
    tenant_id: str = DEFAULT_TENANT


@dataclass(frozen=True)
class InsertResult:
    payment: Payment
    created: bool
    # When the creation of the intent was claimed (None: nobody holds it).
    creation_claimed_at: datetime | None


@dataclass(frozen=True)
class WebhookResult:
    """What applying one Stripe event did. ``duplicate`` means it was seen before."""

    duplicate: bool
    outcome: str
    payment: Payment | None = None
    transition: TransitionResult | None = None
    reason: str | None = None


@dataclass(frozen=True)
class AuditEvent:
    id: int
    payment_id: UUID
    from_status: Status | None
    to_status: Status
    source: Source
    provider_event_id: str | None
    version: int
    created_at: datetime


@dataclass(frozen=True)
class InboxEvent:
    """One Stripe event in the webhook inbox, as recorded for a payment."""

    event_id: str
    type: str
    received_at: datetime
    processed_at: datetime | None
    outcome: str | None
    reason: str | None = None


@dataclass(frozen=True)
class PageCursor:
    """Keyset position of ``GET /payments``: the last (created_at, id) seen."""

    created_at: datetime
    id: UUID

    def encode(self) -> str:
        raw = f"{self.created_at.isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> PageCursor:
        try:
            padded = token + "=" * (-len(token) % 4)
            created, ident = base64.urlsafe_b64decode(padded.encode()).decode().split("|")
            cursor = cls(datetime.fromisoformat(created), UUID(ident))
        except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidRequest(
                f"after must be a cursor returned as `next` by GET /payments, got {token!r}",
                field="after",
            ) from exc
        if cursor.created_at.tzinfo is None:
            raise InvalidRequest(f"after cursor {token!r} has no time zone", field="after")
        return cursor


@dataclass(frozen=True, slots=True)
class Retry:
    """A reconciliation check that failed: how many times, when it may run again (epoch
    seconds) and the last error. Kept by the repository across restarts. ``unknown_since`` /
    ``unknown_attempts``: the current run of definite "no such intent" answers (404) from
    Stripe, since when and how many in a row (None / 0 when the last failure was another)."""

    attempts: int
    next_at: float
    reason: str
    unknown_since: float | None = None
    unknown_attempts: int = 0


class PaymentRepository(Protocol):
    """What the use cases need from storage (``PostgresRepository`` or the test fake)."""

    def ping(self) -> None: ...
    def count_by_status(self) -> dict[Status, int]: ...
    # ``tenant_id``: only that tenant's payment (None: any, for the worker and the reconciler).
    def get(self, payment_id: UUID, *, tenant_id: str | None = None) -> Payment | None: ...
    def get_for_read(self, payment_id: UUID, *, tenant_id: str | None = None) -> Payment | None: ...
    def open_payments(self, payment_ids: Iterable[UUID]) -> dict[UUID, Payment]: ...
    def open_payments_by_intent(self, intent_ids: Iterable[str]) -> dict[str, Payment]: ...
    def events(self, payment_id: UUID) -> list[AuditEvent]: ...
    def webhooks(self, payment_id: UUID, *, limit: int = 50) -> list[InboxEvent]: ...
    def list_page(
        self,
        *,
        status: Status | None = None,
        limit: int = 50,
        after: PageCursor | None = None,
        tenant_id: str | None = None,
    ) -> tuple[list[Payment], PageCursor | None]: ...

    def insert_pending(self, new: NewPayment) -> InsertResult: ...
    def claim_creation(
        self, payment_id: UUID, *, lease_seconds: float = 60.0
    ) -> Payment | None: ...
    def release_creation(self, payment_id: UUID) -> None: ...
    def attach_intent(self, payment_id: UUID, intent: Intent) -> Payment: ...
    def transition(self, payment_id: UUID, change: StatusChange) -> TransitionResult: ...
    def record_provider_status(self, payment_id: UUID, intent: Intent) -> TransitionResult: ...
    def apply_webhook(
        self,
        event: ProviderEvent,
        payload: Mapping[str, Any],
        change: StatusChange | None,
        *,
        handled: bool = True,
    ) -> WebhookResult: ...

    def get_cursor(self, name: str) -> str | None: ...
    def set_cursor(self, name: str, value: str) -> None: ...

    def load_retries(self, *, forget_before: float) -> dict[UUID, Retry]: ...
    def save_retry(self, payment_id: UUID, retry: Retry) -> None: ...
    def drop_retry(self, payment_id: UUID) -> None: ...


class PaymentGateway(Protocol):
    """What the use cases need from Stripe (``StripeGateway`` or the test fake)."""

    @property
    def calls(self) -> int:
        """Calls made to Stripe so far (each HTTP attempt, retries included): what a
        reconciliation cycle reports it spent."""
        ...

    def create_intent(self, payment: Payment) -> Intent: ...
    def retrieve_intent(self, intent_id: str) -> Intent: ...
    def cancel_intent(
        self, intent_id: str, *, payment_id: UUID, reason: str, decision: int
    ) -> Intent:
        """Cancel the payment's intent for ``reason``; ``decision`` tells one decision to cancel
        from a later one (the API: the payment's version; the expiry: its attempt number):
        Stripe's idempotency key is made of the three."""
        ...

    def confirm_intent(
        self, intent_id: str, payment_method: str, *, idempotency_key: str
    ) -> Intent: ...
    def event_pages(self, cursor: str | None, *, since: int) -> Iterator[EventPage]:
        """Stripe's status events after ``cursor`` (or created after ``since`` without one),
        oldest first, page by page; each page carries the cursor to store once it is applied."""
        ...

    def recent_events(self, *, since: int) -> Iterator[ProviderEvent]:
        """Status events created after ``since`` (the overlap re-read: Stripe's list is
        eventually consistent, an event may appear after a newer one was listed)."""
        ...

    def intent_pages(self, created_from: int, created_to: int) -> Iterator[list[Intent]] | None:
        """PaymentIntents created in ``[created_from, created_to)`` (epoch seconds), a page per
        call; None where the provider cannot list them by creation time (retrieve instead)."""
        ...


class WebhookVerifier(Protocol):
    """Checks Stripe's signature over a webhook's raw body against every secret listed (old and
    new, during a rotation); the event and its JSON. Refuses with ``InvalidRequest`` naming
    ``Stripe-Signature`` (missing, wrong or stale) or ``body`` (signed, but not an event)."""

    def __call__(
        self,
        payload: bytes,
        signature_header: str | None,
        *,
        secrets: Sequence[str],
        tolerance_seconds: int,
    ) -> tuple[ProviderEvent, dict[str, Any]]: ...


class OpenPayment(Protocol):
    """What the worker's table knows of a payment that is not final."""

    @property
    def payment_id(self) -> UUID: ...
    @property
    def status(self) -> Status: ...
    @property
    def created_at(self) -> float: ...  # epoch seconds
    @property
    def provider_payment_id(self) -> str | None: ...


class OpenPayments(Protocol):
    """The worker's open payments, by age (its active partitions only)."""

    def count(self) -> int: ...
    def created_between(self, start: float, end: float) -> Iterator[OpenPayment]:
        """Oldest first, ``start <= created_at < end``."""
        ...

    def without_intent(self, created_before: float) -> Iterator[OpenPayment]: ...
