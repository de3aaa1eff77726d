"""The payment as the core sees it (one row of `payments`), with the rules that are its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from payments.domain.money import Money
from payments.domain.status import Status

# The tenant of rows made before tenants existed, and of a bare API key (no `tenant:`).
DEFAULT_TENANT = "default"


class IntentMatch(StrEnum):
    """Whether a PaymentIntent may move a payment."""

    OWN = "own"  # the payment's own intent (its provider_payment_id)
    ATTACHABLE = "attachable"  # the payment has no intent yet and this one is made for it
    FOREIGN = "foreign"  # anything else: refused


@dataclass(frozen=True, slots=True)
class IntentFacts:
    """What an intent says about itself (from Stripe): enough to judge whose it is."""

    id: str
    payment_id: str | None  # metadata.payment_id
    amount: int
    currency: str


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
    # The merchant whose API key made it; only that tenant's keys see it.
    tenant_id: str = DEFAULT_TENANT

    @property
    def is_open(self) -> bool:
        """Not final: still pending, or failed and payable again on the same intent."""
        return not self.status.is_final

    def match_intent(self, intent: IntentFacts) -> tuple[IntentMatch, str]:
        """Whether ``intent`` may move this payment, and why not when it may not.

        Only the payment's own intent may; while the payment has none yet, an intent made for
        it (its metadata names this payment, same amount and currency) may be attached.
        """
        same_money = intent.amount == self.money.amount_minor and intent.currency == (
            self.money.currency
        )
        if self.provider_payment_id is not None:
            if intent.id != self.provider_payment_id:
                return IntentMatch.FOREIGN, (
                    f"intent {intent.id} is not payment {self.id}'s own intent "
                    f"{self.provider_payment_id}"
                )
        elif intent.payment_id != str(self.id):
            return IntentMatch.FOREIGN, (
                f"intent {intent.id} names payment {intent.payment_id!r} in its metadata, "
                f"not {self.id}"
            )
        if not same_money:
            return IntentMatch.FOREIGN, (
                f"intent {intent.id} is for {intent.amount} {intent.currency} but payment "
                f"{self.id} is {self.money.amount_minor} {self.money.currency}"
            )
        if self.provider_payment_id is None:
            return IntentMatch.ATTACHABLE, ""
        return IntentMatch.OWN, ""

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
