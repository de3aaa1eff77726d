"""The ``payment-status-update`` event: one per status change that reached the database.

Built in one place (the worker, from a change record) and parsed in one place,
``StatusUpdate.from_json``, by the product's readers (the API's timeline, the operations
snapshot; the tests read the records on their own, as any consumer would). ``event_id`` is
``<payment_id>:<version>``: the same change always has the same id, so a consumer drops
duplicates by it. On Kafka the event also carries CloudEvents 1.0 headers (binary content mode)
with ``ce_id`` = ``event_id``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from payments.domain.status import Status

SPEC_VERSION = "1.0"
# The CloudEvents `source` of every status event: the pipeline's payments, as a URI reference.
EVENT_SOURCE = "/payments-pipeline/payments"
TYPE_PREFIX = "payments.payment."
CONTENT_TYPE = "application/json"


class EventFormatError(ValueError):
    """A record that is not a status-update event."""


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    payment_id: UUID
    status: Status
    previous_status: Status | None
    amount_minor: int
    currency: str
    provider_payment_id: str | None
    source: str | None
    version: int
    occurred_at: datetime
    tenant_id: str | None = None

    @property
    def event_id(self) -> str:
        return f"{self.payment_id}:{self.version}"

    @property
    def event_type(self) -> str:
        """One CloudEvents type per target status, e.g. ``payments.payment.succeeded``."""
        return f"{TYPE_PREFIX}{self.status.value}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "payment_id": str(self.payment_id),
            "tenant_id": self.tenant_id,
            "status": self.status.value,
            "previous_status": self.previous_status.value if self.previous_status else None,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "provider_payment_id": self.provider_payment_id,
            "source": self.source,
            "version": self.version,
            "occurred_at": self.occurred_at.isoformat(),
        }

    def cloudevent_attributes(self) -> dict[str, str]:
        """The CloudEvents context attributes (without the ``ce_`` prefix of the Kafka binding)."""
        attributes = {
            "specversion": SPEC_VERSION,
            "id": self.event_id,
            "source": EVENT_SOURCE,
            "type": self.event_type,
            "subject": str(self.payment_id),
            "time": self.occurred_at.isoformat(),
            "datacontenttype": CONTENT_TYPE,
        }
        if self.tenant_id:
            attributes["tenantid"] = self.tenant_id  # extension: route by merchant
        return attributes

    @classmethod
    def from_json(cls, raw: bytes | str) -> StatusUpdate:
        """The event of a record's value, as the worker wrote it (JSON)."""
        try:
            doc = json.loads(raw)
        except ValueError as exc:  # UnicodeDecodeError included
            raise EventFormatError(f"not a payment-status-update event: not JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise EventFormatError(
                f"not a payment-status-update event: a JSON {type(doc).__name__}, not an object"
            )
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> StatusUpdate:
        try:
            event = cls(
                payment_id=UUID(str(doc["payment_id"])),
                status=Status(doc["status"]),
                previous_status=Status(doc["previous_status"])
                if doc.get("previous_status")
                else None,
                amount_minor=int(doc["amount_minor"]),
                currency=str(doc["currency"]),
                provider_payment_id=doc.get("provider_payment_id"),
                source=doc.get("source"),
                version=int(doc["version"]),
                occurred_at=datetime.fromisoformat(str(doc["occurred_at"])),
                tenant_id=doc.get("tenant_id"),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise EventFormatError(f"not a payment-status-update event: {exc!r}") from exc
        if doc.get("event_id") not in (None, event.event_id):
            raise EventFormatError(
                f"event_id {doc.get('event_id')!r} does not match payment and version "
                f"({event.event_id})"
            )
        return event
