"""Decoding Debezium envelopes as the connector really writes them (JSON, no schema)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from cdc.envelope import DecodeError, Op, decode
from payments.domain.status import Status

PID = str(uuid.uuid4())


def row(**changes: Any) -> dict[str, Any]:
    base = {
        "id": PID,
        "idempotency_key": "k-1",
        "request_hash": "h",
        "amount_minor": 1234,
        "currency": "usd",
        "status": "pending",
        "provider_status": None,
        "provider": "stripe",
        "provider_payment_id": None,
        "customer_email": None,
        "description": None,
        "metadata": '{"a": "b"}',
        "failure_code": None,
        "failure_message": None,
        "created_at": "2026-11-23T08:18:08.287545Z",
        "updated_at": "2026-11-23T08:18:08.287545Z",
        "version": 1,
        "creation_claimed_at": None,
    }
    return {**base, **changes}


def envelope(op: str, before: Any, after: Any) -> bytes:
    return json.dumps(
        {
            "before": before,
            "after": after,
            "op": op,
            "ts_ms": 1795421888528,
            "source": {
                "version": "3.6.3.Final",
                "connector": "postgresql",
                "name": "dbserver1",
                "ts_ms": 1795421888291,
                "snapshot": "false",
                "db": "payments",
                "schema": "public",
                "table": "payments",
                "txId": 744,
                "lsn": 67425032,
            },
            "transaction": None,
        }
    ).encode()


def test_insert() -> None:
    change = decode(envelope("c", None, row()))
    assert change is not None
    assert change.op is Op.CREATE and change.before is None
    assert change.after is not None and change.after.status is Status.PENDING
    assert change.after.amount_minor == 1234 and change.after.currency == "usd"
    assert change.lsn == 67425032 and change.tx_id == 744
    assert change.committed_at_ms == 1795421888291
    assert str(change.payment_id) == PID
    assert not change.status_changed


def test_update_with_a_status_change() -> None:
    change = decode(envelope("u", row(), row(status="succeeded", version=2)))
    assert change is not None and change.status_changed
    assert change.after is not None and change.after.version == 2


def test_update_without_a_status_change() -> None:
    change = decode(envelope("u", row(), row(provider_payment_id="pi_1", version=2)))
    assert change is not None and not change.status_changed


def test_snapshot_read_is_not_a_change() -> None:
    change = decode(envelope("r", None, row(status="succeeded")))
    assert change is not None and change.op is Op.READ and not change.status_changed


def test_delete_uses_the_before_image() -> None:
    change = decode(envelope("d", row(), None))
    assert change is not None and change.op is Op.DELETE and str(change.payment_id) == PID


def test_tombstones_and_truncates_are_nothing_to_do() -> None:
    assert decode(None) is None
    assert decode(json.dumps({"op": "t", "before": None, "after": None}).encode()) is None


def test_schema_wrapped_payload_is_accepted() -> None:
    wrapped = json.dumps({"schema": {}, "payload": json.loads(envelope("c", None, row()))})
    change = decode(wrapped.encode())
    assert change is not None and change.op is Op.CREATE


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"op": "x", "after": row()}).encode(), "unknown op"),
        (envelope("c", None, None), "without an after image"),
        (envelope("d", None, None), "without a before image"),
        (envelope("c", None, row(status="weird")), "weird"),
        (envelope("c", None, row(id="not-a-uuid")), "after"),
        (envelope("c", None, row(version="1")), "version must be a positive integer"),
        (envelope("c", None, row(version=True)), "version must be a positive integer"),
        (envelope("c", None, row(version=0)), "version must be a positive integer"),
        (envelope("c", None, row(amount_minor=-5)), "amount_minor must be a positive integer"),
        (envelope("c", None, row(amount_minor=12.5)), "amount_minor must be a positive integer"),
        (envelope("c", None, row(currency="us")), "3-letter code"),
        (envelope("c", None, row(currency=840)), "currency must be a string"),
        (envelope("c", None, row(provider_payment_id=42)), "provider_payment_id must be a str"),
        (envelope("c", None, row(tenant_id=["acme"])), "tenant_id must be a string"),
        (envelope("c", None, row(status_source=1)), "status_source must be a string"),
        (envelope("c", None, row(idempotency_key=None)), "idempotency_key must be a string"),
        (envelope("c", None, row(created_at=12)), "ISO-8601"),
        (envelope("c", None, row(updated_at="2026-11-23T08:18:08")), "no time zone"),
        (envelope("c", None, {"id": PID}), "lacks the column"),
        (
            envelope("u", row(), row(id=str(uuid.uuid4()), version=2)),
            "different payments",
        ),
    ],
)
def test_malformed_records_raise_a_decode_error_saying_why(value: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode(value)
