"""The Flask app over in-memory fakes: HTTP shapes, problems, auth, limits, docs, metrics."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import pytest
import structlog
from flask import Flask, g
from flask.testing import FlaskClient

import api
import api.auth
import api.problems
import api.views
from api import create_app
from api.auth import ConfigurationError
from api.bootstrap import build_api_services
from payments.domain.errors import PaymentsError, ProviderDeclined, RetryableError, StoreUnavailable
from payments.settings import Settings
from tests.fakes import FakePaymentRepository, FakeStripeGateway, InMemoryStatusEvents

SECRET = "whsec_unit"
BODY = {"amount_minor": 2500, "currency": "usd", "metadata": {"order": "7"}}
ACME_KEY = "key-acme-0123456789"
GLOBEX_KEY = "key-globex-0123456789"
KEYS = f"acme:{ACME_KEY},globex:{GLOBEX_KEY}"
AS_ACME = {"Authorization": f"Bearer {ACME_KEY}"}


def unit_settings(**overrides: Any) -> Settings:
    """Settings of these tests alone: no `.env`, no key or secret but the ones given here."""
    values: dict[str, Any] = {
        "api_keys": KEYS,
        "api_auth_disabled": False,
        "stripe_webhook_secret": SECRET,
        "stripe_api_base": "http://127.0.0.1:8420",
        "checkout_token_secret": "unit-checkout-secret-0123456789",
        "api_max_body_bytes": 4096,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def stripe() -> FakeStripeGateway:
    return FakeStripeGateway(honour_idempotency=False)


@pytest.fixture
def repo() -> FakePaymentRepository:
    return FakePaymentRepository()


def make_app(repo: FakePaymentRepository, stripe: FakeStripeGateway, **settings: Any) -> Flask:
    s = unit_settings(**settings)
    services = build_api_services(
        s, repository=repo, gateway=stripe, status_events=InMemoryStatusEvents()
    )
    return create_app(s, services=services)


def keyed_client(app: Flask, key: str | None = ACME_KEY) -> FlaskClient:
    """A test client that sends ``Authorization: Bearer <key>`` on every request."""
    client = app.test_client()
    if key is not None:
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return client


class RecordingLog:
    """Stands in for the modules' structlog loggers: each line with the request's context."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def _record(self, level: str, event: str, **fields: Any) -> None:
        context = structlog.contextvars.get_contextvars()
        self.lines.append({**context, **fields, "event": event, "level": level})

    def info(self, event: str, **fields: Any) -> None:
        self._record("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._record("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._record("error", event, **fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._record("error", event, **fields)

    def text(self) -> str:
        return json.dumps(self.lines)


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> RecordingLog:
    recording = RecordingLog()
    for module in (api, api.auth, api.problems, api.views):
        monkeypatch.setattr(module, "log", recording)
    return recording


@pytest.fixture
def client(repo: FakePaymentRepository, stripe: FakeStripeGateway) -> FlaskClient:
    return keyed_client(make_app(repo, stripe))


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


def test_key_reuse_with_other_body_is_a_409_problem_naming_no_payment(client: FlaskClient) -> None:
    first = post(client).json
    r = post(client, {**BODY, "amount_minor": 2600})
    assert r.status_code == 409
    assert r.content_type == "application/problem+json"
    assert r.json["type"] == "/problems/idempotency-key-reused"
    assert r.json["errors"][0]["field"] == "Idempotency-Key"
    assert first["id"] not in r.get_data(as_text=True)
    assert "Retry-After" not in r.headers  # not worth retrying: the body must change


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount_minor": 0, "currency": "usd"}, "amount_minor"),
        ({"amount_minor": 100_000_000, "currency": "usd"}, "amount_minor"),
        ({"amount_minor": "12", "currency": "usd"}, "amount_minor"),
        ({"amount_minor": 12.5, "currency": "usd"}, "amount_minor"),
        ({"amount_minor": True, "currency": "usd"}, "amount_minor"),
        ({"amount_minor": 12, "currency": "Usd"}, "currency"),
        ({"amount_minor": 12, "currency": "usd", "description": "a\x00b"}, "description"),
        ({"amount_minor": 12, "currency": "usd", "metadata": {"k" * 41: "v"}}, "metadata"),
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
    assert any(e["field"].startswith(field) for e in r.json["errors"]), r.json["errors"]


def test_uppercase_currency_is_accepted_and_normalised(client: FlaskClient) -> None:
    r = post(client, {"amount_minor": 500, "currency": "JPY"})
    assert r.status_code == 201
    assert r.json["currency"] == "jpy"


def test_an_integral_json_number_is_that_integer(client: FlaskClient) -> None:
    """JSON Schema's "integer" (the document's) includes 1999.0; it is stored as 1999 exactly."""
    r = client.post(
        "/payments",
        data=b'{"amount_minor": 1999.0, "currency": "usd"}',
        content_type="application/json",
        headers={"Idempotency-Key": "integral"},
    )
    assert r.status_code == 201, r.json
    assert r.json["amount_minor"] == 1999
    assert isinstance(r.json["amount_minor"], int)


@pytest.mark.parametrize(
    ("key", "accepted"),
    [
        ("a", True),
        ("order 1042 / try 2", True),
        ("k" * 255, True),
        ("k" * 256, False),
        ("tab\tinside", False),
        ("caf\u00e9", False),
    ],
)
def test_idempotency_key_is_1_to_255_printable_ascii(
    client: FlaskClient, key: str, accepted: bool
) -> None:
    r = post(client, key=key)
    assert (r.status_code == 201) is accepted, r.json
    if not accepted:
        assert (r.status_code, r.json["errors"][0]["field"]) == (400, "Idempotency-Key")


def test_path_ids_must_be_canonical_uuids(client: FlaskClient) -> None:
    made = post(client).json["id"]
    assert client.get(f"/payments/{made.upper()}").status_code == 200
    for other in (made.replace("-", ""), "{" + made + "}", f"urn:uuid:{made}", "null,null"):
        r = client.get(f"/payments/{other}")
        assert (r.status_code, r.json["errors"][0]["field"]) == (422, "payment_id"), other


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
    assert client.get("/payments", query_string={"limit": 2}).json["next"].count("-") == 1
    assert client.post(f"/payments/{ids[1]}/cancel").json["status"] == "canceled"
    pending = client.get("/payments", query_string={"status": "pending"}).json["data"]
    assert len(pending) == 4
    assert client.get("/payments", query_string={"status": "bogus"}).status_code == 422
    assert client.get("/payments", query_string={"limit": 0}).status_code == 422
    assert client.get("/payments", query_string={"after": "!!"}).status_code == 422
    assert client.get("/payments", query_string={"limit": "\u0663"}).status_code == 422


def test_a_missing_or_wrong_key_is_a_401_problem(
    repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    app = make_app(repo, stripe)
    anonymous = app.test_client()
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": ACME_KEY}):
        r = anonymous.post("/payments", json=BODY, headers={"Idempotency-Key": "k", **headers})
        assert r.status_code == 401, headers
        assert r.content_type == "application/problem+json"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert r.json["errors"][0]["field"] == "Authorization"
        assert "wrong-key" not in r.get_data(as_text=True)
    for path in ("/payments", f"/payments/{uuid.uuid4()}", f"/payments/{uuid.uuid4()}/timeline"):
        assert anonymous.get(path).status_code == 401, path
    assert repo.payments == {}
    assert post(anonymous, headers=AS_ACME).status_code == 201
    assert (
        post(anonymous, key="k2", headers={"Authorization": f"bearer {GLOBEX_KEY}"}).status_code
        == 201
    )


def test_open_endpoints_need_no_key(repo: FakePaymentRepository, stripe: FakeStripeGateway) -> None:
    anonymous = make_app(repo, stripe).test_client()
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs", "/checkout"):
        assert anonymous.get(path).status_code == 200, path
    assert anonymous.post("/webhooks/stripe", data="{}").status_code == 401  # its signature
    assert anonymous.get("/nowhere").status_code == 404
    assert anonymous.delete("/healthz").status_code == 405


def test_each_key_acts_for_its_tenant_in_g_and_in_the_log(
    repo: FakePaymentRepository, stripe: FakeStripeGateway, logs: RecordingLog
) -> None:
    app = make_app(repo, stripe)
    seen: list[str | None] = []

    @app.after_request
    def _tenant(response: Any) -> Any:
        seen.append(g.get("tenant"))
        return response

    keyed_client(app, GLOBEX_KEY).get("/payments")
    keyed_client(app, ACME_KEY).get("/payments")
    assert seen == ["globex", "acme"]
    requests = [x for x in logs.lines if x["event"] == "request"]
    assert [x["tenant"] for x in requests] == ["globex", "acme"]
    assert ACME_KEY not in logs.text() and GLOBEX_KEY not in logs.text()


def test_the_api_refuses_to_start_without_keys() -> None:
    with pytest.raises(ConfigurationError, match="API_KEYS") as refused:
        create_app(unit_settings(api_keys=""), services=None)
    assert "API_AUTH_DISABLED" in str(refused.value)
    with pytest.raises(ConfigurationError, match="empty key"):
        create_app(unit_settings(api_keys="acme:"))


def test_the_dev_switch_serves_everyone_as_tenant_dev_and_says_so(
    repo: FakePaymentRepository, stripe: FakeStripeGateway, logs: RecordingLog
) -> None:
    app = make_app(repo, stripe, api_keys="", api_auth_disabled=True)
    (started,) = [x for x in logs.lines if "API AUTHENTICATION IS DISABLED" in x["event"]]
    assert started["level"] == "warning"
    anonymous = app.test_client()
    r = post(anonymous)
    assert r.status_code == 201
    assert anonymous.get(f"/payments/{r.json['id']}").status_code == 200
    assert (
        post(anonymous, key="k9", headers={"Authorization": "Bearer nonsense"}).status_code == 201
    )
    assert {x["tenant"] for x in logs.lines if x["event"] == "request"} == {"dev"}


def test_problems_of_5xx_never_echo_upstream_errors_or_hosts(
    client: FlaskClient,
    stripe: FakeStripeGateway,
    repo: FakePaymentRepository,
    monkeypatch: pytest.MonkeyPatch,
    logs: RecordingLog,
) -> None:
    made = post(client).json
    stripe.fail_with = RetryableError("HTTPConnectionPool(host='10.1.2.3', port=8420): refused")
    r = client.post(f"/payments/{made['id']}/cancel", headers={"X-Request-Id": "req-42"})
    assert r.status_code == 503
    assert "10.1.2.3" not in r.get_data(as_text=True)
    (why,) = [x for x in logs.lines if "10.1.2.3" in json.dumps(x)]
    assert why["request_id"] == "req-42"  # the operator still sees why, for which request
    stripe.fail_with = None

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise PaymentsError("constraint payments_pkey on db-primary.internal:5432 violated")

    monkeypatch.setattr(repo, "get_for_read", boom)
    r = client.get(f"/payments/{made['id']}")
    assert r.status_code == 500
    assert "db-primary" not in r.get_data(as_text=True)
    assert r.json["detail"] == "an unexpected error occurred; see the server log"


def test_a_202_does_not_pass_on_stripes_error_text(
    client: FlaskClient, stripe: FakeStripeGateway
) -> None:
    stripe.fail_with = RetryableError("connect to stripe-proxy.internal:443 refused")
    r = post(client)
    assert r.status_code == 202
    assert "stripe-proxy" not in r.get_data(as_text=True)


def test_health_and_readiness_say_up_or_down_and_nothing_more(
    repo: FakePaymentRepository, stripe: FakeStripeGateway, logs: RecordingLog
) -> None:
    app = make_app(repo, stripe)
    anonymous = app.test_client()
    assert anonymous.get("/healthz").json == {"status": "up"}
    assert anonymous.get("/readyz").json == {"status": "ready", "checks": {"primary": "up"}}
    services = app.extensions["payments"]
    services.readiness["replicas"] = lambda: (
        "10.0.0.7:5433 unreachable: connection refused; is the server running?"
    )
    r = anonymous.get("/readyz")
    assert r.status_code == 503
    assert r.json == {"status": "not ready", "checks": {"primary": "up", "replicas": "down"}}
    assert "10.0.0.7" in logs.text()


def signed(payload: dict[str, Any], *, secret: str = SECRET, at: int | None = None) -> Any:
    """A webhook request as Stripe sends it: the raw JSON, signed with ``secret``."""
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
    assert bad.status_code == 401
    assert bad.content_type == "application/problem+json"
    assert bad.json["errors"][0]["field"] == "Stripe-Signature"
    stale = client.post("/webhooks/stripe", **signed(evt, at=int(time.time()) - 301))
    assert stale.status_code == 401
    assert "timestamp" in stale.json["detail"].lower()
    unsigned = client.post(
        "/webhooks/stripe", data=json.dumps(evt), content_type="application/json"
    )
    assert unsigned.status_code == 401
    binary = client.post(
        "/webhooks/stripe",
        data=b"\xff\xfe",
        headers={"Stripe-Signature": "t=1,v1=00"},
        content_type="application/json",
    )
    assert binary.status_code == 401


def _intent_event(client: FlaskClient, event_id: str) -> dict[str, Any]:
    created = post(client, key=f"k-{event_id}").json
    return event(
        event_id,
        "payment_intent.succeeded",
        created["provider_payment_id"],
        created["id"],
        "succeeded",
    )


def test_an_event_signed_with_the_old_default_secret_is_refused(
    repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    """`whsec_localstripe` was the well-known local default: anyone could forge with it."""
    client = keyed_client(make_app(repo, stripe))
    evt = _intent_event(client, "evt_forged")
    forged = client.post("/webhooks/stripe", **signed(evt, secret="whsec_localstripe"))
    assert forged.status_code == 401
    assert forged.json["type"] == "/problems/webhook-signature"
    assert {p.status.value for p in repo.payments.values()} == {"pending"}


def test_webhook_secrets_rotate_without_a_gap(
    repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    old, new = "whsec_old_0123456789", "whsec_new_0123456789"
    during = keyed_client(make_app(repo, stripe, stripe_webhook_secret=f"{new}, {old}"))
    by_old = during.post("/webhooks/stripe", **signed(_intent_event(during, "evt_a"), secret=old))
    by_new = during.post("/webhooks/stripe", **signed(_intent_event(during, "evt_b"), secret=new))
    assert (by_old.status_code, by_new.status_code) == (200, 200)
    assert {by_old.json["outcome"], by_new.json["outcome"]} == {"applied"}

    after = keyed_client(make_app(repo, stripe, stripe_webhook_secret=new))
    dropped = after.post("/webhooks/stripe", **signed(_intent_event(after, "evt_c"), secret=old))
    assert dropped.status_code == 401
    kept = after.post("/webhooks/stripe", **signed(_intent_event(after, "evt_d"), secret=new))
    assert kept.status_code == 200


def test_without_a_webhook_secret_events_are_refused_never_accepted_unverified(
    repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    client = keyed_client(make_app(repo, stripe, stripe_webhook_secret=""))
    evt = _intent_event(client, "evt_unverifiable")
    for request in (signed(evt, secret=""), signed(evt, secret="whsec_localstripe")):
        r = client.post("/webhooks/stripe", **request)
        assert r.status_code == 503
        assert r.content_type == "application/problem+json"
        assert r.json["type"] == "/problems/webhook-secret-not-configured"
        assert "STRIPE_WEBHOOK_SECRET" in r.json["detail"]
    assert {p.status.value for p in repo.payments.values()} == {"pending"}


def test_the_api_refuses_to_start_without_a_webhook_secret_for_real_stripe() -> None:
    with pytest.raises(ConfigurationError, match="STRIPE_WEBHOOK_SECRET"):
        create_app(unit_settings(stripe_api_base="", stripe_webhook_secret=""))
    with pytest.raises(ConfigurationError, match="STRIPE_WEBHOOK_SECRET"):
        create_app(
            unit_settings(stripe_api_base="https://api.stripe.com", stripe_webhook_secret=" , ")
        )


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
    post(client, headers=AS_ACME)
    operator = {"Authorization": "Basic " + base64.b64encode(b"ops:pw").decode()}
    text = client.get("/metrics", headers=operator).data.decode()
    assert 'http_requests_total{endpoint="/payments",method="POST",status="201"} 1.0' in text
    assert "payments_created_total 1.0" in text


def test_database_outage_is_503_with_retry_after(
    repo: FakePaymentRepository, stripe: FakeStripeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("the primary did not answer: connection refused")

    monkeypatch.setattr(repo, "insert_pending", down)
    r = post(keyed_client(make_app(repo, stripe)))
    assert r.status_code == 503
    assert r.headers["Retry-After"]
    assert r.json["type"] == "/problems/database-unavailable"
    assert "connection refused" not in r.get_data(as_text=True)


# -- tenants --------------------------------------------------------------------------------


def test_another_tenants_payment_is_not_found_on_every_endpoint(
    repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    app = make_app(repo, stripe)
    acme, globex = keyed_client(app, ACME_KEY), keyed_client(app, GLOBEX_KEY)
    theirs = post(acme, key="acme-1").json["id"]
    unknown = str(uuid.uuid4())
    confirm = {"payment_method": "pm_card_visa"}
    for method, path, body in (
        ("GET", "/payments/{}", None),
        ("POST", "/payments/{}/cancel", None),
        ("POST", "/payments/{}/confirm", confirm),
        ("GET", "/payments/{}/timeline", None),
        ("POST", "/payments/{}/checkout-token", None),
    ):
        seen = globex.open(path.format(theirs), method=method, json=body)
        never = globex.open(path.format(unknown), method=method, json=body)
        assert (seen.status_code, never.status_code) == (404, 404), path
        # Word for word what an unknown id gets: nothing says the payment exists elsewhere.
        assert seen.json["detail"].replace(theirs, "<id>") == never.json["detail"].replace(
            unknown, "<id>"
        )
    assert globex.get("/payments").json["data"] == []
    assert [p["id"] for p in acme.get("/payments").json["data"]] == [theirs]
    # Nothing changed for its owner: still pending, no intent confirmed, nothing canceled.
    assert acme.get(f"/payments/{theirs}").json["status"] == "pending"
    assert [i.status for i in stripe.intents_for(uuid.UUID(theirs))] == ["requires_payment_method"]


def test_idempotency_keys_are_per_tenant(
    repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    app = make_app(repo, stripe)
    acme, globex = keyed_client(app, ACME_KEY), keyed_client(app, GLOBEX_KEY)
    mine = post(acme, key="order-1042")
    theirs = post(globex, {**BODY, "amount_minor": 9900}, key="order-1042")
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in theirs.headers
    assert mine.json["id"] != theirs.json["id"]
    assert (theirs.json["amount_minor"], mine.json["amount_minor"]) == (9900, 2500)
    again = post(globex, {**BODY, "amount_minor": 9900}, key="order-1042")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json["id"] == theirs.json["id"]
    reused = post(globex, key="order-1042")  # acme's body, globex's key: globex's conflict
    assert reused.status_code == 409
    assert mine.json["id"] not in reused.get_data(as_text=True)
    assert {p.tenant_id for p in repo.payments.values()} == {"acme", "globex"}


def test_a_checkout_token_is_its_tenants(
    repo: FakePaymentRepository, stripe: FakeStripeGateway
) -> None:
    app = make_app(repo, stripe)
    acme, globex = keyed_client(app, ACME_KEY), keyed_client(app, GLOBEX_KEY)
    pid = post(acme, key="acme-2").json["id"]
    forged_for_globex = app.extensions["checkout_tokens"].mint("globex", uuid.UUID(pid)).token
    browser = app.test_client()
    r = browser.get(
        f"/payments/{pid}/timeline", headers={"Authorization": f"Bearer {forged_for_globex}"}
    )
    assert r.status_code == 404  # a token of globex (even a genuine one) cannot reach acme's
    assert globex.post(f"/payments/{pid}/checkout-token").status_code == 404


def test_the_document_refuses_exactly_the_amounts_the_server_refuses(
    client: FlaskClient,
) -> None:
    """Stripe's per-currency rules are in the document (allOf of if/then): for each currency,
    around its minimum and its rounding, the document and the server agree."""
    import jsonschema_rs

    from payments.domain.money import CURRENCIES

    spec = client.get("/openapi.json").json
    valid = jsonschema_rs.validator_for(spec["components"]["schemas"]["CreatePayment"]).is_valid
    disagreements = []
    for n, currency in enumerate(sorted(CURRENCIES)):
        for amount in (1, 29, 30, 49, 50, 51, 199, 200, 1499, 1500, 17499, 17500, 17510, 100_000):
            body = {"amount_minor": amount, "currency": currency if n % 2 else currency.upper()}
            r = post(client, body, key=f"agree-{currency}-{amount}")
            if valid(body) != (r.status_code == 201):
                disagreements.append((body, valid(body), r.status_code))
    assert disagreements == []
