"""The checkout page's server side over fakes: the page (demo shop and merchant link), the demo
merchant's order step, checkout tokens and their scope, server-side confirmation, the timeline
the page follows, and the partition the API reads a payment's events from."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from api.auth import ConfigurationError
from api.bootstrap import build_api_services
from api.checkout import stripe_js_url
from api.checkout_tokens import CheckoutTokens
from api.emitted import partition_for
from payments.domain.events import StatusUpdate
from payments.settings import Settings
from tests.fakes import FakePaymentRepository, FakeStripeGateway, InMemoryStatusEvents
from tests.support_api import sign

SECRET = "whsec_unit"
MERCHANT_KEY = "key-acme-0123456789"
OTHER_KEY = "key-globex-0123456789"
TOKEN_SECRET = "unit-checkout-secret-0123456789"


def unit_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_keys": f"acme:{MERCHANT_KEY},globex:{OTHER_KEY}",
        "api_auth_disabled": False,
        "stripe_webhook_secret": SECRET,
        "stripe_api_base": "http://127.0.0.1:8420",
        "checkout_token_secret": TOKEN_SECRET,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def make_app(stripe: FakeStripeGateway, **overrides: Any) -> Flask:
    s = unit_settings(**overrides)
    services = build_api_services(
        s,
        repository=FakePaymentRepository(),
        gateway=stripe,
        status_events=InMemoryStatusEvents(),
    )
    return create_app(s, services=services)


@pytest.fixture
def stripe() -> FakeStripeGateway:
    return FakeStripeGateway()


@pytest.fixture
def app(stripe: FakeStripeGateway) -> Flask:
    return make_app(stripe)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """The merchant's server: every request with the merchant's API key."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {MERCHANT_KEY}"
    return client


@pytest.fixture
def browser(app: Flask) -> FlaskClient:
    """The customer's browser: no key; it holds what the page hands it."""
    return app.test_client()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _create(client: FlaskClient, amount_minor: int = 1999) -> dict[str, Any]:
    response = client.post(
        "/payments",
        json={"amount_minor": amount_minor, "currency": "usd"},
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    assert response.status_code == 201, response.json
    body: dict[str, Any] = response.json  # type: ignore[assignment]
    return body


def _token(client: FlaskClient, payment_id: str) -> str:
    response = client.post(f"/payments/{payment_id}/checkout-token")
    assert response.status_code == 200, response.json
    assert response.json is not None
    token: str = response.json["token"]
    assert response.json["checkout_url"] == f"/checkout?token={token}"
    return token


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


def test_the_page_loads_stripe_js_from_the_configured_base(browser: FlaskClient) -> None:
    response = browser.get("/checkout")
    assert response.status_code == 200
    assert response.headers["Referrer-Policy"] == "no-referrer"
    html = response.get_data(as_text=True)
    assert 'src="http://127.0.0.1:8420/js.stripe.com/v3/"' in html
    assert "pk_test_localstripe" in html
    assert stripe_js_url("", "") == "https://js.stripe.com/v3/"
    assert stripe_js_url("http://localstripe:8420", "http://localhost:8420/") == (
        "http://localhost:8420/js.stripe.com/v3/"
    )


def test_the_page_is_open_and_the_api_behind_it_is_not(browser: FlaskClient) -> None:
    assert browser.get("/checkout").status_code == 200
    assert browser.get("/checkout/static/checkout.js").status_code == 200
    assert browser.get(f"/payments/{uuid.uuid4()}/timeline").status_code == 401


def test_the_demo_shop_prices_the_order_on_the_server(app: Flask, browser: FlaskClient) -> None:
    page = browser.get("/checkout?order=teapot").get_data(as_text=True)
    assert '<option value="teapot" data-price="45.00 EUR" selected>' in page
    assert 'id="amount"' not in page  # nothing for the browser to set an amount with
    key = {"Idempotency-Key": str(uuid.uuid4())}
    made = browser.post("/checkout/orders", json={"order": "teapot"}, headers=key)
    assert made.status_code == 201, made.json
    assert made.json is not None
    assert (made.json["amount_minor"], made.json["currency"]) == (4500, "eur")
    assert made.json["client_secret"] and made.json["checkout_token"]
    cheaper = browser.post(
        "/checkout/orders", json={"order": "teapot", "amount_minor": 1}, headers=key
    )
    assert cheaper.status_code == 422  # the browser cannot name a price
    again = browser.post("/checkout/orders", json={"order": "teapot"}, headers=key)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json is not None and again.json["id"] == made.json["id"]
    other = browser.post("/checkout/orders", json={"order": "kettle"}, headers=key)
    assert other.status_code == 409  # the key belongs to the teapot
    unknown = browser.post(
        "/checkout/orders", json={"order": "yacht"}, headers={"Idempotency-Key": "k"}
    )
    assert unknown.status_code == 404
    assert browser.get("/checkout?order=yacht").status_code == 404


def test_a_checkout_token_confirms_and_follows_its_own_payment_only(
    client: FlaskClient, browser: FlaskClient
) -> None:
    mine = _create(client)
    theirs = _create(client)
    token = _token(client, mine["id"])
    assert browser.get(f"/payments/{mine['id']}/timeline", headers=bearer(token)).status_code == 200
    confirmed = browser.post(
        f"/payments/{mine['id']}/confirm",
        json={"payment_method": "pm_card_visa"},
        headers=bearer(token),
    )
    assert confirmed.status_code == 200, confirmed.json

    refused = [
        browser.get(f"/payments/{theirs['id']}/timeline", headers=bearer(token)),
        browser.post(
            f"/payments/{theirs['id']}/confirm",
            json={"payment_method": "pm_card_visa"},
            headers=bearer(token),
        ),
        browser.get(f"/payments/{mine['id']}", headers=bearer(token)),
        browser.get(f"/payments/{theirs['id']}", headers=bearer(token)),
        browser.get("/payments", headers=bearer(token)),
        browser.post(f"/payments/{mine['id']}/cancel", headers=bearer(token)),
        browser.post(f"/payments/{mine['id']}/checkout-token", headers=bearer(token)),
        browser.post(
            "/payments",
            json={"amount_minor": 1, "currency": "usd"},
            headers={**bearer(token), "Idempotency-Key": "k"},
        ),
        browser.get(f"/payments/{mine['id'].replace('-', '')}/timeline", headers=bearer(token)),
    ]
    for answer in refused:
        assert answer.status_code == 403, (answer.request.path, answer.json)
        assert answer.json is not None
        assert answer.json["type"] == "/problems/checkout-token-scope"
        assert theirs["id"] not in answer.get_data(as_text=True)


def test_a_checkout_token_expires(
    stripe: FakeStripeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(stripe, checkout_token_ttl_seconds=60)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {MERCHANT_KEY}"
    pid = _create(client)["id"]
    token = _token(client, pid)
    browser = app.test_client()
    assert browser.get(f"/payments/{pid}/timeline", headers=bearer(token)).status_code == 200
    later = time.time() + 61
    monkeypatch.setattr(app.extensions["checkout_tokens"], "_clock", lambda: later)
    expired = browser.get(f"/payments/{pid}/timeline", headers=bearer(token))
    assert expired.status_code == 401
    assert expired.json is not None and "expired" in expired.json["detail"]
    assert browser.get(f"/checkout?token={token}").status_code == 401


def test_forged_and_tampered_tokens_are_refused(
    stripe: FakeStripeGateway, client: FlaskClient, browser: FlaskClient
) -> None:
    mine, theirs = _create(client), _create(client)
    forger = CheckoutTokens("another-secret-0123456789", 900)
    forged = forger.mint("acme", uuid.UUID(mine["id"])).token
    assert (
        browser.get(f"/payments/{mine['id']}/timeline", headers=bearer(forged)).status_code == 401
    )
    genuine = _token(client, mine["id"])
    payload = genuine.split(".")[1]
    swapped = (
        base64.urlsafe_b64encode(
            base64.urlsafe_b64decode(payload + "==").replace(
                mine["id"].encode(), theirs["id"].encode()
            )
        )
        .decode()
        .rstrip("=")
    )
    tampered = genuine.replace(payload, swapped)
    assert (
        browser.get(f"/payments/{theirs['id']}/timeline", headers=bearer(tampered)).status_code
        == 401
    )
    for junk in ("ct1.", "ct1.x.y", "ct1..", "ct1.!!!.###"):
        assert (
            browser.get(f"/payments/{mine['id']}/timeline", headers=bearer(junk)).status_code == 401
        )


def test_the_merchant_link_shows_its_payment(client: FlaskClient, browser: FlaskClient) -> None:
    pid = _create(client, amount_minor=4321)["id"]
    token = _token(client, pid)
    page = browser.get(f"/checkout?token={token}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "43.21 USD" in html and pid in html
    assert 'id="order"' not in html and 'id="amount"' not in html
    assert browser.get("/checkout?token=ct1.nope.nope").status_code == 401


def test_minting_needs_an_api_key_and_an_existing_payment(
    client: FlaskClient, browser: FlaskClient
) -> None:
    assert browser.post(f"/payments/{uuid.uuid4()}/checkout-token").status_code == 401
    assert client.post(f"/payments/{uuid.uuid4()}/checkout-token").status_code == 404
    assert client.post("/payments/nope/checkout-token").status_code == 422


def test_without_a_token_secret_checkout_says_so_and_stores_nothing(
    stripe: FakeStripeGateway,
) -> None:
    app = make_app(stripe, checkout_token_secret="")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {MERCHANT_KEY}"
    pid = _create(client)["id"]
    minted = client.post(f"/payments/{pid}/checkout-token")
    assert minted.status_code == 503
    assert minted.json is not None and "CHECKOUT_TOKEN_SECRET" in minted.json["detail"]
    browser = app.test_client()
    order = browser.post(
        "/checkout/orders", json={"order": "coffee"}, headers={"Idempotency-Key": "k"}
    )
    assert order.status_code == 503
    repo = app.extensions["payments"].service.repo
    assert len(repo.payments) == 1


def test_a_weak_token_secret_is_refused_at_start(stripe: FakeStripeGateway) -> None:
    with pytest.raises(ConfigurationError, match="CHECKOUT_TOKEN_SECRET"):
        make_app(stripe, checkout_token_secret="short")


def test_with_real_stripe_there_is_no_open_demo_shop(stripe: FakeStripeGateway) -> None:
    app = make_app(stripe, stripe_api_base="")
    browser = app.test_client()
    assert browser.get("/checkout").status_code == 404
    r = browser.post("/checkout/orders", json={"order": "coffee"}, headers={"Idempotency-Key": "k"})
    assert r.status_code == 404


def test_with_auth_disabled_the_demo_shop_is_tenant_dev(stripe: FakeStripeGateway) -> None:
    app = make_app(stripe, api_keys="", api_auth_disabled=True, checkout_token_secret="")
    browser = app.test_client()
    made = browser.post(
        "/checkout/orders", json={"order": "coffee"}, headers={"Idempotency-Key": "k"}
    )
    assert made.status_code == 201
    assert made.json is not None and made.json["checkout_token"] is None
    assert browser.get(f"/payments/{made.json['id']}/timeline").status_code == 200


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
    body = {"payment_id": pid, "amount_minor": 1999, "currency": "usd", "previous_status": None}
    when = {"occurred_at": "2026-11-23T08:00:00+00:00"}
    events.events[uuid.UUID(pid)] = [
        StatusUpdate.from_dict({**body, **when, "status": "pending", "version": 1}),  # not current
        StatusUpdate.from_dict({**body, **when, "status": "succeeded", "version": version}),
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


def test_confirming_an_intent_stripe_already_settled_is_a_409(client: FlaskClient) -> None:
    """Paid at Stripe, the webhook not in yet: Stripe refuses a second confirmation."""
    pid = _create(client)["id"]
    client.post(f"/payments/{pid}/confirm", json={"payment_method": "pm_card_visa"})
    again = client.post(f"/payments/{pid}/confirm", json={"payment_method": "pm_card_visa"})
    assert again.status_code == 409
    assert again.json is not None and again.json["type"] == "/problems/conflict"


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
