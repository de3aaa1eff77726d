"""The `payments` row as SQL selects it, and its mapping to the domain's ``Payment``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from payments.domain.money import Money
from payments.domain.payment import Payment
from payments.domain.status import Status

Row = Mapping[str, Any]
Cursor = psycopg.Cursor[dict[str, Any]]

COLUMN_NAMES = (
    "id",
    "idempotency_key",
    "request_hash",
    "amount_minor",
    "currency",
    "status",
    "provider_status",
    "provider",
    "provider_payment_id",
    "client_secret",
    "customer_email",
    "description",
    "metadata",
    "failure_code",
    "failure_message",
    "created_at",
    "updated_at",
    "version",
    "creation_claimed_at",
    "tenant_id",
)
COLUMNS = ", ".join(COLUMN_NAMES)


def columns_of(alias: str) -> str:
    """The payment columns qualified by a table alias (``p.id, p.status, ...``)."""
    return ", ".join(f"{alias}.{name}" for name in COLUMN_NAMES)


def payment_from_row(row: Row) -> Payment:
    metadata = row["metadata"] or {}
    return Payment(
        id=row["id"],
        idempotency_key=row["idempotency_key"],
        request_hash=row["request_hash"],
        money=Money(int(row["amount_minor"]), row["currency"].strip()),
        status=Status(row["status"]),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        provider=row["provider"],
        provider_status=row["provider_status"],
        provider_payment_id=row["provider_payment_id"],
        client_secret=row["client_secret"],
        customer_email=row["customer_email"],
        description=row["description"],
        metadata={str(k): str(v) for k, v in metadata.items()},
        failure_code=row["failure_code"],
        failure_message=row["failure_message"],
        tenant_id=row["tenant_id"],
    )
