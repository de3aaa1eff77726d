"""Decode Debezium change events of the `payments` table into core records.

The connector writes JSON without embedded schemas (``schemas.enable=false``):

* key: ``{"id": "<uuid>"}``
* value: ``{"before": row|null, "after": row|null, "source": {"lsn", "txId", "ts_ms", ...},
  "op": "c"|"u"|"d"|"r"|"t"|"m", "ts_ms": ...}``

In a row, ``uuid`` is a string, ``timestamptz`` an ISO-8601 string, ``jsonb`` a JSON *string*,
enums and ``char(3)`` strings. ``client_secret`` and the customer's data (e-mail, description,
metadata) never leave the database (the connector's column.exclude.list): nothing here needs them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from payments.domain.errors import PaymentsError
from payments.domain.status import Status


class DecodeError(PaymentsError):
    """A record that is not a payments change event we understand: send it to the DLQ."""


class Op(StrEnum):
    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"  # snapshot


@dataclass(frozen=True, slots=True)
class PaymentRow:
    """The columns of a `payments` row that the stream needs."""

    id: UUID
    status: Status
    version: int
    amount_minor: int
    currency: str
    idempotency_key: str
    provider_payment_id: str | None
    provider_status: str | None
    created_at: datetime
    updated_at: datetime
    status_source: str | None = None  # who made the last status change (api, webhook, ...)
    tenant_id: str | None = None  # the merchant (present once the column exists)


@dataclass(frozen=True, slots=True)
class PaymentChange:
    op: Op
    before: PaymentRow | None
    after: PaymentRow | None
    lsn: int | None
    tx_id: int | None
    committed_at_ms: int | None  # source.ts_ms: commit time on the primary

    @property
    def payment_id(self) -> UUID:
        row = self.after or self.before
        assert row is not None  # decode() guarantees one of them
        return row.id

    @property
    def status_changed(self) -> bool:
        """A real status change (not a snapshot read, insert of a pending row, or a delete)."""
        return (
            self.op is Op.UPDATE
            and self.before is not None
            and self.after is not None
            and self.before.status is not self.after.status
        )


def _parse_time(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise DecodeError(f"field {field} must be an ISO-8601 string, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise DecodeError(f"field {field} is not an ISO-8601 timestamp: {value!r}") from exc
    if parsed.tzinfo is None:
        raise DecodeError(f"field {field} has no time zone (timestamptz expected): {value!r}")
    return parsed


def _positive_int(raw: dict[str, Any], column: str, where: str) -> int:
    value = raw[column]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DecodeError(f"{where}.{column} must be a positive integer, got {value!r}")
    return value


def _text(raw: dict[str, Any], column: str, where: str, *, optional: bool = False) -> str | None:
    value = raw.get(column) if optional else raw[column]
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise DecodeError(f"{where}.{column} must be a string, got {value!r}")
    return value


def _row(raw: Any, where: str) -> PaymentRow | None:
    """A row image, with every column the worker uses checked: a change that decodes can be
    applied (its table keys, its status event) without meeting a bad value later."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise DecodeError(f"{where} must be an object, got {type(raw).__name__}")
    try:
        currency = str(_text(raw, "currency", where)).strip()
        if not (len(currency) == 3 and currency.isascii() and currency.isalpha()):
            raise DecodeError(f"{where}.currency must be a 3-letter code, got {currency!r}")
        return PaymentRow(
            id=UUID(str(_text(raw, "id", where))),
            status=Status(raw["status"]),
            version=_positive_int(raw, "version", where),
            amount_minor=_positive_int(raw, "amount_minor", where),
            currency=currency,
            idempotency_key=str(_text(raw, "idempotency_key", where)),
            provider_payment_id=_text(raw, "provider_payment_id", where, optional=True),
            provider_status=_text(raw, "provider_status", where, optional=True),
            created_at=_parse_time(raw["created_at"], f"{where}.created_at"),
            updated_at=_parse_time(raw["updated_at"], f"{where}.updated_at"),
            status_source=_text(raw, "status_source", where, optional=True),
            tenant_id=_text(raw, "tenant_id", where, optional=True),
        )
    except KeyError as exc:
        raise DecodeError(f"{where} lacks the column {exc.args[0]}") from exc
    except ValueError as exc:  # bad uuid or unknown status
        raise DecodeError(f"{where}: {exc}") from exc


def decode(value: bytes | None) -> PaymentChange | None:
    """One record's value -> a change; ``None`` for records with nothing to do (tombstones,
    truncate/message events). Raises :class:`DecodeError` for anything malformed."""
    if value is None:
        return None
    try:
        doc = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"value is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise DecodeError(f"value must be a JSON object, got {type(doc).__name__}")
    if "payload" in doc and "schema" in doc:  # tolerate schemas.enable=true
        doc = doc["payload"]
        if not isinstance(doc, dict):
            raise DecodeError("payload must be a JSON object")
    raw_op = doc.get("op")
    if raw_op in ("t", "m"):
        return None
    try:
        op = Op(str(raw_op))
    except ValueError as exc:
        raise DecodeError(f"unknown op {raw_op!r}") from exc
    before, after = _row(doc.get("before"), "before"), _row(doc.get("after"), "after")
    if op is Op.DELETE and before is None:
        raise DecodeError("delete event without a before image (REPLICA IDENTITY FULL expected)")
    if op is not Op.DELETE and after is None:
        raise DecodeError(f"op {op.value} event without an after image")
    if before is not None and after is not None and before.id != after.id:
        raise DecodeError(f"before and after are different payments ({before.id}, {after.id})")
    source = doc.get("source") or {}
    if not isinstance(source, dict):
        raise DecodeError("source must be an object")
    lsn, tx_id, ts = source.get("lsn"), source.get("txId"), source.get("ts_ms")
    return PaymentChange(
        op=op,
        before=before,
        after=after,
        lsn=lsn if isinstance(lsn, int) else None,
        tx_id=tx_id if isinstance(tx_id, int) else None,
        committed_at_ms=ts if isinstance(ts, int) else None,
    )
