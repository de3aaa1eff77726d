"""The payment record as the core sees it (one row of `payments`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from payments.domain.money import Money
from payments.domain.status import Status


@dataclass(frozen=True, slots=True)
class Payment:
    id: UUID
    idempotency_key: str
    request_hash: str
    money: Money
    status: Status
    version: int
    created_at: datetime
    updated_at: datetime
    provider: str = "stripe"
    provider_status: str | None = None
    provider_payment_id: str | None = None
    client_secret: str | None = None
    customer_email: str | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    failure_code: str | None = None
    failure_message: str | None = None

    @property
    def amount_minor(self) -> int:
        return self.money.amount_minor

    @property
    def currency(self) -> str:
        return self.money.currency

    def public_dict(self) -> dict[str, Any]:
        """The JSON shape the API answers with (no client secret, no request hash)."""
        return {
            "id": str(self.id),
            "status": self.status.value,
            "amount_minor": self.money.amount_minor,
            "currency": self.money.currency,
            "provider": self.provider,
            "provider_status": self.provider_status,
            "provider_payment_id": self.provider_payment_id,
            "customer_email": self.customer_email,
            "description": self.description,
            "metadata": dict(self.metadata),
            "failure_code": self.failure_code,
            "failure_message": self.failure_message,
            "version": self.version,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }
