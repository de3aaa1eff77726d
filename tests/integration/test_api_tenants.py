"""Tenants against the real PostgreSQL, localstripe and the change stream: each API key acts for
its tenant only, in SQL (``WHERE tenant_id = …``), and the tenant travels with the row into the
Debezium change record."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from api.ids import encode_cursor
from payments.adapters.postgres.repository import PostgresRepository
from payments.domain.money import Money
from payments.ports import NewPayment, PageCursor
from payments.settings import Settings
from tests import support_api
from tests.stack_support import CdcTail

pytestmark = pytest.mark.integration
BODY = {"amount_minor": 4200, "currency": "usd", "description": "tenants"}


@pytest.fixture(scope="module")
def two_tenants(s: Settings) -> tuple[str, str]:
    names = support_api.tenants(s)
    assert len(names) >= 2, (
        f"API_KEYS names the tenants {names}; these tests need two (`make up` writes two)"
    )
    return names[0], names[1]


@pytest.fixture(scope="module")
def app(s: Settings, repo: PostgresRepository) -> Flask:
    return create_app(s)


def _clients(app: Flask, s: Settings, tenants: tuple[str, str]) -> tuple[FlaskClient, FlaskClient]:
    return (
        support_api.keyed_client(app, s, tenants[0]),
        support_api.keyed_client(app, s, tenants[1]),
    )


def _create(client: FlaskClient, key: str, body: dict[str, Any] = BODY) -> dict[str, Any]:
    r = client.post("/payments", json=body, headers={"Idempotency-Key": key})
    assert r.status_code == 201, r.json
    created: dict[str, Any] = r.json
    return created


def _first_after(client: FlaskClient, payment: dict[str, Any]) -> list[str]:
    """The ids of the page that starts right where ``payment`` was created."""
    created = PageCursor(
        datetime.fromisoformat(payment["created_at"]) - timedelta(microseconds=1), UUID(int=0)
    )
    page = client.get("/payments", query_string={"after": encode_cursor(created), "limit": 5})
    assert page.status_code == 200, page.json
    return [p["id"] for p in page.json["data"]]


def test_another_tenants_payment_is_a_404_everywhere_and_never_listed(
    app: Flask, s: Settings, two_tenants: tuple[str, str], repo: PostgresRepository
) -> None:
    owner, other = _clients(app, s, two_tenants)
    mine = _create(owner, f"t-{uuid4()}")
    pid = mine["id"]
    for method, path, body in (
        ("GET", f"/payments/{pid}", None),
        ("POST", f"/payments/{pid}/cancel", None),
        ("POST", f"/payments/{pid}/confirm", {"payment_method": "pm_card_visa"}),
        ("GET", f"/payments/{pid}/timeline", None),
        ("POST", f"/payments/{pid}/checkout-token", None),
    ):
        r = other.open(path, method=method, json=body)
        assert r.status_code == 404, (path, r.json)
        assert r.json["detail"] == f"payment {pid} does not exist", r.json
    assert pid not in _first_after(other, mine)
    assert _first_after(owner, mine)[0] == pid
    stored = repo.get(UUID(pid))
    assert stored is not None
    assert (stored.status.value, stored.tenant_id) == ("pending", two_tenants[0])
    assert stored.provider_status == "requires_payment_method"  # nobody confirmed or canceled it


def test_one_idempotency_key_in_two_tenants_makes_two_payments(
    app: Flask,
    s: Settings,
    two_tenants: tuple[str, str],
    repo: PostgresRepository,
) -> None:
    first, second = _clients(app, s, two_tenants)
    key = f"order-{uuid4()}"
    a = _create(first, key)
    b = _create(second, key, {**BODY, "amount_minor": 9900})
    assert a["id"] != b["id"]
    with repo.pool.connection() as conn:
        rows = conn.execute(
            "SELECT tenant_id, amount_minor FROM payments WHERE idempotency_key = %s "
            "ORDER BY tenant_id",
            (key,),
        ).fetchall()
    assert rows == sorted([(two_tenants[0], 4200), (two_tenants[1], 9900)])
    local = support_api.LocalStripe(s)
    assert [i["amount"] for i in local.intents_for(a["id"])] == [4200]
    assert [i["amount"] for i in local.intents_for(b["id"])] == [9900]
    replay = second.post(
        "/payments", json={**BODY, "amount_minor": 9900}, headers={"Idempotency-Key": key}
    )
    assert (replay.status_code, replay.json["id"]) == (201, b["id"])
    conflict = second.post("/payments", json=BODY, headers={"Idempotency-Key": key})
    assert conflict.status_code == 409
    assert a["id"] not in conflict.get_data(as_text=True)


def test_the_repository_scopes_by_tenant_in_sql(repo: PostgresRepository) -> None:
    key = f"repo-{uuid4()}"
    made = {
        tenant: repo.insert_pending(
            NewPayment(uuid4(), key, "h", Money(1000, "usd"), tenant_id=tenant)
        )
        for tenant in ("t-one", "t-two")
    }
    assert all(result.created for result in made.values())
    one = made["t-one"].payment
    assert repo.get(one.id, tenant_id="t-one") == one
    assert repo.get(one.id, tenant_id="t-two") is None
    assert repo.get_for_read(one.id, tenant_id="t-two") is None
    assert repo.get(one.id) == one  # the worker and the reconciler read across tenants
    again = repo.insert_pending(NewPayment(uuid4(), key, "h2", Money(5, "usd"), tenant_id="t-one"))
    assert (again.created, again.payment.id) == (False, one.id)
    before = PageCursor(one.created_at - timedelta(microseconds=1), UUID(int=0))
    page, _ = repo.list_page(tenant_id="t-two", after=before, limit=100)
    assert one.id not in [p.id for p in page]
    assert {p.tenant_id for p in page} == {"t-two"}


def test_the_schema_backfills_and_requires_the_tenant(repo: PostgresRepository) -> None:
    with repo.pool.connection() as conn:
        column = conn.execute(
            "SELECT is_nullable, column_default FROM information_schema.columns "
            "WHERE table_name = 'payments' AND column_name = 'tenant_id'"
        ).fetchone()
        uniques = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'payments'::regclass AND contype = 'u'"
        ).fetchall()
        pid = uuid4()
        conn.execute(
            "INSERT INTO payments (id, idempotency_key, request_hash, amount_minor, currency) "
            "VALUES (%s, %s, 'h', 100, 'usd')",
            (pid, f"by-hand-{pid}"),
        )
        by_hand = conn.execute("SELECT tenant_id FROM payments WHERE id = %s", (pid,)).fetchone()
        with pytest.raises(psycopg.errors.NotNullViolation), conn.transaction():
            conn.execute(
                "INSERT INTO payments (id, tenant_id, idempotency_key, request_hash, "
                "amount_minor, currency) VALUES (%s, NULL, 'k', 'h', 100, 'usd')",
                (uuid4(),),
            )
    assert column is not None and column[0] == "NO"
    assert by_hand == ("default",)  # rows from before tenants, or written by hand
    definitions = {d for (d,) in uniques}
    assert "UNIQUE (tenant_id, idempotency_key)" in definitions
    assert "UNIQUE (idempotency_key)" not in definitions


def test_the_tenant_is_in_the_change_record(s: Settings, repo: PostgresRepository) -> None:
    tail = CdcTail(s)
    try:
        made = repo.insert_pending(
            NewPayment(uuid4(), f"cdc-{uuid4()}", "h", Money(1234, "usd"), tenant_id="t-cdc")
        )
        pid = str(made.payment.id)
        seen = tail.collect([(pid, "c")], timeout=60)
    finally:
        tail.close()
    assert (pid, "c") in seen, "the insert did not reach the change topic within 60 s"
    after = seen[(pid, "c")]["after"]
    assert after["tenant_id"] == "t-cdc", json.dumps(after)[:500]
