"""Signed webhooks against the real database: duplicate, out of order, bad signature, stale."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID, uuid4

import pytest
from flask.testing import FlaskClient

from api import create_app
from payments.adapters.postgres.repository import PostgresRepository
from payments.domain.status import Source, Status
from payments.settings import Settings
from tests import support_api

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(s: Settings, repo: PostgresRepository) -> FlaskClient:
    return support_api.keyed_client(create_app(s), s)


@pytest.fixture
def payment(client: FlaskClient) -> dict[str, Any]:
    r = client.post(
        "/payments",
        json={"amount_minor": 1000, "currency": "usd"},
        headers={"Idempotency-Key": f"wh-{uuid4()}"},
    )
    assert r.status_code == 201, r.json
    body: dict[str, Any] = r.json
    return body


def deliver(
    client: FlaskClient,
    s: Settings,
    raw: bytes,
    *,
    secret: str | None = None,
    at: int | None = None,
) -> Any:
    header = support_api.sign(raw, secret or s.webhook_secrets[0], at=at)
    return client.post(
        "/webhooks/stripe",
        data=raw,
        content_type="application/json",
        headers={"Stripe-Signature": header},
    )


def inbox(repo: PostgresRepository, event_id: str) -> list[tuple[Any, ...]]:
    with repo.pool.connection() as conn:
        return conn.execute(
            "SELECT event_id, type, payment_id, outcome FROM webhook_events WHERE event_id = %s",
            (event_id,),
        ).fetchall()


def stored_status(repo: PostgresRepository, payment_id: str) -> str | None:
    """The status on the primary: what the webhook wrote, free of replica lag."""
    stored = repo.get(UUID(payment_id))
    return None if stored is None else stored.status


def trail(repo: PostgresRepository, payment_id: str) -> list[tuple[Any, ...]]:
    return [
        (e.from_status, e.to_status, e.source, e.provider_event_id)
        for e in repo.events(UUID(payment_id))
    ]


def test_redelivered_event_is_acknowledged_without_effect(
    client: FlaskClient, s: Settings, repo: PostgresRepository, payment: dict[str, Any]
) -> None:
    event_id = f"evt_{uuid4().hex}"
    raw = support_api.intent_event(
        event_id,
        "payment_intent.succeeded",
        intent_id=payment["provider_payment_id"],
        payment_id=payment["id"],
        status="succeeded",
    )
    first = deliver(client, s, raw)
    assert (first.status_code, first.json) == (200, {"status": "processed", "outcome": "applied"})
    second = deliver(client, s, raw)
    assert (second.status_code, second.json["status"]) == (200, "duplicate")
    assert trail(repo, payment["id"]) == [
        (Status.PENDING, Status.SUCCEEDED, Source.WEBHOOK, event_id)
    ]
    assert inbox(repo, event_id) == [
        (event_id, "payment_intent.succeeded", UUID(payment["id"]), "applied")
    ]


def test_older_event_after_newer_never_leaves_final_status(
    client: FlaskClient, s: Settings, repo: PostgresRepository, payment: dict[str, Any]
) -> None:
    now = int(time.time())
    older = support_api.intent_event(
        f"evt_old_{uuid4().hex}",
        "payment_intent.payment_failed",
        intent_id=payment["provider_payment_id"],
        payment_id=payment["id"],
        status="requires_payment_method",
        created=now - 60,
        error={"code": "card_declined", "message": "Your card was declined."},
    )
    newer_id = f"evt_new_{uuid4().hex}"
    newer = support_api.intent_event(
        newer_id,
        "payment_intent.succeeded",
        intent_id=payment["provider_payment_id"],
        payment_id=payment["id"],
        status="succeeded",
        created=now,
    )
    assert deliver(client, s, newer).json["outcome"] == "applied"
    late = deliver(client, s, older)
    assert (late.status_code, late.json["outcome"]) == (200, "refused")
    assert stored_status(repo, payment["id"]) == "succeeded"
    assert trail(repo, payment["id"]) == [
        (Status.PENDING, Status.SUCCEEDED, Source.WEBHOOK, newer_id)
    ]


def test_failed_then_succeeded_records_both(
    client: FlaskClient, s: Settings, repo: PostgresRepository, payment: dict[str, Any]
) -> None:
    failed_id, ok_id = f"evt_{uuid4().hex}", f"evt_{uuid4().hex}"
    deliver(
        client,
        s,
        support_api.intent_event(
            failed_id,
            "payment_intent.payment_failed",
            intent_id=payment["provider_payment_id"],
            payment_id=payment["id"],
            status="requires_payment_method",
            error={"code": "card_declined", "message": "Your card was declined."},
        ),
    )
    stored = repo.get(UUID(payment["id"]))
    assert stored is not None
    assert (stored.status, stored.failure_code) == (Status.FAILED, "card_declined")
    deliver(
        client,
        s,
        support_api.intent_event(
            ok_id,
            "payment_intent.succeeded",
            intent_id=payment["provider_payment_id"],
            payment_id=payment["id"],
            status="succeeded",
        ),
    )
    assert trail(repo, payment["id"]) == [
        (Status.PENDING, Status.FAILED, Source.WEBHOOK, failed_id),
        (Status.FAILED, Status.SUCCEEDED, Source.WEBHOOK, ok_id),
    ]


def test_bad_signature_and_stale_timestamp_are_401_without_effect(
    client: FlaskClient, s: Settings, repo: PostgresRepository, payment: dict[str, Any]
) -> None:
    event_id = f"evt_{uuid4().hex}"
    raw = support_api.intent_event(
        event_id,
        "payment_intent.succeeded",
        intent_id=payment["provider_payment_id"],
        payment_id=payment["id"],
        status="succeeded",
    )
    forged = deliver(client, s, raw, secret="whsec_not_ours")
    assert forged.status_code == 401
    assert forged.content_type == "application/problem+json"
    assert forged.json["errors"][0]["field"] == "Stripe-Signature"
    old_default = deliver(client, s, raw, secret="whsec_localstripe")
    assert old_default.status_code == 401
    stale = deliver(client, s, raw, at=int(time.time()) - s.stripe_webhook_tolerance_seconds - 30)
    assert stale.status_code == 401
    assert "timestamp" in stale.json["detail"].lower()
    tampered = raw.replace(b'"succeeded"', b'"canceled"')
    header = support_api.sign(raw, s.webhook_secrets[0])
    r = client.post(
        "/webhooks/stripe",
        data=tampered,
        content_type="application/json",
        headers={"Stripe-Signature": header},
    )
    assert r.status_code == 401
    missing = client.post("/webhooks/stripe", data=raw, content_type="application/json")
    assert missing.status_code == 401
    assert inbox(repo, event_id) == []
    assert trail(repo, payment["id"]) == []
    assert stored_status(repo, payment["id"]) == "pending"


def test_unknown_payment_and_unknown_type_are_acknowledged(
    client: FlaskClient, s: Settings, repo: PostgresRepository
) -> None:
    unknown_id = f"evt_{uuid4().hex}"
    raw = support_api.intent_event(
        unknown_id,
        "payment_intent.succeeded",
        intent_id=f"pi_{uuid4().hex}",
        payment_id=str(uuid4()),
        status="succeeded",
    )
    r = deliver(client, s, raw)
    assert (r.status_code, r.json["outcome"]) == (200, "unknown_payment")
    other_id = f"evt_{uuid4().hex}"
    charge = (
        b'{"id": "' + other_id.encode() + b'", "object": "event", "type": '
        b'"charge.refunded", "created": 1, "data": {"object": {"id": "ch_1", '
        b'"object": "charge"}}}'
    )
    r = deliver(client, s, charge)
    assert (r.status_code, r.json["outcome"]) == (200, "ignored")
    assert inbox(repo, unknown_id)[0][3] == "unknown_payment"
    assert inbox(repo, other_id)[0][3] == "ignored"


def test_requires_action_updates_stripe_status_only(
    client: FlaskClient, s: Settings, repo: PostgresRepository, payment: dict[str, Any]
) -> None:
    raw = support_api.intent_event(
        f"evt_{uuid4().hex}",
        "payment_intent.requires_action",
        intent_id=payment["provider_payment_id"],
        payment_id=payment["id"],
        status="requires_action",
    )
    assert deliver(client, s, raw).json["outcome"] == "provider_status"
    got = repo.get(UUID(payment["id"]))
    assert got is not None
    assert (got.status, got.provider_status) == ("pending", "requires_action")
    assert trail(repo, payment["id"]) == []


def foreign_refusals(client: FlaskClient, s: Settings) -> float:
    """``stripe_webhooks_total{type="payment_intent.succeeded",outcome="foreign_intent"}`` as
    the API's /metrics (operator login) shows it."""
    login = support_api.operator_auth(s)
    assert login is not None, "OPERATOR_CREDENTIALS is empty"
    text = client.get("/metrics", auth=login).get_data(as_text=True)
    labels = ('outcome="foreign_intent"', 'type="payment_intent.succeeded"')
    values = [
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("stripe_webhooks_total{") and all(label in line for label in labels)
    ]
    assert len(values) <= 1, values
    return values[0] if values else 0.0


@pytest.mark.parametrize(
    ("intent", "amount", "currency"),
    [("other", 1000, "usd"), ("own", 999, "usd"), ("own", 1000, "eur")],
    ids=["another intent naming the payment", "own id, other amount", "own id, other currency"],
)
def test_an_event_about_an_intent_that_is_not_the_payments_own_is_refused_and_kept(
    client: FlaskClient,
    s: Settings,
    repo: PostgresRepository,
    payment: dict[str, Any],
    intent: str,
    amount: int,
    currency: str,
) -> None:
    """A forged or foreign `payment_intent.succeeded` (correctly signed: another integration on
    the same Stripe account) must not mark the payment paid."""
    event_id = f"evt_{uuid4().hex}"
    intent_id = payment["provider_payment_id"] if intent == "own" else f"pi_{uuid4().hex[:14]}"
    raw = support_api.intent_event(
        event_id,
        "payment_intent.succeeded",
        intent_id=intent_id,
        payment_id=payment["id"],
        status="succeeded",
        amount=amount,
        currency=currency,
    )
    refusals_before = foreign_refusals(client, s)
    r = deliver(client, s, raw)
    assert r.status_code == 200, r.json
    assert r.json["outcome"] == "foreign_intent"
    assert foreign_refusals(client, s) == refusals_before + 1, "counted in the API's metric"
    assert stored_status(repo, payment["id"]) == "pending"
    assert trail(repo, payment["id"]) == []
    with repo.pool.connection() as conn:
        row = conn.execute(
            "SELECT outcome, reason FROM webhook_events WHERE event_id = %s", (event_id,)
        ).fetchone()
    assert row is not None and row[0] == "foreign_intent" and row[1], "kept with its reason"


def test_a_declined_payment_paid_later_on_the_same_intent_ends_succeeded(
    client: FlaskClient, s: Settings, repo: PostgresRepository, payment: dict[str, Any]
) -> None:
    declined = support_api.intent_event(
        f"evt_{uuid4().hex}",
        "payment_intent.payment_failed",
        intent_id=payment["provider_payment_id"],
        payment_id=payment["id"],
        status="requires_payment_method",
        error={"code": "card_declined", "message": "Your card was declined."},
    )
    assert deliver(client, s, declined).json["outcome"] == "applied"
    assert stored_status(repo, payment["id"]) == "failed"
    paid = support_api.intent_event(
        f"evt_{uuid4().hex}",
        "payment_intent.succeeded",
        intent_id=payment["provider_payment_id"],
        payment_id=payment["id"],
        status="succeeded",
    )
    assert deliver(client, s, paid).json["outcome"] == "applied"
    assert stored_status(repo, payment["id"]) == "succeeded"
    assert [(a, b) for a, b, _, _ in trail(repo, payment["id"])] == [
        (Status.PENDING, Status.FAILED),
        (Status.FAILED, Status.SUCCEEDED),
    ]
