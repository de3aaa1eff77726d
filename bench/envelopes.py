"""Synthetic Debezium change events of the ``payments`` table, the same shape as the connector
writes (JSON without schema, see ``cdc/envelope.py``)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def row(payment_id: str, *, created_at: float, status: str = "pending", version: int = 1,
        status_source: str | None = None, intent: str | None = None) -> dict[str, Any]:  # fmt: skip
    stamp = _iso(created_at)
    return {
        "id": payment_id,
        "idempotency_key": f"bench-{payment_id}",
        "request_hash": "bench",
        "amount_minor": 1999,
        "currency": "usd",
        "status": status,
        "provider_status": "requires_payment_method",
        "provider": "stripe",
        "provider_payment_id": intent or f"pi_bench_{payment_id[:16]}",
        "customer_email": "bench@example.com",
        "description": "benchmark",
        "metadata": "{}",
        "failure_code": None,
        "failure_message": None,
        "created_at": stamp,
        "updated_at": stamp,
        "version": version,
        "creation_claimed_at": None,
        "status_source": status_source,
    }


def envelope(op: str, before: dict[str, Any] | None, after: dict[str, Any] | None,
             *, ts_ms: int | None = None, lsn: int = 0) -> bytes:  # fmt: skip
    now_ms = int(time.time() * 1000) if ts_ms is None else ts_ms
    return json.dumps(
        {
            "before": before,
            "after": after,
            "source": {
                "version": "3.6.3.Final",
                "connector": "postgresql",
                "name": "dbserver1",
                "ts_ms": now_ms,
                "snapshot": "false",
                "db": "payments",
                "schema": "public",
                "table": "payments",
                "txId": 1000 + lsn,
                "lsn": lsn,
            },
            "op": op,
            "ts_ms": now_ms,
            "transaction": None,
        }
    ).encode()


def key(payment_id: str) -> bytes:
    return json.dumps({"id": payment_id}).encode()


def pending_insert(
    seq: int,
    *,
    created_at: float | None = None,
    pid: str | None = None,
    intent: Callable[[str, float], str] | None = None,
) -> tuple[bytes, bytes, str]:
    """(key, value, payment id) of the insert of a new pending payment (``intent(pid,
    created)`` names its intent)."""
    pid = pid or str(uuid.uuid4())
    created = time.time() if created_at is None else created_at
    made = intent(pid, created) if intent else None
    return key(pid), envelope("c", None, row(pid, created_at=created, intent=made), lsn=seq), pid


def succeeded_update(
    pid: str, *, created_at: float, seq: int, intent: str | None = None
) -> tuple[bytes, bytes]:
    """(key, value) of the webhook-driven pending -> succeeded update of ``pid``."""
    before = row(pid, created_at=created_at, intent=intent)
    after = row(
        pid,
        created_at=created_at,
        status="succeeded",
        version=2,
        status_source="webhook",
        intent=intent,
    )
    return key(pid), envelope("u", before, after, lsn=seq)
