"""The ports: what the use cases speak. Records they exchange with the adapters, and the
Protocols the adapters (PostgreSQL, Stripe) and the test fakes implement. Domain imports only."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

from payments.domain.errors import InvalidRequest
from payments.domain.money import Money
from payments.domain.payment import Payment
from payments.domain.status import Source, Status, from_stripe


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
    payment_id: str | None
    failure_code: str | None
    failure_message: str | None
    created: int

    def outcome(self) -> Status | None:
        """Our status for this intent, or None while nothing final is known."""
        return from_stripe(
            self.status,
            last_payment_error=self.failure_code is not None or self.failure_message is not None,
        )

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


class TransitionOutcome(StrEnum):
    APPLIED = "applied"
    NOOP = "noop"
    REFUSED = "refused"
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class TransitionResult:
    outcome: TransitionOutcome
    payment: Payment | None
    previous_status: Status | None

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


class PaymentRepository(Protocol):
    """What the use cases need from storage (``PostgresRepository`` or the test fake)."""

    def ping(self) -> None: ...
    def count_by_status(self) -> dict[Status, int]: ...
    def get_cursor(self, name: str) -> str | None: ...
    def set_cursor(self, name: str, value: str) -> None: ...

    def get(self, payment_id: UUID) -> Payment | None: ...
    def get_for_read(self, payment_id: UUID) -> Payment | None: ...
    def events(self, payment_id: UUID) -> list[AuditEvent]: ...
    def webhooks(self, payment_id: UUID, *, limit: int = 50) -> list[InboxEvent]: ...
    def insert_pending(self, new: NewPayment) -> InsertResult: ...
    def claim_creation(
        self, payment_id: UUID, *, lease_seconds: float = 60.0
    ) -> Payment | None: ...
    def release_creation(self, payment_id: UUID) -> None: ...
    def attach_intent(
        self,
        payment_id: UUID,
        *,
        provider_payment_id: str,
        provider_status: str,
        client_secret: str | None,
    ) -> Payment: ...
    def transition(
        self,
        payment_id: UUID,
        to: Status,
        *,
        source: Source,
        provider_status: str | None = None,
        provider_event_id: str | None = None,
        failure_code: str | None = None,
        failure_message: str | None = None,
    ) -> TransitionResult: ...
    def set_provider_status(self, payment_id: UUID, provider_status: str) -> Payment | None: ...
    def list_page(
        self, *, status: Status | None = None, limit: int = 50, after: PageCursor | None = None
    ) -> tuple[list[Payment], PageCursor | None]: ...
    def apply_webhook(
        self,
        *,
        event_id: str,
        event_type: str,
        payload: Mapping[str, Any],
        payment_id: UUID | None,
        provider_payment_id: str | None,
        to: Status | None,
        provider_status: str | None,
        failure_code: str | None = None,
        failure_message: str | None = None,
    ) -> WebhookResult: ...


class PaymentGateway(Protocol):
    """What the use cases need from Stripe (``StripeGateway`` or the test fake)."""

    def create_intent(self, payment: Payment) -> Intent: ...
    def retrieve_intent(self, intent_id: str) -> Intent: ...
    def cancel_intent(self, intent_id: str) -> Intent: ...
    def confirm_intent(
        self, intent_id: str, payment_method: str, *, idempotency_key: str
    ) -> Intent: ...
    def list_events(self, event_type: str, *, created_gt: int) -> Iterator[ProviderEvent]: ...
