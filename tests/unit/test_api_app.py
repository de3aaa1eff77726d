"""The Flask app over in-memory fakes: HTTP shapes, problems, auth, limits, docs, metrics."""

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from api.bootstrap import build_api_services
from payments.domain.errors import ProviderDeclined, RetryableError
from payments.settings import Settings
from tests.fakes import FakePaymentRepository, FakeStripeGateway

SECRET = "whsec_unit"
BODY = {"amount_minor": 2500, "currency": "usd", "metadata": {"order": "7"}}


@pytest.fixture
def stripe() -> FakeStripeGateway:
    return FakeStripeGateway(honour_idempotency=False)


@pytest.fixture
def repo() -> FakePaymentRepository:
    return FakePaymentRepository()


def make_app(repo: FakePaymentRepository, stripe: FakeStripeGateway, **settings: Any) -> Flask:
    s = Settings(stripe_webhook_secret=SECRET, api_max_body_bytes=4096, **settings)
    return create_app(s, services=build_api_services(s, repository=repo, gateway=stripe))


@pytest.fixture
def client(repo: FakePaymentRepository, stripe: FakeStripeGateway) -> FlaskClient:
    return make_app(repo, stripe).test_client()


def post(client: FlaskClient, body: Any = BODY, key: str | None = "k1", headers: Any = None) -> Any:
    sent = {"Idempotency-Key": key} if key is not None else {}
    return client.post("/payments", json=body, headers={**sent, **(headers or {})})


def test_create_answers_201_with_client_secret(client: FlaskClient) -> None:
    r = post(client)
    assert r.status_code == 201
    assert r.json["status"] == "pending"
    assert r.json["client_secret"].startswith(r.json["provider_payment_id"])
    assert r.headers["Location"] == f"/payments/{r.json['id']}"
    assert "Idempotent-Replayed" not in r.headers
    assert r.headers["X-Request-Id"]


def test_replay_has_header_and_same_body(client: FlaskClient) -> None:
    first = post(client)
    again = post(client)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json["id"] == first.json["id"]
    assert again.json["client_secret"] == first.json["client_secret"]


def test_key_reuse_with_other_body_is_422_problem(client: FlaskClient) -> None:
    post(client)
    r = post(client, {**BODY, "amount_minor": 2600})
    assert r.status_code == 422
    assert r.content_type == "application/problem+json"
    assert r.json["type"] == "/problems/idempotency-key-reused"
    assert r.json["errors"][0]["field"] == "Idempotency-Key"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount_minor": 0, "currency": "usd"}, "amount_minor"),
        ({"amount_minor": 100_000_000, "currency": "usd"}, "amount_minor"),
        ({"amount_minor": "12", "currency": "usd"}, "amount_minor"),
        ({"amount_minor": 12.5, "currency": "usd"}, "amount_minor"),
        ({"amount_minor": 12, "currency": "xyz"}, "currency"),
        ({"amount_minor": 12}, "currency"),
        ({"amount_minor": 12, "currency": "usd", "metadata": {"payment_id": "x"}}, "metadata"),
        ({"amount_minor": 12, "currency": "usd", "metadata": {"k": "v" * 501}}, "metadata.k"),
        ({"amount_minor": 12, "currency": "usd", "customer_email": "nope"}, "customer_email"),
        ({"amount_minor": 12, "currency": "usd", "surprise": 1}, "surprise"),
    ],
)
def test_invalid_fields_are_named(client: FlaskClient, body: dict[str, Any], field: str) -> None:
    r = post(client, body)
    assert r.status_code == 422
    assert r.content_type == "application/problem+json"
    assert field in [e["field"] for e in r.json["errors"]]


def test_uppercase_currency_is_accepted_and_normalised(client: FlaskClient) -> None:
    r = post(client, {"amount_minor": 500, "currency": "JPY"})
    assert r.status_code == 201
    assert r.json["currency"] == "jpy"


def test_missing_key_malformed_json_wrong_type_and_big_body(client: FlaskClient) -> None:
    r = post(client, key=None)
    assert (r.status_code, r.json["errors"][0]["field"]) == (400, "Idempotency-Key")
    r = client.post(
        "/payments", data="{nope", content_type="application/json", headers={"Idempotency-Key": "k"}
    )
    assert (r.status_code, r.json["type"]) == (400, "/problems/malformed-json")
    r = client.post("/payments", data="a=1", headers={"Idempotency-Key": "k"})
    assert r.status_code == 415
    r = post(client, {"amount_minor": 1, "currency": "usd", "description": "x" * 5000})
    assert r.status_code == 413
    assert r.content_type == "application/problem+json"


def test_stripe_unreachable_gives_202_pending(
    client: FlaskClient, stripe: FakeStripeGateway
) -> None:
    stripe.fail_with = RetryableError("connection refused")
    r = post(client)
    assert r.status_code == 202
    assert r.json["provider_payment_id"] is None
    assert r.json["client_secret"] is None
    assert "Stripe could not be reached" in r.json["pending_reason"]


def test_declined_is_4xx_problem_and_payment_failed(
    client: FlaskClient, stripe: FakeStripeGateway
) -> None:
    stripe.fail_with = ProviderDeclined("Your card was declined.", code="card_declined")
    r = post(client)
    assert r.status_code == 402
    assert r.json["code"] == "card_declined"
    stripe.fail_with = None
    got = client.get(f"/payments/{r.json['payment_id']}")
    assert got.json["status"] == "failed"


def test_get_list_and_cancel(client: FlaskClient) -> None:
    ids = [post(client, key=f"k{i}").json["id"] for i in range(5)]
    assert client.get(f"/payments/{ids[0]}").json["id"] == ids[0]
    assert client.get("/payments/not-a-uuid").status_code == 422
    assert client.get("/payments/00000000-0000-0000-0000-000000000000").status_code == 404
    seen: list[str] = []
    after = None
    while True:
        query = {"limit": 2, **({"after": after} if after else {})}
        page = client.get("/payments", query_string=query).json
        seen += [p["id"] for p in page["data"]]
        after = page["next"]
        if after is None:
            break
    assert seen == ids
    assert client.post(f"/payments/{ids[1]}/cancel").json["status"] == "canceled"
    pending = client.get("/payments", query_string={"status": "pending"}).json["data"]
    assert len(pending) == 4
    assert client.get("/payments", query_string={"status": "bogus"}).status_code == 422
    assert client.get("/payments", query_string={"limit": 0}).status_code == 422
    assert client.get("/payments", query_string={"after": "!!"}).status_code == 422


def test_api_keys_guard_everything_but_open_endpoints(
    repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    client = make_app(repo, stripe, api_keys="secret-1, secret-2").test_client()
    r = post(client)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert post(client, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert post(client, headers={"Authorization": "Bearer secret-2"}).status_code == 201
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert client.get(path).status_code == 200, path
    # /metrics wants the operator credential instead (tests/unit/test_ops_api.py)
    assert client.post("/webhooks/stripe", data="{}").status_code == 400  # not 401


def signed(payload: dict[str, Any], *, secret: str = SECRET, at: int | None = None) -> Any:
    raw = json.dumps(payload)
    ts = at if at is not None else int(time.time())
    sig = hmac.new(secret.encode(), f"{ts}.{raw}".encode(), hashlib.sha256).hexdigest()
    return {
        "data": raw,
        "headers": {"Stripe-Signature": f"t={ts},v1={sig}"},
        "content_type": "application/json",
    }


def event(event_id: str, kind: str, intent_id: str, payment_id: str, status: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "type": kind,
        "created": int(time.time()),
        "data": {
            "object": {
                "id": intent_id,
                "object": "payment_intent",
                "status": status,
                "amount": 2500,
                "currency": "usd",
                "metadata": {"payment_id": payment_id},
            }
        },
    }


def test_webhook_applies_once_and_rejects_bad_signatures(client: FlaskClient) -> None:
    created = post(client).json
    evt = event(
        "evt_1",
        "payment_intent.succeeded",
        created["provider_payment_id"],
        created["id"],
        "succeeded",
    )
    r = client.post("/webhooks/stripe", **signed(evt))
    assert r.json == {"status": "processed", "outcome": "applied"}
    assert client.post("/webhooks/stripe", **signed(evt)).json["status"] == "duplicate"
    assert client.get(f"/payments/{created['id']}").json["status"] == "succeeded"
    bad = client.post("/webhooks/stripe", **signed(evt, secret="whsec_other"))
    assert bad.status_code == 400
    assert bad.json["errors"][0]["field"] == "Stripe-Signature"
    stale = client.post("/webhooks/stripe", **signed(evt, at=int(time.time()) - 301))
    assert stale.status_code == 400
    assert "timestamp" in stale.json["detail"].lower()


def test_openapi_docs_and_metrics(repo: FakePaymentRepository, stripe: FakeStripeGateway) -> None:
    client = make_app(repo, stripe, operator_credentials="ops:pw").test_client()
    spec = client.get("/openapi.json").json
    assert spec["openapi"].startswith("3.1")
    assert "/payments/{payment_id}/cancel" in spec["paths"]
    assert "CreatePayment" in spec["components"]["schemas"]
    docs = client.get("/docs")
    assert docs.content_type.startswith("text/html")
    assert b"POST /payments" in docs.data
    assert b"<script" not in docs.data
    post(client)
    operator = {"Authorization": "Basic " + base64.b64encode(b"ops:pw").decode()}
    text = client.get("/metrics", headers=operator).data.decode()
    assert 'http_requests_total{endpoint="/payments",method="POST",status="201"} 1.0' in text
    assert "payments_created_total 1.0" in text


def test_database_outage_is_503_with_retry_after(
    repo: FakePaymentRepository, stripe: FakeStripeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    def down(*args: Any, **kwargs: Any) -> Any:
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(repo, "insert_pending", down)
    r = post(make_app(repo, stripe).test_client())
    assert r.status_code == 503
    assert r.headers["Retry-After"]
    assert r.json["type"] == "/problems/database-unavailable"
