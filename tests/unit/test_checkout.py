"""The checkout page's server side over fakes: the page, server-side confirmation, the timeline
the page follows, and the partition the API reads a payment's events from."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from api.bootstrap import build_api_services
from api.checkout import stripe_js_url
from api.emitted import InMemoryStatusEvents, partition_for
from payments.settings import Settings
from tests.fakes import FakePaymentRepository, FakeStripeGateway
from tests.support_api import sign

SECRET = "whsec_unit"


@pytest.fixture
def stripe() -> FakeStripeGateway:
    return FakeStripeGateway()


@pytest.fixture
def app(stripe: FakeStripeGateway) -> Flask:
    s = Settings(stripe_webhook_secret=SECRET)
    return create_app(
        s, services=build_api_services(s, repository=FakePaymentRepository(), gateway=stripe)
    )


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _create(client: FlaskClient) -> dict[str, Any]:
    response = client.post(
        "/payments",
        json={"amount_minor": 1999, "currency": "usd"},
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    assert response.status_code == 201, response.json
    body: dict[str, Any] = response.json  # type: ignore[assignment]
    return body


def _deliver(client: FlaskClient, stripe: FakeStripeGateway) -> None:
    """Send Stripe's events as signed webhooks, as Stripe would."""
    for event in stripe.events:
        obj = {
            "id": event.intent.id if event.intent else "",
            "object": "payment_intent",
            "status": event.intent.status if event.intent else "",
            "amount": event.intent.amount if event.intent else 0,
            "currency": event.intent.currency if event.intent else "",
            "metadata": {"payment_id": event.intent.payment_id if event.intent else ""},
            "last_payment_error": (
                {"code": event.intent.failure_code, "message": event.intent.failure_message}
                if event.intent and event.intent.failure_code
                else None
            ),
        }
        raw = json.dumps(
            {
                "id": event.id,
                "object": "event",
                "type": event.type,
                "created": int(time.time()),
                "data": {"object": obj},
            }
        ).encode()
        response = client.post(
            "/webhooks/stripe",
            data=raw,
            headers={"Stripe-Signature": sign(raw, SECRET)},
            content_type="application/json",
        )
        assert response.status_code == 200, response.json


def _steps(body: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {s["key"]: (s["state"], s["detail"]) for s in body["steps"]}


def test_the_page_loads_stripe_js_from_the_configured_base(client: FlaskClient) -> None:
    response = client.get("/checkout")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'src="http://127.0.0.1:8420/js.stripe.com/v3/"' in html
    assert "pk_test_localstripe" in html
    assert stripe_js_url("", "") == "https://js.stripe.com/v3/"
    assert stripe_js_url("http://localstripe:8420", "http://localhost:8420/") == (
        "http://localhost:8420/js.stripe.com/v3/"
    )


def test_the_page_is_open_when_api_keys_are_required(stripe: FakeStripeGateway) -> None:
    s = Settings(api_keys="k1")
    client = create_app(
        s, services=build_api_services(s, repository=FakePaymentRepository(), gateway=stripe)
    ).test_client()
    assert client.get("/checkout").status_code == 200
    assert client.get("/checkout/static/checkout.js").status_code == 200
    assert client.get(f"/payments/{uuid.uuid4()}/timeline").status_code == 401


def test_timeline_follows_a_payment_to_its_emitted_event(
    app: Flask, client: FlaskClient, stripe: FakeStripeGateway
) -> None:
    created = _create(client)
    pid = created["id"]
    first = client.get(f"/payments/{pid}/timeline").json
    assert first is not None
    assert _steps(first)["stored"][0] == "done"
    assert _steps(first)["intent"] == ("done", created["provider_payment_id"])
    assert [s for s, _ in list(_steps(first).values())[2:]] == ["waiting"] * 4
    assert first["finished"] is False

    confirmed = client.post(f"/payments/{pid}/confirm", json={"payment_method": "pm_card_visa"})
    assert confirmed.status_code == 200
    assert confirmed.json is not None and confirmed.json["provider_status"] == "succeeded"
    # Confirming changes nothing in the database: the webhook carries the outcome.
    assert client.get(f"/payments/{pid}").json["status"] == "pending"  # type: ignore[index]

    _deliver(client, stripe)
    middle = client.get(f"/payments/{pid}/timeline").json
    assert middle is not None
    steps = _steps(middle)
    assert steps["webhook"] == ("done", "payment_intent.succeeded (applied)")
    assert steps["database"][0] == "done"
    assert "pending → succeeded by webhook" in steps["database"][1]
    assert steps["event"][0] == "waiting" and middle["finished"] is False

    version = middle["audit"][-1]["version"]
    events: InMemoryStatusEvents = app.extensions["payments"].status_events
    events.events[uuid.UUID(pid)] = [
        {"event_id": f"{pid}:1", "status": "pending", "version": 1},  # not the current status
        {"event_id": f"{pid}:{version}", "status": "succeeded", "version": version},
    ]
    last = client.get(f"/payments/{pid}/timeline").json
    assert last is not None
    assert _steps(last)["event"] == ("done", f"{pid}:{version}")
    assert last["finished"] is True
    assert [w["type"] for w in last["webhooks"]] == ["payment_intent.succeeded"]


def test_a_declined_card_is_a_402_and_the_timeline_shows_the_reason(
    client: FlaskClient, stripe: FakeStripeGateway
) -> None:
    pid = _create(client)["id"]
    declined = client.post(
        f"/payments/{pid}/confirm", json={"payment_method": "pm_card_chargeDeclined"}
    )
    assert declined.status_code == 402
    assert declined.json is not None and declined.json["code"] == "card_declined"
    _deliver(client, stripe)
    body = client.get(f"/payments/{pid}/timeline").json
    assert body is not None and body["payment"]["status"] == "failed"
    assert _steps(body)["confirmed"] == ("failed", "Your card was declined. (card_declined)")


def test_3d_secure_is_reported_by_the_confirmation(client: FlaskClient) -> None:
    pid = _create(client)["id"]
    answer = client.post(
        f"/payments/{pid}/confirm", json={"payment_method": "pm_card_threeDSecureRequired"}
    )
    assert answer.json is not None and answer.json["provider_status"] == "requires_action"


def test_confirm_and_timeline_validate_their_input(client: FlaskClient) -> None:
    assert client.get("/payments/not-a-uuid/timeline").status_code == 422
    assert client.get(f"/payments/{uuid.uuid4()}/timeline").status_code == 404
    pid = _create(client)["id"]
    bad = client.post(f"/payments/{pid}/confirm", json={"payment_method": "4242424242424242"})
    assert bad.status_code == 422
    assert bad.json is not None and bad.json["errors"][0]["field"] == "payment_method"
    assert (
        client.post(f"/payments/{uuid.uuid4()}/confirm", json={"payment_method": "pm_x"})
    ).status_code == 404


def test_a_final_payment_cannot_be_confirmed_again(
    client: FlaskClient, stripe: FakeStripeGateway
) -> None:
    pid = _create(client)["id"]
    client.post(f"/payments/{pid}/confirm", json={"payment_method": "pm_card_visa"})
    _deliver(client, stripe)
    again = client.post(f"/payments/{pid}/confirm", json={"payment_method": "pm_card_visa"})
    assert again.status_code == 409
    assert again.json is not None and "already succeeded" in again.json["detail"]


@pytest.mark.parametrize("partitions", [1, 6, 12])
def test_the_api_reads_the_partition_the_worker_writes(partitions: int) -> None:
    """Faust's producer is aiokafka: its default partitioner places keyed records."""
    aiokafka_partitioner = DefaultPartitioner()
    for _ in range(200):
        key = str(uuid.uuid4()).encode()
        expected = aiokafka_partitioner(key, list(range(partitions)), list(range(partitions)))
        assert partition_for(key, partitions) == expected
